""" Parts `robustness_resnet` and `robustness_convmixer`: attacks on a separable ResNet (as in the paper) and on a
ConvMixer

Undefended, FGSM-trained and smoothed models of each family are attacked through eval_robust's library
(`RobustConfig`, `robust.evaluate`), every seed on its own random subset of the test images (so the seed-to-seed
spread holds the image sampling too): weak attacks (FGSM, PGD-2), a strong one (PGD-10 with random restarts) and
the standard AutoAttack, every model of every seed; on seed 0, PGD-10 over an eps sweep that should reach near 0%.
FGSM training's validation PGD accuracy, epoch by epoch, is its catastrophic-overfitting monitor. The two families
are two parts so that each runs (and is committed) within an hour; the claims read both. Part `smoothing_levels`
smooths the frozen filters at other sigmas and attacks those models the same way, shown beside the smoothing verdict.
"""
import logging
import math
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Tuple

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.evaluation import robust
from timm_frozenmix.io.reporting import attack_name, markdown_table, new_figure, save_figure

from ..claims import Claim, Comparison, all_required, compared
from ..part import Part
from ..recipe import family_model
from ..rules import rules
from ..runs import Study
from ..sections import Verdicts, mean_cell, verdict_blocks
from ..stats import combine, paired, ratio, welch

_logger = logging.getLogger('study')

MASKING_GAP = 10.0  # points: AutoAttack this far below PGD-10 flags gradient masking
ROBUSTNESS_FIGURE = 'reproduction_robustness.png'


def eps_list(text: str) -> List[Tuple[str, float]]:
    """'0,2/255' as [('0', 0.0), ('2/255', 0.0078...)], eps in pixel units."""
    return [(item, float(Fraction(item))) for item in text.split(',')]


FAMILIES = {'robustness_resnet': 'SepResNet', 'robustness_convmixer': 'ConvMixer'}


def _measure(part: str):
    def measure(study: Study) -> dict:
        r = study.recipe
        strong_eps = eps_list(r.strong_eps)[0][1]
        family = FAMILIES[part]
        variants = {'full': ('full', '', {}), 'chans': ('chans', '', {}),
                    'full, FGSM-trained': ('full', '-fgsm', dict(adv_train='fgsm', adv_eps=strong_eps)),
                    'chans, FGSM-trained': ('chans', '-fgsm', dict(adv_train='fgsm', adv_eps=strong_eps)),
                    sigma_label(r.sigma): ('chans', smoothed_suffix(r.sigma), dict(smooth_sigma=r.sigma))}
        models = {label: family_model(family, r, mode) for label, (mode, _, _) in variants.items()}
        labels = {label: models[label][0] + suffix for label, (_, suffix, _) in variants.items()}
        jobs = [job for label, (_, _, settings) in variants.items()
                for job in study.seeds(labels[label], *models[label][1:], **settings)]
        study.train_all(part, jobs)
        weak, strong, autoattack = (attack_settings(r)[name] for name in EVALUATIONS)
        sweep = dict(attacks=['pgd'], pgd_steps=10, pgd_restarts=r.pgd_restarts, eps=eps_list(r.sweep_eps),
                     num_samples=r.robust_samples)
        per_seed = {}
        for seed in r.seeds:
            runs = {label: f'{name}-s{seed}' for label, name in labels.items()}
            per_seed[str(seed)] = {evaluation: attack_models(study, runs, settings, seed)
                                   for evaluation, settings in attack_settings(r).items()}
        first = {label: f'{name}-s{r.seeds[0]}' for label, name in labels.items()}
        measured = dict(runs=labels, seeds=per_seed, sweep=attack_models(study, first, sweep, r.seeds[0]),
                        monitor={label: {str(seed): study.runs[f'{labels[label]}-s{seed}']['val_pgd_curve']
                                         for seed in r.seeds} for label in labels if 'FGSM' in label})
        return dict(families={family: measured}, sigma=r.sigma, masking_gap=MASKING_GAP, weak=weak, strong=strong,
                    autoattack=autoattack, sweep=dict(sweep, seed=r.seeds[0]), images='a random subset per seed')
    return measure


EVALUATIONS = ('weak', 'strong', 'autoattack')


def attack_settings(r) -> Dict[str, dict]:
    """The RobustConfig settings of each evaluation in `EVALUATIONS` that every attacked model of a seed gets."""
    return dict(
        weak=dict(attacks=['fgsm', 'pgd'], pgd_steps=2, pgd_random_start=False, eps=eps_list(r.eps),
                  num_samples=r.robust_samples),
        strong=dict(attacks=['fgsm', 'pgd'], pgd_steps=10, pgd_restarts=r.pgd_restarts, eps=eps_list(r.strong_eps),
                    num_samples=r.robust_samples),
        autoattack=dict(attacks=['pgd', 'autoattack'], pgd_steps=10, eps=eps_list(r.strong_eps),
                        num_samples=r.autoattack_samples, masking_gap=MASKING_GAP))


def merged(results: dict) -> dict:
    """The robustness numbers of the parts that have run, their families merged in part order; each family
    carries the smoothing sigma its part ran with (two parts may have run with different recipes)."""
    ran = [results['parts'][name] for name in FAMILIES if name in results['parts']]
    return dict(ran[0], families={family: dict(numbers, sigma=part['sigma'])
                                  for part in ran for family, numbers in part['families'].items()})


def attack_models(study: Study, models: Dict[str, str], settings: dict, seed: int) -> dict:
    """The robustness evaluation of the study's checkpoints (RobustConfig `settings`) on the random subset of
    the test images that `seed` draws; results and warnings name the models by the study's own labels."""
    config = robust.RobustConfig(
        checkpoint=[study.runs[run]['checkpoint'] for run in models.values()], dataset=study.recipe.dataset,
        seed=seed, workers=study.workers, output=str(study.output), **settings)
    _logger.info(f'Attacking {", ".join(models.values())}: {settings}')
    results = robust.evaluate(config)
    by_checkpoint = {r['checkpoint']: r for r in results['models'].values()}
    results['models'] = {label: by_checkpoint[str(Path(study.runs[run]['checkpoint']).resolve())]
                         for label, run in models.items()}
    results['warnings'] = [w for label, r in results['models'].items()
                           for w in robust.masking_warnings(label, r, config.eps, config.masking_gap)]
    return results


def largest_eps(seed_results: dict, evaluation: str = 'weak') -> int:
    """The index of the largest eps of one seed's `evaluation` ('weak', 'strong' or 'autoattack')."""
    return len(seed_results[evaluation]['eps']) - 1


def attack_accuracy(family: dict, label: str, evaluation: str, attack: str, index: int) -> Dict[str, float]:
    """Per seed: the accuracy of model `label` under `attack` at the eps of `index` ('clean': no attack)."""
    if attack == 'clean':
        return {s: runs[evaluation]['models'][label]['clean_accuracy'] for s, runs in family['seeds'].items()}
    return {s: runs[evaluation]['models'][label]['accuracy'][attack][index] for s, runs in family['seeds'].items()}


def compare_robust(results: dict) -> List[Comparison]:
    robustness = merged(results)
    out = []
    for name, family in robustness['families'].items():
        weak = next(iter(family['seeds'].values()))['weak']
        i, eps = largest_eps(next(iter(family['seeds'].values()))), weak['eps_labels'][-1]
        for chans, full in (('chans', 'full'), ('chans, FGSM-trained', 'full, FGSM-trained')):
            for attack in ('FGSM', 'PGD-2'):
                iv = paired(attack_accuracy(family, chans, 'weak', attack, i),
                            attack_accuracy(family, full, 'weak', attack, i))
                out.append(compared(f'{name}{", FGSM-trained" if "FGSM" in chans else ""}, {attack}',
                                    f'Chans - Full, accuracy at {eps}', iv, ' points', 'exceeds'))
    return out


def compare_smoothing(results: dict) -> List[Comparison]:
    """Per family: smoothed / plain Chans accuracy at the largest eps for each registered attack against the
    registered relative gain, and the clean cost against its margin (`preregistration.yaml`, `smoothing`)."""
    return [c for name, family in merged(results)['families'].items()
            for c in smoothing_comparisons(name, family, sigma_label(family['sigma']))]


def sigma_label(sigma: float) -> str:
    return f'chans, sigma {sigma:g}'


def smoothed_suffix(sigma: float) -> str:
    """What a Chans run's name gets when its frozen filters are smoothed at `sigma`, in the robustness and the
    levels parts alike (the run cache finds runs by name)."""
    return f'-sigma{sigma:g}'


def smoothing_comparisons(name: str, family: dict, smoothed: str) -> List[Comparison]:
    """The smoothing rule's comparisons of model `smoothed` against plain Chans in one family's attack results."""
    rule = rules()['smoothing']
    first = next(iter(family['seeds'].values()))
    out = []
    for attack in rule['attacks']:
        evaluation = 'weak' if attack in first['weak']['models']['chans']['accuracy'] else 'strong'
        i, eps = largest_eps(first, evaluation), first[evaluation]['eps_labels'][-1]
        gained, plain = (attack_accuracy(family, label, evaluation, attack, i) for label in (smoothed, 'chans'))
        seeds = [s for s in gained if s in plain]
        iv = ratio([gained[s] for s in seeds], [plain[s] for s in seeds])
        out.append(compared(f'{name}, {attack}', f'smoothed / Chans, accuracy at {eps}', iv, 'x',
                            'exceeds_ratio', rule['relative_gain']))
    iv = paired(attack_accuracy(family, 'chans', 'weak', 'clean', 0),
                attack_accuracy(family, smoothed, 'weak', 'clean', 0))
    out.append(compared(f'{name}, clean', 'Chans - smoothed, clean accuracy', iv, ' points', 'within',
                        rule['clean_cost_points']))
    return out


def smoothing_verdict(comparisons: List[Comparison]) -> str:
    """Per family, weak and strong gains and the clean cost are all required; then combined over families."""
    families = dict.fromkeys(c.config.split(', ')[0] for c in comparisons)
    return combine(all_required([c for c in comparisons if c.config.split(', ')[0] == f]) for f in families)


ROBUST = Claim(
    'robust', 'Chans is more robust than Full to FGSM and PGD-2, undefended and FGSM-defended', tuple(FAMILIES),
    compare_robust, 'holds when Chans - Full at the largest eps lies above 0', needs_all=True)
SMOOTHING = Claim(
    'smoothing', 'Smoothing the frozen filters raises robustness without hurting clean accuracy', tuple(FAMILIES),
    compare_smoothing, f'per model family, smoothed / Chans accuracy at the largest eps must lie above '
                       f'{rules()["smoothing"]["relative_gain"]:g}x for {", ".join(rules()["smoothing"]["attacks"])} '
                       f'(the paper\'s "over 25% relative"), and the clean cost below '
                       f'{rules()["smoothing"]["clean_cost_points"]:g} point', smoothing_verdict, needs_all=True)


def setting(recipe: dict) -> List[str]:
    return [
        f'- Robustness on the SepResNet with n = {recipe["resnet_depths"][0]} (as in the paper) and on the ConvMixer, '
        f'one part each: {recipe["robust_samples"]} test images, FGSM and PGD-2 without random start (step 1.25 '
        f'eps) at eps {recipe["eps"]}; FGSM-defended models trained on FGSM examples at {recipe["strong_eps"]}; '
        f'smoothing with sigma {recipe["sigma"]:g}; PGD-10 with {recipe["pgd_restarts"]} random restarts as the '
        f'strong attack, the standard AutoAttack on {recipe["autoattack_samples"]} images of every model and seed, '
        f'each seed on its own random images, and a PGD-10 sweep to eps {recipe["sweep_eps"].split(",")[-1]}.']


def section(results: dict, verdicts: Verdicts) -> List[str]:
    robustness = merged(results)
    out = ['## 4. Robustness', '',
           'Paper: Chans is more robust than Full to FGSM and PGD-2, and stays so with FGSM-defended training; '
           'smoothing the frozen random filters raises robustness further (over 25% relative at the largest eps) '
           'without hurting clean accuracy.', '']
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
        weak, strong = first['weak'], first['strong']
        header = ['model', 'clean'] + [f'{a} at {e}' for a in ('FGSM', 'PGD-2') for e in weak['eps_labels'][1:]] \
            + [f'{attack_name(strong, "PGD-10")} at {strong["eps_labels"][-1]}']
        body = []
        for label in weak['models']:
            cells = [mean_cell(attack_accuracy(family, label, 'weak', 'clean', 0))]
            cells += [mean_cell(attack_accuracy(family, label, 'weak', a, i))
                      for a in ('FGSM', 'PGD-2') for i in range(1, len(weak['eps']))]
            cells += [mean_cell(attack_accuracy(family, label, 'strong', 'PGD-10', len(strong['eps']) - 1))]
            body.append([label, *cells])
        out += [f'### {name}', '',
                f'Top-1 (%) on {weak["num_samples"]} test images ({robustness["images"]}), '
                'mean ± 95% interval half-width over seeds:', '', markdown_table(header, body), '',
                *autoattack_lines(family), *sweep_lines(family), *monitor_lines(family),
                *warning_lines(robustness, family)]
    out += [f'![robustness]({ROBUSTNESS_FIGURE})', '']
    waiting = [name for name in FAMILIES if name not in results['parts']]
    if waiting:  # the verdicts compare both families' parts
        return out + [f'The robustness and smoothing verdicts are judged once part {", ".join(waiting)} has run '
                      'too.', '']
    return out + verdict_blocks(verdicts, ROBUST.key) + robust_beside(results) + verdict_blocks(verdicts, SMOOTHING.key)


def autoattack_lines(family: dict) -> List[str]:
    """The standard AutoAttack beside PGD-10 on the same images, every model of every seed."""
    aa = next(iter(family['seeds'].values()))['autoattack']
    body = [[label, *(mean_cell({s: runs['autoattack']['models'][label][key] if key == 'clean_accuracy' else
                                 runs['autoattack']['models'][label]['accuracy'][key][-1]
                                 for s, runs in family['seeds'].items()})
                      for key in ('clean_accuracy', 'PGD-10', 'AutoAttack'))] for label in aa['models']]
    return [f'Standard AutoAttack beside PGD-10, every seed, {aa["num_samples"]} images each, mean ± 95% interval '
            f'half-width, eps {aa["eps_labels"][-1]}:', '',
            markdown_table(['model', 'clean', attack_name(aa, 'PGD-10'), 'AutoAttack'], body), '']


NEAR_ZERO = 5.0  # % top-1: what "near 0%" means for the eps sweep's largest radius


def sweep_lines(family: dict) -> List[str]:
    """PGD-10 over growing eps on seed 0: an attack that works drives every model near 0% (a sanity check)."""
    sweep = family['sweep']
    body = [[label, *(f'{v:.1f}' for v in r['accuracy']['PGD-10'])] for label, r in sweep['models'].items()]
    above = [label for label, r in sweep['models'].items() if r['accuracy']['PGD-10'][-1] > NEAR_ZERO]
    return [f'{attack_name(sweep, "PGD-10")} top-1 (%) as eps grows, seed {next(iter(family["seeds"]))}, '
            f'{sweep["num_samples"]} images:', '',
            markdown_table(['model', *(f'eps {e}' for e in sweep['eps_labels'])], body), '',
            (f'Not near 0% at eps {sweep["eps_labels"][-1]} (above {NEAR_ZERO:g}%): {", ".join(above)}: their '
             'gradients may be masked' if above else
             f'Every model falls to {NEAR_ZERO:g}% or less at eps {sweep["eps_labels"][-1]}: the attack works.'), '']


def monitor_lines(family: dict) -> List[str]:
    """FGSM training's validation top-1 under PGD, epoch by epoch: a collapse (catastrophic overfitting) shows."""
    if not family.get('monitor'):
        return []
    body = [[label, seed, ', '.join(f'{v:.1f}' for v in curve)] for label, curves in family['monitor'].items()
            for seed, curve in curves.items()]
    collapsed = [f'{label}, seed {seed}' for label, curves in family['monitor'].items()
                 for seed, curve in curves.items() if curve and curve[-1] < 0.5 * max(curve)]
    return ['Catastrophic-overfitting monitor: validation top-1 (%) under PGD during FGSM training, per epoch:', '',
            markdown_table(['model', 'seed', 'PGD top-1 per epoch'], body), '',
            (f'Collapsed (last epoch below half its best): {"; ".join(collapsed)}.' if collapsed else
             'No collapse: no run ends below half its best PGD accuracy.'), '']


def warning_lines(robustness: dict, family: dict) -> List[str]:
    """Every gradient-masking warning of every evaluation: PGD weaker than FGSM, AutoAttack far below PGD."""
    warnings = [f'seed {seed}, {w}' for seed, runs in family['seeds'].items()
                for evaluation in ('weak', 'strong', 'autoattack') for w in runs[evaluation]['warnings']]
    if warnings:
        return [f'Gradient-masking warnings: {"; ".join(warnings)}', '']
    return ['No gradient-masking warning: PGD-2 and PGD-10 are at least as strong as FGSM for every seed and eps, '
            f'and AutoAttack stays within {robustness["masking_gap"]:g} points of PGD-10.', '']


def robust_beside(results: dict) -> List[str]:
    """Beside the robustness verdict, shown, not judged: each comparison as Welch's unpaired interval (the seeds
    of two modes share an initialization seed, not their frozen filters, so pairing may not help), and the
    attacked accuracy relative to the model's own clean accuracy (a model less accurate on clean images loses
    attacked accuracy with it)."""
    robustness = merged(results)
    body = []
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
        attacks = [('weak', 'FGSM'), ('weak', 'PGD-2'), ('autoattack', 'AutoAttack')]
        for chans, full in (('chans', 'full'), ('chans, FGSM-trained', 'full, FGSM-trained')):
            for evaluation, attack in attacks:
                i = largest_eps(first, evaluation)
                clean_chans, clean_full = (attack_accuracy(family, m, evaluation, 'clean', 0) for m in (chans, full))
                attacked_chans, attacked_full = (attack_accuracy(family, m, evaluation, attack, i)
                                                 for m in (chans, full))
                seeds = [s for s in attacked_chans if clean_chans[s] > 0 and clean_full.get(s, 0) > 0]
                relative = paired({s: 100 * attacked_chans[s] / clean_chans[s] for s in seeds},
                                  {s: 100 * attacked_full[s] / clean_full[s] for s in seeds}).text(' points') \
                    if seeds else 'no image classified correctly'  # (a handful of images, in the quick study)
                body.append([f'{name}{", FGSM-trained" if "FGSM" in chans else ""}, {attack}',
                             welch(attacked_chans, attacked_full).text(' points'),
                             paired(clean_chans, clean_full).text(' points'), relative])
    eps = next(iter(next(iter(robustness['families'].values()))['seeds'].values()))['weak']['eps_labels'][-1]
    return [f'Shown beside it, not judged (Chans - Full at {eps}): the unpaired (Welch) interval of the attacked '
            'accuracy; the clean accuracy; and the attacked accuracy as a percentage of the model\'s own clean '
            'accuracy, paired by seed.', '',
            markdown_table(['configuration', 'attacked, Welch', 'clean, paired', 'attacked / clean (%), paired'],
                           body), '']


def plot_robustness(results: dict, path: Path) -> None:
    robustness = merged(results)
    families = robustness['families']
    fig, axes = new_figure(1, len(families), figsize=(6.5 * len(families), 4.5))
    for ax, (name, family) in zip(axes[0], families.items()):
        first = next(iter(family['seeds'].values()))['weak']
        for j, label in enumerate(first['models']):
            for attack, style in (('FGSM', '-'), ('PGD-2', '--')):  # colour: model; line style: attack
                means = [statistics.fmean(attack_accuracy(family, label, 'weak', attack, i).values())
                         for i in range(len(first['eps']))]
                ax.plot(first['eps_labels'], means, style, color=f'C{j}', marker='o', label=f'{label}, {attack}')
        ax.set_title(f'{name}: mean over {len(family["seeds"])} seeds', fontsize=9)
        ax.set_xlabel('eps (pixel units)')
        ax.set_ylabel('top-1 (%)')
        ax.legend(fontsize=6)
    save_figure(fig, path)


# part smoothing_levels: the smoothing comparisons at other sigmas, shown beside the verdict at the registered one

LEVELS_FIGURE = 'reproduction_smoothing_levels.png'


def measure_levels(study: Study) -> dict:
    """Chans models of both families smoothed at each of the recipe's sigma levels but the judged one, trained and
    attacked like the robustness parts' models (same images per seed, same evaluations); the judged sigma's models
    and attacks are the robustness parts' own."""
    r = study.recipe
    if r.sigma not in r.sigma_levels:
        raise UsageError(f'the smoothing levels {list(r.sigma_levels)} must hold the judged sigma {r.sigma:g}: fix '
                         'the recipe')
    others = [sigma for sigma in r.sigma_levels if sigma != r.sigma]
    runs = {}
    for family in FAMILIES.values():
        name, model, kwargs = family_model(family, r, 'chans')
        runs[family] = {sigma_label(sigma): (name + smoothed_suffix(sigma), model, kwargs, sigma)
                        for sigma in others}
    study.train_all('smoothing_levels', [job for levels in runs.values()
                                         for run, model, kwargs, sigma in levels.values()
                                         for job in study.seeds(run, model, kwargs, smooth_sigma=sigma)])
    families = {}
    for family, levels in runs.items():
        families[family] = dict(runs={label: run for label, (run, *_) in levels.items()}, seeds={
            str(seed): {evaluation: attack_models(study, {label: f'{run}-s{seed}' for label, (run, *_)
                                                          in levels.items()}, settings, seed)
                        for evaluation, settings in attack_settings(r).items()} for seed in r.seeds})
    return dict(families=families, sigma=r.sigma, levels=list(r.sigma_levels), **attack_settings(r))


def with_levels(results: dict) -> Dict[str, dict]:
    """Per family whose robustness part has run with the same sigma and the same attacks on the same images: its
    attack results with the smoothing levels' models joined in, seed by seed, and the levels in order (plain Chans
    first)."""
    levels, families, out = results['parts']['smoothing_levels'], merged(results)['families'], {}
    for part_name, name in FAMILIES.items():
        part = results['parts'].get(part_name)
        if part is None or name not in part['families'] or name not in levels['families'] or \
                part['sigma'] != levels['sigma'] or any(part[e] != levels[e] for e in EVALUATIONS):
            continue
        family, added = families[name], levels['families'][name]['seeds']
        if any(seed not in added or runs[e].get('indices') != added[seed][e].get('indices')
               for seed, runs in family['seeds'].items() for e in EVALUATIONS):
            continue
        seeds = {seed: {e: dict(runs[e], models={**runs[e]['models'], **added[seed][e]['models']}) for e in EVALUATIONS}
                 for seed, runs in family['seeds'].items()}
        out[name] = dict(family, seeds=seeds, levels=['chans'] + [sigma_label(s) for s in levels['levels']])
    return out


def levels_section(results: dict, verdicts: Verdicts) -> List[str]:
    levels = results['parts']['smoothing_levels']
    joined = with_levels(results)
    out = ['### Smoothing levels', '',
           f'The smoothing comparisons at sigma {", ".join(f"{s:g}" for s in levels["levels"])}, shown, not judged: '
           f'the verdict above reads sigma {levels["sigma"]:g} alone, as registered before these runs (picking the '
           'level that looks best would select on the test images). Same images per seed and same attacks as above; '
           'the rule\'s verdict at each level is what it would say there (Holm-corrected over the level\'s '
           'comparisons, as the verdict is).', '']
    missing = [name for name in levels['families'] if name not in joined]
    if missing:
        out += [f'{", ".join(missing)}: shown once its robustness part has run with the same sigma and attacks.', '']
    if not joined:
        return out
    body = []
    for name, family in joined.items():
        first = next(iter(family['seeds'].values()))
        for label in family['levels']:
            cells = [mean_cell(attack_accuracy(family, label, 'weak', 'clean', 0))]
            cells += [mean_cell(attack_accuracy(family, label, evaluation, attack, largest_eps(first, evaluation)))
                      for evaluation, attack in LEVEL_ATTACKS]
            body.append([name, label, *cells])
    first = next(iter(next(iter(joined.values()))['seeds'].values()))  # joined families share their attacks
    header = ['family', 'model', 'clean', *(f'{attack} at {first[evaluation]["eps_labels"][-1]}'
                                            for evaluation, attack in LEVEL_ATTACKS)]
    warnings = [f'{name}, seed {seed}, {w}' for name in joined
                for seed, runs in levels['families'][name]['seeds'].items()
                for e in EVALUATIONS for w in runs[e]['warnings']]
    comparisons, overall = [], []
    for label in next(iter(joined.values()))['levels'][1:]:  # each level judged as the claim is: Holm over its
        judged = SMOOTHING.corrected([c for name, family in joined.items()  # comparisons of both families
                                      for c in smoothing_comparisons(name, family, label)])
        comparisons += [[c.config, label.split(', ')[1], c.measure, c.interval.text(c.unit), c.verdict]
                        for c in judged]
        overall.append(f'{label.split(", ")[1]}: {SMOOTHING.judge(judged)}')
    return out + ['Top-1 (%), mean ± 95% interval half-width over seeds:', '', markdown_table(header, body), '',
                  (f'Gradient-masking warnings of the levels\' models: {"; ".join(warnings)}' if warnings else
                   'No gradient-masking warning for the levels\' models (the judged sigma\'s are listed above).'), '',
                  markdown_table(['configuration', 'level', 'comparison', 'mean [95% interval]',
                                  'the rule would say'], comparisons), '',
                  f'What the smoothing rule would say over {" and ".join(joined)} at each level: '
                  f'{"; ".join(overall)}.', '',
                  f'![smoothing levels]({LEVELS_FIGURE})', '']


LEVEL_ATTACKS = (('weak', 'FGSM'), ('weak', 'PGD-2'), ('strong', 'PGD-10'), ('autoattack', 'AutoAttack'))


def plot_levels(results: dict, path: Path) -> None:
    joined = with_levels(results)
    gain = rules()['smoothing']['relative_gain']
    fig, axes = new_figure(1, max(1, len(joined)), figsize=(5.5 * max(1, len(joined)), 4))
    if not joined:  # the section links no figure then; say why instead of leaving it blank
        axes[0][0].text(0.5, 0.5, 'no robustness part with the same sigma and attacks has run yet', ha='center')
        axes[0][0].set_axis_off()
    for ax, (name, family) in zip(axes[0], joined.items()):
        labels = family['levels'][1:]
        comparisons = [smoothing_comparisons(name, family, label) for label in labels]
        for j, attack in enumerate(rules()['smoothing']['attacks']):
            ivs = [next(c.interval for c in cs if c.config.endswith(attack)) for cs in comparisons]
            xs = [i + 0.1 * (j - 1) for i in range(len(labels))]
            means = [iv.mean if math.isfinite(iv.mean) else math.nan for iv in ivs]  # a zero accuracy: no ratio
            ax.errorbar(xs, means, marker='o', capsize=3, label=attack,  # no interval below 2 seeds (or a zero)
                        yerr=[[m - iv.low if iv.n > 1 else 0 for m, iv in zip(means, ivs)],
                              [iv.high - m if iv.n > 1 else 0 for m, iv in zip(means, ivs)]])
        ax.axhline(gain, color='red', linestyle='--', linewidth=1, label='registered bar')
        ax.axhline(1.0, color='gray', linewidth=0.8)
        ax.set_yscale('log')
        low, high = ax.get_ylim()
        ticks = [t for t in (0.25, 0.5, 0.8, 1.0, gain, 1.6, 2.0, 3.0, 4.0) if low <= t <= high]
        ax.set_yticks(ticks, [f'{t:g}x' for t in ticks])
        ax.minorticks_off()
        ax.set_xticks(range(len(labels)), [label.split(', ')[1] for label in labels])
        ax.set_ylabel('smoothed / plain Chans accuracy at the largest eps (log scale)', fontsize=8)
        ax.set_title(f'{name}: geometric mean over seeds and 95% interval', fontsize=9)
        ax.legend(fontsize=8)
    save_figure(fig, path)


RESNET_PART = Part('robustness_resnet', _measure('robustness_resnet'), shows=tuple(FAMILIES), section=section,
                   figures={ROBUSTNESS_FIGURE: plot_robustness}, setting=setting)
CONVMIXER_PART = Part('robustness_convmixer', _measure('robustness_convmixer'))
LEVELS_PART = Part('smoothing_levels', measure_levels, section=levels_section, figures={LEVELS_FIGURE: plot_levels})
