""" The commands: each parses its flags into a config, calls the library, and prints

train.py (`train`), eval_robust.py (`eval_robust`), `python -m timm_frozenmix.cli.spectral` (`spectral`),
`python -m timm_frozenmix.cli.hub` (`hub`) and `python -m timm_frozenmix.cli.launch` (`launch`). Nothing below imports
from here.
"""
import argparse
import shlex
import sys

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.core.parsing import parse_fraction

__all__ = ['ArgumentParser', 'command_line', 'fraction']


def command_line(program: str, argv=None) -> str:
    """`program` and the flags it was given (`argv` when called from Python), for checkpoints and model cards."""
    return ' '.join([program, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def fraction(text: str) -> float:
    """`parse_fraction` as an argparse `type`: its UsageError becomes argparse's own one-line error."""
    try:
        return parse_fraction(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, `prog: error: message`, and a pointer to --help (exit 2),
    instead of the whole usage block before the error."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')
