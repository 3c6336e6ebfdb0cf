"""Numbers typed as fractions parse fast, and only to finite floats."""
import pytest

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.core.parsing import parse_fraction


def test_fractions_and_decimals_parse():
    assert parse_fraction('8/255') == 8 / 255 and parse_fraction('0.03') == 0.03


def test_a_tiny_exponent_parses_at_once_instead_of_building_a_huge_fraction():
    assert parse_fraction('1e-1000000000') == 0.0


@pytest.mark.parametrize('text', ['1e400', 'nan', 'inf', '1/0', 'eight', '1/x'])
def test_what_is_not_a_finite_number_is_refused(text):
    with pytest.raises(UsageError, match='not a finite number'):
        parse_fraction(text)
