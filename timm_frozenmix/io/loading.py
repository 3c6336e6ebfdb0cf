""" Trained models for evaluation and analysis, from wherever they live

A train.py checkpoint (rebuilt from its model spec, so `--separate` models and model kwargs
come back exactly), a registered name with its published weights (`--pretrained`), or a timm `hf-hub:` /
`local-dir:` reference. Every failure is one line that says what to do.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import timm
import torch.nn as nn
from timm.data import resolve_data_config

from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.references import check_reference, is_reference
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.models.spec import ModelSpec, build_model

__all__ = ['LoadedModel', 'load_model', 'model_from_checkpoint']

@dataclass
class LoadedModel:
    """A model in eval mode that takes normalized input, and the data config its inputs need.

    From a checkpoint it also carries the model's spec, how it was trained (the train.py settings, by flag
    name) and the command line that trained it, where the checkpoint recorded them.
    """
    model: nn.Module
    arch: str
    data_config: Dict[str, Any]
    checkpoint: Optional[str] = None
    spec: Optional[ModelSpec] = None
    training: Dict[str, Any] = field(default_factory=dict)
    command: Optional[str] = None

    @property
    def num_classes(self) -> int:
        return self.model.num_classes


def model_from_checkpoint(checkpoint: Checkpoint, use_ema: bool = False) -> nn.Module:
    """The exact model a train.py checkpoint holds: rebuilt from its spec, then its weights loaded."""
    model = build_model(checkpoint.spec)
    model.load_state_dict(checkpoint.weights(use_ema))
    return model


def load_model(
        model_name: Optional[str] = None,
        checkpoint_path: Optional[str] = None,
        pretrained: bool = False,
        use_ema: bool = False,
) -> LoadedModel:
    """A classifier from a train.py checkpoint (optionally checked against `model_name`) or published weights."""
    if checkpoint_path is not None:
        checkpoint = Checkpoint.load(checkpoint_path)
        spec = checkpoint.spec
        if model_name is not None and spec.architecture != model_name:
            raise UsageError(f'checkpoint {checkpoint_path} is for {spec.architecture!r}, not {model_name!r}: '
                             f'pass --model {spec.architecture}, or drop --model')
        if spec.task != 'classification':
            raise UsageError(f'checkpoint {checkpoint_path} was trained for --task {spec.task}, not classification')
        model = model_from_checkpoint(checkpoint, use_ema)
        data_config = checkpoint.data_config or resolve_data_config(checkpoint.settings, model=model)
        return LoadedModel(model.eval(), spec.architecture, data_config,
                           str(Path(checkpoint_path).resolve()), spec, checkpoint.settings, checkpoint.command)

    if model_name is None:
        raise UsageError('name a model (--model) or a train.py checkpoint (--checkpoint)')
    reference = is_reference(model_name)
    if reference:
        check_reference(model_name)
    elif not timm.is_model(model_name):
        raise UsageError(f'unknown model {model_name!r}: see timm.list_models() (import timm_frozenmix first)')
    if not (pretrained or reference):
        raise UsageError(f'{model_name!r} alone has random weights: add --pretrained for its published weights, '
                         f'or pass --checkpoint')
    model = timm.create_model(model_name, pretrained=True)
    return LoadedModel(model.eval(), model_name, resolve_data_config({}, model=model))
