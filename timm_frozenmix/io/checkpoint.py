""" Checkpoints that are never half-written, never unpickle code, and say how their model is built

Every file is written to a temporary name in the same folder and renamed into place, so a run killed at any
moment leaves either the previous file or the new one. Pickled checkpoints are read with `weights_only=True`.
A checkpoint holds its model's `ModelSpec` under 'spec'; those written by v0.1.0 replayed train.py's flags
under 'args' instead, and `checkpoint_spec` reads both.
"""
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.outputs import replace_atomically
from timm_frozenmix.models.spec import ModelSpec

__all__ = ['save_atomic', 'save_safetensors', 'load_checkpoint', 'checkpoint_spec', 'check_architecture']


def save_atomic(obj: Dict[str, Any], path) -> None:
    replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def save_safetensors(state_dict: Dict[str, torch.Tensor], path, metadata: Optional[Dict[str, str]] = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_checkpoint(path) -> Dict[str, Any]:
    """A train.py checkpoint (or bare safetensors weights as {'state_dict': ...}), with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f'checkpoint {path} not found')
    try:
        if path.suffix == '.safetensors':
            return {'state_dict': load_file(str(path))}
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # any failure to parse means the file is not a usable checkpoint
        raise UsageError(f'checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}); '
                         f'use a last.pth.tar / model_best.pth.tar written by train.py') from None
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise UsageError(f'checkpoint {path} holds no state_dict; use a checkpoint written by train.py')
    return checkpoint


def checkpoint_spec(checkpoint: Dict[str, Any], path) -> ModelSpec:
    """The spec of the model a train.py checkpoint holds, from 'spec' or, in v0.1.0 files, from 'args'."""
    if 'spec' in checkpoint:
        return ModelSpec.from_dict(checkpoint['spec'])
    args = checkpoint.get('args')
    if not isinstance(args, dict) or 'model' not in args or 'in_chans' not in checkpoint:
        raise UsageError(f'checkpoint {path} does not record how its model was built; '
                         f'use a last.pth.tar / model_best.pth.tar written by train.py')
    return ModelSpec(
        architecture=args['model'], model_kwargs=args.get('model_kwargs') or {}, in_chans=checkpoint['in_chans'],
        num_classes=checkpoint['num_classes'], separate=bool(args.get('separate')), learn=args.get('learn'),
        depth_multiplier=args.get('depth_multiplier', 9), spatial_init=args.get('spatial_init'),
        smooth_sigma=args.get('smooth_sigma') or 0.0, task=checkpoint.get('task', 'classification'))


def check_architecture(spec: ModelSpec, model_name: str, path) -> None:
    """A checkpoint for another architecture is refused before anything is built or written."""
    if spec.architecture != model_name:
        raise UsageError(f'checkpoint {path} is for {spec.architecture!r}, not {model_name!r}: '
                         f'pass --model {spec.architecture}')
