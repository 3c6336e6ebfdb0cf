""" eval_robust.py: adversarial robustness of timm models, measured with torchattacks

    python eval_robust.py --checkpoint output/train/*/model_best.pth.tar --attacks fgsm,pgd --eps 0,0.05,0.1
    python eval_robust.py --model convmixer_512_7_chans --pretrained --dataset folder --data-dir /imagenet/val

Rules that make the numbers trustworthy, each checked while the evaluation runs:
- attacks see [0, 1] pixels; normalization is the first layer of the attacked module (`Normalized`), and the
  attack's own normalization must stay unset, so inputs are never normalized twice;
- the model is in eval mode during attacks (no batch-norm statistics move);
- every adversarial example lies in the eps ball around its input and in [0, 1] (the largest perturbation
  is recorded), so eps = 0 gives exactly the clean accuracy;
- seeds are fixed, so two runs give the same numbers.
Beyond the paper, a gradient-masking check warns when a multi-step attack does better than one step, or when
AutoAttack finds far more than PGD.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from .convert import learn_mode
from .data import (
    SAMPLE, ImageSubset, Normalized, check_dataset, create_dataset, create_eval_loader, dataset_info, drop_unreadable,
)
from .errors import UsageError, exit_on_usage_error
from .loading import LoadedModel, load_model
from .outputs import check_output_folder, replace_atomically
from .training import check_device, parse_fraction

ATTACKS = ('fgsm', 'pgd', 'autoattack')
INSTALL_TORCHATTACKS = 'pip install --no-deps torchattacks==3.5.1'
PERTURBATION_TOLERANCE = 1e-6  # float rounding of x + eps * sign(g)
RESULTS, TABLE, PLOT = 'robust.json', 'robust.md', 'robust.png'


def import_torchattacks():
    """torchattacks, or a UsageError that names the module actually missing and the command that installs it."""
    try:
        import torchattacks
    except ModuleNotFoundError as e:
        missing = (e.name or '').split('.')[0]
        if missing != 'torchattacks':
            raise UsageError(f'torchattacks cannot be imported: it needs {missing!r}, which is not installed; run '
                             f'`pip install {missing}` (or reinstall timm-frozenmix, which declares it)') from None
        raise UsageError(f'torchattacks is not installed: run `{INSTALL_TORCHATTACKS}` '
                         f'(--no-deps because it pins an old requests that it never imports)') from None
    return torchattacks


def parse_eps_list(text: str) -> List[Tuple[str, float]]:
    """'0,1/255,8/255' as [(label, value), ...], each in [0, 1] (pixel units)."""
    eps = []
    for item in text.split(','):
        item = item.strip()
        value = parse_fraction(item)
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
    parser = argparse.ArgumentParser(
        prog='eval_robust.py', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description='Accuracy of timm models under FGSM, PGD and AutoAttack (torchattacks), side by side.')
    group = parser.add_argument_group('Models (train.py checkpoints, or names with published weights)')
    group.add_argument('--checkpoint', nargs='+', default=[], metavar='PATH',
                       help='train.py checkpoints (model_best.pth.tar / last.pth.tar); the model is rebuilt from it')
    group.add_argument('--model', nargs='+', default=[], metavar='NAME',
                       help='registered names (with --pretrained), hf-hub:org/repo or local-dir:path; with '
                            '--checkpoint, the architecture each checkpoint must hold (one name, or one per checkpoint)')
    group.add_argument('--pretrained', action='store_true', help='load the published weights of --model names')
    group.add_argument('--use-ema', action='store_true', help='evaluate the EMA weights of the checkpoints')
    group = parser.add_argument_group('Data (as in train.py)')
    group.add_argument('--dataset', default=SAMPLE, help='dataset name, as in train.py')
    group.add_argument('--data-dir', default=None, help='dataset folder (not needed for the embedded sample)')
    group.add_argument('--split', default='test', help='split to evaluate')
    group.add_argument('--dataset-download', action='store_true', help='download torch/ datasets')
    group.add_argument('--num-samples', type=int, default=None,
                       help='evaluate a fixed random subset of this many images (seeded by --seed)')
    group.add_argument('-b', '--batch-size', type=int, default=128)
    group.add_argument('-j', '--workers', type=int, default=2)
    group = parser.add_argument_group('Attacks')
    group.add_argument('--attacks', type=parse_attacks, default='fgsm,pgd', help=f'comma list of {",".join(ATTACKS)}')
    group.add_argument('--eps', type=parse_eps_list, default='0,1/255,2/255,4/255,8/255',
                       help='comma list of l-inf radii in pixel units; fractions such as 8/255 accepted')
    group.add_argument('--pgd-steps', type=int, default=10, help="PGD iterations (the paper's PGD-2 is 2)")
    group.add_argument('--pgd-alpha', type=parse_fraction, default=None,
                       help='PGD step size in pixel units (default 2.5 * eps / steps)')
    group.add_argument('--pgd-random-start', action=argparse.BooleanOptionalAction, default=True,
                       help='start PGD at a random point of the eps ball')
    group.add_argument('--masking-gap', type=float, default=10.0,
                       help='flag gradient masking when AutoAttack accuracy is this many points below PGD')
    group = parser.add_argument_group('Output')
    group.add_argument('--baseline', default=None,
                       help='a model (its label, name or checkpoint path) to report the others against, '
                            'as relative improvement')
    group.add_argument('--output', default='output/robust', help='folder for robust.json, robust.md, robust.png')
    group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    group.add_argument('--seed', type=int, default=0, help='seed of the subset, random starts and AutoAttack')
    return parser


def validate_args(args) -> None:
    if not args.checkpoint and not args.model:
        raise UsageError('nothing to evaluate: pass --checkpoint PATH (from train.py) or --model NAME --pretrained')
    if args.checkpoint and args.model and len(args.model) not in (1, len(args.checkpoint)):
        raise UsageError(f'{len(args.model)} --model names for {len(args.checkpoint)} checkpoints: '
                         f'give one name, or one per checkpoint')
    if args.pgd_steps < 1:
        raise UsageError(f'--pgd-steps must be >= 1, got {args.pgd_steps}')
    if args.pgd_alpha is not None and not 0 < args.pgd_alpha <= 1:
        raise UsageError(f'--pgd-alpha must lie in (0, 1] (pixel units), got {args.pgd_alpha:g}')
    if args.batch_size < 1:
        raise UsageError(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.num_samples is not None and args.num_samples < 1:
        raise UsageError(f'--num-samples must be >= 1, got {args.num_samples}')
    if args.workers < 0:
        raise UsageError(f'--workers must be >= 0, got {args.workers}')
    if args.masking_gap < 0:
        raise UsageError(f'--masking-gap must be >= 0 (accuracy points), got {args.masking_gap:g}')
    check_device(args.device)
    check_dataset(args.dataset, args.data_dir, args.dataset_download)
    check_output_folder(args.output)


def load_models(args) -> Dict[str, LoadedModel]:
    """Every model of the run by its label; all are loaded (and checked) before any evaluation starts."""
    if args.checkpoint:
        names = args.model * len(args.checkpoint) if len(args.model) == 1 else (args.model or [None] * len(args.checkpoint))
        loaded = [(path, load_model(name, path, use_ema=args.use_ema)) for name, path in zip(names, args.checkpoint)]
    else:
        loaded = [(name, load_model(name, pretrained=args.pretrained)) for name in args.model]
    archs = [m.arch for _, m in loaded]
    labels = {}
    for spec, m in loaded:
        label = m.arch if archs.count(m.arch) == 1 or m.checkpoint is None else f'{m.arch} ({Path(spec).parent.name})'
        if label in labels:
            label = spec
        if label in labels:
            raise UsageError(f'{spec} is listed twice')
        labels[label] = m
    return labels


def find_baseline(args, models: Dict[str, LoadedModel]) -> str:
    if args.baseline is None:
        return None
    for label, m in models.items():
        if args.baseline in (label, m.arch) or (m.checkpoint and Path(args.baseline).resolve() == Path(m.checkpoint)):
            return label
    raise UsageError(f'--baseline {args.baseline!r} is none of the evaluated models: {", ".join(models)}')


def attack_label(name: str, args) -> str:
    return {'fgsm': 'FGSM', 'pgd': f'PGD-{args.pgd_steps}', 'autoattack': 'AutoAttack'}[name]


def autoattack_components(num_classes: int) -> List[str]:
    """AutoAttack's standard suite (Croce & Hein 2020), adapted to models with fewer than 4 classes.

    APGD-T's targeted DLR loss reads the 4th-largest logit, so it needs 4 classes; with 3 the untargeted
    APGD-DLR (which reads the 3rd) takes its place, and with 2 no DLR loss is defined at all. FAB-T targets
    every other class and Square needs no gradients; both run with 2 classes.
    """
    if num_classes < 2:
        raise UsageError(f'a model with {num_classes} class cannot be attacked: nothing can be misclassified')
    if num_classes >= 4:
        return ['APGD-CE', 'APGD-T', 'FAB-T', 'Square']
    return ['APGD-CE', 'APGD-DLR', 'FAB-T', 'Square'] if num_classes == 3 else ['APGD-CE', 'FAB-T', 'Square']


def make_autoattack(torchattacks, net: nn.Module, eps: float, num_classes: int, seed: int):
    """torchattacks' standard AutoAttack, or the same components minus those the class count rules out."""
    if num_classes >= 4:
        return torchattacks.AutoAttack(net, norm='Linf', eps=eps, version='standard', n_classes=num_classes, seed=seed)
    common = dict(norm='Linf', eps=eps, seed=seed, n_restarts=1)
    attacks = {
        'APGD-CE': lambda: torchattacks.APGD(net, loss='ce', **common),
        'APGD-DLR': lambda: torchattacks.APGD(net, loss='dlr', **common),
        'FAB-T': lambda: torchattacks.FAB(net, multi_targeted=True, n_classes=num_classes, **common),
        'Square': lambda: torchattacks.Square(net, n_queries=5000, **common),
    }
    return torchattacks.MultiAttack([attacks[name]() for name in autoattack_components(num_classes)])


def make_attack(torchattacks, name: str, net: nn.Module, eps: float, args, num_classes: int):
    if name == 'fgsm':
        attack = torchattacks.FGSM(net, eps=eps)
    elif name == 'pgd':
        alpha = args.pgd_alpha if args.pgd_alpha is not None else 2.5 * eps / args.pgd_steps
        attack = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=args.pgd_steps, random_start=args.pgd_random_start)
    else:
        attack = make_autoattack(torchattacks, net, eps, num_classes, args.seed)
    if attack.normalization_used is not None:
        raise RuntimeError(f'torchattacks picked up a normalization of {type(net).__name__}: inputs would be '
                           f'normalized twice')
    return attack


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, eps: float, what: str) -> float:
    """The largest l-inf perturbation of the batch; an example outside the eps ball or [0, 1] is an error."""
    perturbation = (x_adv - x).abs().amax().item()
    if perturbation > eps + PERTURBATION_TOLERANCE or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f'{what} produced an example outside the eps ball or [0, 1] '
                           f'(max perturbation {perturbation:.6g}): the evaluation would be invalid')
    return perturbation


def evaluate_model(label: str, loaded: LoadedModel, dataset, args, torchattacks) -> dict:
    """Clean and adversarial accuracy (in %) of one model over the whole dataset, one pass over the data."""
    device = torch.device(args.device)
    net = Normalized(loaded.model, loaded.data_config['mean'], loaded.data_config['std']).to(device).eval()
    loader = create_eval_loader(dataset, loaded.data_config, args.batch_size, args.workers, device)
    attacks = {
        (name, i): make_attack(torchattacks, name, net, eps, args, loaded.num_classes)
        for name in args.attacks for i, (_, eps) in enumerate(args.eps)}
    correct = {key: 0 for key in attacks}
    perturbation = {key: 0.0 for key in attacks}
    clean_correct, total = 0, 0
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    progress = tqdm(loader, desc=label, unit='batch', dynamic_ncols=True)
    for x, y in progress:
        x, y = x.to(device).float(), y.to(device)
        with torch.no_grad():
            clean_correct += (net(x).argmax(1) == y).sum().item()
        total += y.numel()
        for (name, i), attack in attacks.items():
            eps_label, eps = args.eps[i]
            # at eps 0 the ball is one point: AutoAttack would spend its whole query budget proving it
            x_adv = x if name == 'autoattack' and eps == 0 else attack(x, y)
            what = f'{attack_label(name, args)} at eps {eps_label} on {label}'
            perturbation[name, i] = max(perturbation[name, i], check_adversarial(x, x_adv, eps, what))
            with torch.no_grad():
                correct[name, i] += (net(x_adv).argmax(1) == y).sum().item()
        progress.set_postfix(clean=f'{100 * clean_correct / total:.1f}%')
    return {
        'model': loaded.arch,
        'checkpoint': loaded.checkpoint,
        'learn': learn_mode(loaded.model),
        'num_samples': total,
        'clean_accuracy': 100 * clean_correct / total,
        'accuracy': {attack_label(name, args): [100 * correct[name, i] / total for i in range(len(args.eps))]
                     for name in args.attacks},
        'max_perturbation': {attack_label(name, args): [perturbation[name, i] for i in range(len(args.eps))]
                             for name in args.attacks},
        'wall_time_s': time.perf_counter() - start,
        **({'autoattack_components': autoattack_components(loaded.num_classes)} if 'autoattack' in args.attacks else {}),
    }


def masking_warnings(label: str, result: dict, eps: List[Tuple[str, float]], gap: float) -> List[str]:
    """Signs of gradient masking: a multi-step attack weaker than FGSM, or AutoAttack far stronger than PGD."""
    accuracy = result['accuracy']
    pgd = next((a for a in accuracy if a.startswith('PGD')), None)
    warnings = []
    for i, (eps_label, value) in enumerate(eps):
        if value == 0:
            continue
        if pgd and 'FGSM' in accuracy and accuracy[pgd][i] > accuracy['FGSM'][i]:
            warnings.append(f'{label}: {pgd} accuracy {accuracy[pgd][i]:.2f}% is above FGSM '
                            f'{accuracy["FGSM"][i]:.2f}% at eps {eps_label}: the multi-step attack is weaker than '
                            f'one step, a sign of gradient masking (or of a PGD step size that is too small)')
        if pgd and 'AutoAttack' in accuracy and accuracy['AutoAttack'][i] < accuracy[pgd][i] - gap:
            warnings.append(f'{label}: AutoAttack accuracy {accuracy["AutoAttack"][i]:.2f}% is more than {gap:g} '
                            f'points below {pgd} {accuracy[pgd][i]:.2f}% at eps {eps_label}: gradient attacks '
                            f'underestimate the attack, a sign of gradient masking')
    return warnings


def relative_improvement(result: dict, baseline: dict) -> dict:
    """(accuracy - baseline) / baseline in %, per attack and eps, and for clean accuracy (Fig. 9 of the paper)."""
    def relative(value, base):
        return None if base == 0 else 100 * (value - base) / base
    return {
        'clean': relative(result['clean_accuracy'], baseline['clean_accuracy']),
        **{attack: [relative(v, b) for v, b in zip(values, baseline['accuracy'][attack])]
           for attack, values in result['accuracy'].items()},
    }


def format_table(results: dict) -> str:
    """Markdown: accuracy per model, attack and eps; relative improvement when a baseline is set."""
    eps_labels = results['eps_labels']
    header = '| model | attack | clean | ' + ' | '.join(f'eps {e}' for e in eps_labels) + ' |'
    rule = '|' + '---|' * (3 + len(eps_labels))
    left_out = len(results.get('unreadable', []))
    lines = [f'Top-1 accuracy (%) on {results["num_samples"]} images of {results["dataset"]} ({results["split"]})'
             + (f', {left_out} unreadable image(s) left out' if left_out else ''), '', header, rule]
    for label, r in results['models'].items():
        for attack, values in r['accuracy'].items():
            lines.append(f'| {label} | {attack} | {r["clean_accuracy"]:.2f} | '
                         + ' | '.join(f'{v:.2f}' for v in values) + ' |')
    baseline = results['baseline']
    if baseline:
        lines += ['', f'Relative improvement over {baseline} (%)', '', header, rule]
        for label, r in results['models'].items():
            if label == baseline:
                continue
            improvement = r['relative_improvement']
            for attack in r['accuracy']:
                lines.append(f'| {label} | {attack} | {_signed(improvement["clean"])} | '
                             + ' | '.join(_signed(v) for v in improvement[attack]) + ' |')
    return '\n'.join(lines)


def _signed(value) -> str:
    return 'n/a' if value is None else f'{value:+.1f}'


def plot_results(results: dict, path: Path) -> None:
    """Accuracy against eps, one line per model (colour) and attack (line style); relative improvement beside."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    baseline = results['baseline']
    fig, axes = plt.subplots(1, 2 if baseline else 1, figsize=(12 if baseline else 7, 4.5), squeeze=False)
    positions = range(len(results['eps']))  # evenly spaced: eps lists are usually geometric
    styles = ('-', '--', ':', '-.')
    for m, (label, r) in enumerate(results['models'].items()):
        colour = f'C{m % 10}'
        for a, (attack, values) in enumerate(r['accuracy'].items()):
            axes[0, 0].plot(positions, values, styles[a % 4], color=colour, marker='o', label=f'{label}, {attack}')
            if baseline and label != baseline:
                improvement = [float('nan') if v is None else v for v in r['relative_improvement'][attack]]
                axes[0, 1].plot(positions, improvement, styles[a % 4], color=colour, marker='o',
                                label=f'{label}, {attack}')
    axes[0, 0].set(xlabel='eps (pixel units, l-inf)', ylabel='top-1 accuracy (%)',
                   title=f'{results["dataset"]}, {results["num_samples"]} images')
    if baseline:
        axes[0, 1].axhline(0, color='grey', linewidth=0.8)
        axes[0, 1].set(xlabel='eps (pixel units, l-inf)', ylabel='relative improvement (%)',
                       title=f'over {baseline}')
    for ax in axes[0]:
        ax.set_xticks(positions, results['eps_labels'])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format='png', dpi=120))
    plt.close(fig)


def write_results(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    replace_atomically(output / RESULTS, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + '\n'))
    replace_atomically(output / TABLE, lambda tmp: tmp.write_text(format_table(results) + '\n'))
    plot_results(results, output / PLOT)


def evaluate(args) -> dict:
    """The whole evaluation: every check first, then one pass over the data per model, then the summary."""
    validate_args(args)
    torchattacks = import_torchattacks()
    models = load_models(args)
    baseline = find_baseline(args, models)
    dataset = create_dataset(args.dataset, root=args.data_dir, split=args.split, download=args.dataset_download)
    info = dataset_info(args.dataset, dataset)
    for label, m in models.items():
        in_chans = m.data_config['input_size'][0]
        if in_chans != info.in_chans:
            raise UsageError(f'{label} takes {in_chans}-channel images but {args.dataset} has {info.in_chans}')
        if info.num_classes and m.num_classes != info.num_classes:
            raise UsageError(f'{label} has {m.num_classes} classes but {args.dataset} has {info.num_classes}')
        if m.num_classes < 2:
            raise UsageError(f'{label} has {m.num_classes} class: no attack can make it misclassify')
    requested = len(dataset) if args.num_samples is None else args.num_samples
    if args.num_samples is not None:
        dataset = ImageSubset.random(dataset, args.num_samples, args.seed)
    dataset, unreadable = drop_unreadable(dataset, args.workers)
    for file in unreadable:
        print(f'WARNING: left out {file}: it cannot be read as an image', file=sys.stderr)
    if not len(dataset):
        raise UsageError(f'none of the {requested} images of {args.dataset} ({args.split}) can be read')

    start = time.perf_counter()
    results = {
        'dataset': args.dataset, 'split': args.split, 'num_samples': len(dataset), 'requested_samples': requested,
        'unreadable': unreadable, 'seed': args.seed,
        'eps': [value for _, value in args.eps], 'eps_labels': [label for label, _ in args.eps],
        'attacks': {attack_label(a, args): _attack_settings(a, args) for a in args.attacks},
        'baseline': baseline, 'device': args.device, 'torch': torch.__version__,
        'torchattacks': torchattacks.__version__, 'models': {}, 'warnings': [],
    }
    for label, m in models.items():
        result = evaluate_model(label, m, dataset, args, torchattacks)
        results['models'][label] = result
        results['warnings'] += masking_warnings(label, result, args.eps, args.masking_gap)
    if baseline:
        for label, r in results['models'].items():
            if label != baseline:
                r['relative_improvement'] = relative_improvement(r, results['models'][baseline])
    results['wall_time_s'] = time.perf_counter() - start
    return results


def _attack_settings(name: str, args) -> dict:
    if name == 'pgd':
        alpha = args.pgd_alpha if args.pgd_alpha is not None else '2.5 * eps / steps'
        return {'steps': args.pgd_steps, 'alpha': alpha, 'random_start': args.pgd_random_start}
    if name == 'autoattack':
        return {'version': 'standard, with the components each model\'s class count allows (autoattack_components)',
                'norm': 'Linf', 'seed': args.seed}
    return {}


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_usage_error('eval_robust.py'):
        results = evaluate(args)
    output = Path(args.output).resolve()
    write_results(results, output)
    print(format_table(results))
    for warning in results['warnings']:
        print(f'WARNING: {warning}', file=sys.stderr)
    print(f'\nResults written to {output / RESULTS}, {output / TABLE} and {output / PLOT} '
          f'({results["wall_time_s"]:.0f} s)')


if __name__ == '__main__':
    main()
