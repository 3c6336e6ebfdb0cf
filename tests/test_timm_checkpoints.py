"""Checkpoints written by timm's own train.py (its CheckpointSaver pickles the flags as a Namespace) load in
eval_robust.py and the Hub export, still with weights_only=True, and nothing beyond that Namespace unpickles."""
import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2
from timm.utils import CheckpointSaver

from timm_frozenmix.cli.eval_robust import main as eval_robust_main
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io import hub
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.loading import load_model


def timm_args(**overrides) -> argparse.Namespace:
    """The flags timm's train.py records, as far as they say how the model was built and fed."""
    return argparse.Namespace(**{
        'model': 'convmixer_128_4_ks5_p2_chans', 'model_kwargs': {'dim': 8, 'depth': 1}, 'num_classes': 10,
        'in_chans': 1, 'input_size': None, 'img_size': None, 'mean': None, 'std': None, 'crop_pct': None,
        'interpolation': '', 'dataset': '', 'data_dir': 'data', 'opt': 'sgd', 'lr': 0.1, 'epochs': 3, 'seed': 42,
        'batch_size': 128, **overrides})


@pytest.fixture(scope='module')
def timm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp('timm_train')
    args = timm_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10, in_chans=1, **args.model_kwargs)
    saver = CheckpointSaver(model, create_optimizer_v2(model, 'sgd', lr=0.1), args=args,
                            checkpoint_dir=str(folder), recovery_dir=str(folder))
    saver.save_checkpoint(epoch=0, metric=61.5)
    saver.save_checkpoint(epoch=1, metric=58.0)
    return folder, model


def test_a_timm_checkpoint_rebuilds_its_model_from_the_recorded_flags(timm_run):
    folder, model = timm_run
    checkpoint = Checkpoint.load(folder / 'last.pth.tar')
    assert checkpoint.spec.architecture == 'convmixer_128_4_ks5_p2_chans' and checkpoint.spec.in_chans == 1
    assert checkpoint.epoch == 1 and (checkpoint.best_metric, checkpoint.best_epoch) == (61.5, 0)
    loaded = load_model(checkpoint_path=str(folder / 'last.pth.tar'))
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))
    assert loaded.data_config['input_size'] == (1, 28, 28)


def test_eval_robust_and_the_hub_export_take_a_timm_checkpoint(timm_run, tmp_path):
    folder, model = timm_run
    eval_robust_main(['-j', '0', '--checkpoint', str(folder / 'last.pth.tar'), '--num-samples', '16',
                      '--attacks', 'fgsm', '--eps', '0,0.1', '--output', str(tmp_path / 'robust')])
    (result,) = json.loads((tmp_path / 'robust' / 'robust.json').read_text())['models'].values()
    assert result['model'] == 'convmixer_128_4_ks5_p2_chans' and result['learn'] == 'channels'
    export = hub.export(folder / 'last.pth.tar', tmp_path / 'export', 'me/from-timm')
    exported = timm.create_model(f'local-dir:{export}', pretrained=True).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(exported(x), model.eval()(x))


def test_a_pickle_holding_more_than_timms_namespace_is_refused(tmp_path):
    """weights_only stays on: a Namespace carrying another class (here a Path) does not unpickle."""
    path = tmp_path / 'last.pth.tar'
    torch.save({'state_dict': {}, 'args': timm_args(data_dir=Path('/data'))}, path)
    with pytest.raises(UsageError, match='corrupt or not a checkpoint'):
        Checkpoint.load(path)


def test_resuming_a_timm_checkpoint_in_this_train_py_is_refused_in_one_line(timm_run, capsys):
    from timm_frozenmix.cli.train import main as train_main
    folder, _ = timm_run
    with pytest.raises(SystemExit) as exc_info:
        train_main(['--resume', str(folder / 'last.pth.tar')])
    assert exc_info.value.code == 2
    assert "was written by timm's train.py" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_pooling_and_norm_flags_timms_train_py_passes_rebuild_the_model():
    data = {'state_dict': {}, 'epoch': 4, 'args': timm_args(gp='max', bn_eps=1e-3, bn_momentum=None),
            'saver': {'best_metric': 0.9, 'best_epoch': 2, 'pending': (4, 0.7)}}
    checkpoint = Checkpoint.from_dict(data)
    assert checkpoint.spec.model_kwargs == {'global_pool': 'max', 'bn_eps': 1e-3, 'dim': 8, 'depth': 1}
    assert (checkpoint.best_metric, checkpoint.best_epoch) == (0.9, 2)  # top-1: higher is better
    data['args'].eval_metric = 'loss'
    assert (Checkpoint.from_dict(data).best_metric, Checkpoint.from_dict(data).best_epoch) == (0.7, 4)
