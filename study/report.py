""" The reproduction report: verdicts, tables and figures rendered from the study's JSON alone

Nothing here measures anything: every number comes from `reproduction.json` (written by `study`), so the report
can be re-rendered (`python -m study --render-only`) and checked against the data it shows.
A verdict is a fixed rule over those numbers (thresholds below), stated next to it in the report.
"""
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from timm_frozenmix.errors import UsageError
from timm_frozenmix.outputs import staging_folder
from timm_frozenmix.reporting import markdown_table, new_figure, save_figure
from timm_frozenmix.robust import plot_results

RESULTS, REPORT = 'reproduction.json', 'reproduction.md'
NEAR = 2.0  # points of top-1: "nearly the accuracy of"
FAR = 5.0  # points of top-1: "far worse"
NEAR_DB = 1.0  # dB of PSNR: "nearly as well as"
SMOOTHING_GAIN = 25.0  # % relative improvement at the largest eps, the paper's figure
CLEAN_DROP = 1.0  # points of clean top-1 that smoothing may cost while "not hurting clean accuracy"
FASTER = 0.95  # step-time ratio that counts as faster: interleaved medians still wander by a few % here
HOLDS, PARTLY, FAILS = 'holds', 'partly', 'does not hold here'
MODES = ('full', 'chans', 'space')
MODE_NAMES = {'full': 'Full', 'chans': 'Chans', 'space': 'Space'}


def _pct(value) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


def _by(rows: List[dict], *keys) -> Dict[tuple, dict]:
    return {tuple(row[k] for k in keys): row for row in rows}


def _largest_eps(results: dict) -> int:
    return len(results['robustness']['weak']['eps']) - 1


# verdicts: each returns (verdict, one sentence of why)

def verdict_chans_near_full(results: dict) -> Tuple[str, str]:
    acc = _by(results['modes'], 'family', 'depth', 'mode')
    gaps = {f'{f} depth {d}': acc[f, d, 'full']['top1'] - acc[f, d, 'chans']['top1']
            for f, d, m in acc if m == 'full'}
    worst = max(gaps, key=gaps.get)
    median = statistics.median(gaps.values())
    why = (f'Full - Chans is at most {gaps[worst]:.2f} points ({worst}), median {median:.2f}, '
           f'against the {NEAR:g}-point bar for "nearly".')
    if gaps[worst] <= NEAR:
        return HOLDS, why
    return (PARTLY if median <= NEAR or gaps[worst] <= 2 * NEAR else FAILS), why


def verdict_space_far_worse(results: dict) -> Tuple[str, str]:
    acc = _by(results['modes'], 'family', 'depth', 'mode')
    margins = {f'{f} depth {d}': acc[f, d, 'chans']['top1'] - acc[f, d, 'space']['top1']
               for f, d, m in acc if m == 'space'}
    least = min(margins, key=margins.get)
    why = f'Space trails Chans by {min(margins.values()):.2f} to {max(margins.values()):.2f} points (least: {least}); "far" means {FAR:g}+.'
    if margins[least] >= FAR:
        return HOLDS, why
    return (PARTLY if margins[least] > 0 else FAILS), why


def verdict_width(results: dict) -> Tuple[str, str]:
    acc = _by(results['widths'], 'width', 'mode')
    widths = sorted({w for w, _ in acc})
    gaps = [acc[w, 'full']['top1'] - acc[w, 'chans']['top1'] for w in widths]
    why = 'Full - Chans gap by base width ' + ', '.join(
        f'{acc[w, "full"]["base_width"]}: {g:.2f}' for w, g in zip(widths, gaps)) + ' points.'
    if gaps[-1] < gaps[0] and all(b <= a + 0.5 for a, b in zip(gaps, gaps[1:])):
        return HOLDS, why
    return (PARTLY if gaps[-1] < gaps[0] else FAILS), why


def verdict_filters(results: dict) -> Tuple[str, str]:
    top1 = {row['init']: row['top1'] for row in results['filters']}
    order = ('random', 'same', 'box', 'identity')
    found = sorted(order, key=top1.get, reverse=True)
    why = 'Measured order: ' + ' > '.join(f'{i} {top1[i]:.2f}' for i in found) + '.'
    if all(top1[a] > top1[b] for a, b in zip(order, order[1:])):
        return HOLDS, why
    return (PARTLY if found[0] == 'random' and found[-1] == 'identity' else FAILS), why


def verdict_robust(results: dict) -> Tuple[str, str]:
    weak = results['robustness']['weak']
    models = weak['models']
    wins, total = 0, 0
    for full, chans in (('full', 'chans'), ('full, FGSM-trained', 'chans, FGSM-trained')):
        for attack in models[full]['accuracy']:
            for i, eps in enumerate(weak['eps']):
                if eps > 0:
                    total += 1
                    wins += models[chans]['accuracy'][attack][i] >= models[full]['accuracy'][attack][i]
    why = (f'Chans is at least as accurate as Full in {wins} of {total} (attack, eps > 0) comparisons, '
           f'undefended and FGSM-trained.')
    return (HOLDS if wins == total else PARTLY if 2 * wins >= total else FAILS), why


def smoothing_gains(results: dict) -> Dict[str, dict]:
    """Per smoothed model: relative improvement over plain Chans at the largest eps, and clean accuracy change."""
    models, last = results['robustness']['weak']['models'], _largest_eps(results)
    base = models['chans']
    gains = {}
    for label, r in models.items():
        if not label.startswith('chans, sigma'):
            continue
        gains[label] = dict(clean=r['clean_accuracy'] - base['clean_accuracy'], **{
            attack: (r['relative_improvement'][attack][last], r['accuracy'][attack][last] - base['accuracy'][attack][last])
            for attack in r['accuracy']})
    return gains


def verdict_smoothing(results: dict) -> Tuple[str, str]:
    gains = smoothing_gains(results)
    attacks = [a for a in next(iter(gains.values())) if a != 'clean']

    def relative(gain):  # an improvement over 0% accuracy is infinite, a tie at 0% is none
        rel, diff = gain
        return rel if rel is not None else (float('inf') if diff > 0 else 0.0)
    best = max(gains, key=lambda k: min(relative(gains[k][a]) for a in attacks))
    parts = ', '.join(f'{a} {_signed(gains[best][a][0])}%' for a in attacks)
    why = (f'Best smoothing ({best.split(", ")[1]}): {parts} relative at the largest eps, '
           f'clean {gains[best]["clean"]:+.2f} points.')
    if all(relative(gains[best][a]) >= SMOOTHING_GAIN for a in attacks) and gains[best]['clean'] >= -CLEAN_DROP:
        return HOLDS, why
    improves = any(all(relative(g[a]) > 0 for a in attacks) for g in gains.values())
    return (PARTLY if improves else FAILS), why


def verdict_unshuffle(results: dict) -> Tuple[str, str]:
    psnr = results['unshuffle']['psnr']
    baseline = max(results['unshuffle']['baselines'].values())
    gap = psnr['full'] - psnr['chans']
    why = (f'PSNR Full {psnr["full"]:.2f}, Chans {psnr["chans"]:.2f}, Space {psnr["space"]:.2f} dB '
           f'(best trivial baseline {baseline:.2f} dB).')
    if psnr['chans'] <= baseline:
        return FAILS, why
    return (HOLDS if gap <= NEAR_DB else PARTLY if gap <= 3 * NEAR_DB else FAILS), why


def cost_ratios(results: dict) -> Dict[tuple, dict]:
    """Chans and Space step time over Full, per family and memory format."""
    steps = _by(results['cost'], 'family', 'channels_last', 'mode')
    ratios = {}
    for family, channels_last, mode in steps:
        if mode == 'full':
            full = steps[family, channels_last, 'full']['seconds_per_step']
            ratios[family, channels_last] = {m: steps[family, channels_last, m]['seconds_per_step'] / full
                                             for m in MODES}
    return ratios


def verdict_cost(results: dict) -> Tuple[str, str]:
    ratios = cost_ratios(results)
    faster = sum(r['chans'] <= FASTER for r in ratios.values())
    why = 'Chans step time over Full: ' + ', '.join(
        f'{family} {"channels-last" if cl else "NCHW"} {r["chans"]:.2f}x' for (family, cl), r in ratios.items()) + \
        f' ("faster" = {FASTER:g}x or less).'
    return (HOLDS if faster == len(ratios) else PARTLY if faster else FAILS), why


def verdict_coverage(results: dict) -> Tuple[str, str]:
    growth = results['spectral']['growth']
    curves = {k: v for k, v in growth.items() if k != 'filters'}
    monotone = all(all(b >= a for a, b in zip(c, c[1:])) and c[-1] > c[0] for c in curves.values())
    why = 'Coverage as random filters are added: ' + '; '.join(
        f'{k} {c[0]:.2f} (1 filter) to {c[-1]:.2f} ({growth["filters"][-1]} filters)' for k, c in curves.items()) + '.'
    return (HOLDS if monotone else FAILS), why


CLAIMS = [
    ('1', 'Chans reaches nearly the accuracy of Full.', verdict_chans_near_full),
    ('1', 'Space is far worse.', verdict_space_far_worse),
    ('2', 'The Full - Chans gap narrows as the networks get wider (extra-wide ResNets).', verdict_width),
    ('3', 'Different random filters per channel > the same random filters repeated > box filters > identity '
          'filters (catastrophic).', verdict_filters),
    ('4', 'Chans is more robust than Full to FGSM and PGD-2, also when both are FGSM-trained.', verdict_robust),
    ('4', f'Smoothing the frozen random filters raises robustness further (over {SMOOTHING_GAIN:g}% relative at the '
          f'largest eps) without hurting clean accuracy.', verdict_smoothing),
    ('5', 'Chans ConvMixers learn to undo a fixed pixel permutation nearly as well as Full ones (PSNR).',
     verdict_unshuffle),
    ('6', 'Chans trains faster per step than Full.', verdict_cost),
    ('7', 'More random filters cover more of the frequency plane (spectral coverage).', verdict_coverage),
]


def _signed(value) -> str:
    return 'n/a' if value is None else f'{value:+.1f}'


def _modemarkdown_table(rows: List[dict], key: str) -> str:
    acc = _by(rows, key, 'mode')
    groups = list(dict.fromkeys(k for k, _ in acc))
    body = []
    for g in groups:
        full, chans, space = (acc.get((g, m), {}).get('top1') for m in MODES)
        body.append([g, *(_pct(v) for v in (full, chans, space)),
                     _signed(None if chans is None else chans - full),
                     _signed(None if space is None else space - full)])
    return markdown_table([key, 'Full', 'Chans', 'Space', 'Chans - Full', 'Space - Full'], body)


def plot_modes(results: dict, path: Path) -> None:
    acc = _by(results['modes'], 'family', 'depth', 'mode')
    groups = list(dict.fromkeys((f, d) for f, d, _ in acc))
    fig, axes = new_figure(figsize=(7, 4))
    ax = axes[0, 0]
    for i, mode in enumerate(MODES):
        values = [acc[g + (mode,)]['top1'] for g in groups]
        ax.bar([x + (i - 1) * 0.27 for x in range(len(groups))], values, 0.27, label=MODE_NAMES[mode])
    ax.set_xticks(range(len(groups)), [f'{f}\ndepth {d}' for f, d in groups])
    low = min(r['top1'] for r in results['modes'])
    ax.set(ylabel='test top-1 (%)', ylim=(max(0, low - 10), 100), title='Full vs Chans vs Space')
    ax.legend()
    ax.grid(axis='y', alpha=0.3)
    save_figure(fig, path)


def plot_widths(results: dict, path: Path) -> None:
    acc = _by(results['widths'], 'width', 'mode')
    widths = sorted({w for w, _ in acc})
    base = [acc[w, 'full']['base_width'] for w in widths]
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    ax, gap_ax = axes[0]
    for mode in ('full', 'chans'):
        ax.plot(base, [acc[w, mode]['top1'] for w in widths], marker='o', label=MODE_NAMES[mode])
    ax.set(xscale='log', xlabel='base width', ylabel='test top-1 (%)', title='Separable ResNet, width sweep')
    gap_ax.plot(base, [acc[w, 'full']['top1'] - acc[w, 'chans']['top1'] for w in widths], marker='o', color='C3')
    gap_ax.axhline(0, color='grey', linewidth=0.8)
    gap_ax.set(xscale='log', xlabel='base width', ylabel='Full - Chans (points)', title='gap')
    for a in (ax, gap_ax):
        a.set_xticks(base, [str(b) for b in base])
        a.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_filters(results: dict, path: Path) -> None:
    coverage = {b['run']: b['coverage'] for b in results['spectral']['banks']}
    rows = results['filters']
    fig, axes = new_figure(figsize=(6, 4))
    ax = axes[0, 0]
    bars = ax.bar([r['init'] for r in rows], [r['top1'] for r in rows], color='C1')
    for bar, r in zip(bars, rows):
        ax.annotate(f'coverage {coverage[r["run"]]:.2f}', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha='center', va='bottom', fontsize=8)
    ax.set(ylabel='test top-1 (%)', ylim=(0, 100), title='Chans separable ResNet: frozen filter structure')
    ax.grid(axis='y', alpha=0.3)
    save_figure(fig, path)


def plot_cost(results: dict, path: Path) -> None:
    steps = _by(results['cost'], 'family', 'channels_last', 'mode')
    groups = list(dict.fromkeys((f, cl) for f, cl, _ in steps))
    labels = [f'{f}\n{"channels-last" if cl else "NCHW"}' for f, cl in groups]
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    axes = axes[0]
    for i, mode in enumerate(MODES):
        offsets = [x + (i - 1) * 0.27 for x in range(len(groups))]
        axes[0].bar(offsets, [1000 * steps[g + (mode,)]['seconds_per_step'] for g in groups], 0.27,
                    label=MODE_NAMES[mode])
        axes[1].bar(offsets, [1e6 * steps[g + (mode,)]['seconds_per_step'] / steps[g + (mode,)]['trainable_params']
                              for g in groups], 0.27, label=MODE_NAMES[mode])
    axes[0].set(ylabel=f'ms per training step (batch {results["cost"][0]["batch"]})', title='time per step')
    axes[1].set(ylabel='microseconds per step per trainable parameter', yscale='log',
                title='time per step / trainable parameters')
    for ax in axes:
        ax.set_xticks(range(len(groups)), labels, fontsize=8)
        ax.grid(axis='y', alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_spectral(results: dict, path: Path) -> None:
    spectral = results['spectral']
    fig, axes = new_figure(1, 2, figsize=(11, 4))
    ax, scatter = axes[0]
    for name, values in spectral['growth'].items():
        if name != 'filters':
            ax.plot(spectral['growth']['filters'], values, marker='o', label=f'{name} random filters')
    ax.set(xscale='log', xlabel='filters in the bank', ylabel='spectral coverage', ylim=(0, 1.02),
           title='coverage as random filters are added')
    ax.legend()
    for bank in spectral['banks']:
        scatter.scatter(bank['coverage'], bank['top1'])
        scatter.annotate(bank['run'], (bank['coverage'], bank['top1']), fontsize=6, xytext=(3, 3),
                         textcoords='offset points')
    scatter.set(xlabel='mean coverage of the frozen layers', ylabel='test top-1 (%)',
                title='frozen banks of the study: coverage vs accuracy')
    for a in (ax, scatter):
        a.grid(alpha=0.3)
    save_figure(fig, path)


FIGURES = {
    'reproduction_modes.png': plot_modes,
    'reproduction_widths.png': plot_widths,
    'reproduction_filters.png': plot_filters,
    'reproduction_robustness.png': lambda results, path: plot_results(results['robustness']['weak'], path),
    'reproduction_cost.png': plot_cost,
    'reproduction_spectral.png': plot_spectral,
}


def render(results: dict) -> str:
    """The whole report as markdown."""
    recipe, machine = results['recipe'], results['machine']
    verdicts = [(section, claim, *rule(results)) for section, claim, rule in CLAIMS]
    weak, strong = results['robustness']['weak'], results['robustness']['strong']
    out = ['# Reproducing "Rethinking the Role of Spatial Mixing" on Fashion-MNIST', '']
    if results['quick']:
        out += ['> **This is a `--quick` run**: tiny models on the 6,000-image embedded sample, to check that the '
                'study works. Its verdicts are not evidence either way.', '']
    out += [
        'Generated by `python -m study' + (' --quick' if results['quick'] else '') + '` from '
        f'`{RESULTS}` (beside this file); every number below is in that file. Training runs use `train.py`\'s '
        'code and attacks use `eval_robust.py`\'s, as a user would run them.', '',
        f'- Machine: {machine["processor"]}, {machine["cpus"]} CPUs ({machine["threads"]} torch threads), no GPU; '
        f'{machine["platform"]}; Python {machine["python"]}, torch {machine["torch"]}, timm {machine["timm"]}.',
        f'- Started {results["started"]}; total run time {results["wall_time_s"] / 60:.1f} min, of which training '
        f'{results["training_time_s"] / 60:.1f} min over {len(results["runs"])} runs.'
        + (f' {len(results["reused_runs"])} runs were trained by an earlier invocation with the same recipe and reused; '
           f'their training time is included.' if results['reused_runs'] else ''),
        f'- Seed {results["seed"]} for every run (model init, data order, attack starts); the pixel permutation uses '
        f'the same seed.', '',
        '## Verdicts', '',
        markdown_table(['#', 'claim (paper)', 'verdict here', 'why'],
               [[s, c, f'**{v}**', w] for s, c, v, w in verdicts]), '',
        f'Rules: "nearly" = within {NEAR:g} points of top-1 ({NEAR_DB:g} dB of PSNR); "far worse" = {FAR:g}+ points; '
        f'faster = a step-time ratio of {FASTER:g}x or less; '
        f'"partly" = the direction holds but not the size, or it holds for some of the models only. '
        f'The thresholds are constants of `study/report.py`.', '',
        '## Recipe and what differs from the paper', '',
        f'- Data: {"the embedded 6,000/1,000-image sample" if results["quick"] else "full Fashion-MNIST, 60,000 training / 10,000 test images"} '
        f'(28x28 grayscale), Debian\'s official files. The paper uses CIFAR-10/100 and ImageNet '
        '(and MNIST, Fashion-MNIST, CIFAR-10 for un-shuffling).',
        f'- Training: {recipe["epochs"]} epoch(s) per model, `train.py ' + ' '.join(results['train_flags'])
        + '`. The paper trains for many epochs with augmentation; one epoch keeps the whole study within an '
        'hour on two CPU cores, so absolute accuracies are below converged ones.',
        f'- ConvMixer: width {recipe["convmixer_dim"]}, depths {", ".join(map(str, recipe["convmixer_depths"]))}, '
        f'kernel {recipe["convmixer_kernel"]}, patch 2 (paper CIFAR: width 128-256, kernel 8, patch 1).',
        f'- Separable pre-activation ResNet (d = 9): stage widths {"/".join(map(str, recipe["resnet_channels"]))}, '
        f'n = {", ".join(map(str, recipe["resnet_depths"]))} (6n+2 layers); width sweep x'
        + ', x'.join(map(str, recipe['widths'])) + ' (paper: widths 16/32/64 and up, deeper).',
        f'- Robustness: {weak["num_samples"]} fixed test images; FGSM and PGD-2 at eps {", ".join(weak["eps_labels"])}; '
        f'FGSM-trained at eps {recipe["strong_eps"]}; smoothing sigmas {", ".join(f"{s:g}" for s in recipe["sigmas"])}. '
        f'Strong-attack check at eps {recipe["strong_eps"]}: PGD-10 on {strong["num_samples"]} images, '
        f'AutoAttack on {results["robustness"]["autoattack"]["num_samples"]}.',
        f'- Un-shuffling: {results["unshuffle"]["model"]} (paper, large CIFAR model: width 512, depth 16, kernel 7).',
        f'- Timing on this CPU (the paper times GPUs); spectral envelopes on a {results["spectral"]["size"]}x'
        f'{results["spectral"]["size"]} grid (paper 512).', '',
    ]
    out += _section_modes(results, verdicts[0:2])
    out += _section_widths(results, verdicts[2])
    out += _section_filters(results, verdicts[3])
    out += _section_robustness(results, verdicts[4:6])
    out += _section_unshuffle(results, verdicts[6])
    out += _section_cost(results, verdicts[7])
    out += _section_spectral(results, verdicts[8])
    return '\n'.join(out) + '\n'


def _verdict_lines(verdicts) -> List[str]:
    return [f'**Verdict: {v}.** {c} {w}' for _, c, v, w in verdicts] + ['']


def _section_modes(results, verdicts) -> List[str]:
    rows = [dict(r, model=f'{r["family"]} depth {r["depth"]}') for r in results['modes']]
    return ['## 1. Full vs Chans vs Space', '',
            'Paper: Chans reaches nearly the accuracy of Full on CIFAR-10, CIFAR-100 and ImageNet, for ResNets and '
            'ConvMixers; Space is far worse.', '',
            'Test top-1 (%) on the 10,000 test images' if not results['quick'] else 'Test top-1 (%)', '',
            _modemarkdown_table(rows, 'model'), '', '![accuracy by mode](reproduction_modes.png)', '',
            *_verdict_lines(verdicts)]


def _section_widths(results, verdict) -> List[str]:
    acc = _by(results['widths'], 'width', 'mode')
    widths = sorted({w for w, _ in acc})
    body = [[acc[w, 'full']['base_width'], _pct(acc[w, 'full']['top1']), _pct(acc[w, 'chans']['top1']),
             f'{acc[w, "full"]["top1"] - acc[w, "chans"]["top1"]:.2f}', acc[w, 'chans']['trainable_params']]
            for w in widths]
    return ['## 2. Width sweep', '',
            'Paper: with extra-wide ResNets the gap between Full and Chans shrinks.', '',
            markdown_table(['base width', 'Full', 'Chans', 'Full - Chans', 'Chans trainable parameters'], body), '',
            '![width sweep](reproduction_widths.png)', '', *_verdict_lines([verdict])]


def _section_filters(results, verdict) -> List[str]:
    coverage = {b['run']: b['coverage'] for b in results['spectral']['banks']}
    body = [[r['init'], _pct(r['top1']), f'{coverage[r["run"]]:.3f}'] for r in results['filters']]
    return ['## 3. Filter structure', '',
            'Paper (CIFAR-100, depth-2 separable ResNet, Chans): different random filters per channel > the same 9 '
            'random kernels repeated for every input channel > box filters > identity filters (catastrophic).', '',
            markdown_table(['frozen spatial filters', 'test top-1 (%)', 'spectral coverage'], body), '',
            '![filter structure](reproduction_filters.png)', '', *_verdict_lines([verdict])]


def _accuracymarkdown_table(evaluation: dict) -> str:
    """One row per model: clean accuracy, then every attack at every eps of the evaluation."""
    columns = [(attack, i) for attack in next(iter(evaluation['models'].values()))['accuracy']
               for i in range(len(evaluation['eps']))]
    header = ['model', 'clean'] + [f'{attack} at {evaluation["eps_labels"][i]}' for attack, i in columns]
    body = [[label, _pct(r['clean_accuracy']), *(_pct(r['accuracy'][a][i]) for a, i in columns)]
            for label, r in evaluation['models'].items()]
    return markdown_table(header, body)


def _section_robustness(results, verdicts) -> List[str]:
    robustness = results['robustness']
    weak, strong, autoattack = robustness['weak'], robustness['strong'], robustness['autoattack']
    header = ['model', 'attack', 'clean'] + [f'eps {e}' for e in weak['eps_labels']]
    body = [[label, attack, _pct(r['clean_accuracy']), *(_pct(v) for v in values)]
            for label, r in weak['models'].items() for attack, values in r['accuracy'].items()]
    gains = smoothing_gains(results)
    attacks = [a for a in next(iter(gains.values())) if a != 'clean']
    gain_rows = [[label, _signed(g['clean']), *(f'{_signed(g[a][0])}% ({g[a][1]:+.2f} points)' for a in attacks)]
                 for label, g in gains.items()]
    warnings = strong['warnings'] + autoattack['warnings']
    weak_warnings = [f'- {w}' for w in weak['warnings']]
    return ['## 4. Robustness', '',
            'Paper: Chans is more robust than Full to FGSM and PGD-2, and stays so with FGSM-defended training; '
            f'smoothing the frozen random filters raises robustness further, over {SMOOTHING_GAIN:g}% relative at the '
            'largest eps, without hurting clean accuracy.', '',
            f'{robustness["model"]}, top-1 (%) on {weak["num_samples"]} fixed test images, attacks in [0, 1] pixel '
            'space (torchattacks, normalization inside the model, eval mode):', '',
            markdown_table(header, body), '',
            *([f'eval_robust\'s masking check on these weak attacks ({len(weak_warnings)} warnings; PGD-2 starts at a '
               'random point of the ball, so it can miss a few images that FGSM finds; the strong-attack check below '
               'tests for masking directly):', '',
               *weak_warnings, ''] if weak_warnings else []),
            f'Smoothing, against unsmoothed Chans at the largest eps ({weak["eps_labels"][-1]}): relative improvement '
            '(absolute change in points).', '',
            markdown_table(['model', 'clean (points)', *attacks], gain_rows), '',
            '![robustness](reproduction_robustness.png)', '',
            '### Strong-attack check', '',
            'Weak attacks can overstate robustness when gradients are masked. Two signs are checked: a 10-step PGD '
            'that does worse than one FGSM step, and AutoAttack landing far below PGD-10.', '',
            f'FGSM and PGD-10 on the same {strong["num_samples"]} images:', '', _accuracymarkdown_table(strong), '',
            f'PGD-10 and AutoAttack (standard) on {autoattack["num_samples"]} images (AutoAttack costs about a second per '
            'image on this CPU):', '', _accuracymarkdown_table(autoattack), '',
            *([f'Gradient-masking warnings ({len(warnings)}):', '', *(f'- {w}' for w in warnings)] if warnings else
              ['No gradient-masking warning: PGD-10 is at least as strong as FGSM, and AutoAttack is within '
               f'{robustness["masking_gap"]:g} points of PGD-10, for every model checked.']), '',
            *_verdict_lines(verdicts)]


def _section_unshuffle(results, verdict) -> List[str]:
    u = results['unshuffle']
    body = [[MODE_NAMES[m], f'{u["psnr"][m]:.2f}'] for m in MODES]
    body += [[f'{name} (no learning)', f'{value:.2f}'] for name, value in u['baselines'].items()]
    return ['## 5. Pixel un-shuffling', '',
            'Paper: Chans ConvMixers learn to undo a fixed random pixel permutation nearly as well as Full ones '
            '(MNIST, Fashion-MNIST, CIFAR-10; PSNR grows with depth, width and kernel size).', '',
            f'{u["model"]}, mean test PSNR (dB):', '',
            markdown_table(['model', 'PSNR (dB)'], body), '',
            f'![reconstructions]({u["grid"]})', '', *_verdict_lines([verdict])]


def _section_cost(results, verdict) -> List[str]:
    ratios = cost_ratios(results)
    body = [[row['family'] + f' depth {row["depth"]}', 'channels-last' if row['channels_last'] else 'NCHW',
             MODE_NAMES[row['mode']], f'{1000 * row["seconds_per_step"]:.1f}',
             f'{ratios[row["family"], row["channels_last"]][row["mode"]]:.2f}x', row['trainable_params'],
             f'{1e6 * row["seconds_per_step"] / row["trainable_params"]:.2f}']
            for row in results['cost']]
    return ['## 6. Training cost', '',
            'Paper: Chans trains faster per step (no gradients for the frozen spatial filters), and far faster per '
            'trainable parameter.', '',
            f'One SGD step at batch {results["cost"][0]["batch"]} on 28x28 images, median of interleaved steps in '
            'one process:', '',
            markdown_table(['model', 'memory format', 'mode', 'ms/step', 'vs Full', 'trainable parameters',
                    'us/step per parameter'], body), '',
            '![training cost](reproduction_cost.png)', '', *_verdict_lines([verdict])]


def _section_spectral(results, verdict) -> List[str]:
    spectral = results['spectral']
    body = [[b['run'], b['layers'], f'{b["coverage"]:.3f}', f'{b["min_coverage"]:.3f}', _pct(b['top1'])]
            for b in spectral['banks']]
    growth = spectral['growth']
    growth_body = [[n, *(f'{growth[k][i]:.3f}' for k in growth if k != 'filters')]
                   for i, n in enumerate(growth['filters'])]
    return ['## 7. Spectral coverage of the frozen banks', '',
            'Paper (Sec. 3.1): the spectral envelope of a bank (each filter zero-padded, |FFT2|, maximum over the '
            'bank) covers more of the frequency plane as random filters are added; diverse random banks cover it, '
            'structured ones do not.', '',
            f'Coverage = fraction of the plane where the envelope of unit-norm filters reaches 1 '
            f'(their mean squared gain), on a {spectral["size"]}x{spectral["size"]} grid.', '',
            markdown_table(['filters', *(f'{k} random' for k in growth if k != 'filters')], growth_body), '',
            'The frozen banks of the study\'s Chans models, next to their test accuracy:', '',
            markdown_table(['run', 'frozen layers', 'mean coverage', 'lowest layer', 'top-1 (%)'], body), '',
            '![spectral coverage](reproduction_spectral.png)', '',
            'Coverage is necessary, not sufficient: an identity filter passes every frequency (coverage 1) yet '
            'mixes no space at all, so coverage alone does not rank the banks by accuracy.', '',
            *_verdict_lines([verdict])]


def write_report(results: dict, folder: Path, drawn: Optional[Dict[str, Path]] = None) -> List[Path]:
    """reproduction.md, .json and the figures, all or none; the report path first.

    `drawn` maps figure names to files the study drew itself (they need models, not just the JSON); a figure
    missing from it must already be in `folder`, as when re-rendering. Everything is written to a staging
    folder first and moved in only once all of it exists, so a failure leaves the previous report whole.
    """
    drawn = drawn or {}
    grid = results['unshuffle']['grid']
    if grid not in drawn and not (folder / grid).is_file():
        raise UsageError(f'{folder / grid} not found: rerun the study to draw the reconstructions')
    markdown = render(results)
    with staging_folder(folder) as staging:
        (staging / REPORT).write_text(markdown)
        (staging / RESULTS).write_text(json.dumps(results, indent=2) + '\n')
        for name, plot in FIGURES.items():
            plot(results, staging / name)
        for name, source in drawn.items():
            shutil.copyfile(source, staging / name)
        names = [REPORT, RESULTS, *FIGURES, *drawn]
        for name in names:
            os.replace(staging / name, folder / name)
    return [folder / name for name in names] + ([] if grid in drawn else [folder / grid])
