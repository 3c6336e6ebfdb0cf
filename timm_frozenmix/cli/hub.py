""" python -m timm_frozenmix.cli.hub: export a train.py checkpoint as a Hub model folder and push it

    python -m timm_frozenmix.cli.hub --checkpoint output/train/RUN/model_best.pth.tar --output hub/my-model \
        --robust-json output/robust/robust.json --push-to-hub my-user/my-model
"""
import argparse

from timm_frozenmix.cli import ArgumentParser
from timm_frozenmix.core.errors import exit_on_usage_error
from timm_frozenmix.io.hub import check_can_push, export, push


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog='python -m timm_frozenmix.cli.hub', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description='Export a train.py checkpoint as a Hub model folder (weights, config, model card) and push it.')
    parser.add_argument('--checkpoint', required=True, help='train.py checkpoint (model_best.pth.tar)')
    parser.add_argument('--output', required=True, help='export folder (created; replaced if it holds an export)')
    parser.add_argument('--robust-json', nargs='+', default=[], metavar='PATH',
                        help='robust.json files from eval_robust.py runs of this checkpoint, for the model card')
    parser.add_argument('--use-ema', action='store_true', help='export the EMA weights')
    parser.add_argument('--repo-id', default=None,
                        help='the Hub repo the card loads from, user/name (default: --push-to-hub)')
    parser.add_argument('--push-to-hub', default=None, metavar='REPO', help='also upload to this Hub repo')
    parser.add_argument('--private', action='store_true', help='create the Hub repo as private')
    group = parser.add_argument_group('Provenance shown in the model card (optional)')
    group.add_argument('--pretrained-name', help='the timm name the same weights load under, e.g. NAME.TAG')
    group.add_argument('--train-time-s', type=float, help='wall time of the training, in seconds')
    group.add_argument('--machine', help='what the training ran on, e.g. "2 CPU cores (x86_64), torch 2.14.1"')
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_usage_error('hub'):
        if args.push_to_hub:
            check_can_push(args.push_to_hub)
        provenance = dict(pretrained_name=args.pretrained_name, train_time_s=args.train_time_s, machine=args.machine)
        folder = export(args.checkpoint, args.output, args.repo_id or args.push_to_hub, args.robust_json, args.use_ema,
                        provenance)
    print(f'Exported to {folder}; load it with timm.create_model("local-dir:{folder}", pretrained=True)')
    if args.push_to_hub:
        print(f'Pushed to {push(folder, args.push_to_hub, args.private)}')


if __name__ == '__main__':
    main()
