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
from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from benchmarks._harness import machine, peak_memory, ratio_row, table

BATCH, SIZE, STEPS, WARMUP = 64, 32, 12, 2  # steps: a multiple of the 3 cases
COMPILED_STEPS = 16  # compiled steps are short and this row's ratio is the closest to its target: more of them


def dense_resnet_cifar(depth: int = 20, width: int = 1) -> nn.Module:
    """The dense pre-activation ResNet with the separable one's layout (timm's ResNetV2, 3x3 stride-1 stem)."""
    return timm.create_model(f'sep_resnet{depth}_cifar_full', num_classes=10, width=width, separable=False)


def build(case: str, width: int = 1):
    torch.manual_seed(0)
    if case == 'dense':
        model = dense_resnet_cifar(20, width)
    else:
        model = timm.create_model('sep_resnet20_cifar_chans', num_classes=10, width=width)
        for m in model.modules():
            if isinstance(m, SeparableConv2d):
                m.execution = {'ours': 'auto', 'unfused': 'unfused'}[case]
    return model, torch.randn(BATCH, 3, SIZE, SIZE)


def run() -> list:
    rows = []
    for width in (1, 4):
        cases = ('dense', 'ours', 'unfused')
        seconds = time_interleaved_samples({c: build(c, width) for c in cases}, True, STEPS, WARMUP)
        mib = {c: peak_memory(__name__, c, True, width=width) for c in cases}
        rows.append(ratio_row(f'sep_resnet20_cifar_chans x{width} vs dense ResNet-20 x{width}, train step',
                              seconds['ours'], seconds['dense'], mib['ours'], mib['dense'],
                              '<= 1.05x time, <= 1.1x memory'))
        rows.append(ratio_row('same, naive unfused path (reference)', seconds['unfused'], seconds['dense'],
                              mib['unfused'], mib['dense'], '-'))
    rows.append(compiled_row())
    return rows


def compiled_row() -> list:
    name, target = 'same x1, torch.compile on both, train step', '<= 1.05x time'
    compiled = {c: (torch.compile(model), x) for c, (model, x) in ((c, build(c)) for c in ('dense', 'ours'))}
    try:
        seconds = time_interleaved_samples(compiled, True, COMPILED_STEPS, WARMUP)  # the warm-up steps compile
    except Exception as e:  # inductor without a C++ compiler, for one: the other rows still count
        print(f'torch.compile failed, row left out: {type(e).__name__}: {str(e).splitlines()[0][:200]}',
              file=sys.stderr)
        return [name, 'not measured', 'not measured', f'torch.compile failed ({type(e).__name__})', '', target]
    return ratio_row(name, seconds['ours'], seconds['dense'], None, None, target)


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP}; {machine()}')
    print(table(run()))
