""" Spatial filter banks: initializations and smoothing for depthwise convolutions

The paper's filter-structure ablation (Fig. 5) compares banks with the same energy and different structure:
`random` (PyTorch's default conv init, a different filter per channel), `same` (the same d random kernels
repeated for every input channel), `box` (averaging filters) and `identity` (a centred delta). Every
non-random init is scaled to the expected filter energy of `random`, so only the structure differs.

Smoothing (Sec. 4.3) low-passes each filter with a Gaussian and restores its L2 norm, so only its spectrum
changes.

The spectral envelope of a bank (Sec. 3.1) is the max over its filters of |FFT2| of each filter zero padded to
size x size, zero frequency centred. Each filter is first scaled to unit L2 norm, so by Parseval its mean
squared gain over the plane is 1 and envelopes of different banks share one scale: only the shape of the
filters counts, not their energy. Coverage is the fraction of the plane where some filter of the bank passes
at least `threshold` of that average gain; adding filters to a bank can only grow it.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_frozenmix.core.errors import UsageError

__all__ = [
    'SPATIAL_INITS', 'MAX_CONDITION', 'check_spatial_options', 'condition_random_banks_', 'init_spatial_',
    'smooth_filters', 'spectral_envelope', 'spectral_coverage',
]

SPATIAL_INITS = ('random', 'same', 'box', 'identity')
MAX_CONDITION = 100.0  # of one input channel's d x k^2 bank: solving through it loses about log10(100) digits


def check_spatial_options(spatial_init: str, smooth_sigma: float) -> None:
    if spatial_init not in SPATIAL_INITS:
        choices = ', '.join(repr(s) for s in SPATIAL_INITS)
        raise UsageError(f'unknown spatial_init {spatial_init!r}: choose one of {choices}')
    if not smooth_sigma >= 0:
        raise UsageError(f'smooth_sigma must be >= 0 (a Gaussian sigma in pixels), got {smooth_sigma!r}')


def _random_bound(weight: torch.Tensor) -> float:
    """Bound of PyTorch's default conv init, U(-b, b) with b = 1 / sqrt(fan_in)."""
    fan_in = weight[0].numel()
    return 1.0 / math.sqrt(fan_in)


def _expected_random_energy(weight: torch.Tensor) -> float:
    """E[sum w^2] of one filter under the default init: fan_in * b^2 / 3 = 1 / 3 for any kernel size."""
    return weight[0].numel() * _random_bound(weight) ** 2 / 3.0


@torch.no_grad()
def condition_random_banks_(conv: nn.Conv2d, max_condition: float = MAX_CONDITION, tries: int = 100) -> int:
    """Redraw, from the default random init, every input channel's bank whose condition number exceeds
    `max_condition`; returns how many banks were redrawn.

    A depthwise conv with multiplier d holds one d x (kh * kw) bank per input channel. Solving pointwise weights
    through a bank (`SeparableConv2d.factorize_`) multiplies rounding errors by its condition number, which for
    9 x 9 banks of the default init has a median near 25 and a tail above 10,000. Redrawing the few banks in that
    tail keeps the filters random (the default distribution, conditioned on cond <= max_condition) and bounds the
    error. Raises RuntimeError if `tries` redraws do not get there (d far from k^2 x 1 makes that impossible).
    """
    weight = conv.weight
    banks = weight.view(conv.groups, -1, weight.shape[-2] * weight.shape[-1])  # (in_chans, d, kh * kw)
    bound = _random_bound(weight)
    redrawn = set()
    for _ in range(tries):
        bad = torch.linalg.cond(banks.double()) > max_condition
        if not bad.any():
            return len(redrawn)
        redrawn.update(bad.nonzero().flatten().tolist())
        banks[bad] = torch.empty_like(banks[bad]).uniform_(-bound, bound)
    raise RuntimeError(f'{int(bad.sum())} random banks of shape {tuple(banks.shape[1:])} stayed above condition '
                       f'number {max_condition:g} after {tries} redraws')


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


@torch.no_grad()
def spectral_envelope(filters: torch.Tensor, size: int = 512, chunk: int = 64) -> torch.Tensor:
    """Max over the bank of |FFT2| of each unit-norm k x k filter zero padded to size x size, zero centred.

    `filters` is any (..., k, k) tensor, e.g. a depthwise weight (C * d, 1, k, k); FFTs run `chunk` filters at
    a time so a bank of thousands of filters fits in memory. All-zero filters contribute nothing.
    """
    kh, kw = filters.shape[-2:]
    if size < max(kh, kw):
        raise UsageError(f'size must be at least the filter size {max(kh, kw)}, got {size}')
    flat = filters.detach().reshape(-1, kh, kw).double().cpu()
    norms = flat.flatten(1).norm(dim=1)
    flat = flat[norms > 0] / norms[norms > 0, None, None]
    envelope = torch.zeros(size, size, dtype=torch.float64)
    for start in range(0, flat.shape[0], chunk):
        magnitude = torch.fft.fft2(flat[start:start + chunk], s=(size, size)).abs()
        envelope = torch.maximum(envelope, magnitude.amax(dim=0))
    return torch.fft.fftshift(envelope).float()


def spectral_coverage(envelope: torch.Tensor, threshold: float = 1.0) -> float:
    """Fraction of the frequency plane where the envelope reaches `threshold` times a filter's average gain.

    A relative tolerance of 1e-5 lets an all-pass filter (a delta, gain 1 everywhere) cover the whole plane
    at the default threshold despite FFT rounding.
    """
    if not threshold > 0:
        raise UsageError(f'threshold must be > 0 (a multiple of the average gain, e.g. 1.0), got {threshold!r}')
    return (envelope >= threshold * (1 - 1e-5)).float().mean().item()
