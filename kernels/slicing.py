"""Cutting a long reduction into slices (split-K) when the output alone has too few tiles to
fill the GPU. Used by conv2d's and linear's grad-weight, conv2d's grad-bias, batch norm's
per-channel statistics and the per-channel walks over planes (squeeze-excitation, PReLU); each
slice writes an fp32 partial that a second kernel merges in a fixed order, so results are
identical run to run (no atomics).

``_sum_slices_kernel``: out[i] = sum over s of partial[s, i]; reads slices·numel fp32 values and
writes numel; grid (cdiv(numel, SUM_BLOCK),).
"""
import torch
import triton
import triton.language as tl

from . import INTERPRETED
from .indexing import block_indices, widen
from .tiles import by_backend, channel_blocks

SUM_BLOCK = 1024

_SM_COUNTS = {}


def sm_count(device):
    """Streaming multiprocessors of ``device``. The interpreter pretends to have 2, so that small
    test problems are sliced and CI exercises the merging."""
    pretended = by_backend(interpreter=2, gpu=None)
    if pretended:
        return pretended
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


def reduction_slices(output_tiles, reduction_length, device, *, min_length, max_slices, granule=128, sms=None):
    """(elements per slice, number of slices) for a reduction of ``reduction_length`` elements
    behind ``output_tiles`` output tiles: enough slices to keep about two programs per SM busy,
    each at least ``min_length`` long so that it pays for writing its partial, at most
    ``max_slices``. Slices start on multiples of ``granule`` elements; none is empty. ``sms``:
    the SM count to size for instead of ``device``'s (fastcnn.estimate plans for a GPU it does
    not have)."""
    length = max(reduction_length, 1)
    occupancy = 2 * (sm_count(device) if sms is None else sms)
    slices = 1
    if output_tiles < occupancy:
        slices = max(1, min(triton.cdiv(occupancy, output_tiles), length // min_length, max_slices))
    per_slice = triton.cdiv(triton.cdiv(length, slices), granule) * granule
    return per_slice, triton.cdiv(length, per_slice)


# The per-channel walks over [N, C, S] planes (the squeeze-excitation gate's and PReLU's
# backward: one program per channel block, image and slice of its plane, summing into a
# per-channel partial): their tiles, and the shortest slice of a plane worth a partial.
MIN_PLANE_PIXELS_PER_SLICE = by_backend(interpreter=16, gpu=1024)
MAX_PLANE_SLICES = 32


def plane_blocks(channel_stride):
    """(pixel block, channel block) of a plane walk: wide channel blocks when channels are
    contiguous (channels_last), wide pixel blocks otherwise (NCHW)."""
    return channel_blocks(channel_stride, interpreter=(256, 16), channels_last=(32, 64), nchw=(256, 4))


def plane_walk_blocks(channel_stride, plane_pixels):
    """``plane_blocks`` for a walk over planes of ``plane_pixels``; in the interpreter a small
    plane is taken whole in one step."""
    block_p, block_c = plane_blocks(channel_stride)
    if INTERPRETED:
        block_p = min(block_p, max(2, triton.next_power_of_2(plane_pixels)))
    return block_p, block_c


@triton.jit
def plane_walk_program(channels, plane_pixels, pixels_per_slice, WIDE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """(image, slice, its channels, which of them exist, [start, end) of its pixels, a block's
    pixel offsets) of a plane walk's program: grid (cdiv(C, BLOCK_C), N, slices)."""
    image = widen(tl.program_id(1), WIDE_INDEX)
    split = tl.program_id(2)
    c = block_indices(tl.program_id(0), BLOCK_C, WIDE_INDEX)
    start, end = slice_range(split, pixels_per_slice, plane_pixels, WIDE_INDEX)
    return image, split, c, c < channels, start, end, widen(tl.arange(0, BLOCK_P), WIDE_INDEX)


@triton.jit
def plane_bases(dy_ptr, x_ptr, dx_ptr, image, c, dy_stride_n, dy_stride_c, x_stride_n, x_stride_c, dx_stride_n,
                dx_stride_c):
    """[1 x channels] pointers to the start of this image's planes of dy, x and dx."""
    return (dy_ptr + image * dy_stride_n + (c * dy_stride_c)[None, :], x_ptr + image * x_stride_n
            + (c * x_stride_c)[None, :], dx_ptr + image * dx_stride_n + (c * dx_stride_c)[None, :])


@triton.jit
def load_plane_pair(dy_base, x_base, pixels, end, c_ok, dy_stride_p, x_stride_p):
    """(dy, x, mask) of one [pixels x channels] block of a plane walk, in fp32 (0 outside)."""
    mask = (pixels < end)[:, None] & c_ok[None, :]
    dy = tl.load(dy_base + (pixels * dy_stride_p)[:, None], mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_base + (pixels * x_stride_p)[:, None], mask=mask, other=0.0).to(tl.float32)
    return dy, x, mask


def plane_slices(images, channels, plane_pixels, channel_stride, device, sms=None):
    """(pixels per slice, slices) of a plane walk over ``images`` planes of ``plane_pixels``."""
    block_p, block_c = plane_blocks(channel_stride)
    return reduction_slices(images * triton.cdiv(channels, block_c), plane_pixels, device,
                            min_length=MIN_PLANE_PIXELS_PER_SLICE, max_slices=MAX_PLANE_SLICES, granule=block_p,
                            sms=sms)


@triton.jit
def slice_range(index, per_slice, total, WIDE_INDEX: tl.constexpr):
    """[start, end) of slice ``index`` of a reduction over ``total`` elements cut into slices of
    ``per_slice`` (the last may be shorter)."""
    start = widen(index, WIDE_INDEX) * per_slice
    return start, tl.minimum(start + per_slice, total)


def partials(out, slices):
    """Where ``slices`` slices of a reduction into the dense ``out`` write: ``out`` itself for one
    slice, else fp32 partials laid out like ``out``, one copy per slice (slice s at offset
    s·numel)."""
    if slices == 1:
        return out
    return torch.empty_strided((slices, *out.shape), (out.numel(), *out.stride()), dtype=torch.float32,
                               device=out.device)


def sum_partials(partial, out, slices):
    """Add the slices' partials into ``out`` in slice order; returns the launches made (0 or 1)."""
    if slices == 1:
        return 0
    _sum_slices_kernel[(triton.cdiv(out.numel(), SUM_BLOCK),)](partial, out, out.numel(), slices, BLOCK=SUM_BLOCK)
    return 1


@triton.jit
def _sum_slices_kernel(partial_ptr, out_ptr, numel, num_slices, BLOCK: tl.constexpr):
    """out[i] = sum over s of partial[s, i], in slice order (run-to-run identical)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < numel
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for index in range(num_slices):
        acc += tl.load(partial_ptr + index * numel + offsets, mask=ok, other=0.0)
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=ok)
