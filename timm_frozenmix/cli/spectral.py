""" python -m timm_frozenmix.cli.spectral: spectral envelopes and coverage of spatial filter banks (paper Sec. 3.1)

    python -m timm_frozenmix.cli.spectral --checkpoint output/train/<run>/model_best.pth.tar
    python -m timm_frozenmix.cli.spectral --model convmixer_512_7_chans     # the frozen filters, as created
    python -m timm_frozenmix.cli.spectral --compare                         # random / same / box / identity / smoothed

Writes spectral.json and PNG figures (envelope per spatial layer; reference banks and coverage against the
number of random filters) and prints each layer's coverage.
"""
import argparse
import math
from pathlib import Path

import timm
import torch

from timm_frozenmix.cli import ArgumentParser
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.core.errors import UsageError, exit_on_usage_error
from timm_frozenmix.io.loading import model_from_checkpoint
from timm_frozenmix.io.outputs import check_output_folder
from timm_frozenmix.io.references import check_reference, is_reference
from timm_frozenmix.io.reporting import write_json
from timm_frozenmix.evaluation.spectral import (
    COMPARE_PLOT, LAYERS_PLOT, REFERENCE_BANKS, RESULTS, analyse_model, compare_banks, plot_comparison, plot_envelopes,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog='python -m timm_frozenmix.cli.spectral', formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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


MAX_SIZE = 4096  # an FFT plane of 4096^2 complex64 values is 128 MiB per filter


def check_args(args) -> None:
    if not (args.checkpoint or args.model or args.compare):
        raise UsageError('nothing to analyse: pass --checkpoint PATH, --model NAME, or --compare')
    if args.checkpoint and args.model:
        raise UsageError('pass --checkpoint or --model, not both (a checkpoint knows its model)')
    if args.model and is_reference(args.model):
        check_reference(args.model)
    elif args.model and not timm.is_model(args.model):
        raise UsageError(f'unknown model {args.model!r}: see timm.list_models() (import timm_frozenmix first)')
    if not 0 < args.threshold < math.inf:
        raise UsageError(f'--threshold must be a finite number > 0, got {args.threshold:g}')
    if not all(0 < s < math.inf for s in args.sigmas):
        raise UsageError('--sigmas must be finite numbers > 0 (Gaussian sigmas in pixels)')
    if min(args.channels, args.depth_multiplier, args.kernel) < 1 or args.size < max(args.kernel, 2):
        raise UsageError('--channels, --depth-multiplier and --kernel must be >= 1, and --size >= --kernel')
    if args.size > MAX_SIZE:
        raise UsageError(f'--size {args.size} would take {args.size ** 2 * 8 / 2 ** 30:.0f} GiB per filter: '
                         f'use at most {MAX_SIZE} (the paper uses 512)')
    check_output_folder(args.output)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    results = dict(size=args.size, threshold=args.threshold, seed=args.seed)
    with exit_on_usage_error('spectral'):  # everything that can fail on bad input runs before any file is written
        check_args(args)
        model = None
        if args.checkpoint:  # classifiers and un-shuffling models alike
            model = model_from_checkpoint(Checkpoint.load(args.checkpoint))
        elif args.model:
            torch.manual_seed(args.seed)
            model = timm.create_model(args.model, pretrained=args.pretrained)
        if model is not None:
            layers, layer_panels = analyse_model(model, args.size, args.threshold)
            results.update(model=args.model, checkpoint=args.checkpoint, layers=layers)
        if args.compare:
            coverage, curves, compare_panels = compare_banks(
                args.channels, args.depth_multiplier, args.kernel, args.sigmas, args.size, args.threshold, args.seed)
            results['reference'] = dict(channels=args.channels, depth_multiplier=args.depth_multiplier,
                                        kernel=args.kernel, coverage=coverage, coverage_by_filters=curves)

    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    written = []
    if model is not None:
        plot_envelopes(layer_panels, args.output / LAYERS_PLOT, columns=min(4, len(layer_panels)))
        written.append(LAYERS_PLOT)
        print(f'{"layer":<40} {"filters":>8} {"kernel":>7} {"coverage":>9}')
        for layer in layers:
            kernel = 'x'.join(map(str, layer['kernel']))
            print(f'{layer["layer"]:<40} {layer["filters"]:>8} {kernel:>7} {layer["coverage"]:>9.3f}')
    if args.compare:
        plot_comparison(compare_panels, curves, args.kernel, args.output / COMPARE_PLOT,
                        columns=len(REFERENCE_BANKS) + len(args.sigmas))
        written.append(COMPARE_PLOT)
        print(f'\nreference banks: {args.channels} channels x {args.depth_multiplier} filters, '
              f'{args.kernel}x{args.kernel}')
        for name, value in coverage.items():
            print(f'{name:<24} coverage {value:.3f}')
    write_json(args.output / RESULTS, results)
    print(f'\nWritten to {args.output}: {RESULTS}, {", ".join(written)}')


if __name__ == '__main__':
    main()
