"""Fused multi-tensor RMSprop step (centered, momentum, weight decay, maximize).

Computes, for every element of every tensor in one launch, torch.optim.RMSprop's rule (``g`` the
gradient, ``p`` the param, ``v`` the square average, ``a`` the gradient average, ``b`` the
momentum buffer):

    g = g / grad_scale                        (GradScaler, when given)
    g = -g                                    (maximize)
    g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    a = a + (1 - alpha) * (g - a)             (centered)
    d = sqrt(v - a * a) + eps   (centered)   or   sqrt(v) + eps
    b = momentum * b + g / d;  p = p - lr * b          (momentum > 0)
    p = p - lr * g / d                                 (otherwise)

Element math is fp32 whatever the storage dtype. The step counter torch keeps (the rule never
reads it) is counted on the device by ``multi_tensor.advance_counters``.

Bytes moved per element: read p, g, v and write p, v: 5 x element size (20 B for fp32), plus a
read and a write for each of ``a`` (centered) and ``b`` (momentum): up to 9 x element size.

Launch grid: two launches per (device, dtype) bucket of a param group: the counters (one program
per ``COUNTER_BLOCK`` tensors), then one program per ``chunk_size`` elements of each tensor (see
``multi_tensor.py``), looping over them in ``BLOCK``s.
"""
import triton
import triton.language as tl

from .multi_tensor import (BLOCK, COUNT, NUM_WARPS, advance_counters, block_pointers,
                           gradient_step_input, inverse_grad_scale, program_chunk, row_pointer)

# Rows of the pointer table (multi_tensor.build_table appends the element counts as the last row).
ROW_PARAM, ROW_GRAD, ROW_SQUARE_AVG, ROW_GRAD_AVG, ROW_MOMENTUM_BUFFER, ROW_STEP, ROW_NUMEL = (
    tl.constexpr(row) for row in range(7))


@triton.jit
def _update_block(param_ptr, grad_ptr, square_avg_ptr, grad_avg_ptr, buffer_ptr, offsets, mask, inv_grad_scale,
                  lr, alpha, one_minus_alpha, eps, weight_decay, momentum,
                  ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr, CENTERED: tl.constexpr,
                  HAS_MOMENTUM: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
                  HAS_GRAD_SCALE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One block of the element-wise update (``mask`` None for a full block)."""
    params = block_pointers(param_ptr, offsets, ALIGNED, BLOCK)
    square_avgs = block_pointers(square_avg_ptr, offsets, ALIGNED, BLOCK)
    param = tl.load(params, mask=mask).to(tl.float32)
    grad = tl.load(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32)
    grad = gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE, MAXIMIZE,
                               HAS_WEIGHT_DECAY)
    square_avg = alpha * tl.load(square_avgs, mask=mask).to(tl.float32) + one_minus_alpha * grad * grad
    tl.store(square_avgs, square_avg.to(STATE_TYPE), mask=mask)
    if CENTERED:
        grad_avgs = block_pointers(grad_avg_ptr, offsets, ALIGNED, BLOCK)
        grad_avg = tl.load(grad_avgs, mask=mask).to(tl.float32)
        grad_avg = grad_avg + one_minus_alpha * (grad - grad_avg)
        tl.store(grad_avgs, grad_avg.to(STATE_TYPE), mask=mask)
        denom = tl.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        denom = tl.sqrt(square_avg) + eps
    if HAS_MOMENTUM:
        buffers = block_pointers(buffer_ptr, offsets, ALIGNED, BLOCK)
        buffer = momentum * tl.load(buffers, mask=mask).to(tl.float32) + grad / denom
        tl.store(buffers, buffer.to(STATE_TYPE), mask=mask)
        param = param - lr * buffer
    else:
        param = param - lr * (grad / denom)
    tl.store(params, param.to(ELEMENT_TYPE), mask=mask)


@triton.jit
def _rmsprop_step_kernel(
    tables_ptr, chunks_ptr, num_tensors, num_chunks, grad_scale_ptr, found_inf_ptr,
    lr, alpha, one_minus_alpha, eps, weight_decay, momentum,
    ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr, CENTERED: tl.constexpr, HAS_MOMENTUM: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr,
    CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, found_inf_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, HAS_FOUND_INF)
    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    square_avg_ptr = row_pointer(tables_ptr, ROW_SQUARE_AVG, num_tensors, tensor, STATE_TYPE)
    grad_avg_ptr = row_pointer(tables_ptr, ROW_GRAD_AVG, num_tensors, tensor, STATE_TYPE)
    buffer_ptr = row_pointer(tables_ptr, ROW_MOMENTUM_BUFFER, num_tensors, tensor, STATE_TYPE)
    inv_grad_scale = inverse_grad_scale(grad_scale_ptr, HAS_GRAD_SCALE)

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _update_block(param_ptr, grad_ptr, square_avg_ptr, grad_avg_ptr, buffer_ptr,
                      block_start + tl.arange(0, BLOCK), None, inv_grad_scale,
                      lr, alpha, one_minus_alpha, eps, weight_decay, momentum, ELEMENT_TYPE, STATE_TYPE,
                      CENTERED, HAS_MOMENTUM, HAS_WEIGHT_DECAY, MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _update_block(param_ptr, grad_ptr, square_avg_ptr, grad_avg_ptr, buffer_ptr,
                      offsets, offsets < chunk_end, inv_grad_scale,
                      lr, alpha, one_minus_alpha, eps, weight_decay, momentum, ELEMENT_TYPE, STATE_TYPE,
                      CENTERED, HAS_MOMENTUM, HAS_WEIGHT_DECAY, MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)


def rmsprop_step(table, *, element_type, state_type, lr, alpha, eps, weight_decay, momentum, centered, maximize,
                 grad_scale=None, found_inf=None):
    """Launch one RMSprop step over every tensor of ``table`` (a multi_tensor.TensorTable with
    rows param, grad, square_avg, grad_avg, momentum_buffer, step; the rows a configuration does
    not read may repeat another). ``element_type`` and ``state_type`` are triton dtypes;
    ``grad_scale`` and ``found_inf`` are optional one-element fp32 tensors on the tensors' device
    (GradScaler's). Returns the number of launches."""
    advance_counters(table, ROW_STEP, found_inf, COUNT)
    if table.num_chunks == 0:
        return 1
    _rmsprop_step_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks,
        grad_scale if grad_scale is not None else table.tables,
        found_inf if found_inf is not None else table.tables,
        lr, alpha, 1.0 - alpha, eps, weight_decay, momentum,
        ELEMENT_TYPE=element_type, STATE_TYPE=state_type, CENTERED=centered, HAS_MOMENTUM=momentum > 0,
        HAS_WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=maximize,
        HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
        ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return 2
