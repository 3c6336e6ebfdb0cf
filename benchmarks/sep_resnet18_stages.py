""" 7. Where sep_resnet18_chans's extra train-step time goes: each part's separable layers made dense in turn

    python -m benchmarks.sep_resnet18_stages

Benchmark 2's comparison, taken apart in context: beside resnetv2_18 and sep_resnet18_chans, one copy of ours per
part (the stem and each of the four stages) has that part's separable layers replaced by their `fuse()`, the
dense conv with the composed weight, still trainable. What ours takes longer than such a copy is the time those
layers add. All steps are interleaved in one run; each ratio is the geometric mean of per-round ratios with its
95% t interval, so parts whose intervals overlap are not ranked.
"""
from typing import Dict, List

import timm
import torch
import torch.nn as nn

from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from timm_frozenmix.io.reporting import markdown_table
from timm_frozenmix.layers.separable import SeparableConv2d
from benchmarks._harness import machine, paired_ratio
from benchmarks.sep_resnet18 import BATCH, SIZE

STEPS, WARMUP = 30, 3
PARTS = ('stem', 'stages.0', 'stages.1', 'stages.2', 'stages.3')
HEADER = ['separable layers made dense', 'layers', 'output maps', 'executions (cost model)',
          'step time against resnetv2_18', 'step time these layers add to ours']


def separable_layers(model: nn.Module, part: str) -> Dict[str, SeparableConv2d]:
    """The SeparableConv2d modules of `model` under the module path `part`, by name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, SeparableConv2d) and (name == part or name.startswith(part + '.'))}


def with_dense_part(model: nn.Module, part: str) -> nn.Module:
    """`model` with every separable layer under `part` replaced in place by its equivalent dense conv."""
    for name, layer in separable_layers(model, part).items():
        parent, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent), child, layer.fuse())
    return model


def layer_inputs(model: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The input each separable layer of `model` sees on `x`, by name (one forward without grad)."""
    seen = {}
    handles = [m.register_forward_pre_hook(lambda _m, args, name=name: seen.__setitem__(name, args[0]))
               for name, m in model.named_modules() if isinstance(m, SeparableConv2d)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return seen


def describe(model: nn.Module, x: torch.Tensor, part: str) -> List[str]:
    """How many separable layers `part` holds, their output map sizes and the cost model's executions on `x`."""
    inputs, layers = layer_inputs(model, x), separable_layers(model, part)
    maps, executions = [], []
    for name, layer in layers.items():
        out_h, out_w = (-(-inputs[name].shape[-2 + i] // layer.stride[i]) for i in (0, 1))
        maps.append(f'{out_h}x{out_w}')
        executions.append(layer.execution_for(inputs[name]))
    counted = lambda values: ', '.join(f'{v} {values.count(v)}' if len(set(values)) > 1 else v
                                       for v in dict.fromkeys(values))
    return [str(len(layers)), counted(maps), counted(executions)]


def build(case: str):
    """'dense' (resnetv2_18), 'ours' (sep_resnet18_chans) or a part of PARTS made dense in ours."""
    torch.manual_seed(0)
    model = timm.create_model('resnetv2_18' if case == 'dense' else 'sep_resnet18_chans', num_classes=10)
    if case in PARTS:
        with_dense_part(model, case)
    return model, torch.randn(BATCH, 3, SIZE, SIZE)


def run(steps: int = STEPS, warmup: int = WARMUP) -> list:
    """One row per part, after the row of ours as it is; raises RuntimeError if a part holds no separable layer."""
    cases = {case: build(case) for case in ('dense', 'ours') + PARTS}
    samples = time_interleaved_samples(cases, True, steps, warmup)
    ratios = {case: paired_ratio(samples[case], samples['dense']) for case in cases}
    ours, x = cases['ours']
    rows = [['none (sep_resnet18_chans as it is)', '', '', '', ratios['ours'].text('x'), '']]
    for part in PARTS:
        if not separable_layers(ours, part):
            raise RuntimeError(f'sep_resnet18_chans has no separable layer under {part!r}')
        added = paired_ratio(samples['ours'], samples[part])
        rows.append([part] + describe(ours, x, part) + [ratios[part].text('x'), added.percent()])
    return rows


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, train steps against resnetv2_18, {STEPS} interleaved rounds after '
          f'{WARMUP}; {machine()}')
    print(markdown_table(HEADER, run()))
