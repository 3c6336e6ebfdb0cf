""" 5. How cost grows: train-step time and peak memory against batch size and resolution, ours vs the baseline

Two sweeps per family, each point measured side by side with its baseline (interleaved steps, peak memory in a
fresh process): batch size at a fixed resolution, and resolution at a fixed batch size. Work is batch x pixels.
The separable ResNet is `sep_resnet20_cifar_chans` against the dense ResNet-20 of the same layout; the ConvMixer
is `convmixer_128_8_p1_chans` against timm's ConvMixer of the same size.

    python -m benchmarks.growth            # prints the table, writes output/benchmarks/growth.json and growth.png

`python -m benchmarks.run_all` runs it too, for the plot in docs/performance.md.
"""
import argparse
import warnings
from pathlib import Path

import timm
import torch
from timm.models.convmixer import ConvMixer

import timm_frozenmix  # noqa: F401  (registers the models with timm)
from timm_frozenmix.io.reporting import markdown_table, new_figure, save_figure, write_json
from timm_frozenmix.evaluation.step_time import time_interleaved
from benchmarks._harness import machine, peak_memory
from benchmarks.sep_resnet20 import dense_resnet_cifar

OUTPUT = Path(__file__).resolve().parents[1] / 'output' / 'benchmarks'
BATCHES, SIZES = (16, 32, 64), (16, 32, 48)
FIXED_BATCH, FIXED_SIZE, STEPS, WARMUP = 32, 32, 3, 1
FAMILIES = {'SepResNet': ('sep_resnet20_cifar_chans', 'dense ResNet-20'),
            'ConvMixer': ('convmixer_128_8_p1_chans', 'timm ConvMixer')}
warnings.filterwarnings('ignore', message='Using padding=.same. with even kernel')


def build(case: str, batch: int, size: int):
    """`case` is 'family/ours' or 'family/baseline'; the model and one input batch."""
    family, which = case.split('/')
    torch.manual_seed(0)
    if family == 'SepResNet':
        model = dense_resnet_cifar(20) if which == 'baseline' else timm.create_model(FAMILIES[family][0], num_classes=10)
    elif which == 'baseline':
        model = ConvMixer(128, 8, kernel_size=8, patch_size=1, num_classes=10)
    else:
        model = timm.create_model(FAMILIES[family][0], num_classes=10)
    return model, torch.randn(batch, 3, size, size)


def points(batches, sizes, fixed_batch, fixed_size):
    return [(b, fixed_size) for b in batches] + [(fixed_batch, s) for s in sizes if s != fixed_size]


def run(batches=BATCHES, sizes=SIZES, fixed_batch=FIXED_BATCH, fixed_size=FIXED_SIZE, steps=STEPS) -> list:
    rows = []
    for family in FAMILIES:
        for batch, size in points(batches, sizes, fixed_batch, fixed_size):
            cases = {which: build(f'{family}/{which}', batch, size) for which in ('ours', 'baseline')}
            seconds = time_interleaved(cases, True, steps, WARMUP)
            mib = {which: peak_memory(__name__, f'{family}/{which}', True, batch=batch, size=size) for which in cases}
            rows.append(dict(family=family, batch=batch, size=size, work=batch * size * size,
                             seconds={k: seconds[k] for k in cases}, peak_mib=mib))
            print(f'... {family} batch {batch} at {size}x{size}: {seconds["ours"] / seconds["baseline"]:.2f}x time',
                  flush=True)
    return rows


def plot(rows: list, path: Path) -> Path:
    fig, axes = new_figure(2, len(FAMILIES), figsize=(6 * len(FAMILIES), 8))
    for col, (family, (ours, baseline)) in enumerate(FAMILIES.items()):
        mine = sorted((r for r in rows if r['family'] == family), key=lambda r: r['work'])
        for row, (key, label) in enumerate((('seconds', 'seconds per train step'), ('peak_mib', 'peak memory (MiB)'))):
            ax = axes[row][col]
            for which, name in (('ours', ours), ('baseline', baseline)):
                ax.plot([r['work'] for r in mine], [r[key][which] for r in mine], marker='o', label=name)
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.set_xlabel('work: batch x pixels')
            ax.set_ylabel(label)
            ax.set_title(family, fontsize=9)
            ax.legend(fontsize=8)
    return save_figure(fig, path)


def table(rows: list) -> str:
    return markdown_table(
        ['family', 'batch', 'resolution', 'ours ms', 'baseline ms', 'time ratio', 'peak memory ratio'],
        [[r['family'], r['batch'], f'{r["size"]}x{r["size"]}', f'{1000 * r["seconds"]["ours"]:.0f}',
          f'{1000 * r["seconds"]["baseline"]:.0f}', f'{r["seconds"]["ours"] / r["seconds"]["baseline"]:.2f}x',
          f'{r["peak_mib"]["ours"] / r["peak_mib"]["baseline"]:.2f}x'] for r in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.growth', description=__doc__.split('\n')[0])
    parser.add_argument('--batches', type=int, nargs='+', default=list(BATCHES))
    parser.add_argument('--sizes', type=int, nargs='+', default=list(SIZES))
    parser.add_argument('--steps', type=int, default=STEPS)
    parser.add_argument('--output', default=str(OUTPUT), help='folder for growth.json and growth.png')
    args = parser.parse_args(argv)
    fixed_batch = FIXED_BATCH if FIXED_BATCH in args.batches else args.batches[0]
    fixed_size = FIXED_SIZE if FIXED_SIZE in args.sizes else args.sizes[0]
    rows = run(args.batches, args.sizes, fixed_batch, fixed_size, args.steps)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / 'growth.json', dict(machine=machine(), steps=args.steps, warmup=WARMUP, rows=rows))
    plot(rows, output / 'growth.png')
    print(f'Median of {args.steps} interleaved steps after {WARMUP}; {machine()}')
    print(table(rows))


if __name__ == '__main__':
    main()
