""" Spectral envelopes of spatial filter banks (paper Sec. 3.1), per layer of a model and for reference banks

The library behind `python -m timm_frozenmix.cli.spectral`: `analyse_model` gives each spatial layer's coverage and
envelope, `compare_banks` the reference banks and the coverage-growth curve, and the plot functions draw them.
See `filters.spectral_envelope` for the scale.
"""
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm

from timm_frozenmix.models.convert import conv_roles
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.layers.filters import init_spatial_, spectral_coverage, spectral_envelope
from timm_frozenmix.io.reporting import new_figure, save_figure

RESULTS, LAYERS_PLOT, COMPARE_PLOT = 'spectral.json', 'spectral_layers.png', 'spectral_compare.png'
REFERENCE_BANKS = ('random', 'same', 'box', 'identity')
FILTER_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def spatial_banks(model: nn.Module) -> List[Tuple[str, torch.Tensor]]:
    """(name, weight) of every spatial conv with a kernel larger than 1x1: depthwise convs and patch stems."""
    return [(name, conv.weight) for name, conv, role in conv_roles(model)
            if role == 'spatial' and conv.kernel_size != (1, 1)]


def reference_bank(init: str, channels: int, depth_multiplier: int, kernel: int, sigma: float = 0.0) -> torch.Tensor:
    """A depthwise filter bank (channels * d filters) made by the project's own spatial inits."""
    conv = nn.Conv2d(channels, channels * depth_multiplier, kernel, groups=channels, bias=False)
    return init_spatial_(conv, init, sigma).weight.detach()


def plot_envelopes(panels: List[Tuple[str, torch.Tensor]], path: Path, columns: int, extra=None) -> Path:
    """A grid of envelope images (title, envelope), plus one panel drawn by `extra(ax)` if given."""
    count = len(panels) + (extra is not None)
    rows = -(-count // columns)
    fig, axes = new_figure(rows, columns, figsize=(2.6 * columns, 2.7 * rows))
    for ax in axes.flat:
        ax.axis('off')
    for ax, (title, envelope) in zip(axes.flat, panels):
        ax.imshow(envelope.numpy(), cmap='magma', vmin=0)
        ax.set_title(title, fontsize=8)
    if extra is not None:
        ax = axes.flat[len(panels)]
        ax.axis('on')
        extra(ax)
    return save_figure(fig, path)


def analyse_model(model: nn.Module, size: int, threshold: float) -> Tuple[List[dict], List[Tuple[str, torch.Tensor]]]:
    """Coverage of every spatial layer, and its envelope for the figure."""
    banks = spatial_banks(model)
    if not banks:
        raise UsageError(f'{type(model).__name__} has no spatial conv with a kernel larger than 1x1 to analyse')
    layers, panels = [], []
    for name, weight in tqdm(banks, desc='layers', unit='layer', dynamic_ncols=True):
        envelope = spectral_envelope(weight, size)
        coverage = spectral_coverage(envelope, threshold)
        frozen = not weight.requires_grad
        layers.append(dict(layer=name, filters=weight.shape[0] * weight.shape[1], kernel=list(weight.shape[-2:]),
                           frozen=frozen, coverage=coverage))
        panels.append((f'{name}\ncoverage {coverage:.3f}' + (' (frozen)' if frozen else ''), envelope))
    return layers, panels


def coverage_growth(kernel: int, size: int, threshold: float, sigma: float = 0.0) -> List[float]:
    """Coverage of nested random banks of FILTER_COUNTS k x k filters (paper Fig. 1): each adds filters."""
    largest = reference_bank('random', max(FILTER_COUNTS), 1, kernel, sigma=sigma).flatten(0, 1)
    return [spectral_coverage(spectral_envelope(largest[:n], size), threshold) for n in FILTER_COUNTS]


def compare_banks(channels: int = 16, depth_multiplier: int = 9, kernel: int = 8, sigmas=(1.0, 2.0),
                  size: int = 512, threshold: float = 1.0, seed: int = 0) -> Tuple[dict, dict, list]:
    """Reference banks of one shape (random, same, box, identity, smoothed random) and nested random banks.

    Returns each bank's coverage, coverage against the number of random filters (paper Fig. 1) and the
    (title, envelope) panels to draw.
    """
    torch.manual_seed(seed)
    shape = (channels, depth_multiplier, kernel)
    banks = {init: reference_bank(init, *shape) for init in REFERENCE_BANKS}
    for sigma in sigmas:
        banks[f'random, sigma {sigma:g}'] = reference_bank('random', *shape, sigma=sigma)
    coverage, panels = {}, []
    for name, weight in banks.items():
        envelope = spectral_envelope(weight, size)
        coverage[name] = spectral_coverage(envelope, threshold)
        panels.append((f'{name}\ncoverage {coverage[name]:.3f}', envelope))

    curves = {'random': coverage_growth(kernel, size, threshold)}
    for sigma in sigmas:
        curves[f'random, sigma {sigma:g}'] = coverage_growth(kernel, size, threshold, sigma)
    largest = reference_bank('random', max(FILTER_COUNTS), 1, kernel).flatten(0, 1)
    for n in FILTER_COUNTS[:4]:
        envelope = spectral_envelope(largest[:n], size)
        panels.append((f'{n} random filter{"s" * (n > 1)}\ncoverage {spectral_coverage(envelope, threshold):.3f}',
                       envelope))
    return coverage, {'filters': list(FILTER_COUNTS), **curves}, panels


def plot_comparison(panels: list, curves: dict, kernel: int, path: Path, columns: int) -> Path:
    """The reference banks' envelopes and, in the last panel, coverage against the number of filters."""
    def plot_curves(ax):
        for name, values in curves.items():
            if name != 'filters':
                ax.plot(curves['filters'], values, marker='o', label=name)
        ax.set(xscale='log', xlabel='filters in the bank', ylabel='coverage', ylim=(0, 1.02))
        ax.set_title(f'{kernel}x{kernel} filters', fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    return plot_envelopes(panels, path, columns, extra=plot_curves)

