import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from timm_frozenmix.io.checkpoint import Checkpoint
from timm_frozenmix.models.spec import ModelSpec
from timm_frozenmix.cli.train import main, parse_config
from timm_frozenmix.training.config import TrainConfig
from timm_frozenmix.training.loop import setup, train as train_run
from timm_frozenmix.training.tasks import FGSMClassificationTask, pgd_examples


def parse_args(argv):
    """train.py's flags as the TrainConfig they describe."""
    return parse_config(argv)[0]


REPO = Path(__file__).resolve().parents[1]
TINY = ['--model', 'convmixer_128_4_ks5_p2_chans', '--model-kwargs', 'dim=16', 'depth=1',
        '-j', '0', '--epochs', '1', '--log-interval', '1000']


def train(tmp_path, *extra, experiment='run'):
    main(['--output', str(tmp_path), '--experiment', experiment, *TINY, *extra])
    return tmp_path / experiment


def summary_rows(run_dir):
    with open(run_dir / 'summary.csv') as f:
        return list(csv.DictReader(f))


def snapshot(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).rglob('*') if p.is_file()}


@pytest.mark.slow
def test_main_job_reaches_80_percent_on_the_sample(tmp_path):
    """`python train.py` with no arguments: the project's main job."""
    result = subprocess.run([sys.executable, str(REPO / 'train.py')], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = next((tmp_path / 'output' / 'train').iterdir())
    best = max(float(r['eval_top1']) for r in summary_rows(run_dir))
    assert best >= 80.0
    assert 'Train: 0 [' in result.stderr + result.stdout  # progress lines
    assert f'Output written to {run_dir}' in result.stdout and 'eval_robust.py --checkpoint' in result.stdout


def test_output_folder_layout(tmp_path):
    run_dir = train(tmp_path, '--epochs', '2')
    assert {p.name for p in run_dir.iterdir()} == {
        'args.yaml', 'summary.csv', 'last.pth.tar', 'model_best.pth.tar', 'model.safetensors'}
    assert yaml.safe_load((run_dir / 'args.yaml').read_text())['model'] == 'convmixer_128_4_ks5_p2_chans'
    assert [r['epoch'] for r in summary_rows(run_dir)] == ['0', '1']
    best = Checkpoint.load(run_dir / 'model_best.pth.tar')
    weights = load_file(run_dir / 'model.safetensors')
    assert weights.keys() == best.state_dict.keys()
    assert all(torch.equal(weights[k], best.state_dict[k]) for k in weights)
    assert best.spec.architecture == 'convmixer_128_4_ks5_p2_chans'
    assert best.state_dict['stem.0.weight'].shape[1] == 1  # in_chans followed the grayscale dataset


def test_any_timm_model_with_separate_flags(tmp_path):
    run_dir = train(tmp_path, '--model', 'resnet10t', '--model-kwargs', '--separate', '--learn', 'chans',
                    '--depth-multiplier', '4', '--spatial-init', 'same', '--smooth-sigma', '0.5',
                    '--img-size', '32')
    state = Checkpoint.load(run_dir / 'last.pth.tar').state_dict
    assert state['conv1.0.weight'].shape == (24, 1, 3, 3)  # a conv on one grayscale channel is already depthwise
    assert state['conv1.3.depthwise.weight'].shape == (24 * 4, 1, 3, 3)  # depth multiplier 4
    assert state['conv1.3.pointwise.weight'].shape[1] == 24 * 4
    blocks = state['layer1.0.conv2.depthwise.weight'].reshape(-1, 4, 3, 3)
    assert torch.equal(blocks[0], blocks[1])  # 'same' init


def test_frozen_weights_do_not_move_during_training(tmp_path):
    args = parse_args(['--output', str(tmp_path), *TINY])
    run = setup(args)
    frozen = {n: p.detach().clone() for n, p in run.model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    assert frozen and 'stem.0.weight' in frozen  # the Chans ConvMixer freezes its stem
    from timm_frozenmix.training.loop import train as train_run
    train_run(run)
    params = dict(run.model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in trainable.items())


def test_optimizer_schedule_warmup_smoothing_mixup_cutmix_clip(tmp_path):
    run_dir = train(tmp_path, '--epochs', '3', '--opt', 'sgd', '--lr', '0.05', '--momentum', '0.9',
                    '--weight-decay', '1e-4', '--sched', 'step', '--decay-epochs', '2', '--decay-rate', '0.5',
                    '--warmup-epochs', '1', '--warmup-lr', '0.001', '--smoothing', '0.2', '--mixup', '0.2',
                    '--cutmix', '1.0', '--clip-grad', '1.0')
    lrs = [float(r['lr']) for r in summary_rows(run_dir)]
    assert lrs == pytest.approx([0.001, 0.05, 0.025])
    checkpoint = Checkpoint.load(run_dir / 'last.pth.tar')
    assert 'momentum_buffer' in next(iter(checkpoint.optimizer['state'].values()))
    assert checkpoint.settings['mixup'] == 0.2 and checkpoint.settings['clip_grad'] == 1.0


def test_amp_bf16_and_channels_last_on_cpu(tmp_path):
    args = parse_args(['--output', str(tmp_path), *TINY, '--amp', '--channels-last'])
    run = setup(args)
    with run.autocast():
        out = run.net(torch.rand(2, 1, 28, 28).contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16
    assert run.model.blocks[0][1].weight.is_contiguous(memory_format=torch.channels_last)
    run_dir = train(tmp_path, '--amp', '--channels-last', experiment='amp')
    assert float(summary_rows(run_dir)[0]['eval_loss']) < 10


def test_ema_is_validated_and_exported(tmp_path):
    run_dir = train(tmp_path, '--model-ema', '--model-ema-decay', '0.9', '--epochs', '2')
    best = Checkpoint.load(run_dir / 'model_best.pth.tar')
    ema, weights = best.state_dict_ema, load_file(run_dir / 'model.safetensors')
    assert any(not torch.equal(ema[k], best.state_dict[k]) for k in ema)
    assert all(torch.equal(weights[k], ema[k]) for k in ema)


def test_resume_continues_at_the_right_epoch_with_state(tmp_path):
    run_dir = train(tmp_path, '--epochs', '2', '--model-ema')
    last = Checkpoint.load(run_dir / 'last.pth.tar')
    args = parse_args([*TINY, '--epochs', '3', '--model-ema', '--resume', str(run_dir / 'last.pth.tar')])
    run = setup(args)
    assert run.start_epoch == 2 and run.output_dir == run_dir
    state = run.optimizer.state_dict()['state']
    assert all(torch.equal(state[k]['exp_avg'], last.optimizer['state'][k]['exp_avg']) for k in state)
    assert all(torch.equal(v, last.state_dict_ema[k]) for k, v in run.ema.module.model.state_dict().items())
    main([*TINY, '--epochs', '3', '--model-ema', '--resume', str(run_dir / 'last.pth.tar')])
    assert [r['epoch'] for r in summary_rows(run_dir)] == ['0', '1', '2']
    assert Checkpoint.load(run_dir / 'last.pth.tar').epoch == 2


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    cmd = [sys.executable, str(REPO / 'train.py'), '--output', str(tmp_path), '--experiment', 'killed',
           *TINY, '--epochs', '3', '--model-kwargs', 'dim=64', 'depth=2']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / 'killed' / 'last.pth.tar'
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the second epoch
    assert proc.poll() is None, 'run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert Checkpoint.load(last).epoch == 0
    result = subprocess.run([sys.executable, str(REPO / 'train.py'), *TINY, '--epochs', '3',
                             '--model-kwargs', 'dim=64', 'depth=2', '--resume', str(last)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'Resumed from' in result.stderr and 'at epoch 1' in result.stderr
    assert [r['epoch'] for r in summary_rows(tmp_path / 'killed')] == ['0', '1', '2']


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / 'last.pth.tar'
    spec = ModelSpec('convmixer_128_4_ks5_p2_chans', in_chans=1, num_classes=10)
    Checkpoint(spec, {'w': torch.ones(2)}, epoch=0).save(path)

    def dies_half_way(obj, f):
        Path(f).write_bytes(b'half a checkpo')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        Checkpoint(spec, {'w': torch.zeros(2)}, epoch=1).save(path)
    assert Checkpoint.load(path).epoch == 0
    assert [p.name for p in tmp_path.iterdir()] == ['last.pth.tar']


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / 'ranks'
    out.mkdir()
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(REPO / 'tests' / 'ddp_worker.py'), str(out), '--output', str(tmp_path / 'train'),
           '--experiment', 'ddp', *TINY, '--epochs', '2', '--grad-accum-steps', '2']  # no_sync between batches
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (torch.load(out / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert r0['frozen'] and r0['frozen'] == r1['frozen']
    for name in r0['frozen']:
        assert torch.equal(r0['fresh'][name], r1['fresh'][name]), f'{name} differs across ranks at init'
        assert torch.equal(r0['final'][name], r0['fresh'][name]), f'{name} moved during training'
        assert torch.equal(r1['final'][name], r0['fresh'][name])
    for name in r0['trainable']:
        assert torch.equal(r0['final'][name], r1['final'][name]), f'{name} differs across ranks'
    assert any(not torch.equal(r0['final'][n], r0['fresh'][n]) for n in r0['trainable'])
    assert [p.name for p in (tmp_path / 'train').iterdir()] == ['ddp']
    assert {p.name for p in (tmp_path / 'train' / 'ddp').iterdir()} == {
        'args.yaml', 'summary.csv', 'last.pth.tar', 'model_best.pth.tar', 'model.safetensors'}
    assert len(summary_rows(tmp_path / 'train' / 'ddp')) == 2


def test_torchcompile_compiles_the_training_forward_and_keeps_checkpoints_plain(tmp_path):
    """--torchcompile as timm's train.py takes it (here dynamo's `eager` backend, which needs no compiler)."""
    config = parse_args(['--output', str(tmp_path), '--experiment', 'compiled', *TINY, '--torchcompile', 'eager'])
    run = setup(config)
    assert run.step.trainable_module is not run.net and run.step.trainable_module._orig_mod is run.net
    train_run(run)
    assert not any('_orig_mod' in key for key in load_file(tmp_path / 'compiled' / 'model.safetensors'))
    assert len(summary_rows(tmp_path / 'compiled')) == 1
    assert parse_args(['--torchcompile']).torchcompile == 'inductor'


def test_fgsm_examples_stay_in_the_eps_ball_and_in_pixel_range():
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 3)

        def forward(self, x):
            seen.append(x.detach())
            return self.lin(x.flatten(1))

    task = FGSMClassificationTask(Recorder(), eps=4 / 255, criterion_kwargs={}, verbose=False)
    x = torch.rand(5, 3, 2, 2)
    x[0] = 0.0
    x[1] = 1.0
    task(x, torch.randint(0, 3, (5,)))['loss'].backward()
    adversarial = seen[-1]
    assert (adversarial - x).abs().max() <= 4 / 255 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert not torch.equal(adversarial, x)
    assert task.trainable_module.lin.weight.grad is not None


def test_fgsm_training_runs_and_monitors_pgd_accuracy_each_epoch(tmp_path):
    run_dir = train(tmp_path, '--adv-train', 'fgsm', '--adv-eps', '8/255', '--epochs', '2')
    checkpoint = Checkpoint.load(run_dir / 'last.pth.tar')
    assert checkpoint.settings['adv_train'] == 'fgsm' and checkpoint.settings['adv_eps'] == pytest.approx(8 / 255)
    rows = summary_rows(run_dir)  # the catastrophic-overfitting monitor: PGD top-1 beside clean top-1, every epoch
    assert len(rows) == 2 and all(0 <= float(r['eval_pgd_top1']) < float(r['eval_top1']) for r in rows)
    off = train(tmp_path, '--adv-train', 'fgsm', '--adv-val-pgd-steps', '0', experiment='off')
    assert 'eval_pgd_top1' not in summary_rows(off)[0]


def test_pgd_examples_stay_in_the_ball_and_beat_a_linear_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(64, 1, 4, 4), torch.randint(0, 3, (64,))
    adversarial = pgd_examples(net, x, y, eps=0.1, steps=5)
    assert (adversarial - x).abs().max() <= 0.1 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(net(adversarial), y) > loss(net(x), y)


@pytest.mark.parametrize('mode', ['full', 'chans', 'space'])
def test_unshuffle_task(tmp_path, mode):
    run_dir = train(tmp_path, '--task', 'unshuffle', '--model', f'convmixer_128_4_p1_{mode}',
                    '--model-kwargs', 'dim=16', 'depth=1', 'kernel_size=3', '--perm-seed', '7', '--epochs', '2')
    rows = summary_rows(run_dir)
    assert len(rows) == 2 and float(rows[1]['eval_psnr']) > float(rows[0]['eval_psnr']) > 0  # logged and learning
    assert (run_dir / 'unshuffle.png').stat().st_size > 1000
    checkpoint = Checkpoint.load(run_dir / 'last.pth.tar')
    assert checkpoint.settings['perm_seed'] == 7 and checkpoint.spec.task == 'unshuffle'
    assert checkpoint.state_dict['proj.weight'].shape == (1, 16, 1, 1)


def make_folder_dataset(root, size=16, classes=3, per_class=6):
    from PIL import Image
    generator = torch.Generator().manual_seed(0)
    for split in ('train', 'validation'):
        for c in range(classes):
            folder = root / split / f'class{c}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(size, size, 3, generator=generator) * 255).byte().numpy()
                Image.fromarray(pixels).save(folder / f'{i}.png')


@pytest.mark.parametrize('classes, per_class, match', [
    (3, 0, "has no image in"),
    (1, 4, 'holds one class: a classifier needs at least 2'),
])
def test_a_folder_without_images_or_with_one_class_is_refused(tmp_path, capsys, classes, per_class, match):
    make_folder_dataset(tmp_path / 'data', classes=classes, per_class=per_class)
    with pytest.raises(SystemExit) as exc_info:
        main(['--output', str(tmp_path / 'out'), *TINY, '--dataset', 'folder', '--data-dir', str(tmp_path / 'data')])
    assert_one_line_error(capsys, exc_info, match)
    assert not (tmp_path / 'out').exists()


def test_imagenet_style_folder_passes_through_timm(tmp_path):
    make_folder_dataset(tmp_path / 'data')
    run_dir = train(tmp_path, '--dataset', 'folder', '--data-dir', str(tmp_path / 'data'), '-b', '8',
                    '--img-size', '16')
    state = Checkpoint.load(run_dir / 'last.pth.tar').state_dict
    assert state['stem.0.weight'].shape[1] == 3 and state['head.weight'].shape[0] == 3


def test_torchvision_mnist_layout_passes_through_timm(tmp_path):
    import numpy as np
    raw = tmp_path / 'data' / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (('train', 64), ('t10k', 32)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f'{prefix}-images-idx3-ubyte').write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, n, 0, 0, 0, 28, 0, 0, 0, 28])
                                                          + images.tobytes())
        (raw / f'{prefix}-labels-idx1-ubyte').write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, n]) + labels.tobytes())
    run_dir = train(tmp_path, '--dataset', 'torch/mnist', '--data-dir', str(tmp_path / 'data'), '-b', '16')
    args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    assert args['dataset'] == 'torch/mnist'
    assert Checkpoint.load(run_dir / 'last.pth.tar').data_config['mean'] == (0.1307,)


BAD_INPUTS = {
    'unknown model': (['--model', 'convmixer_9_9_nope'], "unknown model 'convmixer_9_9_nope'"),
    'unknown dataset': (['--dataset', 'torch/cifar11', '--data-dir', '/tmp'], "timm cannot make dataset 'torch/cifar11'"),
    'missing data dir': (['--dataset', 'torch/cifar10'], 'needs --data-dir'),
    'absent data dir': (['--dataset', 'folder', '--data-dir', '/no/such/dir'], 'does not exist'),
    'eps out of range': (['--adv-train', 'fgsm', '--adv-eps', '2'], '--adv-eps must lie in [0, 1]'),
    'bad smoothing': (['--smooth-sigma', '-1'], 'smooth_sigma must be >= 0'),
    'no epochs': (['--epochs', '0'], '--epochs must be >= 1, got 0'),
    'kwarg the model lacks': (['--model-kwargs', 'dim=16', 'kernel=3'], 'does not take --model-kwargs kernel'),
    'channels the data lacks': (['--in-chans', '3'], '--in-chans 3 does not fit fashion-mnist-sample'),
    'mean of the wrong length': (['--mean', '0.1', '0.2'], '--mean takes 1 or 1 values'),
    'unknown optimizer': (['--opt', 'adamz'], '--opt adamz'),
    'unknown schedule': (['--sched', 'zigzag'], "--sched zigzag: Unknown scheduler 'zigzag'"),
    'metric never measured': (['--eval-metric', 'psnr'], '--eval-metric psnr is not measured'),
    'no GPU here': (['--device', 'cuda:0'], 'asks for CUDA') if not torch.cuda.is_available() else
                   (['--device', 'gpu7'], 'is not a torch device'),
    'probability over 1': (['--hflip', '1.5'], 'probabilities in [0, 1]'),
    'nested experiment': (['--experiment', '../elsewhere'], 'must be a plain folder name'),
    'keep function of nothing': (['--keep-function', '--separate'], '--keep-function keeps what pretrained weights'),
    'keep function unseparated': (['--keep-function', '--pretrained'], 'keep_function applies to a separate'),
    'unknown split': (['--val-split', 'dev'], "unknown split 'dev'"),
    'unknown compile backend': (['--torchcompile', 'turbo'], "--torchcompile 'turbo': choose one of inductor"),
    'compile mode alone': (['--torchcompile-mode', 'reduce-overhead'], '--torchcompile-mode needs --torchcompile'),
    'kwarg without a value': (['--model-kwargs', 'width'], "--model-kwargs takes key=value pairs, got 'width'"),
    'infinite lr': (['--lr', 'inf'], '--lr must be finite, got inf'),
    'nan warmup lr': (['--warmup-lr', 'nan'], '--warmup-lr must be finite, got nan'),
    'nan min lr': (['--min-lr', 'nan'], '--min-lr must be finite'),
    'nan cutmix': (['--cutmix', 'nan'], '--cutmix must be finite'),
    'nan mean': (['--mean', 'nan'], '--mean must be finite'),
    'huge adv eps': (['--adv-eps', '1e400'], "'1e400' is not a finite number"),
    'flag of the wrong type': (['--epochs', 'x'], "argument --epochs: invalid int value: 'x' (see train.py --help)"),
}


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('done')
    train(root, '--task', 'unshuffle', '--model', 'convmixer_128_4_p1_chans', '--model-kwargs', 'dim=8',
          'depth=1', 'kernel_size=3', '--perm-seed', '3')
    return root


def assert_one_line_error(capsys, exc_info, match):
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('train.py: error: ') and match in err[-1], err


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, capsys, case):
    argv, match = BAD_INPUTS[case]
    with pytest.raises(SystemExit) as exc_info:
        main(['--output', str(tmp_path / 'out'), *TINY, *argv])
    assert_one_line_error(capsys, exc_info, match)
    assert not (tmp_path / 'out').exists()


def test_a_flag_error_is_one_line_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as exc_info:
        main(['--no-such-flag'])
    assert exc_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'train.py: error: unrecognized arguments: --no-such-flag (see train.py --help)']


def test_a_diverging_run_stops_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc_info:
        main(['--output', str(tmp_path), '--experiment', 'nan', *TINY, '--lr', '1e10', '--epochs', '3'])
    assert_one_line_error(capsys, exc_info, 'training diverged; lower --lr (now 1e+10)')
    assert not (tmp_path / 'nan' / 'last.pth.tar').exists() and not (tmp_path / 'nan' / 'summary.csv').exists()


def test_an_output_that_cannot_be_a_folder_is_refused_first(tmp_path, capsys):
    (tmp_path / 'file').write_text('mine')
    for output, match in ((tmp_path / 'file', 'is a file'), (tmp_path / 'file' / 'sub', 'lies under the file')):
        with pytest.raises(SystemExit) as exc_info:
            main(['--output', str(output), *TINY])
        assert_one_line_error(capsys, exc_info, match)
    assert [p.name for p in tmp_path.iterdir()] == ['file'] and (tmp_path / 'file').read_text() == 'mine'


def test_a_genuine_failure_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError('simulated torch failure while setting up')
    monkeypatch.setattr('timm_frozenmix.training.loop.summarize', broken)
    with pytest.raises(RuntimeError, match='simulated torch failure'):
        main(['--output', str(tmp_path), *TINY])

BAD_RESUMES = {
    'other architecture': (['--model', 'convmixer_128_8_p1_chans'], "--model 'convmixer_128_8_p1_chans' differs"),
    'perm seed': (['--perm-seed', '4'], '--perm-seed 4 differs from 3'),
    'learning rate': (['--lr', '0.1'], '--lr 0.1 differs from 0.003'),
    'spatial init': (['--spatial-init', 'box'], "--spatial-init 'box' differs from None"),
    'model kwargs': (['--model-kwargs', 'dim=8', 'depth=2', 'kernel_size=3'], '--model-kwargs'),
    'learn mode': (['--learn', 'full'], "--learn 'full' differs from None"),
    'optimizer': (['--opt', 'sgd'], "--opt 'sgd' differs from 'adamw'"),
    'corrupt': ([], 'corrupt or not a checkpoint'),
}


@pytest.mark.parametrize('case', BAD_RESUMES)
def test_resume_refuses_what_it_cannot_honour_and_leaves_the_run_folder_alone(finished_run, tmp_path, capsys, case):
    """Resuming continues the recorded run: a flag that changes what is learned is refused by name."""
    before = snapshot(finished_run)
    resume = finished_run / 'run' / 'last.pth.tar'
    argv, match = BAD_RESUMES[case]
    if case == 'corrupt':
        resume = tmp_path / 'broken.pth.tar'
        resume.write_bytes(b'\x80\x02garbage')
    with pytest.raises(SystemExit) as exc_info:
        main([*argv, '--resume', str(resume)])
    assert_one_line_error(capsys, exc_info, match)
    assert snapshot(finished_run) == before


def test_a_library_resume_with_changed_settings_is_refused(finished_run):
    from timm_frozenmix.core.errors import UsageError
    config = Checkpoint.load(finished_run / 'run' / 'last.pth.tar').settings
    changed = TrainConfig(**{**config, 'lr': 0.5, 'resume': str(finished_run / 'run' / 'last.pth.tar')})
    with pytest.raises(UsageError, match='--lr 0.5 differs from 0.003'):
        setup(changed)


def test_resuming_a_finished_run_completes_it_and_trains_nothing(finished_run, tmp_path, caplog):
    run_dir = tmp_path / 'done'
    shutil.copytree(finished_run / 'run', run_dir)
    (run_dir / 'unshuffle.png').unlink()  # as if the run was killed after its last epoch's files
    before = Checkpoint.load(run_dir / 'last.pth.tar')
    with caplog.at_level('INFO'):
        main(['--resume', str(run_dir / 'last.pth.tar'), '-j', '0'])
    assert 'All 1 epochs are finished: nothing is left to train' in caplog.text
    assert (run_dir / 'unshuffle.png').is_file() and Checkpoint.load(run_dir / 'last.pth.tar').epoch == before.epoch
    assert len(summary_rows(run_dir)) == 1


def test_how_a_resumed_run_executes_and_where_its_data_lies_may_change(finished_run):
    from timm_frozenmix.training.resume import check_resume
    checkpoint = Checkpoint.load(finished_run / 'run' / 'last.pth.tar')
    check_resume(TrainConfig(**{**checkpoint.settings, 'resume': 'last.pth.tar', 'amp': True, 'epochs': 9,
                                'data_dir': '/data/elsewhere', 'workers': 0, 'channels_last': True}), checkpoint)
    assert parse_args(['--amp', '--no-amp']).amp is False  # a recorded --amp can be turned off


def test_resume_takes_the_recorded_settings_and_records_what_runs(tmp_path):
    run_dir = train(tmp_path, '--lr', '0.01', '--spatial-init', 'box', '--smoothing', '0.2')
    main(['--resume', str(run_dir / 'last.pth.tar'), '--epochs', '2', '-j', '0'])
    last = Checkpoint.load(run_dir / 'last.pth.tar')
    assert last.epoch == 1 and last.settings['epochs'] == 2
    assert last.settings['lr'] == 0.01 and last.settings['spatial_init'] == 'box' and last.settings['smoothing'] == 0.2
    assert last.spec.spatial_init == 'box' and last.spec.model_kwargs == {'dim': 16, 'depth': 1}
    assert yaml.safe_load((run_dir / 'args.yaml').read_text())['epochs'] == 2


def test_command_line_exit_code(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / 'train.py'), '--model', 'nope_model'],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "train.py: error: unknown model 'nope_model': see timm.list_models() (import timm_frozenmix first)"
    assert not (tmp_path / 'output').exists()


def test_a_config_from_python_is_checked_like_the_flags(tmp_path):
    from timm_frozenmix.core.errors import UsageError
    with pytest.raises(UsageError, match="--adv-train 'FGSM': choose one of 'none', 'fgsm'"):
        setup(TrainConfig(adv_train='FGSM', output=str(tmp_path / 'out')))
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_seeded_training_is_bit_reproducible(tmp_path):
    """Executions are chosen by a fixed cost model, not by timing: the same seed trains the same weights."""
    argv = ['--model', 'sep_resnet20_cifar_chans', '--model-kwargs', 'width=1', '-b', '4', '--epochs', '1',
            '--seed', '1', '-j', '0', '--train-split', 'train[:96]', '--val-split', 'test[:32]', '--log-interval', '99']
    for name in ('first', 'second'):
        main(['--output', str(tmp_path), '--experiment', name, *argv])
    assert (tmp_path / 'first' / 'model.safetensors').read_bytes() == \
        (tmp_path / 'second' / 'model.safetensors').read_bytes()


@pytest.mark.slow
def test_tune_executions_fixes_each_layers_choice_at_setup(tmp_path):
    config = parse_args(['--output', str(tmp_path), '--model', 'sep_resnet20_cifar_chans', '--model-kwargs',
                         'width=1', '-b', '4', '-j', '0', '--tune-executions'])
    run = setup(config)
    from timm_frozenmix import SeparableConv2d
    assert {m.execution for m in run.model.modules() if isinstance(m, SeparableConv2d)} <= {'fused', 'unfused', 'im2col'}
