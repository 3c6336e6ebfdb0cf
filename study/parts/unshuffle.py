""" Part `unshuffle`: ConvMixers that undo a fixed random pixel permutation, with a receptive field covering the image

Each mode learns to reconstruct images from their permuted pixels (one permutation per seed); Chans' PSNR is judged
against Full's and against two reconstructions that learn nothing, Space's against Chans'.
"""
from typing import Dict, List

import torch

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.data.datasets import Normalized, create_dataset, create_eval_loader
from timm_frozenmix.evaluation.unshuffle import PixelPermutation, psnr, save_unshuffle_grid
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.loading import model_from_checkpoint
from timm_frozenmix.io.reporting import markdown_table

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import CONVMIXER, MODES
from ..rules import rules
from ..runs import Job, Study
from ..sections import MODE_NAMES, Verdicts, mean_cell, verdict_blocks
from ..stats import FAILS, HOLDS, OPEN, paired

UNSHUFFLE_GRID = 'reproduction_unshuffle.png'


def measure(study: Study) -> dict:
    r = study.recipe
    size = r.unshuffle_size
    receptive_field = 1 + r.unshuffle_depth * (r.unshuffle_kernel - 1)  # patch-1 stem, depth k x k convs
    if receptive_field < 2 * size - 1:
        raise UsageError(f'the un-shuffling receptive field ({receptive_field}) does not cover {size}x{size} '
                         f'images (needs {2 * size - 1}): raise the depth or kernel, or lower the size')
    kwargs = dict(dim=r.unshuffle_dim, depth=r.unshuffle_depth, kernel_size=r.unshuffle_kernel, patch_size=1)
    jobs = {mode: [Job(f'unshuffle-{mode}-s{seed}', CONVMIXER.format(mode=mode), kwargs, seed, dict(
                task='unshuffle', perm_seed=seed, input_size=[1, size, size], crop_pct=1.0)) for seed in r.seeds]
            for mode in MODES}
    runs = study.train_all('unshuffle', [job for mode_jobs in jobs.values() for job in mode_jobs])
    baselines = {str(seed): trivial_baselines(study, runs[jobs['full'][i].name], seed)
                 for i, seed in enumerate(r.seeds)}
    seed0 = {mode: runs[jobs[mode][0].name] for mode in MODES}
    draw_grid(study, seed0, r.seeds[0])
    return dict(model=f'ConvMixer width {r.unshuffle_dim}, depth {r.unshuffle_depth}, kernel '
                      f'{r.unshuffle_kernel}, patch 1, on {size}x{size} images',
                size=size, receptive_field=receptive_field,
                rows=[dict(mode=mode, **study.row(runs, f'unshuffle-{mode}')) for mode in MODES],
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
