""" 2. Train step: sep_resnet18_chans vs timm's resnetv2_18 (same widths, dense), batch 32 at 64x64

    python -m benchmarks.sep_resnet18
"""
import timm
import torch

from timm_frozenmix import tune_executions
from benchmarks._harness import PROCESSES, machine, peak_memories, ratio_row, table, timed_in_processes

BATCH, SIZE, STEPS, WARMUP = 32, 64, 9, 3  # per process; steps: a multiple of the 3 cases


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
    runs = timed_in_processes(__name__, cases, True, STEPS, WARMUP)
    mib = peak_memories(__name__, cases, True)
    return [ratio_row('sep_resnet18_chans vs resnetv2_18, train step', runs, 'ours', 'dense', mib, 1.05, 1.1),
            ratio_row('same, executions timed by tune_executions (reference)', runs, 'tuned', 'dense', mib)]


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP} in each of {PROCESSES} '
          f'processes; {machine()}')
    print(table(run()))
