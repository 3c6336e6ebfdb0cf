""" What the report's sections share: the recipe of the results, mode names, seed means and verdict blocks

Every section reads the study's JSON alone (`reproduction.json`, one entry per part), never a model.
"""
from typing import Dict, List, Optional, Tuple

from timm_frozenmix.io.reporting import markdown_table

from .claims import Claim, Comparison
from .stats import t_interval

MODE_NAMES = {'full': 'Full', 'chans': 'Chans', 'space': 'Space', 'dense': 'Dense'}
Verdicts = Dict[str, Tuple[Claim, Optional[str], List[Comparison]]]  # by claim key: verdict None if not run


def recipe_of(results: dict) -> dict:
    """The recipe of `results`: every part in them ran with it (the study drops parts of another recipe)."""
    return next(iter(results['parts'].values()))['recipe']


def mean_cell(values: Dict[str, float], digits: int = 2) -> str:
    """Mean with its 95% interval half-width over seeds."""
    iv = t_interval(list(values.values()))
    if iv.n < 2:
        return f'{iv.mean:.{digits}f}'
    return f'{iv.mean:.{digits}f} ± {(iv.high - iv.low) / 2:.{digits}f}'


def comparison_table(comparisons: List[Comparison]) -> str:
    return markdown_table(['configuration', 'paired comparison', 'mean [95% interval]', 'verdict'],
                          [[c.config, c.measure, c.interval.text(c.unit), c.verdict] for c in comparisons])


def verdict_blocks(verdicts: Verdicts, *keys: str) -> List[str]:
    """The verdict, rule and comparison table of each claim in `keys` that has been judged."""
    out = []
    for key in keys:
        claim, verdict, comparisons = verdicts[key]
        if verdict is None:
            continue
        out += [f'**{claim.text}: {verdict}.** Rule: {claim.bar}.', '', comparison_table(comparisons), '']
    return out
