""" 3. Train step: the paper's CIFAR ConvMixer (width 128, depth 8, kernel 8, patch 1), Chans and Space vs
timm's own ConvMixer of the same size, fully learned; also time per trainable parameter (paper Fig. 3/6)

The floor of a Chans ConvMixer is timm's own ConvMixer with its stem and depthwise convs set to
requires_grad=False: the same network with the frozen parts' weight gradients skipped and nothing of ours in
it. Chans at the floor's time has nothing left to remove.

    python -m benchmarks.convmixer
"""
import warnings

import timm
import torch
from timm.models.convmixer import ConvMixer

import timm_frozenmix  # noqa: F401  (registers the models with timm)
from benchmarks._harness import (PROCESSES, machine, peak_memories, ratio_over_processes, ratio_row, scaled,
                                 table, timed_in_processes)

BATCH, SIZE, STEPS, WARMUP = 32, 32, 4, 2  # per process; steps: a multiple of the 4 cases
warnings.filterwarnings('ignore', message='Using padding=.same. with even kernel')


def build(case: str):
    torch.manual_seed(0)
    if case in ('timm', 'floor'):
        model = ConvMixer(128, 8, kernel_size=8, patch_size=1, num_classes=10)
        if case == 'floor':
            model.stem[0].requires_grad_(False)
            for block in model.blocks:
                block[0].fn[0].requires_grad_(False)  # the depthwise conv of the residual
    else:
        model = timm.create_model(f'convmixer_128_8_p1_{case}', num_classes=10)
    return model, torch.randn(BATCH, 3, SIZE, SIZE)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run() -> list:
    cases = ('timm', 'floor', 'chans', 'space')
    runs = timed_in_processes(__name__, cases, True, STEPS, WARMUP)
    mib = peak_memories(__name__, cases, True)
    base_trainable = _trainable(build('timm')[0])
    rows = [ratio_row('floor: timm ConvMixer, stem and depthwise frozen, vs timm ConvMixer (full)', runs, 'floor',
                      'timm', mib),
            ratio_row('convmixer_128_8_p1_chans vs the floor, train step', runs, 'chans', 'floor', mib, 1.05)]
    for mode in ('chans', 'space'):
        rows.append(ratio_row(f'convmixer_128_8_p1_{mode} vs timm ConvMixer (full), train step', runs, mode, 'timm',
                              mib))
        trainable = _trainable(build(mode)[0])
        per_param = scaled(ratio_over_processes(runs, mode, 'timm'), base_trainable / trainable)
        rows.append([f'same, time per trainable parameter ({trainable:,} vs {base_trainable:,})',
                     '', '', per_param.text('x'), '', '-', '-'])
    return rows


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP} in each of {PROCESSES} '
          f'processes; {machine()}')
    print(table(run()))
