""" train.py flags with timm's names and timm's meaning: -c, --lr-base*, --grad-accum-steps, --sync-bn,
--checkpoint-hist, --log-wandb; and the table of the defaults that differ from timm's """
import csv
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import yaml

from timm_frozenmix.cli.train import main, parse_config
from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.training.config import TIMM_DEFAULTS, TrainConfig, learning_rate
from timm_frozenmix.training.loop import setup, sync_batchnorm, train as train_run

REPO = Path(__file__).resolve().parents[1]
TINY = ['--model', 'convmixer_128_4_ks5_p2_chans', '--model-kwargs', 'dim=16', 'depth=1', '-j', '0',
        '--log-interval', '1000', '--train-split', 'train[:128]']


def config(*argv) -> TrainConfig:
    return parse_config(list(argv))[0]


@pytest.mark.parametrize('argv, world_size, expected', [
    ([], 1, 3e-3),  # the default run: AdamW, batch 128, one process
    (['-b', '32'], 1, 3e-3 * 0.5),  # adaptive optimizers scale by the square root of the batch ratio
    (['-b', '32', '--grad-accum-steps', '2'], 4, 3e-3 * 2 ** 0.5),  # the global batch: 32 x 4 ranks x 2 steps
    (['--opt', 'sgd', '--lr-base', '0.1', '--lr-base-size', '256'], 1, 0.05),  # linear for SGD
    (['-b', '32', '--lr-base-scale', 'linear'], 1, 3e-3 / 4),
    (['-b', '32', '--lr', '0.5'], 8, 0.5),  # --lr given: used as it is
])
def test_lr_follows_timms_rule_when_not_given(argv, world_size, expected):
    assert learning_rate(config(*argv), world_size) == pytest.approx(expected)


def test_the_run_records_and_uses_the_rate_it_resolved(tmp_path):
    run = setup(config('--output', str(tmp_path), '--experiment', 'r', *TINY, '-b', '32', '--epochs', '1'))
    assert run.config.lr == pytest.approx(1.5e-3) and run.optimizer.param_groups[0]['lr'] == pytest.approx(1.5e-3)


def final_weights(tmp_path, name, *argv):
    """A model without BatchNorm (so batch size alone does not change the function), plain SGD at a constant
    rate: the updates depend on the summed gradients only."""
    main(['--output', str(tmp_path), '--experiment', name, '--model', 'vit_tiny_patch16_224', '--model-kwargs',
          'img_size=28', 'patch_size=7', 'depth=1', 'embed_dim=32', 'num_heads=2', '-j', '0', '--epochs', '1',
          '--train-split', 'train[:64]', '--val-split', 'validation[:16]', '--no-aug', '--opt', 'sgd',
          '--weight-decay', '0', '--lr', '0.1', '--sched', 'step', '--smoothing', '0',
          '--log-interval', '1000', *argv])
    return torch.load(tmp_path / name / 'last.pth.tar', weights_only=False)['state_dict']


def test_two_accumulated_batches_of_8_update_as_one_batch_of_16(tmp_path):
    one = final_weights(tmp_path, 'b16', '-b', '16')
    two = final_weights(tmp_path, 'b8x2', '-b', '8', '--grad-accum-steps', '2')
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    plain = final_weights(tmp_path, 'b8', '-b', '8')
    assert any(not torch.allclose(plain[k], one[k], atol=1e-5) for k in one)  # twice the updates: another result


def test_accumulation_makes_one_update_per_n_batches_and_one_for_the_rest(tmp_path, monkeypatch):
    run = setup(config('--output', str(tmp_path), '--experiment', 'r', *TINY, '-b', '16', '--epochs', '1',
                       '--grad-accum-steps', '3'))  # 128 images: 8 batches, updates after 3, 6 and 8
    steps = []
    original = run.optimizer.step
    monkeypatch.setattr(run.optimizer, 'step', lambda *a, **k: (steps.append(1), original(*a, **k))[1])
    train_run(run)
    assert len(run.loader_train) == 8 and len(steps) == 3


def test_sync_bn_in_one_process_leaves_batchnorm_as_it_is(tmp_path, caplog):
    run = setup(config('--output', str(tmp_path), '--experiment', 'r', *TINY, '--epochs', '1', '--sync-bn'))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in run.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in run.model.modules())


def test_checkpoint_hist_keeps_the_n_best_epochs(tmp_path):
    main(['--output', str(tmp_path), '--experiment', 'h', *TINY, '--epochs', '4', '--checkpoint-hist', '2'])
    with open(tmp_path / 'h' / 'summary.csv') as f:
        top1 = {int(row['epoch']): float(row['eval_top1']) for row in csv.DictReader(f)}
    best = sorted(top1, key=lambda e: (top1[e], e), reverse=True)[:2]
    kept = sorted(p.name for p in (tmp_path / 'h').glob('checkpoint-*.pth.tar'))
    assert kept == sorted(f'checkpoint-{e}.pth.tar' for e in best)
    assert torch.load(tmp_path / 'h' / kept[0], weights_only=False)['epoch'] in best


def test_log_wandb_without_wandb_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # import wandb fails, find_spec finds nothing usable
    monkeypatch.setattr('importlib.util.find_spec', lambda name, *a: None if name == 'wandb' else object())
    with pytest.raises(SystemExit) as exit_info:
        main(['--output', str(tmp_path), *TINY, '--log-wandb'])
    assert exit_info.value.code == 2 and 'pip install wandb' in capsys.readouterr().err
    assert not tmp_path.joinpath('train').exists() and not any(tmp_path.iterdir())


def test_log_wandb_logs_every_epochs_metrics(tmp_path, monkeypatch):
    calls = []
    fake = SimpleNamespace(init=lambda **kwargs: calls.append(('init', kwargs)),
                           log=lambda row: calls.append(('log', row)))
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    monkeypatch.setattr('importlib.util.find_spec', lambda name, *a: object())
    main(['--output', str(tmp_path), '--experiment', 'w', *TINY, '--epochs', '2', '--log-wandb'])
    assert calls[0][0] == 'init' and calls[0][1]['config']['log_wandb'] is True
    logged = [row for kind, row in calls if kind == 'log']
    assert [row['epoch'] for row in logged] == [0, 1] and all('eval_top1' in row and 'lr' in row for row in logged)


def test_c_reads_the_args_yaml_a_run_wrote_and_flags_beside_it_win(tmp_path):
    main(['--output', str(tmp_path), '--experiment', 'first', *TINY, '--epochs', '1', '-b', '32', '--mixup', '0.2'])
    again = config('-c', str(tmp_path / 'first' / 'args.yaml'), '--epochs', '3')
    first = TrainConfig(**yaml.safe_load((tmp_path / 'first' / 'args.yaml').read_text()))
    assert again.epochs == 3 and again.mixup == 0.2 and again.batch_size == 32 and again.lr == first.lr
    assert {k: v for k, v in vars(again).items() if k != 'epochs'} == \
        {k: v for k, v in vars(first).items() if k != 'epochs'}


def test_c_reads_a_timm_recipe_with_timms_defaults(tmp_path):
    """What a timm recipe leaves out means timm's default (SGD, its weight decay and base rate), not ours."""
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text('model: convmixer_128_4_ks5_p2_chans\nbatch_size: 64\nsmoothing: 0.2\nworker_seeding: all\n')
    c = config('-c', str(recipe))
    assert (c.opt, c.weight_decay, c.lr_base, c.lr_base_size, c.epochs, c.smoothing) == ('sgd', 2e-5, 0.1, 256, 300,
                                                                                          0.2)
    assert learning_rate(c) == pytest.approx(0.1 * 64 / 256)  # timm's linear rule for SGD


@pytest.mark.parametrize('text, message', [
    ('aug_repeats: 3\n', 'sets what this train.py does not do: aug_repeats=3'),
    ('- lr\n', 'holds a list, not a mapping'),
    ('lr: [1, \n', 'cannot be read as YAML'),
    ('opt: adamw\nlr: fast\n', "argument --lr: invalid float value: 'fast'"),
])
def test_c_with_a_bad_file_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(['-c', str(path), '--output', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and message in err[-1] and not (tmp_path / 'out').exists()


def test_the_training_page_lists_every_default_that_differs_from_timms():
    page = (REPO / 'docs' / 'training.md').read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r'^\| `--([a-z-]+)` \| ([^|]+) \|', page, re.M)}
    for name in TIMM_DEFAULTS:
        flag = name.replace('_', '-')
        assert flag in rows, f'--{flag} is missing from the defaults table'
        ours = getattr(TrainConfig(), name)
        assert rows[flag].strip() == f'`{ours}`', f'--{flag}: the table says {rows[flag]}, the default is {ours}'


def test_sync_bn_converts_batchnorm_for_distributed_cuda_runs_and_refuses_the_cpu():
    """The conversion itself (timm's convert_sync_batchnorm) needs no GPU; running SyncBatchNorm does."""
    model = timm.create_model('convmixer_128_4_ks5_p2_chans', dim=16, depth=1)
    on = config('--sync-bn')
    converted = sync_batchnorm(model, on, distributed=True, device=torch.device('cuda'))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
    with pytest.raises(UsageError, match='runs on CUDA devices, not cpu'):
        sync_batchnorm(model, on, distributed=True, device=torch.device('cpu'))
    assert sync_batchnorm(model, config(), distributed=True, device=torch.device('cuda')) is model


def test_a_resumed_run_without_checkpoint_hist_leaves_the_kept_epochs_alone(tmp_path):
    main(['--output', str(tmp_path), '--experiment', 'h', *TINY, '--epochs', '2', '--checkpoint-hist', '2'])
    kept = sorted(p.name for p in (tmp_path / 'h').glob('checkpoint-*.pth.tar'))
    main(['--resume', str(tmp_path / 'h' / 'last.pth.tar'), '--epochs', '3', '--checkpoint-hist', '0'])
    assert sorted(p.name for p in (tmp_path / 'h').glob('checkpoint-*.pth.tar')) == kept == \
        ['checkpoint-0.pth.tar', 'checkpoint-1.pth.tar']
