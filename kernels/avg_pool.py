"""Average pooling: avg_pool2d and adaptive_avg_pool2d, forward and a gather backward, and the
global (1x1) adaptive case as one reduction per (image, channels).

Each output pixel (p, q) averages an input window rows [h0, h1) x columns [w0, w1), clipped to
the input, divided by a per-window divisor:
  avg_pool2d:  h0 = p·sH - pH, window end min(h0 + kH, H + pH); divisor = divisor_override, or
               the window's size within the padded input (count_include_pad), or the number of
               input pixels in it;
  adaptive:    h0 = floor(p·H / OH), h1 = ceil((p + 1)·H / OH) (torch's start_index/end_index);
               divisor = the window's size.
The forward loops over the largest window's taps (MAX_H x MAX_W, compiled in), masking the
taps a smaller window does not have. The backward gathers, without atomics: dx[h, w] = sum over
the windows (p, q) containing (h, w) of dy[p, q] / divisor(p, q); avg_pool2d finds them through
``window_through_tap`` (one candidate per tap), adaptive pooling as the runs p in
[floor(h·OH / H), ceil((h + 1)·OH / H)) (at most MAX_H of them, compiled in). Sums in fp32
(fp64 for float64).

Bytes: forward reads x once (overlapping windows hit the cache) and writes the output; backward
reads dy (cache hits) and writes dx. FLOPs: one add per tap.
Launch grids: (N·cdiv(pixels, BLOCK_P), cdiv(C, BLOCK_C)) over tiles of output pixels
(forward) or input pixels (backward) x channels of one image, through the tensors' strides
(tiles run on across images where a plane is smaller than BLOCK_P: ``indexing.pixel_tiles``);
global pooling (N, cdiv(C, BLOCK_C)), each program summing all H·W pixels of its channels.
"""
import torch
import triton
import triton.language as tl

from .indexing import (block_indices, dense_planes, image_tile, needs_wide_index, per_pixel, pixel_tiles,
                       plane_offsets, widen, window_through_tap)
from .tiles import by_backend, channel_blocks

GLOBAL_BLOCK_S = by_backend(interpreter=64, gpu=32)


@triton.jit
def _window(out_row, out_col, in_height, in_width, out_height, out_width, pad_h, pad_w, divisor_override,
            KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
            ADAPTIVE: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr, HAS_DIVISOR: tl.constexpr):
    """(top, left, bottom, right, divisor) of output window (out_row, out_col): the input rows
    [top, bottom) and columns [left, right) it averages, and what their sum is divided by (fp32)."""
    if ADAPTIVE:
        top = (out_row * in_height) // out_height
        bottom = ((out_row + 1) * in_height + out_height - 1) // out_height
        left = (out_col * in_width) // out_width
        right = ((out_col + 1) * in_width + out_width - 1) // out_width
        divisor = ((bottom - top) * (right - left)).to(tl.float32)
    else:
        top = out_row * STRIDE_H - pad_h
        left = out_col * STRIDE_W - pad_w
        bottom = tl.minimum(top + KERNEL_H, in_height + pad_h)
        right = tl.minimum(left + KERNEL_W, in_width + pad_w)
        padded_size = (bottom - top) * (right - left)
        top = tl.maximum(top, 0)
        left = tl.maximum(left, 0)
        bottom = tl.minimum(bottom, in_height)
        right = tl.minimum(right, in_width)
        if HAS_DIVISOR:
            divisor = tl.zeros_like(top).to(tl.float32) + divisor_override
        elif COUNT_INCLUDE_PAD:
            divisor = padded_size.to(tl.float32)
        else:
            divisor = ((bottom - top) * (right - left)).to(tl.float32)
    return top, left, bottom, right, divisor


@triton.jit
def _avg_pool_forward_kernel(
        x_ptr, out_ptr, pixel_blocks, images, channels, in_height, in_width, out_height, out_width, plane_pixels,
        pad_h, pad_w, divisor_override,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w, out_stride_n, out_stride_c, out_stride_h, out_stride_w,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
        MAX_H: tl.constexpr, MAX_W: tl.constexpr, ADAPTIVE: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr,
        HAS_DIVISOR: tl.constexpr, ACCUMULATOR: tl.constexpr, DENSE_OUT: tl.constexpr, SPAN_IMAGES: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    image, pixels, pixel_ok, c, channel_ok = image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES,
                                                        WIDE_INDEX, BLOCK_P, BLOCK_C)
    top, left, bottom, right, divisor = _window(
        pixels // out_width, pixels % out_width, in_height, in_width, out_height, out_width, pad_h, pad_w,
        divisor_override, KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, ADAPTIVE, COUNT_INCLUDE_PAD, HAS_DIVISOR)
    x_base = x_ptr + per_pixel(image * x_stride_n, SPAN_IMAGES) + (c * x_stride_c)[None, :]
    total = tl.zeros((BLOCK_P, BLOCK_C), ACCUMULATOR)
    for r in range(MAX_H):
        row = top + r
        for s in range(MAX_W):
            col = left + s
            inside = pixel_ok & (row < bottom) & (col < right)
            total += tl.load(x_base + (row * x_stride_h + col * x_stride_w)[:, None],
                             mask=inside[:, None] & channel_ok[None, :], other=0.0).to(ACCUMULATOR)
    out = total / divisor.to(ACCUMULATOR)[:, None]
    out_offsets = (image * out_stride_n + plane_offsets(pixels, out_width, out_stride_h, out_stride_w, DENSE_OUT)
                   )[:, None] + (c * out_stride_c)[None, :]
    tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=pixel_ok[:, None] & channel_ok[None, :])


@triton.jit
def _avg_pool_backward_kernel(
        grad_out_ptr, grad_in_ptr, pixel_blocks, images, channels, in_height, in_width, out_height, out_width, plane_pixels,
        pad_h, pad_w, divisor_override,
        go_stride_n, go_stride_c, go_stride_h, go_stride_w, gi_stride_n, gi_stride_c, gi_stride_h, gi_stride_w,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
        MAX_H: tl.constexpr, MAX_W: tl.constexpr, ADAPTIVE: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr,
        HAS_DIVISOR: tl.constexpr, ACCUMULATOR: tl.constexpr, DENSE_IN: tl.constexpr, SPAN_IMAGES: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """MAX_H x MAX_W: the most windows along each axis that contain one input pixel (the kernel
    size for avg_pool2d, whose candidates are one per tap)."""
    image, pixels, pixel_ok, c, channel_ok = image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES,
                                                        WIDE_INDEX, BLOCK_P, BLOCK_C)
    in_row = pixels // in_width
    in_col = pixels % in_width
    go_base = grad_out_ptr + per_pixel(image * go_stride_n, SPAN_IMAGES) + (c * go_stride_c)[None, :]
    if ADAPTIVE:
        first_row = (in_row * out_height) // in_height
        end_row = ((in_row + 1) * out_height + in_height - 1) // in_height
        first_col = (in_col * out_width) // in_width
        end_col = ((in_col + 1) * out_width + in_width - 1) // in_width
    acc = tl.zeros((BLOCK_P, BLOCK_C), ACCUMULATOR)
    for i in range(MAX_H):
        for j in range(MAX_W):
            if ADAPTIVE:
                out_row = first_row + i
                out_col = first_col + j
                reaches = (out_row < end_row) & (out_col < end_col)
            else:
                out_row, out_col, reaches = window_through_tap(in_row, in_col, i, j, out_height, out_width, STRIDE_H,
                                                               STRIDE_W, pad_h, pad_w, 1, 1)
            reaches = pixel_ok & reaches
            _, _, _, _, divisor = _window(out_row, out_col, in_height, in_width, out_height, out_width, pad_h,
                                          pad_w, divisor_override, KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, ADAPTIVE,
                                          COUNT_INCLUDE_PAD, HAS_DIVISOR)
            grad = tl.load(go_base + (out_row * go_stride_h + out_col * go_stride_w)[:, None],
                           mask=reaches[:, None] & channel_ok[None, :], other=0.0).to(ACCUMULATOR)
            acc += grad / tl.where(reaches, divisor, 1.0).to(ACCUMULATOR)[:, None]
    gi_offsets = (image * gi_stride_n + plane_offsets(pixels, in_width, gi_stride_h, gi_stride_w, DENSE_IN)
                  )[:, None] + (c * gi_stride_c)[None, :]
    tl.store(grad_in_ptr + gi_offsets, acc.to(grad_in_ptr.dtype.element_ty),
             mask=pixel_ok[:, None] & channel_ok[None, :])


@triton.jit
def _global_avg_pool_kernel(
        x_ptr, out_ptr, channels, in_width, plane_pixels, x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        out_stride_n, out_stride_c, ACCUMULATOR: tl.constexpr, DENSE_IN: tl.constexpr, WIDE_INDEX: tl.constexpr,
        BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[n, c] = mean of x[n, c] over its H·W pixels: [pixels x channels] tiles summed down."""
    image = widen(tl.program_id(0), WIDE_INDEX)
    c = block_indices(tl.program_id(1), BLOCK_C, WIDE_INDEX)
    channel_ok = c < channels
    x_base = x_ptr + image * x_stride_n + (c * x_stride_c)[None, :]
    total = tl.zeros((BLOCK_S, BLOCK_C), ACCUMULATOR)
    for first in range(0, plane_pixels, BLOCK_S):
        pixels = first + tl.arange(0, BLOCK_S)
        mask = (pixels < plane_pixels)[:, None] & channel_ok[None, :]
        total += tl.load(x_base + plane_offsets(pixels, in_width, x_stride_h, x_stride_w, DENSE_IN)[:, None],
                         mask=mask, other=0.0).to(ACCUMULATOR)
    mean = tl.sum(total, axis=0) / plane_pixels
    tl.store(out_ptr + image * out_stride_n + c * out_stride_c, mean.to(out_ptr.dtype.element_ty), mask=channel_ok)


def _blocks(channel_stride):
    """(BLOCK_P, BLOCK_C) for a tensor whose channel stride is ``channel_stride``."""
    return channel_blocks(channel_stride, interpreter=(4096, 16), channels_last=(16, 64), nchw=(256, 4))


def _accumulator(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def adaptive_extent(in_size, out_size):
    """The most input pixels in one adaptive window, and the most windows over one input pixel,
    along an axis of ``in_size`` pooled to ``out_size`` (both > 0)."""
    windows = [(-(-(p + 1) * in_size // out_size)) - (p * in_size // out_size) for p in range(out_size)]
    covers = [(-(-(h + 1) * out_size // in_size)) - (h * out_size // in_size) for h in range(in_size)]
    return max(windows), max(covers)


def _constexprs(kernel_size, stride, adaptive_max, count_include_pad, divisor_override):
    """The window's compile-time description: the kernel size and stride (avg_pool2d), or
    ``adaptive_max`` (MAX_H, MAX_W) for adaptive pooling (kernel_size None)."""
    adaptive = kernel_size is None
    kernel_size, stride = ((1, 1), (1, 1)) if adaptive else (kernel_size, stride)
    max_h, max_w = adaptive_max if adaptive else kernel_size
    return dict(KERNEL_H=kernel_size[0], KERNEL_W=kernel_size[1], STRIDE_H=stride[0], STRIDE_W=stride[1],
                MAX_H=max_h, MAX_W=max_w, ADAPTIVE=adaptive, COUNT_INCLUDE_PAD=bool(count_include_pad),
                HAS_DIVISOR=divisor_override is not None)


def forward(x, out, *, kernel_size=None, stride=None, padding=(0, 0), count_include_pad=True, divisor_override=None):
    """Average-pool x [N, C, H, W] into out [N, C, OH, OW]: avg_pool2d's windows when
    ``kernel_size`` is given, else adaptive pooling to out's size (a 1x1 output as one global
    reduction). Returns the number of launches."""
    channels, (in_height, in_width), (out_height, out_width) = x.shape[1], x.shape[2:], out.shape[2:]
    wide = needs_wide_index(x, out)
    if kernel_size is None and out_height == out_width == 1:
        block_c = channel_blocks(x.stride(1), interpreter=16, channels_last=64, nchw=8)
        _global_avg_pool_kernel[(x.shape[0], triton.cdiv(channels, block_c))](
            x, out, channels, in_width, in_height * in_width, *x.stride(), out.stride(0), out.stride(1),
            ACCUMULATOR=_accumulator(x.dtype), DENSE_IN=dense_planes(x), WIDE_INDEX=wide,
            BLOCK_S=GLOBAL_BLOCK_S if x.stride(1) == 1 else 4 * GLOBAL_BLOCK_S, BLOCK_C=block_c)
        return 1
    adaptive_max = None
    if kernel_size is None:
        adaptive_max = tuple(adaptive_extent(i, o)[0] for i, o in zip(x.shape[2:], out.shape[2:]))
    grid, pixel_blocks, span, block_p, block_c = pixel_tiles(x.shape[0], out_height * out_width, channels,
                                                             _blocks(out.stride(1)))
    _avg_pool_forward_kernel[grid](
        x, out, pixel_blocks, x.shape[0], channels, in_height, in_width, out_height, out_width, out_height * out_width,
        *padding, 1 if divisor_override is None else int(divisor_override), *x.stride(), *out.stride(),
        **_constexprs(kernel_size, stride, adaptive_max, count_include_pad, divisor_override),
        ACCUMULATOR=_accumulator(x.dtype), DENSE_OUT=dense_planes(out), SPAN_IMAGES=span, WIDE_INDEX=wide,
        BLOCK_P=block_p, BLOCK_C=block_c)
    return 1


def backward(grad_out, grad_in, *, kernel_size=None, stride=None, padding=(0, 0), count_include_pad=True,
             divisor_override=None):
    """grad_in [N, C, H, W] gathers grad_out / divisor from every window containing each pixel.
    One launch."""
    channels, (in_height, in_width), (out_height, out_width) = grad_in.shape[1], grad_in.shape[2:], grad_out.shape[2:]
    adaptive_max = None
    if kernel_size is None:
        adaptive_max = tuple(adaptive_extent(i, o)[1] for i, o in zip(grad_in.shape[2:], grad_out.shape[2:]))
    grid, pixel_blocks, span, block_p, block_c = pixel_tiles(grad_in.shape[0], in_height * in_width, channels,
                                                             _blocks(grad_in.stride(1)))
    _avg_pool_backward_kernel[grid](
        grad_out, grad_in, pixel_blocks, grad_in.shape[0], channels, in_height, in_width, out_height, out_width, in_height * in_width,
        *padding, 1 if divisor_override is None else int(divisor_override), *grad_out.stride(), *grad_in.stride(),
        **_constexprs(kernel_size, stride, adaptive_max, count_include_pad, divisor_override),
        ACCUMULATOR=_accumulator(grad_in.dtype), DENSE_IN=dense_planes(grad_in),
        SPAN_IMAGES=span, WIDE_INDEX=needs_wide_index(grad_out, grad_in), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1
