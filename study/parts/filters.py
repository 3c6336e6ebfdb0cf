""" Part `filters`: the structure of the frozen filters, and the spectral coverage of each kind of bank

The paper ranks four kinds of frozen filters by accuracy and explains the ranking, in part, by spectral coverage
(Sec. 3.1); this part judges the ranking and shows the coverage of each bank beside it.
"""
from pathlib import Path
from typing import Dict, List

import torch

from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.loading import model_from_checkpoint
from timm_frozenmix.io.reporting import markdown_table, new_figure, save_figure
from timm_frozenmix.layers.filters import spectral_coverage, spectral_envelope
from timm_frozenmix.evaluation.spectral import FILTER_COUNTS, coverage_growth, spatial_banks

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import resnet_kwargs, resnet_model, resnet_name
from ..runs import Study
from ..sections import Verdicts, mean_cell, verdict_blocks
from ..stats import paired, t_interval

FILTER_INITS = ('random', 'same', 'box', 'identity')
FILTERS_FIGURE = 'reproduction_filters.png'


def measure(study: Study) -> dict:
    r = study.recipe
    n = r.filter_depth
    names = {init: resnet_name(n, r.resnet_base, 'chans') + ('' if init == 'random' else f'-{init}')
             for init in FILTER_INITS}
    extra = {init: {} if init == 'random' else dict(spatial_init=init) for init in FILTER_INITS}
    runs = study.train_all('filters', [
        job for init in FILTER_INITS for job in study.seeds(
            names[init], resnet_model('chans'), resnet_kwargs(n, r.resnet_base), **extra[init])])
    rows = [dict(init=init, **study.row(runs, names[init]),
                 coverage=frozen_bank_coverage(study, runs, names[init])) for init in FILTER_INITS]
    torch.manual_seed(r.seeds[0])
    growth = {f'{k}x{k}': coverage_growth(k, r.spectral_size, 1.0) for k in sorted({r.convmixer_kernel, 3})}
    return dict(depth=n, base_width=r.resnet_base, rows=rows, spectral_size=r.spectral_size, threshold=1.0,
                growth=dict(filters=list(FILTER_COUNTS), **growth))


def frozen_bank_coverage(study: Study, runs: Dict[str, dict], name: str) -> float:
    """Mean spectral coverage (Sec. 3.1) of the frozen banks of the seed-0 run of `name`."""
    path = runs[f'{name}-s{study.recipe.seeds[0]}']['checkpoint']
    model = model_from_checkpoint(Checkpoint.load(path))
    layers = [spectral_coverage(spectral_envelope(w.detach(), study.recipe.spectral_size), 1.0)
              for _, w in spatial_banks(model) if not w.requires_grad]
    return sum(layers) / len(layers)


def compare_filters(results: dict) -> List[Comparison]:
    rows = results['parts']['filters']['rows']
    return [compared(f'{a["init"]} vs {b["init"]}', 'test top-1 difference', iv, ' points', 'exceeds')
            for a, b in zip(rows, rows[1:]) for iv in [paired(a['test'], b['test'])]]


FILTER_ORDER = Claim(
    'filters', 'Different random filters > the same 9 repeated > box > identity', ('filters',), compare_filters,
    'each neighbour in the order must lie above the next (interval above 0)')


def section(results: dict, verdicts: Verdicts) -> List[str]:
    filters = results['parts']['filters']
    rows = {r['init']: r for r in filters['rows']}
    body = [[r['init'], mean_cell(r['test']), mean_cell(r['val']), f'{r["coverage"]:.3f}'] for r in filters['rows']]
    growth = filters['growth']
    growth_body = [[n, *(f'{growth[k][i]:.3f}' for k in growth if k != 'filters')]
                   for i, n in enumerate(growth['filters'])]
    return ['## 3. Filter structure and spectral coverage', '',
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
            f'![filters]({FILTERS_FIGURE})', '',
            *verdict_blocks(verdicts, FILTER_ORDER.key),
            'Whether coverage explains the ranking is shown, not judged: this measure gives the identity (delta) '
            f'filters a coverage of {rows["identity"]["coverage"]:.3f} against {rows["random"]["coverage"]:.3f} for '
            'random ones, though they are the worst, so it cannot test the paper\'s "in part" explanation (that needs '
            'a measure that sees the rank of a bank). Random - each bank, test top-1: ' + '; '.join(
                f'{init} (coverage {row["coverage"]:.3f}): '
                f'{paired(rows["random"]["test"], row["test"]).text(" points")}'
                for init, row in rows.items() if init != 'random') + '.', '']


def plot_filters(results: dict, path: Path) -> None:
    filters = results['parts']['filters']
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


PART = Part('filters', measure, section=section, figures={FILTERS_FIGURE: plot_filters})
