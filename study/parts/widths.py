""" Part `widths`: the width sweep of the separable ResNet in every mode, Space included

Its rows join the accuracy section of part `modes`, which judges Chans and Space on them too; this part judges
whether the Full-Chans gap shrinks as the ResNet gets wider.
"""
from typing import List

from ..claims import Claim, Comparison, compared
from ..part import Part
from ..recipe import MODES, resnet_kwargs, resnet_model, resnet_name
from ..runs import Study
from ..stats import paired


def measure(study: Study) -> dict:
    r = study.recipe
    n = r.resnet_depths[0]
    configs = [(base, mode, resnet_name(n, base, mode)) for base in r.base_widths for mode in MODES]
    runs = study.train_all('widths', [job for base, mode, name in configs
                                      for job in study.seeds(name, resnet_model(mode), resnet_kwargs(n, base))])
    return dict(depth=n, rows=[dict(base_width=base, mode=mode, **study.row(runs, name))
                               for base, mode, name in configs])


def compare_width(results: dict) -> List[Comparison]:
    widths = results['parts']['widths']
    bases = sorted({r['base_width'] for r in widths['rows']})
    rows = {(r['base_width'], r['mode']): r for r in widths['rows']}

    def gap(base):
        full, chans = rows[base, 'full']['test'], rows[base, 'chans']['test']
        return {s: full[s] - chans[s] for s in full if s in chans}
    narrow, wide = bases[0], bases[-1]
    iv = paired(gap(narrow), gap(wide))
    return [compared(f'SepResNet n = {widths["depth"]}, base width {narrow} vs {wide}',
                     'Full-Chans gap at the narrowest minus at the widest', iv, ' points', 'exceeds')]


WIDTH = Claim('width', 'The Full-Chans gap shrinks as ResNets get wider', ('widths',), compare_width,
              'holds when the gap at the narrowest width minus the gap at the widest lies above 0')

PART = Part('widths', measure)
