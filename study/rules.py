""" The study's pre-registered rules (`preregistration.yaml`): margins and verdict rules fixed before the runs

The report prints the file as it stands; a verdict reads its margins from here, never from a constant in code.
"""
from functools import lru_cache
from pathlib import Path

import yaml

PREREGISTRATION = Path(__file__).resolve().parent / 'preregistration.yaml'


@lru_cache(maxsize=None)
def rules() -> dict:
    """The pre-registration as a mapping: `nearly` (the "nearly as good" rule and its margins), `changes`, ..."""
    return yaml.safe_load(PREREGISTRATION.read_text(encoding='utf-8'))
