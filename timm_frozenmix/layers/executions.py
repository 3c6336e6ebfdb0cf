""" The three executions of a separable convolution, which compute the same function

- 'fused': one dense convolution whose weight is composed from the two factors on the fly;
- 'unfused': depthwise then pointwise, through a `depth_multiplier`-times wider intermediate activation;
- 'im2col': depthwise then pointwise as two matrix products on the unfolded input patches (`Im2colSeparable`),
  without conv kernels or a composed weight; ungrouped convolutions only.

`SeparableConv2d.execution` names one of them, or 'auto' for the cost model of `cost_model.py`.
"""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_frozenmix.core.errors import UsageError

__all__ = ['EXECUTIONS', 'EXECUTION_SETTINGS', 'Im2colSeparable', 'explicit_padding', 'parse_execution']

EXECUTIONS = ('fused', 'unfused', 'im2col')
EXECUTION_SETTINGS = ('auto',) + EXECUTIONS


def parse_execution(value: str) -> str:
    """`value` checked against EXECUTION_SETTINGS; raises UsageError naming the choices."""
    if value not in EXECUTION_SETTINGS:
        raise UsageError(f'execution {value!r}: choose one of {", ".join(EXECUTION_SETTINGS)}')
    return value


def explicit_padding(conv: nn.Conv2d) -> List[int]:
    """F.pad amounts (left, right, top, bottom) equal to `conv`'s own padding, 'same' and 'valid' included."""
    if conv.padding == 'valid':
        return [0, 0, 0, 0]
    if conv.padding == 'same':  # as torch pads it: the odd pixel goes right / bottom
        pads = []
        for dilation, kernel in zip(reversed(conv.dilation), reversed(conv.kernel_size)):
            total = dilation * (kernel - 1)
            pads += [total // 2, total - total // 2]
        return pads
    ph, pw = conv.padding
    return [pw, pw, ph, ph]


class Im2colSeparable(torch.autograd.Function):
    """Depthwise then pointwise (groups=1) as matrix products on the unfolded input (im2col), no conv kernels.

    Per input channel i the depthwise bank D_i (d, kh * kw) multiplies that channel's patches (kh * kw, N * L),
    giving the d-times-wider activation Z as an (in * d, N * L) matrix; the pointwise weight (out, in * d)
    multiplies Z. Depthwise convolutions with a depth multiplier are slow kernels and composing the dense weight
    costs a weight-sized transpose, so where feature maps are small (the last stages of a ResNet) this beats
    both. `x` is saved and the patches recomputed in the backward, whose ops are all differentiable, so double
    backward works. Where only the pointwise weight learns (channel mixing, the paper's Chans mode) Z is saved
    too: the backward then needs neither the patches nor a second depthwise product, unless it builds a graph
    (double backward), where Z is recomputed from `x`. `x` comes padded as `padding` says.
    """

    @staticmethod
    def forward(ctx, x, depthwise_weight, pointwise_weight, bias, kernel_size, dilation, padding, stride):
        n, in_c, height, width = x.shape
        out_c, mid_c = pointwise_weight.shape[:2]
        kh, kw = kernel_size
        cols = unfold_columns(x, kernel_size, dilation, padding, stride).reshape(in_c, kh * kw, -1)
        z = torch.bmm(depthwise_weight.reshape(in_c, mid_c // in_c, kh * kw), cols).reshape(mid_c, -1)
        weight = pointwise_weight.reshape(out_c, mid_c)
        y = torch.mm(weight, z) if bias is None else torch.addmm(bias[:, None], weight, z)  # (out, N * L)
        out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        keep_z = ctx.needs_input_grad[2] and not ctx.needs_input_grad[1]  # Z is all the weight gradient needs
        ctx.save_for_backward(x, depthwise_weight, pointwise_weight, z if keep_z else None)
        ctx.geometry = (kernel_size, dilation, padding, stride)
        ctx.has_bias = bias is not None
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return y.reshape(out_c, n, out_h, out_w).transpose(0, 1).contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # as the input

    @staticmethod
    def backward(ctx, grad_out):
        x, depthwise_weight, pointwise_weight, z = ctx.saved_tensors
        kernel_size, dilation, padding, stride = ctx.geometry
        n, in_c = x.shape[:2]
        out_c, mid_c = pointwise_weight.shape[:2]
        k2 = kernel_size[0] * kernel_size[1]
        bank = depthwise_weight.reshape(in_c, mid_c // in_c, k2)
        weight = pointwise_weight.reshape(out_c, mid_c)
        grad_y = grad_out.transpose(0, 1).reshape(out_c, -1)  # (out, N * L)
        if torch.is_grad_enabled():  # a saved Z has no graph back to x and the depthwise weight
            z = None
        recompute_z = ctx.needs_input_grad[2] and z is None
        cols = (unfold_columns(x, kernel_size, dilation, padding, stride).reshape(in_c, k2, -1)
                if recompute_z or ctx.needs_input_grad[1] else None)
        grad_x = grad_dw = grad_pw = grad_bias = None
        if ctx.needs_input_grad[2]:
            if recompute_z:
                z = torch.bmm(bank, cols).reshape(mid_c, -1)
            grad_pw = torch.mm(grad_y, z.t()).reshape(pointwise_weight.shape)
            del z
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_z = torch.mm(weight.t(), grad_y).reshape(in_c, mid_c // in_c, -1)
            if ctx.needs_input_grad[1]:
                grad_dw = torch.bmm(grad_z, cols.transpose(1, 2)).reshape(depthwise_weight.shape)
            if ctx.needs_input_grad[0]:
                grad_cols = torch.bmm(bank.transpose(1, 2), grad_z).reshape(in_c * k2, n, -1).transpose(0, 1)
                grad_x = F.fold(grad_cols, x.shape[-2:], kernel_size, dilation=dilation, padding=padding,
                                stride=stride)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_dw, grad_pw, grad_bias, None, None, None, None


def unfold_columns(x, kernel_size, dilation, padding, stride) -> torch.Tensor:
    """The input's patches as one (in * kh * kw, N * L) matrix, L output pixels per image."""
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # (N, in * k^2, L)
    return cols.transpose(0, 1).reshape(cols.shape[1], -1)


