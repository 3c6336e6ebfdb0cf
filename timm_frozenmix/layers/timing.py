""" Seconds one call takes on any device: what the layers' explicit execution tuning and the step timers measure

On a GPU, work is queued asynchronously: a host clock read right after a step measures the launch, not the
work. `StepTimer` synchronizes before it starts and times with CUDA events, so a step is over when it is timed.
"""
import time
from typing import Callable

import torch

__all__ = ['StepTimer']


class StepTimer:
    """Seconds one call of a function takes on `device`: CUDA events between synchronizes on CUDA, a clock after
    a synchronize on other accelerators (mps, xpu, ...), the clock alone on the CPU."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def __call__(self, step: Callable[[], None]) -> float:
        if self.device.type == 'cuda':
            return self._cuda(step)
        backend = getattr(torch, self.device.type, None) if self.device.type != 'cpu' else None
        synchronize = getattr(backend, 'synchronize', None) or (lambda: None)
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        return time.perf_counter() - start

    def _cuda(self, step: Callable[[], None]) -> float:
        torch.cuda.synchronize(self.device)  # earlier work must not be billed to this step
        with torch.cuda.device(self.device):  # events record on this device's current stream
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(self.device)
        return start.elapsed_time(end) / 1000  # milliseconds
