"""SyncBatchNorm's statistics: batch norm over the batches of every process in a group, for x
[N, C, S] of this process (M = N·S rows, any strides; M may be 0).

1. ``summary``: this process's per-channel summary, fp32 [4, C] in kernels/moments.py's field
   order (count M, K = x[0, c, 0], the mean of x - K, the sum of squared deviations M2):
   batch norm's statistics pass (kernels/batch_norm.py's ``_partial_stats_kernel``, tiles
   two-pass in registers, merged with Chan's formula), then ``_summary_kernel`` merges its
   slices in a fixed order; or ``summary_from_moments``, one launch over the moments the
   convolution that wrote x emitted (no pass over x). An empty x has the summary (0, 0, 0, 0).
2. fastcnn/ops/sync_batch_norm.py all-gathers the summaries: [P, 4, C] for P processes, one
   collective of 16 bytes per channel per process.
3. ``statistics_from_summaries``: every process merges the P summaries in rank order with
   Chan's formula (``merge_moment_slots``), each moved to the first non-empty process's K: the
   same K, the same order, the same bits on every process, so an uneven or empty batch merges
   exactly and the running statistics (updated with the unbiased variance of the whole batch,
   as torch's SyncBatchNorm does) stay equal across processes. It writes batch norm's
   statistics rows (kernels/prologue.py; the mean as that of x - this process's own K, which
   batch norm's passes read again from x) and one row more, COUNT_ROW: the whole batch's count,
   which the backward averages the all-reduced gradient sums over.

The normalising pass and the backward's passes are kernels/batch_norm.py's (``apply``,
``backward_sums``, ``backward_apply`` with ``count_in_stats``): each process reads and writes
only its own x, y, dy and dx, as batch norm does. Bytes beyond batch norm's: 16 B per channel
written, P·16 B per channel read. Launch grids: the statistics pass (cdiv(C, BLOCK_C),
splits); the summary and the merge (cdiv(C, MERGE_BLOCK),).
"""
import torch
import triton
import triton.language as tl

from .batch_norm import (COUNT_ROW, COUNT_ROW_CONSTEXPR, FINAL_BLOCK, MAX_SPLITS, MIN_ROWS_PER_SPLIT, _affine,
                         _partial_stats_kernel, _store_batch_statistics, _tiles, merge_moment_slots)
from .moments import MOMENT_FIELDS, chan_merge
from .prologue import store_coefficients
from .slicing import reduction_slices

SYNC_STATISTICS_ROWS = COUNT_ROW + 1
# The merge: channels per program and summaries (processes, or moment slots) merged per step.
MERGE_BLOCK = 32
MERGE_BLOCK_SLOTS = 64


@triton.jit
def _store_summary(summary_ptr, c, ok, channels, count, shift, mean, m2):
    """summary[0:4, c] = (count, K, mean of x - K, M2): kernels/moments.py's fields."""
    tl.store(summary_ptr + c, count, mask=ok)
    tl.store(summary_ptr + channels + c, shift, mask=ok)
    tl.store(summary_ptr + 2 * channels + c, mean, mask=ok)
    tl.store(summary_ptr + 3 * channels + c, m2, mask=ok)


@triton.jit
def _summary_kernel(partial_ptr, num_splits, x_ptr, summary_ptr, channels, x_stride_c, BLOCK: tl.constexpr):
    """This process's summary from the statistics pass's partials [splits, 3, C] (count, mean of
    x - K, M2), merged in split order."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    count = tl.zeros((BLOCK,), tl.float32)
    mean = tl.zeros((BLOCK,), tl.float32)
    m2 = tl.zeros((BLOCK,), tl.float32)
    for split in range(num_splits):
        base = partial_ptr + split * 3 * channels + c
        count, mean, m2 = chan_merge(count, mean, m2, tl.load(base, mask=ok, other=0.0),
                                     tl.load(base + channels, mask=ok, other=0.0),
                                     tl.load(base + 2 * channels, mask=ok, other=0.0))
    shift = tl.load(x_ptr + c * x_stride_c, mask=ok, other=0.0).to(tl.float32)
    _store_summary(summary_ptr, c, ok, channels, count, shift, mean, m2)


@triton.jit
def _moments_summary_kernel(moments_ptr, num_slots, x_ptr, summary_ptr, channels, x_stride_c,
                            BLOCK_SLOTS: tl.constexpr, BLOCK: tl.constexpr):
    """This process's summary from the moments [slots, 4, C] a convolution's epilogue wrote."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    shift = tl.load(x_ptr + c * x_stride_c, mask=ok, other=0.0).to(tl.float32)
    count, mean, m2 = merge_moment_slots(moments_ptr, num_slots, c, ok, channels, shift, BLOCK_SLOTS, BLOCK)
    _store_summary(summary_ptr, c, ok, channels, count, shift, mean, m2)


@triton.jit
def _merge_kernel(
        summaries_ptr, num_processes, x_ptr, running_mean_ptr, running_var_ptr, stats_ptr, weight_ptr, bias_ptr,
        channels, momentum, eps, x_stride_c, running_mean_stride, running_var_stride, weight_stride, bias_stride,
        HAS_LOCAL_ROWS: tl.constexpr, UPDATE_RUNNING: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_SLOTS: tl.constexpr, BLOCK: tl.constexpr):
    """stats [SYNC_STATISTICS_ROWS, C]: the statistics of every process's batch from their
    summaries [P, 4, C], merged relative to the first non-empty process's K (the same on every
    process); row 0 the mean of x - this process's K (HAS_LOCAL_ROWS; else of x - that K),
    COUNT_ROW the whole batch's count; the running statistics updated."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    shift = tl.zeros((BLOCK,), tl.float32)
    found = tl.zeros((BLOCK,), tl.int1)
    for process in range(num_processes):  # a few processes: a scalar walk in rank order
        base = summaries_ptr + process * 4 * channels + c
        non_empty = tl.load(base, mask=ok, other=0.0) > 0.0
        shift = tl.where(non_empty & ~found, tl.load(base + channels, mask=ok, other=0.0), shift)
        found = found | non_empty
    count, mean, m2 = merge_moment_slots(summaries_ptr, num_processes, c, ok, channels, shift, BLOCK_SLOTS, BLOCK)
    if HAS_LOCAL_ROWS:
        local_shift = tl.load(x_ptr + c * x_stride_c, mask=ok, other=0.0).to(tl.float32)
    else:
        local_shift = shift
    centre, invstd = _store_batch_statistics(count, mean, m2, shift, c, ok, running_mean_ptr, running_var_ptr,
                                             stats_ptr, channels, momentum, eps, running_mean_stride,
                                             running_var_stride, UPDATE_RUNNING, local_shift)
    store_coefficients(stats_ptr, c, ok, channels, centre, invstd, weight_ptr, bias_ptr, weight_stride, bias_stride,
                       HAS_WEIGHT, HAS_BIAS)
    tl.store(stats_ptr + COUNT_ROW_CONSTEXPR * channels + c, count, mask=ok)


def summary(x, summary_out):
    """This process's summary of x [N, C, S] (M > 0 rows) into ``summary_out``, fp32 [4, C]
    contiguous: batch norm's statistics pass, then the merge of its slices. Returns the number
    of launches (2)."""
    channels = x.shape[1]
    num_rows = x.shape[0] * x.shape[2]
    block_r, block_c = _tiles(x.stride(1))
    rows_per_split, splits = reduction_slices(triton.cdiv(channels, block_c), num_rows, x.device,
                                              min_length=MIN_ROWS_PER_SPLIT, max_slices=MAX_SPLITS)
    partial = torch.empty((splits, 3, channels), dtype=torch.float32, device=x.device)
    _partial_stats_kernel[(triton.cdiv(channels, block_c), splits)](
        x, partial, num_rows, channels, x.shape[2], rows_per_split, *x.stride(), BLOCK_R=block_r, BLOCK_C=block_c)
    _summary_kernel[(triton.cdiv(channels, FINAL_BLOCK),)](partial, splits, x, summary_out, channels, x.stride(1),
                                                           BLOCK=FINAL_BLOCK)
    return 2


def summary_from_moments(x, moments, summary_out):
    """``summary`` from the ``moments`` (kernels/moments.py) of the convolution that wrote x,
    without a pass over x: one launch."""
    channels = x.shape[1]
    _moments_summary_kernel[(triton.cdiv(channels, MERGE_BLOCK),)](
        moments, moments.shape[0], x, summary_out, channels, x.stride(1), BLOCK_SLOTS=MERGE_BLOCK_SLOTS,
        BLOCK=MERGE_BLOCK)
    return 1


def statistics_from_summaries(x, summaries, stats, running_mean, running_var, weight, bias, *, momentum, eps):
    """The statistics of the whole batch into ``stats`` (fp32 [SYNC_STATISTICS_ROWS, C]) from
    every process's ``summaries`` (fp32 [P, 4, C], in rank order); x [N, C, S] is this
    process's (may have no rows); the running statistics (1-d or None) updated in place; the
    affine ``weight`` and ``bias`` (1-d or None) give the prologue's rows. One launch."""
    channels = x.shape[1]
    assert summaries.shape[1:] == (MOMENT_FIELDS, channels) and summaries.is_contiguous(), summaries.shape
    running = [tensor if tensor is not None else stats for tensor in (running_mean, running_var)]
    affine, affine_strides, affine_flags = _affine(weight, bias, stats)
    has_rows = x.shape[0] * x.shape[2] > 0
    _merge_kernel[(triton.cdiv(channels, MERGE_BLOCK),)](
        summaries, summaries.shape[0], x if has_rows else summaries, *running, stats, *affine, channels,
        float(momentum), float(eps), x.stride(1), *(tensor.stride(0) for tensor in running), *affine_strides,
        HAS_LOCAL_ROWS=has_rows, UPDATE_RUNNING=running_mean is not None, **affine_flags,
        BLOCK_SLOTS=MERGE_BLOCK_SLOTS, BLOCK=MERGE_BLOCK)
    return 1
