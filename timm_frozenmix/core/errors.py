""" The one error type for bad input, and how commands report it

Library code raises `UsageError` (a `ValueError`) when what it was given cannot work: a flag value, a missing
file, a model without weights. Commands print it as one line and exit with status 2. Every other exception is a
bug or a genuine failure (out of memory, a broken install) and keeps its traceback.
"""
import sys
from contextlib import contextmanager

__all__ = ['UsageError', 'exit_on_usage_error']


class UsageError(ValueError):
    """Bad input: the message says what was wrong and what to do instead, in one line."""


@contextmanager
def exit_on_usage_error(prog: str):
    """Inside a command: a UsageError becomes `prog: error: message` on stderr and exit status 2."""
    try:
        yield
    except UsageError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        sys.exit(2)
