"""Negative log-likelihood: the loss of log-probabilities x [N, C, S] (S = d1·d2·…, 1 for 2-d
input) at class indices y [N, S], each row (sample, spatial position) weighted by its class's
weight w_y (1 when none; 0 when y is ``ignore_index``):

    loss[n, s] = -w_y · x[n, y, s]        'mean': Σ loss / Σ w_y,   'sum': Σ loss
    dloss/dx[n, c, s] = -w_y · g[n, s]  at c = y, 0 elsewhere   (g = grad_output, / Σ w_y for 'mean')

Forward reads one logit per row (a gather: N·S·(element + 8 target bytes)); its 'mean' and 'sum'
are fp32 partials, one loss and one weight total per program, that ``pointwise_loss``'s finish
adds in a fixed order (deterministic). Backward writes the whole gradient, zeros but one per
row: N·C·S·element bytes written, the targets read.

Launch grids: forward (cdiv(N·S, ROWS),), ROWS rows per program; backward
(cdiv(N·S, ROWS), cdiv(C, BLOCK_C)), [ROWS x BLOCK_C] tiles, the classes contiguous or not.
"""
import torch
import triton
import triton.language as tl

from .cross_entropy import class_targets, program_rows
from .indexing import needs_wide_index
from .tiles import by_backend

ROWS = by_backend(interpreter=256, gpu=1024)
GRAD_TILE = by_backend(interpreter=4096, gpu=4096)  # ROWS x BLOCK_C elements of a backward tile


@triton.jit
def _nll_loss_forward_kernel(
        x_ptr, target_ptr, weight_ptr, out_ptr, partial_ptr, invalid_ptr, num_rows, classes, spatial, ignore_index,
        x_stride_n, x_stride_c, x_stride_s, t_stride_n, t_stride_s, weight_stride,
        HAS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr, WIDE_INDEX: tl.constexpr, ROWS: tl.constexpr):
    rows, row_ok, n, s = program_rows(num_rows, spatial, ROWS, WIDE_INDEX)
    target, keep, weight = class_targets(target_ptr + n * t_stride_n + s * t_stride_s, weight_ptr, invalid_ptr, row_ok,
                                         classes, ignore_index, weight_stride, HAS_WEIGHT)
    logit = tl.load(x_ptr + n * x_stride_n + target * x_stride_c + s * x_stride_s, mask=keep,
                    other=0.0).to(tl.float32)
    loss = tl.where(keep, -weight * logit, 0.0)
    if REDUCE:
        tl.store(partial_ptr + tl.program_id(0), tl.sum(loss, axis=0))
        tl.store(partial_ptr + tl.num_programs(0) + tl.program_id(0), tl.sum(weight, axis=0))
    else:
        tl.store(out_ptr + rows, loss.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _nll_loss_backward_kernel(
        grad_out_ptr, target_ptr, weight_ptr, denominator_ptr, dx_ptr, num_rows, classes, spatial, ignore_index,
        t_stride_n, t_stride_s, g_stride_n, g_stride_s, weight_stride, dx_stride_n, dx_stride_c, dx_stride_s,
        HAS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr, WIDE_INDEX: tl.constexpr, ROWS: tl.constexpr,
        BLOCK_C: tl.constexpr):
    rows, row_ok, n, s = program_rows(num_rows, spatial, ROWS, WIDE_INDEX)
    columns = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if WIDE_INDEX:
        columns = columns.to(tl.int64)
    target = tl.load(target_ptr + n * t_stride_n + s * t_stride_s, mask=row_ok, other=0).to(tl.int64)
    keep = row_ok & (target != ignore_index)
    if HAS_WEIGHT:
        weight = tl.load(weight_ptr + target * weight_stride, mask=keep, other=0.0).to(tl.float32)
    else:
        weight = tl.where(keep, 1.0, 0.0)
    if REDUCE:
        # A zero denominator means every target was ignored: every gradient is 0, as in torch.
        denominator = tl.load(denominator_ptr + tl.zeros_like(rows))
        scale = tl.load(grad_out_ptr + tl.zeros_like(rows)).to(tl.float32)
        scale = tl.where(denominator == 0.0, 0.0, scale / denominator)
    else:
        scale = tl.load(grad_out_ptr + n * g_stride_n + s * g_stride_s, mask=row_ok, other=0.0).to(tl.float32)
    value = -weight * scale
    grad = tl.where(columns[None, :] == target[:, None], value[:, None], 0.0)
    offsets = (n * dx_stride_n + s * dx_stride_s)[:, None] + columns[None, :] * dx_stride_c
    tl.store(dx_ptr + offsets, grad.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & (columns < classes)[None, :])


def _row_strides(tensor):
    """(n, s) strides of an [N, ·, S] or [N, S] tensor; 0 for a dim of size 1 (never used)."""
    s_dim = tensor.dim() - 1
    return tuple(tensor.stride(dim) if tensor.shape[dim] > 1 else 0 for dim in (0, s_dim))


def forward_partials(num_rows):
    """Programs of the forward, and so partials of a reduced loss (at least one)."""
    return max(1, triton.cdiv(num_rows, ROWS))


def forward(x, target, weight, out, partial, invalid, *, ignore_index, reduce):
    """``x`` [N, C, S], ``target`` [N, S]; the 'none' loss into ``out`` [N·S] (dense), or the
    programs' (loss, weight) partials into ``partial`` (2 · ``forward_partials`` fp32 values).
    ``invalid`` int64 [2] zeros, set to (1, value) when a class index is out of range."""
    num_rows = x.shape[0] * x.shape[2]
    x_n, x_s = _row_strides(x)
    _nll_loss_forward_kernel[(forward_partials(num_rows),)](
        x, target, weight if weight is not None else x, out if out is not None else partial,
        partial if partial is not None else out, invalid, num_rows, x.shape[1], x.shape[2], ignore_index,
        x_n, x.stride(1), x_s, *_row_strides(target), weight.stride(0) if weight is not None else 0,
        HAS_WEIGHT=weight is not None, REDUCE=partial is not None, WIDE_INDEX=needs_wide_index(x, target),
        ROWS=ROWS, num_warps=4)
    return 1


def backward(grad_out, target, weight, denominator, dx, *, ignore_index):
    """``dx`` [N, C, S] from ``grad_out`` (0-d with the 0-d fp32 ``denominator`` of a reduced
    loss: 1 for 'sum'; else [N, S]). One launch."""
    num_rows, classes = dx.shape[0] * dx.shape[2], dx.shape[1]
    block_c = min(triton.next_power_of_2(max(classes, 1)), 256)
    rows = max(1, min(GRAD_TILE // block_c, triton.next_power_of_2(max(num_rows, 1))))
    reduce = grad_out.dim() == 0
    dx_n, dx_s = _row_strides(dx)
    _nll_loss_backward_kernel[(triton.cdiv(num_rows, rows), triton.cdiv(classes, block_c))](
        grad_out, target, weight if weight is not None else dx, denominator if denominator is not None else dx, dx,
        num_rows, classes, dx.shape[2], ignore_index, *_row_strides(target),
        *(_row_strides(grad_out) if not reduce else (0, 0)), weight.stride(0) if weight is not None else 0,
        dx_n, dx.stride(1), dx_s, HAS_WEIGHT=weight is not None, REDUCE=reduce,
        WIDE_INDEX=needs_wide_index(dx, target), ROWS=rows, BLOCK_C=block_c, num_warps=4)
    return 1


def invalid_buffer(device):
    return torch.zeros(2, dtype=torch.int64, device=device)
