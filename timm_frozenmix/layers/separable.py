""" Separable convolution with a depth multiplier

A k x k convolution factored into a depthwise (spatial mixing, `depth_multiplier` filters per input channel)
and a pointwise 1x1 (channel mixing) convolution, as in "Rethinking the Role of Spatial Mixing"
(https://arxiv.org/abs/2503.16760). Either factor can be frozen at its random init.

The layer computes its function by one of three executions (`executions.py`): `execution='auto'` (the
default) takes the one a fixed cost model of the input's shape picks (`cost_model.py`: deterministic, no
timing, no collective), 'fused', 'unfused' or 'im2col' force one, and `tune_executions` (`tuning.py`) times
them once, explicitly, and sets each layer's execution. `fuse()` gives the equivalent dense convolution.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame, pad_same

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.core.learn import is_learned, resolve_learn
from timm_frozenmix.core.parsing import check_depth_multiplier
from timm_frozenmix.layers.cost_model import cheapest_execution
from timm_frozenmix.layers.executions import explicit_padding, im2col_separable, parse_execution
from timm_frozenmix.layers.filters import init_spatial_

__all__ = ['SeparableConv2d', 'is_depthwise']

def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes convs in on this device type; None where it is off or has no autocast (meta)."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def is_depthwise(conv: nn.Conv2d) -> bool:
    """A conv whose every filter sees one input channel mixes space only (pure spatial mixing)."""
    return conv.groups == conv.in_channels


class SeparableConv2d(nn.Module):
    """ Depthwise (in -> in * d, k x k, groups=in, no bias) then pointwise (in * d -> out, 1x1).

    Keeps the stride, padding, dilation and padding mode of the conv it replaces on the depthwise part and
    the groups and bias on the pointwise part, so its output has the original conv's shape for any input.
    `execution` is 'auto' (the cost model's choice per input shape, `auto_execution`), or 'fused', 'unfused'
    or 'im2col' (one group only) to force one; UsageError on any other value. Both weights are nn.Conv2d's, in
    its contiguous layout (safetensors and timm's save_for_hf need it).
    """
    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: Union[int, Tuple[int, int]],
            stride: Union[int, Tuple[int, int]] = 1,
            padding: Union[int, Tuple[int, int], str] = 0,
            dilation: Union[int, Tuple[int, int]] = 1,
            groups: int = 1,
            bias: bool = True,
            padding_mode: str = 'zeros',
            depth_multiplier: int = 9,
            same_padding: bool = False,
            execution: str = 'auto',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.depth_multiplier = check_depth_multiplier(depth_multiplier)
        self.groups = groups
        self.execution = parse_execution(execution)
        if execution == 'im2col' and groups != 1:
            raise UsageError(f"execution 'im2col' needs groups=1, got groups={groups}: use 'auto' or 'fused'")
        self.same_padding = same_padding
        # plain attributes, like nn.Conv2d's, so TorchScript and code that reads conv shapes see them
        self.in_channels = in_channels
        self.out_channels = out_channels
        mid_channels = in_channels * depth_multiplier
        if same_padding:
            # timm's TF-style dynamic 'SAME' padding (Conv2dSame) computed from the input size
            self.depthwise = Conv2dSame(
                in_channels, mid_channels, kernel_size, stride=stride, dilation=dilation,
                groups=in_channels, bias=False, **dd)
        else:
            self.depthwise = nn.Conv2d(
                in_channels, mid_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                groups=in_channels, bias=False, padding_mode=padding_mode, **dd)
        self.pointwise = nn.Conv2d(mid_channels, out_channels, 1, groups=groups, bias=bias, **dd)
        dw = self.depthwise
        self.kernel_size: Tuple[int, int] = dw.kernel_size
        self.stride: Tuple[int, int] = dw.stride
        self.dilation: Tuple[int, int] = dw.dilation
        self.padding_mode = padding_mode
        # how the fused conv pads: timm's dynamic SAME, an explicit pad first ('same' strings, non-zero modes),
        # or the conv's own zero padding
        self.pad_first = not same_padding and (padding_mode != 'zeros' or isinstance(padding, str))
        self.explicit_padding: List[int] = explicit_padding(dw)
        self.conv_padding: Tuple[int, int] = (0, 0) if same_padding or self.pad_first else dw.padding

    @classmethod
    def from_conv(
            cls,
            conv: nn.Conv2d,
            depth_multiplier: int = 9,
            learn: str = 'channels',
            spatial_init: str = 'random',
            smooth_sigma: float = 0.0,
    ) -> 'SeparableConv2d':
        """Build the separable counterpart of `conv` (fresh weights), initialized and frozen per `learn`."""
        sep = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            depth_multiplier=depth_multiplier,
            same_padding=isinstance(conv, Conv2dSame),
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        sep.train(conv.training)
        init_spatial_(sep.depthwise, spatial_init, smooth_sigma)
        mode = resolve_learn(learn)
        sep.depthwise.requires_grad_(is_learned('spatial', mode))
        sep.pointwise.requires_grad_(is_learned('channel', mode))
        return sep

    def auto_execution(self, x: torch.Tensor, im2col_allowed: bool = True) -> str:
        """The cost model's execution for input `x` (`cost_model.cheapest_execution`): a function of shapes,
        device type and autocast only, so every run and every rank takes the same path for the same input."""
        return cheapest_execution(
            x.shape[0], x.shape[-2], x.shape[-1], self.in_channels, self.out_channels, self.groups,
            self.kernel_size[0], self.kernel_size[1], self.stride[0], self.stride[1], self.depth_multiplier,
            x.device.type == 'cpu', im2col_allowed)

    def dense_weight(self) -> torch.Tensor:
        """W[o, i] = sum_j P[o, i * d + j] * D[i * d + j], the dense (out, in / groups, kh, kw) kernel."""
        g, d = self.groups, self.depth_multiplier
        out_c, in_c = self.out_channels, self.in_channels
        kh, kw = self.kernel_size
        if g == 1:  # per input channel D_i^T P_i, (kh * kw, out), P read transposed in place; then one transpose
            bank_t = self.depthwise.weight.reshape(in_c, d, kh * kw).transpose(1, 2)
            p = self.pointwise.weight.reshape(out_c, in_c * d).t().reshape(in_c, d, out_c)
            return torch.bmm(bank_t, p).reshape(in_c, kh, kw, out_c).permute(3, 0, 1, 2).contiguous()
        p = self.pointwise.weight.reshape(g, out_c // g, in_c // g, d)
        w = self.depthwise.weight.reshape(g, in_c // g, d, kh, kw)
        return torch.einsum('gocd,gcdhw->gochw', p, w).reshape(out_c, in_c // g, kh, kw)

    @torch.no_grad()
    def factorize_(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> float:
        """Set the pointwise weights so that `dense_weight()` equals the dense kernel `weight` (and the bias
        `bias`); returns the relative residual ||dense_weight() - weight|| / ||weight|| after the cast back.

        Eq. 3 of the paper read the other way: per input channel c, W[:, c] = P_c D_c with D_c the frozen
        d x k^2 bank, so P_c = W[:, c] pinv(D_c). Exact (up to rounding) when every D_c has rank k^2, which
        needs d >= k^2; a least-squares fit otherwise (d < k^2, e.g. a 7x7 stem with d = 9). Solved in float64
        through the pseudo-inverse and cast to the pointwise weight's dtype. Raises UsageError when `weight`
        does not have this layer's dense shape.
        """
        g, d = self.groups, self.depth_multiplier
        out_c, in_c = self.out_channels, self.in_channels
        kh, kw = self.kernel_size
        if tuple(weight.shape) != (out_c, in_c // g, kh, kw):
            raise UsageError(f'a dense kernel of shape {tuple(weight.shape)} does not fit this layer, which '
                             f'composes ({out_c}, {in_c // g}, {kh}, {kw})')
        if (bias is None) != (self.pointwise.bias is None) and bias is not None:
            raise UsageError('the dense conv has a bias but this layer has none: build it with bias=True')
        dense = weight.detach().to(torch.float64).reshape(g, out_c // g, in_c // g, kh * kw)
        bank = self.depthwise.weight.detach().to(torch.float64).reshape(g, in_c // g, d, kh * kw)
        p = torch.einsum('gock,gckd->gocd', dense, torch.linalg.pinv(bank))
        self.pointwise.weight.copy_(p.reshape(self.pointwise.weight.shape))
        if self.pointwise.bias is not None:  # no dense bias: the function has none either
            self.pointwise.bias.copy_(bias if bias is not None else torch.zeros_like(self.pointwise.bias))
        fit = self.dense_weight().to(torch.float64).reshape(dense.shape)
        return ((fit - dense).norm() / dense.norm().clamp_min(torch.finfo(torch.float64).tiny)).item()

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """`x` padded as the dense conv needs it before its own `conv_padding`."""
        if self.same_padding:  # timm's dynamic 'SAME' padding, from the input size
            return pad_same(x, self.kernel_size, self.stride, self.dilation)
        if self.pad_first:
            return F.pad(x, self.explicit_padding, mode='constant' if self.padding_mode == 'zeros' else self.padding_mode)
        return x

    def _dense_conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self._padded(x), weight, self.pointwise.bias, self.stride, self.conv_padding, self.dilation,
                        self.groups)

    @torch.jit.unused
    def _im2col(self, x: torch.Tensor) -> torch.Tensor:
        return im2col_separable(self._padded(x), self.depthwise.weight, self.pointwise.weight, self.pointwise.bias,
                                self.kernel_size, self.dilation, self.conv_padding, self.stride)

    @torch.jit.unused
    def execution_for(self, x: torch.Tensor) -> str:
        """The execution `forward` takes on `x`: the forced one, or the cost model's, which picks im2col only in
        eager mode and never under autocast: its advantage was measured in eager float32 only."""
        if self.execution != 'auto':
            return self.execution
        eager = not (torch.compiler.is_compiling() or torch.jit.is_tracing())
        return self.auto_execution(x, eager and autocast_dtype(x.device.type) is None)

    def execute(self, execution: str, x: torch.Tensor) -> torch.Tensor:
        """The layer's output on `x` by `execution`, one of EXECUTIONS (all compute the same function)."""
        if execution == 'fused':
            return self._dense_conv(x, self.dense_weight())
        if execution == 'im2col':
            return self._im2col(x)
        return self.pointwise(self.depthwise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            execution = self.auto_execution(x, False) if self.execution == 'auto' else self.execution
        else:
            execution = self.execution_for(x)
        return self.execute(execution, x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The exactly equivalent dense convolution, trainable when either factor was.

        timm's re-parameterization protocol: `timm.utils.reparameterize_model(model)` replaces every
        SeparableConv2d of a model by its `fuse()`, for inference and export.
        """
        dw = self.depthwise
        common = dict(
            stride=dw.stride, dilation=dw.dilation, groups=self.groups, bias=self.pointwise.bias is not None,
            device=dw.weight.device, dtype=dw.weight.dtype,
        )
        if self.same_padding:
            conv = Conv2dSame(self.in_channels, self.out_channels, self.kernel_size, **common)
        else:
            conv = nn.Conv2d(
                self.in_channels, self.out_channels, self.kernel_size, padding=dw.padding,
                padding_mode=dw.padding_mode, **common)
        conv.weight.copy_(self.dense_weight())
        if conv.bias is not None:
            conv.bias.copy_(self.pointwise.bias)
        conv.train(self.training)
        conv.requires_grad_(any(p.requires_grad for p in self.parameters()))
        return conv

    def extra_repr(self) -> str:
        return f'depth_multiplier={self.depth_multiplier}, execution={self.execution}'
