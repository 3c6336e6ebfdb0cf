""" Part `unshuffle`: ConvMixers that undo a fixed random pixel permutation, with a receptive field covering the image

Each mode learns to reconstruct images from their permuted pixels (one permutation per seed); Chans' PSNR is judged
against Full's and against two reconstructions that learn nothing, Space's against Chans'. Part `unshuffle_growth`
grows the Chans model one factor at a time (depth, width, kernel size) and judges whether its PSNR rises with each.
"""
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.data.datasets import Normalized, create_dataset, create_eval_loader
from timm_frozenmix.evaluation.unshuffle import PixelPermutation, psnr, save_unshuffle_grid
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.loading import model_from_checkpoint
from timm_frozenmix.io.reporting import markdown_table, new_figure, save_figure

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import CONVMIXER, MODES
from ..rules import rules
from ..runs import Job, Study
from ..sections import MODE_NAMES, Verdicts, mean_cell, verdict_blocks
from ..stats import FAILS, HOLDS, OPEN, PARTLY, paired, slope_per_doubling, t_interval

UNSHUFFLE_GRID = 'reproduction_unshuffle.png'


def unshuffle_jobs(study: Study, mode: str, dim: int, depth: int, kernel: int) -> Tuple[str, List[Job]]:
    """The run name (without its seed) and the jobs of one un-shuffling model, one per seed, each with its own
    permutation; part unshuffle's model keeps the short name, so that the growth sweeps reuse its runs."""
    r = study.recipe
    base = (dim, depth, kernel) == (r.unshuffle_dim, r.unshuffle_depth, r.unshuffle_kernel)
    name = f'unshuffle-{mode}' + ('' if base else f'-w{dim}-d{depth}-k{kernel}')
    kwargs = dict(dim=dim, depth=depth, kernel_size=kernel, patch_size=1)
    return name, [Job(f'{name}-s{seed}', CONVMIXER.format(mode=mode), kwargs, seed, dict(
        task='unshuffle', perm_seed=seed, input_size=[1, r.unshuffle_size, r.unshuffle_size], crop_pct=1.0))
        for seed in r.seeds]


def covered_receptive_field(size: int, depth: int, kernel: int) -> int:
    """The receptive field (pixels) of a patch-1 ConvMixer of `depth` k x k layers, once checked to cover
    `size` x `size` images: every output pixel must see every input pixel. Raises UsageError otherwise."""
    receptive_field = 1 + depth * (kernel - 1)
    if receptive_field < 2 * size - 1:
        raise UsageError(f'the un-shuffling receptive field ({receptive_field}, depth {depth}, kernel {kernel}) does '
                         f'not cover {size}x{size} images (needs {2 * size - 1}): raise the depth or kernel, or '
                         'lower the size')
    return receptive_field


def measure(study: Study) -> dict:
    r = study.recipe
    size = r.unshuffle_size
    receptive_field = covered_receptive_field(size, r.unshuffle_depth, r.unshuffle_kernel)
    models = {mode: unshuffle_jobs(study, mode, r.unshuffle_dim, r.unshuffle_depth, r.unshuffle_kernel)
              for mode in MODES}
    runs = study.train_all('unshuffle', [job for _, jobs in models.values() for job in jobs])
    baselines = {str(job.seed): trivial_baselines(study, runs[job.name], job.seed) for job in models['full'][1]}
    draw_grid(study, {mode: runs[jobs[0].name] for mode, (_, jobs) in models.items()}, r.seeds[0])
    return dict(model=f'ConvMixer width {r.unshuffle_dim}, depth {r.unshuffle_depth}, kernel '
                      f'{r.unshuffle_kernel}, patch 1, on {size}x{size} images',
                size=size, receptive_field=receptive_field,
                rows=[dict(mode=mode, **study.row(runs, name)) for mode, (name, _) in models.items()],
                baselines=baselines, grid=UNSHUFFLE_GRID)


def trivial_baselines(study: Study, run: dict, seed: int) -> dict:
    """PSNR of two trivial reconstructions on the test images: the permuted input, the mean training image."""
    data_config = Checkpoint.load(run['checkpoint']).data_config
    images = split_images(study, 'test', data_config)
    mean = split_images(study, study.recipe.train_split, data_config).mean(0)
    permutation = PixelPermutation(*images.shape[-2:], seed=seed)
    return {'permuted input': psnr(permutation(images), images).mean().item(),
            'mean training image': psnr(mean.expand_as(images), images).mean().item()}


def split_images(study: Study, split: str, data_config: dict) -> torch.Tensor:
    loader = create_eval_loader(create_dataset(study.recipe.dataset, split=split), data_config, 1000, 0,
                                torch.device('cpu'))
    return torch.cat([x for x, _ in loader])


def draw_grid(study: Study, runs: Dict[str, dict], seed: int) -> None:
    """Reconstructions of a few test images by each mode's model, drawn into the study's output folder."""
    nets = {}
    for mode, run in runs.items():
        checkpoint = Checkpoint.load(run['checkpoint'])
        config = checkpoint.data_config
        nets[mode] = Normalized(model_from_checkpoint(checkpoint), config['mean'], config['std'])
    images = split_images(study, 'test', config)[:8]
    save_unshuffle_grid(nets, PixelPermutation(*images.shape[-2:], seed=seed), images, study.output / UNSHUFFLE_GRID)


def compare_unshuffle(results: dict) -> List[Comparison]:
    unshuffle = results['parts']['unshuffle']
    rows = {r['mode']: r for r in unshuffle['rows']}
    trivial = {s: max(b.values()) for s, b in unshuffle['baselines'].items()}
    near = paired(rows['full']['test'], rows['chans']['test'])
    learned = paired(rows['chans']['test'], trivial)
    return [compared('Full - Chans', 'test PSNR', near, ' dB', 'within', rules()['unshuffle']['psnr_db']),
            compared('Chans - best trivial reconstruction', 'test PSNR', learned, ' dB', 'exceeds')]


def unshuffle_verdict(comparisons: List[Comparison]) -> str:
    """Chans beating the trivial reconstructions is a precondition; then Full - Chans decides."""
    near, learned = comparisons
    return near.verdict if learned.verdict == HOLDS else FAILS if learned.verdict == FAILS else OPEN


UNSHUFFLE = Claim(
    'unshuffle', 'Chans ConvMixers un-shuffle pixels nearly as well as Full ones', ('unshuffle',), compare_unshuffle,
    f'Full - Chans PSNR below {rules()["unshuffle"]["psnr_db"]:g} dB, once Chans lies above the best trivial '
    'reconstruction', unshuffle_verdict)


def compare_space(results: dict) -> List[Comparison]:
    rows = {r['mode']: r for r in results['parts']['unshuffle']['rows']}
    return [compared('Chans - Space', 'test PSNR', paired(rows['chans']['test'], rows['space']['test']), ' dB',
                     'exceeds', rules()['unshuffle']['space_far_worse_db'])]


UNSHUFFLE_SPACE = Claim(
    'unshuffle_space', 'Space ConvMixers un-shuffle pixels far worse than Chans ones', ('unshuffle',), compare_space,
    f'holds when Chans - Space PSNR lies above {rules()["unshuffle"]["space_far_worse_db"]:g} dB; partly when '
    'above 0 but below that margin; fails when below the margin with 0 inside or below')


def setting(recipe: dict) -> List[str]:
    return [f'- Un-shuffling on images resized to {recipe["unshuffle_size"]}x{recipe["unshuffle_size"]}, so that the '
            'receptive field covers the whole image; the paper uses full-size images and far larger models.']


def section(results: dict, verdicts: Verdicts) -> List[str]:
    u = results['parts']['unshuffle']
    body = [[MODE_NAMES[r['mode']], mean_cell(r['test']), mean_cell(r['val'])] for r in u['rows']]
    for name in next(iter(u['baselines'].values())):
        body.append([f'{name} (no learning)', mean_cell({s: b[name] for s, b in u['baselines'].items()}), ''])
    return ['## 5. Pixel un-shuffling', '',
            'Paper: Chans ConvMixers learn to undo a fixed random pixel permutation nearly as well as Full ones '
            '(Space ones are shown in its supplement).', '',
            f'{u["model"]}: receptive field {u["receptive_field"]} pixels, so every output pixel sees the whole '
            f'{u["size"]}x{u["size"]} image. One permutation per seed. Mean test PSNR (dB) ± 95% interval:', '',
            markdown_table(['model', 'test PSNR (dB)', 'validation PSNR (dB)'], body), '',
            f'![reconstructions]({u["grid"]})', '', *verdict_blocks(verdicts, UNSHUFFLE.key, UNSHUFFLE_SPACE.key)]


PART = Part('unshuffle', measure, section=section, drawn={UNSHUFFLE_GRID: 'the reconstructions'}, setting=setting)


# part unshuffle_growth: the Chans model's PSNR as its depth, width or kernel grows, one factor at a time

GROWTH_FIGURE = 'reproduction_unshuffle_growth.png'
FACTORS = ('depth', 'width', 'kernel')  # the registered sweeps, in the order the report shows them


def measure_growth(study: Study) -> dict:
    r = study.recipe
    base = dict(depth=r.unshuffle_depth, width=r.unshuffle_dim, kernel=r.unshuffle_kernel)
    sweeps = dict(depth=r.unshuffle_depths, width=r.unshuffle_dims, kernel=r.unshuffle_kernels)
    for factor, values in sweeps.items():
        if base[factor] not in values or len(set(values)) < 2:
            raise UsageError(f'the un-shuffling {factor} sweep {list(values)} must hold part unshuffle\'s '
                             f'{factor} {base[factor]} and one more value: fix the recipe')
    configs = [(factor, value, dict(base, **{factor: value})) for factor in FACTORS for value in sweeps[factor]]
    for _, _, c in configs:
        covered_receptive_field(r.unshuffle_size, c['depth'], c['kernel'])
    models = [(factor, value, c, *unshuffle_jobs(study, 'chans', c['width'], c['depth'], c['kernel']))
              for factor, value, c in configs]
    runs = study.train_all('unshuffle_growth', [job for *_, jobs in models for job in jobs])
    return dict(base=base, size=r.unshuffle_size,
                rows=[dict(factor=factor, value=value, **c, **study.row(runs, name))
                      for factor, value, c, name, _ in models])


def _sweep(part: dict, factor: str) -> List[dict]:
    return sorted((row for row in part['rows'] if row['factor'] == factor), key=lambda row: row['value'])


def _fixed(part: dict, factor: str) -> str:
    return ', '.join(f'{name} {value}' for name, value in part['base'].items() if name != factor)


def compare_growth(results: dict) -> List[Comparison]:
    part = results['parts']['unshuffle_growth']
    out = []
    for factor in FACTORS:
        rows = _sweep(part, factor)
        seeds = [s for s in rows[0]['test'] if all(s in row['test'] for row in rows)]
        gains = [slope_per_doubling({row['value']: row['test'][s] for row in rows}) for s in seeds]
        out.append(compared(f'Chans ConvMixer, {factor} {", ".join(str(row["value"]) for row in rows)} '
                            f'({_fixed(part, factor)})',
                            f'test PSNR gain per doubling of the {factor} (least squares, per seed)',
                            t_interval(gains), ' dB', 'exceeds'))
    return out


def growth_verdict(comparisons: List[Comparison]) -> str:
    """The registered rule: does not hold when some factor fails (after Holm); holds when every factor holds;
    partly when some do; not established otherwise."""
    verdicts = [c.verdict for c in comparisons]
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else PARTLY if HOLDS in verdicts else OPEN


UNSHUFFLE_GROWTH = Claim(
    'unshuffle_growth', rules()['unshuffle_growth']['claim'], ('unshuffle_growth',), compare_growth,
    'holds when, for each of depth, width and kernel size, the PSNR gained per doubling (fitted over every value of '
    'its sweep) lies above 0; does not hold when some factor\'s gain lies below 0 (Holm-corrected over the three); '
    'partly when some hold and none fails', growth_verdict)


def growth_section(results: dict, verdicts: Verdicts) -> List[str]:
    part = results['parts']['unshuffle_growth']
    body = [[factor if i == 0 else '', str(row['value']), f'{row["depth"]}, {row["width"]}, {row["kernel"]}',
             f'{row["trainable_params"]:,}', mean_cell(row['test']), mean_cell(row['val'])]
            for factor in FACTORS for i, row in enumerate(_sweep(part, factor))]
    return ['### PSNR against depth, width and kernel size', '',
            'Paper (appendix B): the un-shuffling PSNR grows with depth, width and kernel size, although a Chans '
            'model learns no more parameters as its kernel grows.', '',
            f'The Chans model of this section grown one factor at a time from depth {part["base"]["depth"]}, width '
            f'{part["base"]["width"]} and kernel {part["base"]["kernel"]} (whose runs it shares), on the same '
            f'{part["size"]}x{part["size"]} images and permutations. Every receptive field covers the image.'
            + _spanned(part) + ' Mean test PSNR (dB) ± 95% interval:', '',
            markdown_table(['grown', 'value', 'depth, width, kernel', 'learned parameters', 'test PSNR (dB)',
                            'validation PSNR (dB)'], body), '',
            f'![PSNR against depth, width and kernel size]({GROWTH_FIGURE})', '',
            *verdict_blocks(verdicts, UNSHUFFLE_GROWTH.key)]


def _spanned(part: dict) -> str:
    """Which models have fewer channels than k squared: their frozen filters cannot span every k x k kernel."""
    narrow = sorted({(row['width'], row['kernel']) for row in part['rows'] if row['width'] < row['kernel'] ** 2})
    if not narrow:
        return ''
    return (' With fewer channels than k squared (' + ', '.join(f'width {w} at kernel {k}' for w, k in narrow)
            + '), the frozen filters of a layer cannot span every k x k kernel.')


def plot_growth(results: dict, path: Path) -> None:
    part = results['parts']['unshuffle_growth']
    fig, axes = new_figure(1, len(FACTORS), figsize=(4 * len(FACTORS), 3.6))
    for ax, factor in zip(axes[0], FACTORS):
        rows = _sweep(part, factor)
        values = [row['value'] for row in rows]
        for seed in rows[0]['test']:
            ax.plot(values, [row['test'].get(seed) for row in rows], color='gray', alpha=0.4, linewidth=0.8)
        ivs = [t_interval(list(row['test'].values())) for row in rows]
        ax.errorbar(values, [iv.mean for iv in ivs], marker='o', capsize=3, label='mean, 95% interval',
                    yerr=[[iv.mean - iv.low for iv in ivs], [iv.high - iv.mean for iv in ivs]])
        ax.set_xscale('log')
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(f'{factor} (log scale; {_fixed(part, factor)})', fontsize=8)
        ax.set_title(f'Chans, test PSNR against {factor}', fontsize=9)
    axes[0][0].set_ylabel('test PSNR (dB); gray: one seed')
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)


GROWTH_PART = Part('unshuffle_growth', measure_growth, section=growth_section, figures={GROWTH_FIGURE: plot_growth})
