""" Pixel un-shuffling: learn to undo one fixed random permutation of pixel positions

The paper's Sec. 4.4: a patch-size-1 ConvMixer whose pooling and classifier are replaced by a 1x1 projection
back to the image channels, trained with `mean ||x - F(sigma(x))||^2` (training.tasks.Unshuffling) and reported
as test PSNR.
"""

from pathlib import Path
from typing import Dict

import torch
import torch.nn as nn

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.reporting import new_figure, save_figure

__all__ = ['PixelPermutation', 'psnr', 'save_unshuffle_grid']


class PixelPermutation(nn.Module):
    """One fixed random permutation of pixel positions, the same for every image and channel."""

    def __init__(self, height: int, width: int, seed: int):
        super().__init__()
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer('index', torch.randperm(height * width, generator=generator), persistent=False)
        self.shape = (height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.shape:
            raise UsageError(f'permutation is for {self.shape} images, got {tuple(x.shape[-2:])}')
        return x.flatten(2)[:, :, self.index].reshape(x.shape)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x.flatten(2))
        out[:, :, self.index] = x.flatten(2)
        return out.reshape(x.shape)


def psnr(reconstruction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image, pixels clamped to the data range."""
    mse = (reconstruction.clamp(0, data_range) - target).float().pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))


@torch.no_grad()
def save_unshuffle_grid(nets: Dict[str, nn.Module], permutation: PixelPermutation, images: torch.Tensor,
                        path) -> Path:
    """A PNG with rows original / permuted / one reconstruction per net (with its mean PSNR) for a few images."""
    device = permutation.index.device
    images = images.to(device)
    permuted = permutation(images)
    rows = [('original', images), ('permuted', permuted)]
    for label, net in nets.items():
        net.eval()
        reconstruction = net(permuted).float().clamp(0, 1)
        rows.append((f'{label}\n{psnr(reconstruction, images).mean():.1f} dB', reconstruction))
    fig, axes = new_figure(len(rows), len(images), figsize=(1.2 * len(images), 1.3 * len(rows)))
    for r, (title, row) in enumerate(rows):
        for c, image in enumerate(row.float().cpu()):
            ax = axes[r][c]
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap='gray', vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    return save_figure(fig, path, dpi=100)
