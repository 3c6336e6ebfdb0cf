""" The benchmarks behind README's performance section: the growth sweep runs, and README shows their output """
import json

import pytest

from benchmarks import growth, run_all


def test_readme_performance_block_is_the_benchmark_output():
    results = json.loads(run_all.RESULTS.read_text())
    readme = run_all.README.read_text()
    block = readme.split(run_all.START, 1)[1].split(run_all.END, 1)[0]
    assert block.strip() == run_all.readme_block(results).strip()
    assert run_all.GROWTH_PLOT.is_file() and 'core' in results['machine']
    assert run_all.TABLE.read_text().startswith(run_all.readme_block(results))


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
