""" Step time and peak memory of ours against a baseline, measured the same way in one run

Times are interleaved: every round runs one step of each model in turn, so drifts of the machine (clock,
other load) hit all of them alike; the median over rounds after warm-up is reported. Peak memory is measured
with each model alone in a fresh process (its peak resident memory above what it held before the first step).
Ratios, not absolute times, are what carry across machines.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ['comparison', 'ours', 'baseline', 'time ratio', 'peak memory ratio', 'target']


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


def _current_rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _peak_rss_mib() -> float:
    """This process's own high-water mark (VmHWM; getrusage's maxrss would include the parent's at fork)."""
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024


def peak_memory_here(model: nn.Module, x: torch.Tensor, train: bool, steps: int = 2) -> float:
    """MiB of peak resident memory a few steps add on top of what the process held before them."""
    before = _current_rss_mib()
    step = make_step(model, x, train)
    for _ in range(steps):
        step()
    return _peak_rss_mib() - before


def peak_memory(module: str, case: str, train: bool, **kwargs) -> float:
    """`peak_memory_here(*module.build(case, **kwargs))` in a fresh Python, so no other model's peak counts."""
    if module == '__main__':  # a script run with python -m: import it by its real name
        module = sys.modules['__main__'].__spec__.name
    code = (f'import json, sys; from {module} import build; from benchmarks._harness import peak_memory_here; '
            f'print(peak_memory_here(*build({case!r}, **json.loads(sys.argv[1])), train={train}))')
    out = subprocess.run([sys.executable, '-c', code, json.dumps(kwargs)], capture_output=True, text=True,
                         check=False, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f'{module} {case} failed:\n{out.stderr[-2000:]}')
    return float(out.stdout.strip().splitlines()[-1])


def ratio_row(name: str, ours_s: float, base_s: float, ours_mib: float, base_mib: float, target: str) -> list:
    return [name, f'{ours_s * 1000:.0f} ms', f'{base_s * 1000:.0f} ms', f'{ours_s / base_s:.2f}x',
            f'{ours_mib / base_mib:.2f}x', target]


def machine() -> str:
    return f'{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}'


def table(rows) -> str:
    lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
