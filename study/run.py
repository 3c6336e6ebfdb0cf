""" The study's experiments, run through timm_frozenmix's library

Every model is trained by train.py's library (`TrainConfig`, `training.setup` / `training.train`) and attacked by
eval_robust's (`RobustConfig`, `robust.evaluate`), with one fixed recipe and fixed seeds; `run_study` returns
every number the report shows.
"""
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import timm
import torch

from timm_frozenmix import robust, training
from timm_frozenmix.checkpoint import load_checkpoint
from timm_frozenmix.data import FASHION_MNIST, SAMPLE, Normalized, create_dataset
from timm_frozenmix.errors import UsageError
from timm_frozenmix.filters import spectral_coverage, spectral_envelope
from timm_frozenmix.loading import model_from_checkpoint
from timm_frozenmix.reporting import write_json
from timm_frozenmix.spectral import FILTER_COUNTS, coverage_growth, spatial_banks
from timm_frozenmix.timing import time_interleaved
from timm_frozenmix.unshuffle import PixelPermutation, psnr, save_unshuffle_grid

_logger = logging.getLogger('study')

MODES = ('full', 'chans', 'space')
FILTER_INITS = ('random', 'same', 'box', 'identity')
CONVMIXER = 'convmixer_128_4_ks5_p2_{mode}'  # registered Fashion-MNIST ConvMixer, resized by model kwargs
RESNET = 'sep_resnet20_cifar_{mode}'  # registered CIFAR separable ResNet, resized by model kwargs
UNSHUFFLE_GRID = 'reproduction_unshuffle.png'
MASKING_GAP = 10.0  # points: AutoAttack this far below PGD-10 flags gradient masking
BATCH = 128  # training and timing batch size


@dataclass(frozen=True)
class Recipe:
    """Model sizes and budgets of one scale of the study; everything else is shared by every run."""
    dataset: str
    epochs: int
    convmixer_dim: int
    convmixer_depths: Tuple[int, ...]
    convmixer_kernel: int
    resnet_channels: Tuple[int, int, int]
    resnet_depths: Tuple[int, ...]  # n of the 6n+2-layer ResNet
    widths: Tuple[int, ...]  # width factors of the n = resnet_depths[0] ResNet
    sigmas: Tuple[float, ...]
    unshuffle_dim: int
    unshuffle_depth: int
    unshuffle_kernel: int
    robust_samples: int
    autoattack_samples: int
    eps: str
    strong_eps: str
    timing_steps: int
    spectral_size: int


FULL = Recipe(
    dataset=FASHION_MNIST, epochs=1, convmixer_dim=64, convmixer_depths=(2, 4), convmixer_kernel=5,
    resnet_channels=(8, 16, 32), resnet_depths=(1, 2), widths=(1, 2, 4), sigmas=(1.0, 2.0),
    unshuffle_dim=32, unshuffle_depth=4, unshuffle_kernel=9, robust_samples=2000, autoattack_samples=128,
    eps='0,1/255,2/255,4/255,8/255', strong_eps='8/255', timing_steps=40, spectral_size=128)
QUICK = Recipe(
    dataset=SAMPLE, epochs=1, convmixer_dim=32, convmixer_depths=(1, 2), convmixer_kernel=5,
    resnet_channels=(4, 8, 16), resnet_depths=(1, 2), widths=(1, 2), sigmas=(1.0, 2.0),
    unshuffle_dim=16, unshuffle_depth=2, unshuffle_kernel=9, robust_samples=200, autoattack_samples=8,
    eps='0,2/255,8/255', strong_eps='8/255', timing_steps=3, spectral_size=64)

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


def convmixer_kwargs(recipe: Recipe, depth: int) -> dict:
    return dict(dim=recipe.convmixer_dim, depth=depth, kernel_size=recipe.convmixer_kernel)


def resnet_kwargs(recipe: Recipe, n: int, width: int = 1) -> dict:
    return dict(layers=[n, n, n], channels=list(recipe.resnet_channels), width=width)


class Study:
    """Trains (or reuses) the runs of one study and collects what each experiment measured."""

    def __init__(self, recipe: Recipe, output: Path, seed: int, workers: int):
        self.recipe, self.output, self.seed, self.workers = recipe, output, seed, workers
        self.runs: Dict[str, dict] = {}
        self.reused: List[str] = []

    def settings(self, model: str, model_kwargs: dict, extra: Optional[dict] = None) -> dict:
        """The TrainConfig fields of one run of this study (JSON, so a finished run can be recognised)."""
        return dict(model=model, model_kwargs=model_kwargs, dataset=self.recipe.dataset, epochs=self.recipe.epochs,
                    seed=self.seed, workers=self.workers, **TRAIN_SETTINGS, **(extra or {}))

    def train(self, name: str, model: str, model_kwargs: dict, extra: Optional[dict] = None) -> dict:
        """One training run; reused if a finished run with the very same settings is on disk."""
        settings = self.settings(model, model_kwargs, extra)
        if name in self.runs:  # shared by several experiments of this study
            if self.runs[name]['settings'] != settings:
                raise UsageError(f'run {name} is already part of the study with other arguments: rename one of them')
            return self.runs[name]
        folder = self.output / 'runs' / name
        record = folder / 'study_run.json'
        if record.exists():
            cached = json.loads(record.read_text())
            if cached.get('settings') == settings:
                _logger.info(f'Reusing run {name} ({cached["metric"]:.2f})')
                self.runs[name] = cached
                self.reused.append(name)
                return cached
        if folder.exists():  # a run of this study that did not finish, or of another recipe
            if not any((folder / name).is_file() for name in ('study_run.json', 'args.yaml')):
                raise UsageError(f'{folder} exists but is no training run of this study: move it out of the way')
            shutil.rmtree(folder)
        _logger.info(f'Run {name}: {settings}')
        config = training.TrainConfig(**settings, output=str(folder.parent), experiment=name)
        start = time.perf_counter()
        run = training.setup(config)
        training.train(run)
        result = dict(
            name=name, settings=settings, model=model, metric=run.best_metric, eval_metric=config.eval_metric,
            checkpoint=str(folder / training.BEST),
            trainable_params=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
            params=sum(p.numel() for p in run.model.parameters()), wall_time_s=time.perf_counter() - start)
        write_json(record, result)
        self.runs[name] = result
        return result

    # 1. Full vs Chans vs Space
    def modes(self) -> List[dict]:
        rows, r = [], self.recipe
        for depth in r.convmixer_depths:
            for mode in MODES:
                run = self.train(f'convmixer-d{depth}-{mode}', CONVMIXER.format(mode=mode), convmixer_kwargs(r, depth))
                rows.append(dict(family='ConvMixer', depth=depth, mode=mode, run=run['name'], top1=run['metric'],
                                 trainable_params=run['trainable_params']))
        for n in r.resnet_depths:
            for mode in MODES:
                run = self.train(f'resnet-n{n}-{mode}', RESNET.format(mode=mode), resnet_kwargs(r, n))
                rows.append(dict(family='SepResNet', depth=n, mode=mode, run=run['name'], top1=run['metric'],
                                 trainable_params=run['trainable_params']))
        return rows

    # 2. width sweep
    def widths(self) -> List[dict]:
        rows, r = [], self.recipe
        n = r.resnet_depths[0]
        for width in r.widths:
            for mode in ('full', 'chans'):
                name = f'resnet-n{n}-{mode}' if width == 1 else f'resnet-n{n}-w{width}-{mode}'
                run = self.train(name, RESNET.format(mode=mode), resnet_kwargs(r, n, width))
                rows.append(dict(width=width, base_width=r.resnet_channels[0] * width, mode=mode, run=name,
                                 top1=run['metric'], trainable_params=run['trainable_params']))
        return rows

    # 3. filter structure
    def filters(self) -> List[dict]:
        rows, n = [], self.recipe.resnet_depths[0]
        for init in FILTER_INITS:
            name = f'resnet-n{n}-chans' if init == 'random' else f'resnet-n{n}-chans-{init}'
            run = self.train(name, RESNET.format(mode='chans'), resnet_kwargs(self.recipe, n),
                             None if init == 'random' else dict(spatial_init=init))
            rows.append(dict(init=init, run=name, top1=run['metric']))
        return rows

    # 4. robustness
    def robustness(self) -> dict:
        r = self.recipe
        depth = r.convmixer_depths[0]
        kwargs = convmixer_kwargs(r, depth)
        models = {mode: f'convmixer-d{depth}-{mode}' for mode in MODES}
        for mode in ('full', 'chans'):
            models[f'{mode}, FGSM-trained'] = self.train(
                f'convmixer-d{depth}-{mode}-fgsm', CONVMIXER.format(mode=mode), kwargs,
                dict(adv_train='fgsm', adv_eps=eps_list(r.strong_eps)[0][1]))['name']
        for sigma in r.sigmas:
            models[f'chans, sigma {sigma:g}'] = self.train(
                f'convmixer-d{depth}-chans-sigma{sigma:g}', CONVMIXER.format(mode='chans'), kwargs,
                dict(smooth_sigma=sigma))['name']
        weak = self.attack(models, dict(attacks=['fgsm', 'pgd'], pgd_steps=2, eps=eps_list(r.eps),
                                        num_samples=r.robust_samples), baseline='chans')
        # strong-attack check: PGD-10 (vs FGSM) on every model but Space, AutoAttack (vs PGD-10) on fewer images of
        # Full, Chans and the smoothest Chans: AutoAttack's later stages cost about a second per image here
        strong = self.attack({k: v for k, v in models.items() if k != 'space'},
                             dict(attacks=['fgsm', 'pgd'], pgd_steps=10, eps=eps_list(r.strong_eps),
                                  num_samples=r.robust_samples))
        smoothest = f'chans, sigma {max(r.sigmas):g}'
        autoattack = self.attack({k: models[k] for k in ('full', 'chans', smoothest)},
                                 dict(attacks=['pgd', 'autoattack'], pgd_steps=10, eps=eps_list(r.strong_eps),
                                      num_samples=r.autoattack_samples, masking_gap=MASKING_GAP))
        return dict(model=f'ConvMixer width {r.convmixer_dim}, depth {depth}', runs=models, weak=weak, strong=strong,
                    autoattack=autoattack, masking_gap=MASKING_GAP)

    def attack(self, models: Dict[str, str], settings: dict, baseline: Optional[str] = None) -> dict:
        """The robustness evaluation of the study's checkpoints (RobustConfig `settings`); results and warnings
        name the models by the study's own labels."""
        config = robust.RobustConfig(
            checkpoint=[self.runs[run]['checkpoint'] for run in models.values()], dataset=self.recipe.dataset,
            seed=self.seed, workers=self.workers, output=str(self.output),
            baseline=self.runs[models[baseline]]['checkpoint'] if baseline else None, **settings)
        _logger.info(f'Attacking {", ".join(models)}: {settings}')
        results = robust.evaluate(config)
        by_checkpoint = {r['checkpoint']: r for r in results['models'].values()}
        results['models'] = {label: by_checkpoint[str(Path(self.runs[run]['checkpoint']).resolve())]
                             for label, run in models.items()}
        results['warnings'] = [w for label, r in results['models'].items()
                               for w in robust.masking_warnings(label, r, config.eps, config.masking_gap)]
        results['baseline'] = baseline
        results['settings'] = settings
        return results

    # 5. pixel un-shuffling
    def unshuffle(self) -> dict:
        r = self.recipe
        kwargs = dict(dim=r.unshuffle_dim, depth=r.unshuffle_depth, kernel_size=r.unshuffle_kernel, patch_size=1)
        runs = {mode: self.train(f'unshuffle-{mode}', CONVMIXER.format(mode=mode), kwargs,
                                 dict(task='unshuffle', perm_seed=self.seed)) for mode in MODES}
        test = create_dataset(r.dataset, split='test')
        images = torch.from_numpy(test.images.copy()).float().div(255).unsqueeze(1)
        train_mean = torch.from_numpy(create_dataset(r.dataset, split='train').images.copy()).float().div(255).mean(0)
        permutation = PixelPermutation(*images.shape[-2:], seed=self.seed)
        nets = {}
        for mode, run in runs.items():
            checkpoint = load_checkpoint(run['checkpoint'])
            config = checkpoint['data_config']
            nets[mode] = Normalized(model_from_checkpoint(checkpoint, run['checkpoint']), config['mean'], config['std'])
        save_unshuffle_grid(nets, permutation, images[:8], self.output / UNSHUFFLE_GRID)
        return dict(
            model=f'ConvMixer width {r.unshuffle_dim}, depth {r.unshuffle_depth}, kernel {r.unshuffle_kernel}, patch 1',
            psnr={mode: run['metric'] for mode, run in runs.items()},
            runs={mode: run['name'] for mode, run in runs.items()},
            baselines={'permuted input': psnr(permutation(images), images).mean().item(),
                       'mean training image': psnr(train_mean.expand_as(images), images).mean().item()},
            grid=UNSHUFFLE_GRID)

    # 6. training cost
    def cost(self) -> List[dict]:
        r = self.recipe
        specs = [('ConvMixer', r.convmixer_depths[-1], CONVMIXER, convmixer_kwargs(r, r.convmixer_depths[-1])),
                 ('SepResNet', r.resnet_depths[-1], RESNET, resnet_kwargs(r, r.resnet_depths[-1]))]
        in_chans, size = (1, 28)
        rows = []
        for channels_last in (False, True):
            cases, params = {}, {}
            for family, depth, name, kwargs in specs:
                for mode in MODES:
                    torch.manual_seed(self.seed)
                    model = timm.create_model(name.format(mode=mode), in_chans=in_chans, num_classes=10, **kwargs)
                    x = torch.rand(BATCH, in_chans, size, size)
                    if channels_last:
                        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
                            memory_format=torch.channels_last)
                    cases[family, depth, mode] = (model, x)
                    params[family, depth, mode] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            _logger.info(f'Timing {len(cases)} models, {r.timing_steps} steps each (channels_last={channels_last})')
            seconds = time_interleaved(cases, train=True, steps=r.timing_steps, warmup=2)
            rows += [dict(family=family, depth=depth, mode=mode, channels_last=channels_last, batch=BATCH,
                          seconds_per_step=seconds[family, depth, mode], trainable_params=params[family, depth, mode])
                     for family, depth, mode in cases]
        return rows

    # 7. spectral coverage of the frozen banks
    def spectral(self, names: List[str]) -> dict:
        """Coverage of every frozen layer of the named Chans runs, next to the test top-1 each run reached."""
        size, threshold = self.recipe.spectral_size, 1.0
        banks = []
        for name in names:
            run = self.runs[name]
            checkpoint = load_checkpoint(run['checkpoint'])
            model = model_from_checkpoint(checkpoint, run['checkpoint'])
            layers = [spectral_coverage(spectral_envelope(w.detach(), size), threshold)
                      for _, w in spatial_banks(model) if not w.requires_grad]
            banks.append(dict(run=name, top1=run['metric'], layers=len(layers), coverage=sum(layers) / len(layers),
                              min_coverage=min(layers)))
        torch.manual_seed(self.seed)
        kernels = sorted({self.recipe.convmixer_kernel, 3})
        growth = {f'{k}x{k}': coverage_growth(k, size, threshold) for k in kernels}
        return dict(size=size, threshold=threshold, banks=banks, growth=dict(filters=list(FILTER_COUNTS), **growth))


def machine() -> dict:
    return dict(platform=platform.platform(), processor=platform.machine(), cpus=os.cpu_count(),
                threads=torch.get_num_threads(), python=platform.python_version(), torch=torch.__version__,
                timm=timm.__version__)


def run_study(recipe: Recipe, output: Path, seed: int, workers: int, quick: bool) -> dict:
    """Every experiment's numbers; the un-shuffling grid is drawn into `output` (the report copies it)."""
    study = Study(recipe, output, seed, workers)
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    results = dict(quick=quick, recipe=asdict(recipe), train_flags=as_flags(TRAIN_SETTINGS), seed=seed, machine=machine(),
                   started=started.isoformat(timespec='seconds'))
    timings = {}
    for key, step in [('modes', study.modes), ('widths', study.widths), ('filters', study.filters),
                      ('robustness', study.robustness), ('unshuffle', study.unshuffle),
                      ('cost', study.cost)]:
        t = time.perf_counter()
        results[key] = step()
        timings[key] = time.perf_counter() - t
    t = time.perf_counter()
    chans_runs = [row['run'] for row in results['modes'] + results['widths'] if row['mode'] == 'chans']
    chans_runs += [row['run'] for row in results['filters']]  # every filter experiment is a Chans model
    chans_runs += [run for label, run in results['robustness']['runs'].items() if label.startswith('chans')]
    results['spectral'] = study.spectral(list(dict.fromkeys(chans_runs)))
    timings['spectral'] = time.perf_counter() - t
    results['runs'] = study.runs
    results['reused_runs'] = study.reused
    results['timings_s'] = timings
    # reused runs were trained by an earlier invocation: their time belongs to the study's total
    results['wall_time_s'] = time.perf_counter() - start + sum(study.runs[name]['wall_time_s'] for name in study.reused)
    results['training_time_s'] = sum(run['wall_time_s'] for run in study.runs.values())
    return results
