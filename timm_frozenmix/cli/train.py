""" train.py: train a frozen-mixing (or any timm) model with timm's flag names

    python train.py                                           # the main job, CPU, embedded Fashion-MNIST sample
    torchrun --nproc_per_node=8 train.py --model convmixer_512_7_chans --dataset folder --data-dir /imagenet ...

Parses the flags into a `TrainConfig`, runs `training.setup` and `training.train`, then prints where the run went
and, with --push-to-hub, exports and uploads the best checkpoint.
"""
import argparse
from dataclasses import asdict

import torch
from timm.utils import ParseKwargs, setup_default_logging

from timm_frozenmix.cli import command_line
from timm_frozenmix.core.parsing import parse_fraction
from timm_frozenmix.core.errors import UsageError, exit_on_usage_error
from timm_frozenmix.layers.filters import SPATIAL_INITS
from timm_frozenmix.io.hub import check_can_push, export, push
from timm_frozenmix.core.learn import LEARN_ALIASES, LEARN_MODES
from timm_frozenmix.training.loop import BEST, COMPILE_MODES, TrainConfig, setup, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train a timm model whose spatial mixing is frozen at random init (or any timm model).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    group = parser.add_argument_group('Dataset')
    group.add_argument('--data-dir', metavar='DIR', help='dataset folder (not needed for the embedded sample)')
    group.add_argument('--dataset',
                       help="fashion-mnist-sample, fashion-mnist, or any timm dataset (torch/cifar10, folder, ...)")
    group.add_argument('--train-split')
    group.add_argument('--val-split')
    group.add_argument('--dataset-download', action='store_true', help='let torchvision datasets download')
    group.add_argument('--input-img-mode', help="image mode for folder datasets, e.g. 'L'")

    group = parser.add_argument_group('Model')
    group.add_argument('--model', help='any timm model name')
    group.add_argument('--pretrained', action='store_true')
    group.add_argument('--model-kwargs', nargs='*', action=ParseKwargs, help='key=value model kwargs')
    group.add_argument('--num-classes', type=int, help='defaults to the dataset')
    group.add_argument('--in-chans', type=int, help='defaults to the dataset')
    group.add_argument('--img-size', type=int)
    group.add_argument('--input-size', type=int, nargs=3, metavar='N')
    group.add_argument('--crop-pct', type=float)
    group.add_argument('--mean', type=float, nargs='+')
    group.add_argument('--std', type=float, nargs='+')
    group.add_argument('--interpolation')
    group.add_argument('--drop', type=float, help='classifier dropout')
    group.add_argument('--drop-path', type=float)
    group.add_argument('--channels-last', action='store_true')
    group.add_argument('-b', '--batch-size', type=int)
    group.add_argument('-vb', '--validation-batch-size', type=int)

    group = parser.add_argument_group('Frozen mixing')
    group.add_argument('--separate', action='store_true',
                       help='make every dense conv larger than 1x1 separable (any timm model)')
    group.add_argument('--learn', choices=LEARN_MODES + tuple(LEARN_ALIASES),
                       help='which mixing to learn; without --separate, freezes a natively separable model')
    group.add_argument('--depth-multiplier', type=int, help='for --separate')
    group.add_argument('--spatial-init', choices=SPATIAL_INITS)
    group.add_argument('--smooth-sigma', type=float, help='Gaussian low-pass of spatial filters')
    group.add_argument('--keep-function', action='store_true',
                       help='with --pretrained --separate: solve the pointwise weights from the pretrained dense '
                            'kernels, so the separable model computes what the pretrained one did')

    group = parser.add_argument_group('Task')
    group.add_argument('--task', choices=('classification', 'unshuffle'))
    group.add_argument('--perm-seed', type=int, help='seed of the pixel permutation (unshuffle)')
    group.add_argument('--adv-train', choices=('none', 'fgsm'), help='FGSM-defended training')
    group.add_argument('--adv-eps', type=parse_fraction, help='FGSM epsilon, pixels')

    group = parser.add_argument_group('Optimizer and schedule')
    group.add_argument('--opt')
    group.add_argument('--opt-eps', type=float)
    group.add_argument('--opt-betas', type=float, nargs='+')
    group.add_argument('--momentum', type=float)
    group.add_argument('--weight-decay', type=float)
    group.add_argument('--clip-grad', type=float)
    group.add_argument('--clip-mode', choices=('norm', 'value', 'agc'))
    group.add_argument('--layer-decay', type=float)
    group.add_argument('--lr', type=float)
    group.add_argument('--sched')
    group.add_argument('--sched-on-updates', action='store_true')
    group.add_argument('--epochs', type=int)
    group.add_argument('--start-epoch', type=int)
    group.add_argument('--warmup-epochs', type=int)
    group.add_argument('--warmup-lr', type=float)
    group.add_argument('--warmup-prefix', action='store_true')
    group.add_argument('--min-lr', type=float)
    group.add_argument('--decay-epochs', type=float)
    group.add_argument('--decay-milestones', type=int, nargs='+')
    group.add_argument('--decay-rate', type=float)
    group.add_argument('--cooldown-epochs', type=int)
    group.add_argument('--patience-epochs', type=int)

    group = parser.add_argument_group('Augmentation and regularization')
    group.add_argument('--no-aug', action='store_true')
    group.add_argument('--scale', type=float, nargs=2)
    group.add_argument('--ratio', type=float, nargs=2)
    group.add_argument('--hflip', type=float)
    group.add_argument('--vflip', type=float)
    group.add_argument('--color-jitter', type=float)
    group.add_argument('--aa', help='AutoAugment policy, e.g. rand-m9-mstd0.5')
    group.add_argument('--reprob', type=float)
    group.add_argument('--remode')
    group.add_argument('--recount', type=int)
    group.add_argument('--train-interpolation')
    group.add_argument('--mixup', type=float)
    group.add_argument('--cutmix', type=float)
    group.add_argument('--cutmix-minmax', type=float, nargs='+')
    group.add_argument('--mixup-prob', type=float)
    group.add_argument('--mixup-switch-prob', type=float)
    group.add_argument('--mixup-mode')
    group.add_argument('--mixup-off-epoch', type=int)
    group.add_argument('--smoothing', type=float)

    group = parser.add_argument_group('EMA')
    group.add_argument('--model-ema', action='store_true')
    group.add_argument('--model-ema-decay', type=float)
    group.add_argument('--model-ema-warmup', action='store_true')

    group = parser.add_argument_group('Run')
    group.add_argument('--seed', type=int)
    group.add_argument('--device')
    group.add_argument('--amp', action='store_true', help='mixed precision (bf16 on CPU)')
    group.add_argument('--amp-dtype', choices=('float16', 'bfloat16'),
                       help='default: float16 on CUDA, bfloat16 on CPU')
    group.add_argument('--torchcompile', nargs='?', const='inductor', metavar='BACKEND',
                       help='torch.compile the training forward (default backend when given: inductor)')
    group.add_argument('--torchcompile-mode', choices=COMPILE_MODES,
                       help="torch.compile's mode; reduce-overhead replays CUDA graphs")
    group.add_argument('--dist-bn', choices=('reduce', 'broadcast', ''))
    group.add_argument('-j', '--workers', type=int)
    group.add_argument('--pin-mem', action='store_true')
    group.add_argument('--log-interval', type=int)
    group.add_argument('--output', help='parent folder of the run folder')
    group.add_argument('--experiment', help='run folder name (default: time, model, size)')
    group.add_argument('--eval-metric', help='default: top1, or psnr for unshuffle')
    group.add_argument('--resume', help='checkpoint to continue from (its run folder is reused)')
    group.add_argument('--no-resume-opt', action='store_true')
    group = parser.add_argument_group('Publishing')
    group.add_argument('--push-to-hub', metavar='REPO',
                       help='at the end, export the best checkpoint with a model card and upload it to this Hub repo')
    group.add_argument('--hub-private', action='store_true', help='create the Hub repo as private')
    parser.set_defaults(**{**asdict(TrainConfig()), 'eval_metric': None})  # None follows --task
    return parser


def parse_config(argv=None) -> tuple:
    """The TrainConfig the flags describe, and the --push-to-hub / --hub-private publishing flags."""
    args = vars(build_parser().parse_args(argv))
    push_to_hub, hub_private = args.pop('push_to_hub'), args.pop('hub_private')
    return TrainConfig(**args), push_to_hub, hub_private


def check_publishing(config: TrainConfig, repo_id) -> None:
    if repo_id is None:
        return
    if config.task != 'classification' or config.separate:
        raise UsageError('--push-to-hub publishes classifiers that timm can rebuild by name: '
                         'not --task unshuffle or --separate conversions')
    check_can_push(repo_id)


def main(argv=None) -> None:
    setup_default_logging()
    with exit_on_usage_error('train.py'):
        config, push_to_hub, hub_private = parse_config(argv)
        check_publishing(config, push_to_hub)
        run = setup(config, command=command_line('python train.py', argv))
    train(run)
    if run.distributed:
        torch.distributed.destroy_process_group()
    if not run.primary:
        return
    print(f'Output written to {run.output_dir}')
    if push_to_hub:
        folder = export(run.output_dir / BEST, run.output_dir / 'hub', push_to_hub, use_ema=config.model_ema)
        print(f'Pushed {folder} to {push(folder, push_to_hub, hub_private)}')
    if config.task == 'classification':
        dataset = f' --dataset {config.dataset}' + (f' --data-dir {config.data_dir}' if config.data_dir else '')
        print(f'Next, evaluate its robustness:\n  python eval_robust.py --checkpoint {run.output_dir / BEST}{dataset}')


if __name__ == '__main__':
    main()
