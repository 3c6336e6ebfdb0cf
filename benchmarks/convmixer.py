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
from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from benchmarks._harness import machine, paired_ratio, peak_memory, ratio_row, scaled, table

BATCH, SIZE, STEPS, WARMUP = 32, 32, 8, 1  # steps: a multiple of the 4 cases
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
    cases = {c: build(c) for c in ('timm', 'floor', 'chans', 'space')}
    seconds = time_interleaved_samples(cases, True, STEPS, WARMUP)
    mib = {c: peak_memory(__name__, c, True) for c in cases}
    base_trainable = _trainable(cases['timm'][0])
    rows = []
    rows.append(ratio_row('floor: timm ConvMixer, stem and depthwise frozen, vs timm ConvMixer (full)',
                          seconds['floor'], seconds['timm'], mib['floor'], mib['timm'], '-'))
    rows.append(ratio_row('convmixer_128_8_p1_chans vs the floor, train step', seconds['chans'], seconds['floor'],
                          mib['chans'], mib['floor'], '<= 1.05x time'))
    for mode, target in (('chans', '-'), ('space', '-')):
        rows.append(ratio_row(f'convmixer_128_8_p1_{mode} vs timm ConvMixer (full), train step',
                              seconds[mode], seconds['timm'], mib[mode], mib['timm'], target))
        trainable = _trainable(cases[mode][0])
        per_param = scaled(paired_ratio(seconds[mode], seconds['timm']), base_trainable / trainable)
        rows.append([f'same, time per trainable parameter ({trainable:,} vs {base_trainable:,})',
                     '', '', per_param.text('x'), '', '-'])
    return rows


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP}; {machine()}')
    print(table(run()))
