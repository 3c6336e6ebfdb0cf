"""An epoch's files form one set: a run killed at any step of writing them resumes from files that agree."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from timm_frozenmix.cli.train import main
from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.io.run_folder import BEST, LAST, SUMMARY, WEIGHTS, RunFolder

TESTS = Path(__file__).resolve().parent
TINY = ['--model', 'convmixer_128_4_ks5_p2_chans', '--model-kwargs', 'dim=8', 'depth=1', '-j', '0',
        '--log-interval', '1000', '--train-split', 'train[:512]', '--val-split', 'test[:128]', '--lr', '0.01']


def assert_consistent(run_dir: Path) -> int:
    """last, best, the safetensors weights and summary.csv tell one story; returns last's epoch."""
    last, best = Checkpoint.load(run_dir / LAST), Checkpoint.load(run_dir / BEST)
    assert best.epoch == last.best_epoch and best.best_metric == last.best_metric
    weights = load_file(run_dir / WEIGHTS)
    assert weights.keys() == best.state_dict.keys()
    assert all(torch.equal(weights[k], best.state_dict[k]) for k in weights)
    with open(run_dir / SUMMARY) as f:
        assert [int(r['epoch']) for r in csv.DictReader(f)] == list(range(last.epoch + 1))
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith('.')], 'leftovers of an epoch'
    return last.epoch


def kill_worker(points: Path, kill_at: int, argv) -> int:
    return subprocess.run([sys.executable, str(TESTS / 'kill_worker.py'), str(points), str(kill_at), *argv],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600).returncode


@pytest.fixture(scope='module')
def first_epoch(tmp_path_factory):
    """A run that finished epoch 0 of 2, and the names of the steps its second epoch takes to commit."""
    root = tmp_path_factory.mktemp('first')
    main(['--output', str(root), '--experiment', 'run', *TINY, '--epochs', '1'])
    probe = tmp_path_factory.mktemp('probe')
    shutil.copytree(root / 'run', probe / 'run')
    assert kill_worker(probe / 'points', -1, ['--resume', str(probe / 'run' / LAST), '--epochs', '2']) == 0
    points = (probe / 'points').read_text().split('\n')[:-1]
    return root / 'run', points


def test_the_last_epoch_commits_every_file_of_the_set(first_epoch):
    _, points = first_epoch
    assert points[:3] == [f'write {LAST}', f'write {SUMMARY}', f'write {BEST}'] and 'commit' in points
    assert f'move {WEIGHTS}' in points and points[-1] == 'clean up'


@pytest.mark.slow
def test_a_kill_at_every_step_resumes_to_files_that_agree(first_epoch, tmp_path):
    """Killed at each step of committing the last epoch: the files agree, and resume completes the run."""
    run_dir, points = first_epoch
    for kill_at, point in enumerate(points):
        folder = tmp_path / f'kill{kill_at}'
        shutil.copytree(run_dir, folder)
        assert kill_worker(tmp_path / 'ignored', kill_at, ['--resume', str(folder / LAST), '--epochs', '2']) == -9
        RunFolder(folder).recover()
        epoch = assert_consistent(folder)
        assert epoch == (1 if points.index('commit') < kill_at else 0), point
        main(['--resume', str(folder / LAST), '--epochs', '2', '-j', '0'])
        assert assert_consistent(folder) == 1, point


def test_recovery_removes_what_a_kill_left_of_a_settings_write(tmp_path):
    (tmp_path / '.args.yaml.x1y2.tmp').write_text('model: half')
    (tmp_path / 'args.yaml').write_text('model: whole\n')
    RunFolder(tmp_path).recover()
    assert [p.name for p in tmp_path.iterdir()] == ['args.yaml']
