""" Part `widths`: the width sweep of the separable ResNet in every mode, Space included

Its rows join the accuracy section of part `modes`, which shows their Full - Chans and Chans - Space gaps; this
part judges whether the Full-Chans gap shrinks as the ResNet gets wider, by its trend over every width of the
sweep.
"""
from typing import Dict, List

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import MODES, resnet_kwargs, resnet_model, resnet_name
from ..runs import Study
from ..stats import slope_per_doubling, t_interval


def measure(study: Study) -> dict:
    r = study.recipe
    n = r.resnet_depths[0]
    configs = [(base, mode, resnet_name(n, base, mode)) for base in r.base_widths for mode in MODES]
    runs = study.train_all('widths', [job for base, mode, name in configs
                                      for job in study.seeds(name, resnet_model(mode), resnet_kwargs(n, base))])
    return dict(depth=n, rows=[dict(base_width=base, mode=mode, **study.row(runs, name))
                               for base, mode, name in configs])


def shrink_per_doubling(gaps: Dict[int, float]) -> float:
    """How many points the Full-Chans gap shrinks per doubling of the base width, read over every width (not only
    the two ends): minus `slope_per_doubling`."""
    return -slope_per_doubling(gaps)


def compare_width(results: dict) -> List[Comparison]:
    widths = results['parts']['widths']
    bases = sorted({r['base_width'] for r in widths['rows']})
    rows = {(r['base_width'], r['mode']): r for r in widths['rows']}
    seeds = [s for s in rows[bases[0], 'full']['test'] if all(s in rows[b, m]['test'] for b in bases
                                                               for m in ('full', 'chans'))]
    shrink = [shrink_per_doubling({b: rows[b, 'full']['test'][s] - rows[b, 'chans']['test'][s] for b in bases})
              for s in seeds]
    return [compared(f'SepResNet n = {widths["depth"]}, base widths {", ".join(map(str, bases))}',
                     'shrink of the Full-Chans gap per doubling of the width (least squares, per seed)',
                     t_interval(shrink), ' points', 'exceeds')]


WIDTH = Claim('width', 'The Full-Chans gap shrinks as ResNets get wider', ('widths',), compare_width,
              'holds when the shrink of the gap per doubling of the width, fitted over every width of the sweep, '
              'lies above 0')

PART = Part('widths', measure)
