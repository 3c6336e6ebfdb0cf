""" How a model is built: one small description that travels with every checkpoint and Hub export

A `ModelSpec` names a timm architecture and the frozen-mixing choices made on top of it, and nothing about how
it was trained. `build_model(spec)` rebuilds the same module (weights aside) from it anywhere: train.py builds
its model this way, checkpoints and Hub `config.json` files store `spec.to_dict()`, and loading rebuilds from it.
"""
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Optional

import timm
import torch.nn as nn

from timm_frozenmix.models.convert import freeze, init_depthwise_, separate
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers.filters import check_spatial_options
from timm_frozenmix.core.learn import resolve_learn
from timm_frozenmix.core.parsing import check_depth_multiplier
from timm_frozenmix.layers.separable import SeparableConv2d
from timm_frozenmix.models.unshuffle_net import UnshuffleNet

__all__ = ['ModelSpec', 'TASKS', 'build_model']

TASKS = ('classification', 'unshuffle')
SPEC_VERSION = 2  # 2: depth_multiplier is None where the architecture's own applies


@dataclass(frozen=True)
class ModelSpec:
    """Everything `build_model` needs to rebuild a model exactly (its weights aside).

    architecture: a timm model name (this package's, any timm model, or `hf-hub:` / `local-dir:`).
    model_kwargs: extra `timm.create_model` kwargs (JSON values).
    in_chans, num_classes: image channels and classes; None until the dataset says (num_classes 0 for
        an un-shuffling backbone).
    separate: make every dense conv larger than 1x1 separable (`convert.separate`).
    depth_multiplier: depthwise filters per input channel of a `separate` conversion (None: 9, or with
        keep_function each layer's kernel height x width where that is more), or of a model
        built with separable convolutions (a separable ResNet; None: the architecture's own).
    learn: 'full', 'channels' or 'spatial' (aliases 'chans', 'space' are parsed here, once); None keeps
        what the architecture freezes (a `_chans` name freezes its spatial mixing itself).
    spatial_init, smooth_sigma: structure and Gaussian smoothing (pixels) of the spatial filters; None and
        0.0 keep the architecture's own.
    keep_function: with `separate`, solve the new pointwise weights from the dense kernels they replace, so the
        (pretrained) model computes what it did (`convert.separate(keep_function=True)`).
    task: 'classification', or 'unshuffle' for a patch-1 backbone with a 1x1 projection back to pixels.

    Raises UsageError on a value no model could be built with.
    """
    architecture: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    in_chans: Optional[int] = None
    num_classes: Optional[int] = None
    separate: bool = False
    learn: Optional[str] = None
    depth_multiplier: Optional[int] = None
    spatial_init: Optional[str] = None
    smooth_sigma: float = 0.0
    keep_function: bool = False
    task: str = 'classification'

    def __post_init__(self):
        if self.learn is not None:
            object.__setattr__(self, 'learn', resolve_learn(self.learn))
        object.__setattr__(self, 'model_kwargs', dict(self.model_kwargs))
        check_spatial_options(self.spatial_init or 'random', self.smooth_sigma)
        if self.keep_function and not self.separate:
            raise UsageError('keep_function applies to a separate conversion: add --separate (and --pretrained, '
                             'whose function it keeps)')
        if self.task not in TASKS:
            raise UsageError(f'unknown task {self.task!r}: choose one of {", ".join(TASKS)}')
        if self.depth_multiplier is not None:
            check_depth_multiplier(self.depth_multiplier)
        for name in ('in_chans', 'num_classes'):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0 or (name == 'in_chans' and value < 1)):
                raise UsageError(f'{name} must be a positive integer, got {value!r}')

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready, with a version so later releases can read it."""
        return {'version': SPEC_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'ModelSpec':
        """The spec `to_dict` wrote; UsageError if a newer release wrote it."""
        data = dict(data)
        version = data.pop('version', SPEC_VERSION)
        unknown = set(data) - {f.name for f in fields(cls)}
        if version > SPEC_VERSION or unknown:
            raise UsageError(f'this model spec was written by a newer timm-frozenmix (version {version}, fields '
                             f'{", ".join(sorted(unknown)) or "-"}): upgrade with `pip install -U timm-frozenmix`')
        if version < 2 and not data.get('separate'):
            data['depth_multiplier'] = None  # version 1 recorded 9 where no conversion used it
        return cls(**data)

    def with_data(self, in_chans: int, num_classes: int) -> 'ModelSpec':
        """This spec with the channels and classes of the data, where it left them open."""
        return replace(self, in_chans=self.in_chans or in_chans,
                       num_classes=0 if self.task == 'unshuffle' else (self.num_classes or num_classes))

    def registered_kwargs(self, accepted) -> Dict[str, Any]:
        """The `timm.create_model` kwargs that rebuild this model by name, for the frozen-mixing options
        the architecture's class `accepts` (a `_chans` model takes learn, spatial_init, smooth_sigma; a
        separable ResNet depth_multiplier too)."""
        kwargs = {**self.model_kwargs, 'in_chans': self.in_chans}
        for key in ('learn', 'spatial_init', 'depth_multiplier'):
            if getattr(self, key) is not None and key in accepted:
                kwargs[key] = getattr(self, key)
        if self.smooth_sigma and 'smooth_sigma' in accepted:
            kwargs['smooth_sigma'] = self.smooth_sigma
        return kwargs


_NO_DEPTH_MULTIPLIER = ('{} has no separable convolutions that take --depth-multiplier: add --separate to convert '
                        'it, or drop --depth-multiplier')


def _built_with_depth_multiplier(model: nn.Module, depth_multiplier: int) -> bool:
    layers = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    return bool(layers) and all(m.depth_multiplier == depth_multiplier for m in layers)


def build_model(spec: ModelSpec, pretrained: bool = False, **create_kwargs) -> nn.Module:
    """The model `spec` describes: `timm.create_model`, then the separation or freezing it asks for.

    `create_kwargs` pass to timm (`drop_rate`, `drop_path_rate`, ...): they shape training, not the weights.
    Seed torch first where frozen random filters must agree (every rank of a DDP run).
    Raises UsageError when the spec has no channels or classes yet, or names a kwarg the model does not take.
    """
    if spec.in_chans is None or spec.num_classes is None:
        raise UsageError(f'the spec of {spec.architecture} leaves in_chans / num_classes open: call with_data first')
    if not spec.separate and spec.depth_multiplier is not None:
        create_kwargs['depth_multiplier'] = spec.depth_multiplier
    try:
        model = timm.create_model(spec.architecture, pretrained=pretrained, in_chans=spec.in_chans,
                                  num_classes=spec.num_classes, **spec.model_kwargs, **create_kwargs)
    except TypeError as e:
        if not ('unexpected keyword argument' in str(e) or 'multiple values for keyword argument' in str(e)):
            raise
        if "argument 'depth_multiplier'" in str(e) and 'depth_multiplier' in create_kwargs:
            raise UsageError(_NO_DEPTH_MULTIPLIER.format(spec.architecture)) from None
        rejected = [k for k in spec.model_kwargs if f"argument '{k}'" in str(e)]
        if not rejected:
            raise
        raise UsageError(f'{spec.architecture} does not take --model-kwargs {", ".join(rejected)}: drop or rename '
                         f'it (timm.create_model passes them to the model class)') from None
    if spec.separate:
        separate(model, depth_multiplier=spec.depth_multiplier, learn=spec.learn or 'channels',
                 spatial_init=spec.spatial_init or 'random', smooth_sigma=spec.smooth_sigma,
                 keep_function=spec.keep_function, factorize=pretrained)  # without weights: the same layers
    else:
        if spec.depth_multiplier is not None and not _built_with_depth_multiplier(model, spec.depth_multiplier):
            raise UsageError(_NO_DEPTH_MULTIPLIER.format(spec.architecture))
        if spec.spatial_init or spec.smooth_sigma:
            init_depthwise_(model, spec.spatial_init or 'random', spec.smooth_sigma)
        if spec.learn:
            freeze(model, spec.learn)
    if spec.task == 'unshuffle':
        model = UnshuffleNet(model, out_chans=spec.in_chans)
    return model
