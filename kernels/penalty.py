"""The elastic-net penalty of many tensors, l1·Σ|p| + l2·Σp² over every element p of every tensor,
and its gradient g·(l1·sign(p) + 2·l2·p), each one multi-tensor launch per (device, dtype) bucket
(the apex ``multi_tensor_apply`` walk of ``multi_tensor.py``), plus one program that adds the
chunks' partials.

Each chunk's program writes its (Σ|p|, Σp²) in fp32 to its own slot; ``_penalty_total_kernel``
(one program) adds the slots in index order and applies l1 and l2: the same parameters give the
same bits on every run, with no atomics. sign(0) = 0, as torch's abs backward.

Bytes: the penalty reads every element once; its gradient reads it and writes its gradient once.
Launch grids: ``_penalty_partials_kernel`` and ``_penalty_grad_kernel`` one program per chunk of
each tensor (``table.num_chunks``); ``_penalty_total_kernel`` (1,).
"""
import triton
import triton.language as tl

from .multi_tensor import BLOCK, NUM_WARPS, block_pointers, program_chunk, row_pointer

ROW_PARAM, ROW_GRAD = tl.constexpr(0), tl.constexpr(1)
TOTAL_BLOCK = 1024


@triton.jit
def _penalty_partials_kernel(tables_ptr, chunks_ptr, num_tensors, num_chunks, partials_ptr, partial_offset,
                             partials_stride, ELEMENT_TYPE: tl.constexpr, ALIGNED: tl.constexpr,
                             CHUNK_SIZE: tl.constexpr, BLOCK: tl.constexpr):
    # The element counts are the table's last row: row 1 for the penalty's table of one list.
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, tables_ptr,
                                                   1, CHUNK_SIZE, False)
    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    absolute = tl.zeros((BLOCK,), tl.float32)
    squares = tl.zeros((BLOCK,), tl.float32)
    # Full blocks carry no mask, so the compiler can vectorise them; the tail block is masked.
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        p = tl.load(block_pointers(param_ptr, block_start + tl.arange(0, BLOCK), ALIGNED, BLOCK)).to(tl.float32)
        absolute += tl.abs(p)
        squares += p * p
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        p = tl.load(param_ptr + offsets, mask=offsets < chunk_end, other=0.0).to(tl.float32)
        absolute += tl.abs(p)
        squares += p * p
    slot = partials_ptr + partial_offset + tl.program_id(0)
    tl.store(slot, tl.sum(absolute, axis=0))
    tl.store(slot + partials_stride, tl.sum(squares, axis=0))


@triton.jit
def _penalty_total_kernel(partials_ptr, num_partials, out_ptr, l1, l2, BLOCK: tl.constexpr):
    """One program: l1·Σ|p| + l2·Σp² from the chunks' partials, added in index order."""
    absolute = tl.zeros((BLOCK,), tl.float32)
    squares = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, num_partials, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        absolute += tl.load(partials_ptr + offsets, mask=offsets < num_partials, other=0.0)
        squares += tl.load(partials_ptr + num_partials + offsets, mask=offsets < num_partials, other=0.0)
    total = l1 * tl.sum(absolute, axis=0) + l2 * tl.sum(squares, axis=0)
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


@triton.jit
def _penalty_grad_kernel(tables_ptr, chunks_ptr, num_tensors, num_chunks, grad_out_ptr, l1, l2,
                         ELEMENT_TYPE: tl.constexpr, ALIGNED: tl.constexpr, CHUNK_SIZE: tl.constexpr,
                         BLOCK: tl.constexpr):
    """grad = g · (l1·sign(p) + 2·l2·p) for every element of every tensor (rows: param, grad)."""
    tensor, chunk_start, chunk_end = program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, tables_ptr,
                                                   2, CHUNK_SIZE, False)
    param_ptr = row_pointer(tables_ptr, ROW_PARAM, num_tensors, tensor, ELEMENT_TYPE)
    grad_ptr = row_pointer(tables_ptr, ROW_GRAD, num_tensors, tensor, ELEMENT_TYPE)
    g = tl.load(grad_out_ptr).to(tl.float32)
    l1_term = g * l1
    l2_term = g * 2.0 * l2
    full_end = chunk_start + (chunk_end - chunk_start) // BLOCK * BLOCK
    for block_start in range(chunk_start, full_end, BLOCK):
        _grad_block(param_ptr, grad_ptr, block_start + tl.arange(0, BLOCK), None, l1_term, l2_term, ELEMENT_TYPE,
                    ALIGNED, BLOCK)
    if full_end < chunk_end:
        offsets = full_end + tl.arange(0, BLOCK)
        _grad_block(param_ptr, grad_ptr, offsets, offsets < chunk_end, l1_term, l2_term, ELEMENT_TYPE, ALIGNED, BLOCK)


@triton.jit
def _grad_block(param_ptr, grad_ptr, offsets, mask, l1_term, l2_term, ELEMENT_TYPE: tl.constexpr,
                ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """One block of gradients; ``mask`` None for a full block, so that it vectorises."""
    p = tl.load(block_pointers(param_ptr, offsets, ALIGNED, BLOCK), mask=mask).to(tl.float32)
    sign = tl.where(p > 0.0, 1.0, 0.0) - tl.where(p < 0.0, 1.0, 0.0)
    tl.store(block_pointers(grad_ptr, offsets, ALIGNED, BLOCK), (l1_term * sign + l2_term * p).to(ELEMENT_TYPE),
             mask=mask)


def chunk_sums(table, partials, offset, *, element_type):
    """Each chunk's (Σ|p|, Σp²) of the tensors of ``table`` (one row: the tensors) into columns
    ``offset ..`` of ``partials`` (fp32 [2, n]). Returns the launches."""
    if table.num_chunks == 0:
        return 0
    _penalty_partials_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks, partials, offset, partials.stride(0),
        ELEMENT_TYPE=element_type, ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return 1


def total(partials, out, l1, l2):
    """``out`` (0-d) = l1·Σ|p| + l2·Σp² of all ``partials`` (fp32 [2, n], contiguous). Returns 1."""
    _penalty_total_kernel[(1,)](partials, partials.shape[1], out, float(l1), float(l2), BLOCK=TOTAL_BLOCK)
    return 1


def grad(table, grad_out, l1, l2, *, element_type):
    """The gradients (table rows: params, their gradients) of g·penalty, g = ``grad_out`` (0-d)."""
    if table.num_chunks == 0:
        return 0
    _penalty_grad_kernel[(table.num_chunks,)](
        table.tables, table.chunks, table.num_tensors, table.num_chunks, grad_out, float(l1), float(l2),
        ELEMENT_TYPE=element_type, ALIGNED=table.aligned, CHUNK_SIZE=table.chunk_size, BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return 1
