""" Explicit execution tuning: time each separable layer's executions once, at setup, and fix the fastest

Timing is opt-in (train.py --tune-executions), because the fastest execution can differ between runs of one
machine and the executions round differently, so a timed choice makes seeded training differ between runs.
It is a setup step, not part of `forward`: call it on every rank of a distributed job with the same example
shape, before training; its one collective sums the timings of all ranks, so all ranks fix the same choices,
and no later forward (uneven last batches, rank-local validation) runs a collective.
"""
from typing import Dict, List, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

from timm_frozenmix.layers.executions import EXECUTIONS
from timm_frozenmix.layers.separable import SeparableConv2d
from timm_frozenmix.layers.timing import StepTimer

__all__ = ['TUNE_REPEATS', 'TUNE_MAX_EXTRA', 'candidate_executions', 'tune_executions']

TUNE_REPEATS = 5  # timed runs of each execution after one warm-up run; the fastest counts (noise only adds)
TUNE_MAX_EXTRA = 4  # executions whose extra tensor exceeds this many composed weights are not timed


def candidate_executions(layer: SeparableConv2d, x: torch.Tensor) -> Tuple[str, ...]:
    """The executions worth timing on `x`: fused always; unfused and im2col only where their extra tensor (the
    d-times-wider activation; for im2col the larger of that and the unfolded input) holds at most
    TUNE_MAX_EXTRA times the composed weight.

    Fused pays per weight element, the other two per activation element, so where activations dwarf the
    weight they lose anyway, and timing them would put that tensor on top of the forward's activations.
    im2col needs one group. On the CPU, where im2col's unfolded input is no wider than the unfused activation
    (kh * kw <= d), unfused is not timed: both compute the same depthwise output and pointwise product,
    PyTorch's CPU depthwise kernels with a depth multiplier lost to im2col at every shape measured, and their
    trial leaves kernel caches behind.
    """
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    pixels = x.shape[0] * -(-x.shape[-2] // sh) * -(-x.shape[-1] // sw)  # output pixels, all images
    budget = TUNE_MAX_EXTRA * layer.out_channels * layer.in_channels // layer.groups * kh * kw
    candidates = ['fused']
    im2col = layer.groups == 1 and pixels * layer.in_channels * max(kh * kw, layer.depth_multiplier) <= budget
    if pixels * layer.in_channels * layer.depth_multiplier <= budget and not (
            im2col and x.device.type == 'cpu' and kh * kw <= layer.depth_multiplier):
        candidates.append('unfused')
    if im2col:
        candidates.append('im2col')
    return tuple(candidates)


def execution_seconds(layer: SeparableConv2d, execution: str, x: torch.Tensor, train: bool) -> float:
    """Least seconds of one execution on `x` (forward, and backward of what is learned if `train`)."""
    x = x.detach().requires_grad_(train)  # as inside a network: the layer before wants the input gradient
    inputs = [p for p in layer.parameters() if p.requires_grad] + [x]

    def run():
        with torch.set_grad_enabled(train):
            out = layer.execute(execution, x)
            if train:
                torch.autograd.grad(out, inputs, grad_outputs=torch.ones_like(out))
    timer = StepTimer(x.device)
    run()
    return min(timer(run) for _ in range(TUNE_REPEATS))


def layer_inputs(model: nn.Module, example_input: torch.Tensor) -> List[Tuple[str, SeparableConv2d, torch.Tensor]]:
    """Each separable layer of `model` with the input it sees in one forward of `example_input` (in eval mode, so
    batch-norm statistics are left alone); layers the forward does not reach are left out."""
    seen: Dict[str, torch.Tensor] = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, SeparableConv2d)}

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0].detach())
        return hook
    hooks = [m.register_forward_pre_hook(record(name)) for name, m in layers.items()]
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        for m, mode in was_training.items():
            m.train(mode)
    return [(name, layers[name], seen[name]) for name in layers if name in seen]


def tune_executions(model: nn.Module, example_input: torch.Tensor, train: bool = True) -> Dict[str, str]:
    """Time the candidate executions of every separable layer on the input one forward of `example_input`
    gives it, set each layer's `execution` to the fastest, and return {layer name: execution}.

    `train` times forward and backward, as a training step runs them. In a distributed job every rank must
    call it, with inputs of the same shape: the timings of all ranks are summed (one all_reduce) before
    choosing, so every rank fixes the same executions. Layers not reached by the forward keep their setting.
    """
    found = layer_inputs(model, example_input)
    seconds = torch.full((len(found), len(EXECUTIONS)), float('inf'), dtype=torch.float64)
    for i, (_, layer, x) in enumerate(found):
        for execution in candidate_executions(layer, x):
            seconds[i, EXECUTIONS.index(execution)] = execution_seconds(layer, execution, x, train)
    if dist.is_available() and dist.is_initialized():
        device = example_input.device if dist.get_backend() == 'nccl' else torch.device('cpu')
        summed = seconds.to(device)
        dist.all_reduce(summed)
        seconds = summed.cpu()
    chosen = {}
    for i, (name, layer, _) in enumerate(found):
        layer.execution = EXECUTIONS[int(torch.argmin(seconds[i]))]  # the first of equals
        chosen[name] = layer.execution
    return chosen
