"""Checkpoints written by timm's own train.py (its CheckpointSaver pickles the flags as a Namespace) load in
eval_robust.py and the Hub export, still with weights_only=True, and nothing beyond that Namespace unpickles."""
import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2, optimizer_kwargs
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


def gray_folder_dataset(root, classes=3, per_class=6, size=16):
    """An image folder as timm's train.py reads one (train/ and validation/, a folder per class)."""
    from PIL import Image
    generator = torch.Generator().manual_seed(0)
    for split in ('train', 'validation'):
        for c in range(classes):
            (root / split / f'class{c}').mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(size, size, generator=generator) * 255).byte().numpy()
                Image.fromarray(pixels, mode='L').save(root / split / f'class{c}' / f'{i}.png')


@pytest.fixture
def timm_adamw_run(tmp_path):
    """A run of timm's train.py on a grayscale folder, as its CheckpointSaver leaves it after epoch 0: AdamW
    (not our default's settings), one update made, and the flags timm's train.py writes into args as it runs."""
    gray_folder_dataset(tmp_path / 'data')
    args = timm_args(dataset='', data_dir=str(tmp_path / 'data'), num_classes=3, input_img_mode='L', img_size=16,
                     opt='adamw', lr=0.01, weight_decay=0.05, momentum=0.9, epochs=3, batch_size=8,
                     eval_metric='top1', worker_seeding='all', world_size=1, rank=0, local_rank=0,
                     distributed=False, device='cpu', prefetcher=False)
    torch.manual_seed(123)  # not the seed our train.py would build the model with: loaded filters are timm's
    model = timm.create_model(args.model, num_classes=3, in_chans=1, **args.model_kwargs)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    model(torch.rand(8, 1, 16, 16)).logsumexp(1).mean().backward()
    optimizer.step()
    folder = tmp_path / 'timm_run'
    folder.mkdir()
    CheckpointSaver(model, optimizer, args=args, checkpoint_dir=str(folder),
                    recovery_dir=str(folder)).save_checkpoint(epoch=0, metric=40.0)
    return folder, model, tmp_path / 'out'


def snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


def test_train_py_resumes_a_timm_checkpoint_with_timms_settings_in_a_new_folder(timm_adamw_run):
    from timm_frozenmix.cli.train import main as train_main
    folder, timm_model, out = timm_adamw_run
    before = snapshot(folder)
    train_main(['--resume', str(folder / 'last.pth.tar'), '--output', str(out), '-j', '0', '--log-interval', '100'])
    assert snapshot(folder) == before  # timm's folder stays timm's
    (run_dir,) = out.iterdir()
    checkpoint = Checkpoint.load(run_dir / 'last.pth.tar')
    assert checkpoint.epoch == 2 and [row.split(',')[0] for row in
                                      (run_dir / 'summary.csv').read_text().splitlines()[1:]] == ['1', '2']
    settings = checkpoint.settings
    assert (settings['opt'], settings['lr'], settings['weight_decay'], settings['input_img_mode']) == \
        ('adamw', 0.01, 0.05, 'L')
    # the optimizer continued timm's: AdamW's step count holds timm's update and ours (2 epochs of 18 // 8 batches)
    steps = {int(state['step']) for state in checkpoint.optimizer['state'].values()}
    assert steps == {1 + 2 * (18 // 8)}
    # the frozen spatial filters are the ones timm's run drew, not ones drawn again from our seed
    frozen = [k for k, p in timm_model.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(checkpoint.state_dict[k], timm_model.state_dict()[k]) for k in frozen)


@pytest.mark.parametrize('saved, argv, message', [
    (dict(aug_repeats=3), [], "timm's train.py's checkpoint sets what this train.py does not do: aug_repeats=3"),
    ({}, ['--opt', 'sgd'], "--opt 'sgd' differs from 'adamw'"),
])
def test_resuming_a_timm_checkpoint_against_its_settings_is_one_line(timm_adamw_run, capsys, saved, argv, message):
    from timm_frozenmix.cli.train import main as train_main
    folder, _, out = timm_adamw_run
    data = torch.load(folder / 'last.pth.tar', weights_only=False)
    vars(data['args']).update(saved)
    torch.save(data, folder / 'last.pth.tar')
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exc_info:
        train_main(['--resume', str(folder / 'last.pth.tar'), '--output', str(out), '-j', '0', *argv])
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert snapshot(folder) == before and not out.exists()


def test_the_pooling_and_norm_flags_timms_train_py_passes_rebuild_the_model():
    data = {'state_dict': {}, 'epoch': 4, 'args': timm_args(gp='max', bn_eps=1e-3, bn_momentum=None),
            'saver': {'best_metric': 0.9, 'best_epoch': 2, 'pending': (4, 0.7)}}
    checkpoint = Checkpoint.from_dict(data)
    assert checkpoint.spec.model_kwargs == {'global_pool': 'max', 'bn_eps': 1e-3, 'dim': 8, 'depth': 1}
    assert (checkpoint.best_metric, checkpoint.best_epoch) == (0.9, 2)  # top-1: higher is better
    data['args'].eval_metric = 'loss'
    assert (Checkpoint.from_dict(data).best_metric, Checkpoint.from_dict(data).best_epoch) == (0.7, 4)
