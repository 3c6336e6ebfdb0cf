""" Values typed by users, parsed once where they enter: numbers written as fractions (pixel eps such as 8/255) """
import argparse
import math

__all__ = ['parse_fraction']


def parse_fraction(text: str) -> float:
    """'8/255' or '0.03' as a finite float (an argparse `type`; raises argparse.ArgumentTypeError otherwise).

    Parsed as floats, numerator over denominator: exact fractions of huge exponents (1e-1000000000) would take
    forever to build, and their float is 0 anyway.
    """
    numerator, _, denominator = text.partition('/')
    try:
        value = float(numerator) / float(denominator) if denominator else float(numerator)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'{text!r} is not a finite number or fraction such as 8/255')
    return value
