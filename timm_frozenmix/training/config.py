""" Every setting of a training run, declared once: its field, default, flag and help text

`TrainConfig` names its fields as timm's train.py names its flags (`--lr` is `lr`, `--model-ema` is `model_ema`).
Each field is declared with `setting(...)`, whose metadata the command line reads to make the flag, so a new
setting is one line here. `check_config` says what is wrong with a config, as a UsageError, before anything is
built; it runs the task's own checks too.
"""
import importlib.util
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn as nn
import yaml
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

from timm_frozenmix.core.devices import check_device
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.core.learn import LEARN_ALIASES, LEARN_MODES, resolve_learn
from timm_frozenmix.core.parsing import parse_fraction
from timm_frozenmix.data.datasets import SAMPLE, check_dataset, dataset_info, is_known_dataset
from timm_frozenmix.io.outputs import check_output_folder
from timm_frozenmix.io.references import check_reference, is_reference
from timm_frozenmix.layers.filters import SPATIAL_INITS
from timm_frozenmix.models.spec import TASKS, ModelSpec
from timm_frozenmix.training.tasks import task_for

__all__ = ['TrainConfig', 'setting', 'check_config', 'learning_rate', 'read_settings_file', 'timm_settings', 'TIMM_DEFAULTS', 'COMPILE_BACKENDS', 'COMPILE_MODES', 'flag_name']

# torch.compile backends that ship with torch (eager and aot_eager trace without compiling), and its modes
COMPILE_BACKENDS = ('inductor', 'cudagraphs', 'aot_eager', 'eager')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


def setting(default: Any, help: str, *, group: str, flags: Tuple[str, ...] = (), parse: Optional[Callable] = None,
            choices: Optional[tuple] = None, nargs: Optional[Any] = None, metavar: Optional[str] = None,
            const: Any = None):
    """A TrainConfig field and the metadata of its flag: help text, group, extra flag names (`-b`), a parse
    function in place of the annotated type, choices, nargs, and the value of a flag given bare (`const`)."""
    metadata = dict(help=help, group=group, flags=flags, parse=parse, choices=choices, nargs=nargs,
                    metavar=metavar, const=const)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_name(field_name: str) -> str:
    return '--' + field_name.replace('_', '-')


DATA, MODEL, MIXING, TASK = 'Dataset', 'Model', 'Frozen mixing', 'Task'
OPTIM, AUG, EMA, RUN = 'Optimizer and schedule', 'Augmentation and regularization', 'EMA', 'Run'


@dataclass
class TrainConfig:
    """Every setting of a training run, named as timm's train.py flags are (`--lr` is `lr`).

    The model fields (model, model_kwargs, in_chans, num_classes, separate, learn, depth_multiplier,
    spatial_init, smooth_sigma, keep_function, task) make its `model_spec()`; in_chans and num_classes follow
    the dataset when None. `learn` is stored canonical ('chans' becomes 'channels').
    """
    # data
    data_dir: Optional[str] = setting(None, 'dataset folder (not needed for the embedded sample)', group=DATA,
                                      metavar='DIR')
    dataset: str = setting(SAMPLE, 'fashion-mnist-sample, fashion-mnist, or any timm dataset (torch/cifar10, '
                                   'folder, hfds/..., ...: any name timm\'s create_dataset takes)', group=DATA)
    train_split: str = setting('train', 'split to train on', group=DATA)
    val_split: str = setting('validation', 'split to validate on (chooses the best epoch)', group=DATA)
    dataset_download: bool = setting(False, 'let torchvision datasets download', group=DATA)
    input_img_mode: Optional[str] = setting(None, "image mode for folder datasets, e.g. 'L'", group=DATA)
    class_map: str = setting('', "a file of class names, one per line, fixing timm datasets' class order",
                             group=DATA)
    input_key: Optional[str] = setting(None, 'image field of hfds/wds/tfds datasets (timm\'s default: image)',
                                       group=DATA)
    target_key: Optional[str] = setting(None, 'label field of hfds/wds/tfds datasets (timm\'s default: label)',
                                        group=DATA)
    train_num_samples: Optional[int] = setting(None, 'images per epoch of iterable datasets (hfids/wds/tfds)',
                                               group=DATA)
    val_num_samples: Optional[int] = setting(None, 'validation images of iterable datasets (hfids/wds/tfds)',
                                             group=DATA)
    dataset_trust_remote_code: bool = setting(False, 'let Hugging Face datasets run their loading code',
                                              group=DATA)
    # model
    model: str = setting('convmixer_128_4_ks5_p2_chans', 'any timm model name', group=MODEL)
    pretrained: bool = setting(False, "start from the model's published weights", group=MODEL)
    model_kwargs: Dict[str, Any] = setting({}, 'key=value kwargs for timm.create_model', group=MODEL, nargs='*')
    num_classes: Optional[int] = setting(None, 'classes (default: the dataset\'s)', group=MODEL)
    in_chans: Optional[int] = setting(None, 'image channels (default: the dataset\'s)', group=MODEL)
    img_size: Optional[int] = setting(None, 'image side in pixels', group=MODEL)
    input_size: Optional[List[int]] = setting(None, 'input size C H W', group=MODEL, nargs=3, metavar='N')
    crop_pct: Optional[float] = setting(None, 'center crop fraction for validation', group=MODEL)
    mean: Optional[List[float]] = setting(None, 'per-channel mean of the normalization', group=MODEL)
    std: Optional[List[float]] = setting(None, 'per-channel std of the normalization', group=MODEL)
    interpolation: str = setting('', 'resize interpolation for validation', group=MODEL)
    drop: float = setting(0.0, 'classifier dropout rate', group=MODEL)
    drop_path: Optional[float] = setting(None, 'drop path rate', group=MODEL)
    channels_last: bool = setting(False, 'channels-last memory format', group=MODEL)
    batch_size: int = setting(128, 'training batch size per process', group=MODEL, flags=('-b',))
    validation_batch_size: Optional[int] = setting(None, 'validation batch size (default: --batch-size)',
                                                   group=MODEL, flags=('-vb',))
    # frozen mixing
    separate: bool = setting(False, 'make every dense conv larger than 1x1 separable (any timm model)', group=MIXING)
    learn: Optional[str] = setting(None, 'which mixing to learn; without --separate, freezes a natively separable '
                                         'model', group=MIXING, choices=LEARN_MODES + tuple(LEARN_ALIASES))
    depth_multiplier: Optional[int] = setting(
        None, 'depthwise filters per input channel, for --separate (default 9) and separable ResNets', group=MIXING)
    spatial_init: Optional[str] = setting(None, 'structure of the frozen spatial filters', group=MIXING,
                                          choices=SPATIAL_INITS)
    smooth_sigma: Optional[float] = setting(None, 'Gaussian low-pass of the spatial filters (pixels)', group=MIXING)
    keep_function: bool = setting(False, 'with --pretrained --separate: solve the pointwise weights from the '
                                         'pretrained dense kernels, so the model computes what it did', group=MIXING)
    # task
    task: str = setting('classification', 'what the model learns', group=TASK, choices=TASKS)
    perm_seed: int = setting(0, 'seed of the pixel permutation (--task unshuffle)', group=TASK)
    adv_train: str = setting('none', 'FGSM-defended training (examples made each step)', group=TASK,
                             choices=('none', 'fgsm'))
    adv_eps: float = setting(8 / 255, 'FGSM epsilon in pixel units (8/255 accepted)', group=TASK,
                             parse=parse_fraction)
    adv_val_pgd_steps: int = setting(5, 'with --adv-train fgsm, validation also measures top-1 under PGD with '
                                        'this many steps at --adv-eps (pgd_top1), each epoch: a collapse of it '
                                        'while clean top-1 holds is catastrophic overfitting; 0 turns it off',
                                     group=TASK)
    # optimizer and schedule
    opt: str = setting('adamw', 'timm optimizer', group=OPTIM)
    opt_eps: Optional[float] = setting(None, 'optimizer epsilon', group=OPTIM)
    opt_betas: Optional[List[float]] = setting(None, 'optimizer betas', group=OPTIM)
    momentum: float = setting(0.9, 'SGD momentum', group=OPTIM)
    weight_decay: float = setting(0.05, 'weight decay', group=OPTIM)
    clip_grad: Optional[float] = setting(None, 'clip gradients at this norm or value', group=OPTIM)
    clip_mode: str = setting('norm', 'gradient clipping mode', group=OPTIM, choices=('norm', 'value', 'agc'))
    layer_decay: Optional[float] = setting(None, 'layer-wise learning rate decay', group=OPTIM)
    lr: Optional[float] = setting(None, 'learning rate (default: --lr-base scaled to the global batch)', group=OPTIM)
    lr_base: float = setting(3e-3, 'learning rate at --lr-base-size images per update', group=OPTIM)
    lr_base_size: int = setting(128, 'the global batch --lr-base is meant for', group=OPTIM)
    lr_base_scale: str = setting('', 'how lr follows the global batch: linear, sqrt (default: sqrt for adaptive '
                                     'optimizers, ada* and lamb, else linear)', group=OPTIM,
                                 choices=('', 'linear', 'sqrt'))
    grad_accum_steps: int = setting(1, 'batches whose gradients add up to one update', group=OPTIM)
    sched: str = setting('cosine', 'timm scheduler', group=OPTIM)
    sched_on_updates: bool = setting(False, 'step the schedule every update, not every epoch', group=OPTIM)
    epochs: int = setting(7, 'epochs to train', group=OPTIM)
    start_epoch: Optional[int] = setting(None, 'epoch to start at (default: 0, or the checkpoint\'s next)',
                                         group=OPTIM)
    warmup_epochs: int = setting(0, 'epochs of linear warmup', group=OPTIM)
    warmup_lr: float = setting(1e-5, 'learning rate warmup starts at', group=OPTIM)
    warmup_prefix: bool = setting(False, 'warmup before the schedule, not inside it', group=OPTIM)
    min_lr: float = setting(1e-5, 'lowest learning rate of the schedule', group=OPTIM)
    decay_epochs: float = setting(30, 'epochs between decays (step schedules)', group=OPTIM)
    decay_milestones: List[int] = setting([30, 60], 'epochs of decay (multistep schedule)', group=OPTIM)
    decay_rate: float = setting(0.1, 'decay factor', group=OPTIM)
    cooldown_epochs: int = setting(0, 'epochs at min_lr after the schedule', group=OPTIM)
    patience_epochs: int = setting(10, 'patience of the plateau schedule', group=OPTIM)
    # augmentation and regularization
    no_aug: bool = setting(False, 'no training augmentation', group=AUG)
    scale: List[float] = setting([0.7, 1.0], 'random resized crop scale range', group=AUG, nargs=2)
    ratio: List[float] = setting([3. / 4., 4. / 3.], 'random resized crop aspect ratio range', group=AUG, nargs=2)
    hflip: float = setting(0.5, 'horizontal flip probability', group=AUG)
    vflip: float = setting(0., 'vertical flip probability', group=AUG)
    color_jitter: float = setting(0., 'color jitter factor', group=AUG)
    aa: Optional[str] = setting(None, 'AutoAugment policy, e.g. rand-m9-mstd0.5', group=AUG)
    reprob: float = setting(0., 'random erasing probability', group=AUG)
    remode: str = setting('pixel', 'random erasing mode', group=AUG)
    recount: int = setting(1, 'random erasing count', group=AUG)
    train_interpolation: str = setting('random', 'resize interpolation for training', group=AUG)
    mixup: float = setting(0.0, 'mixup alpha (0: off)', group=AUG)
    cutmix: float = setting(0.0, 'cutmix alpha (0: off)', group=AUG)
    cutmix_minmax: Optional[List[float]] = setting(None, 'cutmix min/max ratio (overrides --cutmix)', group=AUG)
    mixup_prob: float = setting(1.0, 'probability of mixup or cutmix per batch', group=AUG)
    mixup_switch_prob: float = setting(0.5, 'probability of cutmix over mixup when both are on', group=AUG)
    mixup_mode: str = setting('batch', 'mixup per batch, pair or elem', group=AUG)
    mixup_off_epoch: int = setting(0, 'epoch to turn mixup off (0: never)', group=AUG)
    smoothing: float = setting(0.1, 'label smoothing', group=AUG)
    # EMA
    model_ema: bool = setting(False, 'keep an EMA of the weights (validated and exported)', group=EMA)
    model_ema_decay: float = setting(0.998, 'EMA decay', group=EMA)
    model_ema_warmup: bool = setting(False, 'EMA decay warmup', group=EMA)
    # run
    seed: int = setting(42, 'random seed (every rank builds the same frozen filters)', group=RUN)
    device: Optional[str] = setting(None, 'torch device (default: cuda if available, else cpu)', group=RUN)
    amp: bool = setting(False, 'mixed precision (bfloat16 on the CPU)', group=RUN)
    amp_dtype: Optional[str] = setting(None, 'default: float16 on CUDA, bfloat16 on the CPU', group=RUN,
                                       choices=('float16', 'bfloat16'))
    torchcompile: Optional[str] = setting(None, 'torch.compile the training forward with this backend', group=RUN,
                                          nargs='?', const='inductor', metavar='BACKEND')
    torchcompile_mode: Optional[str] = setting(None, "torch.compile's mode; reduce-overhead replays CUDA graphs",
                                               group=RUN, choices=COMPILE_MODES)
    tune_executions: bool = setting(False, "time each separable layer's executions at setup and fix the fastest "
                                           '(faster, but seeded runs may then differ)', group=RUN)
    dist_bn: str = setting('reduce', 'how BatchNorm statistics are shared across ranks', group=RUN,
                           choices=('reduce', 'broadcast', ''))
    sync_bn: bool = setting(False, 'synchronized BatchNorm across ranks (distributed runs)', group=RUN)
    workers: int = setting(2, 'data loading processes', group=RUN, flags=('-j',))
    pin_mem: bool = setting(False, 'pin CPU memory of batches', group=RUN)
    log_interval: int = setting(20, 'batches between log lines', group=RUN)
    log_wandb: bool = setting(False, 'log every epoch\'s metrics to Weights & Biases (pip install wandb)', group=RUN)
    checkpoint_hist: int = setting(0, 'also keep the N best epochs as checkpoint-EPOCH.pth.tar', group=RUN)
    output: str = setting('output/train', 'parent folder of the run folder', group=RUN)
    experiment: str = setting('', 'run folder name (default: time, model, task)', group=RUN)
    eval_metric: Optional[str] = setting(None, 'validation metric that picks the best epoch (default: the task\'s)',
                                         group=RUN)
    resume: str = setting('', "checkpoint to continue from: its recorded settings are the run's, its folder is "
                              'reused', group=RUN)
    no_resume_opt: bool = setting(False, 'resume the weights but not the optimizer state', group=RUN)

    def __post_init__(self):
        if self.learn is not None:
            self.learn = resolve_learn(self.learn)
        if self.device is None:
            self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if self.eval_metric is None:
            self.eval_metric = task_for(self).metrics[1]  # the task's first metric after the loss

    def model_spec(self) -> ModelSpec:
        """The spec of the model these settings build (channels and classes still open when None)."""
        return ModelSpec(
            architecture=self.model, model_kwargs=self.model_kwargs, in_chans=self.in_chans,
            num_classes=self.num_classes, separate=self.separate, learn=self.learn,
            depth_multiplier=self.depth_multiplier, spatial_init=self.spatial_init,
            smooth_sigma=self.smooth_sigma or 0.0, keep_function=self.keep_function, task=self.task)

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# Defaults that differ from timm's train.py: setting -> (timm's default, why ours differs). A `-c` file is read
# over timm's values, so a timm recipe keeps timm's meaning; docs/training.md prints this table.
TIMM_DEFAULTS: Dict[str, Tuple[Any, str]] = {
    'opt': ('sgd', 'the recipe of the study and the shipped weights (AdamW, cosine schedule)'),
    'weight_decay': (2e-5, "AdamW's decoupled decay takes larger values; 0.05 is that recipe's"),
    'lr_base': (0.1, 'an AdamW rate: the default run (batch 128, one process) trains at 3e-3, as the recipe does'),
    'lr_base_size': (256, 'the default batch, so --lr-base is the rate of the default run'),
    'min_lr': (0.0, "the recipe's"),
    'epochs': (300, 'the default run (the embedded Fashion-MNIST sample, on a CPU) takes minutes'),
    'warmup_epochs': (5, 'runs of a few epochs would spend most of them warming up'),
    'decay_epochs': (90, 'scaled to short runs (step schedules)'),
    'decay_milestones': ([90, 180, 270], 'scaled to short runs (multistep schedule)'),
    'scale': ([0.08, 1.0], 'a crop of 8% of a 28x28 image keeps about 8x8 pixels: too little of the object'),
    'color_jitter': (0.4, 'the default data are grayscale'),
    'model_ema_decay': (0.9998, 'short runs make few updates; 0.9998 averages over about 5,000'),
    'checkpoint_hist': (10, 'the last and the best epoch are kept anyway; ten more copies fill disks'),
    'workers': (4, 'the default machine is a 2-core CPU'),
    'log_interval': (50, 'epochs of the default run are short'),
}
# timm train.py settings this train.py does not have, with timm's defaults: a -c file may carry them at these
# values (timm's own args.yaml does) or switched off (None, False, 0, empty); any other value is refused
TIMM_UNSUPPORTED = {
    'worker_seeding': 'all', 'lr_noise_pct': 0.67, 'lr_noise_std': 1.0, 'lr_cycle_mul': 1.0, 'lr_cycle_decay': 0.5,
    'lr_cycle_limit': 1, 'lr_k_decay': 1.0, 'amp_impl': 'native', 'dist_backend': 'nccl', 'dist_url': 'env://',
}


# what timm's train.py writes into its flags while it runs (its checkpoints pickle them so): how that run was
# launched, not what it trained; a resumed run takes them from its own launch
TIMM_RUNTIME = frozenset({'world_size', 'rank', 'local_rank', 'distributed', 'prefetcher'})


def timm_settings(values: Dict[str, Any], source: str, remedy: str) -> Dict[str, Any]:
    """timm train.py's settings `values` (its flag names with underscores, as args.yaml and its checkpoints hold
    them) as this train.py's, over timm's defaults where ours differ (`TIMM_DEFAULTS`), so they keep timm's
    meaning. UsageError "`source` sets what this train.py does not do: ...; `remedy`" for a setting this train.py
    does not have unless it is off or at timm's default (`TIMM_UNSUPPORTED`)."""
    known = set(TrainConfig.field_names())
    refused = [f'{k}={v!r}' for k, v in values.items() if k not in known and k not in TIMM_RUNTIME
               and v not in (None, False, 0, '', [], {}) and TIMM_UNSUPPORTED.get(k, object()) != v]
    if refused:
        raise UsageError(f'{source} sets what this train.py does not do: {", ".join(refused)}; {remedy}')
    return {**{k: timm for k, (timm, _) in TIMM_DEFAULTS.items()}, **{k: v for k, v in values.items() if k in known}}


def read_settings_file(path) -> Dict[str, Any]:
    """The settings of a `-c` YAML file, read as timm's train.py reads one (`timm_settings`). UsageError for an
    unreadable file or a setting this train.py does not have."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f'-c {path} cannot be read as YAML ({type(e).__name__}): pass a file of flag defaults') from None
    if not isinstance(values, dict):
        raise UsageError(f'-c {path} holds a {type(values).__name__}, not a mapping of settings (name: value)')
    return timm_settings(values, f'-c {path}', 'remove them (or set them off) to train here')


def learning_rate(config: TrainConfig, world_size: int = 1) -> float:
    """--lr, or, when it is not given, timm's train.py rule: --lr-base times the global batch (batch size x ranks x
    --grad-accum-steps) over --lr-base-size, that ratio square-rooted for adaptive optimizers (ada*, lamb) unless
    --lr-base-scale says linear or sqrt."""
    if config.lr is not None:
        return config.lr
    ratio = config.batch_size * world_size * config.grad_accum_steps / config.lr_base_size
    scale = config.lr_base_scale or ('sqrt' if any(o in config.opt.lower() for o in ('ada', 'lamb')) else 'linear')
    return config.lr_base * (ratio ** 0.5 if scale == 'sqrt' else ratio)


def check_config(config: TrainConfig, task) -> None:
    """Every check that can fail on bad input, run before anything is built or written; raises UsageError.

    `task` is the run's `tasks.Task`, whose own checks run here too.
    """
    if is_reference(config.model):
        check_reference(config.model)
    elif not timm.is_model(config.model):
        raise UsageError(f'unknown model {config.model!r}: see timm.list_models() (import timm_frozenmix first)')
    if config.log_wandb and importlib.util.find_spec('wandb') is None:
        raise UsageError('--log-wandb needs the wandb package: pip install wandb (or drop --log-wandb)')
    check_dataset(config.dataset, config.data_dir, config.dataset_download)
    check_output_folder(config.output)
    for f in fields(config):
        value, choices = getattr(config, f.name), f.metadata.get('choices')
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise UsageError(f'{flag_name(f.name)} must be finite, got {value}')
        if choices and value is not None and value not in choices:
            raise UsageError(f'{flag_name(f.name)} {value!r}: choose one of {", ".join(map(repr, choices))}')
    checks = [
        (config.epochs >= 1, f'--epochs must be >= 1, got {config.epochs}'),
        (config.batch_size >= 1, f'--batch-size must be >= 1, got {config.batch_size}'),
        (config.validation_batch_size is None or config.validation_batch_size >= 1,
         f'--validation-batch-size must be >= 1, got {config.validation_batch_size}'),
        (config.lr is None or config.lr > 0, f'--lr must be > 0, got {config.lr}'),
        (config.lr_base > 0 and config.lr_base_size >= 1,
         f'--lr-base must be > 0 and --lr-base-size >= 1, got {config.lr_base:g} and {config.lr_base_size}'),
        (config.grad_accum_steps >= 1, f'--grad-accum-steps must be >= 1, got {config.grad_accum_steps}'),
        (config.checkpoint_hist >= 0, f'--checkpoint-hist must be >= 0, got {config.checkpoint_hist}'),
        (config.weight_decay >= 0, f'--weight-decay must be >= 0, got {config.weight_decay:g}'),
        (config.workers >= 0, f'--workers must be >= 0, got {config.workers}'),
        (config.log_interval >= 1, f'--log-interval must be >= 1, got {config.log_interval}'),
        (config.adv_val_pgd_steps >= 0, f'--adv-val-pgd-steps must be >= 0, got {config.adv_val_pgd_steps}'),
        (0.0 <= config.adv_eps <= 1.0, f'--adv-eps must lie in [0, 1] (pixel units, e.g. 8/255), got {config.adv_eps:g}'),
        (0.0 <= config.smoothing < 1.0, f'--smoothing must lie in [0, 1), got {config.smoothing:g}'),
        (0.0 <= config.drop < 1.0, f'--drop must lie in [0, 1), got {config.drop:g}'),
        (0.0 <= (config.drop_path or 0.0) < 1.0, f'--drop-path must lie in [0, 1), got {config.drop_path}'),
        (min(config.mixup, config.cutmix, config.color_jitter) >= 0, '--mixup, --cutmix and --color-jitter must be >= 0'),
        (all(0.0 <= p <= 1.0 for p in (config.mixup_prob, config.mixup_switch_prob, config.reprob,
                                        config.hflip, config.vflip)),
         '--mixup-prob, --mixup-switch-prob, --reprob, --hflip and --vflip are probabilities in [0, 1]'),
        (0 < config.scale[0] <= config.scale[1] and 0 < config.ratio[0] <= config.ratio[1],
         '--scale and --ratio take two numbers 0 < low <= high'),
        (0.0 < config.model_ema_decay < 1.0, f'--model-ema-decay must lie in (0, 1), got {config.model_ema_decay:g}'),
        (min(config.warmup_epochs, config.cooldown_epochs) >= 0, '--warmup-epochs and --cooldown-epochs must be >= 0'),
        (config.clip_grad is None or config.clip_grad > 0, f'--clip-grad must be > 0, got {config.clip_grad}'),
        (config.start_epoch is None or 0 <= config.start_epoch < config.epochs,
         f'--start-epoch must lie in [0, --epochs), got {config.start_epoch}'),
        (all(n is None or n >= 1 for n in (config.num_classes, config.in_chans, config.img_size)),
         '--num-classes, --in-chans and --img-size must be >= 1'),
        (config.input_size is None or min(config.input_size) >= 1, '--input-size takes three numbers >= 1: C H W'),
        (config.std is None or min(config.std) > 0, '--std must be > 0'),
        (config.experiment in ('', Path(config.experiment).name) and config.experiment not in ('.', '..'),
         f'--experiment {config.experiment!r} must be a plain folder name (--output sets where it goes)'),
        (config.torchcompile in (None, *COMPILE_BACKENDS),
         f'--torchcompile {config.torchcompile!r}: choose one of {", ".join(COMPILE_BACKENDS)}'),
        (config.torchcompile_mode is None or config.torchcompile is not None,
         '--torchcompile-mode needs --torchcompile'),
        (not (config.amp_dtype == 'float16' and not config.device.startswith('cuda')),
         '--amp-dtype float16 needs a CUDA device; use bfloat16 on the CPU'),
        (not config.keep_function or config.pretrained,
         '--keep-function keeps what pretrained weights compute: add --pretrained'),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    task.check(config)
    config.model_spec()  # learn, spatial init, smoothing, task and depth multiplier, checked by the spec
    check_device(config.device)
    check_dataset_channels(config)
    check_optimizer_and_schedule(config)


def check_dataset_channels(config: TrainConfig) -> None:
    """--in-chans and --mean / --std must fit the images the dataset yields, or the first step would fail."""
    info = dataset_info(config.dataset, input_img_mode=config.input_img_mode)
    if config.in_chans is not None and config.in_chans != info.in_chans:
        hint = '' if is_known_dataset(config.dataset) else ' or set --input-img-mode (L: 1 channel, RGB: 3)'
        raise UsageError(f'--in-chans {config.in_chans} does not fit {config.dataset}, whose images have '
                         f'{info.in_chans} channel(s): drop --in-chans{hint}')
    in_chans = config.in_chans or info.in_chans
    for flag, values in (('--mean', config.mean), ('--std', config.std)):
        if values is not None and len(values) not in (1, in_chans):
            raise UsageError(f'{flag} takes 1 or {in_chans} values for {in_chans}-channel images, got {len(values)}')


def check_optimizer_and_schedule(config: TrainConfig) -> None:
    """timm's own checks of --opt and --sched (and their arguments), run on a stand-in parameter."""
    probe = nn.Linear(1, 1)
    try:
        optimizer = create_optimizer_v2(probe, **optimizer_kwargs(cfg=config))
    except (ValueError, AssertionError) as e:
        raise UsageError(f'--opt {config.opt}: {e} (see timm.optim.list_optimizers())') from None
    try:
        create_scheduler_v2(optimizer, **scheduler_kwargs(config), updates_per_epoch=1)
    except (ValueError, AssertionError) as e:
        raise UsageError(f'--sched {config.sched}: {e}') from None
