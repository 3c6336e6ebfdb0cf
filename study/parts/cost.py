""" Part `cost`: training step time per mode, the paper's naive separable layer next to this package's execution

Every model is timed in one process, interleaved round by round, so that two timings of one round ran back to
back and their ratio is paired.
"""
import logging
import statistics
from pathlib import Path
from typing import Dict, List, Tuple

import timm
import torch

from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from timm_frozenmix.io.reporting import markdown_table, new_figure, save_figure
from timm_frozenmix.layers.separable import SeparableConv2d

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import BATCH, CONVMIXER, MODES, RESNET, convmixer_kwargs, resnet_kwargs
from ..runs import Study
from ..sections import MODE_NAMES, Verdicts, verdict_blocks
from ..stats import ratio

_logger = logging.getLogger('study')

COST_FIGURE = 'reproduction_cost.png'


def measure(study: Study) -> dict:
    r = study.recipe
    # a ConvMixer's layers are plain depthwise and pointwise convs, the paper's own: one execution
    specs = [('ConvMixer', CONVMIXER, convmixer_kwargs(r), ('naive',)),
             ('SepResNet', RESNET, resnet_kwargs(r.resnet_depths[0], r.resnet_base), ('naive', 'ours'))]
    cases, params = {}, {}
    for family, name, kwargs, executions in specs:
        for mode in MODES:
            for execution in executions:
                torch.manual_seed(r.seeds[0])
                model = timm.create_model(name.format(mode=mode), in_chans=1, num_classes=10, **kwargs)
                if execution == 'naive':  # depthwise conv, then pointwise conv (SeparableConv2d unfused)
                    for module in model.modules():
                        if isinstance(module, SeparableConv2d):
                            module.execution = 'unfused'
                x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
                key = f'{family}/{mode}/{execution}'
                cases[key] = (model.to(memory_format=torch.channels_last), x)
                params[key] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _logger.info(f'Timing {len(cases)} models, {r.timing_steps} interleaved steps each')
    samples = time_interleaved_samples(cases, train=True, steps=r.timing_steps, warmup=3)
    rows = []
    for key, seconds in samples.items():
        family, mode, execution = key.split('/')
        rows.append(dict(family=family, mode=mode, execution=execution, seconds=seconds,
                         trainable_params=params[key]))
    return dict(batch=BATCH, steps=r.timing_steps, rows=rows)


def cost_rows(results: dict) -> Dict[Tuple[str, str, str], dict]:
    return {(r['family'], r['mode'], r['execution']): r for r in results['parts']['cost']['rows']}


def step_time_ratios(results: dict, executions=('naive', 'ours')) -> List[Comparison]:
    """Chans / Full seconds per step of each family, for each of `executions` it was timed with."""
    rows = cost_rows(results)
    return [compared(f'{family}, {"paper" if execution == "naive" else "this package"}\'s layer',
                     'Chans / Full, seconds per training step',
                     ratio(rows[family, 'chans', execution]['seconds'], rows[family, 'full', execution]['seconds']),
                     'x', 'below_ratio', 1.0)
            for family, mode, execution in rows if mode == 'chans' and execution in executions]


def compare_cost(results: dict) -> List[Comparison]:
    """The paper's claim is about its layer (depthwise, then pointwise): only the naive execution is judged."""
    return step_time_ratios(results, ('naive',))


COST = Claim('cost', 'Chans trains faster per step than Full', ('cost',), compare_cost,
             'holds when the interval of the step-time ratio of the paper\'s layer lies below 1x, fails when above')


def setting(recipe: dict) -> List[str]:
    return ['- Timing on this CPU, the paper\'s naive layer (depthwise conv, then pointwise conv) and this package\'s '
            '(a fused dense weight where it is cheaper); the paper times GPUs.']


def section(results: dict, verdicts: Verdicts) -> List[str]:
    cost = results['parts']['cost']
    body = [[r['family'], MODE_NAMES[r['mode']], r['execution'], f'{1000 * statistics.median(r["seconds"]):.1f}',
             f'{r["trainable_params"]:,}'] for r in cost['rows']]
    return ['## 6. Training cost', '',
            'Paper: Chans trains faster per step (no gradients for the frozen spatial filters).', '',
            f'One SGD step at batch {cost["batch"]} on 28x28 channels-last images, {cost["steps"]} interleaved '
            'rounds in one process; "naive" is the paper\'s layer (depthwise conv, then pointwise conv), "ours" '
            'this package\'s execution choice. A ConvMixer\'s layers are plain convolutions, so it has one.', '',
            markdown_table(['model', 'mode', 'execution', 'median ms/step', 'trainable parameters'], body), '',
            f'![training cost]({COST_FIGURE})', '', *verdict_blocks(verdicts, COST.key),
            'This package\'s execution is an engineering choice, not the paper\'s layer, so it is shown, not judged: '
            + '; '.join(f'{c.config}: {c.interval.text(c.unit)}' for c in step_time_ratios(results, ('ours',)))
            + '.', '']


def plot_cost(results: dict, path: Path) -> None:
    comparisons = step_time_ratios(results)
    fig, axes = new_figure(1, 1, figsize=(6.5, 3.5))
    ax = axes[0][0]
    for i, c in enumerate(comparisons):
        iv = c.interval
        ax.errorbar(iv.mean, i, xerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt='o', capsize=4)
    ax.axvline(1.0, color='grey', linestyle=':')
    ax.set_yticks(range(len(comparisons)), [c.config for c in comparisons], fontsize=8)
    ax.set_xlabel('Chans / Full seconds per training step (95% interval)')
    save_figure(fig, path)


PART = Part('cost', measure, section=section, figures={COST_FIGURE: plot_cost}, setting=setting)
