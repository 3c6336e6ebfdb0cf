"""train.py's flags are made from TrainConfig: one declaration per setting, each flag reaching its field."""
from dataclasses import MISSING, fields

import pytest

from timm_frozenmix.cli.train import build_parser, parse_config
from timm_frozenmix.training.config import TrainConfig, flag_name

# a value to type for each kind of setting, and the value the config must then hold
SAMPLES = {bool: ([], True), int: (['3'], 3), float: (['0.25'], 0.25), str: (['fgsm'], 'fgsm')}


def test_every_setting_has_a_flag_with_help():
    options = {o: a for a in build_parser()._actions for o in a.option_strings}
    for f in fields(TrainConfig):
        action = options.get(flag_name(f.name))
        assert action is not None, f'{f.name} has no flag'
        assert action.dest == f.name and action.help and f.metadata['help'] in action.help


@pytest.mark.parametrize('name', [f.name for f in fields(TrainConfig) if f.name != 'resume'])  # resume: test_training
def test_each_flag_sets_its_own_field(name):
    f = next(f for f in fields(TrainConfig) if f.name == name)
    action = next(a for a in build_parser()._actions if flag_name(name) in a.option_strings)
    if action.choices:
        typed, expected = [str(list(action.choices)[-1])], list(action.choices)[-1]
    elif f.metadata['nargs'] in (2, 3):
        typed, expected = ['1'] * f.metadata['nargs'], [1] * f.metadata['nargs']
    elif name == 'model_kwargs':
        typed, expected = ['dim=8'], {'dim': 8}
    elif name in ('adv_eps',):
        typed, expected = ['8/255'], 8 / 255
    elif action.nargs == '+':
        typed, expected = ['1', '2'], [1, 2]
    else:
        kind = type(f.default) if f.default not in (None, MISSING) else (str if action.type is None else action.type)
        typed, expected = SAMPLES.get(kind, (['x'], 'x'))
        if action.type is not None and kind is str:
            typed, expected = ['7'], action.type('7')
    config = parse_config([flag_name(name), *typed])[0]
    value = getattr(config, name)
    if name == 'learn':
        expected = {'chans': 'channels', 'space': 'spatial'}.get(expected, expected)
    assert value == expected, (name, value, expected)


def test_flags_not_given_keep_the_dataclass_defaults():
    assert parse_config([])[0] == TrainConfig()
