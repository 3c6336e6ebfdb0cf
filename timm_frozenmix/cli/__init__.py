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

__all__ = ['ArgumentParser', 'argparse_type', 'command_line', 'fraction']


def command_line(program: str, argv=None) -> str:
    """`program` and the flags it was given (`argv` when called from Python), for checkpoints and model cards."""
    return ' '.join([program, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])


def argparse_type(parse):
    """A parse function of the library as an argparse `type`: its UsageError becomes argparse's one-line error."""
    def convert(text):
        try:
            return parse(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


fraction = argparse_type(parse_fraction)  # '8/255' or '0.03' on the command line


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, `prog: error: message`, and a pointer to --help (exit 2),
    instead of the whole usage block before the error."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')
