"""conv2d as implicit GEMM: forward, grad-input (dgrad), grad-weight (wgrad) and grad-bias.

Notation: input x [N, C, H, W], weight w [K, C/G, R, S], output y [N, K, P, Q], G groups, stride
(sh, sw), top/left padding (ph, pw), dilation (dh, dw). Within one group, with c < C/G, k < K/G:

    forward  y[n, k, p, q]   = b[k] + sum_{c, r, s} x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k, c, r, s]
    dgrad    dx[n, c, h, v]  = sum_{k, r, s} dy[n, k, (h + ph - r*dh)/sh, (v + pw - s*dw)/sw] * w[k, c, r, s]
                               (only the terms whose divisions are exact and land inside dy)
    wgrad    dw[k, c, r, s]  = sum_{n, p, q} dy[n, k, p, q] * x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw]
    bias     db[k]           = sum_{n, p, q} dy[n, k, p, q]

Each is a GEMM whose operands are gathered on the fly from the 4-d tensors through their strides
(NCHW, channels_last or any strided view: no im2col buffer, no layout copy); taps that fall in
the padding are masked loads of zero. FLOPs of each of the three GEMMs: 2·N·P·Q·K·(C/G)·R·S.
Minimum bytes: forward reads x and w and writes y; dgrad reads dy and w, writes dx; wgrad reads x
and dy, writes dw; bias reads dy.

Launch grids (all fp32 accumulation; programs of one group share the GEMM's B operand):
  forward  (cdiv(N·P·Q, BLOCK_M) · cdiv(K/G, BLOCK_N), G)      rows = output pixels
  dgrad    (cdiv(N·H·W / (sh·sw), BLOCK_M) · cdiv(C/G, BLOCK_N), G) per stride phase (sh·sw
           launches): rows = the input pixels of one phase, which all take the same taps, so
           no program multiplies the zeros of a zero-inserted dy
  wgrad    (cdiv(K/G, BLOCK_M) · R·S·cdiv(C/G, BLOCK_N), G, splits)  reduction over N·P·Q is
           cut into ``splits`` slices (split-K) when the output alone has too few tiles to fill
           the GPU; slices write fp32 partials that ``_sum_splits_kernel`` adds in a fixed order
           (deterministic, no atomics).
  bias     (cdiv(K, BLOCK_C), splits), then ``_sum_splits_kernel`` when splits > 1.
Depthwise layers (one input channel per group) have only R·S terms per output, too few for a
GEMM tile; they go to direct kernels instead (memory bound: forward reads x and w, writes y),
with grids (cdiv(N·P·Q, BLOCK_P), cdiv(K, BLOCK_C)) for forward and grad-input and
(cdiv(K, BLOCK_C), R·S, splits) for grad-weight.
Programs along the first axis are ordered in groups of ``GROUP_M`` rows so that tiles running at
the same time share operand blocks in L2 (the Triton matmul tutorial's grouped ordering).
"""
import os

import torch
import triton
import triton.language as tl

from . import INTERPRETED
from .indexing import pixel_coordinates
from .slicing import reduction_slices

# Shortest slice of the N·P·Q reduction that wgrad / bias grad cut off (see slicing.py).
MIN_PIXELS_PER_SPLIT = 32 if INTERPRETED else 1024
MAX_SPLITS = 64
SUM_BLOCK = 1024
BIAS_BLOCK_C = 32
BIAS_BLOCK_P = 512 if INTERPRETED else 128

# One configuration in the interpreter, with large blocks: it pays per program and per operation,
# not per FLOP (the tests shrink it to reach the multi-block paths on small shapes).
_INTERPRETER_CONFIG = dict(BLOCK_M=1024, BLOCK_N=64, BLOCK_K=1024, GROUP_M=4)


def _configs():
    if INTERPRETED:
        return [triton.Config(dict(_INTERPRETER_CONFIG), num_warps=4, num_stages=1)]
    shapes = [  # BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages
        (128, 128, 64, 8, 3), (128, 128, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
        (256, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 64, 64, 4, 4), (128, 32, 32, 4, 4),
        (64, 16, 32, 4, 4),
    ]
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8), num_warps=w, num_stages=s)
            for m, n, k, w, s in shapes]


# Used instead of autotuning when FASTCNN_AUTOTUNE=0 (and always in the interpreter).
DEFAULT_CONFIG = (_INTERPRETER_CONFIG, 4, 1) if INTERPRETED else (
    dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8), 4, 4)


def autotune_enabled():
    return not INTERPRETED and os.environ.get("FASTCNN_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


# The autotuner also keys on every tensor argument's dtype; strides of the gathered operand are in
# the key because NCHW and channels_last favour different tiles.
_GEOMETRY_KEY = ["batch", "in_height", "in_width", "out_height", "out_width", "in_per_group", "out_per_group",
                 "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w"]


@triton.jit
def _tile_coordinates(pid, num_row_tiles, num_col_tiles, GROUP_M: tl.constexpr):
    """(row tile, column tile) of program ``pid``, walking GROUP_M row tiles per column tile."""
    tiles_per_group = GROUP_M * num_col_tiles
    first_row = (pid // tiles_per_group) * GROUP_M
    rows_in_group = tl.minimum(num_row_tiles - first_row, GROUP_M)
    row = first_row + (pid % tiles_per_group) % rows_in_group
    col = (pid % tiles_per_group) // rows_in_group
    return row, col


@triton.jit
def _widen(value, WIDE_INDEX: tl.constexpr):
    """``value`` in int64 when some tensor spans 2**31 elements or more, else unchanged (int32)."""
    if WIDE_INDEX:
        value = tl.cast(value, tl.int64)
    return value


@triton.jit
def _block_indices(tile, BLOCK: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """tile * BLOCK + arange(BLOCK), widened before the multiplication can overflow."""
    return _widen(tile, WIDE_INDEX) * BLOCK + _widen(tl.arange(0, BLOCK), WIDE_INDEX)


@triton.jit
def _multiply_accumulate(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:  # Triton's interpreter multiplies bf16 blocks wrongly; fp32 is exact for any input
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _conv2d_forward_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr,
        batch, in_height, in_width, out_height, out_width, in_per_group, out_per_group,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        w_stride_k, w_stride_c, w_stride_h, w_stride_w,
        y_stride_n, y_stride_k, y_stride_h, y_stride_w, bias_stride,
        HAS_BIAS: tl.constexpr, WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    group = tl.program_id(1)
    num_pixels = _widen(batch, WIDE_INDEX) * out_height * out_width
    tile_m, tile_n = _tile_coordinates(tl.program_id(0), tl.cdiv(num_pixels, BLOCK_M),
                                       tl.cdiv(out_per_group, BLOCK_N), GROUP_M)
    pixels = _block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
    out_channels = group * out_per_group + _block_indices(tile_n, BLOCK_N, WIDE_INDEX)
    out_ok = out_channels < (group + 1) * out_per_group
    channel_offsets = _widen(tl.arange(0, BLOCK_K), WIDE_INDEX)

    x_rows = x_ptr + n * x_stride_n + (group * in_per_group) * x_stride_c  # [BLOCK_M] pointers
    w_cols = w_ptr + out_channels * w_stride_k  # [BLOCK_N] pointers
    top = oh * stride_h - pad_h
    left = ow * stride_w - pad_w

    # One loop over (tap, channel block) rather than nested loops, so the compiler pipelines the
    # loads of the next step across taps even when C/G fits in one block.
    channel_blocks = tl.cdiv(in_per_group, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(kernel_h * kernel_w * channel_blocks):
        tap = step // channel_blocks
        channels = (step - tap * channel_blocks) * BLOCK_K + channel_offsets
        r = tap // kernel_w
        s = tap - r * kernel_w
        ih = top + r * dilation_h
        iw = left + s * dilation_w
        row_ok = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        channel_ok = channels < in_per_group
        a = tl.load(x_rows[:, None] + (ih * x_stride_h + iw * x_stride_w)[:, None] + channels[None, :] * x_stride_c,
                    mask=row_ok[:, None] & channel_ok[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + channels[:, None] * w_stride_c + (r * w_stride_h + s * w_stride_w),
                    mask=channel_ok[:, None] & out_ok[None, :], other=0.0)
        acc = _multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + out_channels * bias_stride, mask=out_ok, other=0.0).to(tl.float32)[None, :]
    y_offsets = (n * y_stride_n + oh * y_stride_h + ow * y_stride_w)[:, None] + out_channels[None, :] * y_stride_k
    tl.store(y_ptr + y_offsets, acc.to(y_ptr.dtype.element_ty), mask=pixel_ok[:, None] & out_ok[None, :])


@triton.jit
def _conv2d_input_grad_kernel(
        dy_ptr, w_ptr, dx_ptr,
        batch, in_height, in_width, out_height, out_width, in_per_group, out_per_group,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        w_stride_k, w_stride_c, w_stride_h, w_stride_w,
        dx_stride_n, dx_stride_c, dx_stride_h, dx_stride_w,
        phase_row, phase_col, phase_rows, phase_cols,
        first_tap_h, first_tap_w, tap_step_h, tap_step_w, taps_h, taps_w,
        WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """grad-input for the input pixels of one stride phase: rows phase_row + i*sh, columns
    phase_col + j*sw. Input row h receives output row p from tap r when p*sh = h + ph - r*dh,
    which holds for every row of a phase or for none, so the phase visits only its ``taps_h`` x
    ``taps_w`` contributing taps (every tap at stride 1; about R/sh x S/sw of them otherwise)
    and never multiplies the zeros a zero-inserted dy would hold."""
    group = tl.program_id(1)
    num_pixels = _widen(batch, WIDE_INDEX) * phase_rows * phase_cols
    tile_m, tile_n = _tile_coordinates(tl.program_id(0), tl.cdiv(num_pixels, BLOCK_M),
                                       tl.cdiv(in_per_group, BLOCK_N), GROUP_M)
    pixels = _block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n = pixels // (phase_rows * phase_cols)
    ih = phase_row + ((pixels // phase_cols) % phase_rows) * stride_h
    iw = phase_col + (pixels % phase_cols) * stride_w
    in_channels = group * in_per_group + _block_indices(tile_n, BLOCK_N, WIDE_INDEX)
    in_ok = in_channels < (group + 1) * in_per_group
    channel_offsets = _widen(tl.arange(0, BLOCK_K), WIDE_INDEX)

    dy_rows = dy_ptr + n * dy_stride_n + (group * out_per_group) * dy_stride_k
    w_cols = w_ptr + (group * out_per_group) * w_stride_k + (in_channels - group * in_per_group) * w_stride_c
    padded_top = ih + pad_h
    padded_left = iw + pad_w

    channel_blocks = tl.cdiv(out_per_group, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(taps_h * taps_w * channel_blocks):
        tap = step // channel_blocks
        channels = (step - tap * channel_blocks) * BLOCK_K + channel_offsets
        r = first_tap_h + (tap // taps_w) * tap_step_h
        s = first_tap_w + (tap % taps_w) * tap_step_w
        oh = (padded_top - r * dilation_h) // stride_h  # exact: the phase guarantees divisibility
        ow = (padded_left - s * dilation_w) // stride_w
        row_ok = pixel_ok & (oh >= 0) & (ow >= 0) & (oh < out_height) & (ow < out_width)
        channel_ok = channels < out_per_group
        a = tl.load(dy_rows[:, None] + (oh * dy_stride_h + ow * dy_stride_w)[:, None] + channels[None, :] * dy_stride_k,
                    mask=row_ok[:, None] & channel_ok[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + channels[:, None] * w_stride_k + (r * w_stride_h + s * w_stride_w),
                    mask=channel_ok[:, None] & in_ok[None, :], other=0.0)
        acc = _multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)

    dx_offsets = (n * dx_stride_n + ih * dx_stride_h + iw * dx_stride_w)[:, None] + in_channels[None, :] * dx_stride_c
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & in_ok[None, :])


@triton.jit
def _conv2d_weight_grad_kernel(
        x_ptr, dy_ptr, dw_ptr,
        batch, in_height, in_width, out_height, out_width, in_per_group, out_per_group,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        dw_stride_k, dw_stride_c, dw_stride_h, dw_stride_w,
        pixels_per_split, split_stride,
        WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    group = tl.program_id(1)
    split = tl.program_id(2)
    channel_tiles = tl.cdiv(in_per_group, BLOCK_N)
    tile_m, tile_n = _tile_coordinates(tl.program_id(0), tl.cdiv(out_per_group, BLOCK_M),
                                       kernel_h * kernel_w * channel_tiles, GROUP_M)
    tap = tile_n // channel_tiles
    r = tap // kernel_w
    s = tap - r * kernel_w
    out_channels = group * out_per_group + _block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    out_ok = out_channels < (group + 1) * out_per_group
    in_channels = _block_indices(tile_n - tap * channel_tiles, BLOCK_N, WIDE_INDEX)
    in_ok = in_channels < in_per_group

    dy_rows = dy_ptr + out_channels * dy_stride_k  # [BLOCK_M] pointers
    x_cols = x_ptr + (group * in_per_group + in_channels) * x_stride_c  # [BLOCK_N] pointers
    row_offset = r * dilation_h - pad_h
    col_offset = s * dilation_w - pad_w

    num_pixels = _widen(batch, WIDE_INDEX) * out_height * out_width
    start = _widen(split, WIDE_INDEX) * pixels_per_split
    end = tl.minimum(start + pixels_per_split, num_pixels)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for first in range(start, end, BLOCK_K):
        pixels = first + _widen(tl.arange(0, BLOCK_K), WIDE_INDEX)
        pixel_ok = pixels < end
        n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
        ih = oh * stride_h + row_offset
        iw = ow * stride_w + col_offset
        x_ok = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        a = tl.load(dy_rows[:, None] + (n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w)[None, :],
                    mask=out_ok[:, None] & pixel_ok[None, :], other=0.0)
        b = tl.load(x_cols[None, :] + (n * x_stride_n + ih * x_stride_h + iw * x_stride_w)[:, None],
                    mask=x_ok[:, None] & in_ok[None, :], other=0.0)
        acc = _multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)

    dw_offsets = (out_channels * dw_stride_k)[:, None] + (in_channels * dw_stride_c)[None, :] + (r * dw_stride_h + s * dw_stride_w)
    tl.store(dw_ptr + split * split_stride + dw_offsets, acc.to(dw_ptr.dtype.element_ty),
             mask=out_ok[:, None] & in_ok[None, :])


@triton.jit
def _bias_grad_kernel(
        dy_ptr, db_ptr, channels, out_height, out_width, num_pixels, pixels_per_split,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        WIDE_INDEX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    split = tl.program_id(1)
    out_channels = _block_indices(tl.program_id(0), BLOCK_C, WIDE_INDEX)
    channel_ok = out_channels < channels
    start = _widen(split, WIDE_INDEX) * pixels_per_split
    end = tl.minimum(start + pixels_per_split, num_pixels)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(start, end, BLOCK_P):
        pixels = first + _widen(tl.arange(0, BLOCK_P), WIDE_INDEX)
        pixel_ok = pixels < end
        n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
        offsets = (n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w)[:, None] + out_channels[None, :] * dy_stride_k
        acc += tl.load(dy_ptr + offsets, mask=pixel_ok[:, None] & channel_ok[None, :], other=0.0).to(tl.float32)
    tl.store(db_ptr + split * channels + out_channels, tl.sum(acc, axis=0).to(db_ptr.dtype.element_ty),
             mask=channel_ok)


@triton.jit
def _sum_splits_kernel(partial_ptr, out_ptr, numel, num_splits, BLOCK: tl.constexpr):
    """out[i] = sum over s of partial[s, i], in split order (run-to-run identical)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < numel
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for split in range(num_splits):
        acc += tl.load(partial_ptr + split * numel + offsets, mask=ok, other=0.0)
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# Depthwise convolutions (one input channel per group: groups == C, K = multiplier * C). Each
# output then sums only R*S products, too few for a GEMM tile, so these kernels are direct:
# a [pixels x channels] block of elementwise multiply-adds per tap, memory bound. Output channel
# k reads input channel k // multiplier.


@triton.jit
def _depthwise_forward_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr,
        batch, in_height, in_width, out_height, out_width, out_channels, multiplier,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        w_stride_k, w_stride_h, w_stride_w,
        y_stride_n, y_stride_k, y_stride_h, y_stride_w, bias_stride,
        HAS_BIAS: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    num_pixels = _widen(batch, WIDE_INDEX) * out_height * out_width
    pixels = _block_indices(tl.program_id(0), BLOCK_P, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
    channels = _block_indices(tl.program_id(1), BLOCK_C, WIDE_INDEX)
    channel_ok = channels < out_channels
    x_base = x_ptr + (n * x_stride_n)[:, None] + ((channels // multiplier) * x_stride_c)[None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for tap in range(kernel_h * kernel_w):
        r = tap // kernel_w
        s = tap - r * kernel_w
        ih = oh * stride_h - pad_h + r * dilation_h
        iw = ow * stride_w - pad_w + s * dilation_w
        ok = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        x = tl.load(x_base + (ih * x_stride_h + iw * x_stride_w)[:, None], mask=ok[:, None] & channel_ok[None, :],
                    other=0.0)
        w = tl.load(w_ptr + channels * w_stride_k + r * w_stride_h + s * w_stride_w, mask=channel_ok, other=0.0)
        acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + channels * bias_stride, mask=channel_ok, other=0.0).to(tl.float32)[None, :]
    y_offsets = (n * y_stride_n + oh * y_stride_h + ow * y_stride_w)[:, None] + (channels * y_stride_k)[None, :]
    tl.store(y_ptr + y_offsets, acc.to(y_ptr.dtype.element_ty), mask=pixel_ok[:, None] & channel_ok[None, :])


@triton.jit
def _depthwise_input_grad_kernel(
        dy_ptr, w_ptr, dx_ptr,
        batch, in_height, in_width, out_height, out_width, in_channels, multiplier,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        w_stride_k, w_stride_h, w_stride_w,
        dx_stride_n, dx_stride_c, dx_stride_h, dx_stride_w,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    num_pixels = _widen(batch, WIDE_INDEX) * in_height * in_width
    pixels = _block_indices(tl.program_id(0), BLOCK_P, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n, ih, iw = pixel_coordinates(pixels, in_height, in_width)
    channels = _block_indices(tl.program_id(1), BLOCK_C, WIDE_INDEX)
    channel_ok = channels < in_channels
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for step in range(kernel_h * kernel_w * multiplier):
        tap = step // multiplier
        out_channels = channels * multiplier + (step - tap * multiplier)
        r = tap // kernel_w
        s = tap - r * kernel_w
        # Output row p feeds input row h through tap r when p*sh = h + ph - r*dh (loads are
        # masked where the division is inexact: these kernels are bound by memory, not math).
        scaled_oh = ih + pad_h - r * dilation_h
        scaled_ow = iw + pad_w - s * dilation_w
        oh = scaled_oh // stride_h
        ow = scaled_ow // stride_w
        ok = (pixel_ok & (scaled_oh >= 0) & (scaled_ow >= 0) & (oh * stride_h == scaled_oh)
              & (ow * stride_w == scaled_ow) & (oh < out_height) & (ow < out_width))
        dy = tl.load(dy_ptr + (n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w)[:, None]
                     + (out_channels * dy_stride_k)[None, :], mask=ok[:, None] & channel_ok[None, :], other=0.0)
        w = tl.load(w_ptr + out_channels * w_stride_k + r * w_stride_h + s * w_stride_w, mask=channel_ok, other=0.0)
        acc += dy.to(tl.float32) * w.to(tl.float32)[None, :]
    dx_offsets = (n * dx_stride_n + ih * dx_stride_h + iw * dx_stride_w)[:, None] + (channels * dx_stride_c)[None, :]
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & channel_ok[None, :])


@triton.jit
def _depthwise_weight_grad_kernel(
        x_ptr, dy_ptr, dw_ptr,
        batch, in_height, in_width, out_height, out_width, out_channels, multiplier,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        dw_stride_k, dw_stride_h, dw_stride_w,
        pixels_per_split, split_stride,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program per (channel block, tap, slice of the N*P*Q reduction)."""
    tap = tl.program_id(1)
    split = tl.program_id(2)
    r = tap // kernel_w
    s = tap - r * kernel_w
    channels = _block_indices(tl.program_id(0), BLOCK_C, WIDE_INDEX)
    channel_ok = channels < out_channels
    x_channels = x_ptr + ((channels // multiplier) * x_stride_c)[None, :]
    dy_channels = dy_ptr + (channels * dy_stride_k)[None, :]
    num_pixels = _widen(batch, WIDE_INDEX) * out_height * out_width
    start = _widen(split, WIDE_INDEX) * pixels_per_split
    end = tl.minimum(start + pixels_per_split, num_pixels)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(start, end, BLOCK_P):
        pixels = first + _widen(tl.arange(0, BLOCK_P), WIDE_INDEX)
        pixel_ok = pixels < end
        n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
        ih = oh * stride_h - pad_h + r * dilation_h
        iw = ow * stride_w - pad_w + s * dilation_w
        x_ok = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        x = tl.load(x_channels + (n * x_stride_n + ih * x_stride_h + iw * x_stride_w)[:, None],
                    mask=x_ok[:, None] & channel_ok[None, :], other=0.0)
        dy = tl.load(dy_channels + (n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w)[:, None],
                     mask=pixel_ok[:, None] & channel_ok[None, :], other=0.0)
        acc += x.to(tl.float32) * dy.to(tl.float32)
    dw_offsets = channels * dw_stride_k + r * dw_stride_h + s * dw_stride_w
    tl.store(dw_ptr + split * split_stride + dw_offsets, tl.sum(acc, axis=0).to(dw_ptr.dtype.element_ty),
             mask=channel_ok)


_forward_autotuned = triton.autotune(_configs(), key=_GEOMETRY_KEY + ["x_stride_c", "x_stride_w"])(
    _conv2d_forward_kernel)
_input_grad_autotuned = triton.autotune(
    _configs(), key=_GEOMETRY_KEY + ["dy_stride_k", "dy_stride_w", "phase_rows", "phase_cols", "taps_h", "taps_w"])(
    _conv2d_input_grad_kernel)
_weight_grad_autotuned = triton.autotune(
    _configs(), key=_GEOMETRY_KEY + ["x_stride_c", "x_stride_w", "pixels_per_split"])(_conv2d_weight_grad_kernel)


# ----------------------------------------------------------------------------------------------
# Launchers. They trust their caller (fastcnn.conv) to have validated shapes, dtypes and devices
# and to have allocated the outputs; each returns the number of kernels it launched.

def _span(tensor):
    """Elements between the first and last addressable element of ``tensor``, plus one."""
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride()))


def _wide_index(*tensors, extra_span=0):
    return max([extra_span] + [_span(t) for t in tensors]) >= 2**31 - 1


def _launch(autotuned, kernel, grid, args, constexprs, extents):
    """Launch with the autotuner, or with DEFAULT_CONFIG. ``extents`` are the GEMM's sizes along
    BLOCK_M, BLOCK_N and BLOCK_K: the interpreter pays for every element of a tile, masked or not,
    so there each block shrinks to its extent (a power of two, at least tl.dot's 16)."""
    if autotune_enabled():
        autotuned[grid](*args, **constexprs)
        return
    config, num_warps, num_stages = DEFAULT_CONFIG
    if INTERPRETED:
        config = {name: min(size, max(16, triton.next_power_of_2(extents[name]))) if name in extents else size
                  for name, size in config.items()}
    kernel[grid(config)](*args, **constexprs, **config, num_warps=num_warps, num_stages=num_stages)


def _geometry(x, w, y, stride, padding, dilation, groups):
    """The scalar arguments shared by the three GEMM kernels, in their parameter order."""
    return (x.shape[0], x.shape[2], x.shape[3], y.shape[2], y.shape[3], x.shape[1] // groups, w.shape[0] // groups,
            w.shape[2], w.shape[3], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


def forward(x, w, bias, y, *, stride, padding, dilation, groups, dot_precision):
    """y = conv2d(x, w, bias) into the preallocated ``y``; ``padding`` is (top, left)."""
    if x.shape[1] // groups == 1:
        return _depthwise_forward(x, w, bias, y, stride=stride, padding=padding, dilation=dilation, groups=groups)
    geometry = _geometry(x, w, y, stride, padding, dilation, groups)
    pixels = x.shape[0] * y.shape[2] * y.shape[3]
    out_per_group = w.shape[0] // groups

    def grid(meta):
        return (triton.cdiv(pixels, meta["BLOCK_M"]) * triton.cdiv(out_per_group, meta["BLOCK_N"]), groups)

    args = (x, w, bias if bias is not None else y, y, *geometry, *x.stride(), *w.stride(), *y.stride(),
            bias.stride(0) if bias is not None else 0)
    _launch(_forward_autotuned, _conv2d_forward_kernel, grid, args,
            dict(HAS_BIAS=bias is not None, WIDE_INDEX=_wide_index(x, w, y), DOT_PRECISION=dot_precision,
                 UPCAST=INTERPRETED), dict(BLOCK_M=pixels, BLOCK_N=out_per_group, BLOCK_K=x.shape[1] // groups))
    return 1


def stride_phase(size, stride, padding, dilation, kernel, phase):
    """For the input rows h = phase, phase + stride, ... (< size): how many there are and the taps
    that reach them, as (rows, first tap, tap step, taps). Tap r reaches row h when
    h + padding - r*dilation is a multiple of the stride; those r form an arithmetic progression."""
    rows = triton.cdiv(size - phase, stride) if phase < size else 0
    taps = [r for r in range(kernel) if (phase + padding - r * dilation) % stride == 0]
    step = taps[1] - taps[0] if len(taps) > 1 else 1
    return rows, (taps[0] if taps else 0), step, len(taps)


def input_grad(dy, w, dx, *, stride, padding, dilation, groups, dot_precision):
    """dx = grad of conv2d w.r.t. its input, into the preallocated ``dx``: one launch per stride
    phase (stride_h x stride_w of them) that holds input pixels."""
    if dx.shape[1] // groups == 1:
        return _depthwise_input_grad(dy, w, dx, stride=stride, padding=padding, dilation=dilation, groups=groups)
    geometry = _geometry(dx, w, dy, stride, padding, dilation, groups)
    in_per_group = dx.shape[1] // groups
    constexprs = dict(WIDE_INDEX=_wide_index(dy, w, dx), DOT_PRECISION=dot_precision, UPCAST=INTERPRETED)
    launches = 0
    for phase_row in range(stride[0]):
        rows, first_tap_h, tap_step_h, taps_h = stride_phase(
            dx.shape[2], stride[0], padding[0], dilation[0], w.shape[2], phase_row)
        for phase_col in range(stride[1]):
            cols, first_tap_w, tap_step_w, taps_w = stride_phase(
                dx.shape[3], stride[1], padding[1], dilation[1], w.shape[3], phase_col)
            pixels = dx.shape[0] * rows * cols
            if pixels == 0:
                continue

            def grid(meta, pixels=pixels):
                return (triton.cdiv(pixels, meta["BLOCK_M"]) * triton.cdiv(in_per_group, meta["BLOCK_N"]), groups)

            args = (dy, w, dx, *geometry, *dy.stride(), *w.stride(), *dx.stride(), phase_row, phase_col, rows, cols,
                    first_tap_h, first_tap_w, tap_step_h, tap_step_w, taps_h, taps_w)
            _launch(_input_grad_autotuned, _conv2d_input_grad_kernel, grid, args, constexprs,
                    dict(BLOCK_M=pixels, BLOCK_N=in_per_group, BLOCK_K=w.shape[0] // groups))
            launches += 1
    return launches


def weight_grad(x, dy, dw, *, stride, padding, dilation, groups, dot_precision):
    """dw = grad of conv2d w.r.t. its weight, into the preallocated dense ``dw``."""
    if x.shape[1] // groups == 1:
        return _depthwise_weight_grad(x, dy, dw, stride=stride, padding=padding, dilation=dilation, groups=groups)
    geometry = _geometry(x, dw, dy, stride, padding, dilation, groups)
    pixels = dy.shape[0] * dy.shape[2] * dy.shape[3]
    out_per_group, in_per_group, taps = dw.shape[0] // groups, dw.shape[1], dw.shape[2] * dw.shape[3]
    nominal_tiles = triton.cdiv(out_per_group, 64) * triton.cdiv(in_per_group, 64) * taps * groups
    pixels_per_split, splits = reduction_slices(nominal_tiles, pixels, dy.device, min_length=MIN_PIXELS_PER_SPLIT,
                                                   max_slices=MAX_SPLITS)
    target = _partials(dw, splits)

    def grid(meta):
        return (triton.cdiv(out_per_group, meta["BLOCK_M"]) * taps * triton.cdiv(in_per_group, meta["BLOCK_N"]),
                groups, splits)

    args = (x, dy, target, *geometry, *x.stride(), *dy.stride(), *dw.stride(), pixels_per_split, dw.numel())
    _launch(_weight_grad_autotuned, _conv2d_weight_grad_kernel, grid, args,
            dict(WIDE_INDEX=_wide_index(x, dy, dw, extra_span=splits * dw.numel()), DOT_PRECISION=dot_precision,
                 UPCAST=INTERPRETED), dict(BLOCK_M=out_per_group, BLOCK_N=in_per_group, BLOCK_K=pixels_per_split))
    return 1 + _sum_partials(target, dw, splits)


def _partials(out, splits):
    """Where ``splits`` slices of a reduction into the dense ``out`` write: ``out`` itself for one
    slice, else fp32 partials laid out like ``out``, one copy per slice."""
    if splits == 1:
        return out
    return torch.empty_strided((splits, *out.shape), (out.numel(), *out.stride()), dtype=torch.float32,
                               device=out.device)


def _sum_partials(partials, out, splits):
    """Add the slices' partials into ``out`` in slice order; returns the launches made (0 or 1)."""
    if splits == 1:
        return 0
    _sum_splits_kernel[(triton.cdiv(out.numel(), SUM_BLOCK),)](partials, out, out.numel(), splits, BLOCK=SUM_BLOCK)
    return 1


def _depthwise_blocks(channel_stride):
    """(BLOCK_P, BLOCK_C): wide channel blocks when channels are contiguous (channels_last), wide
    pixel blocks otherwise, so that each load instruction reads consecutive addresses."""
    if INTERPRETED:
        return 1024, 32
    return (32, 64) if channel_stride == 1 else (128, 16)


def _depthwise_geometry(x, w, y, stride, padding, dilation, groups, channels):
    return (x.shape[0], x.shape[2], x.shape[3], y.shape[2], y.shape[3], channels, w.shape[0] // groups,
            w.shape[2], w.shape[3], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


def _depthwise_forward(x, w, bias, y, *, stride, padding, dilation, groups):
    block_p, block_c = _depthwise_blocks(y.stride(1))
    grid = (triton.cdiv(y.shape[0] * y.shape[2] * y.shape[3], block_p), triton.cdiv(y.shape[1], block_c))
    _depthwise_forward_kernel[grid](
        x, w, bias if bias is not None else y, y,
        *_depthwise_geometry(x, w, y, stride, padding, dilation, groups, y.shape[1]),
        *x.stride(), w.stride(0), w.stride(2), w.stride(3), *y.stride(), bias.stride(0) if bias is not None else 0,
        HAS_BIAS=bias is not None, WIDE_INDEX=_wide_index(x, w, y), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1


def _depthwise_input_grad(dy, w, dx, *, stride, padding, dilation, groups):
    block_p, block_c = _depthwise_blocks(dx.stride(1))
    grid = (triton.cdiv(dx.shape[0] * dx.shape[2] * dx.shape[3], block_p), triton.cdiv(dx.shape[1], block_c))
    _depthwise_input_grad_kernel[grid](
        dy, w, dx, *_depthwise_geometry(dx, w, dy, stride, padding, dilation, groups, dx.shape[1]),
        *dy.stride(), w.stride(0), w.stride(2), w.stride(3), *dx.stride(),
        WIDE_INDEX=_wide_index(dy, w, dx), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1


def _depthwise_weight_grad(x, dy, dw, *, stride, padding, dilation, groups):
    block_p, block_c = _depthwise_blocks(dy.stride(1))
    pixels = dy.shape[0] * dy.shape[2] * dy.shape[3]
    taps = dw.shape[2] * dw.shape[3]
    tiles = triton.cdiv(dw.shape[0], block_c) * taps
    pixels_per_split, splits = reduction_slices(tiles, pixels, dy.device, min_length=MIN_PIXELS_PER_SPLIT,
                                                   max_slices=MAX_SPLITS)
    target = _partials(dw, splits)
    _depthwise_weight_grad_kernel[(triton.cdiv(dw.shape[0], block_c), taps, splits)](
        x, dy, target, *_depthwise_geometry(x, dw, dy, stride, padding, dilation, groups, dw.shape[0]),
        *x.stride(), *dy.stride(), dw.stride(0), dw.stride(2), dw.stride(3), pixels_per_split, dw.numel(),
        WIDE_INDEX=_wide_index(x, dy, dw, extra_span=splits * dw.numel()), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1 + _sum_partials(target, dw, splits)


def bias_grad(dy, db):
    """db[k] = sum of dy over every dimension but the channels, into ``db`` (1-d, contiguous)."""
    channels = dy.shape[1]
    pixels = dy.shape[0] * dy.shape[2] * dy.shape[3]
    channel_tiles = triton.cdiv(channels, BIAS_BLOCK_C)
    pixels_per_split, splits = reduction_slices(channel_tiles, pixels, dy.device, min_length=MIN_PIXELS_PER_SPLIT,
                                                   max_slices=MAX_SPLITS)
    target = _partials(db, splits)
    _bias_grad_kernel[(channel_tiles, splits)](
        dy, target, channels, dy.shape[2], dy.shape[3], pixels, pixels_per_split, *dy.stride(),
        WIDE_INDEX=_wide_index(dy), BLOCK_C=BIAS_BLOCK_C, BLOCK_P=BIAS_BLOCK_P)
    return 1 + _sum_partials(target, db, splits)
