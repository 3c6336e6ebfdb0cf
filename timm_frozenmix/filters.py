""" Spatial filter banks: initializations and smoothing for depthwise convolutions

The paper's filter-structure ablation (Fig. 5) compares banks with the same energy and different structure:
`random` (PyTorch's default conv init, a different filter per channel), `same` (the same d random kernels
repeated for every input channel), `box` (averaging filters) and `identity` (a centred delta). Every
non-random init is scaled to the expected filter energy of `random`, so only the structure differs.

Smoothing (Sec. 4.3) low-passes each filter with a Gaussian and restores its L2 norm, so only its spectrum
changes.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['SPATIAL_INITS', 'check_spatial_options', 'init_spatial_', 'smooth_filters']

SPATIAL_INITS = ('random', 'same', 'box', 'identity')


def check_spatial_options(spatial_init: str, smooth_sigma: float) -> None:
    if spatial_init not in SPATIAL_INITS:
        choices = ', '.join(repr(s) for s in SPATIAL_INITS)
        raise ValueError(f'unknown spatial_init {spatial_init!r}: choose one of {choices}')
    if not smooth_sigma >= 0:
        raise ValueError(f'smooth_sigma must be >= 0 (a Gaussian sigma in pixels), got {smooth_sigma!r}')


def _random_bound(weight: torch.Tensor) -> float:
    """Bound of PyTorch's default conv init, U(-b, b) with b = 1 / sqrt(fan_in)."""
    fan_in = weight[0].numel()
    return 1.0 / math.sqrt(fan_in)


def _expected_random_energy(weight: torch.Tensor) -> float:
    """E[sum w^2] of one filter under the default init: fan_in * b^2 / 3 = 1 / 3 for any kernel size."""
    return weight[0].numel() * _random_bound(weight) ** 2 / 3.0


@torch.no_grad()
def init_spatial_(conv: nn.Conv2d, spatial_init: str = 'random', smooth_sigma: float = 0.0) -> nn.Conv2d:
    """Re-initialize a depthwise conv's filters in place with `spatial_init`, then smooth them if asked."""
    check_spatial_options(spatial_init, smooth_sigma)
    weight = conv.weight
    out_chs, _, kh, kw = weight.shape
    bound = _random_bound(weight)
    if spatial_init == 'random':
        weight.uniform_(-bound, bound)
    elif spatial_init == 'same':
        multiplier = out_chs // conv.groups
        kernels = torch.empty_like(weight[:multiplier]).uniform_(-bound, bound)
        weight.copy_(kernels.repeat(conv.groups, 1, 1, 1))
    elif spatial_init == 'box':
        weight.fill_(math.sqrt(_expected_random_energy(weight) / weight[0].numel()))
    else:  # identity: a delta at the tap that 'same' padding aligns with the output pixel
        weight.zero_()
        weight[:, :, (kh - 1) // 2, (kw - 1) // 2] = math.sqrt(_expected_random_energy(weight) / weight.shape[1])
    if conv.bias is not None:
        conv.bias.uniform_(-bound, bound)
    if smooth_sigma > 0:
        weight.copy_(smooth_filters(weight, smooth_sigma))
    return conv


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


@torch.no_grad()
def smooth_filters(filters: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of every k x k filter (zero padded, same size), each rescaled to its own L2 norm."""
    if sigma <= 0:
        return filters.clone()
    kh, kw = filters.shape[-2:]
    flat = filters.reshape(-1, 1, kh, kw)
    kernel = _gaussian_kernel(sigma, flat.dtype, flat.device)
    r = kernel.shape[-1] // 2
    smoothed = F.conv2d(F.pad(flat, (r, r, r, r)), kernel[None, None])
    old_norm = flat.flatten(1).norm(dim=1)
    new_norm = smoothed.flatten(1).norm(dim=1)
    scale = torch.where(new_norm > 0, old_norm / new_norm.clamp_min(torch.finfo(flat.dtype).tiny), 0.)
    return (smoothed * scale[:, None, None, None]).reshape(filters.shape)
