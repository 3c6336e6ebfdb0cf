""" The study's experiments, run through timm_frozenmix's library, in independent parts

Every model is trained by train.py's library (`TrainConfig`, `training.setup` / `training.train`) on a slice of
the training images, with its best epoch chosen on a validation split held out from the training images; the
test set is read once per model, at the end, by the checkpoint that validation chose. Every configuration is
trained with each of the recipe's seeds; one seed fixes the initialization and the data order, so the modes
of one seed are paired. Attacks run through eval_robust's library (`RobustConfig`, `robust.evaluate`).

A part (`PARTS`) trains and measures what its experiments need and returns their raw numbers; parts share
training runs by name, and a finished run is reused by any later part or invocation with the same settings.
"""
import csv
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import timm
import torch

from timm_frozenmix.evaluation import robust
from timm_frozenmix.training import loop as training
from timm_frozenmix.io.checkpoint import load_checkpoint
from timm_frozenmix.data.datasets import FASHION_MNIST, SAMPLE, Normalized, create_dataset, create_eval_loader
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers.filters import spectral_coverage, spectral_envelope
from timm_frozenmix.io.loading import model_from_checkpoint
from timm_frozenmix.io.reporting import write_json
from timm_frozenmix.layers.separable import SeparableConv2d
from timm_frozenmix.evaluation.spectral import FILTER_COUNTS, coverage_growth, spatial_banks
from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from timm_frozenmix.evaluation.unshuffle import PixelPermutation, psnr, save_unshuffle_grid

_logger = logging.getLogger('study')

MODES = ('full', 'chans', 'space')
FILTER_INITS = ('random', 'same', 'box', 'identity')
CONVMIXER = 'convmixer_128_4_ks5_p2_{mode}'  # registered Fashion-MNIST ConvMixer, resized by model kwargs
RESNET = 'sep_resnet20_cifar_{mode}'  # registered CIFAR separable ResNet, resized by model kwargs
DENSE = 'dense'  # the ResNet with dense convolutions (`separable=False`), next to the three modes
UNSHUFFLE_GRID = 'reproduction_unshuffle.png'
MASKING_GAP = 10.0  # points: AutoAttack this far below PGD-10 flags gradient masking
BATCH = 128  # training and timing batch size


@dataclass(frozen=True)
class Recipe:
    """Model sizes, data and budgets of one scale of the study; everything else is shared by every run.

    `margin` (accuracy points) and `psnr_margin` (dB) say what "nearly as good" means; they, `sigma` and the
    attacks were fixed before any run of this recipe.
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
    margin: float
    psnr_margin: float


FULL = Recipe(
    dataset=FASHION_MNIST, train_split='train[:10000]', val_split='train[55000:]', epochs=3, seeds=(0, 1, 2),
    convmixer_dim=64, convmixer_depth=2, convmixer_kernel=5, resnet_base=16, resnet_depths=(1,),
    base_widths=(8, 16, 24), filter_depth=2, sigma=1.0, unshuffle_size=14, unshuffle_dim=32, unshuffle_depth=4,
    unshuffle_kernel=9, robust_samples=500, autoattack_samples=32, eps='0,2/255,4/255,8/255', strong_eps='8/255',
    timing_steps=10, spectral_size=128, margin=2.0, psnr_margin=1.0)
QUICK = Recipe(
    dataset=SAMPLE, train_split='train[:512]', val_split='train[5744:]', epochs=3, seeds=(0, 1),
    convmixer_dim=16, convmixer_depth=1, convmixer_kernel=5, resnet_base=4, resnet_depths=(1,),
    base_widths=(2, 4), filter_depth=1, sigma=1.0, unshuffle_size=14, unshuffle_dim=8, unshuffle_depth=4,
    unshuffle_kernel=9, robust_samples=64, autoattack_samples=2, eps='0,8/255', strong_eps='8/255',
    timing_steps=2, spectral_size=64, margin=2.0, psnr_margin=1.0)

# shared by every run: one epoch-based cosine schedule stepped per update, no augmentation (few epochs),
# channels-last (3x faster depthwise weight gradients on the CPU), no loader workers (they compete for 2 cores)
TRAIN_SETTINGS = dict(sched='cosine', sched_on_updates=True, opt='adamw', lr=3e-3, weight_decay=0.05, smoothing=0.1,
                      no_aug=True, batch_size=BATCH, channels_last=True, log_interval=100)


def as_flags(settings: dict) -> List[str]:
    """train.py flags that give `settings` (TrainConfig fields), for the report."""
    flags = []
    for key, value in settings.items():
        flag = '--' + key.replace('_', '-')
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def eps_list(text: str) -> List[Tuple[str, float]]:
    """'0,2/255' as [('0', 0.0), ('2/255', 0.0078...)], eps in pixel units."""
    return [(item, float(Fraction(item))) for item in text.split(',')]


def convmixer_kwargs(recipe: Recipe) -> dict:
    return dict(dim=recipe.convmixer_dim, depth=recipe.convmixer_depth, kernel_size=recipe.convmixer_kernel)


def resnet_kwargs(n: int, base: int, mode: str = 'full') -> dict:
    kwargs = dict(layers=[n, n, n], channels=[base, 2 * base, 4 * base])
    return dict(kwargs, separable=False) if mode == DENSE else kwargs


def resnet_model(mode: str) -> str:
    return RESNET.format(mode='full' if mode == DENSE else mode)


@dataclass(frozen=True)
class Job:
    """One training run of the study: its name (one per seed) and its TrainConfig fields beyond the shared ones."""
    name: str
    model: str
    model_kwargs: dict
    seed: int
    extra: dict = field(default_factory=dict)


class Study:
    """Trains (or reuses) the runs of one study and collects what each experiment measured."""

    def __init__(self, recipe: Recipe, output: Path, workers: int):
        self.recipe, self.output, self.workers = recipe, output, workers
        self.runs: Dict[str, dict] = {}
        self.reused: List[str] = []
        self.trained: List[str] = []

    def settings(self, job: Job) -> dict:
        """The TrainConfig fields of one run of this study (JSON, so a finished run can be recognised)."""
        r = self.recipe
        return dict(model=job.model, model_kwargs=job.model_kwargs, dataset=r.dataset, train_split=r.train_split,
                    val_split=r.val_split, epochs=r.epochs, seed=job.seed, workers=self.workers, **TRAIN_SETTINGS,
                    **job.extra)

    def train_all(self, part: str, jobs: List[Job]) -> Dict[str, dict]:
        """Every job of a part, finished runs reused; logs progress with the expected time left."""
        jobs = list({job.name: job for job in jobs}.values())
        todo = [job for job in jobs if self.finished(job) is None]
        _logger.info(f'Part {part}: {len(jobs)} runs, {len(jobs) - len(todo)} already trained')
        start = time.perf_counter()
        for i, job in enumerate(todo):
            self.train(job)
            elapsed = time.perf_counter() - start
            left = elapsed / (i + 1) * (len(todo) - i - 1)
            _logger.info(f'Part {part}: {i + 1}/{len(todo)} runs trained in {elapsed / 60:.1f} min, '
                         f'about {left / 60:.0f} min of training left')
        return {job.name: self.train(job) for job in jobs}

    def finished(self, job: Job) -> Optional[dict]:
        """The record of a finished run with these settings (loader workers aside: they change no number)."""
        record = self.output / 'runs' / job.name / 'study_run.json'
        if record.exists():
            cached = json.loads(record.read_text())
            if same_settings(cached.get('settings', {}), self.settings(job)):
                return cached
        return None

    def train(self, job: Job) -> dict:
        """One training run, then its test metric from the checkpoint validation chose; reused if finished."""
        settings = self.settings(job)
        if job.name in self.runs:  # shared by several experiments of this study
            if not same_settings(self.runs[job.name]['settings'], settings):
                raise UsageError(f'run {job.name} is already part of the study with other arguments: rename one')
            return self.runs[job.name]
        cached = self.finished(job)
        if cached is not None:
            self.runs[job.name] = cached
            self.reused.append(job.name)
            return cached
        folder = self.output / 'runs' / job.name
        config = training.TrainConfig(**settings, output=str(folder.parent), experiment=job.name)
        training.check_config(config)  # a bad setting must not cost the folder below
        if folder.exists():  # a run of this study that did not finish, or of another recipe
            if not any((folder / name).is_file() for name in ('study_run.json', 'args.yaml')):
                raise UsageError(f'{folder} exists but is no training run of this study: move it out of the way')
            shutil.rmtree(folder)
        _logger.info(f'Run {job.name}: {settings}')
        start = time.perf_counter()
        run = training.setup(config)
        training.train(run)
        test = self.test_metric(run)
        result = dict(
            name=job.name, settings=settings, model=job.model, seed=job.seed, eval_metric=config.eval_metric,
            val_metric=run.best_metric, best_epoch=run.best_epoch, val_curve=validation_curve(folder, config),
            test_metric=test, checkpoint=str(folder / training.BEST),
            trainable_params=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
            params=sum(p.numel() for p in run.model.parameters()), wall_time_s=time.perf_counter() - start)
        write_json(folder / 'study_run.json', result)
        self.runs[job.name] = result
        self.trained.append(job.name)
        return result

    def test_metric(self, run: training.TrainingRun) -> float:
        """The test-set metric of the run's best checkpoint (chosen on validation): the test set's one reading."""
        best = load_checkpoint(run.output_dir / training.BEST)
        run.model.load_state_dict(best['state_dict'])
        loader = create_eval_loader(create_dataset(self.recipe.dataset, split='test'), run.data_config, 500,
                                    self.workers, run.device)
        return training.validate(replace(run, loader_eval=loader), run.net)[run.config.eval_metric]

    def seeds(self, name: str, model: str, kwargs: dict, **extra) -> List[Job]:
        return [Job(f'{name}-s{seed}', model, kwargs, seed, extra) for seed in self.recipe.seeds]

    # 1. Full vs Chans vs Space (and the dense ResNet)
    def modes(self) -> dict:
        r = self.recipe
        configs = [('ConvMixer', r.convmixer_depth, mode, f'convmixer-d{r.convmixer_depth}-{mode}',
                    CONVMIXER.format(mode=mode), convmixer_kwargs(r)) for mode in MODES]
        configs += [('SepResNet', n, mode, resnet_name(n, r.resnet_base, mode), resnet_model(mode),
                     resnet_kwargs(n, r.resnet_base, mode)) for n in r.resnet_depths for mode in MODES + (DENSE,)]
        runs = self.train_all('modes', [job for c in configs for job in self.seeds(*c[3:])])
        rows = [dict(family=family, depth=depth, mode=mode, **self.row(runs, name))
                for family, depth, mode, name, _, _ in configs]
        return dict(rows=rows, resnet_base=r.resnet_base)

    # 2. width sweep, Space included
    def widths(self) -> dict:
        r = self.recipe
        n = r.resnet_depths[0]
        configs = [(base, mode, resnet_name(n, base, mode)) for base in r.base_widths for mode in MODES]
        runs = self.train_all('widths', [job for base, mode, name in configs
                                         for job in self.seeds(name, resnet_model(mode), resnet_kwargs(n, base))])
        return dict(depth=n, rows=[dict(base_width=base, mode=mode, **self.row(runs, name))
                                   for base, mode, name in configs])

    # 3. filter structure, and the spectral coverage of each kind of bank
    def filters(self) -> dict:
        r = self.recipe
        n = r.filter_depth
        names = {init: resnet_name(n, r.resnet_base, 'chans') + ('' if init == 'random' else f'-{init}')
                 for init in FILTER_INITS}
        extra = {init: {} if init == 'random' else dict(spatial_init=init) for init in FILTER_INITS}
        runs = self.train_all('filters', [
            job for init in FILTER_INITS for job in self.seeds(
                names[init], resnet_model('chans'), resnet_kwargs(n, r.resnet_base), **extra[init])])
        rows = [dict(init=init, **self.row(runs, names[init]), coverage=self.coverage(runs, names[init]))
                for init in FILTER_INITS]
        torch.manual_seed(r.seeds[0])
        growth = {f'{k}x{k}': coverage_growth(k, r.spectral_size, 1.0) for k in sorted({r.convmixer_kernel, 3})}
        return dict(depth=n, base_width=r.resnet_base, rows=rows, spectral_size=r.spectral_size, threshold=1.0,
                    growth=dict(filters=list(FILTER_COUNTS), **growth))

    def coverage(self, runs: Dict[str, dict], name: str) -> float:
        """Mean spectral coverage (Sec. 3.1) of the frozen banks of the seed-0 run of `name`."""
        path = runs[f'{name}-s{self.recipe.seeds[0]}']['checkpoint']
        model = model_from_checkpoint(load_checkpoint(path), path)
        layers = [spectral_coverage(spectral_envelope(w.detach(), self.recipe.spectral_size), 1.0)
                  for _, w in spatial_banks(model) if not w.requires_grad]
        return sum(layers) / len(layers)

    # 4. robustness, on a separable ResNet (as in the paper) and on a ConvMixer
    def robustness(self) -> dict:
        r = self.recipe
        strong_eps = eps_list(r.strong_eps)[0][1]
        families = {
            'SepResNet': (lambda mode: resnet_name(r.resnet_depths[0], r.resnet_base, mode), resnet_model,
                          resnet_kwargs(r.resnet_depths[0], r.resnet_base)),
            'ConvMixer': (lambda mode: f'convmixer-d{r.convmixer_depth}-{mode}', CONVMIXER.format, convmixer_kwargs(r)),
        }
        variants = {'full': ('full', {}), 'chans': ('chans', {}),
                    'full, FGSM-trained': ('full', dict(adv_train='fgsm', adv_eps=strong_eps)),
                    'chans, FGSM-trained': ('chans', dict(adv_train='fgsm', adv_eps=strong_eps)),
                    f'chans, sigma {r.sigma:g}': ('chans', dict(smooth_sigma=r.sigma))}
        suffix = {'full': '', 'chans': '', 'full, FGSM-trained': '-fgsm', 'chans, FGSM-trained': '-fgsm',
                  f'chans, sigma {r.sigma:g}': f'-sigma{r.sigma:g}'}
        names = {(family, label): name_of(mode) + suffix[label]
                 for family, (name_of, _, _) in families.items() for label, (mode, _) in variants.items()}
        jobs = [job for (family, label), name in names.items()
                for job in self.seeds(name, families[family][1](mode=variants[label][0]), families[family][2],
                                      **variants[label][1])]
        self.train_all('robustness', jobs)
        weak = dict(attacks=['fgsm', 'pgd'], pgd_steps=2, pgd_random_start=False, eps=eps_list(r.eps),
                    num_samples=r.robust_samples)
        strong = dict(attacks=['fgsm', 'pgd'], pgd_steps=10, eps=eps_list(r.strong_eps), num_samples=r.robust_samples)
        autoattack = dict(attacks=['pgd', 'autoattack'], pgd_steps=10, eps=eps_list(r.strong_eps),
                          num_samples=r.autoattack_samples, masking_gap=MASKING_GAP)
        out = {}
        for family in families:
            labels = {label: names[family, label] for label in variants}
            per_seed = {}
            for seed in r.seeds:
                runs = {label: f'{name}-s{seed}' for label, name in labels.items()}
                per_seed[str(seed)] = dict(weak=self.attack(runs, weak), strong=self.attack(runs, strong))
            # AutoAttack costs about a second per image here: one seed, the models the verdicts compare
            checked = {label: f'{labels[label]}-s{r.seeds[0]}' for label in ('full', 'chans', f'chans, sigma {r.sigma:g}')}
            out[family] = dict(runs=labels, seeds=per_seed, autoattack=self.attack(checked, autoattack))
        return dict(families=out, sigma=r.sigma, masking_gap=MASKING_GAP, weak=weak, strong=strong,
                    autoattack=dict(autoattack, seed=r.seeds[0]))

    def attack(self, models: Dict[str, str], settings: dict) -> dict:
        """The robustness evaluation of the study's checkpoints (RobustConfig `settings`) on a fixed subset of the
        test images; results and warnings name the models by the study's own labels."""
        config = robust.RobustConfig(
            checkpoint=[self.runs[run]['checkpoint'] for run in models.values()], dataset=self.recipe.dataset,
            seed=0, workers=self.workers, output=str(self.output), **settings)
        _logger.info(f'Attacking {", ".join(models.values())}: {settings}')
        results = robust.evaluate(config)
        by_checkpoint = {r['checkpoint']: r for r in results['models'].values()}
        results['models'] = {label: by_checkpoint[str(Path(self.runs[run]['checkpoint']).resolve())]
                             for label, run in models.items()}
        results['warnings'] = [w for label, r in results['models'].items()
                               for w in robust.masking_warnings(label, r, config.eps, config.masking_gap)]
        return results

    # 5. pixel un-shuffling, with a receptive field that covers the image
    def unshuffle(self) -> dict:
        r = self.recipe
        size = r.unshuffle_size
        receptive_field = 1 + r.unshuffle_depth * (r.unshuffle_kernel - 1)  # patch-1 stem, depth k x k convs
        if receptive_field < 2 * size - 1:
            raise UsageError(f'the un-shuffling receptive field ({receptive_field}) does not cover {size}x{size} '
                             f'images (needs {2 * size - 1}): raise the depth or kernel, or lower the size')
        kwargs = dict(dim=r.unshuffle_dim, depth=r.unshuffle_depth, kernel_size=r.unshuffle_kernel, patch_size=1)
        jobs = {mode: [Job(f'unshuffle-{mode}-s{seed}', CONVMIXER.format(mode=mode), kwargs, seed, dict(
                    task='unshuffle', perm_seed=seed, input_size=[1, size, size], crop_pct=1.0)) for seed in r.seeds]
                for mode in MODES}
        runs = self.train_all('unshuffle', [job for mode_jobs in jobs.values() for job in mode_jobs])
        baselines = {str(seed): self.unshuffle_baselines(runs[jobs['full'][i].name], seed) for i, seed in enumerate(r.seeds)}
        seed0 = {mode: runs[jobs[mode][0].name] for mode in MODES}
        self.unshuffle_grid(seed0, r.seeds[0])
        return dict(model=f'ConvMixer width {r.unshuffle_dim}, depth {r.unshuffle_depth}, kernel '
                          f'{r.unshuffle_kernel}, patch 1, on {size}x{size} images',
                    size=size, receptive_field=receptive_field,
                    rows=[dict(mode=mode, **self.row(runs, f'unshuffle-{mode}')) for mode in MODES],
                    baselines=baselines, grid=UNSHUFFLE_GRID)

    def unshuffle_baselines(self, run: dict, seed: int) -> dict:
        """PSNR of two trivial reconstructions on the test images: the permuted input, the mean training image."""
        data_config = load_checkpoint(run['checkpoint'])['data_config']
        images = self.images('test', data_config)
        mean = self.images(self.recipe.train_split, data_config).mean(0)
        permutation = PixelPermutation(*images.shape[-2:], seed=seed)
        return {'permuted input': psnr(permutation(images), images).mean().item(),
                'mean training image': psnr(mean.expand_as(images), images).mean().item()}

    def images(self, split: str, data_config: dict) -> torch.Tensor:
        loader = create_eval_loader(create_dataset(self.recipe.dataset, split=split), data_config, 1000, 0,
                                    torch.device('cpu'))
        return torch.cat([x for x, _ in loader])

    def unshuffle_grid(self, runs: Dict[str, dict], seed: int) -> None:
        nets = {}
        for mode, run in runs.items():
            checkpoint = load_checkpoint(run['checkpoint'])
            config = checkpoint['data_config']
            nets[mode] = Normalized(model_from_checkpoint(checkpoint, run['checkpoint']), config['mean'], config['std'])
        images = self.images('test', config)[:8]
        save_unshuffle_grid(nets, PixelPermutation(*images.shape[-2:], seed=seed), images, self.output / UNSHUFFLE_GRID)

    # 6. training cost: the paper's naive separable layer next to this package's execution, per mode
    def cost(self) -> dict:
        r = self.recipe
        # a ConvMixer's layers are plain depthwise and pointwise convs, the paper's own: one execution
        specs = [('ConvMixer', CONVMIXER, convmixer_kwargs(r), ('naive',)),
                 ('SepResNet', RESNET, resnet_kwargs(r.resnet_depths[0], r.resnet_base), ('naive', 'ours'))]
        cases, params = {}, {}
        for family, name, kwargs, executions in specs:
            for mode in MODES:
                for execution in executions:
                    torch.manual_seed(r.seeds[0])
                    model = timm.create_model(name.format(mode=mode), in_chans=1, num_classes=10, **kwargs)
                    if execution == 'naive':  # depthwise conv, then pointwise conv (SeparableConv2d unfused)
                        for module in model.modules():
                            if isinstance(module, SeparableConv2d):
                                module.execution = 'unfused'
                    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
                    key = f'{family}/{mode}/{execution}'
                    cases[key] = (model.to(memory_format=torch.channels_last), x)
                    params[key] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        _logger.info(f'Timing {len(cases)} models, {r.timing_steps} interleaved steps each')
        samples = time_interleaved_samples(cases, train=True, steps=r.timing_steps, warmup=3)
        rows = []
        for key, seconds in samples.items():
            family, mode, execution = key.split('/')
            rows.append(dict(family=family, mode=mode, execution=execution, seconds=seconds,
                             trainable_params=params[key]))
        return dict(batch=BATCH, steps=r.timing_steps, rows=rows)

    def row(self, runs: Dict[str, dict], name: str) -> dict:
        """Per seed: validation and test metric, best epoch; one run name for all seeds."""
        by_seed = {seed: runs[f'{name}-s{seed}'] for seed in self.recipe.seeds}
        return dict(run=name, test={str(s): r['test_metric'] for s, r in by_seed.items()},
                    val={str(s): r['val_metric'] for s, r in by_seed.items()},
                    best_epoch={str(s): r['best_epoch'] for s, r in by_seed.items()},
                    trainable_params=by_seed[self.recipe.seeds[0]]['trainable_params'],
                    params=by_seed[self.recipe.seeds[0]]['params'])


def same_settings(a: dict, b: dict) -> bool:
    """Two runs' settings agree on everything but the loader workers (JSON round trip: tuples are lists)."""
    def key(settings):
        return json.loads(json.dumps({k: v for k, v in settings.items() if k != 'workers'}))
    return key(a) == key(b)


def resnet_name(n: int, base: int, mode: str) -> str:
    return f'resnet-n{n}-b{base}-{mode}'


def validation_curve(folder: Path, config: training.TrainConfig) -> List[float]:
    """The validation metric after every epoch, from the run's summary.csv."""
    with open(folder / 'summary.csv', newline='') as f:
        return [float(row[f'eval_{config.eval_metric}']) for row in csv.DictReader(f)]


def machine() -> dict:
    return dict(platform=platform.platform(), processor=platform.machine(), cpus=os.cpu_count(),
                threads=torch.get_num_threads(), python=platform.python_version(), torch=torch.__version__,
                timm=timm.__version__, device=training.TrainConfig().device,
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


PARTS: Dict[str, Callable[[Study], dict]] = {
    'modes': Study.modes, 'widths': Study.widths, 'filters': Study.filters, 'robustness': Study.robustness,
    'unshuffle': Study.unshuffle, 'cost': Study.cost}


def run_part(part: str, recipe: Recipe, output: Path, workers: int) -> dict:
    """One part's numbers, with its recipe, machine and times: `wall_time_s` of this invocation, of which
    `training_s` trained the runs in `trained_runs`; every run records its own training time."""
    study = Study(recipe, output, workers)
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    numbers = PARTS[part](study)
    elapsed = time.perf_counter() - start
    return dict(numbers, recipe=asdict(recipe), train_flags=as_flags(TRAIN_SETTINGS), machine=machine(),
                started=started.isoformat(timespec='seconds'), wall_time_s=elapsed,
                reused_runs=study.reused, trained_runs=study.trained,
                training_s=sum(study.runs[name]['wall_time_s'] for name in study.trained), runs=study.runs)
