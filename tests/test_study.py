""" The reproduction study: the --quick command end to end, and the verdict rules on known numbers """
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from study import report as study_report
from study.report import FAILS, HOLDS, PARTLY
from study.run import CONVMIXER, FILTER_INITS, MODES, QUICK, Study, convmixer_kwargs

REPO = Path(__file__).resolve().parents[1]


def _modes(full, chans, space):
    return [dict(family='ConvMixer', depth=2, mode=m, run=f'convmixer-d2-{m}', top1=v, trainable_params=1)
            for m, v in zip(MODES, (full, chans, space))]


def _robust(models):
    """A weak-attack result: models maps label -> (clean, FGSM list, PGD-2 list) over eps 0, 4/255, 8/255."""
    out = {'eps': [0.0, 4 / 255, 8 / 255], 'eps_labels': ['0', '4/255', '8/255'], 'models': {}}
    for label, (clean, fgsm, pgd) in models.items():
        out['models'][label] = {'clean_accuracy': clean, 'accuracy': {'FGSM': fgsm, 'PGD-2': pgd}}
    base = out['models']['chans']
    for label, r in out['models'].items():
        r['relative_improvement'] = {
            a: [None if b == 0 else 100 * (v - b) / b for v, b in zip(r['accuracy'][a], base['accuracy'][a])]
            for a in r['accuracy']}
    return {'weak': out}


def test_chans_near_full_rule():
    assert study_report.verdict_chans_near_full({'modes': _modes(90.0, 89.0, 80.0)})[0] == HOLDS
    assert study_report.verdict_chans_near_full({'modes': _modes(90.0, 86.5, 80.0)})[0] == PARTLY
    verdict, why = study_report.verdict_chans_near_full({'modes': _modes(90.0, 80.0, 70.0)})
    assert verdict == FAILS and '10.00 points' in why


def test_space_far_worse_rule():
    assert study_report.verdict_space_far_worse({'modes': _modes(90.0, 89.0, 80.0)})[0] == HOLDS
    assert study_report.verdict_space_far_worse({'modes': _modes(90.0, 89.0, 87.0)})[0] == PARTLY
    assert study_report.verdict_space_far_worse({'modes': _modes(90.0, 85.0, 88.0)})[0] == FAILS


def test_width_rule_needs_a_narrowing_gap():
    def widths(gaps):
        return {'widths': [dict(width=w, base_width=8 * w, mode=m, top1=90.0 - (g if m == 'chans' else 0))
                           for w, g in zip((1, 2, 4), gaps) for m in ('full', 'chans')]}
    assert study_report.verdict_width(widths([3.0, 2.0, 1.0]))[0] == HOLDS
    assert study_report.verdict_width(widths([3.0, 4.0, 1.0]))[0] == PARTLY
    assert study_report.verdict_width(widths([1.0, 2.0, 3.0]))[0] == FAILS


def test_filter_order_rule():
    def filters(*top1):
        return {'filters': [dict(init=i, run=i, top1=v) for i, v in zip(FILTER_INITS, top1)]}
    assert study_report.verdict_filters(filters(80, 70, 60, 10))[0] == HOLDS
    assert study_report.verdict_filters(filters(80, 60, 70, 10))[0] == PARTLY
    verdict, why = study_report.verdict_filters(filters(60, 70, 80, 10))
    assert verdict == FAILS and why.startswith('Measured order: box 80.00 > same 70.00')


def test_robustness_rule_counts_every_attack_and_eps():
    robust = _robust({
        'full': (90, [90, 40, 20], [90, 35, 15]), 'chans': (89, [89, 45, 25], [89, 40, 18]),
        'full, FGSM-trained': (85, [85, 60, 40], [85, 55, 35]),
        'chans, FGSM-trained': (84, [84, 62, 38], [84, 56, 36])})
    verdict, why = study_report.verdict_robust({'robustness': robust})
    assert verdict == PARTLY and '7 of 8' in why


def test_smoothing_rule_uses_relative_gain_at_the_largest_eps_and_clean_cost():
    def results(sigma_clean, sigma_last):
        return {'robustness': _robust({
            'chans': (89, [89, 40, 20], [89, 30, 10]),
            'chans, sigma 1': (sigma_clean, [sigma_clean, 45, sigma_last[0]], [sigma_clean, 35, sigma_last[1]])})}
    assert study_report.verdict_smoothing(results(88.5, (26, 13)))[0] == HOLDS  # +30% both, clean -0.5
    assert study_report.verdict_smoothing(results(85.0, (26, 13)))[0] == PARTLY  # clean drops 4 points
    assert study_report.verdict_smoothing(results(89.0, (21, 11)))[0] == PARTLY  # +5%, +10%: below 25%
    assert study_report.verdict_smoothing(results(89.0, (19, 11)))[0] == FAILS  # FGSM got worse


def test_smoothing_rule_over_zero_accuracy():
    results = {'robustness': _robust({'chans': (89, [89, 10, 0], [89, 5, 0]),
                                      'chans, sigma 2': (89, [89, 12, 3], [89, 6, 1])})}
    assert study_report.verdict_smoothing(results)[0] == HOLDS


def test_unshuffle_rule_against_trivial_baselines():
    def results(full, chans):
        return {'unshuffle': {'psnr': {'full': full, 'chans': chans, 'space': 10.0},
                              'baselines': {'permuted input': 8.0, 'mean training image': 12.0}}}
    assert study_report.verdict_unshuffle(results(20.0, 19.5))[0] == HOLDS
    assert study_report.verdict_unshuffle(results(20.0, 18.0))[0] == PARTLY
    assert study_report.verdict_unshuffle(results(11.0, 11.0))[0] == FAILS  # below the mean image


def test_render_only_without_results_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count('\n') == 0 and 'reproduction.json' in out.stderr and 'run the study' in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('argv,match', [
    (['--workers', '-1'], '--workers must be >= 0'),
    (['--report-dir', 'FILE'], '--report-dir'),
    (['--output', 'FILE/runs'], 'lies under the file'),
])
def test_bad_flags_fail_before_any_training(tmp_path, argv, match, monkeypatch, capsys):
    study = importlib.import_module('study.__main__')
    trained = []
    monkeypatch.setattr(study, 'run_study', lambda *args: trained.append(args))
    (tmp_path / 'FILE').write_text('mine')
    argv = [a.replace('FILE', str(tmp_path / 'FILE')) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        study.main(['--quick', '--report-dir', str(tmp_path / 'report'), *argv])
    assert exit_info.value.code == 2 and match in capsys.readouterr().err
    assert trained == [] and sorted(p.name for p in tmp_path.iterdir()) == ['FILE']


def test_a_folder_in_the_way_of_a_run_is_not_deleted(tmp_path):
    study = Study(QUICK, tmp_path, seed=0, workers=0)
    mine = tmp_path / 'runs' / 'convmixer-d1-full'
    mine.mkdir(parents=True)
    (mine / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match='is no training run of this study'):
        study.train('convmixer-d1-full', CONVMIXER + '_full', convmixer_kwargs(QUICK, 1))
    assert (mine / 'notes.txt').read_text() == 'mine'


def test_finished_runs_are_reused_once_and_other_recipes_retrained(tmp_path):
    study = Study(QUICK, tmp_path, seed=0, workers=0)
    kwargs = convmixer_kwargs(QUICK, 1)
    folder = tmp_path / 'runs' / 'run'
    folder.mkdir(parents=True)
    record = dict(name='run', settings=study.settings('no_such_model', kwargs), metric=50.0, wall_time_s=12.0)
    (folder / 'study_run.json').write_text(json.dumps(record))
    assert study.train('run', 'no_such_model', kwargs) == record
    assert study.train('run', 'no_such_model', kwargs) == record  # a second experiment sharing the run
    assert study.reused == ['run']
    with pytest.raises(ValueError, match='other arguments'):  # one name, two recipes: the study is inconsistent
        study.train('run', 'no_such_model', convmixer_kwargs(QUICK, 2))

    other = Study(QUICK, tmp_path, seed=1, workers=0)  # another seed: the record does not match, so it retrains
    with pytest.raises(ValueError, match='unknown model'):
        other.train('run', 'no_such_model', kwargs)
    assert not folder.exists() and other.reused == []


def test_attack_results_and_warnings_name_the_study_models(tmp_path):
    study = Study(QUICK, tmp_path, seed=0, workers=0)
    for run in ('a', 'b'):  # one architecture twice: eval_robust alone would tell them apart by folder
        study.train(run, CONVMIXER.format(mode='full'), convmixer_kwargs(QUICK, 1))
    # a PGD step that barely moves is weaker than FGSM, so eval_robust's masking check fires for both models
    weak_pgd = dict(attacks=['fgsm', 'pgd'], pgd_steps=1, pgd_alpha=0.0001, pgd_random_start=False,
                    eps=[('0', 0.0), ('0.3', 0.3)], num_samples=64)
    results = study.attack({'first': 'a', 'second': 'b'}, weak_pgd)
    assert list(results['models']) == ['first', 'second']
    assert results['models']['first']['checkpoint'] != results['models']['second']['checkpoint']
    assert {w.split(': ')[0] for w in results['warnings']} == {'first', 'second'}


def test_committed_report_is_rendered_from_its_json():
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    assert study_report.render(results) == (REPO / 'docs' / 'reproduction.md').read_text()


def test_readme_summary_files_each_claim_under_its_verdict():
    """README's three summary lines are written by hand: each claim must sit under the verdict the report gives."""
    mentions = {  # a phrase of the README summary per claim
        study_report.verdict_chans_near_full: 'behind Full', study_report.verdict_space_far_worse: 'Space is',
        study_report.verdict_width: 'wider', study_report.verdict_filters: 'same 9 random filters',
        study_report.verdict_robust: 'more robust', study_report.verdict_smoothing: 'smoothing',
        study_report.verdict_unshuffle: 'un-shuffles', study_report.verdict_cost: 'per step',
        study_report.verdict_coverage: 'frequency plane'}
    section = (REPO / 'README.md').read_text().split('## Does it hold?')[1].split('\n## ')[0]
    bullets = {}
    for heading, verdict in (('Holds', HOLDS), ('Partly', PARTLY), ('Does not hold here', FAILS)):
        match = re.search(rf'^- \*\*{heading}:\*\*(.*?)(?=^- |^\s*$)', section, re.S | re.M)
        bullets[verdict] = ' '.join(match.group(1).split())
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    for _, claim, rule in study_report.CLAIMS:
        verdict = rule(results)[0]
        assert [v for v, text in bullets.items() if mentions[rule] in text] == [verdict], claim


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    report_dir = tmp_path / 'report'
    out = subprocess.run([sys.executable, '-m', 'study', '--quick', '--output', str(tmp_path / 'runs'),
                          '--report-dir', str(report_dir)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((report_dir / 'reproduction.json').read_text())
    report = (report_dir / 'reproduction.md').read_text()

    # every experiment is there, at the recipe's sizes, trained by train.py into its own run folder
    depths, ns = QUICK.convmixer_depths, QUICK.resnet_depths
    assert len(results['modes']) == 3 * (len(depths) + len(ns))
    assert {r['width'] for r in results['widths']} == set(QUICK.widths)
    assert [r['init'] for r in results['filters']] == list(FILTER_INITS)
    for run in results['runs'].values():
        assert (tmp_path / 'runs' / 'runs' / run['name'] / 'model_best.pth.tar').is_file()
        assert run['settings']['dataset'] == QUICK.dataset
    weak = results['robustness']['weak']
    assert set(weak['models']) == {'full', 'chans', 'space', 'full, FGSM-trained', 'chans, FGSM-trained',
                                   *(f'chans, sigma {s:g}' for s in QUICK.sigmas)}
    assert all(r['num_samples'] == QUICK.robust_samples for r in weak['models'].values())
    assert 'AutoAttack' in next(iter(results['robustness']['autoattack']['models'].values()))['accuracy']
    # a Chans model trains fewer parameters than its Full twin; coverage is a fraction
    trainable = {(r['family'], r['depth'], r['mode']): r['trainable_params'] for r in results['modes']}
    assert all(trainable[f, d, 'chans'] < trainable[f, d, 'full'] for f, d, m in trainable if m == 'full')
    assert all(0 <= b['coverage'] <= 1 for b in results['spectral']['banks'])
    assert all(b['top1'] == results['runs'][b['run']]['metric'] for b in results['spectral']['banks'])
    assert {(r['mode'], r['channels_last']) for r in results['cost']} == {(m, c) for m in MODES for c in (False, True)}

    # the report: a verdict for every claim, its numbers taken from the JSON, every figure beside it
    verdicts = re.findall(r'\| \*\*(holds|partly|does not hold here)\*\* \|', report)
    assert len(verdicts) == len(study_report.CLAIMS)
    assert 'This is a `--quick` run' in report
    for row in results['modes']:
        assert f'{row["top1"]:.2f}' in report
    assert f'{results["unshuffle"]["psnr"]["chans"]:.2f}' in report
    for figure in re.findall(r'!\[[^]]*\]\(([^)]+)\)', report):
        assert (report_dir / figure).stat().st_size > 5000, figure

    # re-rendering reads the JSON alone: a changed number shows up in the report
    results['modes'][0]['top1'] = 12.3456
    (report_dir / 'reproduction.json').write_text(json.dumps(results))
    subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(report_dir)],
                   cwd=REPO, check=True, capture_output=True)
    assert '12.35' in (report_dir / 'reproduction.md').read_text()

    # a report whose reconstructions figure is gone cannot be re-rendered: one line, the old report left whole
    (report_dir / 'reproduction_unshuffle.png').unlink()
    before = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    out = subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(report_dir)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count('\n') == 0 and 'rerun the study' in out.stderr
    assert {p.name: p.read_bytes() for p in report_dir.iterdir()} == before
