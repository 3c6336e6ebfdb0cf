""" Separable convolution with a depth multiplier

A k x k convolution factored into a depthwise (spatial mixing, `depth_multiplier` filters per input channel)
and a pointwise 1x1 (channel mixing) convolution, as in "Rethinking the Role of Spatial Mixing"
(https://arxiv.org/abs/2503.16760). Either factor can be frozen at its random init.

The layer can run unfused (depthwise then pointwise, a `depth_multiplier`-times wider intermediate) or
fused (one dense convolution whose weight is composed from the two factors on the fly). Both compute the
same function. Which is faster depends on the device, the dtype and the shapes, so, like cudnn's benchmark
mode, each layer times both on first use for each (device, dtype, input shape, layer shape) and caches the
winner; `TIMM_FROZENMIX_AUTOTUNE=0` (or torch's deterministic mode) replaces the timing by a fixed cost model.
`fuse()` gives the equivalent dense convolution.
"""
from typing import Dict, Final, List, Optional, Tuple, Union

import os
import statistics

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame, pad_same

from .errors import UsageError
from .filters import init_spatial_
from .learn import is_learned, resolve_learn
from .timing import StepTimer

__all__ = ['SeparableConv2d', 'is_depthwise', 'autotune_enabled', 'clear_execution_choices']

COMPOSE_COST = 4  # cost of one weight-composition MAC relative to a conv MAC, measured on CPU
AUTOTUNE_ENV = 'TIMM_FROZENMIX_AUTOTUNE'
AUTOTUNE_REPEATS = 3  # timed runs of each execution after one warm-up run; the median counts
_execution_choices: Dict[tuple, bool] = {}  # (device, dtype, shapes, layer, gradients) -> fused


def autotune_enabled() -> bool:
    """Whether layers time both executions: yes unless TIMM_FROZENMIX_AUTOTUNE=0 or torch is set deterministic."""
    return os.environ.get(AUTOTUNE_ENV, '1') != '0' and not torch.are_deterministic_algorithms_enabled()


def clear_execution_choices() -> None:
    """Forget every timed choice, so the next forward of each layer times both executions again."""
    _execution_choices.clear()


def is_depthwise(conv: nn.Conv2d) -> bool:
    """A conv whose every filter sees one input channel mixes space only (pure spatial mixing)."""
    return conv.groups == conv.in_channels


def _explicit_padding(conv: nn.Conv2d) -> List[int]:
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


class SeparableConv2d(nn.Module):
    """ Depthwise (in -> in * d, k x k, groups=in, no bias) then pointwise (in * d -> out, 1x1).

    Keeps the stride, padding, dilation and padding mode of the conv it replaces on the depthwise part and
    the groups and bias on the pointwise part, so its output has the original conv's shape for any input.
    `fused=None` picks the faster execution per input as timed on first use (`choose_execution`), or by the
    cost model (`prefers_fused`) where timing is off, under TorchScript or torch.compile; True / False force it.
    """
    compose_cost: Final[int] = COMPOSE_COST  # a module constant TorchScript can read

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
            fused: Optional[bool] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if depth_multiplier < 1:
            raise UsageError(f'depth_multiplier must be an integer >= 1, got {depth_multiplier!r}')
        self.depth_multiplier = depth_multiplier
        self.groups = groups
        self.fused = fused
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
        self.explicit_padding: List[int] = _explicit_padding(dw)
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

    def prefers_fused(self, x: torch.Tensor) -> bool:
        """The cost model: the execution with fewer multiply-accumulates for this input (deterministic).

        Per output pixel, fused costs a dense conv, (out / g) * in * k^2, and unfused a depthwise plus a
        pointwise conv, in * d * (k^2 + out / g); fused also composes its weight once per step, out / g * in
        * d * k^2, which memory-bound batched matmuls (forward and backward) make about COMPOSE_COST times
        dearer on the CPU it was measured on. With d = k^2 fused wins on large feature maps and unfused on tiny
        ones (small batch, last stage).
        """
        kh, kw = self.kernel_size
        k2, d, in_c = kh * kw, self.depth_multiplier, self.in_channels
        out_per_group = self.out_channels // self.groups
        sh, sw = self.stride
        pixels = x.shape[0] * -(-x.shape[-2] // sh) * -(-x.shape[-1] // sw)
        fused = pixels * out_per_group * in_c * k2 + self.compose_cost * out_per_group * in_c * d * k2
        unfused = pixels * in_c * d * (k2 + out_per_group)
        return fused <= unfused

    @torch.jit.unused
    def choose_execution(self, x: torch.Tensor) -> bool:
        """Fused or not for this input: the faster of the two as timed on first use, cached for the same device,
        dtype, autocast, memory format, input shape, layer shape and gradients; the cost model under torch.compile,
        tracing, or with timing off.

        In a distributed run every rank adds up all ranks' timings before deciding, so all take the same path.
        """
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or not autotune_enabled():
            return self.prefers_fused(x)
        grads = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        autocast = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        key = (str(x.device), x.dtype, autocast, x.is_contiguous(memory_format=torch.channels_last), tuple(x.shape),
               self.in_channels, self.out_channels, self.kernel_size,
               self.stride, self.dilation, self.groups, self.depth_multiplier, self.same_padding, self.pad_first,
               grads and x.requires_grad, grads and self.depthwise.weight.requires_grad,
               grads and self.pointwise.weight.requires_grad)
        if key not in _execution_choices:
            seconds = torch.tensor([self._seconds(True, x, grads), self._seconds(False, x, grads)])
            if dist.is_available() and dist.is_initialized():
                seconds = seconds.to(x.device)
                dist.all_reduce(seconds)
            _execution_choices[key] = bool(seconds[0] <= seconds[1])
        return _execution_choices[key]

    @torch.jit.unused
    def _seconds(self, fused: bool, x: torch.Tensor, grads: bool) -> float:
        """Median seconds of one execution on `x` (forward, and backward if training will need it)."""
        x = x.detach().requires_grad_(x.requires_grad)
        inputs = [p for p in self.parameters() if p.requires_grad] + ([x] if x.requires_grad else [])

        def run():
            with torch.set_grad_enabled(grads):
                out = self._dense_conv(x, self.dense_weight()) if fused else self.pointwise(self.depthwise(x))
                if grads:
                    torch.autograd.grad(out, inputs, grad_outputs=torch.ones_like(out))
        timer = StepTimer(x.device)
        run()
        return statistics.median(timer(run) for _ in range(AUTOTUNE_REPEATS))

    def dense_weight(self) -> torch.Tensor:
        """W[o, i] = sum_j P[o, i * d + j] * D[i * d + j], the dense (out, in / groups, kh, kw) kernel."""
        g, d = self.groups, self.depth_multiplier
        out_c, in_c = self.out_channels, self.in_channels
        kh, kw = self.kernel_size
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

    def _dense_conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.same_padding:  # timm's dynamic 'SAME' padding, from the input size
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        elif self.pad_first:
            x = F.pad(x, self.explicit_padding, mode='constant' if self.padding_mode == 'zeros' else self.padding_mode)
        return F.conv2d(x, weight, self.pointwise.bias, self.stride, self.conv_padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            fused = self.fused
        elif torch.jit.is_scripting():
            fused = self.prefers_fused(x)
        else:
            fused = self.choose_execution(x)
        if fused:
            return self._dense_conv(x, self.dense_weight())
        return self.pointwise(self.depthwise(x))

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
        return f'depth_multiplier={self.depth_multiplier}, fused={self.fused}'
