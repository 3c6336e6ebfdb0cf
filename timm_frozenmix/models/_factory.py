""" Model construction shared by the registry modules: pretrained configs and a clear pretrained failure """
from typing import Any, Dict, Iterable

from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

HUB_ORG = 'timm-frozenmix'
PAPER_ID = 'arxiv:2503.16760'


def hub_cfgs(names: Iterable[str], tag: str, make_cfg, **kwargs) -> Dict[str, Dict[str, Any]]:
    """Pretrained configs whose weights live in the project's Hub namespace, `{HUB_ORG}/{name}.{tag}`."""
    return {f'{name}.{tag}': make_cfg(hf_hub_id=f'{HUB_ORG}/{name}.{tag}', **kwargs) for name in names}


def build_model(model_cls, variant: str, pretrained: bool, **kwargs):
    """timm's build_model_with_cfg, with unreachable or unpublished weights reported in one clear line."""
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except OSError as e:
        if not pretrained:
            raise
        cfg = resolve_pretrained_cfg(
            variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        repo = cfg.hf_hub_id or cfg.file or cfg.url
        raise RuntimeError(
            f'pretrained weights for {variant!r} could not be loaded from the Hugging Face Hub repo {repo!r} '
            f'({type(e).__name__}: not published there, or the Hub is unreachable). Train your own with '
            f'`python train.py --model {variant}` and publish it with `--push-to-hub {repo}`, '
            f'or create the model with pretrained=False.') from None
