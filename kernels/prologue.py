"""The input prologue of conv2d's kernels: conv(act(x·scale[c] + shift[c]), w) without the
transformed tensor ever reaching memory. Each kernel that loads x (the GEMMs' forward and
grad-weight, the depthwise forward and grad-weight) applies, when PROLOGUE is set, to every
input tile in registers as it is loaded:

    u = (x - centre[c]) · scale[c] + shift[c],   then act(u), rounded to x's dtype,

and zeroes what lies outside x (the padding is the padding of the transformed input, as the
convolution of a materialised act(bn(x)) pads it). The per-channel vectors come from a batch
norm's statistics, [2, C] fp32 (mean, invstd) as kernels/batch_norm.py keeps them, and its affine
weight and bias: centre = mean (+ x[0, c, 0, 0] when the mean is that of x - x[0, c, 0, 0],
SHIFTED), scale = invstd · weight, shift = bias. A plain per-channel affine is the statistics
(0, 1). The rounding to x's dtype is the one a stored act(bn(x)) goes through, so a 16-bit
prologue conv multiplies exactly the operand the unfused layers would.

Cost: per element one subtract, one FMA and the activation (kernels/activation.py), on top of a
tile the kernel loads anyway; per channel block three to five vector loads (a few hundred bytes
from L2), once per program where the program's channels are fixed (grad-weight, depthwise), once
per reduction step in the GEMM forward. No bytes of its own beyond those vectors: the gain is the
tensor act(bn(x)) that is neither written, read back nor kept for backward.
"""
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from .activation import activate, activation_grad


class Prologue(NamedTuple):
    """What a kernel needs to normalise its input as it loads it: ``stats`` fp32 [2, C] (mean,
    invstd), the affine ``weight`` and ``bias`` (1-d, any stride, or None), whether the mean is
    that of x - x[0, c, 0, 0] (``shifted``: batch statistics from kernels/batch_norm.py), and the
    activation ``kind`` (kernels/activation.py; None for none) with its ``parameter``."""
    stats: torch.Tensor
    weight: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    shifted: bool
    kind: Optional[str]
    parameter: float


def arguments(prologue, fallback):
    """(pointer and stride arguments, constexprs) of the kernels' prologue parameters for
    ``prologue`` (a ``Prologue`` or None); a missing tensor points at ``fallback``."""
    if prologue is None:
        return [fallback, fallback, fallback, 0.0, 0, 0, 0], dict(PROLOGUE=False, SHIFTED=False, HAS_NORM_WEIGHT=False,
                                                               HAS_NORM_BIAS=False, KIND=None)
    weight, bias = (t if t is not None else prologue.stats for t in (prologue.weight, prologue.bias))
    return ([prologue.stats, weight, bias, float(prologue.parameter), prologue.stats.stride(0), weight.stride(0),
             bias.stride(0)],
            dict(PROLOGUE=True, SHIFTED=prologue.shifted, HAS_NORM_WEIGHT=prologue.weight is not None,
                 HAS_NORM_BIAS=prologue.bias is not None, KIND=prologue.kind))


@triton.jit
def prologue_vectors(stats_ptr, norm_weight_ptr, norm_bias_ptr, x_ptr, channels, channel_ok, stats_stride,
                     x_stride_c, norm_weight_stride, norm_bias_stride, SHIFTED: tl.constexpr,
                     HAS_NORM_WEIGHT: tl.constexpr, HAS_NORM_BIAS: tl.constexpr):
    """(centre, scale, shift), fp32, of the input channels ``channels`` (``x_ptr`` at x[0, 0, 0, 0])."""
    centre = tl.load(stats_ptr + channels, mask=channel_ok, other=0.0)
    scale = tl.load(stats_ptr + stats_stride + channels, mask=channel_ok, other=0.0)
    if SHIFTED:
        centre += tl.load(x_ptr + channels * x_stride_c, mask=channel_ok, other=0.0).to(tl.float32)
    if HAS_NORM_WEIGHT:
        scale *= tl.load(norm_weight_ptr + channels * norm_weight_stride, mask=channel_ok, other=0.0).to(tl.float32)
    if HAS_NORM_BIAS:
        shift = tl.load(norm_bias_ptr + channels * norm_bias_stride, mask=channel_ok, other=0.0).to(tl.float32)
    else:
        shift = tl.zeros_like(scale)
    return centre, scale, shift


@triton.jit
def transform(x, mask, centre, scale, shift, KIND: tl.constexpr, parameter):
    """act((x - centre)·scale + shift) of a [pixels x channels] tile (vectors along its channels),
    zero where ``mask`` is False (the padding), in x's dtype."""
    u = (x.to(tl.float32) - centre[None, :]) * scale[None, :] + shift[None, :]
    return tl.where(mask, activate(u, KIND, parameter), 0.0).to(x.dtype)


@triton.jit
def through_activation(grad, x, valid, stats_ptr, norm_weight_ptr, norm_bias_ptr, x_ptr, channels, channel_ok,
                       stats_stride, x_stride_c, norm_weight_stride, norm_bias_stride, norm_parameter,
                       SHIFTED: tl.constexpr, HAS_NORM_WEIGHT: tl.constexpr, HAS_NORM_BIAS: tl.constexpr,
                       KIND: tl.constexpr):
    """The epilogue of a kernel whose result ``grad`` is the gradient of act(bn(x)) (the input
    the prologue made): (g, g·x̂) with g = act'(u)·grad at u = bn(x) recomputed from the fp32 tile
    ``x`` of those pixels and channels, zero where not ``valid``: batch norm's backward terms,
    which the kernel sums per channel (kernels/moments.py ``store_tile_sums``)."""
    centre, scale, shift = prologue_vectors(stats_ptr, norm_weight_ptr, norm_bias_ptr, x_ptr, channels, channel_ok,
                                            stats_stride, x_stride_c, norm_weight_stride, norm_bias_stride, SHIFTED,
                                            HAS_NORM_WEIGHT, HAS_NORM_BIAS)
    invstd = tl.load(stats_ptr + stats_stride + channels, mask=channel_ok, other=0.0)
    centred = x - centre[None, :]
    g = tl.where(valid, activation_grad(centred * scale[None, :] + shift[None, :], grad, KIND, norm_parameter), 0.0)
    return g, g * (centred * invstd[None, :])
