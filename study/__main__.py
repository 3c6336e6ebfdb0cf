""" The reproduction study of "Rethinking the Role of Spatial Mixing", run from the repository

    python -m study            # the full study: 60k train / 10k test images, under an hour on 2 cores
    python -m study --quick    # the same experiments, tiny, on the embedded sample (minutes)

An application of timm_frozenmix, not part of the installed package. All numbers go to `reproduction.json`; the
report (`reproduction.md` and its figures) is rendered from that file alone by `study.report`. Finished training
runs are reused when the study is rerun with the same recipe, so an interrupted study resumes.
"""
import argparse
import json
from pathlib import Path

from timm.utils import setup_default_logging

from timm_frozenmix import robust
from timm_frozenmix.data import check_dataset
from timm_frozenmix.errors import UsageError, exit_on_usage_error
from timm_frozenmix.outputs import check_output_folder

from .report import RESULTS, write_report
from .run import FULL, QUICK, UNSHUFFLE_GRID, run_study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m study', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Reproduce the paper's claims on Fashion-MNIST and write an honest report.")
    parser.add_argument('--quick', action='store_true', help='tiny models on the embedded sample, a few minutes')
    parser.add_argument('--output', default=None, help='folder for the training runs (default output/study[-quick])')
    parser.add_argument('--report-dir', default=None,
                        help='folder for reproduction.md/.json and figures (default docs, or <output>/report with --quick)')
    parser.add_argument('--render-only', action='store_true',
                        help='only re-render the report from the reproduction.json in --report-dir')
    parser.add_argument('--seed', type=int, default=42)
    parser.add_argument('-j', '--workers', type=int, default=0, help='data loader workers of every run')
    return parser


def main(argv=None) -> None:
    setup_default_logging()
    args = build_parser().parse_args(argv)
    output = Path(args.output or ('output/study-quick' if args.quick else 'output/study')).resolve()
    report_dir = Path(args.report_dir or (output / 'report' if args.quick else 'docs')).resolve()
    with exit_on_usage_error('study'):
        if args.workers < 0:
            raise UsageError(f'--workers must be >= 0, got {args.workers}')
        check_output_folder(report_dir, '--report-dir')
        if args.render_only:
            path = report_dir / RESULTS
            if not path.is_file():
                raise UsageError(f'{path} not found: run the study first, or pass --report-dir')
            results, drawn = json.loads(path.read_text()), {}
        else:
            check_output_folder(output)
            recipe = QUICK if args.quick else FULL
            check_dataset(recipe.dataset)
            robust.import_torchattacks()
            results = run_study(recipe, output, args.seed, args.workers, args.quick)
            drawn = {UNSHUFFLE_GRID: output / UNSHUFFLE_GRID}
        files = write_report(results, report_dir, drawn)
    print(f'Report written to {files[0]} ({results["wall_time_s"] / 60:.1f} min), with {", ".join(f.name for f in files[1:])}')


if __name__ == '__main__':
    main()
