"""softmax and log_softmax over one dim, and their backward.

The input is viewed as x [N, C, S]: C the softmax dim, N the dims before it flattened, S those
after it (1 when it is the last dim); a row is one (n, s) pair, read through its strides. With
lse = log Σ_c exp(x_c), computed online in fp32 (a running max m and a running sum of
exp(x - m), rescaled as m grows, so one read suffices):

    softmax      y_c = exp(x_c - lse)     dx_c = y_c (dy_c - Σ_k dy_k y_k)
    log_softmax  y_c = x_c - lse          dx_c = dy_c - exp(y_c) Σ_k dy_k

Rows of up to BLOCK_C classes are one tile: read once, written once (ONE_BLOCK). Longer rows are
walked twice, the second read mostly from L2. The output is written in its own dtype (F.softmax's
``dtype``), the gradient in the input's.

Bytes: forward reads x and writes y; backward reads y and dy and writes dx (2 and 3 x N·C·S x
element size). Launch grid: (cdiv(N·S, ROWS),), the tiles of ``cross_entropy.row_tile``.
"""
import triton
import triton.language as tl

from .cross_entropy import row_tile, row_vector, strides_ncs, tile_warps
from .indexing import needs_wide_index


@triton.jit
def _row_offsets(n, s, columns, stride_n, stride_c, stride_s, VECTOR: tl.constexpr):
    return tl.multiple_of((n * stride_n + s * stride_s)[:, None] + columns[None, :] * stride_c, [1, VECTOR])


@triton.jit
def _softmax_forward_kernel(
        x_ptr, y_ptr, num_rows, classes, spatial, x_stride_n, x_stride_c, x_stride_s, y_stride_n, y_stride_c,
        y_stride_s, LOG: tl.constexpr, ONE_BLOCK: tl.constexpr, WIDE_INDEX: tl.constexpr, VECTOR: tl.constexpr,
        ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offsets = tl.arange(0, BLOCK_C)
    if WIDE_INDEX:
        rows = rows.to(tl.int64)
        offsets = offsets.to(tl.int64)
    row_ok = rows < num_rows
    n = rows // spatial
    s = rows % spatial
    if ONE_BLOCK:
        mask = row_ok[:, None] & tl.max_constancy(offsets < classes, VECTOR)[None, :]
        x = tl.load(x_ptr + _row_offsets(n, s, offsets, x_stride_n, x_stride_c, x_stride_s, VECTOR), mask=mask,
                    other=float("-inf")).to(tl.float32)
        row_max = tl.max(x, axis=1)
        shift = tl.where(row_max == float("-inf"), 0.0, row_max)  # a row of -inf: NaN below, as torch
        lse = shift + tl.log(tl.sum(tl.exp(x - shift[:, None]), axis=1))
        y = x - lse[:, None] if LOG else tl.exp(x - lse[:, None])
        tl.store(y_ptr + _row_offsets(n, s, offsets, y_stride_n, y_stride_c, y_stride_s, VECTOR),
                 y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        running_max = tl.full((ROWS,), float("-inf"), tl.float32)
        running_sum = tl.zeros((ROWS,), tl.float32)
        for first in range(0, classes, BLOCK_C):
            columns = first + offsets
            mask = row_ok[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
            x = tl.load(x_ptr + _row_offsets(n, s, columns, x_stride_n, x_stride_c, x_stride_s, VECTOR), mask=mask,
                        other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(running_max, tl.max(x, axis=1))
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
            running_max = new_max
        lse = tl.where(running_max == float("-inf"), 0.0, running_max) + tl.log(running_sum)
        for first in range(0, classes, BLOCK_C):
            columns = first + offsets
            mask = row_ok[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
            x = tl.load(x_ptr + _row_offsets(n, s, columns, x_stride_n, x_stride_c, x_stride_s, VECTOR), mask=mask,
                        other=0.0).to(tl.float32)
            y = x - lse[:, None] if LOG else tl.exp(x - lse[:, None])
            tl.store(y_ptr + _row_offsets(n, s, columns, y_stride_n, y_stride_c, y_stride_s, VECTOR),
                     y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_terms(y, dy, LOG: tl.constexpr):
    """The row sum's terms: dy·y (softmax) or dy (log_softmax)."""
    return dy if LOG else dy * y


@triton.jit
def _input_grad(y, dy, total, LOG: tl.constexpr):
    return dy - tl.exp(y) * total[:, None] if LOG else y * (dy - total[:, None])


@triton.jit
def _softmax_backward_kernel(
        y_ptr, dy_ptr, dx_ptr, num_rows, classes, spatial, y_stride_n, y_stride_c, y_stride_s, dy_stride_n,
        dy_stride_c, dy_stride_s, dx_stride_n, dx_stride_c, dx_stride_s, LOG: tl.constexpr, ONE_BLOCK: tl.constexpr,
        WIDE_INDEX: tl.constexpr, VECTOR: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offsets = tl.arange(0, BLOCK_C)
    if WIDE_INDEX:
        rows = rows.to(tl.int64)
        offsets = offsets.to(tl.int64)
    row_ok = rows < num_rows
    n = rows // spatial
    s = rows % spatial
    if ONE_BLOCK:
        mask = row_ok[:, None] & tl.max_constancy(offsets < classes, VECTOR)[None, :]
        y = tl.load(y_ptr + _row_offsets(n, s, offsets, y_stride_n, y_stride_c, y_stride_s, VECTOR), mask=mask,
                    other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + _row_offsets(n, s, offsets, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR), mask=mask,
                     other=0.0).to(tl.float32)
        total = tl.sum(tl.where(mask, _backward_terms(y, dy, LOG), 0.0), axis=1)
        tl.store(dx_ptr + _row_offsets(n, s, offsets, dx_stride_n, dx_stride_c, dx_stride_s, VECTOR),
                 _input_grad(y, dy, total, LOG).to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        total = tl.zeros((ROWS,), tl.float32)
        for first in range(0, classes, BLOCK_C):
            columns = first + offsets
            mask = row_ok[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
            y = tl.load(y_ptr + _row_offsets(n, s, columns, y_stride_n, y_stride_c, y_stride_s, VECTOR), mask=mask,
                        other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + _row_offsets(n, s, columns, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR),
                         mask=mask, other=0.0).to(tl.float32)
            total += tl.sum(tl.where(mask, _backward_terms(y, dy, LOG), 0.0), axis=1)
        for first in range(0, classes, BLOCK_C):
            columns = first + offsets
            mask = row_ok[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
            y = tl.load(y_ptr + _row_offsets(n, s, columns, y_stride_n, y_stride_c, y_stride_s, VECTOR), mask=mask,
                        other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + _row_offsets(n, s, columns, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR),
                         mask=mask, other=0.0).to(tl.float32)
            tl.store(dx_ptr + _row_offsets(n, s, columns, dx_stride_n, dx_stride_c, dx_stride_s, VECTOR),
                     _input_grad(y, dy, total, LOG).to(dx_ptr.dtype.element_ty), mask=mask)


def _launch(kernel, tensors, log):
    """One launch over [N, C, S] ``tensors`` (the first one read, the last one written)."""
    first = tensors[0]
    num_rows, classes = first.shape[0] * first.shape[2], first.shape[1]
    rows, block_c = row_tile(classes, num_rows, first.device)
    vector = min(row_vector(t) for t in tensors)
    kernel[(triton.cdiv(num_rows, rows),)](
        *tensors, num_rows, classes, first.shape[2], *(stride for t in tensors for stride in strides_ncs(t)),
        LOG=log, ONE_BLOCK=classes <= block_c, WIDE_INDEX=needs_wide_index(*tensors), VECTOR=vector, ROWS=rows,
        BLOCK_C=block_c, num_warps=tile_warps(rows, block_c))
    return 1


def forward(x, y, *, log):
    """``y`` [N, C, S] = softmax (``log``: log_softmax) of ``x`` [N, C, S] over C. One launch."""
    return _launch(_softmax_forward_kernel, (x, y), log)


def backward(y, dy, dx, *, log):
    """``dx`` [N, C, S] from the output ``y`` and its gradient ``dy``. One launch."""
    return _launch(_softmax_backward_kernel, (y, dy, dx), log)
