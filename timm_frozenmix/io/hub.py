""" Checkpoints as Hugging Face Hub models: export, model card, push

    python -m timm_frozenmix.cli.hub --checkpoint output/train/<run>/model_best.pth.tar --output hub/my-model \
        --robust-json output/robust/robust.json --push-to-hub my-user/my-model

An export folder holds `model.safetensors`, `config.json` in timm's format (architecture, model_args that
rebuild the exact model, pretrained_cfg with its preprocessing) and `README.md`, the model card rendered from
`model_card_template.md` (Jinja, shipped with the package). timm loads the folder with `local-dir:<folder>`,
or from the Hub with `hf-hub:<repo>` once `timm_frozenmix` is imported; frozen filters come from the weights
file, never from a new random init.
"""
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import huggingface_hub
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from timm_frozenmix.io.checkpoint import Checkpoint, save_safetensors
from timm_frozenmix.layers.separable import is_depthwise
from timm_frozenmix.models.convert import conv_roles, learn_mode, summarize
from timm_frozenmix.data.datasets import FASHION_MNIST, FASHION_MNIST_CLASSES, SAMPLE
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.loading import load_model
from timm_frozenmix.io.outputs import check_output_folder, staging_folder
from timm_frozenmix.io.reporting import attack_name

__all__ = ['export', 'push', 'render_model_card', 'check_can_push']

CARD_TEMPLATE = Path(__file__).resolve().parent / 'model_card_template.md'  # ships with the package
EXPORT_FILES = ('model.safetensors', 'config.json', 'README.md')
PRETRAINED_CFG_KEYS = (
    'input_size', 'fixed_input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std', 'num_classes',
    'pool_size', 'first_conv', 'classifier', 'license', 'paper_ids')
# Hub ids of the datasets train.py knows by name, for the card's `datasets` metadata
HUB_DATASETS = {
    SAMPLE: 'zalando-datasets/fashion_mnist', FASHION_MNIST: 'zalando-datasets/fashion_mnist',
    'torch/fashion_mnist': 'zalando-datasets/fashion_mnist', 'torch/mnist': 'ylecun/mnist',
    'torch/cifar10': 'uoft-cs/cifar10', 'torch/cifar100': 'uoft-cs/cifar100',
}
DATASET_TITLES = {
    SAMPLE: 'the Fashion-MNIST sample embedded in timm-frozenmix (6,000 training / 1,000 test images)',
    FASHION_MNIST: 'Fashion-MNIST (60,000 training / 10,000 test images)',
}
LEARN_TEXT = {
    'channels': ('channels-only', 'Only channel mixing is learned: the spatial filters (depthwise convolutions{stem}) '
                 'are frozen at their random initialization and the pointwise 1x1 convolutions, norms and '
                 'classifier are trained.'),
    'spatial': ('spatial-only', 'Only spatial mixing is learned: the pointwise 1x1 convolutions are frozen at '
                'their random initialization and the depthwise convolutions, norms and classifier are trained.'),
    'full': ('fully learned', 'Nothing is frozen: this is the fully learned baseline of the same architecture, '
             'to compare the channels-only and spatial-only models with.'),
}
HYPERPARAMETERS = (
    'dataset', 'epochs', 'batch_size', 'opt', 'lr', 'weight_decay', 'sched', 'warmup_epochs', 'smoothing',
    'mixup', 'cutmix', 'model_ema', 'amp', 'adv_train', 'adv_eps', 'learn', 'spatial_init', 'smooth_sigma', 'seed')


def build_config(loaded) -> Dict[str, Any]:
    """config.json in timm's format, so `hf-hub:` / `local-dir:` rebuild the model and its preprocessing."""
    model, data_config = loaded.model, loaded.data_config
    pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k in PRETRAINED_CFG_KEYS}
    pretrained_cfg.update(
        {k: data_config[k] for k in ('input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std')
         if k in data_config},
        num_classes=model.num_classes)
    config = {
        'architecture': loaded.arch,
        'num_classes': model.num_classes,
        'num_features': model.num_features,
        'model_args': loaded.spec.registered_kwargs(inspect.signature(type(model).__init__).parameters),
        'pretrained_cfg': pretrained_cfg,
        'model_spec': loaded.spec.to_dict(),
    }
    if loaded.training.get('dataset') in (SAMPLE, FASHION_MNIST) and model.num_classes == len(FASHION_MNIST_CLASSES):
        config['label_names'] = list(FASHION_MNIST_CLASSES)
    return config


def _robust_entry(robust: Dict[str, Any], loaded) -> Optional[Dict[str, Any]]:
    for entry in robust.get('models', {}).values():
        if loaded.checkpoint and entry.get('checkpoint') == loaded.checkpoint:
            return entry
    return None


def _robust_table(measured: List[Tuple[Dict[str, Any], Dict[str, Any]]]) -> str:
    """One row per attack and eps of every (robust.json, entry) pair, with the images it was measured on."""
    lines = ['| attack | eps | images | top-1 (%) |', '|---|---|---:|---:|']
    for robust, entry in measured:
        images = f'{entry["num_samples"]:,} of {robust["split"]}'
        for attack, values in entry['accuracy'].items():
            lines += [f'| {attack_name(robust, attack)} | {label} | {images} | {value:.2f} |'
                      for label, value in zip(robust['eps_labels'], values)]
    return '\n'.join(lines)


def _eval_split(train_args: Dict[str, Any]) -> str:
    """The split train.py chose the best epoch on (its 'validation' is the test split of the Fashion-MNIST sets)."""
    split = train_args.get('val_split', 'validation')
    return 'test' if train_args.get('dataset') in (SAMPLE, FASHION_MNIST) and split in ('validation', 'test') else split


def read_robust_results(paths: Sequence) -> List[Dict[str, Any]]:
    """The robust.json files of eval_robust.py; UsageError when one cannot be read."""
    results = []
    for path in paths:
        try:
            results.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            raise UsageError(f'cannot read robustness results {path} ({type(e).__name__}): '
                             f'pass the robust.json written by eval_robust.py') from None
    return results


def render_model_card(loaded, checkpoint: Checkpoint, config: Dict[str, Any], repo_id: Optional[str],
                      robust: Sequence[Dict[str, Any]] = (), provenance: Optional[Dict[str, Any]] = None,
                      local_name: str = 'model') -> ModelCard:
    """The model card: Hub metadata (with a model-index of clean and robust accuracy) and the body sections.

    robust: eval_robust.py results (robust.json) that each hold an entry for this checkpoint, e.g. FGSM and PGD on
    the whole test set and AutoAttack on a subset. When they were measured on another split than the one that chose
    the epoch, the clean accuracy of the one with the most images is reported as that split's accuracy.
    provenance: optional 'pretrained_name' (the timm name the weights ship under), 'train_time_s' and
    'machine' (what the training ran on), shown in the card. Without a `repo_id` the card is a local export's,
    named `local_name` (its folder) and loaded with `local-dir:`.
    """
    model_name = repo_id.split('/')[-1] if repo_id else local_name
    train_args, arch = loaded.training, loaded.arch
    learn = learn_mode(loaded.model)
    if learn is None:
        raise UsageError(f'the frozen parameters of {arch!r} match no learn mode (full, channels, spatial): '
                         f'the card cannot say what is frozen')
    dataset = train_args.get('dataset', '')
    hub_dataset = HUB_DATASETS.get(dataset, dataset or 'unknown')
    dataset_title = DATASET_TITLES.get(dataset, f'`{dataset}`')
    dataset_name = dataset_title.split(' (')[0]
    val_split = _eval_split(train_args)
    measured = []
    for results in robust:
        entry = _robust_entry(results, loaded)
        if entry is None:
            raise UsageError(f'the robustness results hold no entry for checkpoint {loaded.checkpoint}: '
                             f'run eval_robust.py --checkpoint on this checkpoint')
        measured.append((results, entry))

    def result(split: str, name: str, value: float, **kwargs) -> EvalResult:
        return EvalResult(task_type='image-classification', dataset_type=hub_dataset, dataset_name=dataset_name,
                          dataset_split=split, metric_type='accuracy', metric_name=name,
                          metric_value=round(value, 2), **kwargs)

    clean = checkpoint.best_metric
    eval_results = [result(val_split, 'top-1 accuracy', clean, metric_config='clean')]
    largest = max(measured, key=lambda m: m[1]['num_samples'], default=None)
    if largest is not None and largest[0]['split'] == val_split:
        largest = None  # the split that chose the epoch already has its accuracy
    if largest is not None:
        eval_results.append(result(largest[0]['split'], 'top-1 accuracy', largest[1]['clean_accuracy'],
                                   metric_config='clean', metric_args={'num_samples': largest[1]['num_samples']}))
    for results, entry in measured:
        for attack, values in entry['accuracy'].items():
            for label, value in zip(results['eps_labels'], values):
                eval_results.append(result(
                    results['split'], f'top-1 accuracy under {attack_name(results, attack)}, eps {label}', value,
                    metric_config=f'{attack.lower()}-eps-{label}',
                    metric_args={'attack': attack, 'eps': label, 'num_samples': entry['num_samples']}))
    card_data = ModelCardData(
        library_name='timm', license=config['pretrained_cfg'].get('license', 'apache-2.0'),
        tags=['image-classification', 'timm', 'timm-frozenmix', f'learn-{learn}'],
        datasets=[hub_dataset] if hub_dataset in HUB_DATASETS.values() else None,
        pipeline_tag='image-classification', model_name=model_name, eval_results=eval_results)

    stem = ' and the patch-projection stem' if any(
        role == 'spatial' and not is_depthwise(conv) for _, conv, role in conv_roles(loaded.model)) else ''
    learn_title, learn_paragraph = LEARN_TEXT[learn]
    pretrained_cfg = config['pretrained_cfg']
    hyperparameters = {k: train_args[k] for k in HYPERPARAMETERS if k in train_args and (
        train_args[k] not in (None, '', 0.0, False) or k in ('epochs', 'lr', 'opt', 'seed'))}
    if train_args.get('adv_train', 'none') == 'none':
        hyperparameters.pop('adv_eps', None)
    provenance = provenance or {}
    return ModelCard.from_template(
        card_data, template_path=str(CARD_TEMPLATE),
        model_name=model_name, repo_id=repo_id, arch=arch, learn_title=learn_title,
        learn_paragraph=learn_paragraph.format(stem=stem), dataset_title=dataset_title,
        roles=summarize(loaded.model, print_table=False),
        input_size='x'.join(map(str, pretrained_cfg['input_size'])),
        mean=tuple(round(m, 4) for m in pretrained_cfg['mean']), std=tuple(round(s, 4) for s in pretrained_cfg['std']),
        label_names=config.get('label_names'), spec=loaded.spec.to_dict(),
        train_command=loaded.command or 'not recorded by the checkpoint (see the settings below)',
        hyperparameters=hyperparameters, clean_accuracy=clean,
        clean_source=f'the {val_split} split of {dataset_title}, best epoch {checkpoint.best_epoch}',
        test_accuracy=largest[1]['clean_accuracy'] if largest else None,
        test_source=f'{largest[1]["num_samples"]:,} images of the {largest[0]["split"]} split' if largest else None,
        robust_table=_robust_table(measured) if measured else None,
        torchattacks_version=measured[0][0].get('torchattacks') if measured else None,
        pretrained_name=provenance.get('pretrained_name'),
        train_minutes=provenance['train_time_s'] / 60 if provenance.get('train_time_s') is not None else None,
        machine=provenance.get('machine'))


def _is_export(folder: Path) -> bool:
    """Whether `folder` holds exactly an earlier export of this command (its three files, its card tag)."""
    if sorted(p.name for p in folder.iterdir()) != sorted(EXPORT_FILES):
        return False
    try:
        card = ModelCard.load(folder / 'README.md')
        json.loads((folder / 'config.json').read_text())['architecture']
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return 'timm-frozenmix' in (card.data.tags or [])


def check_export_target(output) -> Path:
    """The export folder, checked before any work: new, empty, or an earlier export (which it replaces)."""
    output = check_output_folder(output)
    if output.exists() and any(output.iterdir()) and not _is_export(output):
        raise UsageError(f'{output} exists and holds something other than an earlier export '
                         f'({", ".join(EXPORT_FILES)}): choose a new --output folder')
    return output


def export(checkpoint_path, output, repo_id: Optional[str] = None, robust_json=(), use_ema: bool = False,
           provenance: Optional[Dict[str, Any]] = None, keep_readme: bool = False) -> Path:
    """Write model.safetensors, config.json and README.md for one train.py checkpoint; all or nothing.

    repo_id: the Hub repo (user/name) the card says it loads from; without one the card describes a local
    export that loads with `local-dir:`. robust_json: one robust.json path or several (eval_robust.py runs of
    this checkpoint) for the card; provenance: see `render_model_card`; keep_readme: when `output` holds an
    earlier export, keep its README.md (a card edited by hand) instead of writing a new card. The files are
    staged in a fresh temporary folder beside `output` and moved in at the end. `output` must be new, empty or
    an earlier export; anything else of the user's there is refused (UsageError), never replaced.
    """
    output = check_export_target(output)
    if repo_id is not None and (repo_id.count('/') != 1 or not all(repo_id.split('/'))):
        raise UsageError(f'--repo-id takes a Hub repo id of the form user-or-org/name, got {repo_id!r}')
    checkpoint = Checkpoint.load(checkpoint_path)
    spec = checkpoint.spec
    if spec.separate:
        raise UsageError(f'checkpoint {checkpoint_path} is a --separate conversion of {spec.architecture!r}, which '
                         f'timm cannot rebuild from a name: export a registered model (timm.list_models("*_chans"))')
    loaded = load_model(checkpoint_path=checkpoint_path, use_ema=use_ema)
    robust_paths = [robust_json] if isinstance(robust_json, (str, os.PathLike)) else list(robust_json or ())
    config = build_config(loaded)
    card = render_model_card(loaded, checkpoint, config, repo_id, read_robust_results(robust_paths), provenance,
                             local_name=output.name)
    kept_readme = output / 'README.md' if keep_readme and (output / 'README.md').is_file() else None

    with staging_folder(output.parent) as staging:
        folder = staging / output.name
        folder.mkdir()
        save_safetensors(loaded.model.state_dict(), folder / 'model.safetensors')
        (folder / 'config.json').write_text(json.dumps(config, indent=2) + '\n')
        if kept_readme:
            shutil.copyfile(kept_readme, folder / 'README.md')
        else:
            card.save(folder / 'README.md')
        if output.exists():  # empty, or an earlier export: checked above
            shutil.rmtree(output)
        os.replace(folder, output)
    return output


def check_can_push(repo_id: str) -> None:
    """Fail before any work when a push cannot happen: a malformed repo id, offline mode or no token."""
    if repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise UsageError(f'--push-to-hub needs a repo id of the form user-or-org/name, got {repo_id!r}')
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise UsageError('HF_HUB_OFFLINE is set: publishing needs the network (unset it, or export and push later)')
    if huggingface_hub.get_token() is None:
        raise UsageError('no Hugging Face token: run `hf auth login` or set HF_TOKEN to publish')


def push(folder, repo_id: str, private: bool = False, revision: Optional[str] = None, create_pr: bool = False,
         keep_readme: bool = False) -> str:
    """Upload the export folder, as timm's push_to_hf_hub does; returns the URL of the commit or pull request.

    The repo is created if needed; `revision` names the branch to commit to (created from main if it does not
    exist), `create_pr` opens a pull request instead of committing; `keep_readme` leaves a README.md the repo
    already has in place (the export's card is uploaded only where there is none).
    """
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    skip = ['README.md'] if keep_readme and api.file_exists(repo_id, 'README.md', revision=revision) else None
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision, create_pr=create_pr,
                               ignore_patterns=skip, commit_message='Upload model from timm-frozenmix')
    return str(commit.pr_url or commit.commit_url)
