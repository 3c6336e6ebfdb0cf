""" The study's recipes (its two scales) and the models every part trains, named as timm registers them

A recipe is fixed before any run of it: a finished part is kept only while the recipe it ran with is unchanged.
"""
from dataclasses import dataclass
from typing import List, Tuple

from timm_frozenmix.data.datasets import FASHION_MNIST, SAMPLE

MODES = ('full', 'chans', 'space')
CONVMIXER = 'convmixer_128_4_ks5_p2_{mode}'  # registered Fashion-MNIST ConvMixer, resized by model kwargs
RESNET = 'sep_resnet20_cifar_{mode}'  # registered CIFAR separable ResNet, resized by model kwargs
DENSE = 'dense'  # the ResNet with dense convolutions (`separable=False`), next to the three modes
BATCH = 128  # training and timing batch size


@dataclass(frozen=True)
class Recipe:
    """Model sizes, data and budgets of one scale of the study; everything else is shared by every run.

    The margins that turn its numbers into verdicts are not here: they are registered in
    `study/preregistration.yaml` (`study.rules`).
    """
    dataset: str
    train_split: str
    val_split: str
    epochs: int
    seeds: Tuple[int, ...]
    convmixer_dim: int
    convmixer_depth: int
    convmixer_kernel: int
    resnet_base: int  # stage widths base, 2 * base, 4 * base (the paper's CIFAR ResNets: 16)
    resnet_depths: Tuple[int, ...]  # n of the 6n+2-layer ResNet
    base_widths: Tuple[int, ...]  # width sweep of the n = resnet_depths[0] ResNet
    filter_depth: int  # n of the filter ablation's ResNet (the paper: depth 2)
    sigma: float  # smoothing of the frozen filters
    unshuffle_size: int  # images resized to this side, so the receptive field covers them
    unshuffle_dim: int
    unshuffle_depth: int
    unshuffle_kernel: int
    robust_samples: int
    autoattack_samples: int
    eps: str
    strong_eps: str
    timing_steps: int
    spectral_size: int
    convergence_train_split: str  # sized so that an epoch is a round number of updates
    convergence_epochs: Tuple[int, ...]  # the training lengths of the convergence parts
    pgd_restarts: int  # random restarts of the strong PGD-10
    sweep_eps: str  # PGD-10 up to a radius where every model should be near 0% (a sanity check)
    # the un-shuffling growth sweeps, one factor at a time from (unshuffle_depth, unshuffle_dim, unshuffle_kernel)
    unshuffle_depths: Tuple[int, ...]
    unshuffle_dims: Tuple[int, ...]
    unshuffle_kernels: Tuple[int, ...]
    sigma_levels: Tuple[float, ...]  # smoothing levels shown beside the judged `sigma` (which is one of them)


# fields added after parts had run with the recipe: a part recorded without them never read them
ADDED_FIELDS = frozenset({'convergence_train_split', 'convergence_epochs', 'pgd_restarts', 'sweep_eps',
                          'unshuffle_depths', 'unshuffle_dims', 'unshuffle_kernels', 'sigma_levels'})
# fields parts were recorded with that no longer exist: the margins, which moved to study/preregistration.yaml
# (they never changed what a part measured)
REMOVED_FIELDS = frozenset({'margin', 'psnr_margin'})


FULL = Recipe(
    dataset=FASHION_MNIST, train_split='train[:10000]', val_split='train[55000:]', epochs=3, seeds=(0, 1, 2),
    convmixer_dim=64, convmixer_depth=2, convmixer_kernel=5, resnet_base=16, resnet_depths=(1,),
    base_widths=(8, 16, 24, 32), filter_depth=2, sigma=1.0, unshuffle_size=14, unshuffle_dim=96, unshuffle_depth=4,
    unshuffle_kernel=9, robust_samples=500, autoattack_samples=100, eps='0,2/255,4/255,8/255', strong_eps='8/255',
    timing_steps=10, spectral_size=128,
    convergence_train_split='train[:38400]', convergence_epochs=(1, 2, 4, 8),  # 300, 600, 1200, 2400 updates
    pgd_restarts=3, sweep_eps='0,8/255,16/255,32/255,64/255',
    unshuffle_depths=(4, 8, 12), unshuffle_dims=(96, 128, 192), unshuffle_kernels=(9, 13, 17),
    sigma_levels=(0.5, 1.0, 2.0))
QUICK = Recipe(
    dataset=SAMPLE, train_split='train[:512]', val_split='train[5744:]', epochs=3, seeds=(0, 1),
    convmixer_dim=16, convmixer_depth=1, convmixer_kernel=5, resnet_base=4, resnet_depths=(1,),
    base_widths=(2, 4), filter_depth=1, sigma=1.0, unshuffle_size=14, unshuffle_dim=8, unshuffle_depth=4,
    unshuffle_kernel=9, robust_samples=64, autoattack_samples=2, eps='0,8/255', strong_eps='8/255',
    timing_steps=2, spectral_size=64,
    convergence_train_split='train[:512]', convergence_epochs=(1, 2, 3, 4), pgd_restarts=2, sweep_eps='0,32/255',
    unshuffle_depths=(4, 5), unshuffle_dims=(8, 12), unshuffle_kernels=(9, 11), sigma_levels=(0.5, 1.0))

# shared by every run: one epoch-based cosine schedule stepped per update, no augmentation (few epochs),
# channels-last (3x faster depthwise weight gradients on the CPU), no loader workers (they compete for 2 cores)
TRAIN_SETTINGS = dict(sched='cosine', sched_on_updates=True, opt='adamw', lr=3e-3, weight_decay=0.05, smoothing=0.1,
                      no_aug=True, batch_size=BATCH, channels_last=True, log_interval=100)


class RecipeReads:
    """A recipe that records which of its fields are read: a part's numbers depend on those fields alone, so a
    change of any other field leaves the part standing (`part_ran_with`)."""

    def __init__(self, recipe: Recipe):
        self.__dict__.update(_recipe=recipe, read=set())

    def __getattr__(self, name):
        value = getattr(self.__dict__['_recipe'], name)
        self.__dict__['read'].add(name)
        return value


def part_ran_with(part: dict, recipe: dict) -> bool:
    """Whether a finished part (its JSON) holds for `recipe` (JSON): the fields it read (`recipe_read`) are
    unchanged; a part recorded before parts recorded their reads needs the whole recipe unchanged."""
    read, recorded = part.get('recipe_read'), part.get('recipe') or {}
    if read is None:
        return same_recipe(recorded, recipe)
    return all(name in recipe and name in recorded and recorded[name] == recipe[name] for name in read)


def same_recipe(recorded: dict, recipe: dict) -> bool:
    """Whether a part recorded with `recorded` ran with `recipe` (both JSON): equal, except the `ADDED_FIELDS`
    that a part recorded before they existed lacks and the `REMOVED_FIELDS` it still has."""
    return {k: v for k, v in recorded.items() if k not in REMOVED_FIELDS} == \
        {k: v for k, v in recipe.items() if k in recorded or k not in ADDED_FIELDS}


def as_flags(settings: dict) -> List[str]:
    """train.py flags that give `settings` (TrainConfig fields), for the report."""
    flags = []
    for key, value in settings.items():
        flag = '--' + key.replace('_', '-')
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def convmixer_kwargs(recipe: Recipe) -> dict:
    return dict(dim=recipe.convmixer_dim, depth=recipe.convmixer_depth, kernel_size=recipe.convmixer_kernel)


def resnet_kwargs(n: int, base: int, mode: str = 'full') -> dict:
    kwargs = dict(layers=[n, n, n], channels=[base, 2 * base, 4 * base])
    return dict(kwargs, separable=False) if mode == DENSE else kwargs


def resnet_model(mode: str) -> str:
    return RESNET.format(mode='full' if mode == DENSE else mode)


def resnet_name(n: int, base: int, mode: str) -> str:
    """The run name of a ResNet configuration, shared by every part that trains it."""
    return f'resnet-n{n}-b{base}-{mode}'


def config_label(family: str, depth: int, base_width: int) -> str:
    """How the report names a configuration: 'ConvMixer depth 2' or 'SepResNet n = 1, base width 16' (the
    ConvMixer has no base width)."""
    return f'ConvMixer depth {depth}' if family == 'ConvMixer' else f'SepResNet n = {depth}, base width {base_width}'


def family_model(family: str, recipe, mode: str) -> Tuple[str, str, dict]:
    """Run name, timm model name and model kwargs of the study's main configuration of `family` ('ConvMixer',
    or 'SepResNet' with n = resnet_depths[0] and the recipe's base width) in `mode`."""
    if family == 'ConvMixer':
        return f'convmixer-d{recipe.convmixer_depth}-{mode}', CONVMIXER.format(mode=mode), convmixer_kwargs(recipe)
    n = recipe.resnet_depths[0]
    return resnet_name(n, recipe.resnet_base, mode), resnet_model(mode), resnet_kwargs(n, recipe.resnet_base)
