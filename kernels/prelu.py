"""PReLU: y = x where x > 0, a[c] · x elsewhere, with a learnable slope per channel (or one for
all); backward dx = dy where x > 0, a[c] · dy elsewhere, and da[c] = the sum of dy · x over every
element of channel c where x <= 0 (torch's _prelu_kernel_backward; a NaN x takes the slope's
branch, as torch's ``x > 0`` comparison sends it).

x, y, dy, dx are [N, C, S] (S: the trailing dims flattened, each plane one run; one channel when
torch's PReLU has none). Products and sums are fp32, rounded once.

Bytes: forward reads x and writes y; backward reads dy and x and writes dx (the slopes aside).
Launch grids:
  forward   indexing.pixel_tiles: (N · cdiv(S, BLOCK_P), cdiv(C, BLOCK_C)), tiles running on
            across images where planes are smaller than a tile
  backward  (cdiv(C, BLOCK_C), N, slices): each program walks its slice of one image's plane,
            writing dx and summing the slope's terms into an fp32 partial per (slice, image);
            kernels/slicing.py's ``_sum_slices_kernel`` adds the N · slices partials in a fixed
            order (grid (cdiv(C, SUM_BLOCK),)): deterministic, no atomics.
"""
import torch
import triton
import triton.language as tl

from .indexing import image_tile, needs_wide_index, per_pixel, pixel_tiles
from .slicing import (load_plane_pair, plane_bases, plane_blocks, plane_slices, plane_walk_blocks,
                      plane_walk_program, sum_partials)

@triton.jit
def _prelu_forward_kernel(
        x_ptr, slope_ptr, y_ptr, images, plane_pixels, channels, pixel_blocks,
        x_stride_n, x_stride_c, x_stride_p, y_stride_n, y_stride_c, y_stride_p, slope_stride,
        SPAN_IMAGES: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    image, pixels, pixel_ok, c, c_ok = image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES,
                                                  WIDE_INDEX, BLOCK_P, BLOCK_C)
    mask = pixel_ok[:, None] & c_ok[None, :]
    slope = tl.load(slope_ptr + c * slope_stride, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    x = tl.load(x_ptr + per_pixel(image * x_stride_n, SPAN_IMAGES) + (pixels * x_stride_p)[:, None]
                + (c * x_stride_c)[None, :], mask=mask, other=0.0).to(tl.float32)
    y = tl.where(x > 0.0, x, slope * x)
    tl.store(y_ptr + per_pixel(image * y_stride_n, SPAN_IMAGES) + (pixels * y_stride_p)[:, None]
             + (c * y_stride_c)[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _prelu_backward_kernel(
        dy_ptr, x_ptr, slope_ptr, dx_ptr, partial_ptr, images, plane_pixels, channels, pixels_per_slice,
        dy_stride_n, dy_stride_c, dy_stride_p, x_stride_n, x_stride_c, x_stride_p,
        dx_stride_n, dx_stride_c, dx_stride_p, slope_stride,
        WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """One (channel block, image, slice of its plane): dx, and the slope's partial sum at row
    (slice · N + image) of the [slices · N, C] partials."""
    image, split, c, c_ok, start, end, offsets = plane_walk_program(channels, plane_pixels, pixels_per_slice,
                                                                    WIDE_INDEX, BLOCK_P, BLOCK_C)
    slope = tl.load(slope_ptr + c * slope_stride, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    dy_base, x_base, dx_base = plane_bases(dy_ptr, x_ptr, dx_ptr, image, c, dy_stride_n, dy_stride_c, x_stride_n,
                                           x_stride_c, dx_stride_n, dx_stride_c)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(start, end, BLOCK_P):
        pixels = first + offsets
        dy, x, mask = load_plane_pair(dy_base, x_base, pixels, end, c_ok, dy_stride_p, x_stride_p)
        positive = x > 0.0
        tl.store(dx_base + (pixels * dx_stride_p)[:, None], tl.where(positive, dy, slope * dy).to(
            dx_ptr.dtype.element_ty), mask=mask)
        acc += tl.where(positive, 0.0, dy * x)
    tl.store(partial_ptr + (split * images + image) * channels + c,
             tl.sum(acc, axis=0).to(partial_ptr.dtype.element_ty), mask=c_ok)


# ----------------------------------------------------------------------------------------------
# Launchers. They trust their caller (fastcnn/ops/prelu.py): x, y, dy, dx are [N, C, S] views
# (each plane one run), the slopes a vector of C values (stride 0 for one shared slope). Each
# returns the number of kernels it launched.

def forward(x, slope, y):
    """y = prelu(x, slope) into the preallocated ``y``."""
    images, channels, plane_pixels = x.shape
    grid, pixel_blocks, span, block_p, block_c = pixel_tiles(images, plane_pixels, channels,
                                                             plane_blocks(x.stride(1)))
    _prelu_forward_kernel[grid](
        x, slope, y, images, plane_pixels, channels, pixel_blocks, *x.stride(), *y.stride(), slope.stride(0),
        SPAN_IMAGES=span, WIDE_INDEX=needs_wide_index(x, y), BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4)
    return 1


def backward_slices(images, channels, plane_pixels, channel_stride, device, sms=None):
    """(pixels per slice, slices) of the backward's walk over each plane (slicing.plane_slices)."""
    return plane_slices(images, channels, plane_pixels, channel_stride, device, sms)


def backward(dy, x, slope, dx, dslope):
    """dx into ``dx`` and the slopes' gradient, per channel, into the dense [C] ``dslope``."""
    images, channels, plane_pixels = x.shape
    block_p, block_c = plane_walk_blocks(x.stride(1), plane_pixels)
    pixels_per_slice, slices = backward_slices(images, channels, plane_pixels, x.stride(1), x.device)
    rows = slices * images
    # one row: the sums are the gradient itself (rounded to its dtype as stored)
    partial = dslope if rows == 1 else torch.empty((rows, channels), dtype=torch.float32, device=x.device)
    _prelu_backward_kernel[(triton.cdiv(channels, block_c), images, slices)](
        dy, x, slope, dx, partial, images, plane_pixels, channels, pixels_per_slice, *dy.stride(), *x.stride(),
        *dx.stride(), slope.stride(0), WIDE_INDEX=needs_wide_index(dy, x, dx), BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=4)
    return 1 + sum_partials(partial, dslope, rows)
