"""Group norm (and instance norm, its groups = channels case) with an optional fused activation,
forward and backward, for x [N, C, S] (S = the flattened spatial dims) read through its strides.
C = G groups of Cg channels; a row is one (sample, group), r = n·G + g, of L = Cg·S values.

Every pass tiles [channels x pixels] of one sample, the channel axis flat across groups, so that
both NCHW (pixels contiguous) and channels_last (channels contiguous: a group's 10 channels alone
could not be read 16 bytes at a time) load whole 128-bit vectors. The reductions therefore work
per (sample, channel) and merge a row's channels afterwards:

Forward: per (n, c) and slice of the pixels, the count, mean and sum of squared deviations of
x - K, K the row's first value (so a row of mean 3000 and std 0.5 keeps fp32 accuracy), merged
over tiles with Chan's formula (kernels/moments.py); a finalize program per block of rows merges
its Cg channels x slices in a fixed order into (K, mean, rstd, variance); then
y = act(((x - K) - mean)·rstd·w[c] + b[c]) elementwise. Instance norm in eval
(use_input_stats=False) takes K = running_mean[c], mean 0, var = running_var[c] instead (the
finalize alone), and in training its running statistics move to the batch average of the rows'
mean and unbiased variance (torch's rule).

Backward, with x̂ = (x - mean)·rstd, gz = act'(x̂·w + b)·dy (recomputed, nothing but x saved) and
gh = gz·w:
    per (n, c): Σ_s gz and Σ_s gz·x̂ (slices summed in order) ->  db[c], dw[c] (summed over n in
                order: slicing.sum_partials)
    per row:    A = Σ gh = Σ_c w·Σ_s gz,  B = Σ gh·x̂ = Σ_c w·Σ_s gz·x̂
    dx = rstd·(gh - (A + x̂·B)/L)        (statistics of the batch; rstd·gh with running ones)
A fused PReLU (kind "prelu") reads its slopes per channel where act is applied and adds a third
per-(n, c) sum, Σ_s dy·z where z <= 0 (z = x̂·w + b), summed over n like db and dw: its slopes'
gradient.

Bytes: forward reads x twice and writes y; backward reads x and dy twice and writes dx. Saved:
x and four floats per row. Launch grids: the [channels x pixels] passes (cdiv(S, BLOCK_S),
cdiv(C, BLOCK_C), N) for the elementwise ones and (cdiv(C, BLOCK_C), slices, N) for the
reductions, slices chosen to give two programs per SM; the finalizes (cdiv(N·G, ROW_BLOCK),); the
running statistics (cdiv(C, CHANNEL_BLOCK),); the parameter gradients' sum over samples
(slicing's).
"""
import triton
import triton.language as tl

from .activation import activate, activation_grad, channel_slopes, prelu_slope_grad
from .indexing import needs_wide_index, widen
from .moments import affine_parameters, chan_merge
from .slicing import partials, reduction_slices, sum_partials
from .tiles import by_backend, channel_blocks

CHANNEL_BLOCK = 128
ROW_BLOCK = 128
MIN_PIXELS_PER_SLICE = by_backend(interpreter=16, gpu=512)
MAX_SLICES = 256


@triton.jit
def _channel_tile(batch_index, c, s, channels, spatial, stride_n, stride_c, stride_s, WIDE_INDEX: tl.constexpr):
    """(offsets [C, S], mask) of the elementwise passes' tile: channels ``c`` of one sample and
    pixels ``s``, the channel axis flat across groups so that channels_last rows are contiguous."""
    mask = (c < channels)[:, None] & (s < spatial)[None, :]
    offsets = (widen(batch_index, WIDE_INDEX) * stride_n + widen(c, WIDE_INDEX) * stride_c)[:, None] + (
        widen(s, WIDE_INDEX) * stride_s)[None, :]
    return offsets, mask


@triton.jit
def _channel_stats(stats_ptr, batch_index, c, channels, groups, group_channels):
    """(row, shift, mean, rstd) of each channel ``c`` of sample ``batch_index``: its (n, g) row's (the
    grid's third axis is the sample, so it has N·G rows)."""
    ok = c < channels
    rows = batch_index * groups + c // group_channels
    num_rows = tl.num_programs(2) * groups
    shift = tl.load(stats_ptr + rows, mask=ok, other=0.0)
    mean = tl.load(stats_ptr + num_rows + rows, mask=ok, other=0.0)
    rstd = tl.load(stats_ptr + 2 * num_rows + rows, mask=ok, other=0.0)
    return rows, shift[:, None], mean[:, None], rstd[:, None]


@triton.jit
def _apply_kernel(
        x_ptr, y_ptr, stats_ptr, weight_ptr, bias_ptr, slope_ptr, channels, groups, group_channels, spatial, parameter,
        x_stride_n, x_stride_c, x_stride_s, y_stride_n, y_stride_c, y_stride_s, weight_stride, bias_stride,
        slope_stride, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, WIDE_INDEX: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Grid (pixel blocks, channel blocks, samples)."""
    s = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch_index = tl.program_id(2)
    offsets, mask = _channel_tile(batch_index, c, s, channels, spatial, x_stride_n, x_stride_c, x_stride_s,
                                  WIDE_INDEX)
    out_offsets, _ = _channel_tile(batch_index, c, s, channels, spatial, y_stride_n, y_stride_c, y_stride_s,
                                   WIDE_INDEX)
    _, shift, mean, rstd = _channel_stats(stats_ptr, batch_index, c, channels, groups, group_channels)
    w, b = affine_parameters(weight_ptr, bias_ptr, c, c < channels, weight_stride, bias_stride, HAS_WEIGHT, HAS_BIAS)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if KIND == "prelu":  # PReLU's slopes, one per channel (stride 0: one for all)
        parameter = channel_slopes(slope_ptr, c, c < channels, slope_stride)[:, None]
    y = activate(((x - shift) - mean) * (rstd * w[:, None]) + b[:, None], KIND, parameter)
    tl.store(y_ptr + out_offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row_shift(x_ptr, batch_index, c, channels, group_channels, x_stride_n, x_stride_c, WIDE_INDEX: tl.constexpr):
    """K of each channel ``c``'s row: the row's first value, x[n, (c // Cg)·Cg, 0], fp32."""
    first = (c // group_channels) * group_channels
    return tl.load(x_ptr + widen(batch_index, WIDE_INDEX) * x_stride_n + widen(first, WIDE_INDEX) * x_stride_c,
                   mask=c < channels, other=0.0).to(tl.float32)


@triton.jit
def _partial_stats_kernel(
        x_ptr, partial_ptr, channels, group_channels, spatial, pixels_per_slice,
        x_stride_n, x_stride_c, x_stride_s,
        WIDE_INDEX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """partial[slice, 0:3, n·C + c] = (count, mean, m2) of x - K over this slice of the pixels."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    piece = tl.program_id(1)
    batch_index = tl.program_id(2)
    shift = _row_shift(x_ptr, batch_index, c, channels, group_channels, x_stride_n, x_stride_c, WIDE_INDEX)
    count = tl.zeros((BLOCK_C,), tl.float32)
    mean = tl.zeros((BLOCK_C,), tl.float32)
    m2 = tl.zeros((BLOCK_C,), tl.float32)
    start = piece * pixels_per_slice
    end = tl.minimum(start + pixels_per_slice, spatial)
    for s0 in range(start, end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        offsets, mask = _channel_tile(batch_index, c, s, channels, end, x_stride_n, x_stride_c, x_stride_s,
                                      WIDE_INDEX)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        x = tl.where(mask, x - shift[:, None], 0.0)
        # Every channel of the tile has the same pixels: one count (the channels past C are not read back).
        tile_count = tl.sum((s < end).to(tl.float32), axis=0)
        tile_mean = tl.sum(x, axis=1) / tl.maximum(tile_count, 1.0)
        deviation = tl.where(mask, x - tile_mean[:, None], 0.0)
        count, mean, m2 = chan_merge(count, mean, m2, tile_count, tile_mean, tl.sum(deviation * deviation, axis=1))
    plane = tl.num_programs(2) * channels  # N·C
    at = partial_ptr + piece * 3 * plane + batch_index * channels + c
    ok = c < channels
    tl.store(at, count, mask=ok)
    tl.store(at + plane, mean, mask=ok)
    tl.store(at + 2 * plane, m2, mask=ok)


@triton.jit
def _finalize_stats_kernel(
        x_ptr, partial_ptr, stats_ptr, running_mean_ptr, running_var_ptr, num_rows, groups, group_channels,
        num_slices, eps, x_stride_n, x_stride_c, running_mean_stride, running_var_stride,
        USE_RUNNING: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK: tl.constexpr):
    """stats[0:4, r] = (shift K, mean of x - K, rstd, biased variance) of each row: its Cg
    channels' slices merged in a fixed order (or, USE_RUNNING, the running statistics of channel
    r % C: instance norm in eval, rows (n, c))."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = rows < num_rows
    if USE_RUNNING:
        channel = rows % groups
        shift = tl.load(running_mean_ptr + channel * running_mean_stride, mask=ok, other=0.0).to(tl.float32)
        mean = tl.zeros((BLOCK,), tl.float32)
        variance = tl.load(running_var_ptr + channel * running_var_stride, mask=ok, other=1.0).to(tl.float32)
    else:
        batch_index, first = rows // groups, (rows % groups) * group_channels
        shift = tl.load(x_ptr + widen(batch_index, WIDE_INDEX) * x_stride_n + widen(first, WIDE_INDEX) * x_stride_c,
                        mask=ok, other=0.0).to(tl.float32)
        plane = num_rows * group_channels  # N·C
        count = tl.zeros((BLOCK,), tl.float32)
        mean = tl.zeros((BLOCK,), tl.float32)
        m2 = tl.zeros((BLOCK,), tl.float32)
        for cl in range(group_channels):
            for piece in range(num_slices):
                at = partial_ptr + piece * 3 * plane + rows * group_channels + cl  # rows·Cg + cl = n·C + c
                count, mean, m2 = chan_merge(count, mean, m2, tl.load(at, mask=ok, other=0.0),
                                             tl.load(at + plane, mask=ok, other=0.0),
                                             tl.load(at + 2 * plane, mask=ok, other=0.0))
        variance = m2 / tl.maximum(count, 1.0)
    tl.store(stats_ptr + rows, shift, mask=ok)
    tl.store(stats_ptr + num_rows + rows, mean, mask=ok)
    tl.store(stats_ptr + 2 * num_rows + rows, 1.0 / tl.sqrt(variance + eps), mask=ok)
    tl.store(stats_ptr + 3 * num_rows + rows, variance, mask=ok)


@triton.jit
def _grad_tile(dy_ptr, x_ptr, offsets, dy_offsets, mask, shift, mean, rstd, w, b, parameter, KIND: tl.constexpr):
    """(gz, x̂, PReLU's slope term) of one tile: dy through the activation's derivative at the
    recomputed z = x̂·w + b, and for kind "prelu" (``parameter`` its slopes) dy·z where z <= 0
    (else gz again)."""
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(tl.float32)
    x_hat = ((x - shift) - mean) * rstd
    z = x_hat * w + b
    gz = tl.where(mask, activation_grad(z, dy, KIND, parameter), 0.0)
    if KIND == "prelu":
        return gz, x_hat, prelu_slope_grad(z, dy)
    return gz, x_hat, gz


@triton.jit
def _partial_grad_sums_kernel(
        dy_ptr, x_ptr, stats_ptr, weight_ptr, bias_ptr, slope_ptr, partial_ptr, channels, groups, group_channels,
        spatial, pixels_per_slice, parameter, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c,
        x_stride_s, weight_stride, bias_stride, slope_stride,
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, WIDE_INDEX: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """partial[slice, 0:2, n·C + c] = (Σ gz, Σ gz·x̂) over this slice of the pixels, and for a
    PReLU partial[slice, 2, n·C + c] = Σ dy·z where z <= 0 (its slopes' gradient)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    piece = tl.program_id(1)
    batch_index = tl.program_id(2)
    _, shift, mean, rstd = _channel_stats(stats_ptr, batch_index, c, channels, groups, group_channels)
    w, b = affine_parameters(weight_ptr, bias_ptr, c, c < channels, weight_stride, bias_stride, HAS_WEIGHT, HAS_BIAS)
    sum_gz = tl.zeros((BLOCK_C,), tl.float32)
    sum_gzx = tl.zeros((BLOCK_C,), tl.float32)
    sum_slope = tl.zeros((BLOCK_C,), tl.float32)
    sums_per_slice = 2
    if KIND == "prelu":
        parameter = channel_slopes(slope_ptr, c, c < channels, slope_stride)[:, None]
        sums_per_slice = 3
    start = piece * pixels_per_slice
    end = tl.minimum(start + pixels_per_slice, spatial)
    for s0 in range(start, end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        offsets, mask = _channel_tile(batch_index, c, s, channels, end, x_stride_n, x_stride_c, x_stride_s,
                                      WIDE_INDEX)
        dy_offsets = _channel_tile(batch_index, c, s, channels, end, dy_stride_n, dy_stride_c, dy_stride_s,
                                   WIDE_INDEX)[0]
        gz, x_hat, slope_term = _grad_tile(dy_ptr, x_ptr, offsets, dy_offsets, mask, shift, mean, rstd, w[:, None],
                                           b[:, None], parameter, KIND)
        sum_gz += tl.sum(gz, axis=1)
        sum_gzx += tl.sum(gz * x_hat, axis=1)
        if KIND == "prelu":
            sum_slope += tl.sum(slope_term, axis=1)
    plane = tl.num_programs(2) * channels  # N·C
    at = partial_ptr + piece * sums_per_slice * plane + batch_index * channels + c
    tl.store(at, sum_gz, mask=c < channels)
    tl.store(at + plane, sum_gzx, mask=c < channels)
    if KIND == "prelu":
        tl.store(at + 2 * plane, sum_slope, mask=c < channels)


@triton.jit
def _finalize_grad_sums_kernel(
        partial_ptr, weight_ptr, row_sums_ptr, channel_sums_ptr, num_rows, groups, group_channels, num_slices,
        weight_stride, HAS_WEIGHT: tl.constexpr, CHANNEL_SUMS: tl.constexpr, SLOPE_SUMS: tl.constexpr,
        BLOCK: tl.constexpr):
    """Per row, its channels' slices summed in order: row_sums[0:2, r] = (A, B) and, with
    CHANNEL_SUMS, channel_sums[n, 0:2, c] = (Σ_s gz, Σ_s gz·x̂), and with SLOPE_SUMS (a PReLU's:
    the partials then [slices, 3, N·C]) channel_sums[n, 2, c] = Σ_s dy·z where z <= 0."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = rows < num_rows
    channels = groups * group_channels
    plane = num_rows * group_channels  # N·C
    sums_per_slice = 2
    if SLOPE_SUMS:
        sums_per_slice = 3
    sum_gh = tl.zeros((BLOCK,), tl.float32)
    sum_ghx = tl.zeros((BLOCK,), tl.float32)
    for cl in range(group_channels):
        flat = rows * group_channels + cl  # n·C + c
        sum_gz = tl.zeros((BLOCK,), tl.float32)
        sum_gzx = tl.zeros((BLOCK,), tl.float32)
        sum_slope = tl.zeros((BLOCK,), tl.float32)
        for piece in range(num_slices):
            at = partial_ptr + piece * sums_per_slice * plane + flat
            sum_gz += tl.load(at, mask=ok, other=0.0)
            sum_gzx += tl.load(at + plane, mask=ok, other=0.0)
            if SLOPE_SUMS:
                sum_slope += tl.load(at + 2 * plane, mask=ok, other=0.0)
        if CHANNEL_SUMS:
            at = channel_sums_ptr + (rows // groups) * sums_per_slice * channels + (rows % groups) * group_channels + cl
            tl.store(at, sum_gz, mask=ok)
            tl.store(at + channels, sum_gzx, mask=ok)
            if SLOPE_SUMS:
                tl.store(at + 2 * channels, sum_slope, mask=ok)
        if HAS_WEIGHT:
            w = tl.load(weight_ptr + ((rows % groups) * group_channels + cl) * weight_stride, mask=ok,
                        other=1.0).to(tl.float32)
            sum_gz *= w
            sum_gzx *= w
        sum_gh += sum_gz
        sum_ghx += sum_gzx
    tl.store(row_sums_ptr + rows, sum_gh, mask=ok)
    tl.store(row_sums_ptr + num_rows + rows, sum_ghx, mask=ok)


@triton.jit
def _backward_apply_kernel(
        dy_ptr, x_ptr, dx_ptr, stats_ptr, row_sums_ptr, weight_ptr, bias_ptr, slope_ptr, channels, groups,
        group_channels, spatial, parameter, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c, x_stride_s,
        dx_stride_n, dx_stride_c, dx_stride_s, weight_stride, bias_stride, slope_stride,
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, BATCH_STATISTICS: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Grid (pixel blocks, channel blocks, samples)."""
    s = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch_index = tl.program_id(2)
    offsets, mask = _channel_tile(batch_index, c, s, channels, spatial, x_stride_n, x_stride_c, x_stride_s,
                                  WIDE_INDEX)
    dy_offsets, _ = _channel_tile(batch_index, c, s, channels, spatial, dy_stride_n, dy_stride_c, dy_stride_s,
                                  WIDE_INDEX)
    dx_offsets, _ = _channel_tile(batch_index, c, s, channels, spatial, dx_stride_n, dx_stride_c, dx_stride_s,
                                  WIDE_INDEX)
    rows, shift, mean, rstd = _channel_stats(stats_ptr, batch_index, c, channels, groups, group_channels)
    w, b = affine_parameters(weight_ptr, bias_ptr, c, c < channels, weight_stride, bias_stride, HAS_WEIGHT, HAS_BIAS)
    w = w[:, None]
    if KIND == "prelu":
        parameter = channel_slopes(slope_ptr, c, c < channels, slope_stride)[:, None]
    gz, x_hat, _ = _grad_tile(dy_ptr, x_ptr, offsets, dy_offsets, mask, shift, mean, rstd, w, b[:, None], parameter,
                              KIND)
    if BATCH_STATISTICS:
        num_rows = tl.num_programs(2) * groups
        length = group_channels * spatial * 1.0
        mean_gh = tl.load(row_sums_ptr + rows, mask=c < channels, other=0.0) / length
        mean_ghx = tl.load(row_sums_ptr + num_rows + rows, mask=c < channels, other=0.0) / length
        dx = rstd * (gz * w - mean_gh[:, None] - x_hat * mean_ghx[:, None])
    else:
        dx = rstd * gz * w
    tl.store(dx_ptr + dx_offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _running_stats_kernel(stats_ptr, running_mean_ptr, running_var_ptr, batch, channels, momentum, unbiasing,
                          running_mean_stride, running_var_stride, BLOCK: tl.constexpr):
    """Instance norm's running statistics: each moves by ``momentum`` towards the batch average of
    its channel's per-sample mean and unbiased variance (rows are (n, c))."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < channels
    num_rows = batch * channels
    mean_sum = tl.zeros((BLOCK,), tl.float32)
    var_sum = tl.zeros((BLOCK,), tl.float32)
    for n in range(batch):
        row = n * channels + c
        mean_sum += tl.load(stats_ptr + row, mask=ok, other=0.0) + tl.load(stats_ptr + num_rows + row, mask=ok,
                                                                           other=0.0)
        var_sum += tl.load(stats_ptr + 3 * num_rows + row, mask=ok, other=0.0)
    mean_pointers = running_mean_ptr + c * running_mean_stride
    var_pointers = running_var_ptr + c * running_var_stride
    running_mean = tl.load(mean_pointers, mask=ok, other=0.0).to(tl.float32)
    running_var = tl.load(var_pointers, mask=ok, other=0.0).to(tl.float32)
    tl.store(mean_pointers, ((1.0 - momentum) * running_mean + momentum * mean_sum / batch)
             .to(running_mean_ptr.dtype.element_ty), mask=ok)
    tl.store(var_pointers, ((1.0 - momentum) * running_var + momentum * unbiasing * var_sum / batch)
             .to(running_var_ptr.dtype.element_ty), mask=ok)


def _per_channel(tensors, fallback):
    present = [tensor if tensor is not None else fallback for tensor in tensors]
    return present, [tensor.stride(0) for tensor in present]


def _slices(x, block_c):
    """(pixels per slice, slices) of a reduction over the pixels of each (n, c): enough to keep two
    programs per SM busy."""
    batch, channels, spatial = x.shape
    return reduction_slices(batch * triton.cdiv(channels, block_c), spatial, x.device,
                            min_length=MIN_PIXELS_PER_SLICE, max_slices=MAX_SLICES, granule=32)


def _reduction_blocks(x):
    """(BLOCK_C, BLOCK_S) of the reductions' [channels x pixels] tiles."""
    block_s, block_c = channel_blocks(x.stride(1), interpreter=(64, 16), channels_last=(64, 64), nchw=(256, 8))
    return block_c, max(1, min(block_s, triton.next_power_of_2(x.shape[2])))


def statistics(x, stats, running_mean, running_var, *, groups, eps, use_running):
    """stats, fp32 [4, N·G]: (shift, centred mean, rstd, biased variance) of each row of x
    [N, C, S]; with ``use_running`` (instance norm in eval, groups = C) the running ones. Returns
    the launches (two: the slices' partials, their merge; one with ``use_running``)."""
    batch, channels, spatial = x.shape
    num_rows = batch * groups
    (running_mean, running_var), strides = _per_channel((running_mean, running_var), stats)
    wide = needs_wide_index(x)
    partial, slices, launches = stats, 0, 0
    if not use_running:
        block_c, block_s = _reduction_blocks(x)
        per_slice, slices = _slices(x, block_c)
        partial = stats.new_empty((slices, 3, batch * channels))
        _partial_stats_kernel[(triton.cdiv(channels, block_c), slices, batch)](
            x, partial, channels, channels // groups, spatial, per_slice, *x.stride(), WIDE_INDEX=wide,
            BLOCK_C=block_c, BLOCK_S=block_s)
        launches += 1
    _finalize_stats_kernel[(triton.cdiv(num_rows, ROW_BLOCK),)](
        x, partial, stats, running_mean, running_var, num_rows, groups, channels // groups, slices, float(eps),
        x.stride(0), x.stride(1), *strides, USE_RUNNING=use_running, WIDE_INDEX=wide, BLOCK=ROW_BLOCK)
    return launches + 1


def _elementwise_grid(x):
    """(grid, BLOCK_C, BLOCK_S) of the elementwise passes: wide channel blocks over contiguous
    channels (channels_last), long pixel runs otherwise; pixel blocks on the grid's first axis,
    the only one not limited to 65535."""
    batch, channels, spatial = x.shape
    block_s, block_c = channel_blocks(x.stride(1), interpreter=(256, 16), channels_last=(32, 64), nchw=(256, 8))
    block_s = max(1, min(block_s, triton.next_power_of_2(spatial)))
    return (triton.cdiv(spatial, block_s), triton.cdiv(channels, block_c), batch), block_c, block_s


def apply(x, y, stats, weight, bias, *, groups, kind, parameter, slope=None):
    """y = act((x - mean)·rstd·w + b) for x, y [N, C, S] from ``stats``; ``slope``: PReLU's C
    slopes (kind "prelu"; stride 0 for one). One launch."""
    batch, channels, spatial = x.shape
    grid, block_c, block_s = _elementwise_grid(x)
    (weight, bias, slope), strides = _per_channel((weight, bias, slope), stats)
    _apply_kernel[grid](
        x, y, stats, weight, bias, slope, channels, groups, channels // groups, spatial, float(parameter),
        *x.stride(), *y.stride(), *strides, HAS_WEIGHT=weight is not stats, HAS_BIAS=bias is not stats, KIND=kind,
        WIDE_INDEX=needs_wide_index(x, y), BLOCK_C=block_c, BLOCK_S=block_s)
    return 1


def update_running(stats, running_mean, running_var, *, batch, momentum, reduction_length):
    """Instance norm's running statistics from ``stats`` of rows (n, c). One launch."""
    channels = running_mean.numel()
    unbiasing = reduction_length / max(reduction_length - 1, 1)
    _running_stats_kernel[(triton.cdiv(channels, CHANNEL_BLOCK),)](
        stats, running_mean, running_var, batch, channels, float(momentum), float(unbiasing), running_mean.stride(0),
        running_var.stride(0), BLOCK=CHANNEL_BLOCK)
    return 1


def backward(dy, x, dx, stats, weight, bias, parameter_grads, *, groups, batch_statistics, kind, parameter,
             slope=None):
    """Gradients of act(group_norm(x)) into ``dx`` (may be None) and ``parameter_grads`` (fp32
    [2, C]: grad_bias, grad_weight; [3, C] for a PReLU, kind "prelu" with C slopes ``slope``, the
    third row its slopes'; may be None). Returns the number of launches."""
    batch, channels, spatial = x.shape
    group_channels = channels // groups
    num_rows = batch * groups
    sums_per_channel = 3 if kind == "prelu" else 2
    assert parameter_grads is None or parameter_grads.shape == (sums_per_channel, channels), parameter_grads.shape
    (weight, bias, slope), strides = _per_channel((weight, bias, slope), stats)
    wide = needs_wide_index(*(t for t in (dy, x, dx) if t is not None))
    flags = dict(HAS_WEIGHT=weight is not stats, HAS_BIAS=bias is not stats, KIND=kind, WIDE_INDEX=wide)
    launches = 0
    row_sums = stats
    if batch_statistics and dx is not None or parameter_grads is not None:
        block_c, block_s = _reduction_blocks(x)
        per_slice, slices = _slices(x, block_c)
        partial = stats.new_empty((slices, sums_per_channel, batch * channels))
        _partial_grad_sums_kernel[(triton.cdiv(channels, block_c), slices, batch)](
            dy, x, stats, weight, bias, slope, partial, channels, groups, group_channels, spatial, per_slice,
            float(parameter), *dy.stride(), *x.stride(), *strides, BLOCK_C=block_c, BLOCK_S=block_s, **flags)
        row_sums = stats.new_empty((2, num_rows))
        # Per-sample channel sums, [N, 2 or 3, C], summed over the samples in order by sum_partials.
        channel_sums = partials(parameter_grads, batch) if parameter_grads is not None else stats
        _finalize_grad_sums_kernel[(triton.cdiv(num_rows, ROW_BLOCK),)](
            partial, weight, row_sums, channel_sums, num_rows, groups, group_channels, slices, strides[0],
            HAS_WEIGHT=weight is not stats, CHANNEL_SUMS=parameter_grads is not None, SLOPE_SUMS=kind == "prelu",
            BLOCK=ROW_BLOCK)
        launches += 2
        if parameter_grads is not None:
            launches += sum_partials(channel_sums, parameter_grads, batch)
    if dx is not None:
        grid, block_c, block_s = _elementwise_grid(x)
        _backward_apply_kernel[grid](
            dy, x, dx, stats, row_sums, weight, bias, slope, channels, groups, group_channels, spatial,
            float(parameter), *dy.stride(), *x.stride(), *dx.stride(), *strides, BATCH_STATISTICS=batch_statistics, BLOCK_C=block_c,
            BLOCK_S=block_s, **flags)
        launches += 1
    return launches
