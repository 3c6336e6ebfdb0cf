""" eval_robust.py: accuracy of timm models under FGSM, PGD and AutoAttack (torchattacks), side by side

    python eval_robust.py --checkpoint output/train/*/model_best.pth.tar --attacks fgsm,pgd --eps 0,0.05,0.1
    python eval_robust.py --model convmixer_1536_20_full --pretrained --dataset folder --data-dir /imagenet/val

Parses the flags into a `RobustConfig`, runs `robust.evaluate`, writes robust.json / .md / .png and prints the
table and any gradient-masking warnings.
"""
import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Tuple

from timm_frozenmix.cli import ArgumentParser, fraction
from timm_frozenmix.core.errors import exit_on_usage_error
from timm_frozenmix.evaluation.robust import ATTACKS, PLOT, RESULTS, TABLE, RobustConfig, evaluate, format_table, write_results


def parse_eps_list(text: str) -> List[Tuple[str, float]]:
    """'0,1/255,8/255' as [(label, value), ...], each in [0, 1] (pixel units)."""
    eps = []
    for item in text.split(','):
        item = item.strip()
        value = fraction(item)
        if not 0.0 <= value <= 1.0:
            raise argparse.ArgumentTypeError(f'eps {item} is outside [0, 1]: eps is in pixel units, e.g. 8/255')
        eps.append((item, value))
    return eps


def parse_attacks(text: str) -> List[str]:
    attacks = [a.strip().lower() for a in text.split(',') if a.strip()]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise argparse.ArgumentTypeError(f'unknown attack {", ".join(unknown) or text!r}: choose from {",".join(ATTACKS)}')
    return list(dict.fromkeys(attacks))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog='eval_robust.py', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description='Accuracy of timm models under FGSM, PGD and AutoAttack (torchattacks), side by side.')
    group = parser.add_argument_group('Models (train.py checkpoints, or names with published weights)')
    group.add_argument('--checkpoint', nargs='+', metavar='PATH',
                       help='train.py checkpoints (model_best.pth.tar / last.pth.tar); the model is rebuilt from it')
    group.add_argument('--model', nargs='+', metavar='NAME',
                       help='registered names (with --pretrained), hf-hub:org/repo or local-dir:path; with '
                            '--checkpoint, the architecture each checkpoint must hold (one name, or one per checkpoint)')
    group.add_argument('--pretrained', action='store_true', help='load the published weights of --model names')
    group.add_argument('--use-ema', action='store_true', help='evaluate the EMA weights of the checkpoints')
    group = parser.add_argument_group('Data (as in train.py)')
    group.add_argument('--dataset', help='dataset name, as in train.py')
    group.add_argument('--data-dir', help='dataset folder (not needed for the embedded sample)')
    group.add_argument('--split', help='split to evaluate')
    group.add_argument('--dataset-download', action='store_true', help='download torch/ datasets')
    group.add_argument('--input-img-mode', help="image mode of folder datasets, e.g. 'L' (default: as trained)")
    group.add_argument('--input-key', help="image field of hfds/wds/tfds datasets (default: as trained on this "
                                           "dataset, else timm's 'image')")
    group.add_argument('--target-key', help="label field of hfds/wds/tfds datasets (default: as trained on this "
                                            "dataset, else timm's 'label')")
    group.add_argument('--class-map', help='a file of class names, one per line, fixing the class order (default: '
                                           'as trained on this dataset)')
    group.add_argument('--num-samples', type=int,
                       help='evaluate a fixed random subset of this many images (seeded by --seed)')
    group.add_argument('-b', '--batch-size', type=int)
    group.add_argument('-j', '--workers', type=int)
    group = parser.add_argument_group('Attacks')
    group.add_argument('--attacks', type=parse_attacks, help=f'comma list of {",".join(ATTACKS)} (default fgsm,pgd)')
    group.add_argument('--eps', type=parse_eps_list,
                       help='comma list of l-inf radii in pixel units; fractions such as 8/255 accepted '
                            '(default 0,1/255,2/255,4/255,8/255)')
    group.add_argument('--pgd-steps', type=int, help="PGD iterations (the paper's PGD-2 is 2)")
    group.add_argument('--pgd-alpha', type=fraction,
                       help='PGD step size in pixel units (default 2.5 * eps / steps)')
    group.add_argument('--pgd-random-start', action=argparse.BooleanOptionalAction,
                       help='start PGD at a random point of the eps ball')
    group.add_argument('--pgd-restarts', type=int,
                       help='PGD runs from independent random starts; an image is robust only if all fail (default 1)')
    group.add_argument('--masking-gap', type=float,
                       help='flag gradient masking when AutoAttack accuracy is this many points below PGD')
    group = parser.add_argument_group('Output')
    group.add_argument('--baseline',
                       help='a model (its label, name or checkpoint path) to report the others against, '
                            'as relative improvement')
    group.add_argument('--output', help='folder for robust.json, robust.md, robust.png')
    group.add_argument('--device')
    group.add_argument('--seed', type=int, help='seed of the subset, random starts and AutoAttack')
    defaults = asdict(RobustConfig())
    defaults.pop('eps'), defaults.pop('attacks')  # shown in the help as the user types them
    parser.set_defaults(**defaults, eps=RobustConfig().eps, attacks=RobustConfig().attacks)
    return parser


def main(argv=None) -> None:
    config = RobustConfig(**vars(build_parser().parse_args(argv)))
    with exit_on_usage_error('eval_robust.py'):
        results = evaluate(config)
    output = Path(config.output).resolve()
    write_results(results, output)
    print(format_table(results))
    for warning in results['warnings']:
        print(f'WARNING: {warning}', file=sys.stderr)
    print(f'\nResults written to {output / RESULTS}, {output / TABLE} and {output / PLOT} '
          f'({results["wall_time_s"]:.0f} s)')


if __name__ == '__main__':
    main()
