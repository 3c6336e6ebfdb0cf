""" The reproduction study: the --quick command end to end, the interval rules, and the report's honesty """
import ast
import importlib
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from study import report as study_report
from study.claims import Comparison
from study.parts import PARTS
from study.parts.convergence import CHANS_NEAR_FULL, SPACE_FAR_WORSE, compare_far_worse, compare_nearly
from study.parts.robustness import (ROBUST, SMOOTHING, attack_models, compare_smoothing, levels_section, measure_levels,
                                    merged, with_levels)
from study.parts.unshuffle import UNSHUFFLE_GROWTH, UNSHUFFLE_SPACE, compare_growth, growth_section, measure_growth
from study.parts.unshuffle import compare_space as compare_unshuffle_space
from study.parts.widths import shrink_per_doubling
from study.recipe import CONVMIXER, FULL, MODES, QUICK, RecipeReads, convmixer_kwargs, part_ran_with, same_recipe
from study.rules import rules
from study.runs import Job, Study, busy_seconds, cpu_readings, others_cpu_share
from study.stats import (FAILS, HOLDS, OPEN, PARTLY, Interval, beyond_p, combine, exceeds, exceeds_ratio, holm, paired,
                         ratio, slope_per_doubling, t_interval, welch, within)

REPO = Path(__file__).resolve().parents[1]


def _study_imports(path: Path) -> set:
    """The study modules `path` imports (its relative imports), as dotted names."""
    package = path.relative_to(REPO).with_suffix('').parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = '.'.join(package[:len(package) - node.level + 1])
            names |= {f'{base}.{node.module}'} if node.module else {f'{base}.{a.name}' for a in node.names}
    return names


def test_each_part_is_one_module_below_the_registry():
    """A part imports shared modules only (no other part, not the report or CLI above the registry), and shared
    modules reach the parts through the registry (`study.parts`) alone: a part is read and changed in one place."""
    above = ('study.parts', 'study.report', 'study.__main__')
    for path in sorted((REPO / 'study').rglob('*.py')):
        imports = _study_imports(path)
        if path.parent.name != 'parts':
            assert not [m for m in imports if m.startswith('study.parts.')], path
        elif path.name != '__init__.py':
            assert not [m for m in imports if m.startswith(above)], path

def test_t_interval_matches_the_textbook_value():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.303
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.high - 2.0 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert paired({'0': 5.0, '1': 7.0, '2': 6.0, '3': 1.0}, {'0': 4.0, '1': 5.0, '2': 3.0}).mean == 2.0  # seed 3 unpaired
    assert ratio([2.0, 2.0], [1.0, 1.0]).mean == pytest.approx(2.0)
    assert math.isnan(t_interval([4.0]).low)


def test_welch_interval_matches_scipy():
    from scipy.stats import ttest_ind
    a, b = [71.0, 74.5, 69.0], [75.0, 80.5, 77.0, 76.0]
    expected = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    iv = welch({str(i): v for i, v in enumerate(a)}, {str(i): v for i, v in enumerate(b)})
    assert (iv.low, iv.high) == pytest.approx((expected.low, expected.high))
    assert iv.mean == pytest.approx(sum(a) / 3 - sum(b) / 4)


def _iv(low, high):
    return Interval((low + high) / 2, low, high, 3)


def test_an_interval_containing_zero_is_never_a_ranking():
    assert exceeds(_iv(0.5, 3.0)) == HOLDS
    assert exceeds(_iv(-0.5, 3.0)) == OPEN
    assert exceeds(_iv(-3.0, -0.5)) == FAILS
    assert exceeds(_iv(3.0, 5.0), bar=2.0) == HOLDS  # far worse
    assert exceeds(_iv(0.5, 1.5), bar=2.0) == PARTLY  # worse, not far
    assert exceeds(_iv(-0.5, 1.5), bar=2.0) == FAILS  # below the bar, maybe no difference at all
    assert exceeds(_iv(0.5, 3.0), bar=2.0) == OPEN
    assert within(_iv(-1.0, 1.5), bar=2.0) == HOLDS
    assert within(_iv(1.0, 3.0), bar=2.0) == OPEN
    assert within(_iv(2.5, 3.0), bar=2.0) == FAILS
    assert exceeds(Interval(5.0, math.nan, math.nan, 1)) == OPEN
    assert combine([HOLDS, HOLDS]) == HOLDS and combine([HOLDS, FAILS]) == PARTLY
    assert combine([OPEN, FAILS]) == FAILS and combine([OPEN, OPEN]) == OPEN


def _convergence(convmixer, resnet):
    """Both convergence parts, each a dict {updates: (Full per-seed test top-1, Chans per-seed test top-1)}."""
    def part(family, lengths):
        rows = [dict(mode=mode, epochs=i + 1, optimizer_steps=steps, run=f'{family}-{mode}-{steps}',
                     test={str(s): v for s, v in enumerate(values)}, val={str(s): v for s, v in enumerate(values)},
                     best_epoch={str(s): i for s in range(len(values))}, trainable_params=1, params=2)
                for i, (steps, pair) in enumerate(lengths.items()) for mode, values in zip(('full', 'chans'), pair)]
        return dict(family=family, config=family, train_split='train[:38400]', rows=rows, wall_time_s=1.0)
    return {'quick': False, 'parts': {'convergence_convmixer': part('ConvMixer', convmixer),
                                      'convergence_resnet': part('SepResNet', resnet)}}


def test_nearly_reads_the_longest_length_against_both_registered_margins():
    short_gap = ([80, 81, 79], [70, 71, 69])  # far apart after 300 updates: not what is judged
    close = ([91.0, 91.4, 90.8], [90.4, 90.9, 90.1])
    judged = CHANS_NEAR_FULL.corrected(compare_nearly(_convergence({300: short_gap, 2400: close},
                                                                   {300: short_gap, 2400: close})))
    assert [c.config for c in judged] == ['ConvMixer, 2,400 updates'] * 2 + ['SepResNet, 2,400 updates'] * 2
    assert [c.verdict for c in judged] == [HOLDS] * 4 and CHANS_NEAR_FULL.judge(judged) == HOLDS
    # within 2 points but 40% more errors: the relative margin decides (the gap rows still hold)
    relative = ([96.0, 96.2, 95.9], [94.4, 94.6, 94.3])
    judged = CHANS_NEAR_FULL.corrected(compare_nearly(_convergence({2400: close}, {2400: relative})))
    assert [c.verdict for c in judged] == [HOLDS, HOLDS, HOLDS, FAILS]
    assert CHANS_NEAR_FULL.judge(judged) == FAILS
    # one noisy family: not established there, so the claim holds only partly
    noisy = ([91.0, 91.4, 90.8], [86.0, 91.3, 90.0])
    judged = CHANS_NEAR_FULL.corrected(compare_nearly(_convergence({2400: close}, {2400: noisy})))
    assert [c.verdict for c in judged][2:] == [OPEN, OPEN] and CHANS_NEAR_FULL.judge(judged) == PARTLY


def test_parts_recorded_before_the_margins_moved_or_the_convergence_fields_came_still_count():
    recipe = json.loads(json.dumps(asdict(FULL)))
    old = {k: v for k, v in recipe.items() if not k.startswith('convergence_')}
    assert same_recipe(dict(old, margin=2.0, psnr_margin=1.0), recipe)
    assert not same_recipe(dict(old, margin=2.0, robust_samples=1000), recipe)
    assert not same_recipe(dict(recipe, convergence_epochs=[1, 2]), recipe)


def test_a_part_stands_while_the_recipe_fields_it_read_are_unchanged():
    tracked = RecipeReads(QUICK)
    assert convmixer_kwargs(tracked)['dim'] == QUICK.convmixer_dim
    assert tracked.read == {'convmixer_dim', 'convmixer_depth', 'convmixer_kernel'}
    recipe = json.loads(json.dumps(asdict(QUICK)))
    part = dict(recipe=recipe, recipe_read=sorted(tracked.read))
    assert part_ran_with(part, dict(recipe, base_widths=[2, 4, 8], robust_samples=1))  # fields it never read
    assert not part_ran_with(part, dict(recipe, convmixer_dim=32))
    assert not part_ran_with(dict(recipe=recipe), dict(recipe, robust_samples=1))  # no record: the whole recipe


def test_the_width_trend_reads_every_width_and_the_registered_sweep_is_the_recipes():
    assert shrink_per_doubling({8: 3.0, 16: 2.0, 32: 1.0}) == pytest.approx(1.0)  # one point per doubling
    assert shrink_per_doubling({8: 1.0, 16: 4.0, 32: 1.0}) == pytest.approx(0.0)  # a bump in the middle is no trend
    assert rules()['width']['widths'] == list(FULL.base_widths)


def test_a_part_whose_read_fields_changed_stays_in_the_report_marked_stale(tmp_path):
    from study.__main__ import load_results
    recipe = json.loads(json.dumps(asdict(QUICK)))
    parts = {'widths': dict(recipe=dict(recipe, base_widths=[2]), recipe_read=['base_widths', 'seeds'], runs={}),
             'cost': dict(recipe=dict(recipe, base_widths=[2]), recipe_read=['timing_steps'], runs={})}
    (tmp_path / 'reproduction.json').write_text(json.dumps(dict(quick=True, parts=parts)))
    results = load_results(tmp_path / 'reproduction.json', True, recipe)
    assert set(results['parts']) == {'widths', 'cost'} and results['stale'] == ['widths']


def test_the_convergence_section_and_figure_render_from_the_json(tmp_path):
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    lengths = {300: ([85.0, 85.5, 84.8], [83.0, 83.9, 82.5]), 2400: ([91.0, 91.4, 90.8], [90.4, 90.9, 90.1])}
    convergence = _convergence(lengths, lengths)['parts']
    for part in convergence.values():
        part.update(recipe=dict(results['parts']['modes']['recipe'], convergence_epochs=[1, 8]), runs={},
                    training_s=0.0)
    results['parts'].update(convergence)
    report = study_report.render(results)
    section = report.split('## 2. Accuracy against training length')[1].split('\n## ')[0]
    assert '| ConvMixer | 2,400 |' in section and '**Chans reaches nearly the accuracy of Full: holds.**' in section
    study_report.figures(results)['reproduction_convergence.png'](results, tmp_path / 'convergence.png')
    assert (tmp_path / 'convergence.png').stat().st_size > 5000


def test_nearly_waits_for_both_convergence_parts():
    results = _convergence({2400: ([91.0] * 3, [90.5] * 3)}, {2400: ([91.0] * 3, [90.5] * 3)})
    del results['parts']['convergence_resnet']
    assert not CHANS_NEAR_FULL.ready(results['parts'])


def _robustness(smoothed_fgsm, clean_cost, part='robustness_resnet', family='SepResNet', sigma=1.0):
    """A robustness part of one family: plain Chans at 40% under every attack; smoothed Chans at
    `smoothed_fgsm` per seed under FGSM (60% under the others), `clean_cost` points less clean accuracy."""
    def seed(i):
        def models(attacks, gained):
            return {'chans': dict(clean_accuracy=80.0, accuracy={a: [80.0, 40.0] for a in attacks}),
                    f'chans, sigma {sigma:g}': dict(clean_accuracy=80.0 - clean_cost[i],
                                                    accuracy={a: [80.0, gained.get(a, 60.0)] for a in attacks})}
        return {'weak': dict(eps=[0, 8 / 255], eps_labels=['0', '8/255'],
                             models=models(('FGSM', 'PGD-2'), {'FGSM': smoothed_fgsm[i]})),
                'strong': dict(eps=[0, 8 / 255], eps_labels=['0', '8/255'], models=models(('PGD-10',), {}))}
    return {'parts': {part: dict(sigma=sigma, families={family: dict(seeds={str(i): seed(i) for i in range(3)})})}}


def test_smoothing_is_judged_at_the_papers_relative_bar():
    judged = compare_smoothing(_robustness([60.0, 61.0, 59.0], [0.2, -0.1, 0.3]))
    assert [c.verdict for c in judged] == [HOLDS] * 4 and SMOOTHING.judge(judged) == HOLDS  # 1.5x everywhere
    judged = compare_smoothing(_robustness([46.0, 45.0, 47.0], [0.2, -0.1, 0.3]))  # +15%: a gain, not 25%
    assert judged[0].verdict == PARTLY and SMOOTHING.judge(judged) != HOLDS
    judged = compare_smoothing(_robustness([60.0, 61.0, 59.0], [3.0, 3.2, 2.9]))  # costs 3 points clean
    assert judged[-1].verdict == FAILS and SMOOTHING.judge(judged) == FAILS


def test_each_family_is_judged_with_the_sigma_its_part_ran_with():
    """Two robustness parts may have run with different recipes (one stale): each family reads its own sigma."""
    results = _robustness([60.0, 61.0, 59.0], [0.2, -0.1, 0.3])
    results['parts'].update(_robustness([60.0, 61.0, 59.0], [0.2, -0.1, 0.3], 'robustness_convmixer', 'ConvMixer',
                                        sigma=0.5)['parts'])
    judged = compare_smoothing(results)
    assert [c.config.split(', ')[0] for c in judged] == ['SepResNet'] * 4 + ['ConvMixer'] * 4
    assert SMOOTHING.judge(judged) == HOLDS


def _with_level(results, sigma, fgsm, settings=None):
    """`results` (one SepResNet robustness part, `_robustness`) with an AutoAttack evaluation, the attack settings
    parts record, and a smoothing_levels part whose Chans model at `sigma` reaches `fgsm` under every attack."""
    settings = settings or dict(weak={'eps': 1}, strong={'eps': 2}, autoattack={'eps': 3})
    part = results['parts']['robustness_resnet']
    part.update(weak={'eps': 1}, strong={'eps': 2}, autoattack={'eps': 3})
    for runs in part['families']['SepResNet']['seeds'].values():
        runs['autoattack'] = dict(eps=[8 / 255], eps_labels=['8/255'], models={
            label: dict(clean_accuracy=80.0, accuracy={'AutoAttack': [30.0]}) for label in runs['weak']['models']})
    label = f'chans, sigma {sigma:g}'

    def attacked(attacks, accuracy):
        return dict(eps=[0, 8 / 255], eps_labels=['0', '8/255'], warnings=[],
                    models={label: dict(clean_accuracy=80.0, accuracy={a: [80.0, accuracy] for a in attacks})})
    seeds = {str(i): dict(weak=attacked(('FGSM', 'PGD-2'), fgsm), strong=attacked(('PGD-10',), fgsm),
                          autoattack=attacked(('AutoAttack',), fgsm)) for i in range(3)}
    results['parts']['smoothing_levels'] = dict(families={'SepResNet': dict(seeds=seeds)}, sigma=1.0,
                                                levels=[1.0, sigma], **settings)
    return results


def test_smoothing_levels_are_shown_beside_the_verdict_which_reads_the_registered_sigma_alone():
    plain = compare_smoothing(_robustness([46.0, 45.0, 47.0], [0.2, -0.1, 0.3]))
    results = _with_level(_robustness([46.0, 45.0, 47.0], [0.2, -0.1, 0.3]), 2.0, 80.0)  # sigma 2: 2x the plain 40%
    assert compare_smoothing(results) == plain  # a better-looking level changes no verdict
    joined = with_levels(results)['SepResNet']
    assert joined['levels'] == ['chans', 'chans, sigma 1', 'chans, sigma 2']
    assert all(set(runs['autoattack']['models']) == {'chans', 'chans, sigma 1', 'chans, sigma 2'}
               for runs in joined['seeds'].values())
    section = '\n'.join(levels_section(results, {}))
    assert '| SepResNet, FGSM | sigma 2 | smoothed / Chans, accuracy at 8/255 | 2.00x [2.00, 2.00] | holds |' in section
    assert '| SepResNet, FGSM | sigma 1 |' in section and 'shown, not judged' in section
    assert "No gradient-masking warning for the levels' models" in section
    levels_seed = results['parts']['smoothing_levels']['families']['SepResNet']['seeds']['1']
    levels_seed['weak']['warnings'] = ['chans, sigma 2: PGD-2 above FGSM']  # every level's warning is shown
    assert 'SepResNet, seed 1, chans, sigma 2: PGD-2 above FGSM' in '\n'.join(levels_section(results, {}))
    assert rules()['smoothing']['levels']['sigmas'] == list(FULL.sigma_levels) and FULL.sigma in FULL.sigma_levels

    other = _with_level(_robustness([46.0, 45.0, 47.0], [0.2, -0.1, 0.3]), 2.0, 80.0,
                        settings=dict(weak={'eps': 9}, strong={'eps': 2}, autoattack={'eps': 3}))
    assert with_levels(other) == {}  # attacked otherwise than the robustness part: not comparable, not joined
    assert 'SepResNet: shown once its robustness part has run with the same sigma and attacks' in '\n'.join(
        levels_section(other, {}))
    stale = _with_level(_robustness([46.0, 45.0, 47.0], [0.2, -0.1, 0.3], sigma=0.5), 2.0, 80.0)
    assert with_levels(stale) == {}  # the robustness part judged another sigma: its sigma 1 model is missing
    assert 'shown once its robustness part has run with the same sigma' in '\n'.join(levels_section(stale, {}))
    results['parts']['smoothing_levels']['families']['SepResNet']['seeds']['0']['weak']['indices'] = [3, 1, 4]
    assert with_levels(results) == {}  # other test images for one seed: not comparable either


def test_smoothing_levels_without_the_judged_sigma_are_refused_before_any_training(tmp_path):
    from dataclasses import replace
    from timm_frozenmix.core.errors import UsageError
    with pytest.raises(UsageError, match='must hold the judged sigma 1'):
        measure_levels(Study(replace(QUICK, sigma_levels=(0.5, 2.0)), tmp_path, workers=0))
    assert not (tmp_path / 'runs').exists()


def test_a_ratio_exceeds_its_bar_on_the_log_scale():
    assert exceeds_ratio(Interval(1.5, 1.3, 1.7, 3), 1.25) == HOLDS
    assert exceeds_ratio(Interval(1.25, 1.09, 1.43, 3), 1.25) == OPEN  # above 1x, but 1.25x is inside
    assert exceeds_ratio(Interval(1.1, 1.05, 1.2, 3), 1.25) == PARTLY  # a gain, smaller than registered
    assert exceeds_ratio(Interval(0.9, 0.8, 1.1, 3), 1.25) == FAILS
    assert exceeds_ratio(Interval(1.5, 0.0, 2.0, 3), 1.25) == OPEN  # a zero accuracy: no log interval


def test_a_does_not_hold_must_survive_holm_over_its_claims_comparisons():
    def comparison(verdict, fail_p):
        return Comparison('c', 'm', _iv(1.0, 2.0), ' points', verdict, fail_p)
    claim = CHANS_NEAR_FULL
    weak = [comparison(FAILS, 0.02), comparison(FAILS, 0.03), comparison(HOLDS, 0.99), comparison(OPEN, 0.4)]
    assert [c.verdict for c in claim.corrected(weak)] == [OPEN, OPEN, HOLDS, OPEN]  # 0.02 >= 0.05 / 4
    strong = [comparison(FAILS, 0.001), comparison(FAILS, 0.03), comparison(HOLDS, 0.99)]
    assert [c.verdict for c in claim.corrected(strong)] == [FAILS, OPEN, HOLDS]  # then 0.03 >= 0.05 / 2


def test_holm_rejects_step_down_and_beyond_p_is_one_sided():
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.01 < 0.05/3, then 0.03 >= 0.05/2 stops
    assert holm([0.01, 0.02, 0.04]) == [True, True, True]  # 0.01 < 0.0167, 0.02 < 0.025, 0.04 < 0.05
    iv = t_interval([3.0, 3.5, 4.0])  # mean 3.5, standard error 0.289
    assert beyond_p(iv, 2.0, above=True) == pytest.approx(0.0175, abs=1e-4)  # t = 5.20 with 2 df
    assert beyond_p(iv, 2.0, above=False) == pytest.approx(1 - 0.0175, abs=1e-4)
    assert beyond_p(t_interval([5.0]), 2.0, above=True) == 1.0  # one value: no evidence


def _space_part(convmixer_space, resnet_space):
    """Part convergence_space: Chans at 90% in both families after 2,400 updates, Space at the given per-seed
    accuracies."""
    def family(config, space):
        rows = [dict(mode=mode, epochs=8, optimizer_steps=2400, test={str(s): v for s, v in enumerate(values)},
                     best_epoch={str(s): 7 for s in range(3)}) for mode, values in (('chans', [90, 90.4, 89.8]),
                                                                                   ('space', space))]
        return dict(config=config, rows=rows)
    return {'parts': {'convergence_space': dict(families={'ConvMixer': family('ConvMixer', convmixer_space),
                                                          'SepResNet': family('SepResNet', resnet_space)})}}


def test_space_far_worse_reads_the_longest_length_of_both_families_against_the_margin():
    assert SPACE_FAR_WORSE.needs == ('convergence_space',) and rules()['far_worse']['points'] == 5.0
    far, close, level = [80, 81, 80.5], [88, 88.7, 88.1], [90.1, 89.9, 90.2]
    judged = compare_far_worse(_space_part(far, far))
    assert [c.config for c in judged] == ['ConvMixer, 2,400 updates', 'SepResNet, 2,400 updates']
    assert [c.verdict for c in judged] == [HOLDS, HOLDS] and SPACE_FAR_WORSE.judge(judged) == HOLDS
    assert SPACE_FAR_WORSE.judge(compare_far_worse(_space_part(far, close))) == PARTLY
    judged = SPACE_FAR_WORSE.corrected(compare_far_worse(_space_part(level, level)))
    assert [c.verdict for c in judged] == [FAILS, FAILS] and SPACE_FAR_WORSE.judge(judged) == FAILS


def test_space_unshuffling_is_judged_against_chans_at_the_registered_margin():
    def results(chans, space):
        rows = [dict(mode=m, test={str(i): v for i, v in enumerate(values)})
                for m, values in (('full', [30.0] * 3), ('chans', chans), ('space', space))]
        return {'parts': {'unshuffle': dict(rows=rows)}}
    margin = rules()['unshuffle']['space_far_worse_db']
    assert margin == 3.0 and 'unshuffle' in UNSHUFFLE_SPACE.needs
    far = compare_unshuffle_space(results([29.0, 29.2, 28.9], [20.0, 20.4, 19.8]))
    assert [c.verdict for c in far] == [HOLDS] and far[0].config == 'Chans - Space'
    assert compare_unshuffle_space(results([29.0, 29.2, 28.9], [27.5, 27.8, 27.4]))[0].verdict == PARTLY
    assert compare_unshuffle_space(results([29.0, 29.2, 28.9], [29.1, 29.0, 29.2]))[0].verdict == FAILS


def _growth_results(psnr):
    """Part unshuffle_growth's JSON from `psnr(factor, value, seed)`, the registered sweeps around depth 4, width 96,
    kernel 9."""
    base = dict(depth=4, width=96, kernel=9)
    rows = [dict(factor=factor, value=value, **dict(base, **{factor: value}), trainable_params=1000,
                 test={str(seed): psnr(factor, value, seed) for seed in range(3)},
                 val={str(seed): psnr(factor, value, seed) for seed in range(3)})
            for factor, values in rules()['unshuffle_growth']['sweeps'].items() for value in values]
    return {'parts': {'unshuffle_growth': dict(base=base, size=14, rows=rows)}}


def test_psnr_growth_is_judged_per_factor_by_its_gain_per_doubling_over_every_value():
    assert slope_per_doubling({4: 20.0, 8: 21.0, 16: 22.0}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='two distinct'):
        slope_per_doubling({4: 20.0})
    sweeps = rules()['unshuffle_growth']['sweeps']
    assert (sweeps['depth'], sweeps['width'], sweeps['kernel']) == (
        list(FULL.unshuffle_depths), list(FULL.unshuffle_dims), list(FULL.unshuffle_kernels))
    assert (FULL.unshuffle_depth, FULL.unshuffle_dim, FULL.unshuffle_kernel) == (
        sweeps['depth'][0], sweeps['width'][0], sweeps['kernel'][0])  # the sweeps start at part unshuffle's model

    def growing(factor, value, seed):  # 0.9, 1.0 and 1.1 dB per doubling of each factor, one per seed
        return 20.0 + (1 + 0.1 * (seed - 1)) * math.log2(value)
    judged = UNSHUFFLE_GROWTH.corrected(compare_growth(_growth_results(growing)))
    section = '\n'.join(growth_section(_growth_results(growing), {UNSHUFFLE_GROWTH.key: (
        UNSHUFFLE_GROWTH, UNSHUFFLE_GROWTH.judge(judged), judged)}))
    assert 'fewer channels than k squared (width 96 at kernel 13, width 96 at kernel 17)' in section  # 96 >= 9^2
    assert [c.measure.split('of the ')[1].split(' ')[0] for c in judged] == ['depth', 'width', 'kernel']
    assert [c.interval.mean for c in judged] == pytest.approx([1.0, 1.0, 1.0])
    assert UNSHUFFLE_GROWTH.judge(judged) == HOLDS

    def flat_kernel(factor, value, seed):  # depth and width grow; the kernel's gain is -0.5, 0, +0.5 by seed
        return 20.0 + (0.5 * (seed - 1) if factor == 'kernel' else 1 + 0.1 * (seed - 1)) * math.log2(value)
    judged = UNSHUFFLE_GROWTH.corrected(compare_growth(_growth_results(flat_kernel)))
    assert [c.verdict for c in judged] == [HOLDS, HOLDS, OPEN] and UNSHUFFLE_GROWTH.judge(judged) == PARTLY

    def shrinking(factor, value, seed):
        return 20.0 - (1 + 0.1 * seed) * math.log2(value)
    assert UNSHUFFLE_GROWTH.judge(UNSHUFFLE_GROWTH.corrected(compare_growth(_growth_results(shrinking)))) == FAILS

    def shrinking_kernel(factor, value, seed):  # two factors hold, one fails: the registered rule says fails
        return growing(factor, value, seed) if factor != 'kernel' else shrinking(factor, value, seed)
    judged = UNSHUFFLE_GROWTH.corrected(compare_growth(_growth_results(shrinking_kernel)))
    assert [c.verdict for c in judged] == [HOLDS, HOLDS, FAILS] and UNSHUFFLE_GROWTH.judge(judged) == FAILS


@pytest.mark.parametrize('field, values, match', [
    ('unshuffle_depths', (8, 12), 'depth sweep'), ('unshuffle_kernels', (9,), 'kernel sweep'),
    ('unshuffle_depths', (2, 4), 'receptive field')])
def test_a_growth_sweep_that_cannot_be_judged_is_refused_before_any_training(tmp_path, field, values, match):
    from dataclasses import replace
    from timm_frozenmix.core.errors import UsageError
    study = Study(replace(QUICK, **{field: values}), tmp_path, workers=0)
    with pytest.raises(UsageError, match=match):
        measure_growth(study)
    assert not (tmp_path / 'runs').exists()


def test_render_only_without_results_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count('\n') == 0 and 'reproduction.json' in out.stderr and 'run the study' in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('content, match', [('{"parts": {"modes"', 'is not the study\'s JSON'),
                                            ('[1, 2]', 'is not its JSON'), (b'\xff\xfe', 'is not the study')])
def test_render_only_of_a_corrupt_json_is_a_one_line_error(tmp_path, content, match):
    path = tmp_path / 'reproduction.json'
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count('\n') == 0 and match in out.stderr, out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ['reproduction.json']


@pytest.mark.parametrize('argv,match', [
    (['--workers', '-1'], '--workers must be >= 0'),
    (['--report-dir', 'FILE'], '--report-dir'),
    (['--output', 'FILE/runs'], 'lies under the file'),
])
def test_bad_flags_fail_before_any_training(tmp_path, argv, match, monkeypatch, capsys):
    study = importlib.import_module('study.__main__')
    trained = []
    monkeypatch.setattr(study, 'run_part', lambda *args: trained.append(args))
    (tmp_path / 'FILE').write_text('mine')
    argv = [a.replace('FILE', str(tmp_path / 'FILE')) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        study.main(['--quick', '--report-dir', str(tmp_path / 'report'), *argv])
    assert exit_info.value.code == 2 and match in capsys.readouterr().err
    assert trained == [] and sorted(p.name for p in tmp_path.iterdir()) == ['FILE']


def test_a_finished_part_keeps_the_parts_another_invocation_wrote_meanwhile(tmp_path):
    """Two `python -m study --part ...` beside each other: each writes its part into the JSON as it stands."""
    study = importlib.import_module('study.__main__')
    recipe = json.loads(json.dumps(QUICK.__dict__))
    path = tmp_path / 'reproduction.json'
    first = study.load_results(path, True, recipe)  # the first invocation starts on no results
    study.record_part(path, True, recipe, 'cost', dict(recipe=recipe, rows=['other']))  # the second finishes
    first['parts']['modes'] = dict(recipe=recipe, rows=['mine'])
    written = study.record_part(path, True, recipe, 'modes', first['parts']['modes'])
    on_disk = json.loads(path.read_text())
    assert on_disk == written and on_disk['parts']['cost']['rows'] == ['other']
    assert on_disk['parts']['modes']['rows'] == ['mine'] and on_disk['stale'] == []


def test_a_part_just_measured_holds_what_its_json_will_hold(tmp_path):
    """Tuples become lists at once, so a part compares equal to one an earlier invocation wrote (the smoothing
    levels join the robustness parts only where their attack settings are equal)."""
    from study.runs import run_part
    part = run_part(lambda study: dict(eps=[('8/255', 8 / 255)]), QUICK, tmp_path, workers=0)
    assert part['eps'] == [['8/255', 8 / 255]] and part['recipe']['seeds'] == list(QUICK.seeds)


def test_a_folder_in_the_way_of_a_run_is_not_deleted(tmp_path):
    study = Study(QUICK, tmp_path, workers=0)
    mine = tmp_path / 'runs' / 'convmixer-d1-full'
    mine.mkdir(parents=True)
    (mine / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match='is no training run of this study'):
        study.train(Job('convmixer-d1-full', CONVMIXER.format(mode='full'), convmixer_kwargs(QUICK), 0))
    assert (mine / 'notes.txt').read_text() == 'mine'


def test_finished_runs_are_reused_once_and_other_settings_retrained(tmp_path):
    study = Study(QUICK, tmp_path, workers=0)
    job = Job('run', 'no_such_model', convmixer_kwargs(QUICK), 0)
    folder = tmp_path / 'runs' / 'run'
    folder.mkdir(parents=True)
    record = dict(name='run', settings=study.settings(job), test_metric=50.0, wall_time_s=12.0)
    (folder / 'study_run.json').write_text(json.dumps(record))
    assert study.train(job) == record
    assert study.train(job) == record  # a second experiment sharing the run
    assert study.reused == ['run']
    with pytest.raises(ValueError, match='other arguments'):  # one name, two settings: the study is inconsistent
        study.train(Job('run', 'no_such_model', dict(convmixer_kwargs(QUICK), depth=2), 0))

    assert Study(QUICK, tmp_path, workers=2).train(job) == record  # loader workers change no number: reused

    other = Study(QUICK, tmp_path, workers=0)  # another seed: the record does not match, so it would retrain,
    with pytest.raises(ValueError, match='unknown model'):  # but a setting that cannot train costs nothing
        other.train(Job('run', 'no_such_model', convmixer_kwargs(QUICK), 1))
    assert json.loads((folder / 'study_run.json').read_text()) == record and other.reused == []


def test_attack_results_and_warnings_name_the_study_models(tmp_path):
    study = Study(QUICK, tmp_path, workers=0)
    for run in ('a', 'b'):  # one architecture twice: eval_robust alone would tell them apart by folder
        study.train(Job(run, CONVMIXER.format(mode='full'), convmixer_kwargs(QUICK), 0))
    # a PGD step that barely moves is weaker than FGSM, so eval_robust's masking check fires for both models
    weak_pgd = dict(attacks=['fgsm', 'pgd'], pgd_steps=1, pgd_alpha=0.0001, pgd_random_start=False,
                    eps=[('0', 0.0), ('0.3', 0.3)], num_samples=64)
    results = attack_models(study, {'first': 'a', 'second': 'b'}, weak_pgd, seed=0)
    assert list(results['models']) == ['first', 'second']
    assert results['models']['first']['checkpoint'] != results['models']['second']['checkpoint']
    assert {w.split(': ')[0] for w in results['warnings']} == {'first', 'second'}


def test_committed_report_is_rendered_from_its_json():
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    assert study_report.render(results) == (REPO / 'docs' / 'reproduction.md').read_text()


def test_every_masking_warning_in_the_json_is_in_the_report():
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    resnet = results['parts']['robustness_resnet']['families']['SepResNet']
    resnet['seeds']['2']['weak']['warnings'].append('chans, sigma 1: PGD-2 above FGSM at 4/255 by 3.0 points')
    resnet['seeds']['1']['autoattack']['warnings'].append('full: AutoAttack 12.0 points below PGD-10 at 8/255')
    report = study_report.render(results)
    warnings = [(seed, w) for family in merged(results)['families'].values() for seed, runs in family['seeds'].items()
                for evaluation in ('weak', 'strong', 'autoattack') for w in runs[evaluation]['warnings']]
    assert all(f'seed {seed}, {w}' in report for seed, w in warnings)
    assert 'No gradient-masking warning' not in report.split('### SepResNet')[1].split('###')[0]


def test_with_one_robustness_part_the_report_says_what_the_verdicts_wait_for():
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    results['parts'].pop('robustness_convmixer', None)
    report = study_report.render(results)
    assert '### SepResNet' in report and '### ConvMixer' not in report.split('## 4. Robustness')[1]
    assert 'judged once part robustness_convmixer has run too' in report
    assert '**Chans is more robust than Full' not in report and 'not run yet' in report


def _space_from_convergence(results: dict, shortfall: float) -> dict:
    """A convergence_space part made of the committed convergence parts' longest Chans rows, with Space
    `shortfall` points below Chans in every seed."""
    families, runs = {}, {}
    for name in ('convergence_convmixer', 'convergence_resnet'):
        part = results['parts'][name]
        longest = max(row['optimizer_steps'] for row in part['rows'])
        chans = next(r for r in part['rows'] if r['mode'] == 'chans' and r['optimizer_steps'] == longest)
        space = dict(chans, mode='space', test={seed: v - shortfall for seed, v in chans['test'].items()})
        families[part['family']] = dict(config=part['config'], rows=[chans, space])
        runs.update({run: record for run, record in part['runs'].items() if f'-e{chans["epochs"]}-' in run})
    return dict(results['parts']['convergence_resnet'], families=families, runs=runs)


def test_space_at_the_longest_length_renders_with_or_without_the_convergence_parts():
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    results['parts']['convergence_space'] = _space_from_convergence(results, 6.0)
    report = study_report.render(results)
    space = report.split('### Space at the longest length')[1]
    assert '**Space is far worse than Chans: holds.**' in space
    assert 'Space is far worse than Chans after 8 epochs on `train[:38400]` (2,400 updates), 3 seeds' in \
        study_report.readme_summary(results)
    for name in ('convergence_convmixer', 'convergence_resnet'):
        del results['parts'][name]
    report = study_report.render(results)
    assert '### Space at the longest length' in report and '## 2. Accuracy against training length' not in report
    assert 'reproduction_convergence.png' not in report and 'reproduction_convergence.png' not in \
        study_report.figures(results)


def test_the_budget_names_the_update_count_when_only_some_runs_recorded_it():
    """Runs reused from before the update count was recorded lack it: the budget takes it from one that has it."""
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    runs = list(results['parts']['widths']['runs'].values())
    runs[0]['optimizer_steps'] = 234
    for run in runs[1:]:
        run.pop('optimizer_steps', None)
    widths = next(line for line in study_report.readme_summary(results).split('); ') if 'get wider' in line)
    assert 'get wider after 3 epochs on `train[:10000]` (234 updates), 3 seeds' in widths


def test_the_time_budget_names_the_total_and_every_part_over_the_registered_limits():
    budget = rules()['budget']
    part, total, alone = budget['part_minutes'] * 60, budget['total_minutes'] * 60, budget['alone_others_cpu_share']
    def check(times, complete, shares=None):
        return study_report.time_budget(times, complete, shares or dict.fromkeys(times, 0.0))
    assert check({'modes': part, 'cost': 1.0}, False).endswith('the parts so far are within it.')
    over = check({'modes': part + 60, 'widths': part}, True)
    assert over.endswith(f'the study is over it: modes {part / 60 + 1:.1f} min.')
    parts = dict.fromkeys(PARTS, part)
    assert len(PARTS) * part > total
    assert f'over it: {len(PARTS) * part / 60:.1f} min in total.' in check(parts, True)
    # a part timed beside other work is over it however short; one without a record is named, not judged
    busy = check({'modes': 60.0, 'cost': 1.0}, True, {'modes': alone + 0.05, 'cost': None})
    assert f'over it: modes not run alone (other processes used {alone + 0.05:.1%}' in busy
    assert busy.endswith('Not recorded whether it ran alone: cost.')
    assert check({'modes': 60.0}, True, {'modes': alone}).endswith('the study is within it.')


def test_busy_seconds_reads_the_working_columns_of_proc_stat():
    # user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks
    assert busy_seconds('cpu  100 20 30 5000 40 6 7 8 90 9', 100) == pytest.approx((100 + 20 + 30 + 6 + 7 + 8) / 100)


def test_others_cpu_share_is_the_machine_s_busy_time_less_this_process_s(monkeypatch):
    import study.runs as runs
    monkeypatch.setattr(runs.os, 'cpu_count', lambda: 2)
    monkeypatch.setattr(runs, 'cpu_readings', lambda: (130.0, 25.0))  # 30 s busy since the start, 20 of them ours
    assert runs.others_cpu_share((100.0, 5.0), 50.0) == pytest.approx(10.0 / 100.0)
    assert runs.others_cpu_share((None, 5.0), 50.0) is None  # no record at the start: none at the end
    assert runs.others_cpu_share((100.0, 5.0), 4.0) == 1.0  # at most all of it
    monkeypatch.setattr(runs, 'cpu_readings', lambda: (130.0, 40.0))  # clock granularity: never below 0
    assert runs.others_cpu_share((100.0, 5.0), 50.0) == 0.0


@pytest.mark.skipif(cpu_readings()[0] is None, reason='the machine\'s CPU time is read from Linux\'s /proc/stat')
def test_others_cpu_share_sees_another_process_spinning():
    spin = 'import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass'
    readings, start = cpu_readings(), time.perf_counter()
    other = subprocess.Popen([sys.executable, '-c', spin])
    os.waitid(os.P_PID, other.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped (then it would count as ours)
    elapsed = time.perf_counter() - start
    share = others_cpu_share(readings, elapsed)
    other.wait()
    assert share * elapsed * (os.cpu_count() or 1) >= 0.7  # of its 1 s of CPU time; other load only adds


def test_a_part_s_share_covers_the_runs_it_counts_even_when_an_earlier_invocation_trained_them():
    run = dict(wall_time_s=10.0, others_cpu_share=0.5)  # trained beside other work, then reused
    parts = {'modes': dict(runs={'a': run, 'b': dict(run, others_cpu_share=0.0)}, wall_time_s=1.0, training_s=0.0,
                           others_cpu_share=0.0),
             'widths': dict(runs={'a': run, 'c': dict(run, others_cpu_share=None)}, wall_time_s=1.0, training_s=0.0,
                            others_cpu_share=0.0)}
    shares = study_report.part_shares(dict(parts=parts))
    assert shares == {'modes': 0.5, 'widths': None}  # widths counts c only, which has no record
    assert study_report.part_times(dict(parts=parts)) == {'modes': 21.0, 'widths': 11.0}


def test_robustness_verdicts_wait_for_both_families():
    assert ROBUST.needs == SMOOTHING.needs == ('robustness_resnet', 'robustness_convmixer')
    assert not ROBUST.ready({'robustness_resnet': {}}) and not SMOOTHING.ready({'robustness_convmixer': {}})
    assert ROBUST.ready({'robustness_resnet': {}, 'robustness_convmixer': {}})


def test_a_part_the_study_no_longer_has_is_left_out(tmp_path):
    """JSON written when robustness was one part: it is dropped (its two successors rerun), the others kept."""
    from study.__main__ import load_results, read_results
    recipe = json.loads(json.dumps(asdict(QUICK)))
    parts = {'robustness': dict(recipe=recipe, recipe_read=['seeds'], runs={}),
             'cost': dict(recipe=dict(recipe, timing_steps=1), recipe_read=['timing_steps'], runs={})}
    path = tmp_path / 'reproduction.json'
    path.write_text(json.dumps(dict(quick=True, parts=parts, stale=['robustness', 'cost'])))
    assert set(read_results(path)['parts']) == {'cost'} and read_results(path)['stale'] == ['cost']
    results = load_results(path, True, recipe)
    assert set(results['parts']) == {'cost'} and results['stale'] == ['cost']


def test_verdicts_read_on_stale_parts_say_so_in_readme_and_report():
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    results['stale'] = ['unshuffle']
    summary = study_report.readme_summary(results)
    unshuffle = [claim for claim in summary.split('); ') if 'un-shuffle' in claim]
    assert len(unshuffle) == 2 and all(', on stale runs of unshuffle (' in claim for claim in unshuffle)
    assert summary.count('stale') == 2
    table = [row for row in study_report.render(results).splitlines() if row.startswith('| ') and 'un-shuffle' in row]
    assert len(table) == 2 and all('**, on stale runs of unshuffle |' in row for row in table)


def test_readme_summary_is_the_reports():
    """README states the verdicts the committed report gives, with their intervals, and no other."""
    results = json.loads((REPO / 'docs' / 'reproduction.json').read_text())
    readme = (REPO / 'README.md').read_text()
    summary = readme.split(study_report.SUMMARY_START)[1].split(study_report.SUMMARY_END)[0]
    assert summary.strip() == study_report.readme_summary(results)


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    report_dir = tmp_path / 'report'
    out = subprocess.run([sys.executable, '-m', 'study', '--quick', '--output', str(tmp_path / 'runs'),
                          '--report-dir', str(report_dir)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((report_dir / 'reproduction.json').read_text())
    report = (report_dir / 'reproduction.md').read_text()
    parts = results['parts']
    assert set(parts) == set(PARTS)
    assert all({'seeds', 'dataset'} <= set(part['recipe_read']) for name, part in parts.items() if name != 'cost')

    # every configuration with every seed, trained by train.py into its own run folder, best epoch on validation
    runs = {name: run for part in parts.values() for name, run in part['runs'].items()}
    for name, run in runs.items():
        assert (tmp_path / 'runs' / 'runs' / name / 'model_best.pth.tar').is_file()
        long = name.startswith('convergence-')  # the convergence parts' runs train longer, on more images
        assert run['settings']['train_split'] == (QUICK.convergence_train_split if long else QUICK.train_split)
        assert run['settings']['val_split'] == QUICK.val_split
        assert len(run['val_curve']) == run['settings']['epochs']
        assert run['settings']['epochs'] in (QUICK.convergence_epochs if long else (QUICK.epochs,))
        assert run['optimizer_steps'] == run['settings']['epochs'] * (512 // 128)  # train[:512], batch 128
        assert run['val_metric'] == max(run['val_curve']) and run['best_epoch'] == run['val_curve'].index(max(run['val_curve']))
    for row in parts['modes']['rows']:
        assert sorted(row['test']) == [str(s) for s in QUICK.seeds]
    assert {r['mode'] for r in parts['modes']['rows']} == {*MODES, 'dense'}
    assert {r['base_width'] for r in parts['widths']['rows']} == set(QUICK.base_widths)
    for name in ('convergence_convmixer', 'convergence_resnet'):
        assert {(r['mode'], r['optimizer_steps']) for r in parts[name]['rows']} == {
            (mode, epochs * 4) for mode in ('full', 'chans') for epochs in QUICK.convergence_epochs}
    space = parts['convergence_space']['families']  # Space beside the same Chans runs, at the longest length
    assert list(space) == ['ConvMixer', 'SepResNet']
    assert all({(r['mode'], r['optimizer_steps']) for r in family['rows']} == {
        ('chans', 4 * max(QUICK.convergence_epochs)), ('space', 4 * max(QUICK.convergence_epochs))}
        for family in space.values())
    chans_runs = {r['run'] for family in space.values() for r in family['rows'] if r['mode'] == 'chans'}
    assert chans_runs <= {r['run'] for name in ('convergence_convmixer', 'convergence_resnet')
                          for r in parts[name]['rows']}
    assert {r['mode'] for r in parts['widths']['rows']} == set(MODES)
    assert set(parts['robustness_resnet']['families']) == {'SepResNet'}
    assert set(parts['robustness_convmixer']['families']) == {'ConvMixer'}
    robustness = merged(results)['families']
    assert list(robustness) == ['SepResNet', 'ConvMixer']
    assert all(parts[name]['weak']['pgd_random_start'] is False and parts[name]['weak']['pgd_steps'] == 2
               for name in ('robustness_resnet', 'robustness_convmixer'))
    weak = robustness['SepResNet']['seeds']['0']['weak']
    assert all(r['num_samples'] == QUICK.robust_samples for r in weak['models'].values())
    for family in robustness.values():  # AutoAttack on every model of every seed, each seed on its own images
        assert all(set(runs['autoattack']['models']) == set(weak['models']) for runs in family['seeds'].values())
        assert family['seeds']['0']['weak']['seed'] == 0 and family['seeds']['1']['weak']['seed'] == 1
        assert family['sweep']['eps_labels'] == QUICK.sweep_eps.split(',')
        assert all(len(curve) == QUICK.epochs for curves in family['monitor'].values() for curve in curves.values())
    assert parts['robustness_resnet']['strong']['pgd_restarts'] == QUICK.pgd_restarts
    levels = parts['smoothing_levels']['families']  # only the levels beside the judged sigma are attacked here
    assert set(levels) == {'SepResNet', 'ConvMixer'}
    assert all(set(runs[e]['models']) == {f'chans, sigma {s:g}' for s in QUICK.sigma_levels if s != QUICK.sigma}
               for family in levels.values() for runs in family['seeds'].values() for e in ('weak', 'autoattack'))
    assert list(with_levels(results)) == ['SepResNet', 'ConvMixer']
    assert '| ConvMixer | chans, sigma 0.5 |' in report
    assert parts['unshuffle']['receptive_field'] >= 2 * QUICK.unshuffle_size - 1
    growth = parts['unshuffle_growth']  # Chans grown one factor at a time, sharing part unshuffle's runs
    assert {(r['factor'], r['value']) for r in growth['rows']} == {
        *(('depth', v) for v in QUICK.unshuffle_depths), *(('width', v) for v in QUICK.unshuffle_dims),
        *(('kernel', v) for v in QUICK.unshuffle_kernels)}
    base_runs = {r['run'] for r in growth['rows'] if (r['depth'], r['width'], r['kernel']) == (
        QUICK.unshuffle_depth, QUICK.unshuffle_dim, QUICK.unshuffle_kernel)}
    assert base_runs == {'unshuffle-chans'} and 'unshuffle-chans-s0' not in study_report.counted_runs(results)[
        'unshuffle_growth']
    assert {(r['family'], r['execution']) for r in parts['cost']['rows']} == {
        ('ConvMixer', 'naive'), ('SepResNet', 'naive'), ('SepResNet', 'ours')}

    # the report: a verdict for every claim, with its interval, every figure beside it
    assert 'This is a `--quick` run' in report
    for claim, verdict, comparisons in study_report.judge(results):
        assert verdict is not None and f'**{verdict}**' in report, claim.key
        assert all(c.interval.text(c.unit) in report for c in comparisons)
    for figure in re.findall(r'!\[[^]]*\]\(([^)]+)\)', report):
        assert (report_dir / figure).stat().st_size > 5000, figure

    # re-rendering reads the JSON alone: a changed number shows up in the report
    parts['modes']['rows'][0]['test']['0'] = 12.3456
    (report_dir / 'reproduction.json').write_text(json.dumps(results))
    subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(report_dir)],
                   cwd=REPO, check=True, capture_output=True)
    assert study_report.render(results) == (report_dir / 'reproduction.md').read_text()

    # rerunning reuses every finished part and run: nothing is trained again
    out = subprocess.run([sys.executable, '-m', 'study', '--quick', '--output', str(tmp_path / 'runs'),
                          '--report-dir', str(report_dir), '--part', 'modes'], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    again = json.loads((report_dir / 'reproduction.json').read_text())['parts']['modes']
    assert sorted(again['reused_runs']) == sorted(parts['modes']['runs'])

    # a report whose reconstructions figure is gone cannot be re-rendered: one line, the old report left whole
    (report_dir / 'reproduction_unshuffle.png').unlink()
    before = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    out = subprocess.run([sys.executable, '-m', 'study', '--render-only', '--report-dir', str(report_dir)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count('\n') == 0 and 'rerun the study' in out.stderr
    assert {p.name: p.read_bytes() for p in report_dir.iterdir()} == before


def test_readme_summary_shows_a_bound_near_no_difference_with_the_digits_that_place_it():
    """One decimal (two for ratios) unless a bound would round onto 0 (or 1x) without being it."""
    short = lambda low, high, unit: study_report._short(
        Comparison('c', 'm', Interval((low + high) / 2, low, high, 3), unit, 'holds'))
    assert short(0.4, 1.9, ' dB') == 'c: +1.1 dB [+0.4, +1.9]'
    assert short(0.01, 1.87, ' dB') == 'c: +0.94 dB [+0.01, +1.87]'
    assert short(-0.004, 2.0, ' points') == 'c: +0.998 points [-0.004, +2.000]'
    assert short(0.996, 1.2, 'x') == 'c: 1.098x [0.996, 1.200]'
    assert short(1.02, 1.2, 'x') == 'c: 1.11x [1.02, 1.20]'
    assert short(0.0, 1.0, ' dB') == 'c: +0.5 dB [+0.0, +1.0]'
