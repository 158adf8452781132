"""Fused multi-tensor SGD step (momentum, dampening, Nesterov, weight decay, maximize).

Computes, for every element of every tensor in one launch, torch.optim.SGD's rule (``g`` the
gradient, ``p`` the param, ``b`` the momentum buffer, ``first`` the tensor's first-step flag):

    g = g / grad_scale                        (GradScaler, when given)
    g = -g                                    (maximize)
    g = g + weight_decay * p
    b = g   if first   else   momentum * b + (1 - dampening) * g          (momentum != 0)
    g = g + momentum * b   (nesterov)   or   g = b                        (momentum != 0)
    p = p - lr * g

Element math is fp32 whatever the storage dtype. ``first`` is a per-tensor fp32 flag read on the
device (torch's first step copies the gradient into a new buffer; the buffer here is created as
zeros and the flag says to overwrite it), so GradScaler may skip a first step without the host
knowing: the ``CLEAR`` pass of ``multi_tensor.advance_counters`` then keeps the flag set.

Bytes moved per element: read p, g and write p: 3 x element size (12 B for fp32); with momentum
also read and write b: 5 x element size (20 B for fp32). FLOPs are negligible: it is memory bound.

Launch grid: one program per ``chunk_size`` elements of each tensor (see ``multi_tensor.py``),
looping over them in ``BLOCK``s; one launch per (device, dtype) bucket of a param group, plus one
``CLEAR`` launch over the flags of buffers created while GradScaler could skip the step.
"""
import triton
import triton.language as tl

from .multi_tensor import (BLOCK, CLEAR, NUM_WARPS, advance_counters, block_pointers,
                           gradient_step_input, inverse_grad_scale, program_chunk, row_pointer)

# Rows of the pointer table (multi_tensor.build_table appends the element counts as the last row).
ROW_PARAM, ROW_GRAD, ROW_MOMENTUM_BUFFER, ROW_FIRST_STEP, ROW_NUMEL = (tl.constexpr(row) for row in range(5))


@triton.jit
def _update_block(param_ptr, grad_ptr, buffer_ptr, offsets, mask, first_step, inv_grad_scale,
                  lr, momentum, one_minus_dampening, weight_decay,
                  ELEMENT_TYPE: tl.constexpr, HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                  HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
                  ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One block of the element-wise update (``mask`` None for a full block)."""
    params = block_pointers(param_ptr, offsets, ALIGNED, BLOCK)
    param = tl.load(params, mask=mask).to(tl.float32)
    grad = tl.load(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32)
    grad = gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE, MAXIMIZE,
                               HAS_WEIGHT_DECAY)
    if HAS_MOMENTUM:
        buffers = block_pointers(buffer_ptr, offsets, ALIGNED, BLOCK)
        buffer = tl.load(buffers, mask=mask).to(tl.float32)
        buffer = tl.where(first_step != 0, grad, momentum * buffer + one_minus_dampening * grad)
        tl.store(buffers, buffer.to(ELEMENT_TYPE), mask=mask)
        if NESTEROV:
            grad = grad + momentum * buffer
        else:
            grad = buffer
    tl.store(params, (param - lr * grad).to(ELEMENT_TYPE), mask=mask)


@triton.jit
def _sgd_step_kernel(
    tables_ptr, chunks_ptr, num_tensors, num_chunks, grad_scale_ptr, found_inf_ptr,
    lr, momentum, one_minus_dampening, weight_decay,
    ELEMENT_TYPE: tl.constexpr, HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr,
    CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, found_inf_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, HAS_FOUND_INF)
    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    buffer_ptr = row_pointer(tables_ptr, ROW_MOMENTUM_BUFFER, num_tensors, tensor, ELEMENT_TYPE)
    first_step = 0.0
    if HAS_MOMENTUM:
        first_step = tl.load(row_pointer(tables_ptr, ROW_FIRST_STEP, num_tensors, tensor, tl.float32))
    inv_grad_scale = inverse_grad_scale(grad_scale_ptr, HAS_GRAD_SCALE)

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _update_block(param_ptr, grad_ptr, buffer_ptr, block_start + tl.arange(0, BLOCK), None, first_step,
                      inv_grad_scale, lr, momentum, one_minus_dampening, weight_decay, ELEMENT_TYPE,
                      HAS_MOMENTUM, NESTEROV, HAS_WEIGHT_DECAY, MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _update_block(param_ptr, grad_ptr, buffer_ptr, offsets, offsets < chunk_end, first_step,
                      inv_grad_scale, lr, momentum, one_minus_dampening, weight_decay, ELEMENT_TYPE,
                      HAS_MOMENTUM, NESTEROV, HAS_WEIGHT_DECAY, MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)


def sgd_step(table, pending_table, *, element_type, lr, momentum, dampening, weight_decay, nesterov, maximize,
             grad_scale=None, found_inf=None):
    """Launch one SGD step over every tensor of ``table`` (a multi_tensor.TensorTable with rows
    param, grad, momentum_buffer, first-step flag), then clear the flags of ``pending_table``
    (a one-row table, or None). ``element_type`` is a triton dtype; ``grad_scale`` and
    ``found_inf`` are optional one-element fp32 tensors on the tensors' device (GradScaler's).
    Returns the number of launches."""
    launches = 0
    if table.num_chunks:
        _sgd_step_kernel[(table.num_chunks,)](
            table.tables, table.chunks, table.num_tensors, table.num_chunks,
            grad_scale if grad_scale is not None else table.tables,
            found_inf if found_inf is not None else table.tables,
            lr, momentum, 1.0 - dampening, weight_decay,
            ELEMENT_TYPE=element_type, HAS_MOMENTUM=momentum != 0, NESTEROV=nesterov,
            HAS_WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=maximize,
            HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
            ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )
        launches += 1
    if pending_table is not None:
        launches += advance_counters(pending_table, 0, found_inf, CLEAR)
    return launches
