""" 2. Train step: sep_resnet18_chans vs timm's resnetv2_18 (same widths, dense), batch 32 at 64x64

    python -m benchmarks.sep_resnet18
"""
import timm
import torch

from timm_frozenmix import tune_executions
from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from benchmarks._harness import machine, peak_memory, ratio_row, table

BATCH, SIZE, STEPS, WARMUP = 32, 64, 21, 3


def build(case: str):
    """'dense', 'ours' (executions by the cost model, the default) or 'tuned' (executions timed at setup)."""
    torch.manual_seed(0)
    model = timm.create_model('resnetv2_18' if case == 'dense' else 'sep_resnet18_chans', num_classes=10)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    if case == 'tuned':
        tune_executions(model, x)
    return model, x


def run() -> list:
    cases = ('dense', 'ours', 'tuned')
    seconds = time_interleaved_samples({c: build(c) for c in cases}, True, STEPS, WARMUP)
    mib = {c: peak_memory(__name__, c, True) for c in cases}
    return [ratio_row('sep_resnet18_chans vs resnetv2_18, train step', seconds['ours'], seconds['dense'],
                      mib['ours'], mib['dense'], '<= 1.05x time, <= 1.1x memory'),
            ratio_row('same, executions timed by tune_executions (reference)', seconds['tuned'], seconds['dense'],
                      mib['tuned'], mib['dense'], '-')]


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP}; {machine()}')
    print(table(run()))
