"""Softmax cross-entropy: loss and gradient w.r.t. the logits, one fused kernel.

Rows are the (sample, spatial position) pairs of logits x [N, C, S] (S = d1·d2·…, 1 for 2-d
input), read through their strides, C classes each. With lse = log sum_c exp(x_c) (computed
online: running max m and running sum l of exp(x - m), in fp32), log p_c = x_c - lse, per-class
weights w (1 when none) and label smoothing e:

    class index y:  loss = (1-e) w_y (lse - x_y) + (e/C) sum_c w_c (lse - x_c)     (0 when y is ignored)
                    dloss/dx_c = (1-e) w_y (p_c - [c = y]) + (e/C) (W p_c - w_c),  W = sum_c w_c
    probabilities t: t'_c = (1-e) t_c + e/C,   loss = sum_c w_c t'_c (lse - x_c)
                    dloss/dx_c = T p_c - w_c t'_c,                                   T = sum_c w_c t'_c

The kernel writes each row's loss, its share of the 'mean' denominator (w_y, 0 when ignored; 1
for probabilities), and, when a gradient is needed, dloss/dx unscaled into a logits-sized
buffer; backward only multiplies that buffer by grad_output (and 1/denominator for 'mean') in
place. No softmax or log-softmax tensor is ever materialised.

Bytes: class targets read the logits (twice when a row spans several blocks; the second read
mostly hits L2) and write the gradient: about 2-3 x N·S·C x element size; FLOPs are negligible.
Launch grid: (cdiv(N·S, ROWS),) with ROWS rows of BLOCK_C classes per program (many short rows
per program for small C, one row in blocks of up to MAX_BLOCK_C classes for large C, and never so
many rows that fewer than two programs per SM remain); then one program sums the rows' losses
for 'sum'/'mean' in a fixed order (deterministic). Rows whose length and strides are multiples
of 16 bytes (C = 1000 in bf16, say) are promised so (``VECTOR``) and move 128 bits per access.
"""
import torch
import triton
import triton.language as tl

from .indexing import vector_elements
from . import slicing
from .tiles import by_backend

MAX_BLOCK_C = by_backend(interpreter=1024, gpu=4096)
TILE_ELEMENTS = by_backend(interpreter=4096, gpu=8192)  # ROWS x BLOCK_C per program
REDUCE_BLOCK = 1024


@triton.jit
def _cross_entropy_kernel(
        x_ptr, target_ptr, weight_ptr, row_loss_ptr, row_weight_ptr, grad_ptr, invalid_ptr,
        num_rows, classes, spatial, ignore_index, smoothing,
        x_stride_n, x_stride_c, x_stride_s, t_stride_n, t_stride_c, t_stride_s, g_stride_n, g_stride_c, g_stride_s,
        weight_stride,
        PROBABILITIES: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_SMOOTHING: tl.constexpr,
        NEEDS_GRAD: tl.constexpr, VECTOR: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    # The launcher checked that classes and the row strides are multiples of VECTOR (contiguous
    # classes), so every row starts 16-byte aligned, and the offsets and masks below are promised
    # so (indexing.vector_elements): each row's run of columns starts at a multiple of VECTOR
    # (tl.multiple_of's [1, VECTOR]: along the rows nothing is claimed), and the column masks are
    # constant over aligned runs of VECTOR.
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < num_rows
    n = rows // spatial
    s = rows % spatial
    x_rows = n * x_stride_n + s * x_stride_s  # offsets of the rows' first logits
    t_rows = target_ptr + n * t_stride_n + s * t_stride_s
    offsets = tl.arange(0, BLOCK_C).to(tl.int64)  # columns * stride may pass 2**31

    if PROBABILITIES:
        keep = row_ok
        target_weight = tl.where(row_ok, 1.0, 0.0)
    else:
        target, keep, target_weight = class_targets(t_rows, weight_ptr, invalid_ptr, row_ok, classes, ignore_index,
                                                    weight_stride, HAS_WEIGHT)
        target_logit = tl.load(x_ptr + x_rows + target * x_stride_c, mask=keep, other=0.0).to(tl.float32)

    # Pass 1: running max and running sum of exp(x - max); the weight totals the gradient needs.
    running_max = tl.full((ROWS,), float("-inf"), tl.float32)
    running_sum = tl.zeros((ROWS,), tl.float32)
    weight_total = tl.zeros((ROWS,), tl.float32)  # W (class targets) or T (probabilities)
    for first in range(0, classes, BLOCK_C):
        columns = first + offsets
        mask = keep[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
        x_offsets = tl.multiple_of(x_rows[:, None] + columns[None, :] * x_stride_c, [1, VECTOR])
        x = tl.load(x_ptr + x_offsets, mask=mask, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # rows that saw only -inf so far
        running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
        running_max = new_max
        if PROBABILITIES or HAS_SMOOTHING:
            coefficient = _class_coefficient(weight_ptr, t_rows, columns, mask, classes, smoothing, t_stride_c,
                                             weight_stride, PROBABILITIES, HAS_WEIGHT)
            weight_total += tl.sum(coefficient, axis=1)
    lse = tl.where(keep, running_max + tl.log(tl.where(keep, running_sum, 1.0)), 0.0)

    loss = tl.zeros((ROWS,), tl.float32)
    if not PROBABILITIES:
        loss = (1.0 - smoothing) * target_weight * (lse - target_logit)
    # Pass 2: sum_c coefficient_c * (lse - x_c) (smoothing, probabilities) and the gradient.
    if PROBABILITIES or HAS_SMOOTHING or NEEDS_GRAD:
        g_rows = n * g_stride_n + s * g_stride_s
        for first in range(0, classes, BLOCK_C):
            columns = first + offsets
            column_ok = tl.max_constancy(columns < classes, VECTOR)[None, :]
            mask = keep[:, None] & column_ok
            x_offsets = tl.multiple_of(x_rows[:, None] + columns[None, :] * x_stride_c, [1, VECTOR])
            x = tl.load(x_ptr + x_offsets, mask=mask, other=0.0).to(tl.float32)
            probability = tl.where(mask, tl.exp(x - lse[:, None]), 0.0)
            if PROBABILITIES or HAS_SMOOTHING:
                coefficient = _class_coefficient(weight_ptr, t_rows, columns, mask, classes, smoothing, t_stride_c,
                                                 weight_stride, PROBABILITIES, HAS_WEIGHT)
                contribution = tl.where(mask, coefficient * (lse[:, None] - x), 0.0)
                if PROBABILITIES:
                    loss += tl.sum(contribution, axis=1)
                    grad = weight_total[:, None] * probability - coefficient
                else:
                    loss += smoothing / classes * tl.sum(contribution, axis=1)
                    is_target = columns[None, :] == target[:, None]
                    grad = ((1.0 - smoothing) * target_weight[:, None] * (probability - tl.where(is_target, 1.0, 0.0))
                            + smoothing / classes * (weight_total[:, None] * probability - coefficient))
            else:
                is_target = columns[None, :] == target[:, None]
                grad = target_weight[:, None] * (probability - tl.where(is_target, 1.0, 0.0))
            if NEEDS_GRAD:
                g_offsets = tl.multiple_of(g_rows[:, None] + columns[None, :] * g_stride_c, [1, VECTOR])
                tl.store(grad_ptr + g_offsets, tl.where(mask, grad, 0.0).to(grad_ptr.dtype.element_ty),
                         mask=row_ok[:, None] & column_ok)

    tl.store(row_loss_ptr + rows, tl.where(keep, loss, 0.0).to(row_loss_ptr.dtype.element_ty), mask=row_ok)
    tl.store(row_weight_ptr + rows, target_weight, mask=row_ok)


@triton.jit
def class_targets(target_pointers, weight_ptr, invalid_ptr, row_ok, classes, ignore_index, weight_stride,
                  HAS_WEIGHT: tl.constexpr):
    """(class index, whether the row counts, its class weight: 0 where it does not) of each row
    (cross_entropy's and nll_loss's). An index outside [0, C) that is not ``ignore_index`` sets
    ``invalid`` to (1, the index): any offending value will do for the message, and every writer
    writes a true flag."""
    target = tl.load(target_pointers, mask=row_ok, other=0).to(tl.int64)
    ignored = target == ignore_index
    in_range = (target >= 0) & (target < classes)
    invalid = row_ok & ~ignored & ~in_range
    tl.store(invalid_ptr + tl.zeros_like(target), 1, mask=invalid)
    tl.store(invalid_ptr + 1 + tl.zeros_like(target), target, mask=invalid)
    keep = row_ok & ~ignored & in_range
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + target * weight_stride, mask=keep, other=0.0).to(tl.float32)
    else:
        weight = tl.where(keep, 1.0, 0.0)
    return target, keep, weight


@triton.jit
def program_rows(num_rows, spatial, ROWS: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """This program's ROWS rows of an [N, C, S] tensor (rows = its N·S (n, s) pairs): (rows,
    which exist, n, s); int64 when offsets may pass 2**31."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    if WIDE_INDEX:
        rows = rows.to(tl.int64)
    return rows, rows < num_rows, rows // spatial, rows % spatial


@triton.jit
def _class_coefficient(weight_ptr, t_rows, columns, mask, classes, smoothing, t_stride_c, weight_stride,
                       PROBABILITIES: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    """w_c (class targets with smoothing) or w_c t'_c (probabilities), 0 outside ``mask``."""
    if HAS_WEIGHT:
        coefficient = tl.load(weight_ptr + columns * weight_stride, mask=columns < classes,
                              other=0.0).to(tl.float32)[None, :]
    else:
        coefficient = tl.full((1, 1), 1.0, tl.float32)
    if PROBABILITIES:
        t = tl.load(t_rows[:, None] + columns[None, :] * t_stride_c, mask=mask, other=0.0).to(tl.float32)
        coefficient = coefficient * ((1.0 - smoothing) * t + smoothing / classes)
    return tl.where(mask, coefficient, 0.0)


@triton.jit
def _reduce_rows_kernel(row_loss_ptr, row_weight_ptr, out_ptr, denominator_ptr, num_rows,
                        MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """One program: total loss (over the weight total for 'mean') in a fixed order."""
    loss = tl.zeros((BLOCK,), tl.float32)
    weight = tl.zeros((BLOCK,), tl.float32)
    for first in range(0, num_rows, BLOCK):
        rows = first + tl.arange(0, BLOCK)
        loss += tl.load(row_loss_ptr + rows, mask=rows < num_rows, other=0.0)
        weight += tl.load(row_weight_ptr + rows, mask=rows < num_rows, other=0.0)
    total = tl.sum(loss, axis=0)
    denominator = tl.sum(weight, axis=0)
    if MEAN:
        total = total / denominator  # 0/0 = NaN when every target is ignored, as torch
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))
    tl.store(denominator_ptr, denominator)


@triton.jit
def _scale_grad_kernel(grad_ptr, grad_out_ptr, denominator_ptr, num_rows, classes, spatial,
                       g_stride_n, g_stride_c, g_stride_s, go_stride_n, go_stride_s,
                       PER_ROW: tl.constexpr, MEAN: tl.constexpr, VECTOR: tl.constexpr, ROWS: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """grad *= grad_output (per row for 'none') / denominator ('mean'), in place."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < num_rows
    n = rows // spatial
    s = rows % spatial
    if PER_ROW:
        scale = tl.load(grad_out_ptr + n * go_stride_n + s * go_stride_s, mask=row_ok, other=0.0).to(tl.float32)
    else:
        scale = tl.load(grad_out_ptr + tl.zeros_like(rows)).to(tl.float32)
    if MEAN:
        # A zero denominator means every target was ignored: every gradient is 0, as in torch.
        denominator = tl.load(denominator_ptr + tl.zeros_like(rows))
        scale = tl.where(denominator == 0.0, 0.0, scale / denominator)
    columns = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = row_ok[:, None] & tl.max_constancy(columns < classes, VECTOR)[None, :]
    row_offsets = n * g_stride_n + s * g_stride_s
    offsets = tl.multiple_of(row_offsets[:, None] + columns[None, :] * g_stride_c, [1, VECTOR])
    pointers = grad_ptr + offsets
    grad = tl.load(pointers, mask=mask, other=0.0).to(tl.float32)
    tl.store(pointers, (grad * scale[:, None]).to(grad_ptr.dtype.element_ty), mask=mask)


def row_tile(classes, num_rows, device):
    """(ROWS, BLOCK_C): whole rows in one block up to MAX_BLOCK_C classes, several rows per
    program when rows are short, but compiled no more rows per program than keep about two
    programs on every SM (256 rows of 1000 classes: 256 programs of one row, not 32 of 8)."""
    block_c = min(triton.next_power_of_2(max(classes, 1)), MAX_BLOCK_C)
    rows = max(1, min(TILE_ELEMENTS // block_c, 64))
    while rows > 1 and triton.cdiv(num_rows, rows) < 2 * slicing.sm_count(device):
        rows //= 2
    return rows, block_c


def tile_warps(rows, block_c):
    """One warp per 256 elements of a tile (8 per thread, 128 bits of bf16), 1 to 8 warps."""
    return max(1, min(8, rows * block_c // 256))


def _row_strides(tensor):
    """The (n, s) strides of a [N, C, S] tensor that the kernels index rows with; 0 for a dim of
    size 1, whose stride is never used (and would otherwise decide the vector width)."""
    return tuple(tensor.stride(dim) if tensor.shape[dim] > 1 else 0 for dim in (0, 2))


def strides_ncs(tensor):
    """(n, c, s) strides as the kernels take them (``_row_strides`` for n and s)."""
    stride_n, stride_s = _row_strides(tensor)
    return stride_n, tensor.stride(1), stride_s


def row_vector(tensor):
    """tensor [N, C, S]'s vector width (indexing.vector_elements) when its classes are contiguous."""
    if tensor.stride(1) != 1:
        return 1
    return vector_elements(tensor.element_size(), tensor.shape[1], *_row_strides(tensor))


def forward(x, target, weight, row_loss, row_weight, grad, invalid, *, ignore_index, smoothing, probabilities):
    """Per-row losses and denominators, and the unscaled gradient into ``grad`` when given.

    ``x`` [N, C, S] logits, ``target`` [N, S] class indices or [N, C, S] probabilities,
    ``row_loss``/``row_weight`` [N·S], ``invalid`` int64 [2] zeros (set to (1, value) when a class
    index is out of range). Returns the number of launches."""
    num_rows = x.shape[0] * x.shape[2]
    rows, block_c = row_tile(x.shape[1], num_rows, x.device)
    t_strides = target.stride() if probabilities else (target.stride(0), 0, target.stride(1))
    g_strides = strides_ncs(grad) if grad is not None else (0, 0, 0)
    vector = min(row_vector(x), row_vector(grad)) if grad is not None else row_vector(x)
    _cross_entropy_kernel[(triton.cdiv(num_rows, rows),)](
        x, target, weight if weight is not None else x, row_loss, row_weight, grad if grad is not None else x, invalid,
        num_rows, x.shape[1], x.shape[2], ignore_index, smoothing, *strides_ncs(x), *t_strides, *g_strides,
        weight.stride(0) if weight is not None else 0,
        PROBABILITIES=probabilities, HAS_WEIGHT=weight is not None, HAS_SMOOTHING=smoothing > 0,
        NEEDS_GRAD=grad is not None, VECTOR=vector, ROWS=rows, BLOCK_C=block_c, num_warps=tile_warps(rows, block_c))
    return 1


def reduce_rows(row_loss, row_weight, out, denominator, *, mean):
    _reduce_rows_kernel[(1,)](row_loss, row_weight, out, denominator, row_loss.numel(), MEAN=mean, BLOCK=REDUCE_BLOCK)
    return 1


def scale_grad(grad, grad_out, denominator, *, mean):
    """``grad`` [N, C, S] *= ``grad_out`` (0-d, or [N, S] per row) / ``denominator`` ('mean')."""
    num_rows = grad.shape[0] * grad.shape[2]
    rows, block_c = row_tile(grad.shape[1], num_rows, grad.device)
    per_row = grad_out.dim() > 0
    go_strides = (grad_out.stride(0), grad_out.stride(1)) if per_row else (0, 0)
    _scale_grad_kernel[(triton.cdiv(num_rows, rows), triton.cdiv(grad.shape[1], block_c))](
        grad, grad_out, denominator if denominator is not None else grad, num_rows, grad.shape[1], grad.shape[2],
        *strides_ncs(grad), *go_strides, PER_ROW=per_row, MEAN=mean, VECTOR=row_vector(grad),
        ROWS=rows, BLOCK_C=block_c, num_warps=tile_warps(rows, block_c))
    return 1


def invalid_buffer(device):
    return torch.zeros(2, dtype=torch.int64, device=device)
