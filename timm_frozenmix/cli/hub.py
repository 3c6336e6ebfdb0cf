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
                        help='the Hub repo the card loads from, user/name (default: --push-to-hub; without either, '
                             'the card describes a local export loaded with local-dir:)')
    parser.add_argument('--keep-readme', action='store_true',
                        help='keep the README.md already there (an earlier export in --output, or the Hub repo\'s) '
                             'instead of writing a new model card')
    hub = parser.add_argument_group('Upload (as timm\'s push_to_hf_hub)')
    hub.add_argument('--push-to-hub', default=None, metavar='REPO', help='also upload to this Hub repo')
    hub.add_argument('--private', action='store_true', help='create the Hub repo as private')
    hub.add_argument('--revision', default=None, help='branch to commit to (created if missing; default: main)')
    hub.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    group = parser.add_argument_group('Provenance shown in the model card (optional)')
    group.add_argument('--pretrained-name', help='the timm name the same weights load under, e.g. NAME.TAG')
    group.add_argument('--train-time-s', type=float, help='wall time of the training, in seconds')
    group.add_argument('--machine', help='what the training ran on, e.g. "2 CPU cores (x86_64), torch 2.14.1"')
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.revision or args.create_pr) and not args.push_to_hub:
        parser.error('--revision and --create-pr apply to an upload: add --push-to-hub user/name')
    with exit_on_usage_error('hub'):
        if args.push_to_hub:
            check_can_push(args.push_to_hub)
        provenance = dict(pretrained_name=args.pretrained_name, train_time_s=args.train_time_s, machine=args.machine)
        folder = export(args.checkpoint, args.output, args.repo_id or args.push_to_hub, args.robust_json, args.use_ema,
                        provenance, keep_readme=args.keep_readme)
    print(f'Exported to {folder}; load it with timm.create_model("local-dir:{folder}", pretrained=True)')
    if args.push_to_hub:
        url = push(folder, args.push_to_hub, args.private, args.revision, args.create_pr, args.keep_readme)
        print(f'Pushed to {url}')


if __name__ == '__main__':
    main()
