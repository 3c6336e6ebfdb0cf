""" Adversarial robustness of timm models, measured with torchattacks (the library behind eval_robust.py)

    results = evaluate(RobustConfig(checkpoint=['output/train/RUN/model_best.pth.tar'], attacks=['fgsm', 'pgd']))
    write_results(results, Path('output/robust'))   # robust.json, robust.md, robust.png

Rules that make the numbers trustworthy, each checked while the evaluation runs:
- attacks see [0, 1] pixels; normalization is the first layer of the attacked module (`Normalized`), and the
  attack's own normalization must stay unset, so inputs are never normalized twice;
- the model is in eval mode during attacks (no batch-norm statistics move);
- every adversarial example lies in the eps ball around its input and in [0, 1] (the largest perturbation
  is recorded), so eps = 0 gives exactly the clean accuracy;
- seeds are fixed, so two runs give the same numbers.
Beyond the paper, a gradient-masking check warns when a multi-step attack does better than one step, or when
AutoAttack finds far more than PGD.
"""
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from timm_frozenmix.models.convert import learn_mode
from timm_frozenmix.data.datasets import (
    SAMPLE, ImageSubset, Normalized, check_dataset, create_dataset, create_eval_loader, dataset_info, drop_unreadable,
)
from timm_frozenmix.core.devices import check_device
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.loading import LoadedModel, load_model
from timm_frozenmix.io.outputs import check_output_folder
from timm_frozenmix.io.reporting import attack_name, markdown_table, new_figure, save_figure, write_json, write_text

_logger = logging.getLogger(__name__)

ATTACKS = ('fgsm', 'pgd', 'autoattack')
INSTALL_TORCHATTACKS = 'pip install --no-deps torchattacks==3.5.1'
PERTURBATION_TOLERANCE = 1e-6  # float rounding of x + eps * sign(g)
RESULTS, TABLE, PLOT = 'robust.json', 'robust.md', 'robust.png'


@dataclass
class RobustConfig:
    """What eval_robust.py evaluates and how, named as its flags are (`--pgd-steps` is `pgd_steps`).

    checkpoint: train.py checkpoints; model: registered names (with `pretrained`), `hf-hub:` / `local-dir:`
    references, or, with checkpoints, the architecture each must hold (one name, or one per checkpoint).
    eps: (label, value) pairs in pixel units, e.g. ('8/255', 0.0314); attacks: a subset of ATTACKS.
    input_img_mode: image mode of folder datasets ('L', 'RGB'); input_key / target_key: the image and label fields
    of hfds/wds/tfds datasets; class_map: a file of class names fixing the class order. Each None takes what the
    checkpoints were trained with.
    """
    checkpoint: List[str] = field(default_factory=list)
    model: List[str] = field(default_factory=list)
    pretrained: bool = False
    use_ema: bool = False
    dataset: str = SAMPLE
    data_dir: Optional[str] = None
    split: str = 'test'
    dataset_download: bool = False
    input_img_mode: Optional[str] = None  # None: the mode the checkpoints were trained with
    input_key: Optional[str] = None  # None: as trained (timm's default 'image')
    target_key: Optional[str] = None  # None: as trained (timm's default 'label')
    class_map: Optional[str] = None  # None: as trained (the data's own order)
    num_samples: Optional[int] = None
    batch_size: int = 128
    workers: int = 2
    attacks: List[str] = field(default_factory=lambda: ['fgsm', 'pgd'])
    eps: List[Tuple[str, float]] = field(default_factory=lambda: [
        ('0', 0.0), ('1/255', 1 / 255), ('2/255', 2 / 255), ('4/255', 4 / 255), ('8/255', 8 / 255)])
    pgd_steps: int = 10
    pgd_alpha: Optional[float] = None
    pgd_random_start: bool = True
    pgd_restarts: int = 1  # random restarts: an image counts as robust only if every restart fails on it
    masking_gap: float = 10.0
    baseline: Optional[str] = None
    output: str = 'output/robust'
    device: str = field(default_factory=lambda: 'cuda' if torch.cuda.is_available() else 'cpu')
    seed: int = 0

def import_torchattacks():
    """torchattacks, or a UsageError that names the module actually missing and the command that installs it."""
    try:
        import torchattacks
    except ModuleNotFoundError as e:
        missing = (e.name or '').split('.')[0]
        if missing != 'torchattacks':
            raise UsageError(f'torchattacks cannot be imported: it needs {missing!r}, which is not installed; run '
                             f'`pip install {missing}` (or reinstall timm-frozenmix, which declares it)') from None
        raise UsageError(f'torchattacks is not installed: run `{INSTALL_TORCHATTACKS}` '
                         f'(--no-deps because it pins an old requests that it never imports)') from None
    return torchattacks


def check_config(config: RobustConfig) -> None:
    """Every check of the settings, before any model is loaded or anything written; raises UsageError."""
    if not config.checkpoint and not config.model:
        raise UsageError('nothing to evaluate: pass --checkpoint PATH (from train.py) or --model NAME --pretrained')
    if config.checkpoint and config.model and len(config.model) not in (1, len(config.checkpoint)):
        raise UsageError(f'{len(config.model)} --model names for {len(config.checkpoint)} checkpoints: '
                         f'give one name, or one per checkpoint')
    unknown = [a for a in config.attacks if a not in ATTACKS]
    if unknown or not config.attacks:
        raise UsageError(f'unknown attack {", ".join(unknown) or "(none)"}: choose from {",".join(ATTACKS)}')
    outside = [label for label, value in config.eps if not 0.0 <= value <= 1.0]
    if outside or not config.eps:
        raise UsageError(f'eps {", ".join(outside) or "(none)"} outside [0, 1]: eps is in pixel units, e.g. 8/255')
    if config.pgd_steps < 1:
        raise UsageError(f'--pgd-steps must be >= 1, got {config.pgd_steps}')
    if config.pgd_restarts < 1:
        raise UsageError(f'--pgd-restarts must be >= 1, got {config.pgd_restarts}')
    if config.pgd_restarts > 1 and not config.pgd_random_start:
        raise UsageError('--pgd-restarts without a random start repeats one attack: add --pgd-random-start')
    if config.pgd_alpha is not None and not 0 < config.pgd_alpha <= 1:
        raise UsageError(f'--pgd-alpha must lie in (0, 1] (pixel units), got {config.pgd_alpha:g}')
    if config.batch_size < 1:
        raise UsageError(f'--batch-size must be >= 1, got {config.batch_size}')
    if config.num_samples is not None and config.num_samples < 1:
        raise UsageError(f'--num-samples must be >= 1, got {config.num_samples}')
    if config.workers < 0:
        raise UsageError(f'--workers must be >= 0, got {config.workers}')
    if config.masking_gap < 0:
        raise UsageError(f'--masking-gap must be >= 0 (accuracy points), got {config.masking_gap:g}')
    check_device(config.device)
    check_dataset(config.dataset, config.data_dir, config.dataset_download)
    check_output_folder(config.output)


def load_models(config: RobustConfig) -> Dict[str, LoadedModel]:
    """Every model of the run by its label; all are loaded (and checked) before any evaluation starts."""
    if config.checkpoint:
        names = config.model * len(config.checkpoint) if len(config.model) == 1 else (config.model or [None] * len(config.checkpoint))
        loaded = [(path, load_model(name, path, use_ema=config.use_ema)) for name, path in zip(names, config.checkpoint)]
    else:
        loaded = [(name, load_model(name, pretrained=config.pretrained)) for name in config.model]
    archs = [m.arch for _, m in loaded]
    labels = {}
    for spec, m in loaded:
        label = m.arch if archs.count(m.arch) == 1 or m.checkpoint is None else f'{m.arch} ({Path(spec).parent.name})'
        if label in labels:
            label = spec
        if label in labels:
            raise UsageError(f'{spec} is listed twice')
        labels[label] = m
    return labels


def find_baseline(config: RobustConfig, models: Dict[str, LoadedModel]) -> str:
    if config.baseline is None:
        return None
    for label, m in models.items():
        if config.baseline in (label, m.arch) or (m.checkpoint and Path(config.baseline).resolve() == Path(m.checkpoint)):
            return label
    raise UsageError(f'--baseline {config.baseline!r} is none of the evaluated models: {", ".join(models)}')


def attack_label(name: str, config: RobustConfig) -> str:
    return {'fgsm': 'FGSM', 'pgd': f'PGD-{config.pgd_steps}', 'autoattack': 'AutoAttack'}[name]


def autoattack_components(num_classes: int) -> List[str]:
    """AutoAttack's standard suite (Croce & Hein 2020), adapted to models with fewer than 4 classes.

    APGD-T's targeted DLR loss reads the 4th-largest logit, so it needs 4 classes; with 3 the untargeted
    APGD-DLR (which reads the 3rd) takes its place, and with 2 no DLR loss is defined at all. FAB-T targets
    every other class and Square needs no gradients; both run with 2 classes.
    """
    if num_classes < 2:
        raise UsageError(f'a model with {num_classes} class cannot be attacked: nothing can be misclassified')
    if num_classes >= 4:
        return ['APGD-CE', 'APGD-T', 'FAB-T', 'Square']
    return ['APGD-CE', 'APGD-DLR', 'FAB-T', 'Square'] if num_classes == 3 else ['APGD-CE', 'FAB-T', 'Square']


AUTOATTACK_STANDARD = ('standard (Croce & Hein 2020, as RobustBench runs it): APGD-CE and APGD-T 100 iterations, '
                      'APGD-T and FAB-T at most 9 target classes, FAB-T 100 iterations, Square 5,000 queries '
                      '(p_init 0.8), 1 restart each, each attack on the images still classified correctly')


def make_autoattack(torchattacks, net: nn.Module, eps: float, num_classes: int, seed: int):
    """Standard AutoAttack (`AUTOATTACK_STANDARD`) from torchattacks' components with the reference's parameters.

    torchattacks' own `AutoAttack` runs its components with 10 iterations and `n_classes - 1` target classes,
    which is not the standard suite RobustBench reports; its components take the standard settings. A model
    with fewer than 4 classes runs the components `autoattack_components` allows.
    """
    targets = min(num_classes, 10)  # torchattacks targets its n_classes - 1 highest other classes: 9 at most
    common = dict(norm='Linf', eps=eps, seed=seed, n_restarts=1)
    attacks = {
        'APGD-CE': lambda: torchattacks.APGD(net, loss='ce', steps=100, rho=.75, **common),
        'APGD-T': lambda: torchattacks.APGDT(net, steps=100, rho=.75, n_classes=targets, **common),
        'APGD-DLR': lambda: torchattacks.APGD(net, loss='dlr', steps=100, rho=.75, **common),
        'FAB-T': lambda: torchattacks.FAB(net, multi_targeted=True, steps=100, n_classes=targets, **common),
        'Square': lambda: torchattacks.Square(net, n_queries=5000, p_init=.8, resc_schedule=False, **common),
    }
    return torchattacks.MultiAttack([attacks[name]() for name in autoattack_components(num_classes)])


def make_attack(torchattacks, name: str, net: nn.Module, eps: float, config: RobustConfig, num_classes: int):
    if name == 'fgsm':
        attack = torchattacks.FGSM(net, eps=eps)
    elif name == 'pgd':
        alpha = config.pgd_alpha if config.pgd_alpha is not None else 2.5 * eps / config.pgd_steps
        restarts = [torchattacks.PGD(net, eps=eps, alpha=alpha, steps=config.pgd_steps,
                                     random_start=config.pgd_random_start) for _ in range(config.pgd_restarts)]
        # MultiAttack runs each restart on the images the earlier ones left correctly classified
        attack = restarts[0] if len(restarts) == 1 else torchattacks.MultiAttack(restarts)
    else:
        attack = make_autoattack(torchattacks, net, eps, num_classes, config.seed)
    if attack.normalization_used is not None:
        raise RuntimeError(f'torchattacks picked up a normalization of {type(net).__name__}: inputs would be '
                           f'normalized twice')
    return attack


def check_adversarial(x: torch.Tensor, x_adv: torch.Tensor, eps: float, what: str) -> float:
    """The largest l-inf perturbation of the batch; an example outside the eps ball or [0, 1] is an error."""
    perturbation = (x_adv - x).abs().amax().item()
    if perturbation > eps + PERTURBATION_TOLERANCE or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f'{what} produced an example outside the eps ball or [0, 1] '
                           f'(max perturbation {perturbation:.6g}): the evaluation would be invalid')
    return perturbation


def evaluate_model(label: str, loaded: LoadedModel, dataset, config: RobustConfig, torchattacks) -> dict:
    """Clean and adversarial accuracy (in %) of one model over the whole dataset, one pass over the data."""
    device = torch.device(config.device)
    net = Normalized(loaded.model, loaded.data_config['mean'], loaded.data_config['std']).to(device).eval()
    loader = create_eval_loader(dataset, loaded.data_config, config.batch_size, config.workers, device)
    attacks = {
        (name, i): make_attack(torchattacks, name, net, eps, config, loaded.num_classes)
        for name in config.attacks for i, (_, eps) in enumerate(config.eps)}
    correct = {key: 0 for key in attacks}
    perturbation = {key: 0.0 for key in attacks}
    clean_correct, total = 0, 0
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    progress = tqdm(loader, desc=label, unit='batch', dynamic_ncols=True)
    for x, y in progress:
        x, y = x.to(device).float(), y.to(device)
        with torch.no_grad():
            logits = net(x)
        if not torch.isfinite(logits).all():
            raise UsageError(f'{label} gives NaN or Inf logits on clean images: its accuracies would mean nothing; '
                             f'check the checkpoint and the input normalization')
        clean_correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
        for (name, i), attack in attacks.items():
            eps_label, eps = config.eps[i]
            # at eps 0 the ball is one point: AutoAttack would spend its whole query budget proving it
            x_adv = x if name == 'autoattack' and eps == 0 else attack(x, y)
            what = f'{attack_label(name, config)} at eps {eps_label} on {label}'
            perturbation[name, i] = max(perturbation[name, i], check_adversarial(x, x_adv, eps, what))
            with torch.no_grad():
                correct[name, i] += (net(x_adv).argmax(1) == y).sum().item()
        progress.set_postfix(clean=f'{100 * clean_correct / total:.1f}%')
    return {
        'model': loaded.arch,
        'checkpoint': loaded.checkpoint,
        'learn': learn_mode(loaded.model),
        'num_samples': total,
        'clean_accuracy': 100 * clean_correct / total,
        'accuracy': {attack_label(name, config): [100 * correct[name, i] / total for i in range(len(config.eps))]
                     for name in config.attacks},
        'max_perturbation': {attack_label(name, config): [perturbation[name, i] for i in range(len(config.eps))]
                             for name in config.attacks},
        'wall_time_s': time.perf_counter() - start,
        **({'autoattack_components': autoattack_components(loaded.num_classes)} if 'autoattack' in config.attacks else {}),
    }


def masking_warnings(label: str, result: dict, eps: List[Tuple[str, float]], gap: float) -> List[str]:
    """Signs of gradient masking: a multi-step attack weaker than FGSM, or AutoAttack far stronger than PGD."""
    accuracy = result['accuracy']
    pgd = next((a for a in accuracy if a.startswith('PGD')), None)
    warnings = []
    for i, (eps_label, value) in enumerate(eps):
        if value == 0:
            continue
        if pgd and 'FGSM' in accuracy and accuracy[pgd][i] > accuracy['FGSM'][i]:
            warnings.append(f'{label}: {pgd} accuracy {accuracy[pgd][i]:.2f}% is above FGSM '
                            f'{accuracy["FGSM"][i]:.2f}% at eps {eps_label}: the multi-step attack is weaker than '
                            f'one step, a sign of gradient masking (or of a PGD step size that is too small)')
        if pgd and 'AutoAttack' in accuracy and accuracy['AutoAttack'][i] < accuracy[pgd][i] - gap:
            warnings.append(f'{label}: AutoAttack accuracy {accuracy["AutoAttack"][i]:.2f}% is more than {gap:g} '
                            f'points below {pgd} {accuracy[pgd][i]:.2f}% at eps {eps_label}: gradient attacks '
                            f'underestimate the attack, a sign of gradient masking')
    return warnings


def relative_improvement(result: dict, baseline: dict) -> dict:
    """(accuracy - baseline) / baseline in %, per attack and eps, and for clean accuracy (Fig. 9 of the paper)."""
    def relative(value, base):
        return None if base == 0 else 100 * (value - base) / base
    return {
        'clean': relative(result['clean_accuracy'], baseline['clean_accuracy']),
        **{attack: [relative(v, b) for v, b in zip(values, baseline['accuracy'][attack])]
           for attack, values in result['accuracy'].items()},
    }


def format_table(results: dict) -> str:
    """Markdown: accuracy per model, attack and eps; relative improvement when a baseline is set."""
    header = ['model', 'attack', 'clean', *(f'eps {e}' for e in results['eps_labels'])]
    left_out = len(results.get('unreadable', []))
    title = (f'Top-1 accuracy (%) on {results["num_samples"]} images of {results["dataset"]} ({results["split"]})'
             + (f', {left_out} unreadable image(s) left out' if left_out else ''))
    rows = [[label, attack_name(results, attack), f'{r["clean_accuracy"]:.2f}', *(f'{v:.2f}' for v in values)]
            for label, r in results['models'].items() for attack, values in r['accuracy'].items()]
    lines = [title, '', markdown_table(header, rows)]
    baseline = results['baseline']
    if baseline:
        rows = [[label, attack_name(results, attack), _signed(r['relative_improvement']['clean']),
                 *(_signed(v) for v in r['relative_improvement'][attack])]
                for label, r in results['models'].items() if label != baseline for attack in r['accuracy']]
        lines += ['', f'Relative improvement over {baseline} (%)', '', markdown_table(header, rows)]
    return '\n'.join(lines)


def _signed(value) -> str:
    return 'n/a' if value is None else f'{value:+.1f}'


def plot_results(results: dict, path: Path) -> Path:
    """Accuracy against eps, one line per model (colour) and attack (line style); relative improvement beside."""
    baseline = results['baseline']
    fig, axes = new_figure(1, 2 if baseline else 1, figsize=(12 if baseline else 7, 4.5))
    positions = range(len(results['eps']))  # evenly spaced: eps lists are usually geometric
    styles = ('-', '--', ':', '-.')
    for m, (label, r) in enumerate(results['models'].items()):
        colour = f'C{m % 10}'
        for a, (attack, values) in enumerate(r['accuracy'].items()):
            axes[0, 0].plot(positions, values, styles[a % 4], color=colour, marker='o', label=f'{label}, {attack}')
            if baseline and label != baseline:
                improvement = [float('nan') if v is None else v for v in r['relative_improvement'][attack]]
                axes[0, 1].plot(positions, improvement, styles[a % 4], color=colour, marker='o',
                                label=f'{label}, {attack}')
    axes[0, 0].set(xlabel='eps (pixel units, l-inf)', ylabel='top-1 accuracy (%)',
                   title=f'{results["dataset"]}, {results["num_samples"]} images')
    if baseline:
        axes[0, 1].axhline(0, color='grey', linewidth=0.8)
        axes[0, 1].set(xlabel='eps (pixel units, l-inf)', ylabel='relative improvement (%)',
                       title=f'over {baseline}')
    for ax in axes[0]:
        ax.set_xticks(positions, results['eps_labels'])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def write_results(results: dict, output: Path) -> None:
    """robust.json, robust.md and robust.png in `output` (created)."""
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / RESULTS, results)
    write_text(output / TABLE, format_table(results) + '\n')
    plot_results(results, output / PLOT)


def check_finite_weights(label: str, model: nn.Module) -> None:
    """UsageError naming the first weight holding NaN or Inf: such a model's accuracies would mean nothing."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UsageError(f'{label} holds NaN or Inf weights ({name}): its training diverged; evaluate an '
                             f'earlier checkpoint')


DATA_SETTINGS = ('input_img_mode', 'input_key', 'target_key', 'class_map')  # given, or as the checkpoints trained
DATASET_FIELDS = ('input_key', 'target_key', 'class_map')  # settings of one dataset, not of the images


def data_settings(config: RobustConfig, models: Dict[str, LoadedModel]) -> Dict[str, str]:
    """Each of DATA_SETTINGS as given, or else as every checkpoint was trained with it (the dataset's field names
    and class map only from checkpoints trained on the evaluated dataset); those neither given nor recorded alike
    stay out, so the dataset's defaults apply."""
    settings = {}
    for name in DATA_SETTINGS:
        recorded = {m.training.get(name) or None for m in models.values()
                    if name not in DATASET_FIELDS or m.training.get('dataset') == config.dataset}
        value = getattr(config, name) if getattr(config, name) is not None else (
            recorded.pop() if len(recorded) == 1 else None)
        if value is not None:
            settings[name] = value
    return settings


def evaluate(config: RobustConfig) -> dict:
    """The whole evaluation: every check first, then one pass over the data per model, then the summary."""
    check_config(config)
    torchattacks = import_torchattacks()
    models = load_models(config)
    for label, m in models.items():
        check_finite_weights(label, m.model)
    baseline = find_baseline(config, models)
    data = data_settings(config, models)
    img_mode = data.get('input_img_mode')
    dataset = create_dataset(config.dataset, root=config.data_dir, split=config.split,
                             download=config.dataset_download, **data)
    info = dataset_info(config.dataset, dataset, img_mode)
    for label, m in models.items():
        in_chans = m.data_config['input_size'][0]
        if in_chans != info.in_chans:
            raise UsageError(f'{label} takes {in_chans}-channel images but {config.dataset} has {info.in_chans}')
        if info.num_classes and m.num_classes != info.num_classes:
            raise UsageError(f'{label} has {m.num_classes} classes but {config.dataset} has {info.num_classes}')
        if m.num_classes < 2:
            raise UsageError(f'{label} has {m.num_classes} class: no attack can make it misclassify')
    requested = len(dataset) if config.num_samples is None else config.num_samples
    if config.num_samples is not None:
        dataset = ImageSubset.random(dataset, config.num_samples, config.seed)
    dataset, unreadable = drop_unreadable(dataset, config.workers)
    for file in unreadable:
        _logger.warning(f'left out {file}: it cannot be read as an image')
    if not len(dataset):
        raise UsageError(f'none of the {requested} images of {config.dataset} ({config.split}) can be read')

    start = time.perf_counter()
    results = {
        'dataset': config.dataset, 'split': config.split, 'num_samples': len(dataset), 'requested_samples': requested,
        'unreadable': unreadable, 'indices': list(dataset.indices), 'seed': config.seed,
        **{name: data.get(name) for name in DATA_SETTINGS},
        'eps': [value for _, value in config.eps], 'eps_labels': [label for label, _ in config.eps],
        'attacks': {attack_label(a, config): _attack_settings(a, config) for a in config.attacks},
        'baseline': baseline, 'device': config.device, 'torch': torch.__version__,
        'torchattacks': torchattacks.__version__, 'models': {}, 'warnings': [],
    }
    for label, m in models.items():
        result = evaluate_model(label, m, dataset, config, torchattacks)
        results['models'][label] = result
        results['warnings'] += masking_warnings(label, result, config.eps, config.masking_gap)
    if baseline:
        for label, r in results['models'].items():
            if label != baseline:
                r['relative_improvement'] = relative_improvement(r, results['models'][baseline])
    results['wall_time_s'] = time.perf_counter() - start
    return results


def _attack_settings(name: str, config: RobustConfig) -> dict:
    if name == 'pgd':
        alpha = config.pgd_alpha if config.pgd_alpha is not None else '2.5 * eps / steps'
        return {'steps': config.pgd_steps, 'alpha': alpha, 'random_start': config.pgd_random_start,
                'restarts': config.pgd_restarts}
    if name == 'autoattack':
        return {'version': 'standard', 'definition': AUTOATTACK_STANDARD, 'norm': 'Linf', 'seed': config.seed,
                'engine': 'torchattacks components (APGD, APGDT, FAB, Square, MultiAttack)'}
    return {}
