""" The three executions of a separable convolution, which compute the same function

- 'fused': one dense convolution whose weight is composed from the two factors on the fly;
- 'unfused': depthwise then pointwise, through a `depth_multiplier`-times wider intermediate activation;
- 'im2col': depthwise then pointwise as two matrix products on the input's columns (`im2col_separable`),
  without conv kernels or a composed weight; ungrouped convolutions only.

`SeparableConv2d.execution` names one of them, or 'auto' for the cost model of `cost_model.py`.
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_frozenmix.core.errors import UsageError

__all__ = ['EXECUTIONS', 'EXECUTION_SETTINGS', 'explicit_padding', 'im2col_separable', 'parse_execution',
           'tap_selection']

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


def tap_selection(height: int, width: int, kernel_size, dilation, padding, stride,
                  dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """S (kh * kw, L_out, L_in): S[t, p, q] = 1 where tap t of output pixel p reads input pixel q, 0 elsewhere
    (padding included). im2col as a matrix: the unfold of the L_in one-hot images of height x width."""
    eye = torch.eye(height * width, dtype=dtype, device=device).reshape(height * width, 1, height, width)
    return F.unfold(eye, kernel_size, dilation=dilation, padding=padding, stride=stride).permute(1, 2, 0)


def im2col_separable(x: torch.Tensor, depthwise_weight: torch.Tensor, pointwise_weight: torch.Tensor,
                     bias: Optional[torch.Tensor], kernel_size, dilation, padding, stride) -> torch.Tensor:
    """Depthwise then pointwise (groups=1) as two matrix products on the input's columns, no conv kernels.

    Per input channel i a bank B_i multiplies that channel's columns C_i, giving the d-times-wider activation Z as
    an (in * d, L_out * N) matrix, and the pointwise weight (out, in * d) multiplies Z. The columns are the
    unfolded patches (kh * kw rows, B_i the depthwise bank D_i), except where the input map is so small that the
    patch selection S (`tap_selection`) folded into the bank, B_i = D_i S (d * L_out rows, L_in columns), is no
    larger than the patches it replaces (d * L_in <= kh * kw * N, the last stages of a ResNet): then the
    columns are the input pixels themselves, and neither an unfold nor its backward, a fold, runs. Depthwise convs
    with a depth multiplier are slow kernels and composing the dense weight costs weight-sized transposes, so on
    the smallest maps this beats both. Plain autograd ops, so double backward and autocast work. For the backward,
    autograd keeps Z where the pointwise weight learns (Chans, Full) and the columns where the bank learns (Full,
    Spatial): the unfolded patches, or on tiny maps the input itself. `x` (N, in, H, W) comes padded as `padding`
    says; the output (N, out, H_out, W_out) has the memory format of `x`.
    """
    n, in_c, height, width = x.shape
    out_c, mid_c = pointwise_weight.shape[:2]
    d, taps = mid_c // in_c, kernel_size[0] * kernel_size[1]
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
    pixels_in, pixels_out = height * width, out_h * out_w
    if d * pixels_in <= taps * n:
        selection = tap_selection(height, width, kernel_size, dilation, padding, stride, x.dtype, x.device)
        bank = torch.mm(depthwise_weight.reshape(mid_c, taps), selection.reshape(taps, pixels_out * pixels_in))
        bank = bank.reshape(in_c, d * pixels_out, pixels_in)
        columns = x.reshape(n, in_c, pixels_in).permute(1, 2, 0)  # (in, L_in, N)
    else:
        bank = depthwise_weight.reshape(in_c, d, taps)
        patches = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # (N, in * k^2, L)
        columns = patches.reshape(n, in_c, taps, pixels_out).permute(1, 2, 3, 0).reshape(in_c, taps, -1)
    z = torch.bmm(bank, columns).reshape(mid_c, pixels_out * n)  # columns ordered (output pixel, image)
    weight = pointwise_weight.reshape(out_c, mid_c)
    y = torch.mm(weight, z) if bias is None else torch.addmm(bias[:, None], weight, z)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return y.reshape(out_c, out_h, out_w, n).permute(3, 0, 1, 2).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
