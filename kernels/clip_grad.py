"""Gradient clipping over many tensors: the total norm (a deterministic multi-tensor reduction),
then the scaling, or the element-wise clamp.

``clip_grad_norm_``'s total norm of order p over every element x of every gradient:

    ||g||_p   = (sum |x|^p)^(1/p)         p finite, != 0
    ||g||_inf = max |x|,  ||g||_-inf = min |x|,  ||g||_0 = count(x != 0)

For p > 0 the sum is accumulated scaled, as LAPACK's nrm2 does: each chunk keeps its largest
finite |x| (m) and s = sum (|x| / m)^p, and the merge rescales, so gradients of 1e30 (whose
squares overflow fp32) or 1e-30 (whose squares underflow) still give their norm, m * s^(1/p).
An inf makes the norm inf and a NaN makes it NaN, as in torch. Then, with c = max_norm /
(norm + 1e-6) clamped at 1 (torch's rule), every gradient is multiplied by c; a gradient is only
written when c != 1 (x * 1 == x exactly), so a step that needs no clipping reads and writes
nothing more.

``clip_grad_value_``: x = min(max(x, -v), v), NaN kept (torch.clamp's rule; v < 0 gives v).

Bytes moved per element: the norm reads each gradient once (1 x element size); the scaling reads
and writes it (2 x element size, skipped when c == 1); the clamp reads and writes it.

Launch grid: ``_partial_norms_kernel`` and ``_scale_kernel`` have one program per ``chunk_size``
elements of each tensor (see ``multi_tensor.py``), one launch per (device, dtype) bucket; each
partial-norm program writes its chunk's (m, s, nonfinite) triple to its own slot, and
``_total_norm_kernel`` (one program) merges the slots in a fixed order: the same gradients give
the same bits on every run, with no atomics.
"""
import triton
import triton.language as tl

from .multi_tensor import BLOCK, NUM_WARPS, block_pointers, program_chunk, row_pointer

ROW_GRAD, ROW_NUMEL = tl.constexpr(0), tl.constexpr(1)

# The norm kinds: POWER (finite p != 0; scaled for p > 0), INF, NEG_INF, ZERO (count of nonzeros).
POWER, INF, NEG_INF, ZERO = (tl.constexpr(kind) for kind in range(4))
# Rows of the partials buffer [3, chunks]: the chunk's m, its s and its nonfinite code.
PARTIAL_ROWS = 3
# (Globals read inside @triton.jit must be tl.constexpr for the compiler.)
FINITE, HAS_INF, HAS_NAN = tl.constexpr(0.0), tl.constexpr(1.0), tl.constexpr(2.0)
# torch's clip_grad_norm_ adds this to the norm before dividing max_norm by it.
NORM_EPS = tl.constexpr(1e-6)
# fp32's smallest normal number: the floor of a scale before taking its reciprocal.
SMALLEST_NORMAL = tl.constexpr(1.1754943508222875e-38)

TOTAL_BLOCK = 1024


def norm_constexprs(norm_type):
    """The kernels' compile-time view of torch's ``norm_type`` (a float): its KIND, SCALED (a
    positive finite p: the sum is scaled), POWER_IS_ONE and POWER_IS_TWO."""
    if norm_type == float("inf"):
        kind = INF
    elif norm_type == float("-inf"):
        kind = NEG_INF
    elif norm_type == 0:
        kind = ZERO
    else:
        kind = POWER
    return dict(KIND=kind, SCALED=kind == POWER and norm_type > 0, POWER_IS_ONE=norm_type == 1,
                POWER_IS_TWO=norm_type == 2)


@triton.jit
def _power(ratio, power, POWER_IS_ONE: tl.constexpr, POWER_IS_TWO: tl.constexpr):
    """ratio**power for ratio >= 0 and power > 0: exact for p = 1 and 2, exp2(p log2 r) otherwise."""
    if POWER_IS_ONE:
        return ratio
    elif POWER_IS_TWO:
        return ratio * ratio
    else:
        # 0**p = 0 for p > 0 (the where keeps log2(0) out of the interpreter's way).
        return tl.where(ratio > 0.0, tl.exp2(power * tl.log2(tl.where(ratio > 0.0, ratio, 1.0))), 0.0)


@triton.jit
def _accumulate(grad_ptr, offsets, mask, largest, scaled_sum, plain_sum, power,
                KIND: tl.constexpr, SCALED: tl.constexpr, POWER_IS_ONE: tl.constexpr,
                POWER_IS_TWO: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One block merged lane by lane into the chunk's vectors: ``largest`` (max |x| for INF, min |x|
    for NEG_INF; for POWER the chunk's scale m, a scalar), ``scaled_sum`` and ``plain_sum`` =
    sum |x|, which is NaN exactly when a NaN was seen (the |x| are >= 0, so infs alone never make
    it NaN). ``mask`` is None for a full block, so that its load vectorises."""
    value = tl.abs(tl.load(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32))
    if mask is not None:
        # Lanes past the end contribute nothing: 0 to sums and maxima, inf to minima and to the
        # p < 0 sum (inf**p = 0). (``other=`` would need a mask on full blocks too.)
        if KIND == NEG_INF or (KIND == POWER and not SCALED):
            value = tl.where(mask, value, float("inf"))
        else:
            value = tl.where(mask, value, 0.0)
    plain_sum += value
    if KIND == INF:
        largest = tl.maximum(largest, value)
    elif KIND == NEG_INF:
        largest = tl.minimum(largest, value)
    elif KIND == ZERO:
        scaled_sum += tl.where(value != 0.0, 1.0, 0.0)
    elif SCALED:
        # One scale m for the whole chunk, raised when a block holds a larger |x| (rare after the
        # first blocks; the branch is uniform across the program): per element only a multiply
        # and a fused multiply-add, no division. m starts at fp32's smallest normal, so 1 / m is
        # finite and the ratios stay <= 1. An inf makes m inf and the sums NaN, which the merge
        # overrides (the norm is then inf).
        block_largest = tl.max(value, axis=0)
        if block_largest > largest:
            scaled_sum = scaled_sum * _power(largest / block_largest, power, POWER_IS_ONE, POWER_IS_TWO)
            largest = block_largest
        scaled_sum += _power(value * (1.0 / largest), power, POWER_IS_ONE, POWER_IS_TWO)
    else:
        # p < 0: |x|^p only grows as |x| shrinks (0 gives inf and the norm 0), so nothing to scale.
        scaled_sum += tl.where(value > 0.0, _power(tl.where(value > 0.0, value, 1.0), power, POWER_IS_ONE,
                                                   POWER_IS_TWO), float("inf"))
    return largest, scaled_sum, plain_sum


@triton.jit
def _partial_norms_kernel(
    tables_ptr, chunks_ptr, num_tensors, num_chunks, partials_ptr, partial_offset, tensor_offset, partials_stride,
    power,
    ELEMENT_TYPE: tl.constexpr, KIND: tl.constexpr, SCALED: tl.constexpr, POWER_IS_ONE: tl.constexpr,
    POWER_IS_TWO: tl.constexpr, ALIGNED: tl.constexpr, CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, tables_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, False)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    if KIND == NEG_INF:
        largest = tl.full((BLOCK,), float("inf"), tl.float32)
    elif SCALED:
        largest = tl.full((), SMALLEST_NORMAL, tl.float32)
    else:
        largest = tl.zeros((BLOCK,), tl.float32)
    scaled_sum = tl.zeros((BLOCK,), tl.float32)
    plain_sum = tl.zeros((BLOCK,), tl.float32)

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        largest, scaled_sum, plain_sum = _accumulate(
            grad_ptr, block_start + tl.arange(0, BLOCK), None, largest, scaled_sum, plain_sum, power,
            KIND, SCALED, POWER_IS_ONE, POWER_IS_TWO, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        largest, scaled_sum, plain_sum = _accumulate(
            grad_ptr, offsets, offsets < chunk_end, largest, scaled_sum, plain_sum, power,
            KIND, SCALED, POWER_IS_ONE, POWER_IS_TWO, ALIGNED, BLOCK)

    # The chunk's lanes merged, in a fixed order (a tree reduction of the program's own lanes).
    if KIND == NEG_INF:
        chunk_largest = tl.min(largest, axis=0)
    elif SCALED:
        chunk_largest = largest
    else:
        chunk_largest = tl.max(largest, axis=0)
    chunk_sum = tl.sum(scaled_sum, axis=0)
    total_abs = tl.sum(plain_sum, axis=0)
    nonfinite = tl.where(total_abs != total_abs, HAS_NAN, FINITE)
    if SCALED:
        nonfinite = tl.where((nonfinite == FINITE) & (chunk_largest == float("inf")), HAS_INF, nonfinite)
    slot = partials_ptr + partial_offset + tl.program_id(0)
    tl.store(slot, chunk_largest)
    if KIND == ZERO:
        # torch's 0-"norm" of the gradients is the number of *tensors* with a nonzero element (the
        # 0-norm of the per-tensor norms): one slot per tensor, set by any of its chunks. A max
        # is order-independent, so the atomic keeps the result deterministic.
        tl.atomic_max(partials_ptr + partials_stride + tensor_offset + tensor, tl.where(chunk_sum > 0.0, 1.0, 0.0))
    else:
        tl.store(slot + partials_stride, chunk_sum)
    tl.store(slot + 2 * partials_stride, nonfinite)


@triton.jit
def _total_norm_kernel(partials_ptr, num_partials, total_ptr, coefficient_ptr, max_norm, power, inverse_power,
                       KIND: tl.constexpr, SCALED: tl.constexpr, POWER_IS_ONE: tl.constexpr,
                       POWER_IS_TWO: tl.constexpr, TOTAL_TYPE: tl.constexpr, BLOCK: tl.constexpr):
    """One program: merges the chunks' partials in index order, then writes the norm (in the
    dtype torch returns) and the clip coefficient (fp32)."""
    nonfinite = tl.zeros((BLOCK,), tl.float32)
    largest = tl.zeros((BLOCK,), tl.float32)
    if KIND == NEG_INF:
        largest += float("inf")
    for start in range(0, num_partials, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        in_range = offsets < num_partials
        nonfinite = tl.maximum(nonfinite, tl.load(partials_ptr + 2 * num_partials + offsets, mask=in_range, other=0.0))
        if KIND == NEG_INF:
            largest = tl.minimum(largest, tl.load(partials_ptr + offsets, mask=in_range, other=float("inf")))
        else:
            largest = tl.maximum(largest, tl.load(partials_ptr + offsets, mask=in_range, other=0.0))
    code = tl.max(nonfinite, axis=0)
    if KIND == NEG_INF:
        total = tl.min(largest, axis=0)
    else:
        scale = tl.max(largest, axis=0)
        total = scale
        if KIND == POWER or KIND == ZERO:
            sums = tl.zeros((BLOCK,), tl.float32)
            inverse = 1.0 / tl.maximum(scale, SMALLEST_NORMAL)
            for start in range(0, num_partials, BLOCK):
                offsets = start + tl.arange(0, BLOCK)
                in_range = offsets < num_partials
                partial = tl.load(partials_ptr + num_partials + offsets, mask=in_range, other=0.0)
                if SCALED:
                    chunk_scale = tl.load(partials_ptr + offsets, mask=in_range, other=0.0)
                    partial = partial * _power(chunk_scale * inverse, power, POWER_IS_ONE, POWER_IS_TWO)
                sums += partial
            total = tl.sum(sums, axis=0)
            if KIND == POWER:
                if SCALED:
                    if POWER_IS_TWO:
                        root = tl.sqrt(total)
                    elif POWER_IS_ONE:
                        root = total
                    else:
                        root = _power(total, inverse_power, False, False)
                    total = tl.where(scale > 0.0, scale * root, 0.0)
                    total = tl.where(code == HAS_INF, float("inf"), total)
                else:
                    total = _power(total, inverse_power, False, False)
    if KIND != ZERO:
        total = tl.where(code == HAS_NAN, float("nan"), total)
    total = total.to(TOTAL_TYPE)
    tl.store(total_ptr, total)
    # torch's coefficient, computed from the norm as returned; where(c > 1) keeps a NaN.
    coefficient = max_norm / (total.to(tl.float32) + NORM_EPS)
    tl.store(coefficient_ptr, tl.where(coefficient > 1.0, 1.0, coefficient))


@triton.jit
def _scale_block(grad_ptr, offsets, mask, coefficient, clip_value, ELEMENT_TYPE: tl.constexpr,
                 CLAMP: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    pointers = block_pointers(grad_ptr, offsets, ALIGNED, BLOCK)
    grad = tl.load(pointers, mask=mask).to(tl.float32)
    if CLAMP:
        # Comparisons are false for NaN, so NaN stays; with v < 0 every element becomes v.
        grad = tl.where(grad < -clip_value, -clip_value, grad)
        grad = tl.where(grad > clip_value, clip_value, grad)
    else:
        grad = grad * coefficient
    tl.store(pointers, grad.to(ELEMENT_TYPE), mask=mask)


@triton.jit
def _scale_kernel(tables_ptr, chunks_ptr, num_tensors, num_chunks, coefficient_ptr, clip_value,
                  ELEMENT_TYPE: tl.constexpr, CLAMP: tl.constexpr, ALIGNED: tl.constexpr,
                  CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr):
    """x *= c (the clip coefficient, skipped when c == 1) or, with ``CLAMP``, x = clamp(x, -v, v)."""
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, tables_ptr,
                                                   ROW_NUMEL, CHUNK_SIZE, False)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    coefficient = 1.0
    if not CLAMP:
        coefficient = tl.load(coefficient_ptr)
        chunk_end = tl.where(coefficient != 1.0, chunk_end, chunk_start)  # NaN != 1: NaN is written

    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _scale_block(grad_ptr, block_start + tl.arange(0, BLOCK), None, coefficient, clip_value, ELEMENT_TYPE,
                     CLAMP, ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _scale_block(grad_ptr, offsets, offsets < chunk_end, coefficient, clip_value, ELEMENT_TYPE, CLAMP, ALIGNED,
                     BLOCK)


def partial_norms(table, partials, offset, tensor_offset, *, element_type, norm_type):
    """Each chunk's partial norm of the tensors of ``table`` (rows: grad) into columns
    ``offset ..`` of ``partials`` (fp32 [3, n]; for the 0-norm zero-filled, with a column per
    tensor from ``tensor_offset``). Returns the number of launches."""
    if table.num_chunks == 0:
        return 0
    constexprs = norm_constexprs(norm_type)
    _partial_norms_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks, partials, offset, tensor_offset,
        partials.stride(0), norm_type if constexprs["KIND"] == POWER else 1.0,
        ELEMENT_TYPE=element_type, ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK,
        num_warps=NUM_WARPS, **constexprs,
    )
    return 1


def total_norm(partials, total, coefficient, *, total_type, norm_type, max_norm):
    """The norm of all ``partials`` (fp32 [3, n], contiguous) into ``total`` (a scalar of the
    returned dtype, ``total_type`` in triton's terms) and the clip coefficient into
    ``coefficient`` (an fp32 scalar). Returns 1."""
    constexprs = norm_constexprs(norm_type)
    power = constexprs["KIND"] == POWER
    _total_norm_kernel[(1,)](
        partials, partials.shape[1], total, coefficient, max_norm,
        norm_type if power else 1.0, 1.0 / norm_type if power else 1.0,
        TOTAL_TYPE=total_type, BLOCK=TOTAL_BLOCK, **constexprs,
    )
    return 1


def scale(table, coefficient, *, element_type):
    """Multiply every tensor of ``table`` by the fp32 scalar ``coefficient`` (unless it is 1)."""
    return _scale(table, coefficient, 0.0, element_type, clamp=False)


def clamp(table, clip_value, *, element_type):
    """Clamp every tensor of ``table`` to [-clip_value, clip_value] (torch.clamp's rule)."""
    return _scale(table, table.tables, clip_value, element_type, clamp=True)


def _scale(table, coefficient, clip_value, element_type, clamp):
    if table.num_chunks == 0:
        return 0
    _scale_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks, coefficient, clip_value,
        ELEMENT_TYPE=element_type, CLAMP=clamp, ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return 1

