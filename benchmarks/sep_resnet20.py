""" 1. Train step: sep_resnet20_cifar_chans vs the dense pre-activation ResNet-20 with the same widths

The baseline is what a researcher would otherwise train: timm's ResNetV2 with dense 3x3 convs, a 3x3 stride-1
stem and widths 16/32/64 times the width factor. Batch 64 at 32x32. The naive unfused separable path (a 9x
wider depthwise output) is printed for reference, and the width-1 pair is timed again with `torch.compile` on
both (inductor, which needs a C++ compiler on the CPU; under torch.compile the cost model, not timing, picks
fused or unfused).

    python -m benchmarks.sep_resnet20
"""
import sys

import timm
import torch
import torch.nn as nn

from timm_frozenmix import SeparableConv2d
from benchmarks._harness import PROCESSES, error_line, machine, peak_memories, ratio_row, table, timed_in_processes

BATCH, SIZE = 64, 32
STEPS, WARMUP = {1: 6, 4: 3}, {1: 2, 4: 2}  # per width and process; steps: a multiple of the 3 cases
COMPILED_STEPS, COMPILED_WARMUP = 8, 2  # per process; the warm-up steps compile


def dense_resnet_cifar(depth: int = 20, width: int = 1) -> nn.Module:
    """The dense pre-activation ResNet with the separable one's layout (timm's ResNetV2, 3x3 stride-1 stem)."""
    return timm.create_model(f'sep_resnet{depth}_cifar_full', num_classes=10, width=width, separable=False)


def build(case: str, width: int = 1, compiled: bool = False):
    """'dense', 'ours' (executions by the cost model) or 'unfused', of width `width`; torch.compile'd if
    `compiled`."""
    torch.manual_seed(0)
    if case == 'dense':
        model = dense_resnet_cifar(20, width)
    else:
        model = timm.create_model('sep_resnet20_cifar_chans', num_classes=10, width=width)
        for m in model.modules():
            if isinstance(m, SeparableConv2d):
                m.execution = {'ours': 'auto', 'unfused': 'unfused'}[case]
    return torch.compile(model) if compiled else model, torch.randn(BATCH, 3, SIZE, SIZE)


def run() -> list:
    rows = []
    for width in (1, 4):
        cases = ('dense', 'ours', 'unfused')
        runs = timed_in_processes(__name__, cases, True, STEPS[width], WARMUP[width], width=width)
        mib = peak_memories(__name__, cases, True, width=width)
        rows.append(ratio_row(f'sep_resnet20_cifar_chans x{width} vs dense ResNet-20 x{width}, train step', runs,
                              'ours', 'dense', mib, 1.05, 1.1))
        rows.append(ratio_row('same, naive unfused path (reference)', runs, 'unfused', 'dense', mib))
    rows.append(compiled_row())
    return rows


def compiled_row() -> list:
    name, target = 'same x1, torch.compile on both, train step', 1.05
    try:
        runs = timed_in_processes(__name__, ('dense', 'ours'), True, COMPILED_STEPS, COMPILED_WARMUP, compiled=True)
    except RuntimeError as e:  # inductor without a C++ compiler, for one: the other rows still count
        print(f'torch.compile failed, row left out: {error_line(e)}', file=sys.stderr)
        return [name, 'not measured', 'not measured', 'torch.compile failed', '', f'<= {target}x time',
                'time not measured']
    return ratio_row(name, runs, 'ours', 'dense', time_target=target)


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, in each of {PROCESSES} processes {STEPS[1]} interleaved rounds after '
          f'{WARMUP[1]} at width 1, {STEPS[4]} after {WARMUP[4]} at width 4, {COMPILED_STEPS} after '
          f'{COMPILED_WARMUP} compiled; {machine()}')
    print(table(run()))
