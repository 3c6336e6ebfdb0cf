""" Values typed by users, checked once where they enter: fractions (pixel eps such as 8/255), depth multipliers """
import math

from timm_frozenmix.core.errors import UsageError

__all__ = ['parse_fraction', 'check_depth_multiplier']


def parse_fraction(text: str) -> float:
    """'8/255' or '0.03' as a finite float; raises UsageError otherwise.

    Parsed as floats, numerator over denominator: exact fractions of huge exponents (1e-1000000000) would take
    forever to build, and their float is 0 anyway.
    """
    numerator, _, denominator = text.partition('/')
    try:
        value = float(numerator) / float(denominator) if denominator else float(numerator)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(f'{text!r} is not a finite number or fraction such as 8/255')
    return value


def check_depth_multiplier(value) -> int:
    """`value` if it is an integer >= 1 (depthwise filters per input channel, paper Eq. 2); UsageError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f'depth_multiplier must be an integer >= 1, got {value!r}')
    return value
