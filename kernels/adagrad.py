"""Fused multi-tensor Adagrad step (lr decay, weight decay, maximize).

Computes, for every element of every tensor in one launch, torch.optim.Adagrad's rule (``g`` the
gradient, ``p`` the param, ``s`` the sum of squares, ``t`` the step counter after this step):

    g   = g / grad_scale                      (GradScaler, when given)
    g   = -g                                  (maximize)
    g   = g + weight_decay * p
    s   = s + g * g
    p   = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

Element math is fp32 whatever the storage dtype; the decayed learning rate is computed per tensor
in fp64 from the device-side step counter (torch computes it in Python floats), so nothing is
read back to the host.

Bytes moved per element: read p, g, s and write p, s: 5 x element size (20 B for fp32).

Launch grid: two launches per (device, dtype) bucket of a param group: the step counters
(``multi_tensor.advance_counters``, before the update because every chunk of a tensor reads its
counter), then one program per ``chunk_size`` elements of each tensor (see ``multi_tensor.py``),
looping over them in ``BLOCK``s.
"""
import triton
import triton.language as tl

from .multi_tensor import (BLOCK, COUNT, NUM_WARPS, advance_counters, block_pointers,
                           gradient_step_input, inverse_grad_scale, program_chunk, row_pointer)

# Rows of the pointer table (multi_tensor.build_table appends the element counts as the last row).
ROW_PARAM, ROW_GRAD, ROW_SUM, ROW_STEP, ROW_NUMEL = (tl.constexpr(row) for row in range(5))


@triton.jit
def _update_block(param_ptr, grad_ptr, sum_ptr, offsets, mask, inv_grad_scale, step_size, eps, weight_decay,
                  ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
                  MAXIMIZE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr, ALIGNED: tl.constexpr,
                  BLOCK: tl.constexpr):
    """One block of the element-wise update (``mask`` None for a full block)."""
    params = block_pointers(param_ptr, offsets, ALIGNED, BLOCK)
    sums = block_pointers(sum_ptr, offsets, ALIGNED, BLOCK)
    param = tl.load(params, mask=mask).to(tl.float32)
    grad = tl.load(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32)
    grad = gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE, MAXIMIZE,
                               HAS_WEIGHT_DECAY)
    square_sum = tl.load(sums, mask=mask).to(tl.float32) + grad * grad
    tl.store(sums, square_sum.to(STATE_TYPE), mask=mask)
    param = param - step_size * (grad / (tl.sqrt(square_sum) + eps))
    tl.store(params, param.to(ELEMENT_TYPE), mask=mask)


@triton.jit
def _adagrad_step_kernel(
    tables_ptr, chunks_ptr, num_tensors, num_chunks, grad_scale_ptr, found_inf_ptr,
    lr, lr_decay, eps, weight_decay,
    ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr,
    CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, found_inf_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, HAS_FOUND_INF)
    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    sum_ptr = row_pointer(tables_ptr, ROW_SUM, num_tensors, tensor, STATE_TYPE)
    # The counter was already bumped by advance_counters; fp64 as torch's Python float.
    step = tl.load(row_pointer(tables_ptr, ROW_STEP, num_tensors, tensor, tl.float32)).to(tl.float64)
    step_size = (lr / (1.0 + (step - 1.0) * lr_decay)).to(tl.float32)
    inv_grad_scale = inverse_grad_scale(grad_scale_ptr, HAS_GRAD_SCALE)

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _update_block(param_ptr, grad_ptr, sum_ptr, block_start + tl.arange(0, BLOCK), None, inv_grad_scale,
                      step_size, eps, weight_decay, ELEMENT_TYPE, STATE_TYPE, HAS_WEIGHT_DECAY, MAXIMIZE,
                      HAS_GRAD_SCALE, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _update_block(param_ptr, grad_ptr, sum_ptr, offsets, offsets < chunk_end, inv_grad_scale,
                      step_size, eps, weight_decay, ELEMENT_TYPE, STATE_TYPE, HAS_WEIGHT_DECAY, MAXIMIZE,
                      HAS_GRAD_SCALE, ALIGNED, BLOCK)


def adagrad_step(table, *, element_type, state_type, lr, lr_decay, eps, weight_decay, maximize,
                 grad_scale=None, found_inf=None):
    """Launch one Adagrad step over every tensor of ``table`` (a multi_tensor.TensorTable with rows
    param, grad, sum, step). ``element_type`` and ``state_type`` are triton dtypes; ``grad_scale``
    and ``found_inf`` are optional one-element fp32 tensors on the tensors' device (GradScaler's).
    Returns the number of launches."""
    advance_counters(table, ROW_STEP, found_inf, COUNT)
    if table.num_chunks == 0:
        return 1
    _adagrad_step_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks,
        grad_scale if grad_scale is not None else table.tables,
        found_inf if found_inf is not None else table.tables,
        lr, lr_decay, eps, weight_decay,
        ELEMENT_TYPE=element_type, STATE_TYPE=state_type, HAS_WEIGHT_DECAY=weight_decay != 0, MAXIMIZE=maximize,
        HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
        ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return 2
