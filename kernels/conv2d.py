"""conv2d's kernels: forward, grad-input (dgrad), grad-weight (wgrad) and grad-bias, for
fastcnn/ops/conv2d.py. This module holds the entry points and the bias reduction; the work is
done by implicit-GEMM kernels (kernels/conv2d_gemm.py) or, for depthwise layers, by direct
kernels (kernels/conv2d_depthwise.py).

Notation: input x [N, C, H, W], weight w [K, C/G, R, S], output y [N, K, P, Q], G groups, stride
(sh, sw), top/left padding (ph, pw), dilation (dh, dw). Within one group, with c < C/G, k < K/G:

    forward  y[n, k, p, q]   = b[k] + sum_{c, r, s} x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k, c, r, s]
    dgrad    dx[n, c, h, v]  = sum_{k, r, s} dy[n, k, (h + ph - r*dh)/sh, (v + pw - s*dw)/sw] * w[k, c, r, s]
                               (only the terms whose divisions are exact and land inside dy)
    wgrad    dw[k, c, r, s]  = sum_{n, p, q} dy[n, k, p, q] * x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw]
    bias     db[k]           = sum_{n, p, q} dy[n, k, p, q]

FLOPs of each of forward, dgrad and wgrad: 2·N·P·Q·K·(C/G)·R·S. Which kernels run: a layer with
one input channel per group (depthwise, as in MobileNet) sums only R·S products per output, too
few for a GEMM tile, and takes the direct kernels; every other layer the GEMMs.

Bias: reads dy once, writes K values. Grid (cdiv(K, BLOCK_C), slices): the N·P·Q reduction runs
over blocks of BLOCK_P pixels within one output plane (contiguous in NCHW, so loads are vectors
in both layouts), sliced as wgrad's (kernels/slicing.py), then the slices' partials summed in a
fixed order.

Every launcher writes into tensors its caller allocated, trusts that caller to have validated
shapes, dtypes and devices, and returns the number of kernels it launched.
"""
import triton
import triton.language as tl

from . import conv2d_depthwise, conv2d_gemm
from .conv2d_gemm import MAX_SLICES
from .indexing import block_indices, dense_planes, needs_wide_index
from .slicing import partials, reduction_slices, slice_range, sum_partials
from .tiles import by_backend, channel_blocks

# (pixels, channels) of a bias-grad tile: wide along whichever dimension is contiguous.
BIAS_BLOCKS = dict(interpreter=(512, 32), channels_last=(64, 32), nchw=(128, 16))
# Shortest slice of the bias reduction worth its own partial: it reads only dy, so slices may be
# shorter than wgrad's and still fill the GPU (ResNet's 28x28 x 128 channels at batch 32).
BIAS_MIN_PIXELS_PER_SLICE = by_backend(interpreter=32, gpu=256)


def is_direct(input_channels, groups):
    """Whether a layer takes the direct kernels: one input channel per group (depthwise)."""
    return input_channels // groups == 1


def _path(input_channels, groups):
    """The kernel module for a layer: the direct kernels or the GEMMs (``is_direct``)."""
    return conv2d_depthwise if is_direct(input_channels, groups) else conv2d_gemm


# Each pass takes stride, padding (top, left), dilation, groups and dot_precision ('tf32' or
# 'ieee', for the GEMMs' tl.dot) as keywords.

def forward(x, w, bias, y, **arguments):
    """y = conv2d(x, w, bias) into the preallocated ``y``."""
    return _path(x.shape[1], arguments["groups"]).forward(x, w, bias, y, **arguments)


def input_grad(dy, w, dx, **arguments):
    """dx = grad of conv2d w.r.t. its input, into the preallocated ``dx``."""
    return _path(dx.shape[1], arguments["groups"]).input_grad(dy, w, dx, **arguments)


def input_grad_sum_slots(dx, stride, groups):
    """Rows of the [slots, 2, C] sums buffer ``input_grad``'s epilogue (``epilogue=``) fills for
    ``dx``: see each path's own ``input_grad_sum_slots``."""
    if is_direct(dx.shape[1], groups):
        return conv2d_depthwise.input_grad_sum_slots(dx)
    return conv2d_gemm.input_grad_sum_slots(dx.shape, stride)


def weight_grad(x, dy, dw, **arguments):
    """dw = grad of conv2d w.r.t. its weight, into the preallocated dense ``dw``."""
    return _path(x.shape[1], arguments["groups"]).weight_grad(x, dy, dw, **arguments)


def _planes(dy):
    """dy [N, K, P, Q] as [N, K, lines, length] strides: each output plane one line of P·Q pixels
    when its rows follow each other (any dense layout), else P lines of Q pixels."""
    n_stride, k_stride, h_stride, w_stride = dy.stride()
    if dense_planes(dy):
        return 1, dy.shape[2] * dy.shape[3], (n_stride, k_stride, 0, w_stride)
    return dy.shape[2], dy.shape[3], (n_stride, k_stride, h_stride, w_stride)


def bias_grad_slices(dy, device, sms=None):
    """(blocks of pixels per slice, slices) of the bias gradient's reduction."""
    block_p, block_c = channel_blocks(dy.stride(1), **BIAS_BLOCKS)
    lines, length, strides = _planes(dy)
    blocks = dy.shape[0] * lines * triton.cdiv(length, block_p)
    return reduction_slices(triton.cdiv(dy.shape[1], block_c), blocks, device,
                            min_length=triton.cdiv(BIAS_MIN_PIXELS_PER_SLICE, block_p), max_slices=MAX_SLICES,
                            granule=1, sms=sms)


def bias_grad(dy, db):
    """db[k] = sum of dy over every dimension but the channels, into ``db`` (1-d, contiguous)."""
    channels = dy.shape[1]
    block_p, block_c = channel_blocks(dy.stride(1), **BIAS_BLOCKS)
    lines, length, strides = _planes(dy)
    blocks_per_line = triton.cdiv(length, block_p)
    blocks = dy.shape[0] * lines * blocks_per_line
    channel_tiles = triton.cdiv(channels, block_c)
    blocks_per_split, splits = bias_grad_slices(dy, dy.device)
    target = partials(db, splits)
    _bias_grad_kernel[(channel_tiles, splits)](
        dy, target, channels, lines, length, blocks_per_line, blocks, blocks_per_split, *strides,
        WIDE_INDEX=needs_wide_index(dy), BLOCK_C=block_c, BLOCK_P=block_p)
    return 1 + sum_partials(target, db, splits)


@triton.jit
def _bias_grad_kernel(
        dy_ptr, db_ptr, channels, lines, line_length, blocks_per_line, num_blocks, blocks_per_split,
        dy_stride_n, dy_stride_k, dy_stride_line, dy_stride_pixel,
        WIDE_INDEX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Each step sums a [BLOCK_P x BLOCK_C] block of one line of pixels: its pixel offsets are
    first + arange (no per-element division), so NCHW lines load as contiguous runs too."""
    split = tl.program_id(1)
    out_channels = block_indices(tl.program_id(0), BLOCK_C, WIDE_INDEX)
    channel_ok = out_channels < channels
    channel_offsets = (out_channels * dy_stride_k)[None, :]
    start, end = slice_range(split, blocks_per_split, num_blocks, WIDE_INDEX)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for block in range(start, end):
        line = block // blocks_per_line
        first = (block - line * blocks_per_line) * BLOCK_P
        image = line // lines
        base = image * dy_stride_n + (line - image * lines) * dy_stride_line
        pixels = first + tl.arange(0, BLOCK_P)
        offsets = base + (pixels * dy_stride_pixel)[:, None] + channel_offsets
        mask = (pixels < line_length)[:, None] & channel_ok[None, :]
        acc += tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(db_ptr + split * channels + out_channels, tl.sum(acc, axis=0).to(db_ptr.dtype.element_ty),
             mask=channel_ok)
