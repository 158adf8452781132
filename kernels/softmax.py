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
element size). Launch grid: (cdiv(N·S, ROWS),), the tiles of ``cross_entropy.row_tile``; where the classes are
strided (dim 1 of NCHW) and planes hold at least a tile's rows, (N · cdiv(S, ROWS),): each tile
one image's consecutive positions, so that its loads along the rows coalesce.
"""
import triton
import triton.language as tl

from .cross_entropy import program_rows, row_tile, row_vector, strides_ncs, tile_warps
from . import slicing
from .indexing import needs_wide_index
from .tiles import by_backend

# PER_IMAGE tiles: up to 4 warps of 32 threads, 8 positions each; the classes walked 8 at a time.
PER_IMAGE_ROWS = by_backend(interpreter=32, gpu=1024)
PER_IMAGE_CLASSES = by_backend(interpreter=4, gpu=8)


@triton.jit
def _row_offsets(n, s, columns, stride_n, stride_c, stride_s, VECTOR: tl.constexpr):
    """[rows x columns] offsets; contiguous classes promise VECTOR-aligned runs along the columns
    (no promise otherwise: one along the rows would hide their own contiguity, PER_IMAGE's)."""
    offsets = (n * stride_n + s * stride_s)[:, None] + columns[None, :] * stride_c
    if VECTOR > 1:
        offsets = tl.multiple_of(offsets, [1, VECTOR])
    return offsets


@triton.jit
def _program_tile(num_rows, spatial, row_blocks, ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
                  PER_IMAGE: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """(which rows exist, n, s, the first BLOCK_C class offsets) of this program. PER_IMAGE (the
    classes strided, a softmax over dim 1 of NCHW): the program's ROWS rows are consecutive
    positions s of one image n, ``row_blocks`` programs per image, so that the tile's rows are
    consecutive addresses; else ROWS consecutive (n, s) rows (``cross_entropy.program_rows``)."""
    if PER_IMAGE:
        n = tl.program_id(0) // row_blocks
        s = (tl.program_id(0) % row_blocks) * ROWS + tl.arange(0, ROWS)
        if WIDE_INDEX:
            n = n.to(tl.int64)
            s = s.to(tl.int64)
        row_ok = s < spatial
    else:
        _, row_ok, n, s = program_rows(num_rows, spatial, ROWS, WIDE_INDEX)
    offsets = tl.arange(0, BLOCK_C)
    if WIDE_INDEX:
        offsets = offsets.to(tl.int64)
    return row_ok, n, s, offsets


@triton.jit
def _softmax_forward_kernel(
        x_ptr, y_ptr, num_rows, classes, spatial, row_blocks, x_stride_n, x_stride_c, x_stride_s, y_stride_n,
        y_stride_c, y_stride_s, LOG: tl.constexpr, ONE_BLOCK: tl.constexpr, PER_IMAGE: tl.constexpr,
        WIDE_INDEX: tl.constexpr, VECTOR: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    row_ok, n, s, offsets = _program_tile(num_rows, spatial, row_blocks, ROWS, BLOCK_C, PER_IMAGE, WIDE_INDEX)
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
def _load_output_and_grad(y_ptr, dy_ptr, n, s, columns, row_ok, classes, y_stride_n, y_stride_c, y_stride_s,
                          dy_stride_n, dy_stride_c, dy_stride_s, VECTOR: tl.constexpr):
    """(y, dy, mask) of the rows' ``columns`` in fp32, 0 outside the mask."""
    mask = row_ok[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
    y = tl.load(y_ptr + _row_offsets(n, s, columns, y_stride_n, y_stride_c, y_stride_s, VECTOR), mask=mask,
                other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + _row_offsets(n, s, columns, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR), mask=mask,
                 other=0.0).to(tl.float32)
    return y, dy, mask


@triton.jit
def _softmax_backward_kernel(
        y_ptr, dy_ptr, dx_ptr, num_rows, classes, spatial, row_blocks, y_stride_n, y_stride_c, y_stride_s,
        dy_stride_n, dy_stride_c, dy_stride_s, dx_stride_n, dx_stride_c, dx_stride_s, LOG: tl.constexpr,
        ONE_BLOCK: tl.constexpr, PER_IMAGE: tl.constexpr, WIDE_INDEX: tl.constexpr, VECTOR: tl.constexpr,
        ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    row_ok, n, s, offsets = _program_tile(num_rows, spatial, row_blocks, ROWS, BLOCK_C, PER_IMAGE, WIDE_INDEX)
    if ONE_BLOCK:
        y, dy, mask = _load_output_and_grad(y_ptr, dy_ptr, n, s, offsets, row_ok, classes, y_stride_n, y_stride_c,
                                            y_stride_s, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR)
        total = tl.sum(tl.where(mask, _backward_terms(y, dy, LOG), 0.0), axis=1)
        tl.store(dx_ptr + _row_offsets(n, s, offsets, dx_stride_n, dx_stride_c, dx_stride_s, VECTOR),
                 _input_grad(y, dy, total, LOG).to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        total = tl.zeros((ROWS,), tl.float32)
        for first in range(0, classes, BLOCK_C):
            y, dy, mask = _load_output_and_grad(y_ptr, dy_ptr, n, s, first + offsets, row_ok, classes, y_stride_n,
                                                y_stride_c, y_stride_s, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR)
            total += tl.sum(tl.where(mask, _backward_terms(y, dy, LOG), 0.0), axis=1)
        for first in range(0, classes, BLOCK_C):
            columns = first + offsets
            y, dy, mask = _load_output_and_grad(y_ptr, dy_ptr, n, s, columns, row_ok, classes, y_stride_n,
                                                y_stride_c, y_stride_s, dy_stride_n, dy_stride_c, dy_stride_s, VECTOR)
            tl.store(dx_ptr + _row_offsets(n, s, columns, dx_stride_n, dx_stride_c, dx_stride_s, VECTOR),
                     _input_grad(y, dy, total, LOG).to(dx_ptr.dtype.element_ty), mask=mask)


def _launch(kernel, tensors, log):
    """One launch over [N, C, S] ``tensors`` (the first one read, the last one written)."""
    first = tensors[0]
    images, classes, spatial = first.shape
    num_rows = images * spatial
    rows, block_c = row_tile(classes, num_rows, first.device)
    warps = tile_warps(rows, block_c)
    vector = min(row_vector(t) for t in tensors)
    # Strided classes over planes of at least a tile's rows: tiles of one image's consecutive
    # positions, PER_IMAGE_ROWS of them in vectors of 8 per thread, a few classes at a time, so
    # that a row's classes stay in its thread (its max and sum need no exchange between threads).
    per_image = first.stride(1) != 1 and spatial >= PER_IMAGE_ROWS
    if per_image:
        rows, block_c = PER_IMAGE_ROWS, min(triton.next_power_of_2(classes), PER_IMAGE_CLASSES)
        while rows > 256 and images * triton.cdiv(spatial, rows) < 2 * slicing.sm_count(first.device):
            rows //= 2  # fewer positions per program where the grid would not fill the GPU
        warps = max(1, rows // 256)
    row_blocks = triton.cdiv(spatial, rows)
    kernel[(images * row_blocks if per_image else triton.cdiv(num_rows, rows),)](
        *tensors, num_rows, classes, spatial, row_blocks, *(stride for t in tensors for stride in strides_ncs(t)),
        LOG=log, ONE_BLOCK=classes <= block_c, PER_IMAGE=per_image, WIDE_INDEX=needs_wide_index(*tensors),
        VECTOR=vector, ROWS=rows, BLOCK_C=block_c, num_warps=warps)
    return 1


def forward(x, y, *, log):
    """``y`` [N, C, S] = softmax (``log``: log_softmax) of ``x`` [N, C, S] over C. One launch."""
    return _launch(_softmax_forward_kernel, (x, y), log)


def backward(y, dy, dx, *, log):
    """``dx`` [N, C, S] from the output ``y`` and its gradient ``dy``. One launch."""
    return _launch(_softmax_backward_kernel, (y, dy, dx), log)
