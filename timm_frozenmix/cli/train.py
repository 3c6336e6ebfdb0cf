""" train.py: train a frozen-mixing (or any timm) model with timm's flag names

    python train.py                                           # the main job, CPU, embedded Fashion-MNIST sample
    torchrun --nproc_per_node=8 train.py --model convmixer_512_7_chans --dataset folder --data-dir /imagenet ...

Parses the flags into a `TrainConfig`, runs `training.setup` and `training.train`, then prints where the run went
and, with --push-to-hub, exports and uploads the best checkpoint.
"""
import argparse

import torch
from timm.utils import setup_default_logging

from timm_frozenmix.cli import ArgumentParser, command_line
from timm_frozenmix.cli.config_flags import add_config_flags, given_settings, settings_argv
from timm_frozenmix.core.errors import UsageError, exit_on_usage_error
from timm_frozenmix.io.hub import check_can_push, export, push
from timm_frozenmix.io.run_folder import BEST
from timm_frozenmix.training.config import TrainConfig, read_settings_file
from timm_frozenmix.training.loop import load_resume, setup, train
from timm_frozenmix.training.resume import recorded_settings


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog='train.py', description='Train a timm model whose spatial mixing is frozen at random init (or any timm model). '
                    'With --resume, the checkpoint\'s recorded settings are the defaults.')
    parser.add_argument('-c', '--config', metavar='YAML',
                        help='a YAML file of flag defaults, as timm\'s train.py reads one (an args.yaml a run wrote, or a '
                             'timm recipe); what it leaves out takes timm\'s defaults where ours differ (see '
                             'docs/training.md), and flags given beside it win')
    add_config_flags(parser, TrainConfig)
    group = parser.add_argument_group('Publishing')
    group.add_argument('--push-to-hub', metavar='REPO',
                       help='at the end, export the best checkpoint with a model card and upload it to this Hub repo')
    group.add_argument('--hub-private', action='store_true', help='create the Hub repo as private')
    return parser


def parse_config(argv=None) -> tuple:
    """The TrainConfig the flags describe, and the --push-to-hub / --hub-private publishing flags.

    With --resume, the settings the checkpoint recorded are the defaults, so the run continues as it was; flags
    given beside it must agree with them, except those `training.resume` lets change.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    given = given_settings(args, TrainConfig)
    if args.config:  # the file's settings are parsed as flags are, then the flags typed beside it win
        from_file = given_settings(parser.parse_args(settings_argv(read_settings_file(args.config), TrainConfig)),
                                   TrainConfig)
        given = {**from_file, **given}
    recorded = recorded_settings(load_resume(given['resume'], into_its_folder=not given.get('experiment'))) \
        if given.get('resume') else {}
    return TrainConfig(**{**recorded, **given}), args.push_to_hub, args.hub_private


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
