""" The benchmarks behind docs/performance.md: the growth sweep runs, and the page shows their output """
import json
import math
import platform
import statistics

import pytest

import timm
import torch
from scipy.stats import t as student_t

from study.stats import Interval

from benchmarks import _harness, cuda, growth, inference, run_all, sep_resnet18_stages, sep_resnet20
from benchmarks._harness import (cpu_model, error_line, machine, paired_ratio, peak_memories, percent,
                                 ratio_over_processes, ratio_row, scaled, target_verdict, timed_in_processes)
from timm_frozenmix.layers.separable import SeparableConv2d


def test_performance_page_cpu_block_is_the_benchmark_output():
    results = json.loads(run_all.RESULTS.read_text())
    page = run_all.PAGE.read_text()
    block = page.split(run_all.START, 1)[1].split(run_all.END, 1)[0]
    assert block.strip() == run_all.page_block(results).strip()
    assert run_all.GROWTH_PLOT.is_file() and 'core' in results['machine']
    assert run_all.TABLE.read_text().startswith(run_all.page_block(results))


def test_every_time_and_memory_ratio_of_the_cpu_table_follows_from_the_rounds_and_readings_it_keeps():
    results = json.loads(run_all.RESULTS.read_text())
    from_rounds = {ratio_over_processes(entry['runs'], ours, base).text('x') for entry in results['timed']
                   for ours in entry['cases'] for base in entry['cases'] if ours != base}
    from_readings = {ratio_row('', [{c: [1.0, 1.0] for c in entry['mib']}], ours, base, entry['mib'])[4]
                     for entry in results['peak_memory_mib'] for ours in entry['mib'] for base in entry['mib']}
    rows = [row for row in results['rows'] if row[1] not in ('', 'not measured')]  # per-parameter rows are scaled
    assert len(rows) >= 10 and all(len(row) == len(run_all.HEADER) for row in results['rows'])
    assert [row[3] for row in rows if row[3] not in from_rounds] == []
    assert [row[4] for row in rows if row[4] and row[4] not in from_readings] == []


def test_performance_page_gpu_block_is_the_cuda_benchmark_output():
    results = json.loads(cuda.RESULTS.read_text())
    block = cuda.PAGE.read_text().split(cuda.START, 1)[1].split(cuda.END, 1)[0]
    assert block.strip() == cuda.page_block(results).strip()
    assert cuda.TABLE.read_text().strip() == cuda.page_block(results).strip()
    assert len(results['rows']) == len(cuda.COMPARISONS) and 'NVIDIA' in results['machine']


def test_growth_slope_reads_time_against_work():
    rows = [dict(family=family, work=work, seconds=dict(ours=2e-6 * work, baseline=1e-3 * work ** 0.5))
            for family in growth.FAMILIES for work in (256, 1024, 4096)]
    assert run_all.slope(rows, 'SepResNet', 'ours') == pytest.approx(1.0)
    assert run_all.slope(rows, 'ConvMixer', 'baseline') == pytest.approx(0.5)
    line = run_all.growth_line(rows)
    assert 'work^1.00' in line and 'work^0.50' in line


def test_main_job_line_gives_each_part_its_share():
    line = run_all.main_job_line({'data': 1.0, 'forward': 6.0, 'backward': 3.0, 'optimizer': 0.0})
    assert 'data 1 ms (10%), forward 6 ms (60%), backward 3 ms (30%), optimizer 0 ms (0%)' in line


def test_paired_ratio_is_the_geometric_mean_of_the_rounds_with_its_t_interval():
    same = paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert (same.mean, same.low, same.high, same.n) == (pytest.approx(2.0),) * 3 + (3,)
    spread = paired_ratio([1.0, 4.0], [1.0, 1.0])  # log ratios 0 and log 4: mean log 2, standard error log 2
    t = student_t.ppf(0.975, 1)
    assert (spread.mean, spread.low, spread.high) == pytest.approx((2.0, 2 ** (1 - t), 2 ** (1 + t)))
    assert spread.text('x') == f'2.00x [{2 ** (1 - t):.2f}, {2 ** (1 + t):.2f}]'
    assert percent(same) == '+100.0% [+100.0, +100.0]'
    half = scaled(spread, 0.5)
    assert (half.mean, half.low, half.high) == pytest.approx((1.0, 2 ** -t, 2 ** t))
    with pytest.raises(ValueError, match='at least 2 rounds'):
        paired_ratio([1.0], [1.0])
    with pytest.raises(ValueError, match='equally long'):
        paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])


def test_machine_names_the_cpu_model_the_kernel_reports(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: Some CPU 9000\n\nprocessor\t: 1\nmodel name\t: Some CPU 9000\n')
    assert cpu_model(str(cpuinfo)) == 'Some CPU 9000'
    assert cpu_model(str(tmp_path / 'missing')) is None
    named = f'{cpu_model()} ({platform.machine()}), ' if cpu_model() else f'an {platform.machine()} CPU, '
    assert machine().startswith(named) and ' cores, ' in machine()


def test_ratio_over_processes_is_the_geometric_mean_of_the_process_ratios_with_its_t_interval_over_processes():
    runs = [dict(ours=[2.0, 2.0], base=[1.0, 1.0]), dict(ours=[1.0, 4.0], base=[1.0, 1.0])]  # process ratios 2, 2
    same = ratio_over_processes(runs, 'ours', 'base')
    assert (same.mean, same.low, same.high, same.n) == (pytest.approx(2.0),) * 3 + (2,)
    runs[1]['ours'] = [4.0, 4.0]  # process ratios 2 and 4: log ratios log 2, log 4
    spread, t = ratio_over_processes(runs, 'ours', 'base'), student_t.ppf(0.975, 1)
    half = math.log(2) / 2 * t  # standard error of the two log ratios: their difference / 2
    assert (spread.mean, spread.low, spread.high) == pytest.approx(
        (2 ** 1.5, 2 ** 1.5 * math.exp(-half), 2 ** 1.5 * math.exp(half)))
    with pytest.raises(ValueError, match='at least 2 rounds'):
        ratio_over_processes([dict(ours=[1.0], base=[1.0])] * 2, 'ours', 'base')


def test_target_verdict_reads_the_whole_interval_against_the_target():
    assert target_verdict(Interval(1.00, 0.97, 1.04, 5), 1.05) == 'met'
    assert target_verdict(Interval(1.10, 1.06, 1.14, 5), 1.05) == 'not met'
    assert target_verdict(Interval(1.03, 1.00, 1.07, 5), 1.05) == 'not settled'
    assert target_verdict(Interval(1.08, 1.02, 1.06, 5), 1.05) == 'not settled'  # the mean alone never decides
    assert target_verdict(Interval(0.90, math.nan, math.nan, 1), 1.05) == 'not settled'  # one process: no interval
    assert target_verdict(Interval(1.02, 0.99, 1.05, 5), 1.05) == 'met'  # "at or below"
    assert target_verdict(Interval(1.05, 1.05, 1.05, 3), 1.05) == 'met'  # identical readings, at the target


def test_ratio_row_gives_geometric_means_whose_ratio_is_the_ratio_over_processes_and_verdicts_per_target():
    runs = [dict(ours=[0.110, 0.220], base=[0.100, 0.200]), dict(ours=[0.105, 0.115], base=[0.100, 0.100])]
    memory = dict(ours=[110.0, 111.0, 110.0], base=[100.0, 100.0, 100.0])
    row = ratio_row('ours vs base', runs, 'ours', 'base', memory, 1.2, 1.05)
    rounds = lambda case: [s for run in runs for s in run[case]]
    assert row[:3] == ['ours vs base', f'{statistics.geometric_mean(rounds("ours")) * 1000:.0f} ms',
                       f'{statistics.geometric_mean(rounds("base")) * 1000:.0f} ms']
    pooled = ratio_over_processes(runs, 'ours', 'base')
    assert pooled.mean == pytest.approx(statistics.geometric_mean(rounds('ours')) /
                                        statistics.geometric_mean(rounds('base')))
    assert row[3] == pooled.text('x') and row[4].startswith('1.10x [')
    assert row[5:] == ['<= 1.2x time, <= 1.05x memory', 'time met, memory not met']
    plain = ratio_row('no memory', runs, 'ours', 'base', measure='latency')
    assert plain[4:] == ['', '-', '-']
    assert ratio_row('latency', runs, 'ours', 'base', time_target=1.5, measure='latency')[5:] == [
        '<= 1.5x latency', 'latency met']


@pytest.mark.slow
def test_timed_in_processes_times_every_case_in_each_fresh_process_and_memory_per_model(monkeypatch):
    monkeypatch.setattr(_harness, 'TIMED', [])
    monkeypatch.setattr(_harness, 'MEASURED_MEMORY', [])
    runs = timed_in_processes(inference.__name__, ('dense', 'reparameterized'), False, steps=2, warmup=1,
                              processes=2)
    assert len(runs) == 2 and all(sorted(run) == ['dense', 'reparameterized'] for run in runs)
    assert all(len(seconds) == 2 and min(seconds) > 0 for run in runs for seconds in run.values())
    assert _harness.TIMED == [dict(module=inference.__name__, cases=['dense', 'reparameterized'], train=False,
                                   steps=2, warmup=1, kwargs={}, runs=runs)]  # what run_all keeps
    mib = peak_memories(inference.__name__, ('dense',), False, processes=2)
    assert len(mib['dense']) == 2 and min(mib['dense']) > 0
    assert _harness.MEASURED_MEMORY == [dict(module=inference.__name__, train=False, kwargs={}, mib=mib)]
    with pytest.raises(RuntimeError, match='unexpected keyword argument'):  # the child's error, passed on
        timed_in_processes(inference.__name__, ('dense',), False, steps=2, warmup=0, processes=1, width=3)


def test_a_failed_compile_leaves_a_row_that_says_so_with_the_childs_error(monkeypatch, capsys):
    stderr = ('Traceback (most recent call last):\ntorch._inductor.exc.InductorError: CppCompileError: no compiler\n'
              '\nSet TORCHDYNAMO_VERBOSE=1 for the internal stack trace')

    def fail(*args, **kwargs):
        raise RuntimeError(f'benchmarks.sep_resnet20 dense, ours failed:\n{stderr}')
    monkeypatch.setattr(sep_resnet20, 'timed_in_processes', fail)
    row = sep_resnet20.compiled_row()
    assert row == ['same x1, torch.compile on both, train step', 'not measured', 'not measured',
                   'torch.compile failed', '', '<= 1.05x time', 'time not measured']
    assert 'InductorError: CppCompileError: no compiler' in capsys.readouterr().err
    assert error_line(RuntimeError('x failed:\nsome output\nlast line')) == 'last line'


def test_stage_attribution_makes_one_part_dense_and_keeps_the_function():
    ours, x = sep_resnet18_stages.build('ours')
    copy, _ = sep_resnet18_stages.build('stages.2')
    assert not sep_resnet18_stages.separable_layers(copy, 'stages.2')
    assert sep_resnet18_stages.separable_layers(copy, 'stages.3').keys() == \
        sep_resnet18_stages.separable_layers(ours, 'stages.3').keys()
    assert sum(isinstance(m, SeparableConv2d) for m in copy.modules()) == 13
    with torch.no_grad():
        torch.testing.assert_close(copy.eval()(x[:2]), ours.eval()(x[:2]), rtol=1e-4, atol=1e-4)


def test_stage_attribution_rows_read_each_copy_against_the_dense_model_and_against_ours(monkeypatch):
    """Steps of fixed length: ours 1.2, every copy 1.1 but stages.3's 1.0, resnetv2_18 1.0."""
    monkeypatch.setattr(sep_resnet18_stages, 'BATCH', 2)
    monkeypatch.setattr(sep_resnet18_stages, 'SIZE', 32)
    seconds = {'dense': 1.0, 'ours': 1.2, **{part: 1.1 for part in sep_resnet18_stages.PARTS}, 'stages.3': 1.0}
    monkeypatch.setattr(sep_resnet18_stages, 'time_interleaved_samples',
                        lambda cases, train, steps, warmup: {case: [seconds[case]] * steps for case in cases})
    rows = sep_resnet18_stages.run(steps=3, warmup=0)
    assert rows[0][4:] == ['1.20x [1.20, 1.20]', '']
    assert [r[0] for r in rows[1:]] == list(sep_resnet18_stages.PARTS)
    assert [r[1:3] for r in rows[1:]] == [['1', '16x16'], ['4', '8x8'], ['4', '4x4'], ['4', '2x2'], ['4', '1x1']]
    assert rows[1][3] == 'fused' and rows[-1][3] == 'im2col'
    assert rows[1][4:] == ['1.10x [1.10, 1.10]', '+9.1% [+9.1, +9.1]']
    assert rows[-1][4:] == ['1.00x [1.00, 1.00]', '+20.0% [+20.0, +20.0]']


def test_stage_attribution_refuses_a_part_without_separable_layers_before_timing(monkeypatch):
    monkeypatch.setattr(sep_resnet18_stages, 'PARTS', ('stem', 'head'))
    monkeypatch.setattr(sep_resnet18_stages, 'time_interleaved_samples', lambda *a, **k: pytest.fail('timed'))
    with pytest.raises(RuntimeError, match='no separable layer under head'):
        sep_resnet18_stages.run(steps=2, warmup=0)


def test_performance_page_stages_block_is_the_stages_benchmark_output():
    results = json.loads(sep_resnet18_stages.RESULTS.read_text())
    block = sep_resnet18_stages.PAGE.read_text().split(sep_resnet18_stages.START, 1)[1].split(
        sep_resnet18_stages.END, 1)[0]
    assert block.strip() == sep_resnet18_stages.page_block(results).strip()
    assert sep_resnet18_stages.TABLE.read_text().strip() == sep_resnet18_stages.page_block(results).strip()
    assert [row[0] for row in results['rows'][1:]] == list(sep_resnet18_stages.PARTS)


@pytest.mark.slow
def test_growth_sweep_measures_both_families_and_plots(tmp_path, capsys):
    growth.main(['--batches', '2', '--sizes', '8', '16', '--steps', '1', '--output', str(tmp_path)])
    rows = json.loads((tmp_path / 'growth.json').read_text())['rows']
    assert sorted((r['family'], r['batch'], r['size']) for r in rows) == sorted(
        (family, 2, size) for family in growth.FAMILIES for size in (8, 16))
    assert all(r['work'] == r['batch'] * r['size'] ** 2 for r in rows)
    assert all(v > 0 for r in rows for v in r['seconds'].values())
    assert all(v >= 0 for r in rows for v in r['peak_mib'].values())
    assert (tmp_path / 'growth.png').stat().st_size > 0
    assert 'time ratio' in capsys.readouterr().out


def test_cuda_benchmark_compares_and_reports_the_picked_executions():
    """The GPU table's logic, run on the CPU with tiny models: times, ratios, executions picked (memory is CUDA's)."""
    tiny = cuda.Comparison('tiny', lambda: timm.create_model('sep_resnet20_cifar_chans', width=1, layers=(1, 1, 1)),
                           lambda: timm.create_model('sep_resnet20_cifar_full', separable=False, layers=(1, 1, 1)),
                           2, 8, torch.bfloat16)
    (row,) = cuda.run(torch.device('cpu'), [tiny], steps=1, warmup=0)
    assert row[:2] == ['tiny', '2, 8x8, AMP bfloat16'] and row[6] == '-'
    assert float(row[4].rstrip('x')) > 0
    assert all(float(ms) > 0 for ms in row[5].removesuffix(' ms').split(' / '))
    picked = dict(part.split() for part in row[7].split(', '))
    assert sum(int(count) for count in picked.values()) == 1 + 3 * 2  # the stem and two convs per block
    assert set(picked) <= {'fused', 'unfused', 'im2col'}


def test_cuda_benchmark_without_a_gpu_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for argv in ([], ['--device', 'gpu7'], ['--device', 'cpu']):
        with pytest.raises(SystemExit, match='needs a CUDA device'):
            cuda.main(argv)
