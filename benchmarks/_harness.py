""" Peak memory and ratio tables of ours against a baseline, measured the same way in one run

Step times come from `timm_frozenmix.evaluation.step_time` (interleaved rounds): a row gives each case's
geometric-mean step time and their ratio with its 95% t interval over the rounds. Peak memory is measured
with each model alone in a fresh process (its peak resident memory above what it held before the first step),
which runs with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_), so every freed tensor leaves the
resident set at once: by default glibc raises the threshold as large blocks are freed and keeps later ones
in its heap, and the high-water mark then depends on the order of allocations, not only on what is alive.
Ratios, not absolute times, are what carry across machines.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from typing import Optional, Sequence

import torch
import torch.nn as nn

from timm_frozenmix.io.reporting import markdown_table, replace_between_markers, write_json, write_text
from timm_frozenmix.evaluation.step_time import make_step
from study.stats import Interval, ratio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMAP_THRESHOLD = 64 * 1024  # bytes; glibc's default starts at 128 KiB and grows up to 32 MiB
HEADER = ['comparison', 'ours', 'baseline', 'time ratio', 'peak memory ratio', 'target']


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
                         check=False, cwd=REPO, env={**os.environ, 'MALLOC_MMAP_THRESHOLD_': str(MMAP_THRESHOLD)})
    if out.returncode != 0:
        raise RuntimeError(f'{module} {case} failed:\n{out.stderr[-2000:]}')
    return float(out.stdout.strip().splitlines()[-1])


def replace_block(path, start: str, end: str, block: str) -> None:
    """A document's generated benchmark section replaced by `block`; RuntimeError when its markers are missing."""
    if not replace_between_markers(path, start, end, block):
        raise RuntimeError(f'{path} lacks the benchmark markers {start} ... {end}')


def publish(results: dict, block: str, results_path, table_path, page, start: str, end: str) -> None:
    """A benchmark's results written as JSON, its page block (rendered from them) as markdown and between the
    page's markers; prints where."""
    write_json(results_path, results)
    write_text(table_path, block + '\n')
    replace_block(page, start, end, block)
    print(f'Written: {results_path}, {table_path} and {page}')


def ratio_row(name: str, ours_s: Sequence[float], base_s: Sequence[float], ours_mib: Optional[float],
              base_mib: Optional[float], target: str) -> list:
    """A table row from the per-round seconds of two cases timed together (`time_interleaved_samples`): each
    case's geometric-mean step time, their ratio with its 95% interval (`paired_ratio`, which equals the ratio of
    the two geometric means), and the peak memory ratio (left empty when the memory is None)."""
    memory = '' if ours_mib is None or base_mib is None else f'{ours_mib / base_mib:.2f}x'
    return [name, f'{statistics.geometric_mean(ours_s) * 1000:.0f} ms',
            f'{statistics.geometric_mean(base_s) * 1000:.0f} ms', paired_ratio(ours_s, base_s).text('x'), memory,
            target]


def paired_ratio(ours_s: Sequence[float], base_s: Sequence[float]) -> Interval:
    """ours / baseline over the rounds of `time_interleaved_samples` (the i-th entries ran in one round): the
    geometric mean of the per-round ratios with its 95% t interval (`study.stats.ratio`), which covers the noise
    within this run only. ValueError for fewer than two rounds or lists of different lengths."""
    if len(ours_s) != len(base_s) or len(ours_s) < 2:
        raise ValueError(f'a paired ratio needs two equally long lists of at least 2 rounds, got {len(ours_s)} '
                         f'and {len(base_s)}')
    return ratio(list(ours_s), list(base_s))


def scaled(interval: Interval, factor: float) -> Interval:
    """A ratio times a constant `factor` (per-parameter time, say), its interval with it."""
    return Interval(interval.mean * factor, interval.low * factor, interval.high * factor, interval.n)


def percent(interval: Interval) -> str:
    """A ratio as a change: '+4.6% [+2.1, +7.2]'."""
    change = lambda r: 100 * (r - 1)
    return f'{change(interval.mean):+.1f}% [{change(interval.low):+.1f}, {change(interval.high):+.1f}]'


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> Optional[str]:
    """The CPU's model name as the kernel reports it ('AMD EPYC 7B13 64-Core Processor', say); None where it
    reports none."""
    try:
        with open(cpuinfo) as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    except OSError:
        return None
    return names[0] if names and names[0] else None


def machine() -> str:
    """The machine the numbers come from, as docs/performance.md names it: 'AMD EPYC (x86_64), 2 cores,
    2 threads, torch 2.14.1'."""
    model, arch = cpu_model(), platform.machine()
    return (f'{f"{model} ({arch})" if model else f"an {arch} CPU"}, {os.cpu_count()} cores, '
            f'{torch.get_num_threads()} threads, torch {torch.__version__}')


def table(rows) -> str:
    return markdown_table(HEADER, rows)
