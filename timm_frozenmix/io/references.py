""" timm `local-dir:` and `hf-hub:` references, checked before timm builds and loads them

timm trusts an export: a garbage config.json or weights file ends in a traceback deep inside its loader, a
config asking for absurd sizes allocates until the machine gives up, and weights whose head does not match
`num_classes` load with a new random head. `check_reference` reads the files timm would read (config.json,
then the weights file timm prefers), builds the model on the meta device (no memory), and compares every
weight's name and shape, so each of these is one line that says what is wrong, before anything is allocated.
"""
import json
from pathlib import Path
from typing import Any, Dict, Tuple

import huggingface_hub
import timm
import torch
from safetensors import safe_open

from timm_frozenmix.core.errors import UsageError

__all__ = ['REFERENCE_PREFIXES', 'check_reference', 'is_reference']

REFERENCE_PREFIXES = ('hf-hub:', 'local-dir:')
# the weights files timm's loader prefers, in its order, then any file of these extensions
WEIGHTS_FILES = ('model.safetensors', 'pytorch_model.bin', 'pytorch_model.pth', 'model.pth')
WEIGHTS_EXTENSIONS = ('.safetensors', '.pth', '.pth.tar', '.bin')
MAX_SIZE_ARGUMENT = 2 ** 16  # no integer argument of a real model (width, depth, classes) comes near
MAX_PARAMETERS = 10 ** 10


def is_reference(name: str) -> bool:
    return name.startswith(REFERENCE_PREFIXES)


def _hub_file(repo: str, filename: str) -> Path:
    """A file of the Hub repo (`org/name[@revision]`) through huggingface_hub's cache; FileNotFoundError when the
    repo lacks it, UsageError when the repo cannot be reached (offline with an empty cache, no such repo)."""
    repo_id, _, revision = repo.partition('@')
    errors = huggingface_hub.errors
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision or None))
    except errors.EntryNotFoundError as e:
        if not isinstance(e, errors.LocalEntryNotFoundError):  # the repo has no such file
            raise FileNotFoundError(filename) from None
        problem = e
    except (OSError, errors.HFValidationError) as e:  # HTTP errors are OSErrors
        problem = e
    raise UsageError(f'hf-hub:{repo} cannot be read: {type(problem).__name__} ({str(problem).splitlines()[0]}); '
                     f'check the repo id, the network, or the Hugging Face cache when HF_HUB_OFFLINE is set')


def _files(name: str) -> Tuple[Path, Path]:
    """config.json and the weights file timm would load for the reference `name`."""
    if name.startswith('local-dir:'):
        folder = Path(name[len('local-dir:'):])
        if not folder.is_dir():
            raise UsageError(f'{name}: {folder} is not a folder (local-dir: names an export folder)')
        config = folder / 'config.json'
        weights = next((folder / f for f in WEIGHTS_FILES if (folder / f).is_file()), None) or next(
            (f for ext in WEIGHTS_EXTENSIONS for f in sorted(folder.glob(f'*{ext}'))), None)
    else:
        repo = name[len('hf-hub:'):]
        try:
            config = _hub_file(repo, 'config.json')
        except FileNotFoundError:
            raise UsageError(f'{name} has no config.json: it is not a timm export '
                             f'(timm.models.save_for_hf writes one)') from None
        weights = None
        for filename in WEIGHTS_FILES:
            try:
                weights = _hub_file(repo, filename)
                break
            except FileNotFoundError:
                continue
    if not config.is_file():
        raise UsageError(f'{name} has no config.json: it is not a timm export (timm.models.save_for_hf writes one)')
    if weights is None:
        raise UsageError(f'{name} has no weights file ({", ".join(WEIGHTS_FILES)})')
    return config, weights


def _read_config(name: str, path: Path) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(architecture, model_args, pretrained_cfg) of a timm config.json, in its current or legacy layout."""
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f'{name}: config.json is not valid JSON ({e})') from None
    if not isinstance(config, dict):
        raise UsageError(f'{name}: config.json holds a {type(config).__name__}, not the object timm writes')
    architecture = config.get('architecture')
    pretrained_cfg = config.get('pretrained_cfg', config)
    model_args = config.get('model_args', {})
    if not isinstance(architecture, str) or not isinstance(pretrained_cfg, dict) or not isinstance(model_args, dict):
        raise UsageError(f'{name}: config.json lacks timm\'s "architecture" name, or its "pretrained_cfg" / '
                         f'"model_args" are not objects')
    if not timm.is_model(architecture):
        raise UsageError(f'{name} names an architecture this installation does not know ({architecture!r}): '
                         f'`import timm_frozenmix` first, or upgrade with `pip install -U timm timm-frozenmix`')
    return architecture, model_args, dict(pretrained_cfg, num_classes=config.get('num_classes',
                                                                                 pretrained_cfg.get('num_classes')))


def _check_sizes(name: str, model_args: Dict[str, Any]) -> None:
    def integers(value):
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from integers(item)
    for key, value in model_args.items():
        if any(abs(n) > MAX_SIZE_ARGUMENT for n in integers(value)):
            raise UsageError(f'{name}: config.json asks for {key}={value}, beyond any model this loads '
                             f'(integers up to {MAX_SIZE_ARGUMENT:,}): the export is corrupt or not meant for timm')


def _weight_shapes(name: str, path: Path) -> Dict[str, Tuple[int, ...]]:
    """Every tensor's name and shape, read without loading the values."""
    try:
        if path.suffix == '.safetensors':
            with safe_open(str(path), framework='pt') as f:
                return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        state = torch.load(path, map_location='meta', weights_only=True)
        state = state.get('state_dict', state) if isinstance(state, dict) else state
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError('not a state dict of tensors')
        return {key: tuple(value.shape) for key, value in state.items()}
    except Exception as e:  # noqa: BLE001  every reader error of a corrupt file is the user's to fix
        raise UsageError(f'{name}: {path.name} cannot be read as weights ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else "corrupt"}); export it again') from None


def check_reference(name: str) -> None:
    """Raise UsageError unless timm can build `name` (`local-dir:FOLDER` or `hf-hub:ORG/REPO[@REV]`) from its
    config.json and load every one of its weights into it, with the shapes it declares."""
    config_path, weights_path = _files(name)
    architecture, model_args, pretrained_cfg = _read_config(name, config_path)
    _check_sizes(name, model_args)
    overrides = {}
    if isinstance(pretrained_cfg.get('num_classes'), int) and 'num_classes' not in model_args:
        overrides['num_classes'] = pretrained_cfg['num_classes']
    input_size = pretrained_cfg.get('input_size')
    if isinstance(input_size, (list, tuple)) and input_size and 'in_chans' not in model_args:
        overrides['in_chans'] = input_size[0]
    _check_sizes(name, overrides)
    try:
        with torch.device('meta'):
            model = timm.create_model(architecture, pretrained=False, **model_args, **overrides)
    except TypeError as e:
        raise UsageError(f'{name}: config.json\'s model_args {model_args} do not build {architecture} ({e})') from None
    if sum(p.numel() for p in model.parameters()) > MAX_PARAMETERS:
        raise UsageError(f'{name}: config.json builds a model of more than {MAX_PARAMETERS:,} parameters')
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = _weight_shapes(name, weights_path)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise UsageError(f'{name}: {weights_path.name} does not hold the weights of {architecture} '
                         f'with these model_args: {len(missing)} missing (e.g. {missing[:3]}), '
                         f'{len(unexpected)} unexpected (e.g. {unexpected[:3]})')
    differing = [key for key in expected if expected[key] != found[key]]
    if differing:
        key = differing[0]
        head = pretrained_cfg.get('classifier')
        if isinstance(head, str) and key.startswith(f'{head}.'):
            raise UsageError(f'{name}: config.json says num_classes={overrides.get("num_classes", model.num_classes)} '
                             f'but the weights\' head {key} has shape {found[key]}: fix the config, not a random head')
        raise UsageError(f'{name}: {key} has shape {found[key]} in {weights_path.name} but {expected[key]} in '
                         f'the model config.json describes ({len(differing)} tensor(s) differ)')
