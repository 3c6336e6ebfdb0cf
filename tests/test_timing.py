"""Step timing that is right on any device: a CUDA step is timed with events, after a synchronize."""
from contextlib import nullcontext

import torch
import torch.nn as nn

from timm_frozenmix.evaluation.step_time import make_step, time_interleaved
from timm_frozenmix.layers.timing import StepTimer


class FakeEvent:
    """Stands in for torch.cuda.Event where no GPU exists; 250 ms between two records."""

    def __init__(self, calls, enable_timing=False):
        assert enable_timing
        self.calls = calls

    def record(self):
        self.calls.append('record')

    def elapsed_time(self, end):
        return 250.0


def test_a_cuda_step_is_timed_with_events_between_synchronizes(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, 'Event', lambda enable_timing=False: FakeEvent(calls, enable_timing))
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: calls.append(f'synchronize {device}'))
    monkeypatch.setattr(torch.cuda, 'device', lambda device: calls.append(f'on {device}') or nullcontext())
    seconds = StepTimer(torch.device('cuda:1'))(lambda: calls.append('step'))
    assert seconds == 0.25
    assert calls == ['synchronize cuda:1', 'on cuda:1', 'record', 'step', 'record', 'synchronize cuda:1']


def test_a_cpu_step_is_timed_with_the_clock_and_never_synchronizes(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: (_ for _ in ()).throw(AssertionError))
    assert StepTimer(torch.device('cpu'))(lambda: None) >= 0


def test_time_interleaved_builds_targets_on_the_inputs_device():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    seconds = time_interleaved({'tiny': (model, torch.rand(2, 1, 2, 2))}, train=True, steps=3, warmup=1)
    assert seconds['tiny'] > 0


def test_make_step_runs_the_forward_under_autocast_as_train_py_amp_does():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    dtypes = []
    model[1].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    make_step(model, torch.rand(2, 1, 2, 2), train=True, autocast=torch.bfloat16)()
    make_step(model, torch.rand(2, 1, 2, 2), train=False)()
    assert dtypes == [torch.bfloat16, torch.float32]
    assert model[1].weight.grad.dtype == torch.float32  # the parameters stay float32, as in AMP
