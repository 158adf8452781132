"""The input prologue of conv2d's kernels (and max-pool's): conv(act(x·scale[c] + shift[c]), w)
without the transformed tensor ever reaching memory. Each kernel that loads x (the GEMMs' forward
and grad-weight, the depthwise forward and grad-weight, max-pool's forward) applies, when PROLOGUE
is set, to every input tile in registers as it is loaded:

    u = (x - centre[c]) · scale[c] + shift[c],   then act(u), rounded to x's dtype,

and zeroes what lies outside x (the padding is the padding of the transformed input, as the
convolution of a materialised act(bn(x)) pads it). The rounding to x's dtype is the one a stored
act(bn(x)) goes through, so a 16-bit prologue conv multiplies the operand the unfused layers would.

The per-channel vectors are rows of a batch norm's statistics, fp32 [STATISTICS_ROWS, C], which
kernels/batch_norm.py's finalize writes in the launch that turns the batch's (or the running)
statistics into (mean, invstd), from its affine weight and bias:

    row 0 mean (of x - x[0, c, 0, 0] for batch statistics)    row 1 invstd
    row 2 scale = invstd·weight    row 3 shift = bias    row 4 centre = the mean of x itself
    row 5 shift - centre·scale (the shift a 16-bit x takes: one FMA per element, see below)

so a kernel loads two vectors (16-bit x) or three (fp32) and does no arithmetic on them. A plain
per-channel affine (conv2d's input_scale, input_shift) is ``affine_statistics``.

Cost: per element of a 16-bit x one conversion, one FMA with the padding's select on its addend,
the activation (relu is folded into the conversion back by ptxas), half a conversion; fp32 x one
subtraction more. Per channel block two or three vector loads (a few hundred bytes from L2), once
per program where the program's channels are fixed (grad-weight, depthwise), once per reduction
step in the GEMM forward. No bytes of its own beyond those vectors: the gain is the tensor
act(bn(x)) that is neither written, read back nor kept for backward.
"""
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from .activation import activate, activation_grad

# Rows of the statistics tensor (see above); batch norm's own passes read rows 0 and 1. The
# kernels read them as constexprs (a plain global does not compile).
STATISTICS_ROWS = 6
MEAN, INVSTD, SCALE, SHIFT, CENTRE, FOLDED_SHIFT = range(STATISTICS_ROWS)
INVSTD_ROW, SCALE_ROW, SHIFT_ROW, CENTRE_ROW, FOLDED_SHIFT_ROW = (
    tl.constexpr(row) for row in (INVSTD, SCALE, SHIFT, CENTRE, FOLDED_SHIFT))


class Prologue(NamedTuple):
    """What a kernel needs to normalise its input as it loads it: ``stats``, fp32
    [STATISTICS_ROWS, C] with the rows above (kernels/batch_norm.py's ``statistics``, or
    ``affine_statistics``), and the activation ``kind`` (kernels/activation.py; None for none)
    with its ``parameter``."""
    stats: torch.Tensor
    kind: Optional[str]
    parameter: float


def affine_statistics(channels, scale, shift, device):
    """The statistics rows under which the prologue is the plain affine x·scale + shift (mean 0,
    invstd 1, centre 0); ``scale`` and ``shift`` are C-element tensors or None."""
    stats = torch.zeros((STATISTICS_ROWS, channels), dtype=torch.float32, device=device)
    stats[INVSTD] = 1.0
    stats[SCALE] = 1.0 if scale is None else scale.detach().reshape(-1).float()
    if shift is not None:
        stats[SHIFT] = shift.detach().reshape(-1).float()
        stats[FOLDED_SHIFT] = stats[SHIFT]
    return stats


def epilogue_arguments(epilogue, fallback):
    """The parameters of a grad-input kernel's batch-norm epilogue (kernels/conv2d_gemm.py,
    conv2d_depthwise.py, max_pool.py), for ``epilogue`` = (x, prologue, sums) or None: (x, its
    four strides, the prologue's ``arguments`` and sums, in that order; the EPILOGUE and KIND
    constexprs; x; sums), tensors absent without an epilogue pointing at ``fallback``."""
    x, prologue, sums = epilogue if epilogue is not None else (fallback, None, fallback)
    normalise, flags = arguments(prologue, x)
    return [x, *x.stride(), *normalise, sums], dict(EPILOGUE=flags["PROLOGUE"], KIND=flags["KIND"]), x, sums


def arguments(prologue, fallback):
    """(pointer and scalar arguments, constexprs) of the kernels' prologue parameters for
    ``prologue`` (a ``Prologue`` or None); without one the pointer is ``fallback``."""
    if prologue is None:
        return [fallback, 0.0, 0], dict(PROLOGUE=False, KIND=None)
    assert prologue.stats.shape[0] == STATISTICS_ROWS, prologue.stats.shape
    return [prologue.stats, float(prologue.parameter), prologue.stats.stride(0)], dict(PROLOGUE=True,
                                                                                    KIND=prologue.kind)


@triton.jit
def store_coefficients(stats_ptr, c, ok, channels, centre, invstd, weight_ptr, bias_ptr, weight_stride, bias_stride,
                       HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Rows 2 to 5 of the statistics (contiguous, [STATISTICS_ROWS, channels]) of channels ``c``
    from their ``centre`` (the mean of x) and ``invstd`` and batch norm's affine weight and bias."""
    scale = invstd
    if HAS_WEIGHT:
        scale *= tl.load(weight_ptr + c * weight_stride, mask=ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        shift = tl.load(bias_ptr + c * bias_stride, mask=ok, other=0.0).to(tl.float32)
    else:
        shift = tl.zeros_like(scale)
    tl.store(stats_ptr + SCALE_ROW * channels + c, scale, mask=ok)
    tl.store(stats_ptr + SHIFT_ROW * channels + c, shift, mask=ok)
    tl.store(stats_ptr + CENTRE_ROW * channels + c, centre, mask=ok)
    tl.store(stats_ptr + FOLDED_SHIFT_ROW * channels + c, shift - centre * scale, mask=ok)


@triton.jit
def transform_vectors(stats_ptr, stats_stride, channels, channel_ok, x_ptr):
    """(centre, scale, shift), fp32, of the input channels ``channels`` as ``transform`` takes them
    for the dtype of ``x_ptr``: for a 16-bit x the centre is folded into the shift (row 5; the
    centre returned is unused), so that each element costs one FMA, not a subtraction and an FMA.
    The fold moves u by about 2**-24·|centre·scale|: 2**-15 (bf16) or 2**-13 (fp16) of what the
    rounding of x itself to 16 bits already puts on u there (2**-9 or 2**-11 of |x|·|scale|, x
    near the centre). fp32 x keeps the subtraction, which is exact where the centre is far from
    zero and the spread small (mean 3000, std 0.5)."""
    scale = tl.load(stats_ptr + SCALE_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
    if x_ptr.dtype.element_ty == tl.float32:
        shift = tl.load(stats_ptr + SHIFT_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
        centre = tl.load(stats_ptr + CENTRE_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
    else:
        shift = tl.load(stats_ptr + FOLDED_SHIFT_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
        centre = tl.zeros_like(scale)
    return centre, scale, shift


@triton.jit
def transform(x, mask, centre, scale, shift, KIND: tl.constexpr, parameter):
    """act((x - centre)·scale + shift) of a [pixels x channels] tile (vectors along its channels,
    from ``transform_vectors``), in x's dtype, zero where ``mask`` is False (the padding) given
    that x was loaded as 0 there (a masked load's ``other=0``); elsewhere in a masked lane,
    unspecified."""
    if x.dtype == tl.float32 or KIND == "sigmoid" or KIND == "hardsigmoid":
        if x.dtype == tl.float32:
            u = (x - centre[None, :]) * scale[None, :] + shift[None, :]
        else:
            u = x.to(tl.float32) * scale[None, :] + shift[None, :]
        return tl.where(mask, activate(u, KIND, parameter), 0.0).to(x.dtype)
    # 16-bit x, act(0) = 0: x loads as 0 in the padding, so dropping the shift there makes u, and
    # act(u), zero. The select then sits on the FMA's addend, in fp32, one per element; zeroing
    # act(u) instead, after the conversion to 16 bits, costs two (the halves are split and
    # selected apart). The centre is in the shift (transform_vectors).
    u = x.to(tl.float32) * scale[None, :] + tl.where(mask, shift[None, :], 0.0)
    return activate(u, KIND, parameter).to(x.dtype)


@triton.jit
def through_activation(grad, x, valid, stats_ptr, stats_stride, channels, channel_ok, norm_parameter,
                       KIND: tl.constexpr):
    """The epilogue of a kernel whose result ``grad`` is the gradient of act(bn(x)) (the input
    the prologue made): (g, g·x̂) with g = act'(u)·grad at u = bn(x) recomputed from the fp32 tile
    ``x`` of those pixels and channels, zero where not ``valid``: batch norm's backward terms,
    which the kernel sums per channel (kernels/moments.py ``store_tile_sums``)."""
    invstd = tl.load(stats_ptr + INVSTD_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
    scale = tl.load(stats_ptr + SCALE_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
    shift = tl.load(stats_ptr + SHIFT_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
    centre = tl.load(stats_ptr + CENTRE_ROW * stats_stride + channels, mask=channel_ok, other=0.0)
    centred = x - centre[None, :]
    g = tl.where(valid, activation_grad(centred * scale[None, :] + shift[None, :], grad, KIND, norm_parameter), 0.0)
    return g, g * (centred * invstd[None, :])
