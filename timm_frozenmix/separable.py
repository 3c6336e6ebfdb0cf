""" Separable convolution with a depth multiplier

A k x k convolution factored into a depthwise (spatial mixing, `depth_multiplier` filters per input channel)
and a pointwise 1x1 (channel mixing) convolution, as in "Rethinking the Role of Spatial Mixing"
(https://arxiv.org/abs/2503.16760). Either factor can be frozen at its random init.

The layer has three executions that compute the same function:
- 'unfused': depthwise then pointwise, through a `depth_multiplier`-times wider intermediate activation;
- 'fused': one dense convolution whose weight is composed from the two factors on the fly;
- 'im2col': depthwise then pointwise as two matrix products on the unfolded input patches, without conv
  kernels or a composed weight. It pays off where weights are large and feature maps small (the last stages
  of a ResNet); ungrouped convolutions only.
Which is fastest depends on the device, the dtype and the shapes, so, like cudnn's benchmark mode, each layer
times them on first use for each (device, dtype, input shape, layer shape) and caches the winner;
`TIMM_FROZENMIX_AUTOTUNE=0` (or torch's deterministic mode) replaces the timing by a fixed cost model that
picks fused or unfused. `fuse()` gives the equivalent dense convolution.
"""
from typing import Dict, Final, List, Optional, Tuple, Union

import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame, pad_same

from .errors import UsageError
from .filters import init_spatial_
from .learn import is_learned, resolve_learn
from .timing import StepTimer

__all__ = ['SeparableConv2d', 'is_depthwise', 'autotune_enabled', 'clear_execution_choices', 'EXECUTIONS']

COMPOSE_COST = 4  # cost of one weight-composition MAC relative to a conv MAC, measured on CPU
AUTOTUNE_ENV = 'TIMM_FROZENMIX_AUTOTUNE'
AUTOTUNE_REPEATS = 5  # timed runs of each execution after one warm-up run; the fastest counts (noise only adds)
AUTOTUNE_MAX_EXTRA = 4  # executions whose extra tensor exceeds this many composed weights are not timed
EXECUTIONS = ('fused', 'unfused', 'im2col')
_execution_choices: Dict[tuple, str] = {}  # (device, dtype, shapes, layer, gradients) -> one of EXECUTIONS


def autotune_enabled() -> bool:
    """Whether layers time both executions: yes unless TIMM_FROZENMIX_AUTOTUNE=0 or torch is set deterministic."""
    return os.environ.get(AUTOTUNE_ENV, '1') != '0' and not torch.are_deterministic_algorithms_enabled()


def clear_execution_choices() -> None:
    """Forget every timed choice, so the next forward of each layer times both executions again."""
    _execution_choices.clear()


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes convs in on this device type; None where it is off or has no autocast (meta)."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _out_fastest(weight: torch.Tensor) -> torch.Tensor:
    """A copy of a (out, in, 1, 1) weight with the same values whose output channel varies fastest in memory."""
    return weight.reshape(weight.shape[0], -1).t().contiguous().t().reshape(weight.shape)


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


class _Im2col(torch.autograd.Function):
    """Depthwise then pointwise (groups=1) as matrix products on the unfolded input (im2col), no conv kernels.

    Per input channel i the depthwise bank D_i (d, kh * kw) multiplies that channel's patches (kh * kw, N * L),
    giving the d-times-wider activation Z as an (in * d, N * L) matrix; the pointwise weight (out, in * d)
    multiplies Z. Depthwise convolutions with a depth multiplier are slow kernels and composing the dense weight
    costs a weight-sized transpose, so where feature maps are small (the last stages of a ResNet) this beats
    both. Only `x` is saved: the patches and Z are recomputed in the backward, whose ops are all differentiable,
    so double backward works. `x` comes padded as `padding` says.
    """

    @staticmethod
    def forward(ctx, x, depthwise_weight, pointwise_weight, bias, kernel_size, dilation, padding, stride):
        n, in_c, height, width = x.shape
        out_c, mid_c = pointwise_weight.shape[:2]
        kh, kw = kernel_size
        cols = _unfold_columns(x, kernel_size, dilation, padding, stride).reshape(in_c, kh * kw, -1)
        z = torch.bmm(depthwise_weight.reshape(in_c, mid_c // in_c, kh * kw), cols).reshape(mid_c, -1)
        weight = pointwise_weight.reshape(out_c, mid_c)
        y = torch.mm(weight, z) if bias is None else torch.addmm(bias[:, None], weight, z)  # (out, N * L)
        out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        ctx.save_for_backward(x, depthwise_weight, pointwise_weight)
        ctx.geometry = (kernel_size, dilation, padding, stride)
        ctx.has_bias = bias is not None
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return y.reshape(out_c, n, out_h, out_w).transpose(0, 1).contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # as the input

    @staticmethod
    def backward(ctx, grad_out):
        x, depthwise_weight, pointwise_weight = ctx.saved_tensors
        kernel_size, dilation, padding, stride = ctx.geometry
        n, in_c = x.shape[:2]
        out_c, mid_c = pointwise_weight.shape[:2]
        k2 = kernel_size[0] * kernel_size[1]
        bank = depthwise_weight.reshape(in_c, mid_c // in_c, k2)
        weight = pointwise_weight.reshape(out_c, mid_c)
        grad_y = grad_out.transpose(0, 1).reshape(out_c, -1)  # (out, N * L)
        cols = _unfold_columns(x, kernel_size, dilation, padding, stride).reshape(in_c, k2, -1)
        grad_x = grad_dw = grad_pw = grad_bias = None
        if ctx.needs_input_grad[2]:
            z = torch.bmm(bank, cols).reshape(mid_c, -1)
            if weight.stride(0) == 1:  # out-fastest: (in * d, out), transposed, is the weight's own layout
                grad_pw = torch.mm(z, grad_y.t()).t().reshape(pointwise_weight.shape)
            else:
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


def _unfold_columns(x, kernel_size, dilation, padding, stride) -> torch.Tensor:
    """The input's patches as one (in * kh * kw, N * L) matrix, L output pixels per image."""
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # (N, in * k^2, L)
    return cols.transpose(0, 1).reshape(cols.shape[1], -1)


class SeparableConv2d(nn.Module):
    """ Depthwise (in -> in * d, k x k, groups=in, no bias) then pointwise (in * d -> out, 1x1).

    Keeps the stride, padding, dilation and padding mode of the conv it replaces on the depthwise part and
    the groups and bias on the pointwise part, so its output has the original conv's shape for any input.
    `fused=None` picks the fastest execution per input as timed on first use (`choose_execution`), or fused or
    unfused by the cost model (`prefers_fused`) where timing is off, under TorchScript or torch.compile; True
    forces the fused execution, False the unfused one. With groups=1 the pointwise weight is stored
    output-channel-fastest (strides (1, out, out, out)); its shape, values and state_dict entry are nn.Conv2d's.
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
        if groups == 1:  # stored out-fastest: the composition (dense_weight) reads it without a transpose
            self.pointwise.weight = nn.Parameter(_out_fastest(self.pointwise.weight.detach()))
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
    def choose_execution(self, x: torch.Tensor) -> str:
        """The execution for this input (one of EXECUTIONS): the fastest as timed on first use, cached for the same
        device, dtype, autocast, memory format, input shape, layer shape and gradients; fused or unfused by the cost
        model under torch.compile, tracing, or with timing off.

        In a distributed run every rank adds up all ranks' timings before deciding, so all take the same path.
        """
        if (torch.compiler.is_compiling() or torch.jit.is_tracing() or not autotune_enabled()
                or x.device.type == 'meta'):
            return 'fused' if self.prefers_fused(x) else 'unfused'  # meta tensors have no time to measure
        grads = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        autocast = _autocast_dtype(x.device.type)
        key = (str(x.device), x.dtype, autocast, x.is_contiguous(memory_format=torch.channels_last), tuple(x.shape),
               self.in_channels, self.out_channels, self.kernel_size,
               self.stride, self.dilation, self.groups, self.depth_multiplier, self.same_padding, self.pad_first,
               grads and x.requires_grad, grads and self.depthwise.weight.requires_grad,
               grads and self.pointwise.weight.requires_grad)
        if key not in _execution_choices:
            candidates = self.candidate_executions(x, autocast is not None)
            if len(candidates) == 1:
                _execution_choices[key] = candidates[0]
            else:
                seconds = torch.tensor([self._seconds(execution, x, grads) for execution in candidates])
                if dist.is_available() and dist.is_initialized():
                    seconds = seconds.to(x.device)
                    dist.all_reduce(seconds)
                _execution_choices[key] = candidates[int(torch.argmin(seconds))]  # the first of equals
        return _execution_choices[key]

    def candidate_executions(self, x: torch.Tensor, autocast: bool = False) -> Tuple[str, ...]:
        """The executions worth timing on `x`: fused always; unfused and im2col only where their extra tensor (the
        d-times-wider activation, the unfolded input) holds at most AUTOTUNE_MAX_EXTRA times the composed weight.

        Fused pays per weight element, the other two per activation element, so where activations dwarf the
        weight they lose anyway, and timing them would put that tensor on top of the forward's activations.
        im2col needs one group, and one dtype for input and weights (autocast casts per op). On the CPU, where
        im2col's unfolded input is no wider than the unfused activation (kh * kw <= d), unfused is not timed:
        both compute the same depthwise output and pointwise product, PyTorch's CPU depthwise kernels with a
        depth multiplier lost to im2col at every shape measured, and their trial leaves kernel caches behind.
        """
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pixels = x.shape[0] * -(-x.shape[-2] // sh) * -(-x.shape[-1] // sw)  # output pixels, all images
        budget = AUTOTUNE_MAX_EXTRA * self.out_channels * self.in_channels // self.groups * kh * kw
        candidates = ['fused']
        im2col = self.groups == 1 and not autocast and pixels * self.in_channels * kh * kw <= budget
        if pixels * self.in_channels * self.depth_multiplier <= budget and not (
                im2col and x.device.type == 'cpu' and kh * kw <= self.depth_multiplier):
            candidates.append('unfused')
        if im2col:
            candidates.append('im2col')
        return tuple(candidates)

    @torch.jit.unused
    def _seconds(self, execution: str, x: torch.Tensor, grads: bool) -> float:
        """Least seconds of one execution on `x` (forward, and backward if training will need it)."""
        x = x.detach().requires_grad_(x.requires_grad)
        inputs = [p for p in self.parameters() if p.requires_grad] + ([x] if x.requires_grad else [])

        def run():
            with torch.set_grad_enabled(grads):
                out = self._execute(execution, x)
                if grads:
                    torch.autograd.grad(out, inputs, grad_outputs=torch.ones_like(out))
        timer = StepTimer(x.device)
        run()
        return min(timer(run) for _ in range(AUTOTUNE_REPEATS))

    def dense_weight(self) -> torch.Tensor:
        """W[o, i] = sum_j P[o, i * d + j] * D[i * d + j], the dense (out, in / groups, kh, kw) kernel."""
        g, d = self.groups, self.depth_multiplier
        out_c, in_c = self.out_channels, self.in_channels
        kh, kw = self.kernel_size
        if g == 1:  # per input channel D_i^T P_i, (kh * kw, out), on the out-fastest P; then one transpose
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
        return _Im2col.apply(self._padded(x), self.depthwise.weight, self.pointwise.weight, self.pointwise.bias,
                             self.kernel_size, self.dilation, self.conv_padding, self.stride)

    def _execute(self, execution: str, x: torch.Tensor) -> torch.Tensor:
        if execution == 'fused':
            return self._dense_conv(x, self.dense_weight())
        if execution == 'im2col':
            return self._im2col(x)
        return self.pointwise(self.depthwise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            execution = 'fused' if self.fused else 'unfused'
        elif torch.jit.is_scripting():
            execution = 'fused' if self.prefers_fused(x) else 'unfused'
        else:
            execution = self.choose_execution(x)
        return self._execute(execution, x)

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
