"""Fused multi-tensor Adadelta step (weight decay, maximize).

Computes, for every element of every tensor in one launch, torch.optim.Adadelta's rule (``g`` the
gradient, ``p`` the param, ``v`` the square average, ``u`` the accumulated squared delta):

    g = g / grad_scale                        (GradScaler, when given)
    g = -g                                    (maximize)
    g = g + weight_decay * p
    v = rho * v + (1 - rho) * g * g
    d = sqrt(u + eps) / sqrt(v + eps) * g
    u = rho * u + (1 - rho) * d * d
    p = p - lr * d

Element math is fp32 whatever the storage dtype. The step counter torch keeps (the rule never
reads it) is counted on the device by ``multi_tensor.advance_counters``.

Bytes moved per element: read p, g, v, u and write p, v, u: 7 x element size (28 B for fp32).

Launch grid: two launches per (device, dtype) bucket of a param group: the counters (one program
per ``COUNTER_BLOCK`` tensors), then one program per ``chunk_size`` elements of each tensor (see
``multi_tensor.py``), looping over them in ``BLOCK``s.
"""
import triton
import triton.language as tl

from .multi_tensor import (BLOCK, COUNT, NUM_WARPS, advance_counters, block_pointers,
                           gradient_step_input, inverse_grad_scale, program_chunk, row_pointer)

# Rows of the pointer table (multi_tensor.build_table appends the element counts as the last row).
ROW_PARAM, ROW_GRAD, ROW_SQUARE_AVG, ROW_ACC_DELTA, ROW_STEP, ROW_NUMEL = (tl.constexpr(row) for row in range(6))


@triton.jit
def _update_block(param_ptr, grad_ptr, square_avg_ptr, acc_delta_ptr, offsets, mask, inv_grad_scale,
                  lr, rho, one_minus_rho, eps, weight_decay,
                  ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
                  MAXIMIZE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, ALIGNED: tl.constexpr,
                  BLOCK: tl.constexpr):
    """One block of the element-wise update (``mask`` None for a full block)."""
    params = block_pointers(param_ptr, offsets, ALIGNED, BLOCK)
    square_avgs = block_pointers(square_avg_ptr, offsets, ALIGNED, BLOCK)
    acc_deltas = block_pointers(acc_delta_ptr, offsets, ALIGNED, BLOCK)
    param = tl.load(params, mask=mask).to(tl.float32)
    grad = tl.load(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32)
    grad = gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE, MAXIMIZE,
                               HAS_WEIGHT_DECAY)
    square_avg = rho * tl.load(square_avgs, mask=mask).to(tl.float32) + one_minus_rho * grad * grad
    acc_delta = tl.load(acc_deltas, mask=mask).to(tl.float32)
    delta = tl.sqrt(acc_delta + eps) / tl.sqrt(square_avg + eps) * grad
    acc_delta = rho * acc_delta + one_minus_rho * delta * delta
    tl.store(square_avgs, square_avg.to(STATE_TYPE), mask=mask)
    tl.store(acc_deltas, acc_delta.to(STATE_TYPE), mask=mask)
    tl.store(params, (param - lr * delta).to(ELEMENT_TYPE), mask=mask)


@triton.jit
def _adadelta_step_kernel(
    tables_ptr, chunks_ptr, num_tensors, num_chunks, grad_scale_ptr, found_inf_ptr,
    lr, rho, one_minus_rho, eps, weight_decay,
    ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr,
    CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, found_inf_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, HAS_FOUND_INF)
    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    square_avg_ptr = row_pointer(tables_ptr, ROW_SQUARE_AVG, num_tensors, tensor, STATE_TYPE)
    acc_delta_ptr = row_pointer(tables_ptr, ROW_ACC_DELTA, num_tensors, tensor, STATE_TYPE)
    inv_grad_scale = inverse_grad_scale(grad_scale_ptr, HAS_GRAD_SCALE)

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _update_block(param_ptr, grad_ptr, square_avg_ptr, acc_delta_ptr, block_start + tl.arange(0, BLOCK), None,
                      inv_grad_scale, lr, rho, one_minus_rho, eps, weight_decay, ELEMENT_TYPE, STATE_TYPE,
                      HAS_WEIGHT_DECAY, MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _update_block(param_ptr, grad_ptr, square_avg_ptr, acc_delta_ptr, offsets, offsets < chunk_end,
                      inv_grad_scale, lr, rho, one_minus_rho, eps, weight_decay, ELEMENT_TYPE, STATE_TYPE,
                      HAS_WEIGHT_DECAY, MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)


def adadelta_step(table, *, element_type, state_type, lr, rho, eps, weight_decay, maximize,
                  grad_scale=None, found_inf=None):
    """Launch one Adadelta step over every tensor of ``table`` (a multi_tensor.TensorTable with
    rows param, grad, square_avg, acc_delta, step). ``element_type`` and ``state_type`` are triton
    dtypes; ``grad_scale`` and ``found_inf`` are optional one-element fp32 tensors on the tensors'
    device (GradScaler's). Returns the number of launches."""
    advance_counters(table, ROW_STEP, found_inf, COUNT)
    if table.num_chunks == 0:
        return 1
    _adadelta_step_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks,
        grad_scale if grad_scale is not None else table.tables,
        found_inf if found_inf is not None else table.tables,
        lr, rho, 1.0 - rho, eps, weight_decay,
        ELEMENT_TYPE=element_type, STATE_TYPE=state_type, HAS_WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=maximize,
        HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
        ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return 2
