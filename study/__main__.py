""" The reproduction study of "Rethinking the Role of Spatial Mixing", run from the repository

    python -m study                       # every part docs/reproduction.json lacks or holds stale, then the report
    python -m study --part modes widths   # these parts (again), then the report
    python -m study --quick               # the same experiments, tiny, on the embedded sample (minutes)

An application of timm_frozenmix, not part of the installed package. Each part (defined in a module of `study.parts`)
runs on its own and its numbers go into `reproduction.json` as soon as it finishes; the report (`reproduction.md`
and its figures) is rendered from that file alone by `study.report`. Finished training runs are reused by every
later part and invocation with the same recipe, so an interrupted study resumes.
"""
import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from timm.utils import setup_default_logging

from timm_frozenmix.evaluation import robust
from timm_frozenmix.data.datasets import check_dataset
from timm_frozenmix.core.errors import UsageError, exit_on_usage_error
from timm_frozenmix.io.outputs import check_output_folder
from timm_frozenmix.io.reporting import write_json

from .parts import PARTS
from .recipe import FULL, QUICK, part_ran_with
from .report import RESULTS, part_times, update_readme, write_report
from .runs import run_part


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m study', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Reproduce the paper's claims on Fashion-MNIST and write an honest report.")
    parser.add_argument('--quick', action='store_true', help='tiny models on the embedded sample, a few minutes')
    parser.add_argument('--part', nargs='+', choices=list(PARTS), default=None,
                        help='run these parts, even if the report holds them (default: each part it lacks or holds stale)')
    parser.add_argument('--output', default=None, help='folder for the training runs (default output/study[-quick])')
    parser.add_argument('--report-dir', default=None,
                        help='folder for reproduction.md/.json and figures (default docs, or <output>/report with --quick)')
    parser.add_argument('--render-only', action='store_true',
                        help='only re-render the report from the reproduction.json in --report-dir')
    parser.add_argument('-j', '--workers', type=int, default=0, help='data loader workers of every run')
    return parser


def read_results(path: Path) -> dict:
    """The study's JSON, or a one-line UsageError where it is not one; only parts that `PARTS` names."""
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f'{path} is not the study\'s JSON ({e}): restore it (git checkout {path.name}) or rerun '
                         f'the study') from None
    if not isinstance(results, dict) or not isinstance(results.get('parts'), dict):
        raise UsageError(f'{path} was written by an older study or is not its JSON: rerun the study (python -m study)')
    # a part the study no longer has (one split in two) is left out: its successors rerun
    results['parts'] = {name: part for name, part in results['parts'].items() if name in PARTS}
    results['stale'] = [name for name in results.get('stale', []) if name in PARTS]
    return results


def load_results(path: Path, quick: bool, recipe) -> dict:
    """The parts finished so far at this scale, with `stale` naming those that no longer hold for this recipe
    (`recipe.part_ran_with`): they stay in the report, marked, until they are rerun."""
    results = read_results(path) if path.is_file() else {}
    if results.get('quick') != quick:
        results = {}
    parts = results.get('parts', {})
    return dict(quick=quick, parts=parts, stale=[name for name, part in parts.items()
                                                 if not part_ran_with(part, recipe)])


def record_part(path: Path, quick: bool, recipe: dict, name: str, part: dict) -> dict:
    """The study's JSON with part `name` set to `part`, written at once (a finished part is kept even if a later
    one fails). The file is read again first, so parts that another invocation finished meanwhile (one running
    other parts beside this one) are kept."""
    results = load_results(path, quick, recipe)
    results['parts'][name] = part
    results['stale'] = [stale for stale in results['stale'] if stale != name]
    write_json(path, results)
    return results


def main(argv=None) -> None:
    setup_default_logging()
    args = build_parser().parse_args(argv)
    output = Path(args.output or ('output/study-quick' if args.quick else 'output/study')).resolve()
    report_dir = Path(args.report_dir or (output / 'report' if args.quick else 'docs')).resolve()
    with exit_on_usage_error('study'):
        if args.workers < 0:
            raise UsageError(f'--workers must be >= 0, got {args.workers}')
        check_output_folder(report_dir, '--report-dir')
        path = report_dir / RESULTS
        drawn = {}
        if args.render_only:
            if not path.is_file():
                raise UsageError(f'{path} not found: run the study first, or pass --report-dir')
            results = read_results(path)
        else:
            check_output_folder(output)
            recipe = QUICK if args.quick else FULL
            check_dataset(recipe.dataset)
            robust.import_torchattacks()
            recipe_fields = json.loads(json.dumps(recipe.__dict__))
            results = load_results(path, args.quick, recipe_fields)
            parts = args.part or [name for name in PARTS
                                  if name not in results['parts'] or name in results['stale']]
            for name in parts:
                part = run_part(PARTS[name].measure, recipe, output, args.workers)
                report_dir.mkdir(parents=True, exist_ok=True)
                results = record_part(path, args.quick, recipe_fields, name, part)
            drawn = {name: output / name for part in PARTS.values() for name in part.drawn
                     if (output / name).is_file()}
        files = write_report(results, report_dir, drawn)
        if report_dir == REPO / 'docs':  # the repository's own report: README's summary follows it
            update_readme(REPO / 'README.md', results)
    total = sum(part_times(results).values())
    print(f'Report written to {files[0]} ({len(results["parts"])} of {len(PARTS)} parts, {total / 60:.1f} min), '
          f'with {", ".join(f.name for f in files[1:])}')


if __name__ == '__main__':
    main()
