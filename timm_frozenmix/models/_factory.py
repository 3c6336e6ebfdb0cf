""" Model construction shared by the registry modules: pretrained configs, and pretrained=True that never lies

Only weights that exist get a pretrained tag (timm's own for the fully learned ConvMixers, and the Fashion-MNIST
ConvMixers shipped in the package), so
`timm.list_pretrained()` tells the truth. timm only warns when `pretrained=True` finds no weights and then
returns a random model; here that is an error that says where weights can come from.
"""
from timm.models import build_model_with_cfg, resolve_pretrained_cfg

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.models.input_channels import adapt_input_channels

PAPER_ID = 'arxiv:2503.16760'


def build_model(model_cls, variant: str, pretrained: bool, **kwargs):
    """timm's build_model_with_cfg; `pretrained=True` for a config without weights raises UsageError.

    Pretrained weights pass `adapt_input_channels` first, so `in_chans` adapts separable stems too.

    Weights come from the name's pretrained tag (`timm.list_pretrained('*_chans*')`), from an export
    (`hf-hub:user/repo`, `local-dir:folder`), or from a file (`pretrained_cfg_overlay=dict(file=...)`).
    """
    if pretrained:
        cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        if not cfg.has_weights:
            raise UsageError(
                f'no pretrained weights exist for {variant!r}: timm.list_pretrained() lists the ones that do; load an '
                f'export with timm.create_model("hf-hub:user/repo") or "local-dir:folder", or train your own with '
                f'`python train.py --model {variant}` and export it with `python -m timm_frozenmix.cli.hub`')
    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=adapt_input_channels, **kwargs)
