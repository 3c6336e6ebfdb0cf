"""The CUDA paths, on a CUDA device: executions agree there, layers time them with CUDA events, train.py trains
with AMP, compiled (with and without CUDA graphs) and under torchrun (NCCL), the attacks run there, and the
shipped weights compute there what they compute on the CPU.

Skipped where torch sees no GPU; `python -m pytest tests/test_cuda.py` runs them on one.
"""
import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import timm_frozenmix  # noqa: F401  registers the models
from timm_frozenmix import SeparableConv2d
from timm_frozenmix.cli.eval_robust import main as eval_robust_main
from timm_frozenmix.cli.train import main as train_main
from timm_frozenmix.data.datasets import create_dataset
from timm_frozenmix.models.pretrained import TAG
from timm_frozenmix.layers.executions import EXECUTIONS
from timm_frozenmix.layers.tuning import TUNE_REPEATS, candidate_executions, tune_executions
from timm_frozenmix.layers.timing import StepTimer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
REPO = Path(__file__).resolve().parents[1]
TINY = ['--model', 'sep_resnet20_cifar_chans', '--model-kwargs', 'layers=[1,1,1]', '--train-split', 'train[:512]',
        '-j', '0', '--epochs', '1', '--log-interval', '1000', '--device', 'cuda']


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 rounds float32 products to 10 mantissa bits: off, so executions compare at float32 tolerance."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize('conv', [nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                  nn.Conv2d(16, 32, 5, padding=2), nn.Conv2d(16, 32, 3, padding=1, groups=4)],
                         ids=['3x3', '3x3_stride2', '5x5', 'grouped'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_every_execution_agrees_with_the_cpu_on_cuda(conv, channels_last):
    cpu = SeparableConv2d.from_conv(conv, depth_multiplier=9, learn='channels')
    gpu = SeparableConv2d.from_conv(conv, depth_multiplier=9, learn='channels').cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(4, 16, 12, 12)
    expected = cpu.execute('fused', x)
    expected.sum().backward()
    for execution in EXECUTIONS if cpu.groups == 1 else ('fused', 'unfused'):
        gpu.zero_grad(set_to_none=True)
        xg = x.cuda()
        out = gpu.execute(execution, xg.contiguous(memory_format=torch.channels_last) if channels_last else xg)
        out.sum().backward()
        torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(gpu.pointwise.weight.grad.cpu(), cpu.pointwise.weight.grad, atol=1e-3, rtol=1e-4)


def test_tuning_times_every_candidate_with_cuda_events_and_fixes_the_fastest(monkeypatch):
    model = nn.Sequential(SeparableConv2d(64, 64, 3, padding=1)).cuda()
    x = torch.randn(2, 64, 4, 4, device='cuda')  # a last-stage map: all three are worth timing off the CPU
    assert candidate_executions(model[0], x) == EXECUTIONS
    timed = []
    real_call = StepTimer.__call__
    monkeypatch.setattr(StepTimer, '__call__', lambda timer, step: timed.append(timer.device.type) or real_call(
        timer, step))
    chosen = tune_executions(model, x)
    assert timed and set(timed) == {'cuda'} and len(timed) == len(EXECUTIONS) * TUNE_REPEATS
    assert chosen == {'0': model[0].execution} and model[0].execution in EXECUTIONS
    torch.testing.assert_close(model(x), model[0].execute('fused', x), atol=1e-4, rtol=1e-4)


def test_under_autocast_the_executions_agree_at_bfloat16_precision():
    layer = SeparableConv2d.from_conv(nn.Conv2d(32, 32, 3, padding=1), learn='channels').cuda()
    x = torch.randn(8, 32, 16, 16, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        fused, unfused, chosen = layer.execute('fused', x), layer.execute('unfused', x), layer(x)
        im2col = layer.execute('im2col', x)
    assert fused.dtype == unfused.dtype == chosen.dtype == im2col.dtype == torch.bfloat16
    torch.testing.assert_close(unfused.float(), fused.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(im2col.float(), fused.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(chosen.float(), fused.float(), atol=0.05, rtol=0.02)


def test_the_step_timer_waits_for_the_gpus_work():
    a = torch.randn(4096, 4096, device='cuda')

    def step():
        for _ in range(20):
            a @ a
    step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    torch.cuda.synchronize()
    synchronized = time.perf_counter() - start
    timed = StepTimer(torch.device('cuda'))(step)
    assert 0.5 * synchronized < timed < 2 * synchronized


def test_train_py_trains_with_amp_and_channels_last_on_cuda(tmp_path):
    train_main(['--output', str(tmp_path), '--experiment', 'amp', *TINY, '--amp', '--amp-dtype', 'bfloat16',
                '--channels-last'])
    checkpoint = torch.load(tmp_path / 'amp' / 'last.pth.tar', map_location='cpu', weights_only=False)
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values() if v.is_floating_point())
    assert (tmp_path / 'amp' / 'model.safetensors').is_file()


@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
def test_train_py_trains_compiled_on_cuda(tmp_path, mode):
    train_main(['--output', str(tmp_path), '--experiment', mode, *TINY, '--amp', '--amp-dtype', 'bfloat16',
                '--channels-last', '--torchcompile', '--torchcompile-mode', mode])
    with open(tmp_path / mode / 'summary.csv') as f:
        (row,) = list(csv.DictReader(f))
    assert math.isfinite(float(row['train_loss'])) and math.isfinite(float(row['eval_loss']))


def test_torchrun_trains_on_cuda_with_nccl(tmp_path):
    """One process per GPU (here one): DDP over NCCL, and each layer's autotune all_reduce on the device."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
           str(REPO / 'train.py'), '--output', str(tmp_path), '--experiment', 'ddp', *TINY]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'ddp' / 'model_best.pth.tar').is_file()


def test_the_shipped_weights_compute_on_cuda_what_they_compute_on_the_cpu():
    name = f'convmixer_128_4_ks5_p2_chans.{TAG}'
    model = timm.create_model(name, pretrained=True).eval()
    test = create_dataset('fashion-mnist-sample', split='test')
    x = torch.tensor(test.images[:256]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_eval_robust_attacks_on_cuda(tmp_path):
    name = f'convmixer_128_4_ks5_p2_chans.{TAG}'
    eval_robust_main(['--model', name, '--pretrained', '--attacks', 'fgsm,pgd', '--pgd-steps', '3', '--eps', '8/255',
                      '--num-samples', '256', '-j', '0', '--device', 'cuda', '--output', str(tmp_path)])
    entry = json.loads((tmp_path / 'robust.json').read_text())['models'][name]
    assert entry['num_samples'] == 256
    assert entry['accuracy']['PGD-3'][0] <= entry['clean_accuracy']
    assert max(entry['max_perturbation']['PGD-3']) <= 8 / 255 + 1e-6
