""" ConvMixers that learn all, only channel, or only spatial mixing

ConvMixer (`Patches Are All You Need?`, https://arxiv.org/abs/2201.09792) is natively separable: depthwise
convs mix space, pointwise convs mix channels. Following "Rethinking the Role of Spatial Mixing"
(https://arxiv.org/abs/2503.16760), `_chans` freezes the depthwise convs and the patch-projection stem at
their random init, `_space` freezes the pointwise convs, `_full` is timm's ConvMixer unchanged.

Naming follows timm, `convmixer_{dim}_{depth}[_ks{k}][_p{p}]_{mode}`, with kernel 8 and patch 7 (the paper's
ImageNet setting) unless the name says otherwise. timm's three sizes keep timm's kernels and activations.
"""
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model, generate_default_cfgs
from timm.models.convmixer import ConvMixer

from timm_frozenmix.models.convert import freeze, init_depthwise_
from timm_frozenmix.core.constants import CIFAR_MEAN, CIFAR_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from timm_frozenmix.models.pretrained import TAG, shipped_names
from timm_frozenmix.models._factory import PAPER_ID, build_model

__all__ = ['FrozenMixConvMixer']


class FrozenMixConvMixer(ConvMixer):
    """ timm's ConvMixer with its depthwise filters initialized by `spatial_init` and frozen per `learn`.

    The state dict is exactly timm's, so timm's ConvMixer checkpoints load into the `full` models.
    """

    def __init__(
            self,
            dim: int,
            depth: int,
            kernel_size: int = 8,
            patch_size: int = 7,
            learn: str = 'full',
            spatial_init: str = 'random',
            smooth_sigma: float = 0.0,
            **kwargs,
    ):
        super().__init__(dim, depth, kernel_size=kernel_size, patch_size=patch_size, **kwargs)
        init_depthwise_(self, spatial_init, smooth_sigma)
        freeze(self, learn)


def _create_convmixer(variant: str, pretrained: bool = False, **kwargs) -> FrozenMixConvMixer:
    out_indices = kwargs.pop('out_indices', min(3, kwargs['depth']))  # timm's last 3 blocks, or all there are
    return build_model(
        FrozenMixConvMixer,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


def _cfg(url: str = '', **kwargs):
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': .96, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD, 'classifier': 'head',
        'first_conv': 'stem.0', 'license': 'mit', 'paper_ids': PAPER_ID,
        **kwargs
    }


_MODES = ('full', 'chans', 'space')
_TIMM_SIZES = ('convmixer_1536_20', 'convmixer_768_32', 'convmixer_1024_20_ks9_p14')
_CIFAR_SIZES = ('convmixer_128_4_p1', 'convmixer_128_8_p1', 'convmixer_128_16_p1')
_FASHION_MNIST_CFG = dict(num_classes=10, input_size=(1, 28, 28), crop_pct=1.0, interpolation='bilinear',
                          mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD)


def _with_shipped_weights(cfgs: dict) -> dict:
    """Each mode whose Fashion-MNIST weights ship in the package gets the `.fashion_mnist` tag, carrying the file
    and the 28x28 grayscale data config, in place of its untagged config: the tag is then the name's default."""
    shipped = shipped_names()
    tagged = {}
    for name, cfg in cfgs.items():
        weights = shipped.get(f'{name}.{TAG}')
        if weights is None:
            tagged[name] = cfg
        else:
            tagged[f'{name}.{TAG}'] = _cfg(file=str(weights), **_FASHION_MNIST_CFG)
    return tagged


default_cfgs = generate_default_cfgs(_with_shipped_weights({
    # timm's own ImageNet weights for the fully learned ConvMixers
    **{f'{name}_full.in1k': _cfg(hf_hub_id=f'timm/{name}.in1k') for name in _TIMM_SIZES},
    **{f'{name}_{mode}': _cfg() for name in _TIMM_SIZES for mode in _MODES[1:]},
    **{f'convmixer_512_7_{mode}': _cfg() for mode in _MODES},
    **{f'{name}_{mode}': _cfg(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, mean=CIFAR_MEAN, std=CIFAR_STD)
       for name in _CIFAR_SIZES for mode in _MODES},
    # a small ConvMixer for 28x28 grayscale images
    **{f'convmixer_128_4_ks5_p2_{mode}': _cfg(**_FASHION_MNIST_CFG) for mode in _MODES},
}))


@register_model
def convmixer_512_7_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-512/7, kernel 8, patch 7, fully learned. The paper's ImageNet ConvMixer."""
    model_args = dict(dim=512, depth=7, learn='full')
    return _create_convmixer('convmixer_512_7_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_512_7_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-512/7, kernel 8, patch 7, channels-only (spatial mixing frozen). The paper's ImageNet ConvMixer."""
    model_args = dict(dim=512, depth=7, learn='channels')
    return _create_convmixer('convmixer_512_7_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_512_7_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-512/7, kernel 8, patch 7, spatial-only (channel mixing frozen). The paper's ImageNet ConvMixer."""
    model_args = dict(dim=512, depth=7, learn='spatial')
    return _create_convmixer('convmixer_512_7_space', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_1536_20_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-1536/20, kernel 9, patch 7, fully learned. Size from timm."""
    model_args = dict(dim=1536, depth=20, kernel_size=9, learn='full')
    return _create_convmixer('convmixer_1536_20_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_1536_20_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-1536/20, kernel 9, patch 7, channels-only (spatial mixing frozen). Size from timm."""
    model_args = dict(dim=1536, depth=20, kernel_size=9, learn='channels')
    return _create_convmixer('convmixer_1536_20_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_1536_20_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-1536/20, kernel 9, patch 7, spatial-only (channel mixing frozen). Size from timm."""
    model_args = dict(dim=1536, depth=20, kernel_size=9, learn='spatial')
    return _create_convmixer('convmixer_1536_20_space', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_768_32_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-768/32, kernel 7, patch 7, fully learned. Size from timm, with ReLU."""
    model_args = dict(dim=768, depth=32, kernel_size=7, act_layer=nn.ReLU, learn='full')
    return _create_convmixer('convmixer_768_32_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_768_32_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-768/32, kernel 7, patch 7, channels-only (spatial mixing frozen). Size from timm, with ReLU."""
    model_args = dict(dim=768, depth=32, kernel_size=7, act_layer=nn.ReLU, learn='channels')
    return _create_convmixer('convmixer_768_32_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_768_32_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-768/32, kernel 7, patch 7, spatial-only (channel mixing frozen). Size from timm, with ReLU."""
    model_args = dict(dim=768, depth=32, kernel_size=7, act_layer=nn.ReLU, learn='spatial')
    return _create_convmixer('convmixer_768_32_space', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_1024_20_ks9_p14_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-1024/20, kernel 9, patch 14, fully learned. Size from timm."""
    model_args = dict(dim=1024, depth=20, kernel_size=9, patch_size=14, learn='full')
    return _create_convmixer('convmixer_1024_20_ks9_p14_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_1024_20_ks9_p14_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-1024/20, kernel 9, patch 14, channels-only (spatial mixing frozen). Size from timm."""
    model_args = dict(dim=1024, depth=20, kernel_size=9, patch_size=14, learn='channels')
    return _create_convmixer('convmixer_1024_20_ks9_p14_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_1024_20_ks9_p14_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-1024/20, kernel 9, patch 14, spatial-only (channel mixing frozen). Size from timm."""
    model_args = dict(dim=1024, depth=20, kernel_size=9, patch_size=14, learn='spatial')
    return _create_convmixer('convmixer_1024_20_ks9_p14_space', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_4_p1_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/4, kernel 8, patch 1, fully learned. The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=4, patch_size=1, learn='full')
    return _create_convmixer('convmixer_128_4_p1_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_4_p1_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/4, kernel 8, patch 1, channels-only (spatial mixing frozen). The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=4, patch_size=1, learn='channels')
    return _create_convmixer('convmixer_128_4_p1_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_4_p1_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/4, kernel 8, patch 1, spatial-only (channel mixing frozen). The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=4, patch_size=1, learn='spatial')
    return _create_convmixer('convmixer_128_4_p1_space', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_8_p1_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/8, kernel 8, patch 1, fully learned. The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=8, patch_size=1, learn='full')
    return _create_convmixer('convmixer_128_8_p1_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_8_p1_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/8, kernel 8, patch 1, channels-only (spatial mixing frozen). The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=8, patch_size=1, learn='channels')
    return _create_convmixer('convmixer_128_8_p1_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_8_p1_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/8, kernel 8, patch 1, spatial-only (channel mixing frozen). The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=8, patch_size=1, learn='spatial')
    return _create_convmixer('convmixer_128_8_p1_space', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_16_p1_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/16, kernel 8, patch 1, fully learned. The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=16, patch_size=1, learn='full')
    return _create_convmixer('convmixer_128_16_p1_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_16_p1_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/16, kernel 8, patch 1, channels-only (spatial mixing frozen). The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=16, patch_size=1, learn='channels')
    return _create_convmixer('convmixer_128_16_p1_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_16_p1_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/16, kernel 8, patch 1, spatial-only (channel mixing frozen). The paper's CIFAR setting."""
    model_args = dict(dim=128, depth=16, patch_size=1, learn='spatial')
    return _create_convmixer('convmixer_128_16_p1_space', pretrained, **dict(model_args, **kwargs))


@register_model
def convmixer_128_4_ks5_p2_full(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/4, kernel 5, patch 2, fully learned. For 28x28 grayscale Fashion-MNIST."""
    model_args = dict(dim=128, depth=4, kernel_size=5, patch_size=2, in_chans=1, num_classes=10, learn='full')
    return _create_convmixer('convmixer_128_4_ks5_p2_full', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_4_ks5_p2_chans(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/4, kernel 5, patch 2, channels-only (spatial mixing frozen). For 28x28 grayscale Fashion-MNIST."""
    model_args = dict(dim=128, depth=4, kernel_size=5, patch_size=2, in_chans=1, num_classes=10, learn='channels')
    return _create_convmixer('convmixer_128_4_ks5_p2_chans', pretrained, **dict(model_args, **kwargs))

@register_model
def convmixer_128_4_ks5_p2_space(pretrained=False, **kwargs) -> FrozenMixConvMixer:
    """ConvMixer-128/4, kernel 5, patch 2, spatial-only (channel mixing frozen). For 28x28 grayscale Fashion-MNIST."""
    model_args = dict(dim=128, depth=4, kernel_size=5, patch_size=2, in_chans=1, num_classes=10, learn='spatial')
    return _create_convmixer('convmixer_128_4_ks5_p2_space', pretrained, **dict(model_args, **kwargs))
