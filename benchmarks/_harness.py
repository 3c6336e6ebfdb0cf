""" Peak memory and ratio tables of ours against a baseline, with intervals over fresh processes

Step times come from `timm_frozenmix.evaluation.step_time` (interleaved rounds), timed in PROCESSES fresh
Python processes one after another (`timed_in_processes`): rounds in one process share its memory layout,
thread placement and kernel choices, so the noise between processes only shows in an interval over processes. A
row gives each case's geometric-mean step time and their ratio: the geometric mean of the processes' ratios,
with its 95% t interval over the processes (`ratio_over_processes`), and a verdict on its target (`target_verdict`,
docs/performance.md "How a target is judged"). Peak memory is measured with each model alone in a fresh process
(its peak resident memory above what it held before the first step), MEMORY_PROCESSES times, in processes that
run with glibc's mmap threshold fixed at 64 KiB (MALLOC_MMAP_THRESHOLD_), so every freed tensor leaves the
resident set at once: by default glibc raises the threshold as large blocks are freed and keeps later ones in
its heap, and the high-water mark then depends on the order of allocations, not only on what is alive. Ratios,
not absolute times, are what carry across machines.
"""
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from timm_frozenmix.io.reporting import markdown_table, replace_between_markers, write_json, write_text
from timm_frozenmix.evaluation.step_time import make_step
from study.stats import Interval, ratio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMAP_THRESHOLD = 64 * 1024  # bytes; glibc's default starts at 128 KiB and grows up to 32 MiB
HEADER = ['comparison', 'ours', 'baseline', 'time ratio', 'peak memory ratio', 'target', 'verdict']
PROCESSES = 5  # fresh processes every comparison of a table is timed in
MEMORY_PROCESSES = 3  # fresh processes each model's peak memory is measured in
TIMED = []  # what every `timed_in_processes` call of this process measured, kept for the results file
MEASURED_MEMORY = []  # ... and every `peak_memories` call


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


def _script_module(module: str) -> str:
    """The importable name of a benchmark module; a script run with python -m is '__main__' to itself."""
    return sys.modules['__main__'].__spec__.name if module == '__main__' else module


def _in_fresh_python(code: str, argument: dict, what: str, env: Optional[dict] = None) -> str:
    """The last line `code` prints, run by a new Python in the repository with `argument` as JSON in argv[1];
    RuntimeError with the end of its stderr when it fails."""
    out = subprocess.run([sys.executable, '-c', code, json.dumps(argument)], capture_output=True, text=True,
                         check=False, cwd=REPO, env={**os.environ, **(env or {})})
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f'{what} failed:\n{out.stderr[-2000:]}')
    return out.stdout.strip().splitlines()[-1]


def error_line(failure: RuntimeError) -> str:
    """The exception line ('XxxError: ...') of a child's stderr a RuntimeError of `_in_fresh_python` carries, else
    its last line: the hints inductor prints after its error say nothing about what failed."""
    lines = str(failure).strip().splitlines()
    errors = [line for line in lines if re.match(r'^[\w.]+(Error|Exception): ', line)]
    return (errors or lines)[-1][:200]


def peak_memory(module: str, case: str, train: bool, **kwargs) -> float:
    """`peak_memory_here(*module.build(case, **kwargs))` in a fresh Python, so no other model's peak counts."""
    module = _script_module(module)
    code = (f'import json, sys; from {module} import build; from benchmarks._harness import peak_memory_here; '
            f'print(peak_memory_here(*build({case!r}, **json.loads(sys.argv[1])), train={train}))')
    return float(_in_fresh_python(code, kwargs, f'{module} {case}', {'MALLOC_MMAP_THRESHOLD_': str(MMAP_THRESHOLD)}))


def peak_memories(module: str, cases: Sequence[str], train: bool, processes: int = MEMORY_PROCESSES,
                  **kwargs) -> Dict[str, List[float]]:
    """MiB of `peak_memory` of every case, measured `processes` times, the cases taking turns; also appended to
    MEASURED_MEMORY with what was measured."""
    mib = {case: [] for case in cases}
    for _ in range(processes):
        for case in cases:
            mib[case].append(peak_memory(module, case, train, **kwargs))
    MEASURED_MEMORY.append(dict(module=_script_module(module), train=train, kwargs=kwargs, mib=mib))
    return mib


def timed_in_processes(module: str, cases: Sequence[str], train: bool, steps: int, warmup: int,
                       processes: int = PROCESSES, **kwargs) -> List[Dict[str, List[float]]]:
    """`time_interleaved_samples` of `module.build(case, **kwargs)` for every case, in each of `processes` fresh
    Pythons one after another: one dict of per-round seconds per process, also appended to TIMED with what was
    timed. Prints a line per process."""
    module = _script_module(module)
    code = (f'import json, sys; from {module} import build; '
            f'from timm_frozenmix.evaluation.step_time import time_interleaved_samples; a = json.loads(sys.argv[1]); '
            f'print(json.dumps(time_interleaved_samples({{c: build(c, **a["kwargs"]) for c in a["cases"]}}, '
            f'a["train"], a["steps"], a["warmup"])))')
    argument = dict(cases=list(cases), train=train, steps=steps, warmup=warmup, kwargs=kwargs)
    runs = []
    for i in range(processes):
        print(f'  {module} {", ".join(cases)} {kwargs or ""}: process {i + 1} of {processes}', file=sys.stderr,
              flush=True)
        runs.append(json.loads(_in_fresh_python(code, argument, f'{module} {", ".join(cases)}')))
    TIMED.append(dict(module=module, **argument, runs=runs))
    return runs


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


def ratio_row(name: str, runs: Sequence[Dict[str, List[float]]], ours: str, base: str,
              memory: Optional[Dict[str, List[float]]] = None, time_target: Optional[float] = None,
              memory_target: Optional[float] = None, measure: str = 'time') -> list:
    """A table row of case `ours` against case `base` from `timed_in_processes` runs: each case's geometric-mean
    step time over all rounds, their `ratio_over_processes` (which equals the ratio of the two geometric means, as
    every process runs the same rounds), the peak memory ratio over the `peak_memories` pairs (left empty without
    `memory`), the targets (at most this ratio of `measure`, and of memory) and their verdicts."""
    def mean_ms(case: str) -> float:
        return statistics.geometric_mean([s for run in runs for s in run[case]]) * 1000

    time_ratio = ratio_over_processes(runs, ours, base)
    memory_ratio = None if memory is None else ratio(memory[ours], memory[base])
    targets, verdicts = [], []
    for what, interval, target in ((measure, time_ratio, time_target), ('memory', memory_ratio, memory_target)):
        if target is not None:
            targets.append(f'<= {target}x {what}')
            verdicts.append(f'{what} {target_verdict(interval, target)}')
    return [name, f'{mean_ms(ours):.0f} ms', f'{mean_ms(base):.0f} ms', time_ratio.text('x'),
            '' if memory_ratio is None else memory_ratio.text('x'), ', '.join(targets) or '-',
            ', '.join(verdicts) or '-']


def ratio_over_processes(runs: Sequence[Dict[str, List[float]]], ours: str, base: str) -> Interval:
    """ours / base over the processes of `timed_in_processes`: each process's `paired_ratio` (the geometric mean
    of its rounds' ratios), and their geometric mean with its 95% t interval over the processes, which covers
    the noise between processes as well as within them. ValueError where a process has fewer than 2 rounds or
    the two cases' rounds differ in number; with one process there is no interval."""
    per_process = [paired_ratio(run[ours], run[base]).mean for run in runs]
    return ratio(per_process, [1.0] * len(per_process))


def target_verdict(interval: Interval, target: float) -> str:
    """'met' where the whole ratio interval lies at or below `target`, 'not met' where it lies above, 'not
    settled' where it contains the target or there is no interval (fewer than 2 values)
    (docs/performance.md, "How a target is judged")."""
    if interval.n < 2:
        return 'not settled'
    if interval.high <= target:
        return 'met'
    return 'not met' if interval.low > target else 'not settled'


def paired_ratio(ours_s: Sequence[float], base_s: Sequence[float]) -> Interval:
    """ours / baseline over the rounds of `time_interleaved_samples` (the i-th entries ran in one round): the
    geometric mean of the per-round ratios with its 95% t interval (`study.stats.ratio`), which covers the noise
    within this process only. ValueError for fewer than two rounds or lists of different lengths."""
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
