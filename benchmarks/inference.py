""" 4. Inference: reparameterize_model(sep_resnet20_cifar_chans) vs the dense ResNet-20, batch 64 at 32x32

    python -m benchmarks.inference
"""
import timm
import torch
from timm.utils import reparameterize_model

from timm_frozenmix.evaluation.step_time import time_interleaved_samples
from benchmarks._harness import machine, peak_memory, ratio_row, table
from benchmarks.sep_resnet20 import BATCH, SIZE, dense_resnet_cifar

STEPS, WARMUP = 21, 3


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
    seconds = time_interleaved_samples({c: build(c) for c in cases}, False, STEPS, WARMUP)
    mib = {c: peak_memory(__name__, c, False) for c in cases}
    return [
        ratio_row('reparameterized sep_resnet20_cifar_chans vs dense ResNet-20, inference', seconds['reparameterized'],
                  seconds['dense'], mib['reparameterized'], mib['dense'], '<= 1.0x latency'),
        ratio_row('same, separable layers as trained (fused on the fly)', seconds['separable'], seconds['dense'],
                  mib['separable'], mib['dense'], '-'),
    ]


if __name__ == '__main__':
    print(f'Batch {BATCH} at {SIZE}x{SIZE}, {STEPS} interleaved rounds after {WARMUP}; {machine()}')
    print(table(run()))
