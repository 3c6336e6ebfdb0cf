""" The default choice of a separable layer's execution: a fixed cost model of the input's shape

Deterministic by design: the same shapes on the same device type always take the same execution, so seeded
training is bit-reproducible and every rank of a distributed job decides alone, with no collective. The
constants were measured on a 2-core x86_64 CPU with torch 2.14 (`benchmarks/`); `tune_executions` times the
executions instead, explicitly, where the measured speed matters more than the cost model's.
"""

__all__ = ['COMPOSE_COST', 'DEPTHWISE_CPU_COST', 'IM2COL_MAX_EXTRA', 'IM2COL_MAX_PIXELS', 'cheapest_execution']

COMPOSE_COST = 4  # one weight-composition multiply-accumulate against one conv MAC, measured on the CPU
DEPTHWISE_CPU_COST = 8  # one MAC of a depthwise conv with a depth multiplier against a dense conv MAC, CPU
IM2COL_MAX_PIXELS = 4  # im2col wins on the CPU where an image's output map has at most this many pixels
IM2COL_MAX_EXTRA = 2  # ... and the batch's output pixels are at most this many times the output channels


def cheapest_execution(batch: int, height: int, width: int, in_channels: int, out_channels: int, groups: int,
                       kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, depth_multiplier: int,
                       on_cpu: bool, im2col_allowed: bool, compose_cost: int = COMPOSE_COST,
                       depthwise_cpu_cost: int = DEPTHWISE_CPU_COST, im2col_max_pixels: int = IM2COL_MAX_PIXELS,
                       im2col_max_extra: int = IM2COL_MAX_EXTRA) -> str:
    """'fused', 'unfused' or 'im2col' for an input of (batch, in_channels, height, width).

    Per output pixel, fused costs a dense conv, (out / g) * in * k^2, and unfused a depthwise plus a pointwise
    conv, in * d * (k^2 + out / g); fused also composes its weight once per step, out / g * in * d * k^2, which
    memory-bound batched matmuls make about COMPOSE_COST times dearer. With d = k^2 fused wins on large feature
    maps and unfused on tiny ones. PyTorch's CPU depthwise kernels with a depth multiplier are slow: there each
    of their MACs counts DEPTHWISE_CPU_COST times (1.5-8.7x slower than im2col at every shape measured). On the
    CPU, im2col (one group, eager float32) beat both on output maps of at most IM2COL_MAX_PIXELS pixels per image,
    where composing and transposing the weight costs as much as the convolution (the last stage of a ResNet at
    64x64, batch 32, 512 channels: 0.95x the dense conv's forward and backward, against 1.9x fused), as long as
    the batch has at most IM2COL_MAX_EXTRA output pixels per output channel (its columns at most twice the
    composed weight): beyond, composing the weight is cheap next to the convolution and fused wins (128 channels
    at 2x2, batch 128: fused 1.06x the dense conv, im2col 1.4x). On 3x3 and 4x4 maps the two were close, each
    winning at some shapes.

    The constants come in as defaults so that TorchScript, which reads no module globals, compiles it too.
    """
    out_h, out_w = -(-height // stride_h), -(-width // stride_w)
    k2, out_per_group = kernel_h * kernel_w, out_channels // groups
    pixels = batch * out_h * out_w
    if (on_cpu and im2col_allowed and groups == 1 and out_h * out_w <= im2col_max_pixels
            and pixels <= im2col_max_extra * out_channels):
        return 'im2col'
    weight = out_per_group * in_channels * k2
    fused = pixels * weight + compose_cost * weight * depth_multiplier
    depthwise_cost = depthwise_cpu_cost if on_cpu else 1
    unfused = pixels * in_channels * depth_multiplier * (depthwise_cost * k2 + out_per_group)
    return 'fused' if fused <= unfused else 'unfused'
