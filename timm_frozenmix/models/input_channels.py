""" Pretrained weights for another input channel count (`in_chans`) through a separable stem

timm adapts a model's dense `first_conv` to any `in_chans` (adapt_input_conv: channels summed for 1, else
repeated and scaled by source / target channels). A separable stem holds `depth_multiplier` depthwise filters
per input channel, a layout adapt_input_conv cannot read, so `adapt_input_channels`, the models'
`pretrained_filter_fn`, adapts it before timm's step runs (which then finds the shapes matching): target
channel t takes the filters of source channel t mod C and their pointwise columns scaled by C / in_chans,
timm's own rule, exact for a gray image repeated in every channel when C = 1. Summing C > 1 channels into one
would need C times as many filters, so that case raises.
"""
from typing import Dict

import torch
import torch.nn as nn

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers.separable import SeparableConv2d

__all__ = ['adapt_input_channels']


def _adapt_separable(state_dict: Dict[str, torch.Tensor], name: str, layer: SeparableConv2d) -> None:
    depthwise, pointwise = state_dict[f'{name}.depthwise.weight'], state_dict[f'{name}.pointwise.weight']
    d, target = layer.depth_multiplier, layer.in_channels
    source = depthwise.shape[0] // d
    if source == target or layer.groups != 1:
        return
    if target == 1:
        raise UsageError(
            f'{name} is separable with {d} filters per input channel: {source} channels of pretrained filters cannot '
            f'be summed into 1 exactly; load with in_chans={source} and repeat the gray channel {source} times')
    channels = torch.arange(target) % source  # the source channel each target channel copies
    rows = (channels[:, None] * d + torch.arange(d)).flatten()
    state_dict[f'{name}.depthwise.weight'] = depthwise[rows].clone()
    state_dict[f'{name}.pointwise.weight'] = pointwise[:, rows] * (source / target)


def adapt_input_channels(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm's `pretrained_filter_fn` for our models: every separable layer of the pretrained `state_dict` whose
    input channel count differs from `model`'s (the stem) adapted to it; dense layers are left to timm.

    Raises UsageError where no exact adaptation exists (C > 1 channels into 1 through a separable stem).
    """
    for name, layer in model.named_modules():
        if isinstance(layer, SeparableConv2d) and f'{name}.depthwise.weight' in state_dict:
            _adapt_separable(state_dict, name, layer)
    return state_dict
