""" The study's parts in the order they run and appear in the report, and its claims in the report's order

Each module holds one part, or the parts of one experiment split to fit an hour each: their runs, the claims
judged on their numbers, their report section and figures.
"""
from typing import Dict, List

from ..claims import Claim
from ..part import Part
from . import convergence, cost, filters, modes, robustness, unshuffle, widths

PARTS: Dict[str, Part] = {part.name: part for part in (
    modes.PART, widths.PART, convergence.CONVMIXER_PART, convergence.RESNET_PART, convergence.SPACE_PART,
    filters.PART, robustness.RESNET_PART, robustness.CONVMIXER_PART, robustness.LEVELS_PART, unshuffle.PART,
    unshuffle.GROWTH_PART, cost.PART)}

# the paper's headline claims in part order
CLAIMS: List[Claim] = [
    convergence.CHANS_NEAR_FULL, convergence.SPACE_FAR_WORSE, widths.WIDTH, filters.FILTER_ORDER, robustness.ROBUST,
    robustness.SMOOTHING, unshuffle.UNSHUFFLE, unshuffle.UNSHUFFLE_SPACE, unshuffle.UNSHUFFLE_GROWTH, cost.COST]
