""" The reproduction report: verdicts with their intervals, tables and figures, rendered from the study's JSON alone

Nothing here measures anything: every number comes from `reproduction.json` (written by `study`, one entry per
part), so the report can be re-rendered (`python -m study --render-only`) and checked against the data it shows.
Each claim is judged by the rules of `study.stats` on paired 95% intervals; a claim whose parts have not run yet
is listed as such. This module assembles the report; each part's section and figures are its own (`study.parts`).
"""
import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from scipy.stats import t as student_t

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.outputs import staging_folder
from timm_frozenmix.io.reporting import markdown_table, replace_between_markers

from .claims import Claim, Comparison
from .parts import CLAIMS, PARTS
from .rules import PREREGISTRATION, rules
from .sections import recipe_of
from .stats import FAILS, HOLDS, OPEN, PARTLY

RESULTS, REPORT = 'reproduction.json', 'reproduction.md'


def judge(results: dict) -> List[Tuple[Claim, Optional[str], List[Comparison]]]:
    """Every claim with its verdict and comparisons; verdict None when a part it needs has not run."""
    out = []
    for claim in CLAIMS:
        if not claim.ready(results['parts']):
            out.append((claim, None, []))
            continue
        comparisons = claim.corrected(claim.compare(results))
        out.append((claim, claim.judge(comparisons), comparisons))
    return out


# README: its summary is this text, checked by a test

def readme_summary(results: dict) -> str:
    """The README's summary of the verdicts: one line per verdict, each claim with its deciding intervals."""
    lines = []
    judged = judge(results)
    for verdict in (HOLDS, PARTLY, FAILS, OPEN):
        claims = [f'{claim.text}{_budget(results, claim)}{_stale(results, claim)} '
                  f'({"; ".join(_short(c) for c in comparisons)})' for claim, v, comparisons in judged if v == verdict]
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


def _budget(results: dict, claim: Claim) -> str:
    """The training its verdict read, in a few words (' after 3 epochs on train[:10000], 3 seeds'); '' for a
    claim on no training run. A claim judged at the longest length reads that length only."""
    runs = [run for part in claim.needs if part in results['parts'] for run in results['parts'][part]['runs'].values()]
    if not runs:
        return ''
    if claim.at_longest:
        longest = max(run['settings']['epochs'] for run in runs)
        runs = [run for run in runs if run['settings']['epochs'] == longest]
    budgets = sorted({(run['settings']['epochs'], run['settings']['train_split']) for run in runs})
    # the update count follows from epochs and split (the recipe fixes the batch); runs reused from before it
    # was recorded take it from a run that recorded it
    steps = {(run['settings']['epochs'], run['settings']['train_split']): run['optimizer_steps'] for run in runs
             if run.get('optimizer_steps')}
    seeds = len({run['seed'] for run in runs})
    return ' after ' + ' or '.join(f'{epochs} epochs on `{split}`' + (
        f' ({steps[epochs, split]:,} updates)' if (epochs, split) in steps else '') for epochs, split in budgets) \
        + f', {seeds} seeds'


def _stale(results: dict, claim: Claim) -> str:
    """', on stale runs of widths' when a part the verdict reads ran with an earlier recipe; '' otherwise."""
    stale = [part for part in claim.needs if part in results.get('stale', ())]
    return f', on stale runs of {", ".join(stale)}' if stale else ''


def _short(c: Comparison) -> str:
    """'config: +0.94 dB [+0.01, +1.87]': one decimal (two for ratios), up to four where a bound would round onto
    no difference (0, or 1 for a ratio) without being it, so that the summary shows which side of it the bound
    lies on (a NaN bound, n < 2, never rounds onto anything)."""
    none, digits = (1.0, 2) if c.unit == 'x' else (0.0, 1)
    bounds = [b for b in (c.interval.low, c.interval.high) if b != none]
    while digits < 4 and any(round(b, digits) == none for b in bounds):
        digits += 1
    return f'{c.config}: {c.interval.text(c.unit, digits)}'


def figures(results: dict) -> Dict[str, Callable]:
    """The figures whose parts have run."""
    return {name: plot for part in PARTS.values() if part.shown(results) for name, plot in part.figures.items()}


# the report

def render(results: dict) -> str:
    """The whole report as markdown."""
    parts = results['parts']
    if not parts:
        return '# Reproducing "Rethinking the Role of Spatial Mixing" on Fashion-MNIST\n\nNo part has run yet.\n'
    recipe, machine = recipe_of(results), next(iter(parts.values()))['machine']
    registered = rules()
    nearly = registered['nearly']
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
        f'- Time: {sum(times.values()) / 60:.1f} min for the {len(parts)} of {len(PARTS)} parts run so far ('
        + ', '.join(f'{name} {times[name] / 60:.1f}' for name in PARTS if name in times)
        + ' min). A part counts the training time each of its runs took when it was trained (a run shared by '
        'two parts counts in the first), plus its own evaluation. ' + time_budget(
            times, len(parts) == len(PARTS), part_shares(results)),
        *([f'- **Stale:** {", ".join(results["stale"])}: run with an earlier recipe (recipe fields they read have '
           'changed since; see the registered changes). Their numbers are shown as measured; `python -m study` '
           'reruns them.'] if results.get('stale') else []),
        f'- Seeds {", ".join(map(str, recipe["seeds"]))} for every configuration. One seed fixes the model '
        'initialization and the data order, so the models of one seed are paired; the attacks on the models of one '
        'seed use the same test images.', '',
        '## Verdicts', '',
        'Every verdict reads a paired 95% t interval over the seeds (over interleaved timing rounds for speed) '
        'against the claim\'s bar. Whether Chans is "nearly" as accurate as Full follows the rule registered in '
        f'`study/{PREREGISTRATION.name}` (printed below): at the longest training length, within '
        f'{nearly["absolute_points"]:g} points of top-1 and an error ratio below {nearly["error_ratio"]:g}. '
        f'"Far worse" is read at the same length: more than {registered["far_worse"]["points"]:g} points worse. '
        'In un-shuffling, "nearly" means within '
        f'{registered["unshuffle"]["psnr_db"]:g} dB of PSNR, and smoothing must gain more than '
        f'{registered["smoothing"]["relative_gain"] - 1:.0%} relative (the paper\'s bar). A '
        'difference whose interval contains 0 is never a ranking: such a claim is "not established". Over several '
        'configurations, the verdict is "partly" when some hold and others do not. A "does not hold here" needs '
        'the direction that fails it to be significant after Holm\'s correction over the comparisons of its claim '
        '(one-sided t tests, family-wise 5%); "holds" and "partly" read each 95% interval on its own, so with '
        'several comparisons one of them may hold by chance.', '',
        markdown_table(['claim (paper)', 'verdict here', 'rule', 'intervals'],
                       [[claim.text, f'**{verdict}**{_stale(results, claim)}' if verdict else 'not run yet', claim.bar,
                         '; '.join(_short(c) for c in comparisons)] for claim, verdict, comparisons in judged]), '',
        *_setting(results, recipe), '',
    ]
    verdicts = {claim.key: (claim, verdict, comparisons) for claim, verdict, comparisons in judged}
    for part in PARTS.values():
        if part.section and part.shown(results):
            out += part.section(results, verdicts)
    out += _scope(results)
    out += ['## Rules registered in advance', '',
            f'`study/{PREREGISTRATION.name}` as it stands; a changed rule is appended to its `changes`, with the '
            'verdicts before and after.', '', '```yaml', PREREGISTRATION.read_text(encoding='utf-8').rstrip(), '```',
            '']
    return '\n'.join(out) + '\n'


def _setting(results: dict, recipe: dict) -> List[str]:
    """The data, training and models every part shares, then what each part sets on its own."""
    any_part = next(iter(results['parts'].values()))
    return [
        '## Setting, and what differs from the paper', '',
        f'- Data: {recipe["dataset"]} (28x28 grayscale). Each model outside the convergence parts (section 2) '
        f'trains on `{recipe["train_split"]}` for '
        f'{recipe["epochs"]} epochs and keeps the epoch with the best accuracy on `{recipe["val_split"]}`, held out '
        'from the training images; the test set is read once per model, at the end. The paper uses CIFAR-10/100 '
        'and ImageNet and trains far longer; these budgets fit a small CPU. Section 2 measures how accuracy and '
        'the Full - Chans gap move as training grows; a gap that closes only with longer training stays open here.',
        f'- Training flags shared by every run: `train.py {" ".join(any_part["train_flags"])}`.',
        f'- ConvMixer: width {recipe["convmixer_dim"]}, depth {recipe["convmixer_depth"]}, kernel '
        f'{recipe["convmixer_kernel"]}, patch 2 (paper CIFAR: width 128-256, kernel 8, patch 1).',
        f'- Separable pre-activation ResNets (d = 9): stage widths b/2b/4b with b = {recipe["resnet_base"]} as in '
        f'the paper, n = {", ".join(map(str, recipe["resnet_depths"]))} (6n+2 layers); the width sweep takes b = '
        f'{", ".join(map(str, recipe["base_widths"]))} with all three modes; the filter ablation uses n = '
        f'{recipe["filter_depth"]} (the paper\'s depth 2). "Dense" is the same network with dense convolutions.',
        # each part's setting from the recipe it ran with (a stale part's differs from the others')
        *(line for part in PARTS.values() if part.setting and part.shown(results)
          for line in part.setting(part.first_shown(results)['recipe'])),
    ]


def _scope(results: dict) -> List[str]:
    seeds = len(recipe_of(results)['seeds'])
    factor = student_t.ppf(0.975, seeds - 1) if seeds > 1 else math.inf
    runs = {name: run for part in results['parts'].values() for name, run in part['runs'].items()}
    budgets: Dict[Tuple[str, int], List[dict]] = {}
    for run in runs.values():
        budgets.setdefault((run['settings']['train_split'], run['settings']['epochs']), []).append(run)
    lines = []
    for (split, epochs), group in sorted(budgets.items(), key=lambda item: (item[0][1], item[0][0])):
        last = sum(run['best_epoch'] == len(run['val_curve']) - 1 for run in group)
        lines.append(f'- {len(group)} runs of {epochs} epochs on `{split}`: validation chose the last epoch for '
                     f'{last}' + (' (every one may still have been improving).' if last == len(group) else '.'))
    return ['## What this does and does not show', '',
            'How often validation chose the last epoch, by training budget (a model whose last epoch is its best '
            'may still have been improving when the budget ended):', '', *lines, '',
            'It shows, for small models trained on Fashion-MNIST with a few seeds, which of the paper\'s '
            'differences are larger than the seed-to-seed noise of this setting, and which are not. It does not show '
            'what happens at ImageNet scale or on a GPU: a claim that is "not established" here may hold with more '
            'seeds or longer training, and one that fails here may hold in the paper\'s setting. '
            f'{seeds} seeds give wide t intervals (the t factor is {factor:.1f}), so only large effects are '
            'established. The robustness numbers come from attacks of a fixed budget on a subset of the test '
            'images; AutoAttack is a check for gradient masking, not a verdict.', '']


def time_budget(times: Dict[str, float], complete: bool, shares: Dict[str, Optional[float]]) -> str:
    """The registered time budget (`budget` in the pre-registration) against the part times `times` (seconds)
    and `shares`, each part's `others_cpu_share` (None where the part has no record of it)."""
    budget = rules()['budget']
    total, part, alone = budget['total_minutes'], budget['part_minutes'], budget['alone_others_cpu_share']
    minutes = sum(times.values()) / 60
    over = ([] if minutes <= total else [f'{minutes:.1f} min in total']) + [
        f'{name} {seconds / 60:.1f} min' for name, seconds in times.items() if seconds / 60 > part] + [
        f'{name} not run alone (other processes used {share:.1%} of the CPU time)'
        for name, share in shares.items() if share is not None and share > alone]
    verdict = 'over it: ' + '; '.join(over) if over else 'within it'
    unrecorded = [name for name, share in shares.items() if share is None]
    return (f'Budget (registered): {total:g} min in total and {part:g} min per part, each part run alone on the '
            f'machine (other processes at most {alone:.0%} of the CPU time); '
            f'{"the study is" if complete else "the parts so far are"} {verdict}.'
            + (f' Not recorded whether it ran alone: {", ".join(unrecorded)}.' if unrecorded else ''))


def counted_runs(results: dict) -> Dict[str, List[str]]:
    """Per part that has run, the runs whose training counts in its time: those it uses that no earlier part used."""
    counts, counted = {}, set()
    for name in PARTS:
        if name in results['parts']:
            counts[name] = [run for run in results['parts'][name]['runs'] if run not in counted]
            counted.update(counts[name])
    return counts


def part_times(results: dict) -> Dict[str, float]:
    """Seconds per part: the training time of its counted runs (`counted_runs`), plus the time it spent on
    anything but training when it ran."""
    parts = results['parts']
    return {name: sum(parts[name]['runs'][run]['wall_time_s'] for run in runs)
            + parts[name]['wall_time_s'] - parts[name]['training_s'] for name, runs in counted_runs(results).items()}


def part_shares(results: dict) -> Dict[str, Optional[float]]:
    """Per part, the largest `others_cpu_share` over the time it counts: its own run and its counted runs, which
    an earlier invocation may have trained; None where any of them has no record."""
    parts, shares = results['parts'], {}
    for name, runs in counted_runs(results).items():
        recorded = [parts[name].get('others_cpu_share')] + [parts[name]['runs'][run].get('others_cpu_share')
                                                              for run in runs]
        shares[name] = None if None in recorded else max(recorded)
    return shares


def write_report(results: dict, folder: Path, drawn: Optional[Dict[str, Path]] = None) -> List[Path]:
    """reproduction.md, .json and the figures of the parts that have run, all or none; the report path first.

    `drawn` maps figure names to files the study drew itself (they need models, not just the JSON); a figure
    missing from it must already be in `folder`, as when re-rendering. Everything is written to a staging
    folder first and moved in only once all of it exists, so a failure leaves the previous report whole.
    """
    drawn = drawn or {}
    kept = []  # figures an earlier invocation drew from models: they stay as they are
    for part in PARTS.values():
        if part.name not in results['parts']:
            continue
        for name, what in part.drawn.items():
            if name not in drawn and not (folder / name).is_file():
                raise UsageError(f'{folder / name} not found: rerun the study\'s {part.name} part to draw {what}')
        kept += [name for name in part.drawn if name not in drawn]
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
    return [folder / name for name in names + kept]
