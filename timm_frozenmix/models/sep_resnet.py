""" Separable pre-activation ResNets

The ResNets of "Rethinking the Role of Spatial Mixing" (https://arxiv.org/abs/2503.16760): timm's
pre-activation ResNetV2 (identity mappings, BatchNorm) with every convolution larger than 1x1 made separable
with depth multiplier 9, so the pointwise part has exactly the dense conv's parameter count (Eq. 3).
`_chans` freezes the depthwise (spatial) filters at random init, `_space` freezes the pointwise ones.

ImageNet models have 4 stages (8n+2 layers for 10/18/26, the usual 34 and bottleneck 50); CIFAR models have a
3x3 stride-1 stem and 3 stages of widths 16/32/64 times `width` (6n+2 layers).

`separable=False` builds the same network with dense convolutions: the baseline a separable model is compared
with (`sep_resnet20_cifar_full` with `separable=False` is the dense pre-activation ResNet-20).
"""
from collections import OrderedDict
from functools import partial
from typing import Sequence

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import BatchNormAct2d, create_conv2d
from timm.layers.padding import get_padding_value
from timm.models import register_model, generate_default_cfgs
from timm.models.resnetv2 import ResNetV2

from timm_frozenmix.models.convert import freeze
from timm_frozenmix.core.constants import CIFAR_MEAN, CIFAR_STD
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers.filters import check_spatial_options, init_spatial_
from timm_frozenmix.core.learn import resolve_learn
from timm_frozenmix.layers.separable import SeparableConv2d
from timm_frozenmix.models._factory import PAPER_ID, build_model

__all__ = ['SeparableResNetV2', 'create_separable_conv2d']


def create_separable_conv2d(in_chs: int, out_chs: int, kernel_size: int, depth_multiplier: int = 9, **kwargs):
    """timm's create_conv2d, but separable for kernels larger than 1x1 (1x1 convs are already channel-only)."""
    if kernel_size == 1:
        return create_conv2d(in_chs, out_chs, kernel_size, **kwargs)
    stride, dilation = kwargs.pop('stride', 1), kwargs.pop('dilation', 1)
    padding, is_dynamic = get_padding_value(kwargs.pop('padding', ''), kernel_size, stride=stride, dilation=dilation)
    return SeparableConv2d(
        in_chs, out_chs, kernel_size, stride=stride, padding=0 if is_dynamic else padding, dilation=dilation,
        bias=kwargs.pop('bias', False), depth_multiplier=depth_multiplier, same_padding=is_dynamic, **kwargs)


class SeparableResNetV2(ResNetV2):
    """ Pre-activation ResNet whose k x k convs are separable, with spatial filters per `spatial_init`.

    `stem='cifar'` replaces the 7x7 stride-2 stem and max pool by one 3x3 stride-1 conv. `separable=False` keeps
    timm's dense convs (only with learn='full' and the default spatial options); raises UsageError otherwise.
    """

    def __init__(
            self,
            layers: Sequence[int],
            channels: Sequence[int] = (64, 128, 256, 512),
            stem: str = 'imagenet',
            basic: bool = True,
            width: int = 1,
            depth_multiplier: int = 9,
            learn: str = 'full',
            spatial_init: str = 'random',
            smooth_sigma: float = 0.0,
            separable: bool = True,
            **kwargs,
    ):
        learn = resolve_learn(learn)
        check_spatial_options(spatial_init, smooth_sigma)
        if stem not in ('imagenet', 'cifar'):
            raise UsageError(f"unknown stem {stem!r}: choose 'imagenet' or 'cifar'")
        if not separable and (learn != 'full' or spatial_init != 'random' or smooth_sigma):
            raise UsageError('separable=False builds dense convolutions, which have no spatial or channel part to '
                             'freeze or initialize: use a _full model with the default spatial_init and smooth_sigma')
        conv_layer = partial(create_separable_conv2d, depth_multiplier=depth_multiplier) if separable else create_conv2d
        super().__init__(
            layers,
            channels=channels,
            stem_chs=channels[0] if stem == 'cifar' else 64,
            width_factor=width,
            basic=basic,
            bottle_ratio=1.0 if basic else 0.25,
            conv_layer=conv_layer,
            norm_layer=BatchNormAct2d,
            **kwargs,
        )
        if stem == 'cifar':
            stem_chs = self.feature_info[0]['num_chs']
            self.stem = nn.Sequential(OrderedDict(conv=conv_layer(self.in_chans, stem_chs, 3)))
            for info in self.feature_info:
                info['reduction'] = max(1, info['reduction'] // 4)
        # ResNetV2 re-initializes every conv; the spatial filters follow the paper's init instead
        for module in self.modules():
            if isinstance(module, SeparableConv2d):
                init_spatial_(module.depthwise, spatial_init, smooth_sigma)
        freeze(self, learn)


def _create_sep_resnet(variant: str, pretrained: bool = False, **kwargs) -> SeparableResNetV2:
    out_indices = kwargs.pop('out_indices', tuple(range(len(kwargs['layers']) + 1)))  # the stem and every stage
    if not kwargs.get('separable', True):  # the dense stem conv has no depthwise part for the cfg to name
        kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, first_conv='stem.conv')
    return build_model(
        SeparableResNetV2, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs):
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.conv.depthwise', 'classifier': 'head.fc',
        'license': 'apache-2.0', 'paper_ids': PAPER_ID,
        **kwargs
    }


_MODES = ('full', 'chans', 'space')

default_cfgs = generate_default_cfgs({
    # no weights exist for these yet, so no pretrained tags: timm.list_pretrained() stays truthful
    **{f'sep_resnet{d}_{m}': _cfg() for d in (10, 18, 26, 34, 50) for m in _MODES},
    **{f'sep_resnet{d}_cifar_{m}': _cfg(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0,
                                        mean=CIFAR_MEAN, std=CIFAR_STD)
       for d in (20, 32, 44, 56, 110) for m in _MODES},
})


@register_model
def sep_resnet10_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-10, ImageNet, d = 9, fully learned."""
    model_args = dict(layers=(1, 1, 1, 1), learn='full')
    return _create_sep_resnet('sep_resnet10_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet10_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-10, ImageNet, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(1, 1, 1, 1), learn='channels')
    return _create_sep_resnet('sep_resnet10_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet10_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-10, ImageNet, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(1, 1, 1, 1), learn='spatial')
    return _create_sep_resnet('sep_resnet10_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet18_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-18, ImageNet, d = 9, fully learned."""
    model_args = dict(layers=(2, 2, 2, 2), learn='full')
    return _create_sep_resnet('sep_resnet18_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet18_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-18, ImageNet, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(2, 2, 2, 2), learn='channels')
    return _create_sep_resnet('sep_resnet18_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet18_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-18, ImageNet, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(2, 2, 2, 2), learn='spatial')
    return _create_sep_resnet('sep_resnet18_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet26_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-26, ImageNet, d = 9, fully learned."""
    model_args = dict(layers=(3, 3, 3, 3), learn='full')
    return _create_sep_resnet('sep_resnet26_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet26_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-26, ImageNet, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(3, 3, 3, 3), learn='channels')
    return _create_sep_resnet('sep_resnet26_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet26_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-26, ImageNet, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(3, 3, 3, 3), learn='spatial')
    return _create_sep_resnet('sep_resnet26_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet34_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-34, ImageNet, d = 9, fully learned."""
    model_args = dict(layers=(3, 4, 6, 3), learn='full')
    return _create_sep_resnet('sep_resnet34_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet34_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-34, ImageNet, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(3, 4, 6, 3), learn='channels')
    return _create_sep_resnet('sep_resnet34_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet34_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-34, ImageNet, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(3, 4, 6, 3), learn='spatial')
    return _create_sep_resnet('sep_resnet34_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet50_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-50, ImageNet, d = 9, fully learned."""
    model_args = dict(layers=(3, 4, 6, 3), channels=(256, 512, 1024, 2048), basic=False, learn='full')
    return _create_sep_resnet('sep_resnet50_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet50_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-50, ImageNet, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(3, 4, 6, 3), channels=(256, 512, 1024, 2048), basic=False, learn='channels')
    return _create_sep_resnet('sep_resnet50_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet50_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-50, ImageNet, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(3, 4, 6, 3), channels=(256, 512, 1024, 2048), basic=False, learn='spatial')
    return _create_sep_resnet('sep_resnet50_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet20_cifar_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-20, CIFAR, widths 16/32/64, d = 9, fully learned."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', learn='full')
    return _create_sep_resnet('sep_resnet20_cifar_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet20_cifar_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-20, CIFAR, widths 16/32/64, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', learn='channels')
    return _create_sep_resnet('sep_resnet20_cifar_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet20_cifar_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-20, CIFAR, widths 16/32/64, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(3, 3, 3), channels=(16, 32, 64), stem='cifar', learn='spatial')
    return _create_sep_resnet('sep_resnet20_cifar_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet32_cifar_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-32, CIFAR, widths 16/32/64, d = 9, fully learned."""
    model_args = dict(layers=(5, 5, 5), channels=(16, 32, 64), stem='cifar', learn='full')
    return _create_sep_resnet('sep_resnet32_cifar_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet32_cifar_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-32, CIFAR, widths 16/32/64, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(5, 5, 5), channels=(16, 32, 64), stem='cifar', learn='channels')
    return _create_sep_resnet('sep_resnet32_cifar_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet32_cifar_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-32, CIFAR, widths 16/32/64, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(5, 5, 5), channels=(16, 32, 64), stem='cifar', learn='spatial')
    return _create_sep_resnet('sep_resnet32_cifar_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet44_cifar_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-44, CIFAR, widths 16/32/64, d = 9, fully learned."""
    model_args = dict(layers=(7, 7, 7), channels=(16, 32, 64), stem='cifar', learn='full')
    return _create_sep_resnet('sep_resnet44_cifar_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet44_cifar_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-44, CIFAR, widths 16/32/64, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(7, 7, 7), channels=(16, 32, 64), stem='cifar', learn='channels')
    return _create_sep_resnet('sep_resnet44_cifar_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet44_cifar_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-44, CIFAR, widths 16/32/64, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(7, 7, 7), channels=(16, 32, 64), stem='cifar', learn='spatial')
    return _create_sep_resnet('sep_resnet44_cifar_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet56_cifar_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-56, CIFAR, widths 16/32/64, d = 9, fully learned."""
    model_args = dict(layers=(9, 9, 9), channels=(16, 32, 64), stem='cifar', learn='full')
    return _create_sep_resnet('sep_resnet56_cifar_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet56_cifar_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-56, CIFAR, widths 16/32/64, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(9, 9, 9), channels=(16, 32, 64), stem='cifar', learn='channels')
    return _create_sep_resnet('sep_resnet56_cifar_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet56_cifar_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-56, CIFAR, widths 16/32/64, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(9, 9, 9), channels=(16, 32, 64), stem='cifar', learn='spatial')
    return _create_sep_resnet('sep_resnet56_cifar_space', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet110_cifar_full(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-110, CIFAR, widths 16/32/64, d = 9, fully learned."""
    model_args = dict(layers=(18, 18, 18), channels=(16, 32, 64), stem='cifar', learn='full')
    return _create_sep_resnet('sep_resnet110_cifar_full', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet110_cifar_chans(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-110, CIFAR, widths 16/32/64, d = 9, channels-only (spatial mixing frozen)."""
    model_args = dict(layers=(18, 18, 18), channels=(16, 32, 64), stem='cifar', learn='channels')
    return _create_sep_resnet('sep_resnet110_cifar_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def sep_resnet110_cifar_space(pretrained=False, **kwargs) -> SeparableResNetV2:
    """Separable pre-activation ResNet-110, CIFAR, widths 16/32/64, d = 9, spatial-only (channel mixing frozen)."""
    model_args = dict(layers=(18, 18, 18), channels=(16, 32, 64), stem='cifar', learn='spatial')
    return _create_sep_resnet('sep_resnet110_cifar_space', pretrained, **dict(model_args, **kwargs))
