""" The paper's pixel un-shuffling network (Sec. 4.4): a patch-size-1 backbone projected back to image channels """
import torch
import torch.nn as nn

from timm_frozenmix.core.errors import UsageError

__all__ = ['UnshuffleNet']


class UnshuffleNet(nn.Module):
    """A patch-size-1 backbone's feature map projected back to `out_chans` image channels by a 1x1 conv."""

    def __init__(self, backbone: nn.Module, out_chans: int):
        super().__init__()
        stem = getattr(backbone, 'stem', None)
        patch = getattr(stem[0], 'stride', None) if isinstance(stem, nn.Sequential) else None
        if patch != (1, 1):
            raise UsageError(
                f'pixel un-shuffling needs a patch-size-1 ConvMixer, e.g. convmixer_128_8_p1_chans '
                f'(got {type(backbone).__name__} with patch stride {patch})')
        backbone.reset_classifier(0, '')
        self.backbone = backbone
        self.proj = nn.Conv2d(backbone.num_features, out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone.forward_features(x))
