""" Timing and memory of one training or inference step, each model in a fresh process

Ratios, not absolute times, are what carry across machines: every script times ours and the baseline in the
same run. Each measurement runs in its own subprocess so that the peak resident memory it reports (minus the
memory held before the first step) belongs to that model alone.
"""
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict

import torch
import torch.nn as nn


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def measure(model: nn.Module, x: torch.Tensor, train: bool, steps: int, warmup: int) -> Dict[str, float]:
    """Median seconds per step after warm-up, and the step's peak memory above what the model already held."""
    if train:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        target = torch.randint(0, 10, (x.shape[0],))

        def step():
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), target).backward()
            optimizer.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)
    before = _current_rss_mib()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {'seconds': statistics.median(times), 'peak_mib': _rss_mib() - before}


def run_isolated(module: str, case: str, **kwargs) -> Dict[str, float]:
    """Run `module.measure_case(case, **kwargs)` in a fresh Python and return its measurement."""
    code = (f'import json, sys; from {module} import measure_case; '
            f'print(json.dumps(measure_case({case!r}, **json.loads(sys.argv[1]))))')
    out = subprocess.run([sys.executable, '-c', code, json.dumps(kwargs)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f'{module} {case} failed:\n{out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import platform
    return f'{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}'


def table(rows, header) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


__all__ = ['measure', 'run_isolated', 'machine', 'table', 'Callable']
