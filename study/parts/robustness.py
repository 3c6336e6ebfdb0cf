""" Part `robustness`: attacks on a separable ResNet (as in the paper) and on a ConvMixer

Undefended, FGSM-trained and smoothed models of each family are attacked through eval_robust's library
(`RobustConfig`, `robust.evaluate`) with weak attacks (FGSM, PGD-2) and a strong one (PGD-10) on every seed, and
with AutoAttack on one seed as a check for gradient masking.
"""
import logging
import statistics
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Tuple

from timm_frozenmix.evaluation import robust
from timm_frozenmix.io.reporting import markdown_table, new_figure, save_figure

from ..claims import Claim, Comparison, all_required, compared
from ..part import Part
from ..recipe import CONVMIXER, convmixer_kwargs, resnet_kwargs, resnet_model, resnet_name
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


def measure(study: Study) -> dict:
    r = study.recipe
    strong_eps = eps_list(r.strong_eps)[0][1]
    families = {
        'SepResNet': (lambda mode: resnet_name(r.resnet_depths[0], r.resnet_base, mode), resnet_model,
                      resnet_kwargs(r.resnet_depths[0], r.resnet_base)),
        'ConvMixer': (lambda mode: f'convmixer-d{r.convmixer_depth}-{mode}', CONVMIXER.format, convmixer_kwargs(r)),
    }
    variants = {'full': ('full', {}), 'chans': ('chans', {}),
                'full, FGSM-trained': ('full', dict(adv_train='fgsm', adv_eps=strong_eps)),
                'chans, FGSM-trained': ('chans', dict(adv_train='fgsm', adv_eps=strong_eps)),
                f'chans, sigma {r.sigma:g}': ('chans', dict(smooth_sigma=r.sigma))}
    suffix = {'full': '', 'chans': '', 'full, FGSM-trained': '-fgsm', 'chans, FGSM-trained': '-fgsm',
              f'chans, sigma {r.sigma:g}': f'-sigma{r.sigma:g}'}
    names = {(family, label): name_of(mode) + suffix[label]
             for family, (name_of, _, _) in families.items() for label, (mode, _) in variants.items()}
    jobs = [job for (family, label), name in names.items()
            for job in study.seeds(name, families[family][1](mode=variants[label][0]), families[family][2],
                                   **variants[label][1])]
    study.train_all('robustness', jobs)
    weak = dict(attacks=['fgsm', 'pgd'], pgd_steps=2, pgd_random_start=False, eps=eps_list(r.eps),
                num_samples=r.robust_samples)
    strong = dict(attacks=['fgsm', 'pgd'], pgd_steps=10, eps=eps_list(r.strong_eps), num_samples=r.robust_samples)
    autoattack = dict(attacks=['pgd', 'autoattack'], pgd_steps=10, eps=eps_list(r.strong_eps),
                      num_samples=r.autoattack_samples, masking_gap=MASKING_GAP)
    out = {}
    for family in families:
        labels = {label: names[family, label] for label in variants}
        per_seed = {}
        for seed in r.seeds:
            runs = {label: f'{name}-s{seed}' for label, name in labels.items()}
            per_seed[str(seed)] = dict(weak=attack_models(study, runs, weak),
                                       strong=attack_models(study, runs, strong))
        # AutoAttack costs about a second per image here: one seed, the models the verdicts compare
        checked = {label: f'{labels[label]}-s{r.seeds[0]}' for label in ('full', 'chans', f'chans, sigma {r.sigma:g}')}
        out[family] = dict(runs=labels, seeds=per_seed, autoattack=attack_models(study, checked, autoattack))
    return dict(families=out, sigma=r.sigma, masking_gap=MASKING_GAP, weak=weak, strong=strong,
                autoattack=dict(autoattack, seed=r.seeds[0]))


def attack_models(study: Study, models: Dict[str, str], settings: dict) -> dict:
    """The robustness evaluation of the study's checkpoints (RobustConfig `settings`) on a fixed subset of the
    test images; results and warnings name the models by the study's own labels."""
    config = robust.RobustConfig(
        checkpoint=[study.runs[run]['checkpoint'] for run in models.values()], dataset=study.recipe.dataset,
        seed=0, workers=study.workers, output=str(study.output), **settings)
    _logger.info(f'Attacking {", ".join(models.values())}: {settings}')
    results = robust.evaluate(config)
    by_checkpoint = {r['checkpoint']: r for r in results['models'].values()}
    results['models'] = {label: by_checkpoint[str(Path(study.runs[run]['checkpoint']).resolve())]
                         for label, run in models.items()}
    results['warnings'] = [w for label, r in results['models'].items()
                           for w in robust.masking_warnings(label, r, config.eps, config.masking_gap)]
    return results


def largest_eps(seed_results: dict, evaluation: str = 'weak') -> int:
    """The index of the largest eps of one seed's `evaluation` ('weak' or 'strong')."""
    return len(seed_results[evaluation]['eps']) - 1


def attack_accuracy(family: dict, label: str, evaluation: str, attack: str, index: int) -> Dict[str, float]:
    """Per seed: the accuracy of model `label` under `attack` at the eps of `index` ('clean': no attack)."""
    if attack == 'clean':
        return {s: runs[evaluation]['models'][label]['clean_accuracy'] for s, runs in family['seeds'].items()}
    return {s: runs[evaluation]['models'][label]['accuracy'][attack][index] for s, runs in family['seeds'].items()}


def compare_robust(results: dict) -> List[Comparison]:
    robustness = results['parts']['robustness']
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
    robustness, rule = results['parts']['robustness'], rules()['smoothing']
    smoothed = f'chans, sigma {robustness["sigma"]:g}'
    out = []
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
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
    'robust', 'Chans is more robust than Full to FGSM and PGD-2, undefended and FGSM-defended', ('robustness',),
    compare_robust, 'holds when Chans - Full at the largest eps lies above 0')
SMOOTHING = Claim(
    'smoothing', 'Smoothing the frozen filters raises robustness without hurting clean accuracy', ('robustness',),
    compare_smoothing, f'per model family, smoothed / Chans accuracy at the largest eps must lie above '
                       f'{rules()["smoothing"]["relative_gain"]:g}x for {", ".join(rules()["smoothing"]["attacks"])} '
                       f'(the paper\'s "over 25% relative"), and the clean cost below '
                       f'{rules()["smoothing"]["clean_cost_points"]:g} point', smoothing_verdict)


def setting(recipe: dict) -> List[str]:
    return [
        f'- Robustness on the SepResNet with n = {recipe["resnet_depths"][0]} (as in the paper) and on the ConvMixer: '
        f'{recipe["robust_samples"]} fixed test images, FGSM and PGD-2 without random start (step 1.25 eps) at eps '
        f'{recipe["eps"]}; FGSM-defended models trained on FGSM examples at {recipe["strong_eps"]}; smoothing with '
        f'sigma {recipe["sigma"]:g}; PGD-10 as the strong attack; AutoAttack on {recipe["autoattack_samples"]} '
        'images of one seed as a masking check.']


def section(results: dict, verdicts: Verdicts) -> List[str]:
    robustness = results['parts']['robustness']
    out = ['## 4. Robustness', '',
           'Paper: Chans is more robust than Full to FGSM and PGD-2, and stays so with FGSM-defended training; '
           'smoothing the frozen random filters raises robustness further (over 25% relative at the largest eps) '
           'without hurting clean accuracy.', '']
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
        weak, strong = first['weak'], first['strong']
        header = ['model', 'clean'] + [f'{a} at {e}' for a in ('FGSM', 'PGD-2') for e in weak['eps_labels'][1:]] \
            + [f'PGD-10 at {strong["eps_labels"][-1]}']
        body = []
        for label in weak['models']:
            cells = [mean_cell(attack_accuracy(family, label, 'weak', 'clean', 0))]
            cells += [mean_cell(attack_accuracy(family, label, 'weak', a, i))
                      for a in ('FGSM', 'PGD-2') for i in range(1, len(weak['eps']))]
            cells += [mean_cell(attack_accuracy(family, label, 'strong', 'PGD-10', len(strong['eps']) - 1))]
            body.append([label, *cells])
        aa = family['autoattack']
        aa_body = [[label, f'{r["clean_accuracy"]:.2f}', f'{r["accuracy"]["PGD-10"][-1]:.2f}',
                    f'{r["accuracy"]["AutoAttack"][-1]:.2f}'] for label, r in aa['models'].items()]
        # every evaluation's warnings, the weak attacks' included: PGD-2 weaker than FGSM is a masking sign too
        warnings = [f'seed {seed}, {w}' for seed, runs in family['seeds'].items()
                    for evaluation in ('weak', 'strong') for w in runs[evaluation]['warnings']]
        warnings += [f'seed {robustness["autoattack"]["seed"]}, {w}' for w in aa['warnings']]
        out += [f'### {name}', '',
                f'Top-1 (%) on {weak["num_samples"]} fixed test images, mean ± 95% interval half-width over seeds:',
                '', markdown_table(header, body), '',
                f'AutoAttack check, seed {robustness["autoattack"]["seed"]}, {aa["num_samples"]} images, eps '
                f'{aa["eps_labels"][-1]}:', '',
                markdown_table(['model', 'clean', 'PGD-10', 'AutoAttack'], aa_body), '',
                (f'Gradient-masking warnings: {"; ".join(warnings)}' if warnings else
                 'No gradient-masking warning: PGD-2 and PGD-10 are at least as strong as FGSM for every seed and '
                 'eps, and AutoAttack '
                 f'stays within {robustness["masking_gap"]:g} points of PGD-10.'), '']
    out += [f'![robustness]({ROBUSTNESS_FIGURE})', '']
    return out + verdict_blocks(verdicts, ROBUST.key) + robust_beside(results) + verdict_blocks(verdicts, SMOOTHING.key)


def robust_beside(results: dict) -> List[str]:
    """Beside the robustness verdict, shown, not judged: each comparison as Welch's unpaired interval (the seeds
    of two modes share an initialization seed, not their frozen filters, so pairing may not help), and the
    attacked accuracy relative to the model's own clean accuracy (a model less accurate on clean images loses
    attacked accuracy with it)."""
    robustness = results['parts']['robustness']
    body = []
    for name, family in robustness['families'].items():
        first = next(iter(family['seeds'].values()))
        i = largest_eps(first)
        for chans, full in (('chans', 'full'), ('chans, FGSM-trained', 'full, FGSM-trained')):
            clean_chans, clean_full = (attack_accuracy(family, m, 'weak', 'clean', 0) for m in (chans, full))
            for attack in ('FGSM', 'PGD-2'):
                attacked_chans, attacked_full = (attack_accuracy(family, m, 'weak', attack, i) for m in (chans, full))
                relative = paired({s: 100 * attacked_chans[s] / clean_chans[s] for s in attacked_chans},
                                  {s: 100 * attacked_full[s] / clean_full[s] for s in attacked_full})
                body.append([f'{name}{", FGSM-trained" if "FGSM" in chans else ""}, {attack}',
                             welch(attacked_chans, attacked_full).text(' points'),
                             paired(clean_chans, clean_full).text(' points'), relative.text(' points')])
    eps = next(iter(next(iter(robustness['families'].values()))['seeds'].values()))['weak']['eps_labels'][-1]
    return [f'Shown beside it, not judged (Chans - Full at {eps}): the unpaired (Welch) interval of the attacked '
            'accuracy; the clean accuracy; and the attacked accuracy as a percentage of the model\'s own clean '
            'accuracy, paired by seed.', '',
            markdown_table(['configuration', 'attacked, Welch', 'clean, paired', 'attacked / clean (%), paired'],
                           body), '']


def plot_robustness(results: dict, path: Path) -> None:
    robustness = results['parts']['robustness']
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


PART = Part('robustness', measure, section=section, figures={ROBUSTNESS_FIGURE: plot_robustness},
            setting=setting)
