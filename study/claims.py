""" The paper's claims as the report judges them: paired comparisons, each with its verdict, and their rule """
import math
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

from .stats import (FAILS, HOLDS, OPEN, Interval, beyond_p, combine, exceeds, exceeds_ratio, holm, log_interval,
                    within)


@dataclass(frozen=True)
class Comparison:
    """One paired comparison behind a verdict: what is compared, in which configuration, and its verdict.

    fail_p: for a "does not hold" verdict, the one-sided p-value of the direction that fails it, which
    `Claim.corrected` tests with Holm's correction over the claim's comparisons."""
    config: str
    measure: str
    interval: Interval
    unit: str
    verdict: str
    fail_p: Optional[float] = None


def compared(config: str, measure: str, interval: Interval, unit: str, rule: str, bar: float = 0.0) -> Comparison:
    """A comparison judged by `rule` against `bar`, with the p-value of its failing direction:
    'exceeds' (`stats.exceeds`: fails below the bar, or below 0 for bar 0), 'within' (`stats.within`: fails
    above the bar), 'exceeds_ratio' (`exceeds` of a ratio on the log scale) and 'below_ratio' (a ratio below
    `bar`, failing above it)."""
    if rule == 'exceeds':
        return Comparison(config, measure, interval, unit, exceeds(interval, bar), beyond_p(interval, bar, False))
    if rule == 'within':
        return Comparison(config, measure, interval, unit, within(interval, bar), beyond_p(interval, bar, True))
    logs = log_interval(interval)
    if rule == 'exceeds_ratio':
        return Comparison(config, measure, interval, unit, exceeds_ratio(interval, bar),
                          beyond_p(logs, math.log(bar), False))
    if rule == 'below_ratio':
        return Comparison(config, measure, interval, unit, within(logs, math.log(bar)),
                          beyond_p(logs, math.log(bar), True))
    raise ValueError(f'unknown rule {rule!r}')


@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # the paper's claim
    needs: Tuple[str, ...]  # the parts it is judged on
    compare: Callable[[dict], List[Comparison]]
    bar: str  # the rule, in words
    verdict: Callable[[List[Comparison]], str] = None  # from the comparisons; default: combine over them
    needs_all: bool = False  # judged only once every part in `needs` has run (default: once any has)
    at_longest: bool = False  # judged on the longest training of its parts' runs (the others are shown)

    def ready(self, parts) -> bool:
        """Whether the parts that have run (names) are enough to judge the claim."""
        return (all if self.needs_all else any)(part in parts for part in self.needs)

    def corrected(self, comparisons: List[Comparison]) -> List[Comparison]:
        """Holm's correction over the claim's comparisons: a "does not hold" stands only where its failing
        direction is significant at a family-wise 5%; the others become "not established"."""
        rejected = holm([c.fail_p if c.verdict == FAILS and c.fail_p is not None else 1.0 for c in comparisons])
        return [replace(c, verdict=OPEN) if c.verdict == FAILS and c.fail_p is not None and not r else c
                for c, r in zip(comparisons, rejected)]

    def judge(self, comparisons: List[Comparison]) -> str:
        return (self.verdict or (lambda cs: combine(c.verdict for c in cs)))(comparisons)


def all_required(comparisons: List[Comparison]) -> str:
    """Every comparison is a necessary part of the claim: it holds only if all hold, fails if any fails."""
    verdicts = [c.verdict for c in comparisons]
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else OPEN
