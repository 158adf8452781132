"""Squeeze-excitation's gate: y[n, c, h, w] = x[n, c, h, w] · act(s[n, c]), and its backward
dx = dy · act(s), ds[n, c] = act'(s[n, c]) · sum over (h, w) of dy · x: the broadcast multiply
(and the gate's activation, sigmoid or hardsigmoid) that ends torchvision's SqueezeExcitation in
EfficientNet, MobileNetV3 and RegNetY, which eager runs as an activation, a multiply and, in
backward, a multiply and a sum.

x, y, dy, dx are [N, C, H, W] in any layout whose planes are dense (NCHW, channels_last); their
pixels are walked as one run of H·W per plane. The gate is loaded once per program and activated
in fp32; products and sums are fp32, rounded once.

Bytes: forward reads x and writes y (the gate, N·C values, aside); backward reads dy and x and
writes dx (and ds). Launch grids:
  forward   indexing.pixel_tiles: (N · cdiv(H·W, BLOCK_P), cdiv(C, BLOCK_C)), tiles running on
            across images where planes are smaller than a tile (EfficientNet's 7x7 maps)
  backward  (cdiv(C, BLOCK_C), N, slices): each program walks its slice of one image's pixels,
            writing dx and summing dy·x; slices (kernels/slicing.py) only when N·C alone has too
            few tiles to fill the GPU, their fp32 partials summed in a fixed order by
            ``_gate_grad_kernel`` (grid (cdiv(N·C, BLOCK),)), which also applies act'.
"""
import triton
import triton.language as tl

from .activation import activate, activation_grad
from .indexing import image_tile, needs_wide_index, per_pixel, pixel_tiles
from .slicing import (load_plane_pair, plane_bases, plane_blocks, plane_slices, plane_walk_blocks,
                      plane_walk_program)

GATE_BLOCK = 1024


@triton.jit
def _gate_forward_kernel(
        x_ptr, gate_ptr, y_ptr, images, plane_pixels, channels, pixel_blocks,
        x_stride_n, x_stride_c, x_stride_p, y_stride_n, y_stride_c, y_stride_p, gate_stride_n, gate_stride_c,
        parameter,
        KIND: tl.constexpr, SPAN_IMAGES: tl.constexpr, WIDE_INDEX: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    image, pixels, pixel_ok, c, c_ok = image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES,
                                                  WIDE_INDEX, BLOCK_P, BLOCK_C)
    mask = pixel_ok[:, None] & c_ok[None, :]
    if SPAN_IMAGES:  # one gate value per (pixel's image, channel)
        gate_offsets = (image * gate_stride_n)[:, None] + (c * gate_stride_c)[None, :]
    else:
        gate_offsets = (image * gate_stride_n + c * gate_stride_c)[None, :]
    gate = activate(tl.load(gate_ptr + gate_offsets, mask=mask, other=0.0).to(tl.float32), KIND, parameter)
    x = tl.load(x_ptr + per_pixel(image * x_stride_n, SPAN_IMAGES) + (pixels * x_stride_p)[:, None]
                + (c * x_stride_c)[None, :], mask=mask, other=0.0)
    tl.store(y_ptr + per_pixel(image * y_stride_n, SPAN_IMAGES) + (pixels * y_stride_p)[:, None]
             + (c * y_stride_c)[None, :], (x.to(tl.float32) * gate).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gate_backward_kernel(
        dy_ptr, x_ptr, gate_ptr, dx_ptr, sums_ptr, plane_pixels, channels, pixels_per_slice,
        dy_stride_n, dy_stride_c, dy_stride_p, x_stride_n, x_stride_c, x_stride_p,
        dx_stride_n, dx_stride_c, dx_stride_p, gate_stride_n, gate_stride_c, sums_stride_slice, parameter,
        KIND: tl.constexpr, FINISH: tl.constexpr, WIDE_INDEX: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """One (channel block, image, slice of its pixels): dx = dy · act(s) and the sum of dy · x, as
    ds itself (FINISH: one slice, act' applied here) or as an fp32 partial."""
    image, split, c, c_ok, start, end, offsets = plane_walk_program(channels, plane_pixels, pixels_per_slice,
                                                                    WIDE_INDEX, BLOCK_P, BLOCK_C)
    logits = tl.load(gate_ptr + image * gate_stride_n + c * gate_stride_c, mask=c_ok, other=0.0).to(tl.float32)
    gate = activate(logits, KIND, parameter)[None, :]
    dy_base, x_base, dx_base = plane_bases(dy_ptr, x_ptr, dx_ptr, image, c, dy_stride_n, dy_stride_c, x_stride_n,
                                           x_stride_c, dx_stride_n, dx_stride_c)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(start, end, BLOCK_P):
        pixels = first + offsets
        dy, x, mask = load_plane_pair(dy_base, x_base, pixels, end, c_ok, dy_stride_p, x_stride_p)
        tl.store(dx_base + (pixels * dx_stride_p)[:, None], (dy * gate).to(dx_ptr.dtype.element_ty), mask=mask)
        acc += dy * x
    total = tl.sum(acc, axis=0)
    if FINISH:
        total = activation_grad(logits, total, KIND, parameter)
    tl.store(sums_ptr + split * sums_stride_slice + image * channels + c, total.to(sums_ptr.dtype.element_ty),
             mask=c_ok)


@triton.jit
def _gate_grad_kernel(partial_ptr, gate_ptr, ds_ptr, count, channels, slices, gate_stride_n, gate_stride_c,
                      ds_stride_n, ds_stride_c, parameter, KIND: tl.constexpr, BLOCK: tl.constexpr):
    """ds[n, c] = act'(s[n, c]) · the sum over slices of partial[slice, n, c], in slice order."""
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = index < count
    image = index // channels
    c = index - image * channels
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for split in range(0, slices):
        total += tl.load(partial_ptr + split * count + index, mask=ok, other=0.0)
    logits = tl.load(gate_ptr + image * gate_stride_n + c * gate_stride_c, mask=ok, other=0.0).to(tl.float32)
    tl.store(ds_ptr + image * ds_stride_n + c * ds_stride_c,
             activation_grad(logits, total, KIND, parameter).to(ds_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# Launchers. They trust their caller (fastcnn/ops/squeeze_excitation.py): x, y, dy, dx are
# [N, C, S] views (S = H·W, each plane one run), the gate and ds [N, C]. Each returns the number
# of kernels it launched.

def forward(x, gate, y, *, kind, parameter):
    """y = x · act(gate) into the preallocated ``y``."""
    images, channels, plane_pixels = x.shape
    grid, pixel_blocks, span, block_p, block_c = pixel_tiles(images, plane_pixels, channels,
                                                             plane_blocks(x.stride(1)))
    _gate_forward_kernel[grid](
        x, gate, y, images, plane_pixels, channels, pixel_blocks, *x.stride(), *y.stride(), *gate.stride(),
        float(parameter), KIND=kind, SPAN_IMAGES=span, WIDE_INDEX=needs_wide_index(x, y), BLOCK_P=block_p,
        BLOCK_C=block_c, num_warps=4)
    return 1


def backward_slices(images, channels, plane_pixels, channel_stride, device, sms=None):
    """(pixels per slice, slices) of the backward's walk over each plane (slicing.plane_slices)."""
    return plane_slices(images, channels, plane_pixels, channel_stride, device, sms)


def backward(dy, x, gate, dx, ds, *, kind, parameter):
    """dx = dy · act(gate) into ``dx``, ds = act'(gate) · the sum of dy · x over each plane into the
    dense [N, C] ``ds``."""
    import torch

    images, channels, plane_pixels = x.shape
    block_p, block_c = plane_walk_blocks(x.stride(1), plane_pixels)
    pixels_per_slice, slices = backward_slices(images, channels, plane_pixels, x.stride(1), x.device)
    sums = ds if slices == 1 else torch.empty((slices, images, channels), dtype=torch.float32, device=x.device)
    _gate_backward_kernel[(triton.cdiv(channels, block_c), images, slices)](
        dy, x, gate, dx, sums, plane_pixels, channels, pixels_per_slice, *dy.stride(), *x.stride(), *dx.stride(),
        *gate.stride(), images * channels, float(parameter), KIND=kind, FINISH=slices == 1,
        WIDE_INDEX=needs_wide_index(dy, x, dx), BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4)
    if slices == 1:
        return 1
    _gate_grad_kernel[(triton.cdiv(images * channels, GATE_BLOCK),)](
        sums, gate, ds, images * channels, channels, slices, *gate.stride(), *ds.stride(), float(parameter),
        KIND=kind, BLOCK=GATE_BLOCK)
    return 2
