"""Depthwise conv2d (one input channel per group: groups == C, K = multiplier·C) as direct
kernels. Each output sums only R·S products, too few for a GEMM tile, so these kernels are
memory bound: a [pixels x channels] block of elementwise multiply-adds per tap. Output channel k
reads input channel k // multiplier. Notation as in kernels/conv2d.py.

Bytes: forward reads x and w, writes y; grad-input reads dy and w, writes dx; grad-weight reads x
and dy, writes dw. FLOPs: 2·N·P·Q·K·R·S per pass.
Launch grids: (cdiv(N·P·Q, BLOCK_P), cdiv(K, BLOCK_C)) forward, (cdiv(N·H·W, BLOCK_P),
cdiv(C, BLOCK_C)) grad-input (a gather over the windows each input pixel feeds), and
(cdiv(K, BLOCK_C), R·S, slices) grad-weight, its N·P·Q reduction sliced as the GEMM wgrad's.

With the input prologue (kernels/prologue.py: MobileNet's bn → relu6 → depthwise), the forward
and grad-weight normalise x as they load it, and grad-input's epilogue does what the GEMM's does:
it takes the gradient of act(bn(x)) through the activation's derivative (reading x where it
writes dx) and sums g and g·x̂ per channel for batch norm's backward, so that batch norm's
backward is its apply alone.
"""
import triton
import triton.language as tl

from .conv2d_gemm import MAX_SLICES, MIN_PIXELS_PER_SLICE
from .indexing import (advance_pixels, block_indices, needs_wide_index, pixel_coordinates, pixel_step, tap_input_pixel,
                       widen, window_through_tap)
from .moments import MOMENT_ROWS, store_tile_moments, store_tile_sums
from .prologue import arguments as prologue_arguments
from .prologue import epilogue_arguments
from .prologue import through_activation, transform, transform_vectors
from .slicing import partials, reduction_slices, slice_range, sum_partials
from .tiles import channel_blocks


def _blocks(channel_stride):
    """(BLOCK_P, BLOCK_C) for a tensor whose channel stride is ``channel_stride``."""
    return channel_blocks(channel_stride, interpreter=(1024, 32), channels_last=(32, 64), nchw=(128, 16))


@triton.jit
def _depthwise_forward_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr,
        batch, in_height, in_width, out_height, out_width, out_channels, multiplier,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        w_stride_k, w_stride_h, w_stride_w,
        y_stride_n, y_stride_k, y_stride_h, y_stride_w, bias_stride,
        stats_ptr, norm_parameter, stats_stride,
        moments_ptr, moment_slots,
        PROLOGUE: tl.constexpr,
        KIND: tl.constexpr, MOMENTS: tl.constexpr,
        HAS_BIAS: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    num_pixels = widen(batch, WIDE_INDEX) * out_height * out_width
    pixels = block_indices(tl.program_id(0), BLOCK_P, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
    channels = block_indices(tl.program_id(1), BLOCK_C, WIDE_INDEX)
    channel_ok = channels < out_channels
    x_base = x_ptr + (n * x_stride_n)[:, None] + ((channels // multiplier) * x_stride_c)[None, :]
    if PROLOGUE:  # kernels/prologue.py; the program's channels are fixed: vectors loaded once
        centre, scale, shift = transform_vectors(stats_ptr, stats_stride, channels // multiplier, channel_ok, x_ptr)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for tap in range(kernel_h * kernel_w):
        r = tap // kernel_w
        s = tap - r * kernel_w
        ih, iw, inside = tap_input_pixel(oh, ow, r, s, in_height, in_width, stride_h, stride_w, pad_h, pad_w,
                                         dilation_h, dilation_w)
        x_ok = (pixel_ok & inside)[:, None] & channel_ok[None, :]
        x = tl.load(x_base + (ih * x_stride_h + iw * x_stride_w)[:, None], mask=x_ok, other=0.0)
        if PROLOGUE:
            x = transform(x, x_ok, centre, scale, shift, KIND, norm_parameter)
        w = tl.load(w_ptr + channels * w_stride_k + r * w_stride_h + s * w_stride_w, mask=channel_ok, other=0.0)
        acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + channels * bias_stride, mask=channel_ok, other=0.0).to(tl.float32)[None, :]
    y = acc.to(y_ptr.dtype.element_ty)
    y_offsets = (n * y_stride_n + oh * y_stride_h + ow * y_stride_w)[:, None] + (channels * y_stride_k)[None, :]
    tl.store(y_ptr + y_offsets, y, mask=pixel_ok[:, None] & channel_ok[None, :])
    if MOMENTS:  # kernels/moments.py: y's per-channel summaries, for the batch norm that reads y next
        store_tile_moments(y.to(tl.float32), pixel_ok, channel_ok, channels, tl.program_id(0), moments_ptr,
                           moment_slots, out_channels, BLOCK_P)


@triton.jit
def _depthwise_input_grad_kernel(
        dy_ptr, w_ptr, dx_ptr,
        batch, in_height, in_width, out_height, out_width, in_channels, multiplier,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        w_stride_k, w_stride_h, w_stride_w,
        dx_stride_n, dx_stride_c, dx_stride_h, dx_stride_w,
        x_ptr, x_stride_n, x_stride_c, x_stride_h, x_stride_w, stats_ptr, norm_parameter, stats_stride, sums_ptr,
        sum_slots,
        EPILOGUE: tl.constexpr, KIND: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    num_pixels = widen(batch, WIDE_INDEX) * in_height * in_width
    pixels = block_indices(tl.program_id(0), BLOCK_P, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n, ih, iw = pixel_coordinates(pixels, in_height, in_width)
    channels = block_indices(tl.program_id(1), BLOCK_C, WIDE_INDEX)
    channel_ok = channels < in_channels
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for step in range(kernel_h * kernel_w * multiplier):
        tap = step // multiplier
        out_channels = channels * multiplier + (step - tap * multiplier)
        r = tap // kernel_w
        s = tap - r * kernel_w
        # Loads are masked where no window reaches (h, v) through this tap: these kernels are
        # bound by memory, not math, so the masked lanes cost nothing worth a phase split.
        oh, ow, reaches = window_through_tap(ih, iw, r, s, out_height, out_width, stride_h, stride_w, pad_h, pad_w,
                                             dilation_h, dilation_w)
        ok = pixel_ok & reaches
        dy = tl.load(dy_ptr + (n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w)[:, None]
                     + (out_channels * dy_stride_k)[None, :], mask=ok[:, None] & channel_ok[None, :], other=0.0)
        w = tl.load(w_ptr + out_channels * w_stride_k + r * w_stride_h + s * w_stride_w, mask=channel_ok, other=0.0)
        acc += dy.to(tl.float32) * w.to(tl.float32)[None, :]
    if EPILOGUE:  # the gradient of act(bn(x)): through the activation, and batch norm's sums
        valid = pixel_ok[:, None] & channel_ok[None, :]
        x = tl.load(x_ptr + (n * x_stride_n + ih * x_stride_h + iw * x_stride_w)[:, None]
                    + (channels * x_stride_c)[None, :], mask=valid, other=0.0).to(tl.float32)
        acc, acc_x_hat = through_activation(acc, x, valid, stats_ptr, stats_stride, channels, channel_ok,
                                            norm_parameter, KIND)
        store_tile_sums(acc, acc_x_hat, channel_ok, channels, tl.program_id(0), sums_ptr, 0, sum_slots, in_channels,
                        BLOCK_P)
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
        stats_ptr, norm_parameter, stats_stride,
        PROLOGUE: tl.constexpr,
        KIND: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program per (channel block, tap, slice of the N*P*Q reduction)."""
    tap = tl.program_id(1)
    split = tl.program_id(2)
    r = tap // kernel_w
    s = tap - r * kernel_w
    channels = block_indices(tl.program_id(0), BLOCK_C, WIDE_INDEX)
    channel_ok = channels < out_channels
    x_channels = x_ptr + ((channels // multiplier) * x_stride_c)[None, :]
    dy_channels = dy_ptr + (channels * dy_stride_k)[None, :]
    if PROLOGUE:  # act(bn(x)) recomputed as x is loaded, with the program's fixed channels' vectors
        centre, scale, shift = transform_vectors(stats_ptr, stats_stride, channels // multiplier, channel_ok, x_ptr)
    num_pixels = widen(batch, WIDE_INDEX) * out_height * out_width
    start, end = slice_range(split, pixels_per_split, num_pixels, WIDE_INDEX)
    pixel_offsets = widen(tl.arange(0, BLOCK_P), WIDE_INDEX)
    n, oh, ow = pixel_coordinates(start + pixel_offsets, out_height, out_width)  # then advance_pixels
    step_n, step_h, step_w = pixel_step(BLOCK_P, out_height, out_width)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(start, end, BLOCK_P):
        pixel_ok = first + pixel_offsets < end
        ih, iw, inside = tap_input_pixel(oh, ow, r, s, in_height, in_width, stride_h, stride_w, pad_h, pad_w,
                                         dilation_h, dilation_w)
        x_ok = (pixel_ok & inside)[:, None] & channel_ok[None, :]
        x = tl.load(x_channels + (n * x_stride_n + ih * x_stride_h + iw * x_stride_w)[:, None], mask=x_ok, other=0.0)
        if PROLOGUE:
            x = transform(x, x_ok, centre, scale, shift, KIND, norm_parameter)
        dy = tl.load(dy_channels + (n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w)[:, None],
                     mask=pixel_ok[:, None] & channel_ok[None, :], other=0.0)
        acc += x.to(tl.float32) * dy.to(tl.float32)
        n, oh, ow = advance_pixels(n, oh, ow, step_n, step_h, step_w, out_height, out_width)
    dw_offsets = channels * dw_stride_k + r * dw_stride_h + s * dw_stride_w
    tl.store(dw_ptr + split * split_stride + dw_offsets, tl.sum(acc, axis=0).to(dw_ptr.dtype.element_ty),
             mask=channel_ok)


# Launchers; each returns the number of kernels it launched. ``dot_precision`` is accepted for the
# same signature as the GEMMs' and unused: these kernels multiply in fp32, without tl.dot.

def _geometry(x, w, y, stride, padding, dilation, groups, channels):
    return (x.shape[0], x.shape[2], x.shape[3], y.shape[2], y.shape[3], channels, w.shape[0] // groups,
            w.shape[2], w.shape[3], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


def forward(x, w, bias, y, *, stride, padding, dilation, groups, dot_precision=None, prologue=None, moments=None):
    """y = depthwise conv2d(x, w, bias) into ``y`` (of act(bn(x)) with a ``prologue``; y's
    summaries into ``moments`` when given, see kernels/moments.py): one launch."""
    block_p, block_c = _blocks(y.stride(1))
    if moments is not None and block_p < MOMENT_ROWS:  # a tile covers whole moment slots
        block_p, block_c = MOMENT_ROWS, max(16, block_p * block_c // MOMENT_ROWS)
    grid = (triton.cdiv(y.shape[0] * y.shape[2] * y.shape[3], block_p), triton.cdiv(y.shape[1], block_c))
    normalise, prologue_flags = prologue_arguments(prologue, x)
    _depthwise_forward_kernel[grid](
        x, w, bias if bias is not None else y, y,
        *_geometry(x, w, y, stride, padding, dilation, groups, y.shape[1]),
        *x.stride(), w.stride(0), w.stride(2), w.stride(3), *y.stride(), bias.stride(0) if bias is not None else 0,
        *normalise, y if moments is None else moments, 0 if moments is None else moments.shape[0],
        **prologue_flags, MOMENTS=moments is not None, HAS_BIAS=bias is not None, WIDE_INDEX=needs_wide_index(x, w, y), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1


def input_grad_sum_slots(dx):
    """Rows of the [slots, 2, C] sums buffer the grad-input epilogue fills for ``dx``: per pixel
    tile, one per MOMENT_ROWS of its pixels (at least one), tiles in launch order."""
    block_p, _ = _blocks(dx.stride(1))
    return triton.cdiv(dx.shape[0] * dx.shape[2] * dx.shape[3], block_p) * max(1, block_p // MOMENT_ROWS)


def input_grad(dy, w, dx, *, stride, padding, dilation, groups, dot_precision=None, epilogue=None):
    """dx gathers dy through every tap that reaches each input pixel: one launch. With
    ``epilogue`` = (x, prologue, sums), as the GEMM's (kernels/conv2d_gemm.py ``input_grad``):
    dx receives g = act'(bn(x))·(that gradient), ``sums`` (fp32 [input_grad_sum_slots, 2, C])
    the per-channel sums of g and g·x̂."""
    block_p, block_c = _blocks(dx.stride(1))
    grid = (triton.cdiv(dx.shape[0] * dx.shape[2] * dx.shape[3], block_p), triton.cdiv(dx.shape[1], block_c))
    epilogue_args, epilogue_flags, x, sums = epilogue_arguments(epilogue, dx)
    _depthwise_input_grad_kernel[grid](
        dy, w, dx, *_geometry(dx, w, dy, stride, padding, dilation, groups, dx.shape[1]),
        *dy.stride(), w.stride(0), w.stride(2), w.stride(3), *dx.stride(), *epilogue_args,
        sums.shape[0] if epilogue is not None else 0, **epilogue_flags,
        WIDE_INDEX=needs_wide_index(dy, w, dx, x), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1


def weight_grad_slices(weight_shape, dy, device, sms=None):
    """(pixels per slice, slices) of the weight gradient's reduction over dy's pixels."""
    block_p, block_c = _blocks(dy.stride(1))
    tiles = triton.cdiv(weight_shape[0], block_c) * weight_shape[2] * weight_shape[3]
    return reduction_slices(tiles, dy.shape[0] * dy.shape[2] * dy.shape[3], device, min_length=MIN_PIXELS_PER_SLICE,
                            max_slices=MAX_SLICES, sms=sms)


def weight_grad(x, dy, dw, *, stride, padding, dilation, groups, dot_precision=None, prologue=None):
    """dw into the dense ``dw`` (of act(bn(x)) with a ``prologue``): the sliced reduction and,
    with several slices, their sum."""
    block_p, block_c = _blocks(dy.stride(1))
    taps = dw.shape[2] * dw.shape[3]
    pixels_per_split, splits = weight_grad_slices(dw.shape, dy, dy.device)
    target = partials(dw, splits)
    normalise, prologue_flags = prologue_arguments(prologue, x)
    _depthwise_weight_grad_kernel[(triton.cdiv(dw.shape[0], block_c), taps, splits)](
        x, dy, target, *_geometry(x, dw, dy, stride, padding, dilation, groups, dw.shape[0]),
        *x.stride(), *dy.stride(), dw.stride(0), dw.stride(2), dw.stride(3), pixels_per_split, dw.numel(),
        *normalise, **prologue_flags, WIDE_INDEX=needs_wide_index(x, dy, dw, extra_span=splits * dw.numel()), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1 + sum_partials(target, dw, splits)
