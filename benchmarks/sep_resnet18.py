""" 2. Train step: sep_resnet18_chans vs timm's resnetv2_18 (same widths, dense), batch 32 at 64x64

    python -m benchmarks.sep_resnet18
"""
import timm
import torch

import timm_frozenmix  # noqa: F401  (registers the models with timm)
from timm_frozenmix.timing import time_interleaved
from benchmarks._harness import machine, peak_memory, ratio_row, table

BATCH, SIZE, STEPS, WARMUP = 32, 64, 21, 3


def build(case: str):
    torch.manual_seed(0)
    model = timm.create_model({'ours': 'sep_resnet18_chans', 'dense': 'resnetv2_18'}[case], num_classes=10)
    return model, torch.randn(BATCH, 3, SIZE, SIZE)


def run() -> list:
    seconds = time_interleaved({c: build(c) for c in ('dense', 'ours')}, True, STEPS, WARMUP)
    mib = {c: peak_memory(__name__, c, True) for c in ('dense', 'ours')}
    return [ratio_row('sep_resnet18_chans vs resnetv2_18, train step', seconds['ours'], seconds['dense'],
                      mib['ours'], mib['dense'], '<= 1.05x time, <= 1.1x memory')]


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, median of {STEPS} interleaved steps after {WARMUP}; {machine()}')
    print(table(run()))
