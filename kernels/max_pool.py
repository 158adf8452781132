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

Bytes: forward reads x once (taps overlap in cache) and writes out plus one byte per output
(plus 8 with indices); backward reads dy and the taps byte per tap per input element (mostly
cache hits) and writes dx. FLOPs: none to speak of.
Launch grids: (cdiv(N·P·Q, BLOCK_P), cdiv(C, BLOCK_C)) forward; (cdiv(N·H·W, BLOCK_P),
cdiv(C, BLOCK_C)) backward; tiles of pixels x channels, read through the tensors' strides.
"""
import torch
import triton
import triton.language as tl

from .indexing import pixel_coordinates, window_through_tap
from .tiles import channel_blocks


@triton.jit
def _max_pool2d_forward_kernel(
        x_ptr, out_ptr, taps_ptr, indices_ptr,
        num_pixels, channels, in_height, in_width, out_height, out_width,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        out_stride_n, out_stride_c, out_stride_h, out_stride_w,
        taps_stride_n, taps_stride_c, taps_stride_h, taps_stride_w,
        COMPARE_TYPE: tl.constexpr, LOWEST: tl.constexpr, WRITE_INDICES: tl.constexpr, BLOCK_P: tl.constexpr,
        BLOCK_C: tl.constexpr):
    pixels = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < num_pixels
    n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < channels
    x_base = x_ptr + (n * x_stride_n)[:, None] + (c * x_stride_c)[None, :]
    top = oh * stride_h - pad_h
    left = ow * stride_w - pad_w

    # Values are compared in COMPARE_TYPE: fp32 for fp16/bf16/fp32 (exact widening), the input's
    # own dtype otherwise, so float64 and integers (int64 included) pool without rounding.
    best = tl.full((BLOCK_P, BLOCK_C), LOWEST, COMPARE_TYPE)
    best_tap = tl.full((BLOCK_P, BLOCK_C), -1, tl.int32)
    for tap in range(kernel_h * kernel_w):
        r = tap // kernel_w
        ih = top + r * dilation_h
        iw = left + (tap - r * kernel_w) * dilation_w
        inside = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        value = tl.load(x_base + (ih * x_stride_h + iw * x_stride_w)[:, None],
                        mask=inside[:, None] & channel_ok[None, :], other=LOWEST).to(COMPARE_TYPE)
        # PyTorch's rule: strictly greater, or NaN; the first tap inside the input starts the scan.
        take = inside[:, None] & ((value > best) | (value != value) | (best_tap < 0))
        best = tl.where(take, value, best)
        best_tap = tl.where(take, tap, best_tap)

    mask = pixel_ok[:, None] & channel_ok[None, :]
    out_offsets = (n * out_stride_n + oh * out_stride_h + ow * out_stride_w)[:, None] + (c * out_stride_c)[None, :]
    tl.store(out_ptr + out_offsets, best.to(out_ptr.dtype.element_ty), mask=mask)
    taps_offsets = (n * taps_stride_n + oh * taps_stride_h + ow * taps_stride_w)[:, None] + (c * taps_stride_c)[None, :]
    tl.store(taps_ptr + taps_offsets, best_tap.to(taps_ptr.dtype.element_ty), mask=mask)
    if WRITE_INDICES:
        best_r = best_tap // kernel_w
        row = top[:, None] + best_r * dilation_h
        col = left[:, None] + (best_tap - best_r * kernel_w) * dilation_w
        tl.store(indices_ptr + out_offsets, row.to(tl.int64) * in_width + col, mask=mask)


@triton.jit
def _max_pool2d_backward_kernel(
        grad_out_ptr, taps_ptr, grad_in_ptr,
        num_pixels, channels, in_height, in_width, out_height, out_width,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        go_stride_n, go_stride_c, go_stride_h, go_stride_w,
        taps_stride_n, taps_stride_c, taps_stride_h, taps_stride_w,
        gi_stride_n, gi_stride_c, gi_stride_h, gi_stride_w,
        ACCUMULATOR: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pixels = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < num_pixels
    n, ih, iw = pixel_coordinates(pixels, in_height, in_width)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < channels
    go_base = grad_out_ptr + (n * go_stride_n)[:, None] + (c * go_stride_c)[None, :]
    taps_base = taps_ptr + (n * taps_stride_n)[:, None] + (c * taps_stride_c)[None, :]

    acc = tl.zeros((BLOCK_P, BLOCK_C), ACCUMULATOR)
    for tap in range(kernel_h * kernel_w):
        r = tap // kernel_w
        oh, ow, reaches = window_through_tap(ih, iw, r, tap - r * kernel_w, out_height, out_width, stride_h, stride_w,
                                             pad_h, pad_w, dilation_h, dilation_w)
        mask = (pixel_ok & reaches)[:, None] & channel_ok[None, :]
        offsets = (oh * go_stride_h + ow * go_stride_w)[:, None]
        chosen = tl.load(taps_base + (oh * taps_stride_h + ow * taps_stride_w)[:, None], mask=mask, other=-1)
        hit = mask & (chosen.to(tl.int32) == tap)
        acc += tl.load(go_base + offsets, mask=hit, other=0.0).to(ACCUMULATOR)
    gi_offsets = (n * gi_stride_n + ih * gi_stride_h + iw * gi_stride_w)[:, None] + (c * gi_stride_c)[None, :]
    tl.store(grad_in_ptr + gi_offsets, acc.to(grad_in_ptr.dtype.element_ty),
             mask=pixel_ok[:, None] & channel_ok[None, :])


def _blocks(channel_stride):
    """(BLOCK_P, BLOCK_C) for a tensor whose channel stride is ``channel_stride``."""
    return channel_blocks(channel_stride, interpreter=(512, 16), channels_last=(16, 64), nchw=(256, 4))


def _geometry(kernel_size, stride, padding, dilation):
    return (*kernel_size, *stride, *padding, *dilation)


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


def forward(x, out, taps, indices, *, kernel_size, stride, padding, dilation):
    """Pool ``x`` [N, C, H, W] into ``out``; the chosen tap of each window into ``taps``; PyTorch's
    flat indices into ``indices`` when it is not None. Returns the number of launches."""
    block_p, block_c = _blocks(out.stride(1))
    num_pixels = out.shape[0] * out.shape[2] * out.shape[3]
    grid = (triton.cdiv(num_pixels, block_p), triton.cdiv(out.shape[1], block_c))
    compare_type, lowest = comparison(x.dtype)
    _max_pool2d_forward_kernel[grid](
        x, out, taps, indices if indices is not None else taps,
        num_pixels, x.shape[1], x.shape[2], x.shape[3], out.shape[2], out.shape[3],
        *_geometry(kernel_size, stride, padding, dilation), *x.stride(), *out.stride(), *taps.stride(),
        COMPARE_TYPE=compare_type, LOWEST=lowest, WRITE_INDICES=indices is not None, BLOCK_P=block_p,
        BLOCK_C=block_c)
    return 1


def backward(grad_out, taps, grad_in, *, kernel_size, stride, padding, dilation):
    """grad_in [N, C, H, W] gathers grad_out from every window that chose each element."""
    block_p, block_c = _blocks(grad_in.stride(1))
    num_pixels = grad_in.shape[0] * grad_in.shape[2] * grad_in.shape[3]
    grid = (triton.cdiv(num_pixels, block_p), triton.cdiv(grad_in.shape[1], block_c))
    _max_pool2d_backward_kernel[grid](
        grad_out, taps, grad_in, num_pixels, grad_in.shape[1], grad_in.shape[2], grad_in.shape[3],
        grad_out.shape[2], grad_out.shape[3], *_geometry(kernel_size, stride, padding, dilation),
        *grad_out.stride(), *taps.stride(), *grad_in.stride(),
        ACCUMULATOR=tl.float64 if grad_in.dtype == torch.float64 else tl.float32, BLOCK_P=block_p, BLOCK_C=block_c)
    return 1
