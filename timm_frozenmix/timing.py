""" Seconds per training step of several models, measured side by side

Steps are interleaved: every round runs one step of each model in turn, so drifts of the machine (clock,
other load) hit all of them alike; the median over rounds after warm-up is reported. Ratios between the
models, not absolute times, are what carry across machines.
"""
import statistics
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

__all__ = ['make_step', 'time_interleaved']


def make_step(model: nn.Module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    """One SGD training step (frozen parameters excluded, as timm's optimizer factory does), or one inference."""
    if not train:
        model.eval()

        def infer():
            with torch.inference_mode():
                model(x)
        return infer
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    target = torch.randint(0, 10, (x.shape[0],))

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
    return train_step


def time_interleaved(cases: Dict[str, Tuple[nn.Module, torch.Tensor]], train: bool, steps: int,
                     warmup: int) -> Dict[str, float]:
    """Median seconds per step of each case, the cases taking turns step by step."""
    step_fns = {name: make_step(model, x, train) for name, (model, x) in cases.items()}
    times = {name: [] for name in cases}
    for i in range(warmup + steps):
        for name, step in step_fns.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
