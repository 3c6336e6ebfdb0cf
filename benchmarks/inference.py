""" 4. Inference: reparameterize_model(sep_resnet20_cifar_chans) vs the dense ResNet-20, batch 64 at 32x32

    python -m benchmarks.inference
"""
import timm
import torch
from timm.utils import reparameterize_model

from benchmarks._harness import PROCESSES, machine, peak_memories, ratio_row, table, timed_in_processes
from benchmarks.sep_resnet20 import BATCH, SIZE, dense_resnet_cifar

STEPS, WARMUP = 9, 3  # per process; steps: a multiple of the 3 cases


def build(case: str):
    torch.manual_seed(0)
    if case == 'dense':
        model = dense_resnet_cifar(20)
    else:
        model = timm.create_model('sep_resnet20_cifar_chans', num_classes=10)
        if case == 'reparameterized':
            model = reparameterize_model(model, inplace=True)  # timm's protocol: SeparableConv2d.fuse()
    return model, torch.randn(BATCH, 3, SIZE, SIZE)


def run() -> list:
    cases = ('dense', 'reparameterized', 'separable')
    runs = timed_in_processes(__name__, cases, False, STEPS, WARMUP)
    mib = peak_memories(__name__, cases, False)
    return [
        ratio_row('reparameterized sep_resnet20_cifar_chans vs dense ResNet-20, inference', runs, 'reparameterized',
                  'dense', mib, 1.0, measure='latency'),
        ratio_row('same, separable layers as trained (fused on the fly)', runs, 'separable', 'dense', mib),
    ]


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP} in each of {PROCESSES} '
          f'processes; {machine()}')
    print(table(run()))
