""" The paper's claims as the report judges them: paired comparisons, each with its verdict, and their rule """
from dataclasses import dataclass
from typing import Callable, List, Tuple

from .stats import FAILS, HOLDS, OPEN, Interval, combine


@dataclass(frozen=True)
class Comparison:
    """One paired comparison behind a verdict: what is compared, in which configuration, and its verdict."""
    config: str
    measure: str
    interval: Interval
    unit: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # the paper's claim
    needs: Tuple[str, ...]  # the parts it is judged on
    compare: Callable[[dict], List[Comparison]]
    bar: str  # the rule, in words
    verdict: Callable[[List[Comparison]], str] = None  # from the comparisons; default: combine over them
    needs_all: bool = False  # judged only once every part in `needs` has run (default: once any has)

    def ready(self, parts) -> bool:
        """Whether the parts that have run (names) are enough to judge the claim."""
        return (all if self.needs_all else any)(part in parts for part in self.needs)

    def judge(self, comparisons: List[Comparison]) -> str:
        return (self.verdict or (lambda cs: combine(c.verdict for c in cs)))(comparisons)


def all_required(comparisons: List[Comparison]) -> str:
    """Every comparison is a necessary part of the claim: it holds only if all hold, fails if any fails."""
    verdicts = [c.verdict for c in comparisons]
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else OPEN
