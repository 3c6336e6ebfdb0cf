""" The checkpoint format: one type, one writer, one reader, one format version

A `Checkpoint` holds a model's weights, the `ModelSpec` that rebuilds it, the data config its inputs need, and,
for train.py's files, the training state (epoch, optimizer, scaler, EMA, best metric) and the settings and
command line that made it. `Checkpoint.save` is the only writer and `Checkpoint.load` the only reader: every
other module goes through them, never through raw keys.

Format history (`version` in the file, as timm's own train.py checkpoints carry one):
- 3 (0.2.0): the model spec under 'spec', training settings under 'training', 'format' = 'timm-frozenmix'.
- 2 (between 0.1.0 and 0.2.0): the same keys, without 'format'.
- 0.1.0 (no spec): train.py's flags replayed under 'args', with 'in_chans', 'num_classes' and 'task' beside them.
- timm's own train.py (its `CheckpointSaver`): its flags pickled as an argparse `Namespace` under 'args'; the
  model is rebuilt from `args.model`, `args.model_kwargs`, `args.in_chans` and `args.num_classes`, and the data
  config is left for `resolve_data_config(settings, model=...)`, as timm's scripts resolve it.
Pickles are read with `weights_only=True`, allowing one class beyond tensors and containers: the `Namespace` that
timm's train.py stores. Files are written to a temporary name and renamed into place.
"""
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import save_file

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.outputs import replace_atomically
from timm_frozenmix.models.spec import ModelSpec

__all__ = ['Checkpoint', 'FORMAT_VERSION', 'TIMM_TRAIN', 'WRITTEN_BY', 'save_safetensors']

FORMAT_VERSION = 3
WRITTEN_BY = 'timm-frozenmix'  # what `written_by` says of this package's own files
_TIMM_TRAIN_GLOBALS = [Namespace]  # what timm's train.py pickles beside tensors: its flags
TIMM_TRAIN = "timm's train.py"


def save_safetensors(state_dict: Dict[str, torch.Tensor], path, metadata: Optional[Dict[str, str]] = None) -> None:
    """Weights as safetensors, contiguous and on the CPU, written atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


@dataclass
class Checkpoint:
    """A trained model and, for train.py's files, the state that resumes its training.

    spec: how the model is built (`build_model(spec)`); state_dict: its weights (normalized input).
    data_config: timm's data config of its inputs (input_size, mean, std, ...).
    settings: train.py's settings by field name (`TrainConfig`), as recorded; command: its command line.
    epoch: the last finished epoch (0-based); best_metric / best_epoch: the best validation so far.
    optimizer, scaler, state_dict_ema: training state, where there is one.
    written_by: 'timm-frozenmix', or "timm's train.py" for files of timm's own training script.
    """
    spec: ModelSpec
    state_dict: Dict[str, torch.Tensor]
    data_config: Dict[str, Any] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    command: Optional[str] = None
    epoch: Optional[int] = None
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    optimizer: Optional[Dict[str, Any]] = None
    scaler: Optional[Dict[str, Any]] = None
    state_dict_ema: Optional[Dict[str, torch.Tensor]] = None
    written_by: str = WRITTEN_BY

    def weights(self, use_ema: bool = False) -> Dict[str, torch.Tensor]:
        """The model weights, or its EMA weights; UsageError where no EMA was kept."""
        if not use_ema:
            return self.state_dict
        if self.state_dict_ema is None:
            raise UsageError('this checkpoint holds no EMA weights: train with --model-ema, or drop --use-ema')
        return self.state_dict_ema

    def to_dict(self) -> Dict[str, Any]:
        state = {
            'format': WRITTEN_BY, 'version': FORMAT_VERSION, 'spec': self.spec.to_dict(), 'training': self.settings,
            'command': self.command, 'data_config': dict(self.data_config), 'epoch': self.epoch,
            'state_dict': self.state_dict, 'best_metric': self.best_metric, 'best_epoch': self.best_epoch,
        }
        for key in ('optimizer', 'scaler', 'state_dict_ema'):
            if getattr(self, key) is not None:
                state[key] = getattr(self, key)
        return state

    def save(self, path) -> None:
        """Write atomically: a reader sees the previous file or this whole one."""
        replace_atomically(path, lambda tmp: torch.save(self.to_dict(), tmp))

    @classmethod
    def load(cls, path) -> 'Checkpoint':
        """A train.py checkpoint of any version; UsageError in one line for anything else."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f'checkpoint {path} not found')
        if path.suffix == '.safetensors':
            raise UsageError(f'{path} holds weights only, without how to build their model: pass the '
                             f'model_best.pth.tar beside it, or its Hub export folder as local-dir:')
        try:
            with torch.serialization.safe_globals(_TIMM_TRAIN_GLOBALS):
                data = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # any failure to parse means the file is not a usable checkpoint
            raise UsageError(f'checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}); '
                             f'use a last.pth.tar / model_best.pth.tar written by train.py') from None
        if not isinstance(data, dict) or 'state_dict' not in data:
            raise UsageError(f'checkpoint {path} holds no state_dict; use a checkpoint written by train.py')
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], path='checkpoint') -> 'Checkpoint':
        version = data.get('version', 1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise UsageError(f'checkpoint {path} was written by a newer timm-frozenmix (format {version}): '
                             f'upgrade with `pip install -U timm-frozenmix`')
        if isinstance(data.get('args'), Namespace):
            return _from_timm_train(data, path)
        if 'spec' in data:
            spec, settings = ModelSpec.from_dict(data['spec']), dict(data.get('training') or {})
        else:
            spec, settings = _spec_of_v010(data, path), dict(data.get('args') or {})
        if version < 3 and not settings.get('separate'):
            settings['depth_multiplier'] = None  # earlier versions recorded 9 where it was not used
        return cls(
            spec=spec, state_dict=data['state_dict'], data_config=dict(data.get('data_config') or {}),
            settings=settings, command=data.get('command'), epoch=data.get('epoch'),
            best_metric=data.get('best_metric'), best_epoch=data.get('best_epoch'), optimizer=data.get('optimizer'),
            scaler=data.get('scaler'), state_dict_ema=data.get('state_dict_ema'))


def _spec_of_v010(data: Dict[str, Any], path) -> ModelSpec:
    """0.1.0 files replayed train.py's flags under 'args' instead of a spec."""
    args = data.get('args')
    if not isinstance(args, dict) or 'model' not in args or 'in_chans' not in data:
        raise UsageError(f'checkpoint {path} does not record how its model was built; '
                         f'use a last.pth.tar / model_best.pth.tar written by train.py')
    return ModelSpec(
        architecture=args['model'], model_kwargs=args.get('model_kwargs') or {}, in_chans=data['in_chans'],
        num_classes=data['num_classes'], separate=bool(args.get('separate')), learn=args.get('learn'),
        depth_multiplier=args.get('depth_multiplier', 9) if args.get('separate') else None,
        spatial_init=args.get('spatial_init'),
        smooth_sigma=args.get('smooth_sigma') or 0.0, task=data.get('task', 'classification'))


def _from_timm_train(data: Dict[str, Any], path) -> Checkpoint:
    """A checkpoint of timm's own train.py: the model as its flags built it, the best metric its saver tracked."""
    args = vars(data['args'])
    if not args.get('model') or not args.get('num_classes'):
        raise UsageError(f'checkpoint {path} was written by timm\'s train.py but records no model or number of '
                         f'classes in its args: rebuild the model yourself and load its state_dict')
    input_size = args.get('input_size')
    in_chans = args.get('in_chans') or (input_size[0] if input_size else 3)  # as timm's train.py resolves it
    # the model kwargs timm's train.py passes to create_model beside --model-kwargs, where they were set
    built_with = {key: args[flag] for flag, key in (('gp', 'global_pool'), ('bn_momentum', 'bn_momentum'),
                                                    ('bn_eps', 'bn_eps')) if args.get(flag) is not None}
    spec = ModelSpec(architecture=args['model'], model_kwargs={**built_with, **(args.get('model_kwargs') or {})},
                     in_chans=in_chans, num_classes=args['num_classes'])
    saver = data.get('saver') or {}
    best_metric, best_epoch = saver.get('best_metric'), saver.get('best_epoch')
    pending_epoch, pending_metric = saver.get('pending') or (data.get('epoch'), data.get('metric'))
    lower_is_better = args.get('eval_metric') == 'loss'  # as timm's saver ranks it
    if pending_metric is not None and (best_metric is None or (
            pending_metric < best_metric if lower_is_better else pending_metric > best_metric)):
        best_metric, best_epoch = pending_metric, pending_epoch
    return Checkpoint(
        spec=spec, state_dict=data['state_dict'], settings=args, command=None, epoch=data.get('epoch'),
        best_metric=best_metric, best_epoch=best_epoch, optimizer=data.get('optimizer'),
        scaler=data.get('amp_scaler'), state_dict_ema=data.get('state_dict_ema'), written_by=TIMM_TRAIN)
