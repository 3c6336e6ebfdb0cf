""" Seconds per training step of several models, measured side by side, on any device

Steps are interleaved: every round runs one step of each model in turn, so drifts of the machine (clock,
other load) hit all of them alike; the median over rounds after warm-up is reported. Ratios between the
models, not absolute times, are what carry across machines.
"""
import statistics
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from timm_frozenmix.layers.timing import StepTimer

__all__ = ['make_step', 'time_interleaved', 'time_interleaved_samples']


def make_step(model: nn.Module, x: torch.Tensor, train: bool,
              autocast: Optional[torch.dtype] = None) -> Callable[[], None]:
    """One SGD training step (frozen parameters excluded, as timm's optimizer factory does), or one inference;
    with `autocast` (torch.bfloat16 or torch.float16) the forward and loss run under torch.autocast, as
    train.py's --amp runs them (no loss scaling: it does not change the work of a step).

    The model and `x` must be on one device; the targets are made there.
    """
    amp = partial(torch.autocast, x.device.type, dtype=autocast, enabled=autocast is not None)
    if not train:
        model.eval()

        def infer():
            with torch.inference_mode(), amp():
                model(x)
        return infer
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    target = torch.randint(0, 10, (x.shape[0],), device=x.device)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with amp():
            loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
    return train_step


def time_interleaved(cases: Dict[str, Tuple[nn.Module, torch.Tensor]], train: bool, steps: int,
                     warmup: int, autocast: Optional[torch.dtype] = None) -> Dict[str, float]:
    """Median seconds per step of each case (model and input on the device to time), taking turns step by step."""
    samples = time_interleaved_samples(cases, train, steps, warmup, autocast)
    return {name: statistics.median(t) for name, t in samples.items()}


def time_interleaved_samples(cases: Dict[str, Tuple[nn.Module, torch.Tensor]], train: bool, steps: int,
                             warmup: int, autocast: Optional[torch.dtype] = None) -> Dict[str, List[float]]:
    """Seconds of every step after warm-up of each case, taking turns: the i-th entries of two cases are one round,
    so per-round ratios pair the cases under the same machine state. Each round starts with the next case, so
    over a multiple of len(cases) steps every case runs first equally often; the cyclic order stays, so a case
    follows the same neighbour whenever it does not run first."""
    step_fns = {name: make_step(model, x, train, autocast) for name, (model, x) in cases.items()}
    timers = {name: StepTimer(x.device) for name, (_, x) in cases.items()}
    times = {name: [] for name in cases}
    names = list(step_fns)
    for i in range(warmup + steps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            seconds = timers[name](step_fns[name])
            if i >= warmup:
                times[name].append(seconds)
    return times
