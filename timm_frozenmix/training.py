""" train.py: timm training for frozen-mixing models, from one CPU to many GPUs

Built on timm's library (data, optim, scheduler, loss, task, utils) with timm's flag names, plus the paper's
extras: `--separate` / `--learn` to convert or freeze any timm model, FGSM adversarial training
(`--adv-train fgsm`) and pixel un-shuffling (`--task unshuffle`).

    python train.py                                           # the main job, CPU, embedded Fashion-MNIST sample
    torchrun --nproc_per_node=8 train.py --model convmixer_512_7_chans --dataset folder --data-dir /imagenet ...

Models see [0, 1] pixels; normalization is their first layer (`Normalized`), as in the robustness evaluation.
"""
import argparse
import logging
import time
from collections import OrderedDict
from contextlib import nullcontext
from datetime import datetime
from fractions import Fraction
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn as nn
import yaml
from timm.data import Mixup, create_loader, resolve_data_config
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.task import ClassificationTask
from timm.utils import (
    AverageMeter, ModelEmaV3, NativeScaler, ParseKwargs, accuracy, dispatch_clip_grad, distribute_bn, get_outdir,
    init_distributed_device, random_seed, reduce_tensor, setup_default_logging, unwrap_model, update_summary,
)

from .checkpoint import check_architecture, load_checkpoint, save_atomic, save_safetensors
from .convert import freeze, init_depthwise_, separate, summarize
from .data import (
    SAMPLE, Normalized, check_dataset, create_dataset, create_eval_loader, dataset_info, is_known_dataset,
)
from .errors import UsageError, exit_on_usage_error
from .filters import SPATIAL_INITS, check_spatial_options
from .learn import LEARN_ALIASES, LEARN_MODES
from .outputs import check_output_folder
from .unshuffle import PixelPermutation, UnshuffleNet, UnshuffleTask, psnr, save_unshuffle_grid

_logger = logging.getLogger('train')

DEFAULT_MODEL = 'convmixer_128_4_ks5_p2_chans'
LAST, BEST, WEIGHTS = 'last.pth.tar', 'model_best.pth.tar', 'model.safetensors'


def parse_fraction(text: str) -> float:
    """'8/255' or '0.03' as a float."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f'{text!r} is not a number or fraction such as 8/255') from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train a timm model whose spatial mixing is frozen at random init (or any timm model).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    group = parser.add_argument_group('Dataset')
    group.add_argument('--data-dir', metavar='DIR', help='dataset folder (not needed for the embedded sample)')
    group.add_argument('--dataset', default=SAMPLE,
                       help="fashion-mnist-sample, fashion-mnist, or any timm dataset (torch/cifar10, folder, ...)")
    group.add_argument('--train-split', default='train')
    group.add_argument('--val-split', default='validation')
    group.add_argument('--dataset-download', action='store_true', help='let torchvision datasets download')
    group.add_argument('--input-img-mode', default=None, help="image mode for folder datasets, e.g. 'L'")

    group = parser.add_argument_group('Model')
    group.add_argument('--model', default=DEFAULT_MODEL, help='any timm model name')
    group.add_argument('--pretrained', action='store_true')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='key=value model kwargs')
    group.add_argument('--num-classes', type=int, default=None, help='defaults to the dataset')
    group.add_argument('--in-chans', type=int, default=None, help='defaults to the dataset')
    group.add_argument('--img-size', type=int, default=None)
    group.add_argument('--input-size', type=int, nargs=3, default=None, metavar='N')
    group.add_argument('--crop-pct', type=float, default=None)
    group.add_argument('--mean', type=float, nargs='+', default=None)
    group.add_argument('--std', type=float, nargs='+', default=None)
    group.add_argument('--interpolation', default='')
    group.add_argument('--drop', type=float, default=0.0, help='classifier dropout')
    group.add_argument('--drop-path', type=float, default=None)
    group.add_argument('--channels-last', action='store_true')
    group.add_argument('-b', '--batch-size', type=int, default=128)
    group.add_argument('-vb', '--validation-batch-size', type=int, default=None)

    group = parser.add_argument_group('Frozen mixing')
    group.add_argument('--separate', action='store_true',
                       help='make every dense conv larger than 1x1 separable (any timm model)')
    group.add_argument('--learn', default=None, choices=LEARN_MODES + tuple(LEARN_ALIASES),
                       help='which mixing to learn; without --separate, freezes a natively separable model')
    group.add_argument('--depth-multiplier', type=int, default=9, help='for --separate')
    group.add_argument('--spatial-init', default=None, choices=SPATIAL_INITS)
    group.add_argument('--smooth-sigma', type=float, default=None, help='Gaussian low-pass of spatial filters')

    group = parser.add_argument_group('Task')
    group.add_argument('--task', default='classification', choices=('classification', 'unshuffle'))
    group.add_argument('--perm-seed', type=int, default=0, help='seed of the pixel permutation (unshuffle)')
    group.add_argument('--adv-train', default='none', choices=('none', 'fgsm'), help='FGSM-defended training')
    group.add_argument('--adv-eps', type=parse_fraction, default=Fraction(8, 255), help='FGSM epsilon, pixels')

    group = parser.add_argument_group('Optimizer and schedule')
    group.add_argument('--opt', default='adamw')
    group.add_argument('--opt-eps', type=float, default=None)
    group.add_argument('--opt-betas', type=float, nargs='+', default=None)
    group.add_argument('--momentum', type=float, default=0.9)
    group.add_argument('--weight-decay', type=float, default=0.05)
    group.add_argument('--clip-grad', type=float, default=None)
    group.add_argument('--clip-mode', default='norm', choices=('norm', 'value', 'agc'))
    group.add_argument('--layer-decay', type=float, default=None)
    group.add_argument('--lr', type=float, default=3e-3)
    group.add_argument('--sched', default='cosine')
    group.add_argument('--sched-on-updates', action='store_true')
    group.add_argument('--epochs', type=int, default=7)
    group.add_argument('--start-epoch', type=int, default=None)
    group.add_argument('--warmup-epochs', type=int, default=0)
    group.add_argument('--warmup-lr', type=float, default=1e-5)
    group.add_argument('--warmup-prefix', action='store_true')
    group.add_argument('--min-lr', type=float, default=1e-5)
    group.add_argument('--decay-epochs', type=float, default=30)
    group.add_argument('--decay-milestones', type=int, nargs='+', default=[30, 60])
    group.add_argument('--decay-rate', type=float, default=0.1)
    group.add_argument('--cooldown-epochs', type=int, default=0)
    group.add_argument('--patience-epochs', type=int, default=10)

    group = parser.add_argument_group('Augmentation and regularization')
    group.add_argument('--no-aug', action='store_true')
    group.add_argument('--scale', type=float, nargs=2, default=[0.7, 1.0])
    group.add_argument('--ratio', type=float, nargs=2, default=[3. / 4., 4. / 3.])
    group.add_argument('--hflip', type=float, default=0.5)
    group.add_argument('--vflip', type=float, default=0.)
    group.add_argument('--color-jitter', type=float, default=0.)
    group.add_argument('--aa', default=None, help='AutoAugment policy, e.g. rand-m9-mstd0.5')
    group.add_argument('--reprob', type=float, default=0.)
    group.add_argument('--remode', default='pixel')
    group.add_argument('--recount', type=int, default=1)
    group.add_argument('--train-interpolation', default='random')
    group.add_argument('--mixup', type=float, default=0.0)
    group.add_argument('--cutmix', type=float, default=0.0)
    group.add_argument('--cutmix-minmax', type=float, nargs='+', default=None)
    group.add_argument('--mixup-prob', type=float, default=1.0)
    group.add_argument('--mixup-switch-prob', type=float, default=0.5)
    group.add_argument('--mixup-mode', default='batch')
    group.add_argument('--mixup-off-epoch', type=int, default=0)
    group.add_argument('--smoothing', type=float, default=0.1)

    group = parser.add_argument_group('EMA')
    group.add_argument('--model-ema', action='store_true')
    group.add_argument('--model-ema-decay', type=float, default=0.998)
    group.add_argument('--model-ema-warmup', action='store_true')

    group = parser.add_argument_group('Run')
    group.add_argument('--seed', type=int, default=42)
    group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    group.add_argument('--amp', action='store_true', help='mixed precision (bf16 on CPU)')
    group.add_argument('--amp-dtype', default=None, choices=('float16', 'bfloat16'),
                       help='default: float16 on CUDA, bfloat16 on CPU')
    group.add_argument('--dist-bn', default='reduce', choices=('reduce', 'broadcast', ''))
    group.add_argument('-j', '--workers', type=int, default=2)
    group.add_argument('--pin-mem', action='store_true')
    group.add_argument('--log-interval', type=int, default=20)
    group.add_argument('--output', default='output/train', help='parent folder of the run folder')
    group.add_argument('--experiment', default='', help='run folder name (default: time, model, size)')
    group.add_argument('--eval-metric', default=None, help='default: top1, or psnr for unshuffle')
    group.add_argument('--resume', default='', help='checkpoint to continue from (its run folder is reused)')
    group.add_argument('--no-resume-opt', action='store_true')
    group = parser.add_argument_group('Publishing')
    group.add_argument('--push-to-hub', default=None, metavar='REPO',
                       help='at the end, export the best checkpoint with a model card and upload it to this Hub repo')
    group.add_argument('--hub-private', action='store_true', help='create the Hub repo as private')
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.adv_eps = float(args.adv_eps)
    if args.eval_metric is None:
        args.eval_metric = 'psnr' if args.task == 'unshuffle' else 'top1'
    return args


def validate_args(args) -> None:
    """Every check that can fail on bad input runs before anything is built or written."""
    if not (timm.is_model(args.model) or args.model.startswith(('hf-hub:', 'local-dir:'))):
        raise UsageError(f'unknown model {args.model!r}: see timm.list_models() (import timm_frozenmix first)')
    check_dataset(args.dataset, args.data_dir, args.dataset_download)
    check_spatial_options(args.spatial_init or 'random', args.smooth_sigma or 0.0)
    check_output_folder(args.output)
    metrics = ('psnr',) if args.task == 'unshuffle' else ('top1', 'top5')
    checks = [
        (args.epochs >= 1, f'--epochs must be >= 1, got {args.epochs}'),
        (args.batch_size >= 1, f'--batch-size must be >= 1, got {args.batch_size}'),
        (args.validation_batch_size is None or args.validation_batch_size >= 1,
         f'--validation-batch-size must be >= 1, got {args.validation_batch_size}'),
        (args.lr > 0, f'--lr must be > 0, got {args.lr:g}'),
        (args.weight_decay >= 0, f'--weight-decay must be >= 0, got {args.weight_decay:g}'),
        (args.workers >= 0, f'--workers must be >= 0, got {args.workers}'),
        (args.log_interval >= 1, f'--log-interval must be >= 1, got {args.log_interval}'),
        (args.depth_multiplier >= 1, f'--depth-multiplier must be >= 1, got {args.depth_multiplier}'),
        (0.0 <= args.adv_eps <= 1.0, f'--adv-eps must lie in [0, 1] (pixel units, e.g. 8/255), got {args.adv_eps:g}'),
        (0.0 <= args.smoothing < 1.0, f'--smoothing must lie in [0, 1), got {args.smoothing:g}'),
        (0.0 <= args.drop < 1.0, f'--drop must lie in [0, 1), got {args.drop:g}'),
        (0.0 <= (args.drop_path or 0.0) < 1.0, f'--drop-path must lie in [0, 1), got {args.drop_path}'),
        (min(args.mixup, args.cutmix, args.color_jitter) >= 0, '--mixup, --cutmix and --color-jitter must be >= 0'),
        (all(0.0 <= p <= 1.0 for p in (args.mixup_prob, args.mixup_switch_prob, args.reprob,
                                        args.hflip, args.vflip)),
         '--mixup-prob, --mixup-switch-prob, --reprob, --hflip and --vflip are probabilities in [0, 1]'),
        (0 < args.scale[0] <= args.scale[1] and 0 < args.ratio[0] <= args.ratio[1],
         '--scale and --ratio take two numbers 0 < low <= high'),
        (0.0 < args.model_ema_decay < 1.0, f'--model-ema-decay must lie in (0, 1), got {args.model_ema_decay:g}'),
        (min(args.warmup_epochs, args.cooldown_epochs) >= 0, '--warmup-epochs and --cooldown-epochs must be >= 0'),
        (args.clip_grad is None or args.clip_grad > 0, f'--clip-grad must be > 0, got {args.clip_grad}'),
        (args.start_epoch is None or 0 <= args.start_epoch < args.epochs,
         f'--start-epoch must lie in [0, --epochs), got {args.start_epoch}'),
        (all(n is None or n >= 1 for n in (args.num_classes, args.in_chans, args.img_size)),
         '--num-classes, --in-chans and --img-size must be >= 1'),
        (args.input_size is None or min(args.input_size) >= 1, '--input-size takes three numbers >= 1: C H W'),
        (args.std is None or min(args.std) > 0, '--std must be > 0'),
        (args.eval_metric in metrics, f'--eval-metric {args.eval_metric} is not measured for --task {args.task}: '
                                      f'choose {" or ".join(metrics)}'),
        (args.experiment in ('', Path(args.experiment).name) and args.experiment not in ('.', '..'),
         f'--experiment {args.experiment!r} must be a plain folder name (--output sets where it goes)'),
        (not (args.task == 'unshuffle' and args.adv_train != 'none'),
         '--adv-train applies to classification, not to --task unshuffle'),
        (not (args.task == 'unshuffle' and (args.mixup > 0 or args.cutmix > 0)),
         '--mixup / --cutmix apply to classification, not to --task unshuffle'),
        (not (args.amp_dtype == 'float16' and not args.device.startswith('cuda')),
         '--amp-dtype float16 needs a CUDA device; use bfloat16 on the CPU'),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    check_device(args.device)
    check_dataset_channels(args)
    check_optimizer_and_schedule(args)
    if args.push_to_hub:
        if args.task != 'classification' or args.separate:
            raise UsageError('--push-to-hub publishes classifiers that timm can rebuild by name: '
                             'not --task unshuffle or --separate conversions')
        from .hub import check_can_push  # hub builds on this module
        check_can_push(args.push_to_hub)


def check_device(device: str) -> None:
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UsageError(f'--device {device!r} is not a torch device: use cpu, cuda or cuda:N') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UsageError(f'--device {device} asks for CUDA, which this machine does not have: use --device cpu')


def check_dataset_channels(args) -> None:
    """--in-chans and --mean / --std must fit the images the dataset yields, or the first step would fail."""
    info = dataset_info(args.dataset, input_img_mode=args.input_img_mode)
    if args.in_chans is not None and args.in_chans != info.in_chans:
        hint = '' if is_known_dataset(args.dataset) else ' or set --input-img-mode (L: 1 channel, RGB: 3)'
        raise UsageError(f'--in-chans {args.in_chans} does not fit {args.dataset}, whose images have '
                         f'{info.in_chans} channel(s): drop --in-chans{hint}')
    in_chans = args.in_chans or info.in_chans
    for flag, values in (('--mean', args.mean), ('--std', args.std)):
        if values is not None and len(values) not in (1, in_chans):
            raise UsageError(f'{flag} takes 1 or {in_chans} values for {in_chans}-channel images, got {len(values)}')


def check_optimizer_and_schedule(args) -> None:
    """timm's own checks of --opt and --sched (and their arguments), run on a stand-in parameter."""
    probe = nn.Linear(1, 1)
    try:
        optimizer = create_optimizer_v2(probe, **optimizer_kwargs(cfg=args))
    except (ValueError, AssertionError) as e:
        raise UsageError(f'--opt {args.opt}: {e} (see timm.optim.list_optimizers())') from None
    try:
        create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=1)
    except (ValueError, AssertionError) as e:
        raise UsageError(f'--sched {args.sched}: {e}') from None


def load_resume(args):
    """The checkpoint to resume from, checked against this run's model and task; None without --resume."""
    if not args.resume:
        return None
    checkpoint = load_checkpoint(args.resume)
    check_architecture(checkpoint, args.model, args.resume)
    if checkpoint.get('task', 'classification') != args.task:
        raise UsageError(f'checkpoint {args.resume} was trained with --task {checkpoint.get("task")}, '
                         f'not --task {args.task}')
    if args.task == 'unshuffle' and checkpoint.get('perm_seed') != args.perm_seed:
        raise UsageError(f'checkpoint {args.resume} was trained with --perm-seed {checkpoint.get("perm_seed")}, '
                         f'not {args.perm_seed}: resume with the same permutation')
    if 'epoch' not in checkpoint:
        raise UsageError(f'checkpoint {args.resume} holds weights only; resume needs {LAST} or {BEST}')
    if checkpoint['epoch'] + 1 >= args.epochs:
        raise UsageError(f'checkpoint {args.resume} has finished epoch {checkpoint["epoch"] + 1} of {args.epochs}: '
                         f'raise --epochs to train on')
    return checkpoint


def build_model(args, in_chans: int, num_classes: int) -> nn.Module:
    """timm.create_model, then the frozen-mixing conversion the flags ask for; same seed on every rank."""
    torch.manual_seed(args.seed)  # frozen random filters must agree across ranks before DDP's broadcast
    try:
        model = timm.create_model(
            args.model,
            pretrained=args.pretrained,
            in_chans=in_chans,
            num_classes=0 if args.task == 'unshuffle' else num_classes,
            drop_rate=args.drop,
            drop_path_rate=args.drop_path,
            **args.model_kwargs,
        )
    except TypeError as e:
        rejected = [k for k in args.model_kwargs if f"argument '{k}'" in str(e)]
        if 'unexpected keyword argument' not in str(e) or not rejected:
            raise
        raise UsageError(f'{args.model} does not take --model-kwargs {", ".join(rejected)}: drop or rename it '
                         f'(timm.create_model passes them to the model class)') from None
    if args.separate:
        separate(model, depth_multiplier=args.depth_multiplier, learn=args.learn or 'channels',
                 spatial_init=args.spatial_init or 'random', smooth_sigma=args.smooth_sigma or 0.0)
    else:
        if args.spatial_init or args.smooth_sigma:
            init_depthwise_(model, args.spatial_init or 'random', args.smooth_sigma or 0.0)
        if args.learn:
            freeze(model, args.learn)
    if args.task == 'unshuffle':
        model = UnshuffleNet(model, out_chans=in_chans)
    return model


def resolve_data(args, model: nn.Module, info) -> dict:
    """timm's data config for the model, with size and normalization following the dataset by default."""
    overrides = dict(input_size=args.input_size, img_size=args.img_size, crop_pct=args.crop_pct,
                     interpolation=args.interpolation, mean=args.mean, std=args.std)
    if args.input_size is None and args.img_size is None and info.input_size:
        overrides['input_size'] = info.input_size
    if args.mean is None and info.mean:
        overrides['mean'], overrides['std'] = info.mean, args.std or info.std
    config = resolve_data_config(overrides, model=model.backbone if isinstance(model, UnshuffleNet) else model)
    in_chans = args.in_chans or info.in_chans
    config['input_size'] = (in_chans,) + tuple(config['input_size'][1:])
    if len(config['mean']) != in_chans:
        mean, std = config['mean'], config['std']
        config['mean'], config['std'] = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return config


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


class Run:
    """Everything a training run is made of, built once by `setup`."""


def setup(args) -> Run:
    run = Run()
    run.args = args
    validate_args(args)
    resume = load_resume(args)
    run.device = init_distributed_device(args)
    run.primary = args.rank == 0

    dataset_kwargs = dict(root=args.data_dir, download=args.dataset_download, batch_size=args.batch_size)
    if args.input_img_mode:
        dataset_kwargs['input_img_mode'] = args.input_img_mode
    dataset_train = create_dataset(args.dataset, split=args.train_split, is_training=True, **dataset_kwargs)
    dataset_eval = create_dataset(args.dataset, split=args.val_split, **dataset_kwargs)
    info = dataset_info(args.dataset, dataset_train, args.input_img_mode)
    in_chans = args.in_chans or info.in_chans
    num_classes = args.num_classes or info.num_classes
    if args.task == 'classification' and not num_classes:
        raise UsageError(f'cannot tell the number of classes of {args.dataset!r}: pass --num-classes')

    model = build_model(args, in_chans, num_classes)
    run.in_chans, run.num_classes = in_chans, num_classes
    if run.primary:
        _logger.info(f'Model {args.model} created, parameters by role:')
        summarize(model)
    run.data_config = resolve_data(args, model, info)
    run.model = model.to(run.device)
    if args.channels_last:
        run.model.to(memory_format=torch.channels_last)
    run.net = Normalized(run.model, run.data_config['mean'], run.data_config['std']).to(run.device)

    run.optimizer = create_optimizer_v2(run.net, **optimizer_kwargs(cfg=args))
    setup_amp(run)
    run.ema = ModelEmaV3(run.net, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
        if args.model_ema else None
    run.start_epoch, run.best_metric, run.best_epoch = 0, None, None
    if resume is not None:
        restore(run, resume)

    if args.task == 'unshuffle':
        size = run.data_config['input_size'][1:]
        run.permutation = PixelPermutation(*size, seed=args.perm_seed).to(run.device)
        run.task = UnshuffleTask(run.net, run.permutation, device=run.device)
    else:
        run.permutation = None
        run.mixup = make_mixup(args, num_classes)
        criterion_kwargs = dict(smoothing=args.smoothing, soft_targets=run.mixup is not None)
        task_cls = partial(FGSMClassificationTask, eps=args.adv_eps) if args.adv_train == 'fgsm' \
            else ClassificationTask
        run.task = task_cls(run.net, criterion_kwargs=criterion_kwargs, device=run.device, verbose=False)
    if args.distributed:
        run.task.prepare_distributed(device_ids=[run.device.index] if run.device.type == 'cuda' else None)

    random_seed(args.seed, args.rank)  # augmentation differs per rank; the model was built before this
    run.loader_train, run.loader_eval = make_loaders(args, run, dataset_train, dataset_eval)
    run.scheduler, run.num_epochs = create_scheduler_v2(
        run.optimizer, **scheduler_kwargs(args), updates_per_epoch=len(run.loader_train))
    if args.start_epoch is not None:
        run.start_epoch = args.start_epoch
    if run.start_epoch > 0:
        run.scheduler.step(run.start_epoch)

    run.output_dir = make_output_dir(args, resumed=resume is not None) if run.primary else None
    return run


def setup_amp(run) -> None:
    args = run.args
    run.autocast, run.scaler = nullcontext, None
    if args.amp:
        dtype = args.amp_dtype or ('float16' if run.device.type == 'cuda' else 'bfloat16')
        run.autocast = partial(torch.autocast, device_type=run.device.type, dtype=getattr(torch, dtype))
        if dtype == 'float16':
            run.scaler = NativeScaler(device=run.device.type)


def make_mixup(args, num_classes):
    if not (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None):
        return None
    return Mixup(
        mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
        prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
        label_smoothing=args.smoothing, num_classes=num_classes)


def make_loaders(args, run, dataset_train, dataset_eval):
    config = run.data_config
    chans = config['input_size'][0]
    loader_train = create_loader(
        dataset_train, input_size=config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, scale=args.scale,
        ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter, auto_augment=args.aa,
        interpolation=args.train_interpolation, mean=(0.,) * chans, std=(1.,) * chans,  # [0, 1] inputs
        num_workers=args.workers, distributed=args.distributed, pin_memory=args.pin_mem, device=run.device,
        use_prefetcher=run.device.type == 'cuda', persistent_workers=args.workers > 0)
    loader_eval = create_eval_loader(
        dataset_eval, config, args.validation_batch_size or args.batch_size, args.workers, run.device,
        distributed=args.distributed, pin_memory=args.pin_mem, persistent_workers=True)
    return loader_train, loader_eval


def make_output_dir(args, resumed: bool) -> Path:
    if resumed and not args.experiment:
        return Path(args.resume).resolve().parent
    name = args.experiment or '-'.join([
        datetime.now().strftime('%Y%m%d-%H%M%S'), args.model.replace('/', '_'), args.task])
    return Path(get_outdir(args.output, name, inc=not resumed)).resolve()


def restore(run, checkpoint) -> None:
    """Model, optimizer, scaler, EMA and scheduler position from a train.py checkpoint."""
    run.model.load_state_dict(checkpoint['state_dict'])
    if not run.args.no_resume_opt:
        run.optimizer.load_state_dict(checkpoint['optimizer'])
        if run.scaler is not None and 'scaler' in checkpoint:
            run.scaler.load_state_dict(checkpoint['scaler'])
    if run.ema is not None and 'state_dict_ema' in checkpoint:
        run.ema.module.model.load_state_dict(checkpoint['state_dict_ema'])
    run.start_epoch = checkpoint['epoch'] + 1
    run.best_metric, run.best_epoch = checkpoint.get('best_metric'), checkpoint.get('best_epoch')
    _logger.info(f'Resumed from {run.args.resume} at epoch {run.start_epoch}')


def train_one_epoch(run, epoch: int) -> OrderedDict:
    args = run.args
    run.task.train()
    if run.args.distributed and hasattr(run.loader_train.sampler, 'set_epoch'):
        run.loader_train.sampler.set_epoch(epoch)
    mixup = getattr(run, 'mixup', None)
    if mixup is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
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
        if args.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            loss = run.task(input, target)['loss']
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler(loss, run.optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                       parameters=run.net.parameters())
        else:
            loss.backward()
            if args.clip_grad is not None:
                dispatch_clip_grad(run.net.parameters(), value=args.clip_grad, mode=args.clip_mode)
            run.optimizer.step()
        num_updates += 1
        if run.ema is not None:
            run.ema.update(run.net, step=num_updates)
        run.scheduler.step_update(num_updates=num_updates)
        loss_sum += loss.detach().float() * input.size(0)
        seen += input.size(0)
        batch_time.update(time.time() - end)
        end = time.time()
        if run.primary and (batch_idx % args.log_interval == 0 or batch_idx == last_idx):
            lr = run.optimizer.param_groups[0]['lr']
            rate = input.size(0) * args.world_size / batch_time.avg
            _logger.info(
                f'Train: {epoch} [{batch_idx:>4d}/{last_idx} ({100. * batch_idx / max(last_idx, 1):>3.0f}%)]  '
                f'Loss: {loss.item():#.4g} ({loss_sum.item() / seen:#.4g})  '
                f'Time: {batch_time.val:.3f}s, {rate:>7.1f}/s  LR: {lr:.3e}')
    return OrderedDict(loss=loss_sum.item() / max(seen, 1))


@torch.no_grad()
def validate(run, net: nn.Module, log_suffix: str = '') -> OrderedDict:
    """Loss and top-1/top-5 accuracy, or loss and PSNR for un-shuffling, averaged over all ranks."""
    args = run.args
    net.eval()
    meters = OrderedDict((k, AverageMeter()) for k in (
        ('loss', 'psnr') if args.task == 'unshuffle' else ('loss', 'top1', 'top5')))
    for input, target in run.loader_eval:
        input, target = input.to(run.device), target.to(run.device)
        if args.channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            if args.task == 'unshuffle':
                output = net(run.permutation(input)).float()
                values = dict(loss=nn.functional.mse_loss(output, input), psnr=psnr(output, input).mean())
            else:
                output = net(input).float()
                top1, top5 = accuracy(output, target, topk=(1, min(5, output.shape[-1])))
                values = dict(loss=nn.functional.cross_entropy(output, target), top1=top1, top5=top5)
        for key, value in values.items():
            if args.distributed:
                value = reduce_tensor(value.detach(), args.world_size)
            meters[key].update(value.item(), input.size(0))
    metrics = OrderedDict((k, m.avg) for k, m in meters.items())
    if run.primary:
        _logger.info(f'Eval{log_suffix}: ' + '  '.join(f'{k}: {v:.4f}' for k, v in metrics.items()))
    return metrics


def checkpoint_state(run, epoch: int) -> dict:
    args = run.args
    state = {
        'arch': args.model,
        'task': args.task,
        'in_chans': run.in_chans,
        'num_classes': run.num_classes if args.task == 'classification' else 0,
        'epoch': epoch,
        'state_dict': run.model.state_dict(),
        'optimizer': run.optimizer.state_dict(),
        'args': {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, tuple, dict))
                 or v is None},
        'data_config': dict(run.data_config),
        'best_metric': run.best_metric,
        'best_epoch': run.best_epoch,
        'version': 1,
    }
    if run.scaler is not None:
        state['scaler'] = run.scaler.state_dict()
    if run.ema is not None:
        state['state_dict_ema'] = run.ema.module.model.state_dict()
    if args.task == 'unshuffle':
        state['perm_seed'] = args.perm_seed
    return state


def save_epoch(run, epoch: int, metric: float) -> None:
    """last every epoch; best (and its safetensors weights) when the eval metric improves."""
    improved = run.best_metric is None or metric > run.best_metric
    if improved:
        run.best_metric, run.best_epoch = metric, epoch
    state = checkpoint_state(run, epoch)
    save_atomic(state, run.output_dir / LAST)
    if improved:
        save_atomic(state, run.output_dir / BEST)
        best_weights = state['state_dict_ema'] if run.ema is not None else state['state_dict']
        save_safetensors(best_weights, run.output_dir / WEIGHTS, metadata={'arch': run.args.model})


def write_args(run) -> None:
    text = yaml.safe_dump(
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(run.args).items()}, sort_keys=False)
    (run.output_dir / 'args.yaml').write_text(text)


def train(run) -> None:
    args = run.args
    if run.primary:
        write_args(run)
        _logger.info(f'Training {args.model} on {args.dataset} for {run.num_epochs} epochs, '
                     f'writing to {run.output_dir}')
    for epoch in range(run.start_epoch, run.num_epochs):
        lrs = [group['lr'] for group in run.optimizer.param_groups]  # the rate this epoch starts with
        train_metrics = train_one_epoch(run, epoch)
        if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(run.net, args.world_size, args.dist_bn == 'reduce')
        eval_metrics = validate(run, run.net)
        if run.ema is not None:
            if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
                distribute_bn(run.ema, args.world_size, args.dist_bn == 'reduce')
            eval_metrics = validate(run, run.ema.module, log_suffix=' (EMA)')
        run.scheduler.step(epoch + 1, eval_metrics[args.eval_metric])
        if run.primary:
            save_epoch(run, epoch, eval_metrics[args.eval_metric])
            summary = run.output_dir / 'summary.csv'
            update_summary(epoch, train_metrics, eval_metrics, filename=summary, lr=sum(lrs) / len(lrs),
                           write_header=not summary.exists())
    if run.primary:
        finish(run)


def finish(run) -> None:
    args = run.args
    out = run.output_dir
    if run.best_epoch is not None:
        _logger.info(f'*** Best {args.eval_metric}: {run.best_metric:.4f} (epoch {run.best_epoch})')
    if args.task == 'unshuffle':
        images = next(iter(run.loader_eval))[0][:8]
        grid = save_unshuffle_grid({'reconstruction': run.net}, run.permutation, images, out / 'unshuffle.png')
        _logger.info(f'Reconstructions of test images: {grid}')
    print(f'Output written to {out}')
    if args.push_to_hub:
        from .hub import export, push  # hub builds on this module
        folder = export(out / BEST, out / 'hub', args.push_to_hub, use_ema=args.model_ema)
        print(f'Pushed {folder} to {push(folder, args.push_to_hub, args.hub_private)}')
    if args.task == 'classification':
        dataset = f' --dataset {args.dataset}' + (f' --data-dir {args.data_dir}' if args.data_dir else '')
        print(f'Next, evaluate its robustness:\n  python eval_robust.py --checkpoint {out / BEST}{dataset}')


def main(argv=None) -> None:
    setup_default_logging()
    with exit_on_usage_error('train.py'):
        args = parse_args(argv)
        run = setup(args)
    train(run)
    if args.distributed:
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
