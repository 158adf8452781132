"""max_pool2d: forward with window-local argmax, and a gather backward.

Forward: out[n, c, p, q] = max over taps (r, s) of x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw],
with taps in the padding skipped (implicit -inf padding). Values are compared exactly: 16-bit
floats widened to fp32, float64 and the integer types in their own dtype. Ties go to the first
tap in row-major scan order and NaN wins (the last NaN), exactly as PyTorch's kernels choose. The
chosen tap r*S + s is stored per output element in a compact buffer (uint8 when the window has
at most 256 taps) for backward; PyTorch's int64 flat indices (h*W + w within each plane) are
written only when the caller asks for them.

Backward (deterministic gather, no atomics; sums in fp32, fp64 for float64): dx[n, c, h, w] =
the sum of dy[n, c, p, q] over the windows (p, q) whose chosen tap lands on (h, w): for tap
(r, s), p = (h + ph - r*dh) / sh when exact and in range.

With batch norm in the prologue (kernels/prologue.py: a ResNet stem's conv → bn → relu →
max-pool), the forward pools act(bn(x)) computed from x as it loads it, rounded to x's dtype as
a stored act(bn(x)) would be, and the backward (EPILOGUE) takes the gathered gradient through
act'(bn(x)) and sums g and g·x̂ per channel for batch norm's backward (kernels/moments.py): the
normalised tensor is neither written, read back, nor read for the sums.

Bytes: forward reads x once (taps overlap in cache) and writes out plus one byte per output
(plus 8 with indices); backward reads dy and the taps byte per tap per input element (mostly
cache hits) and writes dx. FLOPs: none to speak of.
Launch grids: (N·cdiv(P·Q, BLOCK_P), cdiv(C, BLOCK_C)) forward; (N·cdiv(H·W, BLOCK_P),
cdiv(C, BLOCK_C)) backward; tiles of pixels x channels of one image, read through the tensors'
strides. Pixels are numbered within an image (no per-element division by the batch, 32-bit
window arithmetic), and a dense plane's pixels are written as one run: NCHW stores move 128 bits
at a time, as channels_last ones do along the channels. A plane smaller than BLOCK_P (a pooled
4x4 map) would leave most of such a tile empty: there the tiles run on across images
(cdiv(N·P·Q, BLOCK_P) or cdiv(N·H·W, BLOCK_P) blocks of pixels; ``indexing.pixel_tiles``).
"""
import torch
import triton
import triton.language as tl

from . import prologue as input_prologue
from .indexing import dense_planes, image_tile, needs_wide_index, per_pixel, pixel_tiles, plane_offsets, window_through_tap
from .moments import MOMENT_ROWS, store_tile_sums
from .prologue import through_activation, transform, transform_vectors
from .tiles import channel_blocks


@triton.jit
def _max_pool2d_forward_kernel(
        x_ptr, out_ptr, taps_ptr, indices_ptr,
        pixel_blocks, images, channels, in_height, in_width, out_height, out_width,
        plane_pixels, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        out_stride_n, out_stride_c, out_stride_h, out_stride_w,
        taps_stride_n, taps_stride_c, taps_stride_h, taps_stride_w,
        stats_ptr, norm_parameter, stats_stride,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
        COMPARE_TYPE: tl.constexpr, LOWEST: tl.constexpr, WRITE_INDICES: tl.constexpr, DENSE_OUT: tl.constexpr,
        PROLOGUE: tl.constexpr,
        KIND: tl.constexpr, SPAN_IMAGES: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr,
        BLOCK_C: tl.constexpr):
    image, pixels, pixel_ok, c, channel_ok = image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES,
                                                         WIDE_INDEX, BLOCK_P, BLOCK_C)
    oh = pixels // out_width
    ow = pixels % out_width
    x_base = x_ptr + per_pixel(image * x_stride_n, SPAN_IMAGES) + (c * x_stride_c)[None, :]
    top = oh * STRIDE_H - pad_h
    left = ow * STRIDE_W - pad_w
    if PROLOGUE:  # a tile's channels are fixed: the batch norm's vectors load once
        centre, scale, shift = transform_vectors(stats_ptr, stats_stride, c, channel_ok, x_ptr)

    # Values are compared in COMPARE_TYPE: fp32 for fp16/bf16/fp32 (exact widening), the input's
    # own dtype otherwise, so float64 and integers (int64 included) pool without rounding.
    best = tl.full((BLOCK_P, BLOCK_C), LOWEST, COMPARE_TYPE)
    best_tap = tl.full((BLOCK_P, BLOCK_C), -1, tl.int32)
    for tap in range(KERNEL_H * KERNEL_W):
        r = tap // KERNEL_W
        ih = top + r * dilation_h
        iw = left + (tap - r * KERNEL_W) * dilation_w
        inside = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        loaded = inside[:, None] & channel_ok[None, :]
        value = tl.load(x_base + (ih * x_stride_h + iw * x_stride_w)[:, None], mask=loaded, other=LOWEST)
        if PROLOGUE:  # pool act(bn(x)), rounded to x's dtype as a stored act(bn(x)) would be (lanes
            # outside the input, loaded as LOWEST, come out unspecified: ``take`` never picks them)
            value = transform(value, loaded, centre, scale, shift, KIND, norm_parameter)
        value = value.to(COMPARE_TYPE)
        # PyTorch's rule: strictly greater, or NaN; the first tap inside the input starts the scan.
        take = inside[:, None] & ((value > best) | (value != value) | (best_tap < 0))
        best = tl.where(take, value, best)
        best_tap = tl.where(take, tap, best_tap)

    # out, taps and indices are laid out alike (the caller allocates them so).
    mask = pixel_ok[:, None] & channel_ok[None, :]
    out_offsets = (image * out_stride_n + plane_offsets(pixels, out_width, out_stride_h, out_stride_w, DENSE_OUT)
                   )[:, None] + (c * out_stride_c)[None, :]
    tl.store(out_ptr + out_offsets, best.to(out_ptr.dtype.element_ty), mask=mask)
    taps_offsets = (image * taps_stride_n + plane_offsets(pixels, out_width, taps_stride_h, taps_stride_w, DENSE_OUT)
                    )[:, None] + (c * taps_stride_c)[None, :]
    tl.store(taps_ptr + taps_offsets, best_tap.to(taps_ptr.dtype.element_ty), mask=mask)
    if WRITE_INDICES:
        best_r = best_tap // KERNEL_W
        row = top[:, None] + best_r * dilation_h
        col = left[:, None] + (best_tap - best_r * KERNEL_W) * dilation_w
        tl.store(indices_ptr + out_offsets, row.to(tl.int64) * in_width + col, mask=mask)


@triton.jit
def _max_pool2d_backward_kernel(
        grad_out_ptr, taps_ptr, grad_in_ptr,
        pixel_blocks, images, channels, in_height, in_width, out_height, out_width,
        plane_pixels, pad_h, pad_w, dilation_h, dilation_w,
        go_stride_n, go_stride_c, go_stride_h, go_stride_w,
        taps_stride_n, taps_stride_c, taps_stride_h, taps_stride_w,
        gi_stride_n, gi_stride_c, gi_stride_h, gi_stride_w,
        x_ptr, x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        stats_ptr, norm_parameter, stats_stride,
        sums_ptr, sum_slots,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
        ACCUMULATOR: tl.constexpr, DENSE_IN: tl.constexpr, EPILOGUE: tl.constexpr, KIND: tl.constexpr,
        SPAN_IMAGES: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    image, pixels, pixel_ok, c, channel_ok = image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES,
                                                         WIDE_INDEX, BLOCK_P, BLOCK_C)
    ih = pixels // in_width
    iw = pixels % in_width
    go_base = grad_out_ptr + per_pixel(image * go_stride_n, SPAN_IMAGES) + (c * go_stride_c)[None, :]
    taps_base = taps_ptr + per_pixel(image * taps_stride_n, SPAN_IMAGES) + (c * taps_stride_c)[None, :]

    acc = tl.zeros((BLOCK_P, BLOCK_C), ACCUMULATOR)
    for tap in range(KERNEL_H * KERNEL_W):
        r = tap // KERNEL_W
        oh, ow, reaches = window_through_tap(ih, iw, r, tap - r * KERNEL_W, out_height, out_width, STRIDE_H, STRIDE_W,
                                             pad_h, pad_w, dilation_h, dilation_w)
        mask = (pixel_ok & reaches)[:, None] & channel_ok[None, :]
        offsets = (oh * go_stride_h + ow * go_stride_w)[:, None]
        chosen = tl.load(taps_base + (oh * taps_stride_h + ow * taps_stride_w)[:, None], mask=mask, other=-1)
        hit = mask & (chosen.to(tl.int32) == tap)
        acc += tl.load(go_base + offsets, mask=hit, other=0.0).to(ACCUMULATOR)
    if EPILOGUE:
        # This is the gradient of act(bn(x)), the pool's input with the prologue: take it through
        # the activation's derivative at u = bn(x) recomputed from x, and sum g and g·x̂ per channel
        # for batch norm's backward (kernels/moments.py), as conv2d's grad-input epilogue does.
        valid = pixel_ok[:, None] & channel_ok[None, :]
        x = tl.load(x_ptr + per_pixel(image * x_stride_n, SPAN_IMAGES) + (ih * x_stride_h + iw * x_stride_w)[:, None]
                    + (c * x_stride_c)[None, :], mask=valid, other=0.0).to(tl.float32)
        acc, acc_x_hat = through_activation(acc, x, valid, stats_ptr, stats_stride, c, channel_ok, norm_parameter,
                                            KIND)
        store_tile_sums(acc, acc_x_hat, channel_ok, c, tl.program_id(0), sums_ptr, 0, sum_slots, channels, BLOCK_P)
    gi_offsets = (image * gi_stride_n + plane_offsets(pixels, in_width, gi_stride_h, gi_stride_w, DENSE_IN)
                  )[:, None] + (c * gi_stride_c)[None, :]
    tl.store(grad_in_ptr + gi_offsets, acc.to(grad_in_ptr.dtype.element_ty),
             mask=pixel_ok[:, None] & channel_ok[None, :])


def _blocks(channel_stride, epilogue=False):
    """(BLOCK_P, BLOCK_C) for a tensor whose channel stride is ``channel_stride``; the backward's
    batch-norm epilogue writes a partial sum per MOMENT_ROWS pixels of a tile (at least one per
    tile), so its tiles are taller: 128 pixels, not 16, keep those partials to 1/64 of the
    gradient's bytes (fp32 pairs over 128 bf16 values)."""
    if epilogue:
        return channel_blocks(channel_stride, interpreter=(4096, 16), channels_last=(128, 32), nchw=(256, 4))
    return channel_blocks(channel_stride, interpreter=(4096, 16), channels_last=(16, 64), nchw=(256, 4))


def _backward_tiles(input_shape, channel_stride, epilogue):
    """``pixel_tiles`` of the backward over an input gradient of ``input_shape``."""
    return pixel_tiles(input_shape[0], input_shape[2] * input_shape[3], input_shape[1],
                       _blocks(channel_stride, epilogue))


def backward_sum_slots(input_shape, channel_stride):
    """Rows of the [slots, 2, C] sums the backward's epilogue fills for an input of
    ``input_shape`` whose channel stride is ``channel_stride``: per pixel tile, one per
    MOMENT_ROWS of its pixels (at least one), tiles in launch order."""
    grid, _, _, block_p, _ = _backward_tiles(input_shape, channel_stride, True)
    return grid[0] * max(1, block_p // MOMENT_ROWS)


def _geometry(kernel_size, stride, padding, dilation):
    """The runtime geometry arguments (padding, dilation) and the constexprs: the window and the
    stride are compiled in (a network pools with a few of them), so that the tap loop and the
    window arithmetic divide by constants."""
    constexprs = dict(KERNEL_H=kernel_size[0], KERNEL_W=kernel_size[1], STRIDE_H=stride[0], STRIDE_W=stride[1])
    return (*padding, *dilation), constexprs


def comparison(dtype):
    """(the Triton dtype a window's values are compared in, the lowest value of that dtype, where
    a window starts): fp32 for the 16-bit floats, which widen to it exactly (and which Triton's
    interpreter does not compare correctly in their own dtype); the input's dtype otherwise."""
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        return tl.float32, float("-inf")
    if dtype == torch.float64:
        return tl.float64, float("-inf")
    names = {torch.uint8: tl.uint8, torch.int8: tl.int8, torch.int16: tl.int16, torch.int32: tl.int32,
             torch.int64: tl.int64}
    return names[dtype], torch.iinfo(dtype).min


def forward(x, out, taps, indices, *, kernel_size, stride, padding, dilation, prologue=None):
    """Pool ``x`` [N, C, H, W] into ``out``; the chosen tap of each window into ``taps`` (laid out
    like ``out``); PyTorch's flat indices into ``indices`` (likewise) when it is not None. With a
    ``prologue`` (kernels/prologue.py), pool act(bn(x)) instead. Returns the number of launches."""
    plane_pixels = out.shape[2] * out.shape[3]
    grid, pixel_blocks, span, block_p, block_c = pixel_tiles(out.shape[0], plane_pixels, out.shape[1],
                                                             _blocks(out.stride(1)))
    compare_type, lowest = comparison(x.dtype)
    geometry, constexprs = _geometry(kernel_size, stride, padding, dilation)
    normalise, prologue_flags = input_prologue.arguments(prologue, x)
    _max_pool2d_forward_kernel[grid](
        x, out, taps, indices if indices is not None else taps,
        pixel_blocks, x.shape[0], x.shape[1], x.shape[2], x.shape[3], out.shape[2], out.shape[3], plane_pixels,
        *geometry, *x.stride(), *out.stride(), *taps.stride(), *normalise, **constexprs, **prologue_flags,
        COMPARE_TYPE=compare_type, LOWEST=lowest, WRITE_INDICES=indices is not None,
        DENSE_OUT=dense_planes(out) and dense_planes(taps), SPAN_IMAGES=span, WIDE_INDEX=needs_wide_index(x, out, taps),
        BLOCK_P=block_p, BLOCK_C=block_c)
    return 1


def backward(grad_out, taps, grad_in, *, kernel_size, stride, padding, dilation, epilogue=None):
    """grad_in [N, C, H, W] gathers grad_out from every window that chose each element. With
    ``epilogue`` = (x, prologue, sums): the pool's input was act(bn(x)) (``prologue``,
    kernels/prologue.py); grad_in receives g = act'(bn(x))·(that gradient) instead, and ``sums``
    (fp32 [backward_sum_slots, 2, C]) the per-channel sums of g and g·x̂ of each tile."""
    plane_pixels = grad_in.shape[2] * grad_in.shape[3]
    grid, pixel_blocks, span, block_p, block_c = _backward_tiles(grad_in.shape, grad_in.stride(1),
                                                                 epilogue is not None)
    geometry, constexprs = _geometry(kernel_size, stride, padding, dilation)
    epilogue_args, epilogue_flags, x, sums = input_prologue.epilogue_arguments(epilogue, grad_in)
    _max_pool2d_backward_kernel[grid](
        grad_out, taps, grad_in, pixel_blocks, grad_in.shape[0], grad_in.shape[1], grad_in.shape[2], grad_in.shape[3],
        grad_out.shape[2], grad_out.shape[3], plane_pixels, *geometry,
        *grad_out.stride(), *taps.stride(), *grad_in.stride(), *epilogue_args,
        sums.shape[0] if epilogue is not None else 0, **constexprs, **epilogue_flags,
        ACCUMULATOR=tl.float64 if grad_in.dtype == torch.float64 else tl.float32, DENSE_IN=dense_planes(grad_in),
        SPAN_IMAGES=span, WIDE_INDEX=needs_wide_index(grad_out, taps, grad_in, x), BLOCK_P=block_p, BLOCK_C=block_c)
    return 1
