""" The reproduction report: verdicts with their intervals, tables and figures, rendered from the study's JSON alone

Nothing here measures anything: every number comes from `reproduction.json` (written by `study`, one entry per
part), so the report can be re-rendered (`python -m study --render-only`) and checked against the data it shows.
Each claim is judged by the rules of `study.stats` on paired 95% intervals; a claim whose parts have not run yet
is listed as such.
"""
import json
import math
import os
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.outputs import staging_folder
from scipy.stats import t as student_t
from timm_frozenmix.io.reporting import markdown_table, new_figure, replace_between_markers, save_figure

from .stats import FAILS, HOLDS, OPEN, PARTLY, Interval, combine, exceeds, paired, ratio, t_interval, within

RESULTS, REPORT = 'reproduction.json', 'reproduction.md'
MODE_NAMES = {'full': 'Full', 'chans': 'Chans', 'space': 'Space', 'dense': 'Dense'}
PART_ORDER = ('modes', 'widths', 'filters', 'robustness', 'unshuffle', 'cost')


@dataclass(frozen=True)
class Comparison:
    """One paired comparison behind a verdict: what is compared, in which configuration, and its verdict."""
    config: str
    measure: str
    interval: Interval
    unit: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # the paper's claim
    needs: Tuple[str, ...]  # the parts it is judged on
    compare: Callable[[dict], List[Comparison]]
    bar: str  # the rule, in words
    verdict: Callable[[List[Comparison]], str] = None  # from the comparisons; default: combine over them

    def judge(self, comparisons: List[Comparison]) -> str:
        return (self.verdict or (lambda cs: combine(c.verdict for c in cs)))(comparisons)


def all_required(comparisons: List[Comparison]) -> str:
    """Every comparison is a necessary part of the claim: it holds only if all hold, fails if any fails."""
    verdicts = [c.verdict for c in comparisons]
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else OPEN


def smoothing_verdict(comparisons: List[Comparison]) -> str:
    """Per family, weak and strong gains and the clean cost are all required; then combined over families."""
    families = dict.fromkeys(c.config.split(', ')[0] for c in comparisons)
    return combine(all_required([c for c in comparisons if c.config.split(', ')[0] == f]) for f in families)


def unshuffle_verdict(comparisons: List[Comparison]) -> str:
    """Chans beating the trivial reconstructions is a precondition; then Full - Chans decides."""
    near, learned = comparisons
    return near.verdict if learned.verdict == HOLDS else FAILS if learned.verdict == FAILS else OPEN


def _parts(results: dict) -> dict:
    return results['parts']


def _recipe(results: dict) -> dict:
    return next(iter(results['parts'].values()))['recipe']


def _largest(part: dict, evaluation: str = 'weak') -> int:
    return len(part[evaluation]['eps']) - 1


def _mean(values: Dict[str, float]) -> float:
    return statistics.fmean(values.values())


def _accuracy_configs(results: dict) -> List[Tuple[str, Dict[str, dict]]]:
    """(configuration, rows by mode) of every accuracy comparison of modes and widths, each run set once."""
    configs, seen = [], set()
    parts = _parts(results)
    if 'modes' in parts:
        modes = parts['modes']
        for family, depth in dict.fromkeys((r['family'], r['depth']) for r in modes['rows']):
            rows = {r['mode']: r for r in modes['rows'] if (r['family'], r['depth']) == (family, depth)}
            label = (f'ConvMixer depth {depth}' if family == 'ConvMixer'
                     else f'SepResNet n = {depth}, base width {modes["resnet_base"]}')
            configs.append((label, rows))
            seen.add(rows['full']['run'])
    if 'widths' in parts:
        widths = parts['widths']
        for base in dict.fromkeys(r['base_width'] for r in widths['rows']):
            rows = {r['mode']: r for r in widths['rows'] if r['base_width'] == base}
            if rows['full']['run'] not in seen:
                configs.append((f'SepResNet n = {widths["depth"]}, base width {base}', rows))
    return configs


def compare_chans_full(results: dict) -> List[Comparison]:
    margin = _recipe(results)['margin']
    return [Comparison(config, 'Full - Chans, test top-1', iv, ' points', within(iv, margin))
            for config, rows in _accuracy_configs(results)
            for iv in [paired(rows['full']['test'], rows['chans']['test'])]]


def compare_space(results: dict) -> List[Comparison]:
    margin = _recipe(results)['margin']
    return [Comparison(config, 'Chans - Space, test top-1', iv, ' points', exceeds(iv, margin))
            for config, rows in _accuracy_configs(results)
            for iv in [paired(rows['chans']['test'], rows['space']['test'])]]


def compare_width(results: dict) -> List[Comparison]:
    widths = _parts(results)['widths']
    bases = sorted({r['base_width'] for r in widths['rows']})
    rows = {(r['base_width'], r['mode']): r for r in widths['rows']}

    def gap(base):
        full, chans = rows[base, 'full']['test'], rows[base, 'chans']['test']
        return {s: full[s] - chans[s] for s in full if s in chans}
    narrow, wide = bases[0], bases[-1]
    iv = paired(gap(narrow), gap(wide))
    return [Comparison(f'SepResNet n = {widths["depth"]}, base width {narrow} vs {wide}',
                       'Full-Chans gap at the narrowest minus at the widest', iv, ' points', exceeds(iv))]


def compare_filters(results: dict) -> List[Comparison]:
    rows = _parts(results)['filters']['rows']
    return [Comparison(f'{a["init"]} vs {b["init"]}', 'test top-1 difference', iv, ' points', exceeds(iv))
            for a, b in zip(rows, rows[1:]) for iv in [paired(a['test'], b['test'])]]


def _attack_accuracy(family: dict, label: str, evaluation: str, attack: str, index: int) -> Dict[str, float]:
    if attack == 'clean':
        return {s: runs[evaluation]['models'][label]['clean_accuracy'] for s, runs in family['seeds'].items()}
    return {s: runs[evaluation]['models'][label]['accuracy'][attack][index] for s, runs in family['seeds'].items()}


def compare_robust(results: dict) -> List[Comparison]:
    robustness = _parts(results)['robustness']
    out = []
    for name, family in robustness['families'].items():
        weak = next(iter(family['seeds'].values()))['weak']
        i, eps = _largest(next(iter(family['seeds'].values()))), weak['eps_labels'][-1]
        for chans, full in (('chans', 'full'), ('chans, FGSM-trained', 'full, FGSM-trained')):
            for attack in ('FGSM', 'PGD-2'):
                iv = paired(_attack_accuracy(family, chans, 'weak', attack, i),
                            _attack_accuracy(family, full, 'weak', attack, i))
                out.append(Comparison(f'{name}{", FGSM-trained" if "FGSM" in chans else ""}, {attack}',
                                      f'Chans - Full, accuracy at {eps}', iv, ' points', exceeds(iv)))
    return out


def compare_smoothing(results: dict) -> List[Comparison]:
    robustness = _parts(results)['robustness']
    margin = _recipe(results)['margin']
    smoothed = f'chans, sigma {robustness["sigma"]:g}'
    out = []
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
        for evaluation, attack in (('weak', 'FGSM'), ('weak', 'PGD-2'), ('strong', 'PGD-10')):
            i, eps = _largest(first, evaluation), first[evaluation]['eps_labels'][-1]
            iv = paired(_attack_accuracy(family, smoothed, evaluation, attack, i),
                        _attack_accuracy(family, 'chans', evaluation, attack, i))
            out.append(Comparison(f'{name}, {attack}', f'smoothed - Chans, accuracy at {eps}', iv, ' points',
                                  exceeds(iv)))
        iv = paired(_attack_accuracy(family, 'chans', 'weak', 'clean', 0),
                    _attack_accuracy(family, smoothed, 'weak', 'clean', 0))
        out.append(Comparison(f'{name}, clean', 'Chans - smoothed, clean accuracy', iv, ' points', within(iv, margin)))
    return out


def compare_unshuffle(results: dict) -> List[Comparison]:
    unshuffle = _parts(results)['unshuffle']
    rows = {r['mode']: r for r in unshuffle['rows']}
    trivial = {s: max(b.values()) for s, b in unshuffle['baselines'].items()}
    near = paired(rows['full']['test'], rows['chans']['test'])
    learned = paired(rows['chans']['test'], trivial)
    return [Comparison('Full - Chans', 'test PSNR', near, ' dB', within(near, _recipe(results)['psnr_margin'])),
            Comparison('Chans - best trivial reconstruction', 'test PSNR', learned, ' dB', exceeds(learned))]


def _faster(iv: Interval) -> str:
    """Verdict on "a step-time ratio below 1" from the interval of the geometric-mean ratio."""
    if iv.n < 2:
        return OPEN
    return HOLDS if iv.high < 1 else FAILS if iv.low > 1 else OPEN


def cost_rows(results: dict) -> Dict[Tuple[str, str, str], dict]:
    return {(r['family'], r['mode'], r['execution']): r for r in _parts(results)['cost']['rows']}


def compare_cost(results: dict) -> List[Comparison]:
    rows = cost_rows(results)
    out = []
    for family, mode, execution in rows:
        if mode == 'chans':
            iv = ratio(rows[family, 'chans', execution]['seconds'], rows[family, 'full', execution]['seconds'])
            out.append(Comparison(f'{family}, {"paper" if execution == "naive" else "this package"}\'s layer',
                                  'Chans / Full, seconds per training step', iv, 'x', _faster(iv)))
    return out


def _coverage_row(results: dict) -> Dict[str, dict]:
    return {r['init']: r for r in _parts(results)['filters']['rows']}


def compare_coverage(results: dict) -> List[Comparison]:
    """A bank covering at least as much of the plane as random filters should not be worse than them: each such
    bank with a lower accuracy (interval above 0) is a counterexample to coverage explaining accuracy; a bank
    covering less should be worse."""
    rows = _coverage_row(results)
    random = rows['random']
    out = []
    for init, row in rows.items():
        if init == 'random':
            continue
        iv = paired(random['test'], row['test'])
        if iv.n < 2:
            verdict = OPEN
        elif row['coverage'] >= random['coverage']:
            verdict = FAILS if iv.low > 0 else OPEN if iv.high > 0 else HOLDS
        else:  # less coverage: the claim expects lower accuracy
            verdict = HOLDS if iv.low > 0 else FAILS if iv.high < 0 else OPEN
        out.append(Comparison(f'{init} (coverage {row["coverage"]:.3f} vs {random["coverage"]:.3f})',
                              'random - this bank, test top-1', iv, ' points', verdict))
    return out


CLAIMS = [
    Claim('chans_near_full', 'Chans reaches nearly the accuracy of Full', ('modes', 'widths'), compare_chans_full,
          'holds when the interval of Full - Chans lies below the "nearly" margin, fails when it lies above it'),
    Claim('space_far_worse', 'Space is far worse than Chans', ('modes', 'widths'), compare_space,
          'holds when Chans - Space lies above the margin; partly when above 0 but below the margin; '
          'fails when below the margin with 0 inside or below'),
    Claim('width', 'The Full-Chans gap shrinks as ResNets get wider', ('widths',), compare_width,
          'holds when the gap at the narrowest width minus the gap at the widest lies above 0'),
    Claim('filters', 'Different random filters > the same 9 repeated > box > identity', ('filters',),
          compare_filters, 'each neighbour in the order must lie above the next (interval above 0)'),
    Claim('robust', 'Chans is more robust than Full to FGSM and PGD-2, undefended and FGSM-defended',
          ('robustness',), compare_robust, 'holds when Chans - Full at the largest eps lies above 0'),
    Claim('smoothing', 'Smoothing the frozen filters raises robustness without hurting clean accuracy',
          ('robustness',), compare_smoothing,
          'per model family, weak (FGSM, PGD-2) and strong (PGD-10) gains must all lie above 0 and the clean cost '
          'below the margin', smoothing_verdict),
    Claim('unshuffle', 'Chans ConvMixers un-shuffle pixels nearly as well as Full ones', ('unshuffle',),
          compare_unshuffle, 'Full - Chans PSNR below the dB margin, once Chans lies above the best trivial '
                             'reconstruction', unshuffle_verdict),
    Claim('cost', 'Chans trains faster per step than Full', ('cost',), compare_cost,
          'holds when the interval of the step-time ratio lies below 1x, fails when above'),
    Claim('coverage', 'Spectral coverage accounts for the quality of the frozen filters (Sec. 3.1)', ('filters',),
          compare_coverage, 'a bank covering at least as much as random filters must not be worse, and one that '
                            'covers less must be worse: one counterexample refutes it', all_required),
]


def judge(results: dict) -> List[Tuple[Claim, Optional[str], List[Comparison]]]:
    """Every claim with its verdict and comparisons; verdict None when a part it needs has not run."""
    out = []
    for claim in CLAIMS:
        if not any(part in _parts(results) for part in claim.needs):
            out.append((claim, None, []))
            continue
        comparisons = claim.compare(results)
        out.append((claim, claim.judge(comparisons), comparisons))
    return out


# README: its summary is this text, checked by a test

def readme_summary(results: dict) -> str:
    """The README's summary of the verdicts: one line per verdict, each claim with its deciding intervals."""
    lines = []
    judged = judge(results)
    for verdict in (HOLDS, PARTLY, FAILS, OPEN):
        claims = [f'{claim.text} ({"; ".join(_short(c) for c in comparisons)})'
                  for claim, v, comparisons in judged if v == verdict]
        if claims:
            lines.append(f'- **{verdict[0].upper()}{verdict[1:]}:** ' + '; '.join(claims) + '.')
    missing = [claim.text for claim, v, _ in judged if v is None]
    if missing:
        lines.append(f'- **Not yet measured:** {"; ".join(missing)}.')
    return '\n'.join(lines)


SUMMARY_START, SUMMARY_END = '<!-- study summary -->', '<!-- end of study summary -->'


def update_readme(readme: Path, results: dict) -> bool:
    """Replace the summary between README's study markers by `readme_summary`; False if it has no markers."""
    return replace_between_markers(readme, SUMMARY_START, SUMMARY_END, readme_summary(results))


def _short(c: Comparison) -> str:
    return f'{c.config}: {c.interval.text(c.unit, 1 if c.unit != "x" else 2)}'


# tables

def _fmt(values: Dict[str, float], digits: int = 2) -> str:
    """Mean with its 95% interval half-width over seeds."""
    iv = t_interval(list(values.values()))
    if iv.n < 2:
        return f'{iv.mean:.{digits}f}'
    return f'{iv.mean:.{digits}f} ± {(iv.high - iv.low) / 2:.{digits}f}'


def _mode_table(configs: List[Tuple[str, Dict[str, dict]]], unit_test: str = 'test top-1 (%)') -> str:
    header = ['configuration', 'mode', unit_test, 'validation (%)', 'best epochs', 'trainable / all parameters']
    body = [[config, MODE_NAMES[mode], _fmt(row['test']), _fmt(row['val']),
             ', '.join(str(e) for e in row['best_epoch'].values()), f'{row["trainable_params"]:,} / {row["params"]:,}']
            for config, rows in configs for mode, row in rows.items()]
    return markdown_table(header, body)


def _comparison_table(comparisons: List[Comparison]) -> str:
    return markdown_table(['configuration', 'paired comparison', 'mean [95% interval]', 'verdict'],
                          [[c.config, c.measure, c.interval.text(c.unit), c.verdict] for c in comparisons])


# figures

def plot_accuracy(results: dict, path: Path) -> None:
    configs = _accuracy_configs(results)
    fig, axes = new_figure(1, 1, figsize=(max(6, 1.6 * len(configs)), 4.5))
    ax = axes[0][0]
    modes = ['full', 'chans', 'space', 'dense']
    for j, mode in enumerate(modes):
        xs, ys, errs = [], [], []
        for i, (_, rows) in enumerate(configs):
            if mode in rows:
                iv = t_interval(list(rows[mode]['test'].values()))
                xs.append(i + (j - 1.5) * 0.2), ys.append(iv.mean), errs.append((iv.high - iv.low) / 2 if iv.n > 1 else 0)
        ax.bar(xs, ys, width=0.2, yerr=errs, capsize=3, label=MODE_NAMES[mode])
    ax.set_xticks(range(len(configs)), [c for c, _ in configs], rotation=15, fontsize=8)
    low = min(min(r['test'].values()) for _, rows in configs for r in rows.values())
    high = max(max(r['test'].values()) for _, rows in configs for r in rows.values())
    ax.set_ylim(max(0, low - 5), min(100, high + 4))
    ax.set_ylabel('test top-1 (%), mean and 95% interval')
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_filters(results: dict, path: Path) -> None:
    filters = _parts(results)['filters']
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    ax = axes[0][0]
    for i, row in enumerate(filters['rows']):
        iv = t_interval(list(row['test'].values()))
        ax.bar(i, iv.mean, yerr=(iv.high - iv.low) / 2 if iv.n > 1 else 0, capsize=4)
        ax.annotate(f'coverage {row["coverage"]:.2f}', (i, 2), ha='center', fontsize=8, rotation=90, color='white')
    ax.set_xticks(range(len(filters['rows'])), [r['init'] for r in filters['rows']])
    ax.set_ylabel('test top-1 (%), mean and 95% interval')
    ax.set_title(f'frozen filters, SepResNet n = {filters["depth"]}, Chans', fontsize=9)
    ax = axes[0][1]
    growth = filters['growth']
    for kernel, values in growth.items():
        if kernel != 'filters':
            ax.plot(growth['filters'], values, marker='o', label=f'{kernel} random filters')
    ax.set_xscale('log')
    ax.set_xlabel('filters in the bank')
    ax.set_ylabel('spectral coverage')
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_robustness(results: dict, path: Path) -> None:
    robustness = _parts(results)['robustness']
    families = robustness['families']
    fig, axes = new_figure(1, len(families), figsize=(6.5 * len(families), 4.5))
    for ax, (name, family) in zip(axes[0], families.items()):
        first = next(iter(family['seeds'].values()))['weak']
        for j, label in enumerate(first['models']):
            for attack, style in (('FGSM', '-'), ('PGD-2', '--')):  # colour: model; line style: attack
                means = [_mean(_attack_accuracy(family, label, 'weak', attack, i)) for i in range(len(first['eps']))]
                ax.plot(first['eps_labels'], means, style, color=f'C{j}', marker='o', label=f'{label}, {attack}')
        ax.set_title(f'{name}: mean over {len(family["seeds"])} seeds', fontsize=9)
        ax.set_xlabel('eps (pixel units)')
        ax.set_ylabel('top-1 (%)')
        ax.legend(fontsize=6)
    save_figure(fig, path)


def plot_cost(results: dict, path: Path) -> None:
    comparisons = compare_cost(results)
    fig, axes = new_figure(1, 1, figsize=(6.5, 3.5))
    ax = axes[0][0]
    for i, c in enumerate(comparisons):
        iv = c.interval
        ax.errorbar(iv.mean, i, xerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt='o', capsize=4)
    ax.axvline(1.0, color='grey', linestyle=':')
    ax.set_yticks(range(len(comparisons)), [c.config for c in comparisons], fontsize=8)
    ax.set_xlabel('Chans / Full seconds per training step (95% interval)')
    save_figure(fig, path)


FIGURES = {
    'reproduction_accuracy.png': (('modes', 'widths'), plot_accuracy),
    'reproduction_filters.png': (('filters',), plot_filters),
    'reproduction_robustness.png': (('robustness',), plot_robustness),
    'reproduction_cost.png': (('cost',), plot_cost),
}


def figures(results: dict) -> Dict[str, Callable]:
    """The figures whose parts have run."""
    return {name: plot for name, (parts, plot) in FIGURES.items() if any(p in _parts(results) for p in parts)}


# the report

def render(results: dict) -> str:
    """The whole report as markdown."""
    parts = _parts(results)
    if not parts:
        return '# Reproducing "Rethinking the Role of Spatial Mixing" on Fashion-MNIST\n\nNo part has run yet.\n'
    recipe, machine = _recipe(results), next(iter(parts.values()))['machine']
    judged = judge(results)
    times = part_times(results)
    out = ['# Reproducing "Rethinking the Role of Spatial Mixing" on Fashion-MNIST', '']
    if results['quick']:
        out += ['> **This is a `--quick` run**: tiny models on the embedded sample, to check that the study works. '
                'Its verdicts are not evidence either way.', '']
    device = f'GPU {machine["gpu"]}' if machine.get('gpu') else 'no GPU'
    out += [
        'Generated by `python -m study' + (' --quick' if results['quick'] else '') + f'` from `{RESULTS}` (beside '
        'this file), which holds every number below, per seed. Training runs use `train.py`\'s code and attacks '
        '`eval_robust.py`\'s, as a user would run them.', '',
        f'- Machine: {machine["processor"]}, {machine["cpus"]} CPUs ({machine["threads"]} torch threads), {device}; '
        f'{machine["platform"]}; Python {machine["python"]}, torch {machine["torch"]}, timm {machine["timm"]}.',
        f'- Time: {sum(times.values()) / 60:.1f} min for the {len(parts)} of {len(PART_ORDER)} parts run so far ('
        + ', '.join(f'{name} {times[name] / 60:.1f}' for name in PART_ORDER if name in times)
        + ' min). A part counts the training time each of its runs took when it was trained (a run shared by '
        'two parts counts in the first), plus its own evaluation.',
        f'- Seeds {", ".join(map(str, recipe["seeds"]))} for every configuration. One seed fixes the model '
        'initialization and the data order, so the models of one seed are paired; attacks use one fixed subset of '
        'test images for all models.', '',
        '## Verdicts', '',
        'Every verdict reads a paired 95% t interval over the seeds (over interleaved timing rounds for speed) '
        f'against the claim\'s bar. "Nearly" means within {recipe["margin"]:g} points of top-1 '
        f'({recipe["psnr_margin"]:g} dB of PSNR), and "far worse" means more than {recipe["margin"]:g} points '
        'worse; both margins, the smoothing sigma and the attacks were fixed before any run. A difference whose '
        'interval contains 0 is never a ranking: such a claim is "not established". Over several configurations, '
        'the verdict is "partly" when some hold and others do not. Each interval is a 95% interval on its own, '
        'not corrected for the several comparisons behind one claim: with eight comparisons, one of them may '
        'exclude 0 by chance.', '',
        markdown_table(['claim (paper)', 'verdict here', 'rule', 'intervals'],
                       [[claim.text, f'**{verdict}**' if verdict else 'not run yet', claim.bar,
                         '; '.join(_short(c) for c in comparisons)] for claim, verdict, comparisons in judged]), '',
        *_setting(results, recipe), '',
    ]
    sections = {'modes': _section_accuracy, 'filters': _section_filters, 'robustness': _section_robustness,
                'unshuffle': _section_unshuffle, 'cost': _section_cost}
    verdicts = {claim.key: (claim, verdict, comparisons) for claim, verdict, comparisons in judged}
    for name, section in sections.items():
        if name in parts or (name == 'modes' and 'widths' in parts):
            out += section(results, verdicts)
    out += _scope(results)
    return '\n'.join(out) + '\n'


def _setting(results: dict, recipe: dict) -> List[str]:
    any_part = next(iter(_parts(results).values()))
    return [
        '## Setting, and what differs from the paper', '',
        f'- Data: {recipe["dataset"]} (28x28 grayscale). Each model trains on `{recipe["train_split"]}` for '
        f'{recipe["epochs"]} epochs and keeps the epoch with the best accuracy on `{recipe["val_split"]}`, held out '
        'from the training images; the test set is read once per model, at the end. The paper uses CIFAR-10/100 '
        'and ImageNet and trains to convergence; these budgets fit a small CPU, so absolute accuracies sit below '
        'converged ones, and a gap that closes only with long training stays open here.',
        f'- Training flags shared by every run: `train.py {" ".join(any_part["train_flags"])}`.',
        f'- ConvMixer: width {recipe["convmixer_dim"]}, depth {recipe["convmixer_depth"]}, kernel '
        f'{recipe["convmixer_kernel"]}, patch 2 (paper CIFAR: width 128-256, kernel 8, patch 1).',
        f'- Separable pre-activation ResNets (d = 9): stage widths b/2b/4b with b = {recipe["resnet_base"]} as in '
        f'the paper, n = {", ".join(map(str, recipe["resnet_depths"]))} (6n+2 layers); the width sweep takes b = '
        f'{", ".join(map(str, recipe["base_widths"]))} with all three modes; the filter ablation uses n = '
        f'{recipe["filter_depth"]} (the paper\'s depth 2). "Dense" is the same network with dense convolutions.',
        f'- Robustness on the SepResNet with n = {recipe["resnet_depths"][0]} (as in the paper) and on the ConvMixer: '
        f'{recipe["robust_samples"]} fixed test images, FGSM and PGD-2 without random start (step 1.25 eps) at eps '
        f'{recipe["eps"]}; FGSM-defended models trained on FGSM examples at {recipe["strong_eps"]}; smoothing with '
        f'sigma {recipe["sigma"]:g}; PGD-10 as the strong attack; AutoAttack on {recipe["autoattack_samples"]} '
        'images of one seed as a masking check.',
        f'- Un-shuffling on images resized to {recipe["unshuffle_size"]}x{recipe["unshuffle_size"]}, so that the '
        'receptive field covers the whole image; the paper uses full-size images and far larger models.',
        '- Timing on this CPU, the paper\'s naive layer (depthwise conv, then pointwise conv) and this package\'s '
        '(a fused dense weight where it is cheaper); the paper times GPUs.',
    ]


def part_times(results: dict) -> Dict[str, float]:
    """Seconds per part: the training time of the runs it uses that no earlier part used, plus the time it spent
    on anything but training when it ran."""
    times, counted = {}, set()
    for name in PART_ORDER:
        part = results['parts'].get(name)
        if part is None:
            continue
        runs = [run for run in part['runs'] if run not in counted]
        counted.update(runs)
        times[name] = sum(part['runs'][run]['wall_time_s'] for run in runs) + part['wall_time_s'] - part['training_s']
    return times


def _verdict_block(verdicts: dict, *keys: str) -> List[str]:
    out = []
    for key in keys:
        claim, verdict, comparisons = verdicts[key]
        if verdict is None:
            continue
        out += [f'**{claim.text}: {verdict}.** Rule: {claim.bar}.', '', _comparison_table(comparisons), '']
    return out


def _section_accuracy(results: dict, verdicts: dict) -> List[str]:
    configs = _accuracy_configs(results)
    out = ['## 1. Accuracy: Full, Chans, Space and Dense', '',
           'Paper: Chans reaches nearly the accuracy of Full on CIFAR-10, CIFAR-100 and ImageNet, for ResNets and '
           'ConvMixers; Space is far worse; with extra-wide ResNets the gap shrinks.', '',
           'Test top-1 and validation accuracy (%), mean ± 95% interval half-width over seeds; the best epoch is '
           'chosen on validation.', '', _mode_table(configs), '', '![accuracy](reproduction_accuracy.png)', '']
    out += _verdict_block(verdicts, 'chans_near_full', 'space_far_worse', 'width')
    dense = [(config, paired(rows['dense']['test'], rows['chans']['test'])) for config, rows in configs
             if 'dense' in rows]
    if dense:
        out += ['**Capacity or optimization?** With d = k² = 9 and full-rank random filters, every dense 3x3 kernel '
                'factors exactly as pointwise weights times the frozen bank (Eq. 3 read backwards), so a Chans '
                'SepResNet spans the dense network\'s function class: any gap to the dense ResNet of the same '
                'widths is one of optimization (a fixed random preconditioner), not of capacity. Measured, '
                'Dense - Chans: ' + '; '.join(f'{c}: {iv.text(" points")}' for c, iv in dense) + '.', '']
    return out


def _section_filters(results: dict, verdicts: dict) -> List[str]:
    filters = _parts(results)['filters']
    body = [[r['init'], _fmt(r['test']), _fmt(r['val']), f'{r["coverage"]:.3f}'] for r in filters['rows']]
    growth = filters['growth']
    growth_body = [[n, *(f'{growth[k][i]:.3f}' for k in growth if k != 'filters')]
                   for i, n in enumerate(growth['filters'])]
    return ['## 2. Filter structure and spectral coverage', '',
            'Paper (CIFAR-100, depth-2 separable ResNet, Chans): different random filters per channel > the same 9 '
            'random kernels repeated for every input channel > box filters > identity filters (catastrophic). '
            'Sec. 3.1 explains the quality of random filters by the spectral coverage of their bank: each filter '
            'zero-padded, |FFT2|, maximum over the bank.', '',
            f'SepResNet n = {filters["depth"]}, base width {filters["base_width"]}, Chans. Coverage = fraction of a '
            f'{filters["spectral_size"]}x{filters["spectral_size"]} frequency grid where the envelope of unit-norm '
            f'filters reaches {filters["threshold"]:g}, mean over the frozen layers of seed 0.', '',
            markdown_table(['frozen spatial filters', 'test top-1 (%)', 'validation (%)', 'spectral coverage'], body), '',
            'Coverage of random banks as filters are added (this always grows: a maximum over more filters cannot '
            'shrink, so it is shown, not judged):', '',
            markdown_table(['filters', *(f'{k} random' for k in growth if k != 'filters')], growth_body), '',
            '![filters](reproduction_filters.png)', '',
            *_verdict_block(verdicts, 'filters', 'coverage')]


def _section_robustness(results: dict, verdicts: dict) -> List[str]:
    robustness = _parts(results)['robustness']
    out = ['## 3. Robustness', '',
           'Paper: Chans is more robust than Full to FGSM and PGD-2, and stays so with FGSM-defended training; '
           'smoothing the frozen random filters raises robustness further (over 25% relative at the largest eps) '
           'without hurting clean accuracy.', '']
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
        weak, strong = first['weak'], first['strong']
        header = ['model', 'clean'] + [f'{a} at {e}' for a in ('FGSM', 'PGD-2') for e in weak['eps_labels'][1:]] \
            + [f'PGD-10 at {strong["eps_labels"][-1]}']
        body = []
        for label in weak['models']:
            cells = [_fmt(_attack_accuracy(family, label, 'weak', 'clean', 0))]
            cells += [_fmt(_attack_accuracy(family, label, 'weak', a, i))
                      for a in ('FGSM', 'PGD-2') for i in range(1, len(weak['eps']))]
            cells += [_fmt(_attack_accuracy(family, label, 'strong', 'PGD-10', len(strong['eps']) - 1))]
            body.append([label, *cells])
        aa = family['autoattack']
        aa_body = [[label, f'{r["clean_accuracy"]:.2f}', f'{r["accuracy"]["PGD-10"][-1]:.2f}',
                    f'{r["accuracy"]["AutoAttack"][-1]:.2f}'] for label, r in aa['models'].items()]
        warnings = [w for runs in family['seeds'].values() for w in runs['strong']['warnings']] + aa['warnings']
        out += [f'### {name}', '',
                f'Top-1 (%) on {weak["num_samples"]} fixed test images, mean ± 95% interval half-width over seeds:',
                '', markdown_table(header, body), '',
                f'AutoAttack check, seed {robustness["autoattack"]["seed"]}, {aa["num_samples"]} images, eps '
                f'{aa["eps_labels"][-1]}:', '',
                markdown_table(['model', 'clean', 'PGD-10', 'AutoAttack'], aa_body), '',
                (f'Gradient-masking warnings: {"; ".join(warnings)}' if warnings else
                 'No gradient-masking warning: PGD-10 is at least as strong as FGSM for every seed, and AutoAttack '
                 f'stays within {robustness["masking_gap"]:g} points of PGD-10.'), '']
    out += ['![robustness](reproduction_robustness.png)', '']
    return out + _verdict_block(verdicts, 'robust', 'smoothing')


def _section_unshuffle(results: dict, verdicts: dict) -> List[str]:
    u = _parts(results)['unshuffle']
    body = [[MODE_NAMES[r['mode']], _fmt(r['test']), _fmt(r['val'])] for r in u['rows']]
    for name in next(iter(u['baselines'].values())):
        body.append([f'{name} (no learning)', _fmt({s: b[name] for s, b in u['baselines'].items()}), ''])
    return ['## 4. Pixel un-shuffling', '',
            'Paper: Chans ConvMixers learn to undo a fixed random pixel permutation nearly as well as Full ones.', '',
            f'{u["model"]}: receptive field {u["receptive_field"]} pixels, so every output pixel sees the whole '
            f'{u["size"]}x{u["size"]} image. One permutation per seed. Mean test PSNR (dB) ± 95% interval:', '',
            markdown_table(['model', 'test PSNR (dB)', 'validation PSNR (dB)'], body), '',
            f'![reconstructions]({u["grid"]})', '', *_verdict_block(verdicts, 'unshuffle')]


def _section_cost(results: dict, verdicts: dict) -> List[str]:
    cost = _parts(results)['cost']
    body = [[r['family'], MODE_NAMES[r['mode']], r['execution'], f'{1000 * statistics.median(r["seconds"]):.1f}',
             f'{r["trainable_params"]:,}'] for r in cost['rows']]
    return ['## 5. Training cost', '',
            'Paper: Chans trains faster per step (no gradients for the frozen spatial filters).', '',
            f'One SGD step at batch {cost["batch"]} on 28x28 channels-last images, {cost["steps"]} interleaved '
            'rounds in one process; "naive" is the paper\'s layer (depthwise conv, then pointwise conv), "ours" '
            'this package\'s execution choice. A ConvMixer\'s layers are plain convolutions, so it has one.', '',
            markdown_table(['model', 'mode', 'execution', 'median ms/step', 'trainable parameters'], body), '',
            '![training cost](reproduction_cost.png)', '', *_verdict_block(verdicts, 'cost')]


def _scope(results: dict) -> List[str]:
    seeds = len(_recipe(results)['seeds'])
    factor = student_t.ppf(0.975, seeds - 1) if seeds > 1 else math.inf
    runs = {name: run for part in _parts(results).values() for name, run in part['runs'].items()}
    last = sum(run['best_epoch'] == len(run['val_curve']) - 1 for run in runs.values())
    return ['## What this does and does not show', '',
            f'Validation chose the last epoch for {last} of the {len(runs)} runs: '
            + ('every model was' if last == len(runs) else 'most models were' if 2 * last > len(runs) else 'some were')
            + ' still improving when its budget ended, so the accuracies here are those of short training, not of '
              'converged models.',
            '',
            'It shows, for small models trained briefly on Fashion-MNIST with a few seeds, which of the paper\'s '
            'differences are larger than the seed-to-seed noise of this setting, and which are not. It does not show '
            'what happens at convergence, at ImageNet scale or on a GPU: a claim that is "not established" here may '
            f'hold with more seeds or longer training, and one that fails here may hold in the paper\'s setting. '
            f'{seeds} seeds give wide t intervals (the t factor is {factor:.1f}), so only large effects are '
            'established. The robustness numbers use one fixed subset of test images and attacks of a fixed budget; '
            'AutoAttack runs on one seed only, as a check for gradient masking, not as a verdict.', '']


def write_report(results: dict, folder: Path, drawn: Optional[Dict[str, Path]] = None) -> List[Path]:
    """reproduction.md, .json and the figures of the parts that have run, all or none; the report path first.

    `drawn` maps figure names to files the study drew itself (they need models, not just the JSON); a figure
    missing from it must already be in `folder`, as when re-rendering. Everything is written to a staging
    folder first and moved in only once all of it exists, so a failure leaves the previous report whole.
    """
    drawn = drawn or {}
    unshuffle = _parts(results).get('unshuffle')
    grid = unshuffle['grid'] if unshuffle else None
    if grid and grid not in drawn and not (folder / grid).is_file():
        raise UsageError(f'{folder / grid} not found: rerun the study\'s unshuffle part to draw the reconstructions')
    markdown = render(results)
    plots = figures(results)
    folder.mkdir(parents=True, exist_ok=True)
    with staging_folder(folder) as staging:
        (staging / REPORT).write_text(markdown)
        (staging / RESULTS).write_text(json.dumps(results, indent=1) + '\n')
        for name, plot in plots.items():
            plot(results, staging / name)
        for name, source in drawn.items():
            shutil.copyfile(source, staging / name)
        names = [REPORT, RESULTS, *plots, *drawn]
        for name in names:
            os.replace(staging / name, folder / name)
    return [folder / name for name in names] + ([folder / grid] if grid and grid not in drawn else [])
