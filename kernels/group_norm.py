"""Group norm (and instance norm, its groups = channels case) with an optional fused activation,
forward and backward, for x [N, C, S] (S = the flattened spatial dims) read through its strides.
C = G groups of Cg channels; a row is one (sample, group), r = n·G + g, of L = Cg·S values.

Forward: per row, the mean and biased variance of x - K (K the row's first value, so that a row
of mean 3000 and std 0.5 keeps fp32 accuracy), each [rows x channels x pixels] tile reduced
two-pass in registers and tiles merged with Chan's formula (kernels/moments.py); then
y = act(((x - K) - mean)·rstd·w[c] + b[c]) elementwise. Instance norm in eval
(use_input_stats=False) takes K = running_mean[c], mean 0, var = running_var[c] instead, and in
training its running statistics move to the batch average of the rows' mean and unbiased
variance (torch's rule).

Backward, with x̂ = (x - mean)·rstd, gz = act'(x̂·w + b)·dy (recomputed, nothing but x saved) and
gh = gz·w:
    per (n, c): Σ_s gz and Σ_s gz·x̂   ->  db[c], dw[c] (summed over n in order: slicing.sum_partials)
    per row:    A = Σ gh = Σ_c w·Σ_s gz,  B = Σ gh·x̂ = Σ_c w·Σ_s gz·x̂
    dx = rstd·(gh - (A + x̂·B)/L)        (statistics of the batch; rstd·gh with running ones)

Bytes: forward reads x twice and writes y; backward reads x and dy twice and writes dx. Saved:
x and four floats per row. Launch grids: row reductions (cdiv(N·G, BLOCK_G),), tiles of
[groups x group channels x pixels]; elementwise (cdiv(S, BLOCK_S), cdiv(C, BLOCK_C), N), tiles of
[channels x pixels] with the channel axis flat across groups (contiguous in channels_last, where a
group's 10 channels alone could not be read 16 bytes at a time); the running statistics
(cdiv(C, CHANNEL_BLOCK),); the parameter gradients' sum over samples (slicing's). One program
reduces whole rows, so the reductions fill the GPU only when N·G does (≥ 256 rows for U-Net's
GroupNorm(32) at batch 8); the tiles shrink to one row per program to get there.
"""
import triton
import triton.language as tl

from .activation import activate, activation_grad
from .moments import affine_parameters, chan_merge
from .slicing import partials, sum_partials
from .indexing import needs_wide_index, widen
from .tiles import by_backend, channel_blocks

TILE = by_backend(interpreter=4096, gpu=2048)  # values a program holds per tile
CHANNEL_BLOCK = 128
MIN_PROGRAMS = by_backend(interpreter=1, gpu=2 * 132)  # two per SM of an H100


@triton.jit
def _tile(rows, c0, s0, num_rows, groups, group_channels, spatial, stride_n, stride_c, stride_s,
          BLOCK_CG: tl.constexpr, BLOCK_S: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """(offsets [G, CG, S], mask, channel [G, CG], channel mask) of the tile at group channel c0
    and pixel s0 of ``rows``. Row, channel and pixel indices are int32 (fewer than 2**31 rows,
    channels and pixels: the op checks); the offsets int64 when a tensor spans 2**31 elements."""
    cl = c0 + tl.arange(0, BLOCK_CG)
    s = s0 + tl.arange(0, BLOCK_S)
    channel = (rows % groups)[:, None] * group_channels + cl[None, :]
    channel_ok = (rows < num_rows)[:, None] & (cl < group_channels)[None, :]
    mask = channel_ok[:, :, None] & (s < spatial)[None, None, :]
    offsets = (widen(rows // groups, WIDE_INDEX)[:, None] * stride_n + widen(channel, WIDE_INDEX) * stride_c)[
        :, :, None] + (widen(s, WIDE_INDEX) * stride_s)[None, None, :]
    return offsets, mask, channel, channel_ok


@triton.jit
def _row_stats(stats_ptr, rows, row_ok, num_rows):
    shift = tl.load(stats_ptr + rows, mask=row_ok, other=0.0)
    mean = tl.load(stats_ptr + num_rows + rows, mask=row_ok, other=0.0)
    rstd = tl.load(stats_ptr + 2 * num_rows + rows, mask=row_ok, other=0.0)
    return shift[:, None, None], mean[:, None, None], rstd[:, None, None]


@triton.jit
def _stats_kernel(
        x_ptr, stats_ptr, running_mean_ptr, running_var_ptr, num_rows, groups, group_channels, spatial, eps,
        x_stride_n, x_stride_c, x_stride_s, running_mean_stride, running_var_stride,
        USE_RUNNING: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_CG: tl.constexpr,
        BLOCK_S: tl.constexpr):
    """stats[0:4, r] = (shift K, mean of x - K, rstd, biased variance) of each row."""
    rows = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    row_ok = rows < num_rows
    if USE_RUNNING:  # instance norm in eval: rows are (n, c), the statistics are channel c's
        channel = rows % groups
        shift = tl.load(running_mean_ptr + channel * running_mean_stride, mask=row_ok, other=0.0).to(tl.float32)
        mean = tl.zeros((BLOCK_G,), tl.float32)
        variance = tl.load(running_var_ptr + channel * running_var_stride, mask=row_ok, other=1.0).to(tl.float32)
    else:
        first = (widen(rows // groups, WIDE_INDEX) * x_stride_n
                 + widen((rows % groups) * group_channels, WIDE_INDEX) * x_stride_c)
        shift = tl.load(x_ptr + first, mask=row_ok, other=0.0).to(tl.float32)
        count = tl.zeros((BLOCK_G,), tl.float32)
        mean = tl.zeros((BLOCK_G,), tl.float32)
        m2 = tl.zeros((BLOCK_G,), tl.float32)
        for c0 in range(0, group_channels, BLOCK_CG):
            for s0 in range(0, spatial, BLOCK_S):
                offsets, mask, _, _ = _tile(rows, c0, s0, num_rows, groups, group_channels, spatial, x_stride_n,
                                            x_stride_c, x_stride_s, BLOCK_CG, BLOCK_S, WIDE_INDEX)
                x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
                x = tl.where(mask, x - shift[:, None, None], 0.0)
                tile_count = tl.sum(tl.sum(mask.to(tl.float32), axis=2), axis=1)
                tile_mean = tl.sum(tl.sum(x, axis=2), axis=1) / tl.maximum(tile_count, 1.0)
                deviation = tl.where(mask, x - tile_mean[:, None, None], 0.0)
                tile_m2 = tl.sum(tl.sum(deviation * deviation, axis=2), axis=1)
                count, mean, m2 = chan_merge(count, mean, m2, tile_count, tile_mean, tile_m2)
        variance = m2 / tl.maximum(count, 1.0)
    tl.store(stats_ptr + rows, shift, mask=row_ok)
    tl.store(stats_ptr + num_rows + rows, mean, mask=row_ok)
    tl.store(stats_ptr + 2 * num_rows + rows, 1.0 / tl.sqrt(variance + eps), mask=row_ok)
    tl.store(stats_ptr + 3 * num_rows + rows, variance, mask=row_ok)


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
        x_ptr, y_ptr, stats_ptr, weight_ptr, bias_ptr, channels, groups, group_channels, spatial, parameter,
        x_stride_n, x_stride_c, x_stride_s, y_stride_n, y_stride_c, y_stride_s, weight_stride, bias_stride,
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, WIDE_INDEX: tl.constexpr,
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
    y = activate(((x - shift) - mean) * (rstd * w[:, None]) + b[:, None], KIND, parameter)
    tl.store(y_ptr + out_offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_tile(dy_ptr, x_ptr, offsets, dy_offsets, mask, shift, mean, rstd, w, b, parameter, KIND: tl.constexpr):
    """(gz, x̂) of one tile: dy through the activation's derivative at the recomputed x̂·w + b."""
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_offsets, mask=mask, other=0.0).to(tl.float32)
    x_hat = ((x - shift) - mean) * rstd
    gz = tl.where(mask, activation_grad(x_hat * w + b, dy, KIND, parameter), 0.0)
    return gz, x_hat


@triton.jit
def _backward_sums_kernel(
        dy_ptr, x_ptr, stats_ptr, weight_ptr, bias_ptr, row_sums_ptr, channel_sums_ptr, num_rows, groups,
        group_channels, spatial, parameter, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c, x_stride_s,
        weight_stride, bias_stride,
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, CHANNEL_SUMS: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_CG: tl.constexpr,
        BLOCK_S: tl.constexpr):
    """channel_sums[n, 0:2, c] = (Σ_s gz, Σ_s gz·x̂) (with CHANNEL_SUMS); row_sums[0:2, r] = (A, B)."""
    rows = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    row_ok = rows < num_rows
    shift, mean, rstd = _row_stats(stats_ptr, rows, row_ok, num_rows)
    sum_gh = tl.zeros((BLOCK_G,), tl.float32)
    sum_ghx = tl.zeros((BLOCK_G,), tl.float32)
    for c0 in range(0, group_channels, BLOCK_CG):
        cl = c0 + tl.arange(0, BLOCK_CG)
        channel = (rows % groups)[:, None] * group_channels + cl[None, :]
        channel_ok = row_ok[:, None] & (cl < group_channels)[None, :]
        w, b = affine_parameters(weight_ptr, bias_ptr, channel, channel_ok, weight_stride, bias_stride, HAS_WEIGHT,
                                 HAS_BIAS)
        sum_gz = tl.zeros((BLOCK_G, BLOCK_CG), tl.float32)
        sum_gzx = tl.zeros((BLOCK_G, BLOCK_CG), tl.float32)
        for s0 in range(0, spatial, BLOCK_S):
            offsets, mask, _, _ = _tile(rows, c0, s0, num_rows, groups, group_channels, spatial, x_stride_n,
                                        x_stride_c, x_stride_s, BLOCK_CG, BLOCK_S, WIDE_INDEX)
            dy_offsets, _, _, _ = _tile(rows, c0, s0, num_rows, groups, group_channels, spatial, dy_stride_n,
                                        dy_stride_c, dy_stride_s, BLOCK_CG, BLOCK_S, WIDE_INDEX)
            gz, x_hat = _grad_tile(dy_ptr, x_ptr, offsets, dy_offsets, mask, shift, mean, rstd, w[:, :, None],
                                   b[:, :, None], parameter, KIND)
            sum_gz += tl.sum(gz, axis=2)
            sum_gzx += tl.sum(gz * x_hat, axis=2)
        if CHANNEL_SUMS:
            at = (rows // groups)[:, None] * (2 * groups * group_channels) + channel  # [n, 0, c]
            tl.store(channel_sums_ptr + at, sum_gz, mask=channel_ok)
            tl.store(channel_sums_ptr + at + groups * group_channels, sum_gzx, mask=channel_ok)
        sum_gh += tl.sum(tl.where(channel_ok, w * sum_gz, 0.0), axis=1)
        sum_ghx += tl.sum(tl.where(channel_ok, w * sum_gzx, 0.0), axis=1)
    tl.store(row_sums_ptr + rows, sum_gh, mask=row_ok)
    tl.store(row_sums_ptr + num_rows + rows, sum_ghx, mask=row_ok)


@triton.jit
def _backward_apply_kernel(
        dy_ptr, x_ptr, dx_ptr, stats_ptr, row_sums_ptr, weight_ptr, bias_ptr, channels, groups, group_channels,
        spatial, parameter, dy_stride_n, dy_stride_c, dy_stride_s, x_stride_n, x_stride_c, x_stride_s,
        dx_stride_n, dx_stride_c, dx_stride_s, weight_stride, bias_stride,
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
    gz, x_hat = _grad_tile(dy_ptr, x_ptr, offsets, dy_offsets, mask, shift, mean, rstd, w, b[:, None], parameter,
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


def tiles(num_rows, groups, group_channels, spatial, channel_stride):
    """(BLOCK_G, BLOCK_CG, BLOCK_S): contiguous channels (channels_last) put several channels, and
    rows, side by side; contiguous pixels (NCHW) put long pixel runs in a tile. Rows per program
    shrink until the row reductions have MIN_PROGRAMS programs (or one row each)."""
    def fit(extent, limit):
        return max(1, min(triton.next_power_of_2(max(extent, 1)), limit))

    if channel_stride == 1 and spatial > 1:
        block_cg = fit(group_channels, 64)
        block_g = fit(groups, max(1, 64 // block_cg))
    else:
        block_s = fit(spatial, TILE)
        block_cg = fit(group_channels, max(1, TILE // block_s))
        block_g = fit(groups, max(1, TILE // (block_s * block_cg)))
    while block_g > 1 and triton.cdiv(num_rows, block_g) < MIN_PROGRAMS:
        block_g //= 2
    return block_g, block_cg, fit(spatial, max(1, TILE // (block_g * block_cg)))


def _per_channel(tensors, fallback):
    present = [tensor if tensor is not None else fallback for tensor in tensors]
    return present, [tensor.stride(0) for tensor in present]


def statistics(x, stats, running_mean, running_var, *, groups, eps, use_running):
    """stats, fp32 [4, N·G]: (shift, centred mean, rstd, biased variance) of each row of x
    [N, C, S]; with ``use_running`` (instance norm in eval, groups = C) the running ones. One launch."""
    batch, channels, spatial = x.shape
    num_rows = batch * groups
    block_g, block_cg, block_s = tiles(num_rows, groups, channels // groups, spatial, x.stride(1))
    (running_mean, running_var), strides = _per_channel((running_mean, running_var), stats)
    _stats_kernel[(triton.cdiv(num_rows, block_g),)](
        x, stats, running_mean, running_var, num_rows, groups, channels // groups, spatial, float(eps), *x.stride(),
        *strides, USE_RUNNING=use_running, WIDE_INDEX=needs_wide_index(x), BLOCK_G=block_g, BLOCK_CG=block_cg,
        BLOCK_S=block_s)
    return 1


def _elementwise_grid(x):
    """(grid, BLOCK_C, BLOCK_S) of the elementwise passes: wide channel blocks over contiguous
    channels (channels_last), long pixel runs otherwise; pixel blocks on the grid's first axis,
    the only one not limited to 65535."""
    batch, channels, spatial = x.shape
    block_s, block_c = channel_blocks(x.stride(1), interpreter=(256, 16), channels_last=(32, 64), nchw=(256, 8))
    block_s = max(1, min(block_s, triton.next_power_of_2(spatial)))
    return (triton.cdiv(spatial, block_s), triton.cdiv(channels, block_c), batch), block_c, block_s


def apply(x, y, stats, weight, bias, *, groups, kind, parameter):
    """y = act((x - mean)·rstd·w + b) for x, y [N, C, S] from ``stats``. One launch."""
    batch, channels, spatial = x.shape
    grid, block_c, block_s = _elementwise_grid(x)
    (weight, bias), strides = _per_channel((weight, bias), stats)
    _apply_kernel[grid](
        x, y, stats, weight, bias, channels, groups, channels // groups, spatial, float(parameter), *x.stride(),
        *y.stride(), *strides, HAS_WEIGHT=weight is not stats, HAS_BIAS=bias is not stats, KIND=kind,
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


def backward(dy, x, dx, stats, weight, bias, parameter_grads, *, groups, batch_statistics, kind, parameter):
    """Gradients of act(group_norm(x)) into ``dx`` (may be None) and ``parameter_grads`` (fp32
    [2, C]: grad_bias, grad_weight; may be None). Returns the number of launches."""
    batch, channels, spatial = x.shape
    group_channels = channels // groups
    num_rows = batch * groups
    block_g, block_cg, block_s = tiles(num_rows, groups, group_channels, spatial, x.stride(1))
    (weight, bias), strides = _per_channel((weight, bias), stats)
    flags = dict(HAS_WEIGHT=weight is not stats, HAS_BIAS=bias is not stats, KIND=kind,
                 WIDE_INDEX=needs_wide_index(*(t for t in (dy, x, dx) if t is not None)), BLOCK_G=block_g,
                 BLOCK_CG=block_cg, BLOCK_S=block_s)
    launches = 0
    row_sums = stats
    if batch_statistics and dx is not None or parameter_grads is not None:
        row_sums = stats.new_empty((2, num_rows))
        # Per-sample channel sums, [N, 2, C], summed over the samples in order by sum_partials.
        channel_sums = partials(parameter_grads, batch) if parameter_grads is not None else stats
        _backward_sums_kernel[(triton.cdiv(num_rows, block_g),)](
            dy, x, stats, weight, bias, row_sums, channel_sums, num_rows, groups, group_channels, spatial,
            float(parameter), *dy.stride(), *x.stride(), *strides, CHANNEL_SUMS=parameter_grads is not None, **flags)
        launches += 1
        if parameter_grads is not None:
            launches += sum_partials(channel_sums, parameter_grads, batch)
    if dx is not None:
        grid, block_c, block_s = _elementwise_grid(x)
        _backward_apply_kernel[grid](
            dy, x, dx, stats, row_sums, weight, bias, channels, groups, group_channels, spatial, float(parameter),
            *dy.stride(), *x.stride(), *dx.stride(), *strides, HAS_WEIGHT=flags["HAS_WEIGHT"],
            HAS_BIAS=flags["HAS_BIAS"], KIND=kind, BATCH_STATISTICS=batch_statistics, WIDE_INDEX=flags["WIDE_INDEX"],
            BLOCK_C=block_c, BLOCK_S=block_s)
        launches += 1
    return launches
