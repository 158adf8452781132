"""Fused multi-tensor Adam / AdamW step.

Computes, for every element of every tensor in one launch (``g`` the gradient, ``p`` the param,
``m``/``v`` the moments, ``t`` the step counter after this step):

    g  = g / grad_scale                       (GradScaler, when given)
    g  = -g                                   (maximize)
    g  = g + wd * p        (Adam)     or     p = p * (1 - lr * wd)      (AdamW)
    m  = m + (1 - beta1) * (g - m)
    v  = beta2 * v + (1 - beta2) * g * g
    vmax = max(vmax, v)                       (amsgrad; the denominator then uses vmax)
    p  = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

Element math is fp32 whatever the storage dtype; the bias corrections are computed per tensor in
fp64 from the device-side step counter, as torch's fused Adam does, so nothing is read back to
the host.

Bytes moved per element: read p, g, m, v and write p, m, v: 7 x element size (28 B for fp32),
plus read and write vmax with amsgrad (36 B for fp32). FLOPs are negligible: it is memory bound.

Launch grid: two launches per (device, dtype) bucket of a param group, whatever the number of
tensors. ``multi_tensor.advance_counters`` adds one to each step counter (zero when GradScaler
found inf/NaN); ``_adam_step_kernel`` has one program per ``chunk_size`` elements of each tensor
(see ``multi_tensor.py``), looping over them in ``BLOCK``s. The counters are bumped in a separate
launch because every chunk of a tensor reads its counter.
"""
import numpy as np
import triton
import triton.language as tl

from .multi_tensor import (BLOCK, COUNT, NUM_WARPS, advance_counters, block_pointers, gradient_step_input,
                           inverse_grad_scale, program_chunk, row_pointer)

# Rows of the pointer table (multi_tensor.build_table appends the element counts as the last row).
# Globals read inside @triton.jit must be tl.constexpr for the compiler (the interpreter is lax).
ROW_PARAM, ROW_GRAD, ROW_EXP_AVG, ROW_EXP_AVG_SQ, ROW_MAX_EXP_AVG_SQ, ROW_STEP, ROW_NUMEL = (
    tl.constexpr(row) for row in range(7))

# A float32 step counter stops growing at 2**24 (t + 1 rounds back to t), so 25 bits of the
# exponent are enough for beta**t.
STEP_BITS = tl.constexpr(25)


@triton.jit
def _pow_by_squaring(base_hi, base_lo, exponent):
    """base**exponent in fp64 for a non-negative integer-valued exponent.

    ``base`` arrives as an fp32 pair (hi + lo) because triton passes Python floats as fp32;
    together they carry the full double. Only multiplications: no fp64 transcendental needed.
    """
    base = tl.zeros((), tl.float64) + base_hi + base_lo
    remaining = exponent.to(tl.int64)
    result = tl.full((), 1.0, tl.float64)
    for bit in tl.static_range(STEP_BITS):
        result = tl.where(((remaining >> bit) & 1) != 0, result * base, result)
        base = base * base
    return result


@triton.jit
def _update_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr, offsets, mask,
                  step_size, inv_bias_correction2_sqrt, inv_grad_scale, beta2, one_minus_beta1,
                  one_minus_beta2, eps, weight_decay, decoupled_decay_factor,
                  ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr,
                  DECOUPLED_WEIGHT_DECAY: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
                  AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
                  ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One block of the element-wise update (``mask`` None for a full block)."""
    params = block_pointers(param_ptr, offsets, ALIGNED, BLOCK)
    exp_avgs = block_pointers(exp_avg_ptr, offsets, ALIGNED, BLOCK)
    exp_avg_sqs = block_pointers(exp_avg_sq_ptr, offsets, ALIGNED, BLOCK)
    param = tl.load(params, mask=mask).to(tl.float32)
    grad = tl.load(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32)
    exp_avg = tl.load(exp_avgs, mask=mask).to(tl.float32)
    exp_avg_sq = tl.load(exp_avg_sqs, mask=mask).to(tl.float32)

    # L2 decay through the shared prologue; AdamW's decoupled decay scales the param instead.
    if HAS_WEIGHT_DECAY and DECOUPLED_WEIGHT_DECAY:
        grad = gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE, MAXIMIZE, False)
        param = param * decoupled_decay_factor
    else:
        grad = gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE, MAXIMIZE,
                                   HAS_WEIGHT_DECAY)

    exp_avg = exp_avg + one_minus_beta1 * (grad - exp_avg)
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * grad * grad
    if AMSGRAD:
        max_exp_avg_sqs = block_pointers(max_exp_avg_sq_ptr, offsets, ALIGNED, BLOCK)
        max_exp_avg_sq = tl.maximum(tl.load(max_exp_avg_sqs, mask=mask).to(tl.float32), exp_avg_sq)
        tl.store(max_exp_avg_sqs, max_exp_avg_sq.to(STATE_TYPE), mask=mask)
        second_moment = max_exp_avg_sq
    else:
        second_moment = exp_avg_sq
    denom = tl.sqrt(second_moment) * inv_bias_correction2_sqrt + eps
    param = param - step_size * (exp_avg / denom)

    tl.store(params, param.to(ELEMENT_TYPE), mask=mask)
    tl.store(exp_avgs, exp_avg.to(STATE_TYPE), mask=mask)
    tl.store(exp_avg_sqs, exp_avg_sq.to(STATE_TYPE), mask=mask)


@triton.jit
def _adam_step_kernel(
    tables_ptr, chunks_ptr, num_tensors, num_chunks,
    grad_scale_ptr, found_inf_ptr,
    lr, beta2, one_minus_beta1, one_minus_beta2,
    beta1_hi, beta1_lo, beta2_hi, beta2_lo,
    eps, weight_decay, decoupled_decay_factor,
    ELEMENT_TYPE: tl.constexpr, STATE_TYPE: tl.constexpr,
    DECOUPLED_WEIGHT_DECAY: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
    AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, ALIGNED: tl.constexpr,
    CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, found_inf_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, HAS_FOUND_INF)

    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    exp_avg_ptr = row_pointer(tables_ptr, ROW_EXP_AVG, num_tensors, tensor, STATE_TYPE)
    exp_avg_sq_ptr = row_pointer(tables_ptr, ROW_EXP_AVG_SQ, num_tensors, tensor, STATE_TYPE)
    max_exp_avg_sq_ptr = row_pointer(tables_ptr, ROW_MAX_EXP_AVG_SQ, num_tensors, tensor, STATE_TYPE)

    # Per-tensor scalars in fp64 (the counter was already bumped by advance_counters).
    step = tl.load(row_pointer(tables_ptr, ROW_STEP, num_tensors, tensor, tl.float32)).to(tl.float64)
    bias_correction1 = 1.0 - _pow_by_squaring(beta1_hi, beta1_lo, step)
    bias_correction2 = 1.0 - _pow_by_squaring(beta2_hi, beta2_lo, step)
    step_size = (lr / bias_correction1).to(tl.float32)
    inv_bias_correction2_sqrt = (1.0 / tl.sqrt(bias_correction2)).to(tl.float32)
    inv_grad_scale = inverse_grad_scale(grad_scale_ptr, HAS_GRAD_SCALE)

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _update_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr,
                      block_start + tl.arange(0, BLOCK), None,
                      step_size, inv_bias_correction2_sqrt, inv_grad_scale, beta2, one_minus_beta1,
                      one_minus_beta2, eps, weight_decay, decoupled_decay_factor,
                      ELEMENT_TYPE, STATE_TYPE, DECOUPLED_WEIGHT_DECAY, HAS_WEIGHT_DECAY, AMSGRAD,
                      MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _update_block(param_ptr, grad_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr,
                      offsets, offsets < chunk_end,
                      step_size, inv_bias_correction2_sqrt, inv_grad_scale, beta2, one_minus_beta1,
                      one_minus_beta2, eps, weight_decay, decoupled_decay_factor,
                      ELEMENT_TYPE, STATE_TYPE, DECOUPLED_WEIGHT_DECAY, HAS_WEIGHT_DECAY, AMSGRAD,
                      MAXIMIZE, HAS_GRAD_SCALE, ALIGNED, BLOCK)


def _split_double(value):
    """A Python float as an fp32 pair whose sum in fp64 is the original double."""
    hi = float(np.float32(value))
    return hi, value - hi


def adam_step(table, *, element_type, state_type, lr, beta1, beta2, eps, weight_decay,
              decoupled_weight_decay, amsgrad, maximize, grad_scale=None, found_inf=None):
    """Launch one Adam/AdamW step over every tensor of ``table`` (a multi_tensor.TensorTable
    with rows param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step). ``element_type`` and
    ``state_type`` are triton dtypes; ``grad_scale`` and ``found_inf`` are optional one-element
    fp32 tensors on the tensors' device (GradScaler's). Returns the number of launches."""
    advance_counters(table, ROW_STEP, found_inf, COUNT)
    flag_ptr = found_inf if found_inf is not None else table.tables
    if table.num_chunks == 0:
        return 1
    beta1_hi, beta1_lo = _split_double(beta1)
    beta2_hi, beta2_lo = _split_double(beta2)
    _adam_step_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks,
        grad_scale if grad_scale is not None else table.tables, flag_ptr,
        lr, beta2, 1.0 - beta1, 1.0 - beta2,
        beta1_hi, beta1_lo, beta2_hi, beta2_lo,
        eps, weight_decay, 1.0 - lr * weight_decay,
        ELEMENT_TYPE=element_type, STATE_TYPE=state_type,
        DECOUPLED_WEIGHT_DECAY=decoupled_weight_decay, HAS_WEIGHT_DECAY=weight_decay != 0,
        AMSGRAD=amsgrad, MAXIMIZE=maximize,
        HAS_GRAD_SCALE=grad_scale is not None, HAS_FOUND_INF=found_inf is not None,
        ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return 2
