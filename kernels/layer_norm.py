"""Layer norm with an optional fused activation, forward and backward, over x viewed as
[A, B, L] through its strides: each of the A·B rows (r = a·B + b) is normalised over its L
values, with an elementwise affine w[l], b[l]. ``F.layer_norm`` over the trailing dims is
L = their product (A·B the leading ones, split in two where their strides do not merge: a
permuted NHWC view of an NCHW tensor is [N, H·W, C]); ConvNeXt's LayerNorm2d (over the channels of
an NCHW tensor) is [N, H·W, C] of the same tensor, so no permute is ever copied.

Forward: per row, the mean and biased variance of x - K (K the row's first value, kept for
inputs of large mean), two-pass in registers when the row fits one tile (L ≤ BLOCK_L: one read
of x) and tiles merged with Chan's formula otherwise (two reads); y = act(x̂·w + b) with
x̂ = ((x - K) - mean)·rstd.

Backward, with gz = act'(x̂·w + b)·dy (recomputed from x) and gh = gz·w:
    dx = rstd·(gh - mean_l(gh) - x̂·mean_l(gh·x̂))      per row
    dw[l] = Σ_rows gz·x̂,  db[l] = Σ_rows gz          per program into partial[p, 0:2, l],
                                                       then summed over p in order (slicing's)
A fused PReLU reads one slope per column l (a stride-0 vector for one slope) and its gradient is
a third row of the partials, Σ_rows dy·z where z <= 0.
The backward grid is persistent (P programs walk the row blocks p, p + P, ...), so the partials
are P·L floats, not one row of them per row block.

Bytes: forward reads x once (twice when L > BLOCK_L) and writes y; backward reads x and dy once
(twice) and writes dx. Saved: x and two floats per row (the mean and rstd, as torch saves; the
shift K is read again from x). Launch grids: forward
(cdiv(A·B, BLOCK_R),); backward (P,) and the parameter sums (slicing.sum_partials).
"""
import triton
import triton.language as tl

from .activation import activate, activation_grad, channel_slopes, prelu_slope_grad
from .indexing import needs_wide_index, widen
from .moments import affine_parameters, chan_merge
from .slicing import partials, sm_count, sum_partials
from .tiles import by_backend

TILE = by_backend(interpreter=4096, gpu=4096)
NUM_WARPS = 8
MAX_PARTIAL = 2**22  # fp32 values per (dw, db) partial buffer


@triton.jit
def _row_offsets(rows, inner_rows, stride_a, stride_b, WIDE_INDEX: tl.constexpr):
    """Offsets of rows a·B + b (``rows`` int32: fewer than 2**31 rows, the op checks), int64 when a
    tensor spans 2**31 elements."""
    return widen(rows // inner_rows, WIDE_INDEX) * stride_a + widen(rows % inner_rows, WIDE_INDEX) * stride_b


@triton.jit
def _row_parameters(weight_ptr, bias_ptr, columns, column_ok, weight_stride, bias_stride,
                    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(w, b) of ``columns``, shaped [1, columns] to broadcast over a tile's rows."""
    w, b = affine_parameters(weight_ptr, bias_ptr, columns, column_ok, weight_stride, bias_stride, HAS_WEIGHT,
                             HAS_BIAS)
    return w[None, :], b[None, :]


@triton.jit
def _forward_kernel(
        x_ptr, y_ptr, stats_ptr, weight_ptr, bias_ptr, slope_ptr, num_rows, inner_rows, length, eps, parameter,
        x_stride_a, x_stride_b, x_stride_l, y_stride_a, y_stride_b, y_stride_l, weight_stride, bias_stride,
        slope_stride, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, SINGLE: tl.constexpr,
        WIDE_INDEX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    """y = act(layer_norm(x)) and stats[0:2, r] = (mean of x - K, rstd), K = x[r, 0]."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < num_rows
    x_rows = _row_offsets(rows, inner_rows, x_stride_a, x_stride_b, WIDE_INDEX)[:, None]
    y_rows = _row_offsets(rows, inner_rows, y_stride_a, y_stride_b, WIDE_INDEX)[:, None]
    shift = tl.load(x_ptr + x_rows, mask=row_ok[:, None], other=0.0).to(tl.float32)
    if SINGLE:  # the whole row in registers: one read
        columns = tl.arange(0, BLOCK_L)
        column_ok = columns < length
        mask = row_ok[:, None] & column_ok[None, :]
        x = tl.load(x_ptr + x_rows + (widen(columns, WIDE_INDEX) * x_stride_l)[None, :], mask=mask, other=0.0)
        x = tl.where(mask, x.to(tl.float32) - shift, 0.0)
        mean = tl.sum(x, axis=1) / length
        deviation = tl.where(mask, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(deviation * deviation, axis=1) / length + eps)
        w, b = _row_parameters(weight_ptr, bias_ptr, columns, column_ok, weight_stride, bias_stride, HAS_WEIGHT,
                               HAS_BIAS)
        if KIND == "prelu":  # PReLU's slopes, one per column (stride 0: one for all)
            parameter = channel_slopes(slope_ptr, columns, column_ok, slope_stride)[None, :]
        y = activate(deviation * rstd[:, None] * w + b, KIND, parameter)
        tl.store(y_ptr + y_rows + (widen(columns, WIDE_INDEX) * y_stride_l)[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=mask)
    else:
        count = tl.zeros((BLOCK_R,), tl.float32)
        mean = tl.zeros((BLOCK_R,), tl.float32)
        m2 = tl.zeros((BLOCK_R,), tl.float32)
        for first in range(0, length, BLOCK_L):
            columns = first + tl.arange(0, BLOCK_L)
            mask = row_ok[:, None] & (columns < length)[None, :]
            x = tl.load(x_ptr + x_rows + (widen(columns, WIDE_INDEX) * x_stride_l)[None, :], mask=mask, other=0.0)
            x = tl.where(mask, x.to(tl.float32) - shift, 0.0)
            tile_count = tl.sum(mask.to(tl.float32), axis=1)
            tile_mean = tl.sum(x, axis=1) / tl.maximum(tile_count, 1.0)
            deviation = tl.where(mask, x - tile_mean[:, None], 0.0)
            count, mean, m2 = chan_merge(count, mean, m2, tile_count, tile_mean,
                                         tl.sum(deviation * deviation, axis=1))
        rstd = 1.0 / tl.sqrt(m2 / length + eps)
        for first in range(0, length, BLOCK_L):
            columns = first + tl.arange(0, BLOCK_L)
            column_ok = columns < length
            mask = row_ok[:, None] & column_ok[None, :]
            x = tl.load(x_ptr + x_rows + (widen(columns, WIDE_INDEX) * x_stride_l)[None, :], mask=mask, other=0.0)
            w, b = _row_parameters(weight_ptr, bias_ptr, columns, column_ok, weight_stride, bias_stride, HAS_WEIGHT,
                                   HAS_BIAS)
            if KIND == "prelu":
                parameter = channel_slopes(slope_ptr, columns, column_ok, slope_stride)[None, :]
            y = activate(((x.to(tl.float32) - shift) - mean[:, None]) * rstd[:, None] * w + b, KIND, parameter)
            tl.store(y_ptr + y_rows + (widen(columns, WIDE_INDEX) * y_stride_l)[None, :], y.to(y_ptr.dtype.element_ty),
                     mask=mask)
    tl.store(stats_ptr + rows, mean, mask=row_ok)
    tl.store(stats_ptr + num_rows + rows, rstd, mask=row_ok)


@triton.jit
def _grad_chunk(dy_ptr, x_ptr, dy_rows, x_rows, columns, column_ok, mask, shift, mean, rstd, weight_ptr, bias_ptr,
                slope_ptr, parameter, dy_stride_l, x_stride_l, weight_stride, bias_stride, slope_stride,
                HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """(gz, gh = gz·w, x̂, PReLU's slope term: dy·z where z <= 0, else gz again) of one
    [rows x columns] chunk, zero outside ``mask``."""
    x = tl.load(x_ptr + x_rows + (widen(columns, WIDE_INDEX) * x_stride_l)[None, :], mask=mask, other=0.0)
    dy = tl.load(dy_ptr + dy_rows + (widen(columns, WIDE_INDEX) * dy_stride_l)[None, :], mask=mask,
                 other=0.0).to(tl.float32)
    x_hat = tl.where(mask, ((x.to(tl.float32) - shift) - mean) * rstd, 0.0)
    w, b = _row_parameters(weight_ptr, bias_ptr, columns, column_ok, weight_stride, bias_stride, HAS_WEIGHT,
                           HAS_BIAS)
    z = x_hat * w + b
    if KIND == "prelu":
        parameter = channel_slopes(slope_ptr, columns, column_ok, slope_stride)[None, :]
    gz = tl.where(mask, activation_grad(z, dy, KIND, parameter), 0.0)
    if KIND == "prelu":
        return gz, gz * w, x_hat, prelu_slope_grad(z, dy)  # dy is 0 outside the mask
    return gz, gz * w, x_hat, gz


@triton.jit
def _backward_kernel(
        dy_ptr, x_ptr, dx_ptr, stats_ptr, weight_ptr, bias_ptr, slope_ptr, partial_ptr, num_rows, inner_rows, length,
        parameter, dy_stride_a, dy_stride_b, dy_stride_l, x_stride_a, x_stride_b, x_stride_l, dx_stride_a,
        dx_stride_b, dx_stride_l, weight_stride, bias_stride, slope_stride,
        HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, KIND: tl.constexpr, HAS_DX: tl.constexpr,
        PARAMETER_GRADS: tl.constexpr, SINGLE: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr):
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    sums_per_column = 2
    if KIND == "prelu":  # the third row of each partial: PReLU's slope terms
        sums_per_column = 3
    partial = partial_ptr + program * sums_per_column * length  # < 3 * MAX_PARTIAL
    sum_gz = tl.zeros((BLOCK_L,), tl.float32)
    sum_gzx = tl.zeros((BLOCK_L,), tl.float32)
    sum_slope = tl.zeros((BLOCK_L,), tl.float32)
    for block in range(program, tl.cdiv(num_rows, BLOCK_R), programs):
        rows = block * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < num_rows
        x_rows = _row_offsets(rows, inner_rows, x_stride_a, x_stride_b, WIDE_INDEX)[:, None]
        dy_rows = _row_offsets(rows, inner_rows, dy_stride_a, dy_stride_b, WIDE_INDEX)[:, None]
        dx_rows = _row_offsets(rows, inner_rows, dx_stride_a, dx_stride_b, WIDE_INDEX)[:, None]
        # K, the row's first value, read again from the saved input: the same float the forward used.
        shift = tl.load(x_ptr + x_rows, mask=row_ok[:, None], other=0.0).to(tl.float32)
        mean = tl.load(stats_ptr + rows, mask=row_ok, other=0.0)[:, None]
        rstd = tl.load(stats_ptr + num_rows + rows, mask=row_ok, other=0.0)[:, None]
        if SINGLE:
            columns = tl.arange(0, BLOCK_L)
            column_ok = columns < length
            mask = row_ok[:, None] & column_ok[None, :]
            gz, gh, x_hat, slope_term = _grad_chunk(
                dy_ptr, x_ptr, dy_rows, x_rows, columns, column_ok, mask, shift, mean, rstd, weight_ptr, bias_ptr,
                slope_ptr, parameter, dy_stride_l, x_stride_l, weight_stride, bias_stride, slope_stride, HAS_WEIGHT,
                HAS_BIAS, KIND, WIDE_INDEX)
            if HAS_DX:
                mean_gh = tl.sum(gh, axis=1)[:, None] / length
                mean_ghx = tl.sum(gh * x_hat, axis=1)[:, None] / length
                dx = rstd * (gh - mean_gh - x_hat * mean_ghx)
                tl.store(dx_ptr + dx_rows + (widen(columns, WIDE_INDEX) * dx_stride_l)[None, :],
                         dx.to(dx_ptr.dtype.element_ty), mask=mask)
            sum_gz += tl.sum(gz, axis=0)
            sum_gzx += tl.sum(gz * x_hat, axis=0)
            if KIND == "prelu":
                sum_slope += tl.sum(slope_term, axis=0)
        else:
            mean_gh = tl.zeros((BLOCK_R, 1), tl.float32)
            mean_ghx = tl.zeros((BLOCK_R, 1), tl.float32)
            if HAS_DX:
                for first in range(0, length, BLOCK_L):
                    columns = first + tl.arange(0, BLOCK_L)
                    column_ok = columns < length
                    mask = row_ok[:, None] & column_ok[None, :]
                    gz, gh, x_hat, _ = _grad_chunk(
                        dy_ptr, x_ptr, dy_rows, x_rows, columns, column_ok, mask, shift, mean, rstd, weight_ptr,
                        bias_ptr, slope_ptr, parameter, dy_stride_l, x_stride_l, weight_stride, bias_stride,
                        slope_stride, HAS_WEIGHT, HAS_BIAS, KIND, WIDE_INDEX)
                    mean_gh += tl.sum(gh, axis=1)[:, None] / length
                    mean_ghx += tl.sum(gh * x_hat, axis=1)[:, None] / length
            for first in range(0, length, BLOCK_L):
                columns = first + tl.arange(0, BLOCK_L)
                column_ok = columns < length
                mask = row_ok[:, None] & column_ok[None, :]
                gz, gh, x_hat, slope_term = _grad_chunk(
                    dy_ptr, x_ptr, dy_rows, x_rows, columns, column_ok, mask, shift, mean, rstd, weight_ptr, bias_ptr,
                    slope_ptr, parameter, dy_stride_l, x_stride_l, weight_stride, bias_stride, slope_stride,
                    HAS_WEIGHT, HAS_BIAS, KIND, WIDE_INDEX)
                if HAS_DX:
                    dx = rstd * (gh - mean_gh - x_hat * mean_ghx)
                    tl.store(dx_ptr + dx_rows + (widen(columns, WIDE_INDEX) * dx_stride_l)[None, :],
                             dx.to(dx_ptr.dtype.element_ty), mask=mask)
                if PARAMETER_GRADS:
                    # This program's partial row: written on its first row block, added to after
                    # (``where``, not a product: the buffer starts uninitialised).
                    later = block > program
                    carried_gz = tl.load(partial + columns, mask=column_ok, other=0.0)
                    carried_gzx = tl.load(partial + length + columns, mask=column_ok, other=0.0)
                    tl.store(partial + columns, tl.where(later, carried_gz, 0.0) + tl.sum(gz, axis=0), mask=column_ok)
                    tl.store(partial + length + columns, tl.where(later, carried_gzx, 0.0) + tl.sum(gz * x_hat, axis=0),
                             mask=column_ok)
                    if KIND == "prelu":
                        carried_slope = tl.load(partial + 2 * length + columns, mask=column_ok, other=0.0)
                        tl.store(partial + 2 * length + columns,
                                 tl.where(later, carried_slope, 0.0) + tl.sum(slope_term, axis=0), mask=column_ok)
    if SINGLE and PARAMETER_GRADS:
        columns = tl.arange(0, BLOCK_L)
        tl.store(partial + columns, sum_gz, mask=columns < length)
        tl.store(partial + length + columns, sum_gzx, mask=columns < length)
        if KIND == "prelu":
            tl.store(partial + 2 * length + columns, sum_slope, mask=columns < length)


def tiles(length, length_stride):
    """(BLOCK_R, BLOCK_L, single): a row in one tile when it fits. When the normalised values are
    strided and the rows contiguous (LayerNorm2d on NCHW), at least 32 rows side by side."""
    block_l = min(triton.next_power_of_2(max(length, 1)), TILE if length_stride == 1 else TILE // 32)
    return max(1, TILE // block_l), block_l, length <= block_l


def _parameters_or(fallback, *parameters):
    present = [tensor if tensor is not None else fallback for tensor in parameters]
    return present, [tensor.stride(0) for tensor in present]


def forward(x, y, stats, weight, bias, *, eps, kind, parameter, slope=None):
    """y = act(layer_norm(x)) over x, y [A, B, L] and stats fp32 [2, A·B]; ``slope``: PReLU's L
    slopes, one per column (kind "prelu"; stride 0 for one). One launch."""
    inner_rows, length = x.shape[1], x.shape[2]
    num_rows = x.shape[0] * inner_rows
    block_r, block_l, single = tiles(length, x.stride(2))
    (weight, bias, slope), strides = _parameters_or(stats, weight, bias, slope)
    _forward_kernel[(triton.cdiv(num_rows, block_r),)](
        x, y, stats, weight, bias, slope, num_rows, inner_rows, length, float(eps), float(parameter), *x.stride(),
        *y.stride(), *strides, HAS_WEIGHT=weight is not stats, HAS_BIAS=bias is not stats, KIND=kind, SINGLE=single,
        WIDE_INDEX=needs_wide_index(x, y), BLOCK_R=block_r, BLOCK_L=block_l, num_warps=NUM_WARPS)
    return 1


def backward_programs(num_rows, length, length_stride, device, sms=None):
    """Programs of the backward kernel: each walks rows and keeps its (dw, db) partial, so no more
    than fill the GPU four times over or fit MAX_PARTIAL partial elements."""
    block_r, _, _ = tiles(length, length_stride)
    sms = sm_count(device) if sms is None else sms
    return max(1, min(triton.cdiv(num_rows, block_r), 4 * sms, MAX_PARTIAL // (2 * length)))


def backward(dy, x, dx, stats, weight, bias, parameter_grads, *, kind, parameter, slope=None):
    """Gradients of act(layer_norm(x)) into ``dx`` (may be None) and ``parameter_grads`` (fp32
    [2, L]: grad_bias, grad_weight; [3, L] for a PReLU, kind "prelu" with L slopes ``slope``, the
    third row its slopes' per column; may be None). Returns the number of launches."""
    inner_rows, length = x.shape[1], x.shape[2]
    num_rows = x.shape[0] * inner_rows
    block_r, block_l, single = tiles(length, x.stride(2))
    assert parameter_grads is None or parameter_grads.shape == (3 if kind == "prelu" else 2, length)
    (weight, bias, slope), strides = _parameters_or(stats, weight, bias, slope)
    programs = backward_programs(num_rows, length, x.stride(2), x.device)
    # Each program's (dw, db[, dslope]) partial, [P, 2 or 3, L], summed over the programs in order by sum_partials.
    partial = partials(parameter_grads, programs) if parameter_grads is not None else stats
    _backward_kernel[(programs,)](
        dy, x, dx if dx is not None else x, stats, weight, bias, slope, partial, num_rows, inner_rows, length,
        float(parameter), *dy.stride(), *x.stride(), *(dx if dx is not None else x).stride(), *strides,
        HAS_WEIGHT=weight is not stats, HAS_BIAS=bias is not stats, KIND=kind, HAS_DX=dx is not None,
        PARAMETER_GRADS=parameter_grads is not None, SINGLE=single,
        WIDE_INDEX=needs_wide_index(*(t for t in (dy, x, dx) if t is not None)), BLOCK_R=block_r, BLOCK_L=block_l,
        num_warps=NUM_WARPS)
    return 1 + (sum_partials(partial, parameter_grads, programs) if parameter_grads is not None else 0)
