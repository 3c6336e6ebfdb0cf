""" Spectral envelopes of spatial filter banks (paper Sec. 3.1), per layer of a model and for reference banks

    python -m timm_frozenmix.spectral --checkpoint output/train/<run>/model_best.pth.tar
    python -m timm_frozenmix.spectral --model convmixer_512_7_chans     # the frozen filters, as created
    python -m timm_frozenmix.spectral --compare                         # random / same / box / identity / smoothed

Writes spectral.json and PNG figures (envelope per spatial layer; reference banks and coverage against the
number of random filters) and prints each layer's coverage. See `filters.spectral_envelope` for the scale.
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import timm
import torch
import torch.nn as nn
from tqdm import tqdm

from .checkpoint import load_checkpoint
from .convert import conv_roles
from .errors import UsageError, exit_on_usage_error
from .filters import init_spatial_, spectral_coverage, spectral_envelope
from .loading import model_from_checkpoint
from .outputs import check_output_folder, replace_atomically

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


def _plot_grid(panels: List[Tuple[str, torch.Tensor]], path: Path, columns: int, extra=None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    count = len(panels) + (extra is not None)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, (title, envelope) in zip(axes.flat, panels):
        ax.imshow(envelope.numpy(), cmap='magma', vmin=0)
        ax.set_title(title, fontsize=8)
    if extra is not None:
        ax = axes.flat[len(panels)]
        ax.axis('on')
        extra(ax)
    fig.tight_layout()
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format='png', dpi=110))
    plt.close(fig)


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


def compare_banks(args) -> Tuple[dict, Dict[str, list]]:
    """Reference banks of one shape, and coverage as random filters are added (nested banks, paper Fig. 1)."""
    torch.manual_seed(args.seed)
    shape = (args.channels, args.depth_multiplier, args.kernel)
    banks = {init: reference_bank(init, *shape) for init in REFERENCE_BANKS}
    for sigma in args.sigmas:
        banks[f'random, sigma {sigma:g}'] = reference_bank('random', *shape, sigma=sigma)
    coverage, panels = {}, []
    for name, weight in banks.items():
        envelope = spectral_envelope(weight, args.size)
        coverage[name] = spectral_coverage(envelope, args.threshold)
        panels.append((f'{name}\ncoverage {coverage[name]:.3f}', envelope))

    curves = {'random': coverage_growth(args.kernel, args.size, args.threshold)}
    for sigma in args.sigmas:
        curves[f'random, sigma {sigma:g}'] = coverage_growth(args.kernel, args.size, args.threshold, sigma)
    largest = reference_bank('random', max(FILTER_COUNTS), 1, args.kernel).flatten(0, 1)
    for n in FILTER_COUNTS[:4]:
        envelope = spectral_envelope(largest[:n], args.size)
        panels.append((f'{n} random filter{"s" * (n > 1)}\ncoverage {spectral_coverage(envelope, args.threshold):.3f}',
                       envelope))

    def plot_curves(ax):
        for name, values in curves.items():
            ax.plot(FILTER_COUNTS, values, marker='o', label=name)
        ax.set(xscale='log', xlabel='filters in the bank', ylabel='coverage', ylim=(0, 1.02))
        ax.set_title(f'{args.kernel}x{args.kernel} filters', fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)

    _plot_grid(panels, args.output / COMPARE_PLOT, columns=len(REFERENCE_BANKS) + len(args.sigmas),
               extra=plot_curves)
    return coverage, {'filters': list(FILTER_COUNTS), **curves}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m timm_frozenmix.spectral', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description='Spectral envelope and coverage of spatial filter banks (Sec. 3.1 of the paper).')
    parser.add_argument('--checkpoint', default=None, help='a train.py checkpoint to analyse')
    parser.add_argument('--model', default=None, help='a model name (random init unless --pretrained)')
    parser.add_argument('--pretrained', action='store_true', help='load the published weights of --model')
    parser.add_argument('--compare', action='store_true',
                        help='also (or only) compare random / same / box / identity / smoothed reference banks')
    parser.add_argument('--channels', type=int, default=16, help='reference banks: input channels')
    parser.add_argument('--depth-multiplier', type=int, default=9, help='reference banks: filters per channel')
    parser.add_argument('--kernel', type=int, default=8, help='reference banks: kernel size')
    parser.add_argument('--sigmas', type=float, nargs='*', default=[1.0, 2.0], help='reference banks: smoothing')
    parser.add_argument('--size', type=int, default=512, help='FFT size (filters are zero padded to size x size)')
    parser.add_argument('--threshold', type=float, default=1.0,
                        help="a frequency is covered where some filter's gain reaches this multiple of its average")
    parser.add_argument('--seed', type=int, default=0, help='seed of the model init and the reference banks')
    parser.add_argument('--output', type=Path, default=Path('output/spectral'), help='folder for JSON and PNGs')
    return parser


def validate_args(args) -> None:
    if not (args.checkpoint or args.model or args.compare):
        raise UsageError('nothing to analyse: pass --checkpoint PATH, --model NAME, or --compare')
    if args.checkpoint and args.model:
        raise UsageError('pass --checkpoint or --model, not both (a checkpoint knows its model)')
    if args.model and not (timm.is_model(args.model) or args.model.startswith(('hf-hub:', 'local-dir:'))):
        raise UsageError(f'unknown model {args.model!r}: see timm.list_models() (import timm_frozenmix first)')
    if not args.threshold > 0:
        raise UsageError(f'--threshold must be > 0, got {args.threshold:g}')
    if any(s <= 0 for s in args.sigmas):
        raise UsageError('--sigmas must be > 0 (Gaussian sigmas in pixels)')
    if min(args.channels, args.depth_multiplier, args.kernel) < 1 or args.size < max(args.kernel, 2):
        raise UsageError('--channels, --depth-multiplier and --kernel must be >= 1, and --size >= --kernel')
    check_output_folder(args.output)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_usage_error('spectral'):
        validate_args(args)
        model = None
        if args.checkpoint:  # classifiers and un-shuffling models alike
            model = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint)
        elif args.model:
            torch.manual_seed(args.seed)
            model = timm.create_model(args.model, pretrained=args.pretrained)
        if model is not None:
            layers, panels = analyse_model(model, args.size, args.threshold)

    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    results = dict(size=args.size, threshold=args.threshold, seed=args.seed)
    written = []
    if model is not None:
        _plot_grid(panels, args.output / LAYERS_PLOT, columns=min(4, len(panels)))
        results.update(model=args.model, checkpoint=args.checkpoint, layers=layers)
        written.append(LAYERS_PLOT)
        print(f'{"layer":<40} {"filters":>8} {"kernel":>7} {"coverage":>9}')
        for layer in layers:
            kernel = 'x'.join(map(str, layer['kernel']))
            print(f'{layer["layer"]:<40} {layer["filters"]:>8} {kernel:>7} {layer["coverage"]:>9.3f}')
    if args.compare:
        coverage, curves = compare_banks(args)
        results['reference'] = dict(channels=args.channels, depth_multiplier=args.depth_multiplier,
                                    kernel=args.kernel, coverage=coverage, coverage_by_filters=curves)
        written.append(COMPARE_PLOT)
        print(f'\nreference banks: {args.channels} channels x {args.depth_multiplier} filters, '
              f'{args.kernel}x{args.kernel}')
        for name, value in coverage.items():
            print(f'{name:<24} coverage {value:.3f}')
    replace_atomically(args.output / RESULTS, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + '\n'))
    print(f'\nWritten to {args.output}: {RESULTS}, {", ".join(written)}')


if __name__ == '__main__':
    main()
