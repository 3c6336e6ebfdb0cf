""" Intervals and verdict rules of the reproduction report

Every comparison is paired: the two models of one seed share their initialization seed and data order, and two
timings of one round ran back to back. A 95% t interval over the pairs carries the uncertainty; a verdict reads
the interval against the claim's bar, never the mean alone, so a difference whose interval contains 0 is never
a ranking.
"""
import math
import statistics
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence

from scipy.stats import t as student_t

HOLDS, PARTLY, FAILS, OPEN = 'holds', 'partly', 'does not hold here', 'not established'
VERDICTS = (HOLDS, PARTLY, FAILS, OPEN)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of n paired differences (or log ratios) and its 95% t interval; low/high are None for n < 2."""
    mean: float
    low: float
    high: float
    n: int

    def text(self, unit: str = '', digits: int = 2) -> str:
        """'+1.23 points [-0.40, +2.86]'; ratios (unit 'x') without signs."""
        sign = '' if unit == 'x' else '+'
        if self.n < 2:
            why = 'one pair' if self.n == 1 else 'a zero, no log'
            return f'{self.mean:{sign}.{digits}f}{unit} ({why}, no interval)'
        return f'{self.mean:{sign}.{digits}f}{unit} [{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]'


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of `values` with its two-sided t interval (Student, n - 1 degrees of freedom)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError('an interval needs at least one value')
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = student_t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def paired(a: Dict[str, float], b: Dict[str, float]) -> Interval:
    """a - b over the seeds both hold (keys are seeds)."""
    seeds = [s for s in a if s in b]
    return t_interval([a[s] - b[s] for s in seeds])


def welch(a: Dict[str, float], b: Dict[str, float], confidence: float = CONFIDENCE) -> Interval:
    """mean(a) - mean(b) as two independent samples (Welch's t interval, Welch-Satterthwaite degrees of freedom),
    for where pairing by seed is doubtful; n is the smaller sample's size."""
    x, y = [float(v) for v in a.values()], [float(v) for v in b.values()]
    mean = statistics.fmean(x) - statistics.fmean(y)
    if min(len(x), len(y)) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    vx, vy = statistics.variance(x) / len(x), statistics.variance(y) / len(y)
    if vx + vy == 0:
        return Interval(mean, mean, mean, min(len(x), len(y)))
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = student_t.ppf(0.5 + confidence / 2, df) * math.sqrt(vx + vy)
    return Interval(mean, mean - half, mean + half, min(len(x), len(y)))


def ratio(a: List[float], b: List[float]) -> Interval:
    """a / b as a geometric mean over paired rounds, with its interval (t interval of the log ratios). A zero
    has no log: then the mean is the ratio of the sums and there is no interval (n = 0)."""
    if any(x <= 0 or y <= 0 for x, y in zip(a, b)):
        return Interval(sum(a) / sum(b) if sum(b) > 0 else math.inf, math.nan, math.nan, 0)
    logs = t_interval([math.log(x / y) for x, y in zip(a, b)])
    return Interval(math.exp(logs.mean), math.exp(logs.low), math.exp(logs.high), logs.n)


def slope_per_doubling(values: Dict[float, float]) -> float:
    """The least-squares slope of `values` (e.g. a gap in points, a PSNR in dB) against log2 of their keys (a
    width, a depth): the change per doubling of the key, read over every key. Raises ValueError for fewer than
    two distinct keys."""
    xs = [math.log2(key) for key in values]
    if len(set(xs)) < 2:
        raise ValueError(f'a slope needs at least two distinct keys, got {sorted(values)}')
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values.values())
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values.values())) / sum((x - mean_x) ** 2 for x in xs)


def beyond_p(interval: Interval, bar: float, above: bool) -> float:
    """One-sided p-value of "the true value lies above `bar`" (`above`) or below it, read from a t interval
    (its half-width is t x standard error, n - 1 degrees of freedom): the test behind a "does not hold".
    1.0 without an interval."""
    if interval.n < 2 or not math.isfinite(interval.low):
        return 1.0
    df = interval.n - 1
    se = (interval.high - interval.low) / (2 * student_t.ppf(0.5 + CONFIDENCE / 2, df))
    if se == 0:
        return 0.0 if (interval.mean > bar if above else interval.mean < bar) else 1.0
    t = (interval.mean - bar) / se
    return float(student_t.sf(t, df) if above else student_t.cdf(t, df))


def log_interval(interval: Interval) -> Interval:
    """A ratio interval (from `ratio`) on the log scale, where it is a t interval; a zero bound has no log."""
    if interval.n < 2 or not interval.low > 0:
        return Interval(math.log(interval.mean) if interval.mean > 0 else -math.inf, math.nan, math.nan, 1)
    return Interval(math.log(interval.mean), math.log(interval.low), math.log(interval.high), interval.n)


def holm(pvalues: Sequence[float], alpha: float = 1 - CONFIDENCE) -> List[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level `alpha`, in the given order: the
    k-th smallest p-value (k = 0, 1, ...) is compared with alpha / (m - k) until one is not below it."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for k, i in enumerate(order):
        if pvalues[i] >= alpha / (len(pvalues) - k):
            break
        rejected[i] = True
    return rejected


def exceeds(interval: Interval, bar: float = 0.0) -> str:
    """Verdict on the claim "the true difference is above `bar`" (bar >= 0, e.g. "Space is far worse").

    holds: the interval lies above the bar; partly: it lies above 0 but below the bar (a difference, smaller
    than claimed); does not hold: it lies below the bar and reaches 0 or below (with bar 0: it lies below 0,
    the opposite is shown); not established: it contains the bar (or 0, for bar 0), or has no width (one pair).
    """
    if interval.n < 2:
        return OPEN
    if interval.low > bar:
        return HOLDS
    if interval.low > 0:
        return PARTLY if interval.high < bar else OPEN
    if interval.high < bar and (bar > 0 or interval.high < 0):
        return FAILS
    return OPEN


def exceeds_ratio(interval: Interval, bar: float = 1.0) -> str:
    """`exceeds` for a ratio interval (from `ratio`): read on the log scale, where no change is 0 and the bar
    log(bar) (e.g. bar 1.25: "over 25% more")."""
    return exceeds(log_interval(interval), math.log(bar))


def within(interval: Interval, bar: float) -> str:
    """Verdict on the claim "the true difference is below `bar`" (e.g. Full - Chans under the "nearly" bar).

    holds: the interval lies below the bar; does not hold: above it; not established: it contains the bar.
    """
    if interval.n < 2:
        return OPEN
    if interval.high < bar:
        return HOLDS
    if interval.low > bar:
        return FAILS
    return OPEN


def combine(verdicts: Iterable[str]) -> str:
    """One verdict over several configurations: the common verdict when they agree; partly when some hold (or
    partly) and others not; does not hold when none holds and some fail; not established otherwise."""
    verdicts = list(verdicts)
    if len(set(verdicts)) == 1:
        return verdicts[0]
    if HOLDS in verdicts or PARTLY in verdicts:
        return PARTLY
    return FAILS if FAILS in verdicts else OPEN
