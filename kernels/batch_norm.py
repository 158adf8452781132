"""Batch norm with an optional fused residual add and activation, act(bn(x) + r), forward and
backward, for x [N, C, S] (S = the flattened spatial dims, 1 for 2-d input) read through its
strides, M = N·S values per channel; r (the residual, optional) is [N, C, S] too, any strides.

Forward, training: per-channel mean and biased variance of the batch, computed stably in fp32:
each program reduces a [rows x channels] tile two-pass in registers (tile mean, then the sum of
squared deviations from it) and merges tiles with Chan's parallel formula, so an input with
mean 3000 and std 0.5 keeps fp32 accuracy. Slices of the rows (split for parallelism) are
merged in a fixed order by the finalize kernel, which also updates the running statistics as
torch does (unbiased variance M/(M-1), momentum) and keeps two floats per channel, the mean (of
x - K, K = x[0, c, 0], which every pass reads again from x) and invstd = 1/sqrt(var + eps): what
torch saves. Eval: the running statistics (K = 0). The same launch writes four more rows, the
coefficients a kernel that normalises x as it loads it takes (kernels/prologue.py).
Then y = act((x - mean)·scale + b [+ r]), scale = w·invstd, with act any of
kernels/activation.py's kinds (or none), elementwise; subtracting the mean first keeps fp32
accuracy when |mean| >> std.

Backward, with z = (x - mean)·scale + b [+ r] recomputed from the saved input (and residual),
g = act'(z)·dy (torch's backward formula, so NaN and ±inf take torch's branch; no pre- or
post-activation tensor is kept), dr = g, and x̂ = (x - mean)·invstd. With a residual and an
activation whose torch backward takes the result (relu, sigmoid, tanh), g may be taken from the
output instead (FROM_OUTPUT), as torch's bn → add → act keeps it. With a residual in training,
``grad_with_sums`` writes g (the residual's gradient) in the pass that sums it, and
``backward_from_sums`` finishes: no second read of dy and y for the apply, no pass over g for
the sums.
    db = sum g,   dw = sum g·x̂,
    dx = scale · (g - db/M - x̂·dw/M)        (training; batch statistics depend on x)
    dx = scale · g                           (eval)
Two reductions per channel (same split + fixed-order merge), then one elementwise pass. A fused
PReLU (kind "prelu") reads its slopes per channel (``parameter`` is then that vector) and adds a
third sum to the same pass, Σ dy·z where z <= 0: its slopes' gradient (in eval too, where the
residual's backward then takes the pass that writes g with its sums).

Bytes: training forward reads x twice (statistics, then normalise), r once, and writes y;
backward reads x, dy (and r or y) twice and writes dx; with a residual, dy and y (or r) once,
x and g twice, and writes g and dx. Saved for backward: x, two
floats per channel, and with a residual either y (relu, sigmoid, tanh), nothing (no activation)
or r (torch's bn → add → act saves bn's input, its two floats per channel and the activation's
input or output).
Training statistics may also come without a pass over x, from the moments the convolution that
wrote x emitted in its epilogue (kernels/moments.py): ``statistics_from_moments`` merges them in
one launch (grid (cdiv(C, MOMENTS_BLOCK),)), reading 16 bytes per channel per 128 pixels.
Launch grids: reductions (cdiv(C, BLOCK_C), splits); finalize (cdiv(C, FINAL_BLOCK),);
elementwise (cdiv(M, BLOCK_R), cdiv(C, BLOCK_C)).
"""
import torch
import triton
import triton.language as tl

from .activation import activate, activation_grad, activation_grad_from_output, channel_slopes, prelu_slope_grad
from .moments import MOMENT_FIELDS_CONSTEXPR, chan_merge
from .prologue import STATISTICS_ROWS, store_coefficients
from .slicing import reduction_slices
from .tiles import by_backend, channel_blocks

FINAL_BLOCK = 128
FINAL_BLOCK_SPLITS = 16  # partial sums per step of the backward finalize (a tree)
# The moments finalize: channels per program and moment slots merged per step (a tree).
MOMENTS_BLOCK = 32
MOMENTS_BLOCK_SLOTS = 64
MIN_ROWS_PER_SPLIT = by_backend(interpreter=64, gpu=256)  # 256 rows x 64 channels: 16 K values a slice
MAX_SPLITS = 256
# The rows each program of ``grad_with_sums`` sums: slices of 1024 rows x 64 channels of a
# ResNet-50 stage-1 block output are ~400 programs at batch 32 (3 a SM), ~3100 at 256, and their
# partials 1/256 of the gradient's bytes; the interpreter's few keep CI's small tests sliced.
# Smaller activations (C128 28² at batch 32: 50 programs) take slices halved until the grid has
# GRAD_MIN_PROGRAMS programs (two per SM of an H100) or a slice is one tile of rows: a count of
# the shape and the strides alone, as the partials' shape must be (see ``backward_sum_slices``).
GRAD_ROWS_PER_SLICE = by_backend(interpreter=128, gpu=1024)
GRAD_MIN_PROGRAMS = by_backend(interpreter=1, gpu=264)
# A SyncBatchNorm's statistics have one row more than the prologue's: the count of the batch
# across processes, which its backward averages the gradient sums over (kernels/sync_batch_norm.py).
COUNT_ROW = STATISTICS_ROWS
COUNT_ROW_CONSTEXPR = tl.constexpr(COUNT_ROW)


@triton.jit
def _row_offsets(rows, spatial, stride_n, stride_s):
    return (rows // spatial) * stride_n + (rows % spatial) * stride_s


@triton.jit
def _partial_stats_kernel(
        x_ptr, partial_ptr, num_rows, channels, spatial, rows_per_split,
        x_stride_n, x_stride_c, x_stride_s,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """partial[split, 0:3, c] = (count, mean, sum of squared deviations) of this slice of rows,
    for x - K with K the channel's first value x[0, c, 0]."""
    split = tl.program_id(1)
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < channels
    # Statistics of x - K, K one of the channel's own values: for data far from 0 relative to
    # their spread the subtraction is exact, so the mean keeps the digits that a mean of x (3000
    # +- 0.5, say) would round away. Every later pass reads K from x again (``_centred``).
    shift = tl.load(x_ptr + c * x_stride_c, mask=channel_ok, other=0.0).to(tl.float32)
    start = split.to(tl.int64) * rows_per_split
    end = tl.minimum(start + rows_per_split, num_rows)
    count = tl.zeros((BLOCK_C,), tl.float32)
    mean = tl.zeros((BLOCK_C,), tl.float32)
    m2 = tl.zeros((BLOCK_C,), tl.float32)
    for first in range(start, end, BLOCK_R):
        rows = first + tl.arange(0, BLOCK_R)
        mask = (rows < end)[:, None] & channel_ok[None, :]
        x = tl.load(x_ptr + _row_offsets(rows, spatial, x_stride_n, x_stride_s)[:, None] + (c * x_stride_c)[None, :],
                    mask=mask, other=0.0).to(tl.float32)
        x = tl.where(mask, x - shift[None, :], 0.0)
        tile_count = tl.sum(mask.to(tl.float32), axis=0)
        tile_mean = tl.sum(x, axis=0) / tl.maximum(tile_count, 1.0)
        deviation = tl.where(mask, x - tile_mean[None, :], 0.0)
        tile_m2 = tl.sum(deviation * deviation, axis=0)
        count, mean, m2 = chan_merge(count, mean, m2, tile_count, tile_mean, tile_m2)
    base = partial_ptr + split * 3 * channels + c
    tl.store(base, count, mask=channel_ok)
    tl.store(base + channels, mean, mask=channel_ok)
    tl.store(base + 2 * channels, m2, mask=channel_ok)


@triton.jit
def _finalize_kernel(
        partial_ptr, num_splits, x_ptr, running_mean_ptr, running_var_ptr, stats_ptr, weight_ptr, bias_ptr, channels,
        momentum, eps, x_stride_c, running_mean_stride, running_var_stride, weight_stride, bias_stride,
        TRAINING: tl.constexpr, UPDATE_RUNNING: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK: tl.constexpr):
    """stats[0:2, c] = (mean, invstd): in training the batch's, the mean that of x - K (K =
    x[0, c, 0]); in eval the running mean and 1 / sqrt(running var + eps); and rows 2 to 5, the
    input prologue's coefficients (kernels/prologue.py) from the weight and the bias."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    if TRAINING:
        count = tl.zeros((BLOCK,), tl.float32)
        mean = tl.zeros((BLOCK,), tl.float32)
        m2 = tl.zeros((BLOCK,), tl.float32)
        for split in range(num_splits):  # fixed order: the same bits every run
            base = partial_ptr + split * 3 * channels + c
            split_count = tl.load(base, mask=ok, other=0.0)
            split_mean = tl.load(base + channels, mask=ok, other=0.0)
            split_m2 = tl.load(base + 2 * channels, mask=ok, other=0.0)
            count, mean, m2 = chan_merge(count, mean, m2, split_count, split_mean, split_m2)
        shift = tl.load(x_ptr + c * x_stride_c, mask=ok, other=0.0).to(tl.float32)
        centre, invstd = _store_batch_statistics(count, mean, m2, shift, c, ok, running_mean_ptr, running_var_ptr,
                                                 stats_ptr, channels, momentum, eps, running_mean_stride,
                                                 running_var_stride, UPDATE_RUNNING)
    else:
        centre = tl.load(running_mean_ptr + c * running_mean_stride, mask=ok, other=0.0).to(tl.float32)
        variance = tl.load(running_var_ptr + c * running_var_stride, mask=ok, other=1.0).to(tl.float32)
        invstd = 1.0 / tl.sqrt(variance + eps)
        tl.store(stats_ptr + c, centre, mask=ok)
        tl.store(stats_ptr + channels + c, invstd, mask=ok)
    store_coefficients(stats_ptr, c, ok, channels, centre, invstd, weight_ptr, bias_ptr, weight_stride, bias_stride,
                       HAS_WEIGHT, HAS_BIAS)


@triton.jit
def _store_batch_statistics(count, mean, m2, shift, c, ok, running_mean_ptr, running_var_ptr, stats_ptr, channels,
                            momentum, eps, running_mean_stride, running_var_stride, UPDATE_RUNNING: tl.constexpr,
                            local_shift=None):
    """stats[0:2, c] = (mean, invstd) of the batch from its merged (count, mean of x - K, sum of
    squared deviations), K = ``shift``; the running statistics updated as torch does. The mean
    stored is that of x - ``local_shift`` when given (the K that this process's passes read from
    its own x: kernels/sync_batch_norm.py), else of x - K. Returns the mean of x itself and
    invstd."""
    # Lanes past the last channel have count 0; validation guarantees count >= 2 elsewhere.
    variance = m2 / tl.maximum(count, 1.0)
    if UPDATE_RUNNING:
        running_mean = tl.load(running_mean_ptr + c * running_mean_stride, mask=ok, other=0.0).to(tl.float32)
        running_var = tl.load(running_var_ptr + c * running_var_stride, mask=ok, other=0.0).to(tl.float32)
        unbiased = m2 / tl.maximum(count - 1.0, 1.0)
        tl.store(running_mean_ptr + c * running_mean_stride,
                 ((1.0 - momentum) * running_mean + momentum * (shift + mean))
                 .to(running_mean_ptr.dtype.element_ty), mask=ok)
        tl.store(running_var_ptr + c * running_var_stride, ((1.0 - momentum) * running_var + momentum * unbiased)
                 .to(running_var_ptr.dtype.element_ty), mask=ok)
    invstd = 1.0 / tl.sqrt(variance + eps)
    if local_shift is None:
        tl.store(stats_ptr + c, mean, mask=ok)
    else:  # K and the local K are two values of the channel: their difference is exact when close
        tl.store(stats_ptr + c, (shift - local_shift) + mean, mask=ok)
    tl.store(stats_ptr + channels + c, invstd, mask=ok)
    return shift + mean, invstd


@triton.jit
def merge_moment_slots(moments_ptr, num_slots, c, ok, channels, shift, BLOCK_SLOTS: tl.constexpr,
                       BLOCK: tl.constexpr):
    """(count, mean of x - ``shift``, sum of squared deviations) of channels ``c`` merged from
    ``num_slots`` summaries in kernels/moments.py's layout, [slots, 4, C] of (count, first value,
    mean of the values less it, M2): each slot's mean moved from its own first value to the
    shift (the difference of two of the channel's values, exact when they are close), empty
    slots skipped, BLOCK_SLOTS of them merged as a tree and the blocks in order: the same bits
    every run."""
    count = tl.zeros((BLOCK,), tl.float32)
    mean = tl.zeros((BLOCK,), tl.float32)
    m2 = tl.zeros((BLOCK,), tl.float32)
    for first in range(0, num_slots, BLOCK_SLOTS):
        slots = first + tl.arange(0, BLOCK_SLOTS).to(tl.int64)
        mask = (slots < num_slots)[:, None] & ok[None, :]
        base = moments_ptr + (slots * MOMENT_FIELDS_CONSTEXPR * channels)[:, None] + c[None, :]
        slot_count = tl.load(base, mask=mask, other=0.0)
        slot_first = tl.load(base + channels, mask=mask, other=0.0)
        slot_mean = tl.load(base + 2 * channels, mask=mask, other=0.0)
        slot_m2 = tl.load(base + 3 * channels, mask=mask, other=0.0)
        slot_mean = tl.where(slot_count > 0.0, (slot_first - shift[None, :]) + slot_mean, 0.0)
        block_count, block_mean, block_m2 = tl.reduce((slot_count, slot_mean, slot_m2), 0, chan_merge)
        count, mean, m2 = chan_merge(count, mean, m2, block_count, block_mean, block_m2)
    return count, mean, m2


@triton.jit
def _moments_finalize_kernel(
        moments_ptr, num_slots, x_ptr, running_mean_ptr, running_var_ptr, stats_ptr, weight_ptr, bias_ptr, channels,
        momentum, eps, x_stride_c, running_mean_stride, running_var_stride, weight_stride, bias_stride,
        UPDATE_RUNNING: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_SLOTS: tl.constexpr,
        BLOCK: tl.constexpr):
    """stats[0:2, c] = (mean of x - K, invstd) of the batch, K = x[0, c, 0], from the moments a
    convolution's epilogue wrote as it produced x (kernels/moments.py), merged by
    ``merge_moment_slots``. The running statistics are updated as ``_finalize_kernel`` does."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    shift = tl.load(x_ptr + c * x_stride_c, mask=ok, other=0.0).to(tl.float32)
    count, mean, m2 = merge_moment_slots(moments_ptr, num_slots, c, ok, channels, shift, BLOCK_SLOTS, BLOCK)
    centre, invstd = _store_batch_statistics(count, mean, m2, shift, c, ok, running_mean_ptr, running_var_ptr,
                                             stats_ptr, channels, momentum, eps, running_mean_stride,
                                             running_var_stride, UPDATE_RUNNING)
    store_coefficients(stats_ptr, c, ok, channels, centre, invstd, weight_ptr, bias_ptr, weight_stride, bias_stride,
                       HAS_WEIGHT, HAS_BIAS)


@triton.jit
def _centred(x, x_ptr, stats_ptr, c, channel_ok, x_stride_c, SHIFTED: tl.constexpr):
    """x's deviation from the mean in fp32: (x - K) - mean, with K the channel's first value when
    the statistics are the batch's (SHIFTED: the mean is that of x - K), none for the running ones."""
    mean = tl.load(stats_ptr + c, mask=channel_ok, other=0.0)
    if SHIFTED:
        shift = tl.load(x_ptr + c * x_stride_c, mask=channel_ok, other=0.0).to(tl.float32)
        return (x - shift[None, :]) - mean[None, :]
    return x - mean[None, :]


@triton.jit
def _scale(stats_ptr, weight_ptr, c, channel_ok, channels, weight_stride, HAS_WEIGHT: tl.constexpr):
    """w / sqrt(var + eps) per channel, fp32."""
    scale = tl.load(stats_ptr + channels + c, mask=channel_ok, other=0.0)
    if HAS_WEIGHT:
        scale = scale * tl.load(weight_ptr + c * weight_stride, mask=channel_ok, other=1.0).to(tl.float32)
    return scale


@triton.jit
def _pre_activation(centred, r_ptr, stats_ptr, weight_ptr, bias_ptr, rows, c, mask, channel_ok, channels, spatial,
                    r_stride_n, r_stride_c, r_stride_s, weight_stride, bias_stride, HAS_RESIDUAL: tl.constexpr,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """z = centred·scale + b [+ r] in fp32: the value the activation sees."""
    z = centred * _scale(stats_ptr, weight_ptr, c, channel_ok, channels, weight_stride, HAS_WEIGHT)[None, :]
    if HAS_BIAS:
        z += tl.load(bias_ptr + c * bias_stride, mask=channel_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_RESIDUAL:
        z += tl.load(r_ptr + _row_offsets(rows, spatial, r_stride_n, r_stride_s)[:, None] + (c * r_stride_c)[None, :],
                     mask=mask, other=0.0).to(tl.float32)
    return z


@triton.jit
def _apply_kernel(
        x_ptr, r_ptr, y_ptr, stats_ptr, weight_ptr, bias_ptr, r_stats_ptr, r_weight_ptr, r_bias_ptr, slope_ptr,
        parameter, num_rows, channels, spatial, x_stride_n, x_stride_c, x_stride_s, r_stride_n, r_stride_c,
        r_stride_s, y_stride_n, y_stride_c, y_stride_s, weight_stride, bias_stride, r_weight_stride, r_bias_stride,
        slope_stride,
        KIND: tl.constexpr, HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
        SHIFTED: tl.constexpr, RESIDUAL_NORMALIZED: tl.constexpr, HAS_RESIDUAL_WEIGHT: tl.constexpr,
        HAS_RESIDUAL_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < channels
    mask = (rows < num_rows)[:, None] & channel_ok[None, :]
    x = tl.load(x_ptr + _row_offsets(rows, spatial, x_stride_n, x_stride_s)[:, None] + (c * x_stride_c)[None, :],
                mask=mask, other=0.0).to(tl.float32)
    z = _pre_activation(_centred(x, x_ptr, stats_ptr, c, channel_ok, x_stride_c, SHIFTED), r_ptr, stats_ptr,
                        weight_ptr, bias_ptr, rows, c, mask, channel_ok, channels, spatial, r_stride_n, r_stride_c,
                        r_stride_s, weight_stride, bias_stride, HAS_RESIDUAL, HAS_WEIGHT, HAS_BIAS)
    if RESIDUAL_NORMALIZED:  # the residual is a second batch norm's input: z = bn(x) + bn_r(r)
        r = tl.load(r_ptr + _row_offsets(rows, spatial, r_stride_n, r_stride_s)[:, None] + (c * r_stride_c)[None, :],
                    mask=mask, other=0.0).to(tl.float32)
        z += _pre_activation(_centred(r, r_ptr, r_stats_ptr, c, channel_ok, r_stride_c, SHIFTED), r_ptr,
                             r_stats_ptr, r_weight_ptr, r_bias_ptr, rows, c, mask, channel_ok, channels, spatial,
                             r_stride_n, r_stride_c, r_stride_s, r_weight_stride, r_bias_stride, False,
                             HAS_RESIDUAL_WEIGHT, HAS_RESIDUAL_BIAS)
    if KIND == "prelu":  # PReLU's slopes, one per channel (stride 0: one for all)
        parameter = channel_slopes(slope_ptr, c, channel_ok, slope_stride)[None, :]
    y = activate(z, KIND, parameter)
    tl.store(y_ptr + _row_offsets(rows, spatial, y_stride_n, y_stride_s)[:, None] + (c * y_stride_c)[None, :],
             y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _masked_grad(dy_ptr, x_ptr, r_ptr, stats_ptr, weight_ptr, bias_ptr, parameter, rows, c, mask, channel_ok, channels,
                 spatial, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c, x_stride_s, r_stride_n,
                 r_stride_c, r_stride_s, weight_stride, bias_stride, KIND: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                 FROM_OUTPUT: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SHIFTED: tl.constexpr):
    """(g, centred x, PReLU's slope term): dy through the activation's derivative at z
    (recomputed from x and r exactly as the forward computed it, or taken from the output y that
    ``r_ptr`` then points at, FROM_OUTPUT), x's deviation from the mean, and for kind "prelu"
    (``parameter`` then the channels' slopes) dy·z where z <= 0, else g again; all fp32."""
    x = tl.load(x_ptr + _row_offsets(rows, spatial, x_stride_n, x_stride_s)[:, None] + (c * x_stride_c)[None, :],
                mask=mask, other=0.0).to(tl.float32)
    centred = _centred(x, x_ptr, stats_ptr, c, channel_ok, x_stride_c, SHIFTED)
    g = tl.load(dy_ptr + _row_offsets(rows, spatial, dy_stride_n, dy_stride_s)[:, None] + (c * dy_stride_c)[None, :],
                mask=mask, other=0.0).to(tl.float32)
    if FROM_OUTPUT:
        y = tl.load(r_ptr + _row_offsets(rows, spatial, r_stride_n, r_stride_s)[:, None] + (c * r_stride_c)[None, :],
                    mask=mask, other=0.0).to(tl.float32)
        g = activation_grad_from_output(y, g, KIND)
    elif KIND is not None:
        z = _pre_activation(centred, r_ptr, stats_ptr, weight_ptr, bias_ptr, rows, c, mask, channel_ok, channels,
                            spatial, r_stride_n, r_stride_c, r_stride_s, weight_stride, bias_stride, HAS_RESIDUAL,
                            HAS_WEIGHT, HAS_BIAS)
        if KIND == "prelu":
            return activation_grad(z, g, KIND, parameter), centred, prelu_slope_grad(z, g)
        g = activation_grad(z, g, KIND, parameter)
    return g, centred, g


@triton.jit
def _backward_sums_kernel(
        dy_ptr, x_ptr, r_ptr, stats_ptr, weight_ptr, bias_ptr, partial_ptr, g_ptr, rx_ptr, r_stats_ptr,
        r_partial_ptr, slope_ptr, parameter, num_rows, channels, spatial, rows_per_split, dy_stride_n, dy_stride_c,
        dy_stride_s, x_stride_n, x_stride_c, x_stride_s, r_stride_n, r_stride_c, r_stride_s, g_stride_n, g_stride_c,
        g_stride_s, rx_stride_n, rx_stride_c, rx_stride_s, weight_stride, bias_stride, slope_stride, KIND: tl.constexpr,
        HAS_RESIDUAL: tl.constexpr, FROM_OUTPUT: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
        SHIFTED: tl.constexpr, WRITE_G: tl.constexpr, RESIDUAL_SUMS: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr):
    """partial[split, 0:2, c] = (sum g, sum g·x̂) over this slice of rows, and for PReLU
    partial[split, 2, c] = the sum of dy·z where z <= 0 (its slopes' gradient); with WRITE_G, g itself
    too (the residual's gradient, which the apply then reads instead of dy and the output); with
    RESIDUAL_SUMS, r_partial the same sums for the batch norm whose input ``rx`` the residual
    normalised (sum g, sum g·r̂): g is the gradient of both norms' outputs."""
    split = tl.program_id(1)
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < channels
    invstd = tl.load(stats_ptr + channels + c, mask=channel_ok, other=0.0)
    start = split.to(tl.int64) * rows_per_split
    end = tl.minimum(start + rows_per_split, num_rows)
    sum_g = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    sum_gx = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    sum_gr = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    sum_slope = tl.zeros((BLOCK_R, BLOCK_C), tl.float32)
    if KIND == "prelu":
        parameter = channel_slopes(slope_ptr, c, channel_ok, slope_stride)[None, :]
    if RESIDUAL_SUMS:
        r_invstd = tl.load(r_stats_ptr + channels + c, mask=channel_ok, other=0.0)
    for first in range(start, end, BLOCK_R):
        rows = first + tl.arange(0, BLOCK_R)
        mask = (rows < end)[:, None] & channel_ok[None, :]
        g, centred, slope_term = _masked_grad(
            dy_ptr, x_ptr, r_ptr, stats_ptr, weight_ptr, bias_ptr, parameter, rows, c, mask, channel_ok, channels,
            spatial, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c, x_stride_s, r_stride_n,
            r_stride_c, r_stride_s, weight_stride, bias_stride, KIND, HAS_RESIDUAL, FROM_OUTPUT, HAS_WEIGHT, HAS_BIAS,
            SHIFTED)
        if KIND == "prelu":
            sum_slope += slope_term
        if WRITE_G:
            tl.store(g_ptr + _row_offsets(rows, spatial, g_stride_n, g_stride_s)[:, None] + (c * g_stride_c)[None, :],
                     g.to(g_ptr.dtype.element_ty), mask=mask)
        sum_g += g
        sum_gx += g * (centred * invstd[None, :])
        if RESIDUAL_SUMS:
            rx = tl.load(rx_ptr + _row_offsets(rows, spatial, rx_stride_n, rx_stride_s)[:, None]
                         + (c * rx_stride_c)[None, :], mask=mask, other=0.0).to(tl.float32)
            r_centred = _centred(rx, rx_ptr, r_stats_ptr, c, channel_ok, rx_stride_c, SHIFTED)
            sum_gr += g * (r_centred * r_invstd[None, :])
    sums_per_split = 2
    if KIND == "prelu":
        sums_per_split = 3
    base = partial_ptr + split * sums_per_split * channels + c
    total_g = tl.sum(sum_g, axis=0)
    tl.store(base, total_g, mask=channel_ok)
    tl.store(base + channels, tl.sum(sum_gx, axis=0), mask=channel_ok)
    if KIND == "prelu":
        tl.store(base + 2 * channels, tl.sum(sum_slope, axis=0), mask=channel_ok)
    if RESIDUAL_SUMS:
        r_base = r_partial_ptr + split * 2 * channels + c
        tl.store(r_base, total_g, mask=channel_ok)
        tl.store(r_base + channels, tl.sum(sum_gr, axis=0), mask=channel_ok)


@triton.jit
def _backward_finalize_kernel(
        partial_ptr, num_splits, sums_ptr, grad_weight_ptr, grad_bias_ptr, grad_slope_ptr, channels,
        HAS_GRAD_WEIGHT: tl.constexpr, HAS_GRAD_BIAS: tl.constexpr, SLOPE_SUMS: tl.constexpr,
        HAS_GRAD_SLOPE: tl.constexpr, BLOCK_SPLITS: tl.constexpr, BLOCK: tl.constexpr):
    """sums[0:2, c] = (sum g, sum g·x̂) over the partials [splits, 2, C] (SLOPE_SUMS: [splits, 3,
    C], the third PReLU's slope terms), and the gradients of the weight (sum g·x̂), the bias (sum
    g) and the slopes."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    sum_g = tl.zeros((BLOCK,), tl.float32)
    sum_gx = tl.zeros((BLOCK,), tl.float32)
    sum_slope = tl.zeros((BLOCK,), tl.float32)
    sums_per_split = 2
    if SLOPE_SUMS:
        sums_per_split = 3
    # BLOCK_SPLITS partials summed as a tree, the blocks in order: the same bits every run, and few
    # steps for the thousands of partials the grad-input epilogue writes (kernels/moments.py).
    for first in range(0, num_splits, BLOCK_SPLITS):
        splits = first + tl.arange(0, BLOCK_SPLITS).to(tl.int64)
        mask = (splits < num_splits)[:, None] & ok[None, :]
        base = partial_ptr + (splits * sums_per_split * channels)[:, None] + c[None, :]
        sum_g += tl.sum(tl.load(base, mask=mask, other=0.0), axis=0)
        sum_gx += tl.sum(tl.load(base + channels, mask=mask, other=0.0), axis=0)
        if HAS_GRAD_SLOPE:
            sum_slope += tl.sum(tl.load(base + 2 * channels, mask=mask, other=0.0), axis=0)
    tl.store(sums_ptr + c, sum_g, mask=ok)
    tl.store(sums_ptr + channels + c, sum_gx, mask=ok)
    if HAS_GRAD_WEIGHT:
        tl.store(grad_weight_ptr + c, sum_gx.to(grad_weight_ptr.dtype.element_ty), mask=ok)
    if HAS_GRAD_BIAS:
        tl.store(grad_bias_ptr + c, sum_g.to(grad_bias_ptr.dtype.element_ty), mask=ok)
    if HAS_GRAD_SLOPE:
        tl.store(grad_slope_ptr + c, sum_slope.to(grad_slope_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _backward_apply_kernel(
        dy_ptr, x_ptr, r_ptr, dx_ptr, dr_ptr, stats_ptr, weight_ptr, bias_ptr, sums_ptr, slope_ptr, parameter,
        num_rows, channels, spatial, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c, x_stride_s,
        r_stride_n, r_stride_c, r_stride_s, dx_stride_n, dx_stride_c, dx_stride_s, dr_stride_n, dr_stride_c,
        dr_stride_s, weight_stride, bias_stride, slope_stride, KIND: tl.constexpr, HAS_RESIDUAL: tl.constexpr, FROM_OUTPUT: tl.constexpr,
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, SHIFTED: tl.constexpr, TRAINING: tl.constexpr,
        WRITE_DX: tl.constexpr, WRITE_DR: tl.constexpr, COUNT_IN_STATS: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr):
    """dx (and dr = g) of act(bn(x) [+ r]) from the sums of g and g·x̂ over the batch, which
    they are averaged over: x's rows, or (COUNT_IN_STATS) the count in the statistics' row
    COUNT_ROW, a batch that spans several processes (kernels/sync_batch_norm.py)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = c < channels
    mask = (rows < num_rows)[:, None] & channel_ok[None, :]
    if KIND == "prelu":
        parameter = channel_slopes(slope_ptr, c, channel_ok, slope_stride)[None, :]
    g, centred, _ = _masked_grad(dy_ptr, x_ptr, r_ptr, stats_ptr, weight_ptr, bias_ptr, parameter, rows, c, mask,
                                 channel_ok, channels, spatial, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n,
                                 x_stride_c, x_stride_s, r_stride_n, r_stride_c, r_stride_s, weight_stride,
                                 bias_stride, KIND, HAS_RESIDUAL, FROM_OUTPUT, HAS_WEIGHT, HAS_BIAS, SHIFTED)
    if WRITE_DR:  # d(act(bn(x) + r))/dr = g
        tl.store(dr_ptr + _row_offsets(rows, spatial, dr_stride_n, dr_stride_s)[:, None] + (c * dr_stride_c)[None, :],
                 g.to(dr_ptr.dtype.element_ty), mask=mask)
    if WRITE_DX:
        scale = _scale(stats_ptr, weight_ptr, c, channel_ok, channels, weight_stride, HAS_WEIGHT)
        if TRAINING:
            invstd = tl.load(stats_ptr + channels + c, mask=channel_ok, other=0.0)
            if COUNT_IN_STATS:
                count = tl.load(stats_ptr + COUNT_ROW_CONSTEXPR * channels + c, mask=channel_ok, other=1.0)
                mean_g = tl.load(sums_ptr + c, mask=channel_ok, other=0.0) / count
                mean_gx = tl.load(sums_ptr + channels + c, mask=channel_ok, other=0.0) / count
            else:
                mean_g = tl.load(sums_ptr + c, mask=channel_ok, other=0.0) / num_rows
                mean_gx = tl.load(sums_ptr + channels + c, mask=channel_ok, other=0.0) / num_rows
            x_hat = centred * invstd[None, :]
            dx = scale[None, :] * (g - mean_g[None, :] - x_hat * mean_gx[None, :])
        else:
            dx = scale[None, :] * g
        tl.store(dx_ptr + _row_offsets(rows, spatial, dx_stride_n, dx_stride_s)[:, None] + (c * dx_stride_c)[None, :],
                 dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _finalize_sums(partial, channels, grad_weight, grad_bias, grad_slope):
    """The fp32 [2, C] (sum g, sum g·x̂) of the partials [splits, 2 or 3, C] (the third row PReLU's
    slope terms), and the weight's, the bias's and the slopes' gradients (each may be None). One
    launch."""
    sums = torch.empty((2, channels), dtype=torch.float32, device=partial.device)
    _backward_finalize_kernel[(triton.cdiv(channels, FINAL_BLOCK),)](
        partial, partial.shape[0], sums, *(t if t is not None else sums for t in (grad_weight, grad_bias, grad_slope)),
        channels, HAS_GRAD_WEIGHT=grad_weight is not None, HAS_GRAD_BIAS=grad_bias is not None,
        SLOPE_SUMS=partial.shape[1] == 3, HAS_GRAD_SLOPE=grad_slope is not None, BLOCK_SPLITS=FINAL_BLOCK_SPLITS,
        BLOCK=FINAL_BLOCK)
    return sums


def backward_from_sums(g, x, dx, partial, stats, weight, bias, grad_weight, grad_bias, *, training, grad_slope=None):
    """Batch norm's backward when g (the gradient through the activation) and the partial sums of
    g and g·x̂ (fp32 [slots, 2, C]) came from the grad-input epilogue of the convolution that read
    act(bn(x)) (kernels/conv2d_gemm.py), or from ``grad_with_sums`` (whose [slots, 3, C] for a
    PReLU also sum its slopes' gradient, into ``grad_slope``): the finalize of those sums (the
    weight's, the bias's and the slopes' gradients) and the apply into ``dx`` (may be None)
    alone. Returns the number of launches."""
    channels = x.shape[1]
    num_rows = x.shape[0] * x.shape[2]
    block_r, block_c = _tiles(x.stride(1))
    sums = _finalize_sums(partial, channels, grad_weight, grad_bias, grad_slope)
    if dx is None:
        return 1
    affine, affine_strides, flags = _affine(weight, bias, stats)
    _backward_apply_kernel[(triton.cdiv(num_rows, block_r), triton.cdiv(channels, block_c))](
        g, x, x, dx, x, stats, *affine, sums, sums, 0.0, num_rows, channels, x.shape[2], *g.stride(), *x.stride(),
        *x.stride(), *dx.stride(), *x.stride(), *affine_strides, 0, KIND=None, HAS_RESIDUAL=False, FROM_OUTPUT=False,
        SHIFTED=training, **flags, TRAINING=training, WRITE_DX=True, WRITE_DR=False, COUNT_IN_STATS=False,
        BLOCK_R=block_r, BLOCK_C=block_c)
    return 2


def grad_with_sums(dy, x, residual, g, partial, stats, weight, bias, *, kind, parameter, output=None,
                   residual_norm=None, slope=None, training=True):
    """One pass of the backward of act(batch_norm(x) + residual) in training: g = act'(z)·dy into
    ``g`` (the residual's gradient; z recomputed from x and ``residual``, or the derivative taken
    from ``output`` = act(z)) and into ``partial`` (fp32 [backward_sum_slices(x), 2, C]) the
    partial sums of g and g·x̂ that ``backward_from_sums`` finishes. Reads dy, x and the output
    (or the residual) and writes g: the pass over g and x for the sums that ``backward`` makes is
    saved. With ``residual_norm`` = (stats, partial) the residual was the input of a second batch
    norm (``apply``'s ``residual_norm``; the derivative then from ``output``): its sums of g and
    g·r̂ go to that partial in the same pass. For a PReLU (kind "prelu", its slopes ``slope``)
    ``partial`` is [slices, 3, C], the third row the sums of its slopes' gradient; it takes this
    pass in eval too (``training`` False: x̂ from the running statistics). Returns the number of
    launches (1)."""
    channels = x.shape[1]
    num_rows = x.shape[0] * x.shape[2]
    block_r, block_c = _tiles(x.stride(1))
    normalized = residual_norm is not None
    assert output is not None or not normalized, "a normalised residual's backward takes act' from the output"
    r = output if output is not None else residual
    affine, affine_strides, flags = _affine(weight, bias, stats)
    rows_per_split, splits = _grad_slices(x)
    assert partial.shape == (splits, 3 if kind == "prelu" else 2, channels), (partial.shape, splits)
    rx, r_stats, r_partial = (residual, *residual_norm) if normalized else (x, stats, partial)
    slope_target, slope_stride = _slope_arguments(slope, stats)
    _backward_sums_kernel[(triton.cdiv(channels, block_c), splits)](
        dy, x, r, stats, *affine, partial, g, rx, r_stats, r_partial, slope_target, float(parameter), num_rows,
        channels, x.shape[2], rows_per_split, *dy.stride(), *x.stride(), *r.stride(), *g.stride(), *rx.stride(),
        *affine_strides, slope_stride, KIND=kind, HAS_RESIDUAL=output is None, FROM_OUTPUT=output is not None,
        SHIFTED=training, **flags, WRITE_G=True, RESIDUAL_SUMS=normalized, BLOCK_R=block_r, BLOCK_C=block_c)
    return 1


def _backward_slices(x, block_c):
    """(rows per slice, slices) of the backward's per-channel sums over x [N, C, S]."""
    return reduction_slices(triton.cdiv(x.shape[1], block_c), x.shape[0] * x.shape[2], x.device,
                            min_length=MIN_ROWS_PER_SPLIT, max_slices=MAX_SPLITS)


def _grad_slices(x):
    """(rows per slice, slices) of ``grad_with_sums`` over x [N, C, S] (see GRAD_ROWS_PER_SLICE)."""
    rows = x.shape[0] * x.shape[2]
    block_r, block_c = _tiles(x.stride(1))
    channel_blocks = triton.cdiv(x.shape[1], block_c)
    rows_per_slice = GRAD_ROWS_PER_SLICE
    while rows_per_slice > block_r and channel_blocks * triton.cdiv(rows, rows_per_slice) < GRAD_MIN_PROGRAMS:
        rows_per_slice //= 2
    return rows_per_slice, max(1, triton.cdiv(rows, rows_per_slice))


def backward_sum_slices(x):
    """How many partial sums ``grad_with_sums`` writes for x [N, C, S] (its result's first dim):
    one per slice of GRAD_ROWS_PER_SLICE rows or fewer, a count of x's shape and strides that
    needs no device (the partials are an output of an operator, whose shape fake tensors and
    torch.compile must know without a GPU)."""
    return _grad_slices(x)[1]


def _tiles(channel_stride):
    """(BLOCK_R, BLOCK_C) for a tensor whose channel stride is ``channel_stride``."""
    return channel_blocks(channel_stride, interpreter=(1024, 16), channels_last=(32, 64), nchw=(256, 8))


def _slope_arguments(slope, fallback):
    """(pointer, stride) of PReLU's per-channel slopes (stride 0: one for all), or a placeholder."""
    return (fallback, 0) if slope is None else (slope, slope.stride(0))


def _affine(weight, bias, fallback):
    """The kernels' (weight, bias) pointers, their strides and flags; a missing one points at ``fallback``."""
    tensors = [t if t is not None else fallback for t in (weight, bias)]
    return tensors, [t.stride(0) for t in tensors], dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None)


def statistics(x, stats, running_mean, running_var, weight, bias, *, training, momentum, eps):
    """The per-channel statistics of x [N, C, S] into ``stats``, fp32 [STATISTICS_ROWS, C]
    contiguous: (mean, invstd) in training the batch's (the mean that of x - x[0, c, 0]) and the
    running statistics updated in place when given, in eval the running statistics; then the
    input prologue's coefficients from the affine ``weight`` and ``bias`` (kernels/prologue.py).
    The running statistics, weight and bias are 1-d (any stride) or None. Returns the number of
    launches."""
    channels = x.shape[1]
    num_rows = x.shape[0] * x.shape[2]
    block_r, block_c = _tiles(x.stride(1))
    launches = 0
    partial, splits = stats, 0
    if training:
        rows_per_split, splits = reduction_slices(triton.cdiv(channels, block_c), num_rows, x.device,
                                                  min_length=MIN_ROWS_PER_SPLIT, max_slices=MAX_SPLITS)
        partial = torch.empty((splits, 3, channels), dtype=torch.float32, device=x.device)
        _partial_stats_kernel[(triton.cdiv(channels, block_c), splits)](
            x, partial, num_rows, channels, x.shape[2], rows_per_split, *x.stride(), BLOCK_R=block_r, BLOCK_C=block_c)
        launches += 1
    running = [tensor if tensor is not None else stats for tensor in (running_mean, running_var)]
    affine, affine_strides, affine_flags = _affine(weight, bias, stats)
    _finalize_kernel[(triton.cdiv(channels, FINAL_BLOCK),)](
        partial, splits, x, *running, stats, *affine, channels, float(momentum), float(eps), x.stride(1),
        *(tensor.stride(0) for tensor in running), *affine_strides, TRAINING=training,
        UPDATE_RUNNING=training and running_mean is not None, **affine_flags, BLOCK=FINAL_BLOCK)
    return launches + 1


def statistics_from_moments(x, moments, stats, running_mean, running_var, weight, bias, *, momentum, eps):
    """``statistics`` in training, from the ``moments`` (kernels/moments.py) the convolution that
    wrote x [N, C, S] emitted, instead of a pass over x: one launch."""
    channels = x.shape[1]
    running = [tensor if tensor is not None else stats for tensor in (running_mean, running_var)]
    affine, affine_strides, affine_flags = _affine(weight, bias, stats)
    _moments_finalize_kernel[(triton.cdiv(channels, MOMENTS_BLOCK),)](
        moments, moments.shape[0], x, *running, stats, *affine, channels, float(momentum), float(eps), x.stride(1),
        *(tensor.stride(0) for tensor in running), *affine_strides, UPDATE_RUNNING=running_mean is not None,
        **affine_flags, BLOCK_SLOTS=MOMENTS_BLOCK_SLOTS, BLOCK=MOMENTS_BLOCK)
    return 1


def apply(x, residual, y, stats, weight, bias, *, training, kind, parameter, residual_norm=None, slope=None):
    """y = act((x - mean)·w·invstd + b [+ residual]) for x, residual (or None) and y [N, C, S],
    from ``statistics``' ``stats`` (``training``: the batch's) and the affine ``weight`` and
    ``bias`` (1-d or None); ``kind`` one of fastcnn/ops/activation.py's KINDS or None. With
    ``residual_norm`` = (stats, weight, bias) of a second batch norm, the residual is that norm's
    input and bn_r(residual) is added instead (a ResNet downsample's batch norm: its output is
    never stored). ``slope``: PReLU's C slopes (kind "prelu"; stride 0 for one). One launch."""
    channels = x.shape[1]
    num_rows = x.shape[0] * x.shape[2]
    block_r, block_c = _tiles(x.stride(1))
    r = x if residual is None else residual
    affine, affine_strides, flags = _affine(weight, bias, stats)
    r_stats, r_weight, r_bias = residual_norm if residual_norm is not None else (stats, None, None)
    r_affine, r_affine_strides, r_flags = _affine(r_weight, r_bias, r_stats)
    slope_target, slope_stride = _slope_arguments(slope, stats)
    _apply_kernel[(triton.cdiv(num_rows, block_r), triton.cdiv(channels, block_c))](
        x, r, y, stats, *affine, r_stats, *r_affine, slope_target, float(parameter), num_rows, channels, x.shape[2],
        *x.stride(), *r.stride(), *y.stride(), *affine_strides, *r_affine_strides, slope_stride, KIND=kind,
        HAS_RESIDUAL=residual is not None and residual_norm is None, SHIFTED=training, **flags,
        RESIDUAL_NORMALIZED=residual_norm is not None, HAS_RESIDUAL_WEIGHT=r_flags["HAS_WEIGHT"],
        HAS_RESIDUAL_BIAS=r_flags["HAS_BIAS"], BLOCK_R=block_r, BLOCK_C=block_c)
    return 1


def _backward_arguments(dy, x, residual, stats, weight, bias, training, kind, output, slope):
    """What the backward's passes share: (rows, r, affine pointers, affine strides, the kernels'
    activation options, PReLU's slopes pointer and stride)."""
    r = output if output is not None else (x if residual is None else residual)
    affine, affine_strides, flags = _affine(weight, bias, stats)
    activation = dict(KIND=kind, HAS_RESIDUAL=residual is not None, FROM_OUTPUT=output is not None, SHIFTED=training,
                      **flags)
    return x.shape[0] * x.shape[2], r, affine, affine_strides, activation, _slope_arguments(slope, stats)


def backward_sums(dy, x, residual, stats, weight, bias, grad_weight, grad_bias, *, training, kind, parameter,
                  output=None, slope=None, grad_slope=None):
    """The first half of ``backward``: (sums, launches), sums the fp32 [2, C] (sum g, sum g·x̂)
    over x's rows, and the gradients of the weight, the bias and PReLU's slopes (each may be
    None) from them. Two launches: the sliced sums, their fixed-order finalize."""
    channels = x.shape[1]
    block_r, block_c = _tiles(x.stride(1))
    num_rows, r, affine, affine_strides, activation, (slope_target, slope_stride) = _backward_arguments(
        dy, x, residual, stats, weight, bias, training, kind, output, slope)
    rows_per_split, splits = _backward_slices(x, block_c)
    partial = torch.empty((splits, 3 if kind == "prelu" else 2, channels), dtype=torch.float32, device=x.device)
    _backward_sums_kernel[(triton.cdiv(channels, block_c), splits)](
        dy, x, r, stats, *affine, partial, x, x, stats, partial, slope_target, float(parameter), num_rows,
        channels, x.shape[2], rows_per_split, *dy.stride(), *x.stride(), *r.stride(), *x.stride(), *x.stride(),
        *affine_strides, slope_stride, **activation, WRITE_G=False, RESIDUAL_SUMS=False, BLOCK_R=block_r,
        BLOCK_C=block_c)
    return _finalize_sums(partial, channels, grad_weight, grad_bias, grad_slope), 2


def backward_apply(dy, x, residual, dx, dr, stats, weight, bias, sums, *, training, kind, parameter, output=None,
                   slope=None, count_in_stats=False):
    """The second half of ``backward``: dx (``training``: from ``sums``, averaged over x's rows,
    or with ``count_in_stats`` over the count in ``stats``' row COUNT_ROW) and dr = g (each may be
    None). One launch."""
    channels = x.shape[1]
    block_r, block_c = _tiles(x.stride(1))
    num_rows, r, affine, affine_strides, activation, (slope_target, slope_stride) = _backward_arguments(
        dy, x, residual, stats, weight, bias, training, kind, output, slope)
    dx_or_x, dr_or_x = (x if t is None else t for t in (dx, dr))
    _backward_apply_kernel[(triton.cdiv(num_rows, block_r), triton.cdiv(channels, block_c))](
        dy, x, r, dx_or_x, dr_or_x, stats, *affine, sums, slope_target, float(parameter), num_rows, channels,
        x.shape[2], *dy.stride(), *x.stride(), *r.stride(), *dx_or_x.stride(), *dr_or_x.stride(), *affine_strides,
        slope_stride, **activation, TRAINING=training and dx is not None, WRITE_DX=dx is not None,
        WRITE_DR=dr is not None, COUNT_IN_STATS=count_in_stats, BLOCK_R=block_r, BLOCK_C=block_c)
    return 1


def backward(dy, x, residual, dx, dr, stats, weight, bias, grad_weight, grad_bias, *, training, kind, parameter,
             output=None, slope=None, grad_slope=None):
    """Gradients of act(batch_norm(x) [+ residual]) into ``dx``, ``dr`` (the residual's),
    ``grad_weight`` and ``grad_bias`` (each may be None), from ``statistics``' ``stats`` and the
    affine ``weight`` and ``bias`` (or None). The activation's derivative is taken at z
    recomputed from x and ``residual``, or from ``output`` = act(z) when it is given (then
    ``residual`` is None, and a ``dr`` still receives the gradient). ``slope``: PReLU's C slopes
    (kind "prelu"), whose gradient, per channel, goes to ``grad_slope`` (may be None). Returns the
    number of launches: ``backward_sums`` where the sums are needed, then ``backward_apply``."""
    launches = 0
    sums = stats
    options = dict(training=training, kind=kind, parameter=parameter, output=output, slope=slope)
    if (training and dx is not None) or any(t is not None for t in (grad_weight, grad_bias, grad_slope)):
        sums, launches = backward_sums(dy, x, residual, stats, weight, bias, grad_weight, grad_bias,
                                       grad_slope=grad_slope, **options)
    if dx is not None or dr is not None:
        launches += backward_apply(dy, x, residual, dx, dr, stats, weight, bias, sums, **options)
    return launches
