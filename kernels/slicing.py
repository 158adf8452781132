"""Cutting a long reduction into slices (split-K) when the output alone has too few tiles to
fill the GPU. Used by conv2d's grad-weight and grad-bias and by batch norm's per-channel
statistics; each slice writes an fp32 partial that a second kernel merges in a fixed order, so
results are identical run to run.
"""
import torch
import triton

from . import INTERPRETED

_SM_COUNTS = {}


def sm_count(device):
    """Streaming multiprocessors of ``device``. The interpreter pretends to have 2, so that small
    test problems are sliced and CI exercises the merging."""
    if INTERPRETED:
        return 2
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


def reduction_slices(output_tiles, reduction_length, device, *, min_length, max_slices):
    """(elements per slice, number of slices) for a reduction of ``reduction_length`` elements
    behind ``output_tiles`` output tiles: enough slices to keep about two programs per SM busy,
    each at least ``min_length`` long so that it pays for writing its partial, at most
    ``max_slices``. Slices start on multiples of 128 elements; none is empty."""
    length = max(reduction_length, 1)
    occupancy = 2 * sm_count(device)
    slices = 1
    if output_tiles < occupancy:
        slices = max(1, min(triton.cdiv(occupancy, output_tiles), length // min_length, max_slices))
    per_slice = triton.cdiv(triton.cdiv(length, slices), 128) * 128
    return per_slice, triton.cdiv(length, per_slice)
