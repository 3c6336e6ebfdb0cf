""" Parts `convergence_convmixer` and `convergence_resnet`: Full and Chans trained for four lengths; part
`convergence_space`: Space beside Chans at the longest

The short runs of part `modes` stop after a few hundred updates, where the Full-Chans gap tracks the error rate;
the "nearly" verdict reads the longest length here instead, under the margins of `preregistration.yaml`. Every
length is a run of its own (its cosine schedule ends where it stops), three paired seeds each, on a training
split sized so that an epoch is a round number of optimizer updates; each run records its update count. The
two families are two parts so that each runs (and is committed) within an hour. The "far worse" verdict on Space
reads the longest length too, in a third part that trains Space there for both families.
"""
from pathlib import Path
from typing import Dict, List, Tuple

from timm_frozenmix.io.reporting import markdown_table, new_figure, save_figure

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import config_label, family_model
from ..rules import rules
from ..runs import Study
from ..sections import Verdicts, mean_cell, verdict_blocks
from ..stats import FAILS, HOLDS, OPEN, PARTLY, Interval, paired, ratio

MODES = ('full', 'chans')
FAMILIES = {'convergence_convmixer': 'ConvMixer', 'convergence_resnet': 'SepResNet'}
SPACE_PART_NAME = 'convergence_space'
FIGURE = 'reproduction_convergence.png'


def _train(study: Study, part: str, families, modes, lengths) -> Dict[str, Tuple[str, List[dict]]]:
    """Per family: its configuration label and one row per (length, mode), each with its update count."""
    r = study.recipe
    models = {(family, mode): family_model(family, r, mode) for family in families for mode in modes}
    names = {(family, epochs, mode): f'convergence-{models[family, mode][0]}-e{epochs}'
             for family in families for epochs in lengths for mode in modes}
    jobs = [job for (family, epochs, mode), name in names.items()
            for job in study.seeds(name, *models[family, mode][1:], train_split=r.convergence_train_split,
                                   epochs=epochs)]
    runs = study.train_all(part, jobs)
    depth = {'ConvMixer': r.convmixer_depth, 'SepResNet': r.resnet_depths[0]}
    out = {family: (config_label(family, depth[family], r.resnet_base), []) for family in families}
    for (family, epochs, mode), name in names.items():
        steps = {runs[f'{name}-s{seed}']['optimizer_steps'] for seed in r.seeds}
        out[family][1].append(dict(mode=mode, epochs=epochs, optimizer_steps=steps.pop(), **study.row(runs, name)))
    return out


def _measure(part: str):
    def measure(study: Study) -> dict:
        r = study.recipe
        (config, rows), = _train(study, part, [FAMILIES[part]], MODES, r.convergence_epochs).values()
        return dict(family=FAMILIES[part], config=config, train_split=r.convergence_train_split, rows=rows)
    return measure


def measure_space(study: Study) -> dict:
    """Space beside Chans at the longest length, both families (the Chans runs are the parts' above)."""
    r = study.recipe
    trained = _train(study, SPACE_PART_NAME, FAMILIES.values(), ('chans', 'space'), [max(r.convergence_epochs)])
    return dict(train_split=r.convergence_train_split,
                families={family: dict(config=config, rows=rows) for family, (config, rows) in trained.items()})


def _by_length(part: dict) -> Dict[int, Dict[str, dict]]:
    """Rows by optimizer steps, then by mode, shortest first."""
    lengths: Dict[int, Dict[str, dict]] = {}
    for row in part['rows']:
        lengths.setdefault(row['optimizer_steps'], {})[row['mode']] = row
    return dict(sorted(lengths.items()))


def error_ratio(rows: Dict[str, dict]) -> Interval:
    """Chans / Full test error (100 - top-1) over the paired seeds, as a geometric mean with its interval."""
    full, chans = rows['full']['test'], rows['chans']['test']
    seeds = [s for s in full if s in chans]
    return ratio([100.0 - chans[s] for s in seeds], [100.0 - full[s] for s in seeds])


def compare_nearly(results: dict) -> List[Comparison]:
    """At the longest length of each family: Full - Chans against the absolute margin, and the Chans/Full error
    ratio against the relative one (`preregistration.yaml`, `nearly`)."""
    nearly = rules()['nearly']
    out = []
    for name in FAMILIES:
        part = results['parts'][name]
        steps, rows = list(_by_length(part).items())[-1]
        config = f'{part["config"]}, {steps:,} updates'
        out.append(compared(config, 'Full - Chans, test top-1', paired(rows['full']['test'], rows['chans']['test']),
                            ' points', 'within', nearly['absolute_points']))
        out.append(compared(config, 'Chans / Full test error', error_ratio(rows), 'x', 'below_ratio',
                            nearly['error_ratio']))
    return out


def nearly_verdict(comparisons: List[Comparison]) -> str:
    verdicts = [c.verdict for c in comparisons]
    if FAILS in verdicts:
        return FAILS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return PARTLY if HOLDS in verdicts else OPEN


CHANS_NEAR_FULL = Claim(
    'chans_near_full', 'Chans reaches nearly the accuracy of Full', tuple(FAMILIES), compare_nearly,
    'at the longest training length, for both families, Full - Chans lies below {absolute_points:g} points and the '
    'Chans/Full error ratio below {error_ratio:g} (holds); does not hold when one lies above its margin '
    '(Holm-corrected over its four comparisons); partly when some hold'.format(**rules()['nearly']),
    verdict=nearly_verdict, needs_all=True, at_longest=True)


def compare_far_worse(results: dict) -> List[Comparison]:
    """Per family at the longest length: Chans - Space test top-1 against the registered margin
    (`preregistration.yaml`, `far_worse`)."""
    margin = rules()['far_worse']['points']
    out = []
    for family in results['parts'][SPACE_PART_NAME]['families'].values():
        (steps, rows), = _by_length(family).items()
        out.append(compared(f'{family["config"]}, {steps:,} updates', 'Chans - Space, test top-1',
                            paired(rows['chans']['test'], rows['space']['test']), ' points', 'exceeds', margin))
    return out


SPACE_FAR_WORSE = Claim(
    'space_far_worse', 'Space is far worse than Chans', (SPACE_PART_NAME,), compare_far_worse,
    f'at the longest training length, holds when Chans - Space lies above {rules()["far_worse"]["points"]:g} points '
    'for both families; partly when above 0 but below that margin (or in one family only); fails when below the '
    'margin with 0 inside or below', at_longest=True)


def space_section(results: dict, verdicts: Verdicts) -> List[str]:
    """Space beside Chans at the longest length, and the verdict that reads them."""
    header = ['configuration', 'updates', 'Chans test top-1 (%)', 'Space test top-1 (%)', 'Chans - Space (points)',
              'epoch validation chose, per seed (Chans; Space)']
    body = []
    for family in results['parts'][SPACE_PART_NAME]['families'].values():
        (steps, rows), = _by_length(family).items()
        chans, space = rows['chans'], rows['space']
        body.append([family['config'], f'{steps:,}', mean_cell(chans['test']), mean_cell(space['test']),
                     paired(chans['test'], space['test']).text(),
                     f'{", ".join(str(e + 1) for e in chans["best_epoch"].values())}; '
                     f'{", ".join(str(e + 1) for e in space["best_epoch"].values())} of {space["epochs"]}'])
    return ['### Space at the longest length', '',
            'Space trained as long as the longest runs above, beside the same Chans runs (test top-1, %):', '',
            markdown_table(header, body), '', *verdict_blocks(verdicts, SPACE_FAR_WORSE.key)]


def section(results: dict, verdicts: Verdicts) -> List[str]:
    nearly = rules()['nearly']
    ran = next(results['parts'][name] for name in FAMILIES if name in results['parts'])
    out = ['## 2. Accuracy against training length: Full and Chans', '',
           f'The short runs above stop after a few hundred updates. Here Full and Chans train for '
           f'{len(ran["recipe"]["convergence_epochs"])} lengths, each a run of its own whose cosine schedule ends '
           f'where it stops, with {len(ran["recipe"]["seeds"])} paired seeds each, on `{ran["train_split"]}`. The '
           f'verdict on "nearly" reads the longest length, against the margins registered before these runs '
           f'({nearly["absolute_points"]:g} points, error ratio {nearly["error_ratio"]:g}).', '']
    header = ['configuration', 'updates', 'Full test top-1 (%)', 'Chans test top-1 (%)', 'Full - Chans (points)',
              'Chans / Full error', 'epoch validation chose, per seed (Full; Chans)']
    body = []
    for name in FAMILIES:
        if name not in results['parts']:
            continue
        part = results['parts'][name]
        for steps, rows in _by_length(part).items():
            full, chans = rows['full'], rows['chans']
            body.append([part['config'], f'{steps:,}', mean_cell(full['test']), mean_cell(chans['test']),
                         paired(full['test'], chans['test']).text(), error_ratio(rows).text('x'),
                         f'{", ".join(str(e + 1) for e in full["best_epoch"].values())}; '
                         f'{", ".join(str(e + 1) for e in chans["best_epoch"].values())} of {full["epochs"]}'])
    out += [markdown_table(header, body), '', f'![Full - Chans against training length]({FIGURE})', '']
    return out + verdict_blocks(verdicts, CHANS_NEAR_FULL.key)


def plot(results: dict, path: Path) -> None:
    nearly = rules()['nearly']
    fig, axes = new_figure(1, 2, figsize=(10, 4))
    steps = []
    for shift, name in zip((0.97, 1.03), FAMILIES):  # side by side, so that both families' intervals show
        if name not in results['parts']:
            continue
        part = results['parts'][name]
        lengths = _by_length(part)
        steps = list(lengths)
        gaps = [paired(rows['full']['test'], rows['chans']['test']) for rows in lengths.values()]
        ratios = [error_ratio(rows) for rows in lengths.values()]
        for ax, ivs in zip(axes[0], (gaps, ratios)):
            ax.errorbar([x * shift for x in steps], [iv.mean for iv in ivs], capsize=3, marker='o',
                        label=part['config'], yerr=[[iv.mean - iv.low for iv in ivs], [iv.high - iv.mean for iv in ivs]])
    for ax, bar, neutral, title in ((axes[0][0], nearly['absolute_points'], 0.0, 'Full - Chans, test top-1 (points)'),
                                    (axes[0][1], nearly['error_ratio'], 1.0, 'Chans / Full, test error')):
        ax.axhline(bar, color='red', linestyle='--', linewidth=1, label='registered margin')
        ax.axhline(neutral, color='gray', linewidth=0.8)
        ax.set_xscale('log')
        ax.set_xticks(steps, [f'{x:,}' for x in steps])
        ax.minorticks_off()
        ax.set_xlabel('optimizer updates (log scale)')
        ax.set_title(f'{title}: mean, 95% interval', fontsize=9)
        ax.legend(fontsize=8)
    save_figure(fig, path)


CONVMIXER_PART = Part('convergence_convmixer', _measure('convergence_convmixer'), shows=tuple(FAMILIES),
                      section=section, figures={FIGURE: plot})
RESNET_PART = Part('convergence_resnet', _measure('convergence_resnet'))
SPACE_PART = Part(SPACE_PART_NAME, measure_space, section=space_section)
