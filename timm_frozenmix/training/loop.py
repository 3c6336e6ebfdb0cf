""" Training frozen-mixing (or any timm) models, from one CPU to many GPUs, on timm's training parts

The library behind train.py: a `TrainConfig` (timm's flag names, as fields) goes to `setup`, which checks it,
builds the model from its `ModelSpec`, the data, optimizer, schedule, EMA and task, and `train` runs the epochs,
writing checkpoints that carry the spec. Beyond timm: FGSM adversarial training (`adv_train='fgsm'`) and pixel
un-shuffling (`task='unshuffle'`).

    run = setup(TrainConfig(model='convmixer_128_4_ks5_p2_chans', epochs=7))
    train(run)   # run.output_dir holds last.pth.tar, model_best.pth.tar, model.safetensors, summary.csv

Models see [0, 1] pixels; normalization is their first layer (`Normalized`), as in the robustness evaluation.
"""
import logging
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import timm
import torch
import torch.nn as nn
import yaml
from timm.data import Mixup, create_loader, resolve_data_config
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.task import ClassificationTask
from timm.utils import (
    AverageMeter, ModelEmaV3, NativeScaler, accuracy, dispatch_clip_grad, distribute_bn, get_outdir, random_seed,
    reduce_tensor, unwrap_model, update_summary,
)
from timm.utils.distributed import init_distributed_device_so

from timm_frozenmix.io.checkpoint import check_architecture, checkpoint_spec, load_checkpoint, save_atomic, save_safetensors
from timm_frozenmix.models.convert import format_summary, summarize
from timm_frozenmix.data.datasets import (
    SAMPLE, Normalized, check_dataset, create_dataset, create_eval_loader, dataset_info, is_known_dataset,
)
from timm_frozenmix.core.devices import check_device
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.outputs import check_output_folder
from timm_frozenmix.models.spec import ModelSpec, build_model
from timm_frozenmix.models.unshuffle_net import UnshuffleNet
from timm_frozenmix.evaluation.unshuffle import PixelPermutation, UnshuffleTask, psnr, save_unshuffle_grid

__all__ = ['TrainConfig', 'TrainingRun', 'setup', 'train', 'LAST', 'BEST', 'WEIGHTS']

_logger = logging.getLogger('train')

LAST, BEST, WEIGHTS = 'last.pth.tar', 'model_best.pth.tar', 'model.safetensors'


# torch.compile backends that ship with torch (eager and aot_eager trace without compiling), and its modes
COMPILE_BACKENDS = ('inductor', 'cudagraphs', 'aot_eager', 'eager')
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


@dataclass
class TrainConfig:
    """Every setting of a training run, named as timm's train.py flags are (`--lr` is `lr`).

    The model fields (model, model_kwargs, in_chans, num_classes, separate, learn, depth_multiplier,
    spatial_init, smooth_sigma, task) make its `model_spec()`; in_chans and num_classes follow the dataset when
    None. `check_config` says what is wrong with a config, as a UsageError, before anything is built.
    """
    # data
    data_dir: Optional[str] = None
    dataset: str = SAMPLE
    train_split: str = 'train'
    val_split: str = 'validation'
    dataset_download: bool = False
    input_img_mode: Optional[str] = None
    # model
    model: str = 'convmixer_128_4_ks5_p2_chans'
    pretrained: bool = False
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    num_classes: Optional[int] = None
    in_chans: Optional[int] = None
    img_size: Optional[int] = None
    input_size: Optional[List[int]] = None
    crop_pct: Optional[float] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    interpolation: str = ''
    drop: float = 0.0
    drop_path: Optional[float] = None
    channels_last: bool = False
    batch_size: int = 128
    validation_batch_size: Optional[int] = None
    # frozen mixing
    separate: bool = False
    learn: Optional[str] = None
    depth_multiplier: int = 9
    spatial_init: Optional[str] = None
    smooth_sigma: Optional[float] = None
    keep_function: bool = False
    # task
    task: str = 'classification'
    perm_seed: int = 0
    adv_train: str = 'none'
    adv_eps: float = 8 / 255
    # optimizer and schedule
    opt: str = 'adamw'
    opt_eps: Optional[float] = None
    opt_betas: Optional[List[float]] = None
    momentum: float = 0.9
    weight_decay: float = 0.05
    clip_grad: Optional[float] = None
    clip_mode: str = 'norm'
    layer_decay: Optional[float] = None
    lr: float = 3e-3
    sched: str = 'cosine'
    sched_on_updates: bool = False
    epochs: int = 7
    start_epoch: Optional[int] = None
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    warmup_prefix: bool = False
    min_lr: float = 1e-5
    decay_epochs: float = 30
    decay_milestones: List[int] = field(default_factory=lambda: [30, 60])
    decay_rate: float = 0.1
    cooldown_epochs: int = 0
    patience_epochs: int = 10
    # augmentation and regularization
    no_aug: bool = False
    scale: List[float] = field(default_factory=lambda: [0.7, 1.0])
    ratio: List[float] = field(default_factory=lambda: [3. / 4., 4. / 3.])
    hflip: float = 0.5
    vflip: float = 0.
    color_jitter: float = 0.
    aa: Optional[str] = None
    reprob: float = 0.
    remode: str = 'pixel'
    recount: int = 1
    train_interpolation: str = 'random'
    mixup: float = 0.0
    cutmix: float = 0.0
    cutmix_minmax: Optional[List[float]] = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = 'batch'
    mixup_off_epoch: int = 0
    smoothing: float = 0.1
    # EMA
    model_ema: bool = False
    model_ema_decay: float = 0.998
    model_ema_warmup: bool = False
    # run
    seed: int = 42
    device: str = field(default_factory=lambda: 'cuda' if torch.cuda.is_available() else 'cpu')
    amp: bool = False
    amp_dtype: Optional[str] = None
    torchcompile: Optional[str] = None  # a torch.compile backend, e.g. 'inductor'
    torchcompile_mode: Optional[str] = None  # torch.compile's mode, e.g. 'reduce-overhead' (CUDA graphs)
    dist_bn: str = 'reduce'
    workers: int = 2
    pin_mem: bool = False
    log_interval: int = 20
    output: str = 'output/train'
    experiment: str = ''
    eval_metric: Optional[str] = None
    resume: str = ''
    no_resume_opt: bool = False

    def __post_init__(self):
        if self.eval_metric is None:
            self.eval_metric = 'psnr' if self.task == 'unshuffle' else 'top1'

    def model_spec(self) -> ModelSpec:
        """The spec of the model these settings build (channels and classes still open when None)."""
        return ModelSpec(
            architecture=self.model, model_kwargs=self.model_kwargs, in_chans=self.in_chans,
            num_classes=self.num_classes, separate=self.separate, learn=self.learn,
            depth_multiplier=self.depth_multiplier, spatial_init=self.spatial_init,
            smooth_sigma=self.smooth_sigma or 0.0, keep_function=self.keep_function, task=self.task)


def check_config(config: TrainConfig) -> None:
    """Every check that can fail on bad input, run before anything is built or written; raises UsageError."""
    if not (timm.is_model(config.model) or config.model.startswith(('hf-hub:', 'local-dir:'))):
        raise UsageError(f'unknown model {config.model!r}: see timm.list_models() (import timm_frozenmix first)')
    check_dataset(config.dataset, config.data_dir, config.dataset_download)
    check_output_folder(config.output)
    metrics = ('psnr',) if config.task == 'unshuffle' else ('top1', 'top5')
    checks = [
        (config.epochs >= 1, f'--epochs must be >= 1, got {config.epochs}'),
        (config.batch_size >= 1, f'--batch-size must be >= 1, got {config.batch_size}'),
        (config.validation_batch_size is None or config.validation_batch_size >= 1,
         f'--validation-batch-size must be >= 1, got {config.validation_batch_size}'),
        (config.lr > 0, f'--lr must be > 0, got {config.lr:g}'),
        (config.weight_decay >= 0, f'--weight-decay must be >= 0, got {config.weight_decay:g}'),
        (config.workers >= 0, f'--workers must be >= 0, got {config.workers}'),
        (config.log_interval >= 1, f'--log-interval must be >= 1, got {config.log_interval}'),
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
        (config.eval_metric in metrics, f'--eval-metric {config.eval_metric} is not measured for --task {config.task}: '
                                      f'choose {" or ".join(metrics)}'),
        (config.experiment in ('', Path(config.experiment).name) and config.experiment not in ('.', '..'),
         f'--experiment {config.experiment!r} must be a plain folder name (--output sets where it goes)'),
        (config.torchcompile in (None, *COMPILE_BACKENDS),
         f'--torchcompile {config.torchcompile!r}: choose one of {", ".join(COMPILE_BACKENDS)}'),
        (config.torchcompile_mode in (None, *COMPILE_MODES),
         f'--torchcompile-mode {config.torchcompile_mode!r}: choose one of {", ".join(COMPILE_MODES)}'),
        (config.torchcompile_mode is None or config.torchcompile is not None,
         '--torchcompile-mode needs --torchcompile'),
        (not (config.task == 'unshuffle' and config.adv_train != 'none'),
         '--adv-train applies to classification, not to --task unshuffle'),
        (not (config.task == 'unshuffle' and (config.mixup > 0 or config.cutmix > 0)),
         '--mixup / --cutmix apply to classification, not to --task unshuffle'),
        (not (config.amp_dtype == 'float16' and not config.device.startswith('cuda')),
         '--amp-dtype float16 needs a CUDA device; use bfloat16 on the CPU'),
        (config.adv_train in ('none', 'fgsm'), f'--adv-train {config.adv_train!r}: choose none or fgsm'),
        (config.amp_dtype in (None, 'float16', 'bfloat16'), f'--amp-dtype {config.amp_dtype!r}: float16 or bfloat16'),
        (config.clip_mode in ('norm', 'value', 'agc'), f'--clip-mode {config.clip_mode!r}: norm, value or agc'),
        (config.dist_bn in ('reduce', 'broadcast', ''), f'--dist-bn {config.dist_bn!r}: reduce, broadcast or ""'),
        (not config.keep_function or config.pretrained,
         '--keep-function keeps what pretrained weights compute: add --pretrained'),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    config.model_spec()  # learn, spatial init, smoothing, task and depth multiplier, checked by the spec
    check_device(config.device)
    check_dataset_channels(config)
    check_optimizer_and_schedule(config)


def check_dataset_channels(config) -> None:
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


def check_optimizer_and_schedule(config) -> None:
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


def load_resume(config: TrainConfig) -> Optional[dict]:
    """The checkpoint to resume from, checked against this run's model and task; None without --resume."""
    if not config.resume:
        return None
    checkpoint = load_checkpoint(config.resume)
    spec = checkpoint_spec(checkpoint, config.resume)
    check_architecture(spec, config.model, config.resume)
    if spec.task != config.task:
        raise UsageError(f'checkpoint {config.resume} was trained with --task {spec.task}, not --task {config.task}')
    perm_seed = (checkpoint.get('training') or checkpoint.get('args') or {}).get('perm_seed')
    if config.task == 'unshuffle' and perm_seed != config.perm_seed:
        raise UsageError(f'checkpoint {config.resume} was trained with --perm-seed {perm_seed}, '
                         f'not {config.perm_seed}: resume with the same permutation')
    if 'epoch' not in checkpoint:
        raise UsageError(f'checkpoint {config.resume} holds weights only; resume needs {LAST} or {BEST}')
    if checkpoint['epoch'] + 1 >= config.epochs:
        raise UsageError(f'checkpoint {config.resume} has finished epoch {checkpoint["epoch"] + 1} of {config.epochs}: '
                         f'raise --epochs to train on')
    return checkpoint


def resolve_data(config: TrainConfig, model: nn.Module, info) -> dict:
    """timm's data config for the model, with size and normalization following the dataset by default."""
    overrides = dict(input_size=config.input_size, img_size=config.img_size, crop_pct=config.crop_pct,
                     interpolation=config.interpolation, mean=config.mean, std=config.std)
    if config.input_size is None and config.img_size is None and info.input_size:
        overrides['input_size'] = info.input_size
    if config.mean is None and info.mean:
        overrides['mean'], overrides['std'] = info.mean, config.std or info.std
    data_config = resolve_data_config(overrides, model=model.backbone if isinstance(model, UnshuffleNet) else model)
    in_chans = config.in_chans or info.in_chans
    data_config['input_size'] = (in_chans,) + tuple(data_config['input_size'][1:])
    if len(data_config['mean']) != in_chans:
        mean, std = data_config['mean'], data_config['std']
        data_config['mean'] = (sum(mean) / len(mean),) * in_chans
        data_config['std'] = (sum(std) / len(std),) * in_chans
    return data_config


class FGSMClassificationTask(ClassificationTask):
    """Classification on FGSM examples made in [0, 1] pixel space: x + eps * sign(grad_x loss), clipped."""

    def __init__(self, model, eps: float, **kwargs):
        super().__init__(model, **kwargs)
        self.eps = eps

    def forward(self, input, target):
        # the attack goes through the unwrapped model: no DDP gradient hooks for a gradient w.r.t. the input
        attack_model = unwrap_model(self.trainable_module)
        x = input.detach().requires_grad_(True)
        grad, = torch.autograd.grad(self.criterion(attack_model(x), target), x)
        adversarial = (input + self.eps * grad.sign()).clamp(0, 1).detach()
        return super().forward(adversarial, target)


@dataclass
class TrainingRun:
    """Everything a training run is made of, built once by `setup`; `train` advances it epoch by epoch."""
    config: TrainConfig
    spec: ModelSpec  # with the dataset's channels and classes filled in
    command: Optional[str]  # the command line that started the run, recorded in its checkpoints
    device: torch.device
    rank: int
    world_size: int
    distributed: bool
    model: nn.Module  # what checkpoints hold: takes normalized input
    net: nn.Module  # model behind `Normalized`: takes [0, 1] pixels
    data_config: Dict[str, Any]
    optimizer: torch.optim.Optimizer
    autocast: Callable
    scaler: Optional[NativeScaler]
    ema: Optional[ModelEmaV3]
    task: nn.Module
    mixup: Optional[Mixup]
    permutation: Optional[PixelPermutation]
    loader_train: Any
    loader_eval: Any
    scheduler: Any
    num_epochs: int
    output_dir: Optional[Path]  # None on every rank but the first
    start_epoch: int = 0
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None

    @property
    def primary(self) -> bool:
        return self.rank == 0


def setup(config: TrainConfig, command: Optional[str] = None) -> TrainingRun:
    """Check `config`, then build the model, data, optimizer, schedule, EMA and task of the run.

    Raises UsageError (before anything is built or written) on bad settings. The run folder is created here
    on the first rank; `command` is the command line to record in its checkpoints.
    """
    check_config(config)
    resume = load_resume(config)
    dist = init_distributed_device_so(device=config.device)
    device = torch.device(dist['device'])

    dataset_kwargs = dict(root=config.data_dir, download=config.dataset_download, batch_size=config.batch_size)
    if config.input_img_mode:
        dataset_kwargs['input_img_mode'] = config.input_img_mode
    dataset_train = create_dataset(config.dataset, split=config.train_split, is_training=True, **dataset_kwargs)
    dataset_eval = create_dataset(config.dataset, split=config.val_split, **dataset_kwargs)
    info = dataset_info(config.dataset, dataset_train, config.input_img_mode)
    if config.task == 'classification' and not (config.num_classes or info.num_classes):
        raise UsageError(f'cannot tell the number of classes of {config.dataset!r}: pass --num-classes')
    spec = config.model_spec().with_data(info.in_chans, info.num_classes)

    torch.manual_seed(config.seed)  # frozen random filters must agree across ranks before DDP's broadcast
    model = build_model(spec, pretrained=config.pretrained, drop_rate=config.drop, drop_path_rate=config.drop_path)
    if dist['global_rank'] == 0:
        _logger.info(f'Model {config.model} created, parameters by role:\n'
                     + format_summary(summarize(model, print_table=False)))
    data_config = resolve_data(config, model, info)
    model = model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = Normalized(model, data_config['mean'], data_config['std']).to(device)

    optimizer = create_optimizer_v2(net, **optimizer_kwargs(cfg=config))
    autocast, scaler = make_amp(config, device)
    ema = ModelEmaV3(net, decay=config.model_ema_decay, use_warmup=config.model_ema_warmup) \
        if config.model_ema else None
    progress = restore(resume, config, model, optimizer, scaler, ema) if resume is not None else {}

    # the training forward is compiled; evaluation, EMA and checkpoints use the plain modules
    trained = torch.compile(net, backend=config.torchcompile, mode=config.torchcompile_mode) \
        if config.torchcompile else net
    mixup, permutation = None, None
    if config.task == 'unshuffle':
        permutation = PixelPermutation(*data_config['input_size'][1:], seed=config.perm_seed).to(device)
        task = UnshuffleTask(trained, permutation, device=device)
    else:
        mixup = make_mixup(config, spec.num_classes)
        criterion_kwargs = dict(smoothing=config.smoothing, soft_targets=mixup is not None)
        task_cls = partial(FGSMClassificationTask, eps=config.adv_eps) if config.adv_train == 'fgsm' \
            else ClassificationTask
        task = task_cls(trained, criterion_kwargs=criterion_kwargs, device=device, verbose=False)
    if dist['distributed']:
        task.prepare_distributed(device_ids=[device.index] if device.type == 'cuda' else None)

    random_seed(config.seed, dist['global_rank'])  # augmentation differs per rank; the model was built before
    loader_train, loader_eval = make_loaders(config, data_config, device, dist['distributed'], dataset_train,
                                             dataset_eval)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(config), updates_per_epoch=len(loader_train))
    start_epoch = config.start_epoch if config.start_epoch is not None else progress.get('start_epoch', 0)
    if start_epoch > 0:
        scheduler.step(start_epoch)

    output_dir = make_output_dir(config, resumed=resume is not None) if dist['global_rank'] == 0 else None
    return TrainingRun(
        config=config, spec=spec, command=command, device=device, rank=dist['global_rank'],
        world_size=dist['world_size'], distributed=dist['distributed'], model=model, net=net,
        data_config=data_config, optimizer=optimizer, autocast=autocast, scaler=scaler, ema=ema, task=task,
        mixup=mixup, permutation=permutation, loader_train=loader_train, loader_eval=loader_eval,
        scheduler=scheduler, num_epochs=num_epochs, output_dir=output_dir, start_epoch=start_epoch,
        best_metric=progress.get('best_metric'), best_epoch=progress.get('best_epoch'))


def make_amp(config: TrainConfig, device: torch.device):
    """The autocast context and (for float16) the loss scaler that --amp asks for."""
    if not config.amp:
        return nullcontext, None
    dtype = config.amp_dtype or ('float16' if device.type == 'cuda' else 'bfloat16')
    autocast = partial(torch.autocast, device_type=device.type, dtype=getattr(torch, dtype))
    return autocast, NativeScaler(device=device.type) if dtype == 'float16' else None


def make_mixup(config: TrainConfig, num_classes: int) -> Optional[Mixup]:
    if not (config.mixup > 0 or config.cutmix > 0 or config.cutmix_minmax is not None):
        return None
    return Mixup(
        mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, cutmix_minmax=config.cutmix_minmax,
        prob=config.mixup_prob, switch_prob=config.mixup_switch_prob, mode=config.mixup_mode,
        label_smoothing=config.smoothing, num_classes=num_classes)


def make_loaders(config: TrainConfig, data_config: dict, device: torch.device, distributed: bool,
                 dataset_train, dataset_eval):
    chans = data_config['input_size'][0]
    loader_train = create_loader(
        dataset_train, input_size=data_config['input_size'], batch_size=config.batch_size, is_training=True,
        no_aug=config.no_aug, re_prob=config.reprob, re_mode=config.remode, re_count=config.recount,
        scale=config.scale, ratio=config.ratio, hflip=config.hflip, vflip=config.vflip,
        color_jitter=config.color_jitter, auto_augment=config.aa, interpolation=config.train_interpolation,
        mean=(0.,) * chans, std=(1.,) * chans,  # [0, 1] inputs
        num_workers=config.workers, distributed=distributed, pin_memory=config.pin_mem, device=device,
        use_prefetcher=device.type == 'cuda', persistent_workers=config.workers > 0)
    loader_eval = create_eval_loader(
        dataset_eval, data_config, config.validation_batch_size or config.batch_size, config.workers, device,
        distributed=distributed, pin_memory=config.pin_mem, persistent_workers=True)
    return loader_train, loader_eval


def make_output_dir(config: TrainConfig, resumed: bool) -> Path:
    if resumed and not config.experiment:
        return Path(config.resume).resolve().parent
    name = config.experiment or '-'.join([
        datetime.now().strftime('%Y%m%d-%H%M%S'), config.model.replace('/', '_'), config.task])
    return Path(get_outdir(config.output, name, inc=not resumed)).resolve()


def restore(checkpoint: dict, config: TrainConfig, model, optimizer, scaler, ema) -> dict:
    """Model, optimizer, scaler and EMA state from a train.py checkpoint; the epoch to start at and the best."""
    model.load_state_dict(checkpoint['state_dict'])
    if not config.no_resume_opt:
        optimizer.load_state_dict(checkpoint['optimizer'])
        if scaler is not None and 'scaler' in checkpoint:
            scaler.load_state_dict(checkpoint['scaler'])
    if ema is not None and 'state_dict_ema' in checkpoint:
        ema.module.model.load_state_dict(checkpoint['state_dict_ema'])
    _logger.info(f'Resumed from {config.resume} at epoch {checkpoint["epoch"] + 1}')
    return dict(start_epoch=checkpoint['epoch'] + 1, best_metric=checkpoint.get('best_metric'),
                best_epoch=checkpoint.get('best_epoch'))


def train_one_epoch(run, epoch: int) -> OrderedDict:
    config = run.config
    run.task.train()
    if run.distributed and hasattr(run.loader_train.sampler, 'set_epoch'):
        run.loader_train.sampler.set_epoch(epoch)
    mixup = run.mixup
    if mixup is not None and config.mixup_off_epoch and epoch >= config.mixup_off_epoch:
        mixup.mixup_enabled = False
    # the running loss stays on the device: reading it every step would sync a GPU every step
    loss_sum, seen, batch_time = torch.zeros((), device=run.device), 0, AverageMeter()
    num_updates = epoch * len(run.loader_train)
    last_idx = len(run.loader_train) - 1
    end = time.time()
    for batch_idx, (input, target) in enumerate(run.loader_train):
        input, target = input.to(run.device), target.to(run.device)
        if mixup is not None:
            input, target = mixup(input, target)
        if config.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            loss = run.task(input, target)['loss']
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler(loss, run.optimizer, clip_grad=config.clip_grad, clip_mode=config.clip_mode,
                       parameters=run.net.parameters())
        else:
            loss.backward()
            if config.clip_grad is not None:
                dispatch_clip_grad(run.net.parameters(), value=config.clip_grad, mode=config.clip_mode)
            run.optimizer.step()
        num_updates += 1
        if run.ema is not None:
            run.ema.update(run.net, step=num_updates)
        run.scheduler.step_update(num_updates=num_updates)
        loss_sum += loss.detach().float() * input.size(0)
        seen += input.size(0)
        batch_time.update(time.time() - end)
        end = time.time()
        if run.primary and (batch_idx % config.log_interval == 0 or batch_idx == last_idx):
            lr = run.optimizer.param_groups[0]['lr']
            rate = input.size(0) * run.world_size / batch_time.avg
            _logger.info(
                f'Train: {epoch} [{batch_idx:>4d}/{last_idx} ({100. * batch_idx / max(last_idx, 1):>3.0f}%)]  '
                f'Loss: {loss.item():#.4g} ({loss_sum.item() / seen:#.4g})  '
                f'Time: {batch_time.val:.3f}s, {rate:>7.1f}/s  LR: {lr:.3e}')
    return OrderedDict(loss=loss_sum.item() / max(seen, 1))


@torch.no_grad()
def validate(run, net: nn.Module, log_suffix: str = '') -> OrderedDict:
    """Loss and top-1/top-5 accuracy, or loss and PSNR for un-shuffling, averaged over all ranks."""
    config = run.config
    net.eval()
    meters = OrderedDict((k, AverageMeter()) for k in (
        ('loss', 'psnr') if config.task == 'unshuffle' else ('loss', 'top1', 'top5')))
    for input, target in run.loader_eval:
        input, target = input.to(run.device), target.to(run.device)
        if config.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            if config.task == 'unshuffle':
                output = net(run.permutation(input)).float()
                values = dict(loss=nn.functional.mse_loss(output, input), psnr=psnr(output, input).mean())
            else:
                output = net(input).float()
                top1, top5 = accuracy(output, target, topk=(1, min(5, output.shape[-1])))
                values = dict(loss=nn.functional.cross_entropy(output, target), top1=top1, top5=top5)
        for key, value in values.items():
            if run.distributed:
                value = reduce_tensor(value.detach(), run.world_size)
            meters[key].update(value.item(), input.size(0))
    metrics = OrderedDict((k, m.avg) for k, m in meters.items())
    if run.primary:
        _logger.info(f'Eval{log_suffix}: ' + '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items()))
    return metrics


def checkpoint_state(run: TrainingRun, epoch: int) -> dict:
    """What a checkpoint holds: weights and training state, the model's spec, and how it was trained."""
    state = {
        'spec': run.spec.to_dict(),
        'training': asdict(run.config),
        'command': run.command,
        'data_config': dict(run.data_config),
        'epoch': epoch,
        'state_dict': run.model.state_dict(),
        'optimizer': run.optimizer.state_dict(),
        'best_metric': run.best_metric,
        'best_epoch': run.best_epoch,
        'version': 2,
    }
    if run.scaler is not None:
        state['scaler'] = run.scaler.state_dict()
    if run.ema is not None:
        state['state_dict_ema'] = run.ema.module.model.state_dict()
    return state


def save_epoch(run: TrainingRun, epoch: int, metric: float) -> None:
    """last every epoch; best (and its safetensors weights) when the eval metric improves."""
    improved = run.best_metric is None or metric > run.best_metric
    if improved:
        run.best_metric, run.best_epoch = metric, epoch
    state = checkpoint_state(run, epoch)
    save_atomic(state, run.output_dir / LAST)
    if improved:
        save_atomic(state, run.output_dir / BEST)
        best_weights = state['state_dict_ema'] if run.ema is not None else state['state_dict']
        save_safetensors(best_weights, run.output_dir / WEIGHTS, metadata={'arch': run.spec.architecture})


def write_settings(run: TrainingRun) -> None:
    """args.yaml: every setting of the run, as timm's train.py writes its flags."""
    (run.output_dir / 'args.yaml').write_text(yaml.safe_dump(asdict(run.config), sort_keys=False))


def train(run: TrainingRun) -> None:
    """Every epoch from `run.start_epoch`: train, validate (EMA too), step the schedule, checkpoint on rank 0."""
    config = run.config
    if run.primary:
        write_settings(run)
        _logger.info(f'Training {config.model} on {config.dataset} for {run.num_epochs} epochs, '
                     f'writing to {run.output_dir}')
    for epoch in range(run.start_epoch, run.num_epochs):
        lrs = [group['lr'] for group in run.optimizer.param_groups]  # the rate this epoch starts with
        train_metrics = train_one_epoch(run, epoch)
        if run.distributed and config.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(run.net, run.world_size, config.dist_bn == 'reduce')
        eval_metrics = validate(run, run.net)
        if run.ema is not None:
            if run.distributed and config.dist_bn in ('broadcast', 'reduce'):
                distribute_bn(run.ema, run.world_size, config.dist_bn == 'reduce')
            eval_metrics = validate(run, run.ema.module, log_suffix=' (EMA)')
        run.scheduler.step(epoch + 1, eval_metrics[config.eval_metric])
        if run.primary:
            save_epoch(run, epoch, eval_metrics[config.eval_metric])
            summary = run.output_dir / 'summary.csv'
            update_summary(epoch, train_metrics, eval_metrics, filename=summary, lr=sum(lrs) / len(lrs),
                           write_header=not summary.exists())
    if run.primary:
        finish(run)


def finish(run: TrainingRun) -> None:
    if run.best_epoch is not None:
        _logger.info(f'*** Best {run.config.eval_metric}: {run.best_metric:.4f} (epoch {run.best_epoch})')
    if run.config.task == 'unshuffle':
        images = next(iter(run.loader_eval))[0][:8]
        grid = save_unshuffle_grid({'reconstruction': run.net}, run.permutation, images,
                                   run.output_dir / 'unshuffle.png')
        _logger.info(f'Reconstructions of test images: {grid}')
