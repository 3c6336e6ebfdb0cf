""" Flags made from a config dataclass: each field declared once, with `training.config.setting`

A field `lr: float = setting(3e-3, 'learning rate', group=...)` becomes `--lr` (type float, help with its
default) in its group; bools become switches with a `--no-` form (`--amp`, `--no-amp`), lists take several
values, dicts take key=value pairs. Flags that
are not given stay out of the parsed namespace, so a command can tell what the user typed from the defaults.
"""
import argparse
import ast
import typing
from dataclasses import MISSING, fields
from typing import Any, Dict

from timm_frozenmix.cli import argparse_type
from timm_frozenmix.training.config import flag_name

__all__ = ['add_config_flags', 'given_settings', 'settings_argv']


class KeyValues(argparse.Action):
    """`key=value ...` as a dict, values read as Python literals where they are one (`dim=8` gives 8)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parsed = {}
        for item in values:
            key, sep, text = item.partition('=')
            if not sep or not key.isidentifier():
                parser.error(f'{option_string} takes key=value pairs, got {item!r}')
            try:
                parsed[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                parsed[key] = text
        setattr(namespace, self.dest, parsed)


def _default_of(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One flag per field of `config_cls` that carries `setting` metadata, in the groups they name."""
    hints = typing.get_type_hints(config_cls)
    groups = {}
    for f in fields(config_cls):
        meta = f.metadata
        if 'help' not in meta:
            continue
        if meta['group'] not in groups:
            groups[meta['group']] = parser.add_argument_group(meta['group'])
        kind = hints[f.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        default = _default_of(f)
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS,
                      help=f'{meta["help"]}' + ('' if default in (None, '', False) else f' (default: {default})'))
        if kind is bool:  # --amp / --no-amp, so a resumed run can turn off what it recorded; --no-aug stays one switch
            kwargs['action'] = 'store_true' if f.name.startswith('no_') else argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is dict:
            kwargs.update(nargs=meta['nargs'] or '*', action=KeyValues, metavar='KEY=VALUE')
        else:
            item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            kwargs['type'] = argparse_type(meta['parse']) if meta['parse'] else item
            if typing.get_origin(kind) is list:
                kwargs['nargs'] = meta['nargs'] or '+'
            elif meta['nargs']:
                kwargs.update(nargs=meta['nargs'], const=meta['const'])
            for key in ('choices', 'metavar'):
                if meta[key] is not None:
                    kwargs[key] = meta[key]
        groups[meta['group']].add_argument(*meta['flags'], flag_name(f.name), **kwargs)


def given_settings(namespace: argparse.Namespace, config_cls) -> Dict[str, Any]:
    """The settings of `config_cls` that were given on the command line, by field name."""
    names = {f.name for f in fields(config_cls)}
    return {k: v for k, v in vars(namespace).items() if k in names}


def settings_argv(settings: Dict[str, Any], config_cls) -> list:
    """The flags that give `settings` (by field name), so a file of settings is parsed as the command line is:
    True is the switch, False its --no- form, lists several values, dicts key=value pairs; None leaves the
    default."""
    names = {f.name for f in fields(config_cls)}
    argv = []
    for name, value in settings.items():
        flag = flag_name(name)
        if value is None or name not in names:
            continue
        if isinstance(value, bool):
            if value or not name.startswith('no_'):
                argv.append(flag if value else flag.replace('--', '--no-', 1))
        elif isinstance(value, dict):
            argv += [flag, *(f'{k}={v!r}' for k, v in value.items())]
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv
