"""Pointer tables for multi-tensor kernels: the apex ``multi_tensor_apply`` idea in Triton.

A multi-tensor kernel touches every element of many tensors (a CNN has hundreds of small
parameter tensors) in a single launch. Instead of one pointer argument per tensor it receives:

* ``tables``: an int64 matrix of shape ``[rows, num_tensors]``; row ``r`` holds the addresses of
  the tensors of list ``r`` (params, grads, ...) and the last row holds their element counts.
  The kernel turns an address back into a typed pointer with ``.to(tl.pointer_type(dtype))``.
* ``chunks``: an int64 matrix of shape ``[2, num_chunks]`` mapping program ``i`` to the tensor it
  works on (row 0) and the first element of its chunk (row 1). Launch grid: ``(num_chunks,)``.

Building the tables costs a host loop over the tensors and one host-to-device copy from pinned
memory (no device synchronisation). ``cached_table`` keeps recent tables under ``table_key`` and
rebuilds one only when a tensor was reallocated (an address or a size changed).

The Triton helpers below are what every multi-tensor kernel (the optimizers in ``adam.py``,
``sgd.py``, ``rmsprop.py``, ``adagrad.py``, ``adadelta.py``, and ``clip_grad.py``) shares: a
program's chunk, typed pointers out of the table, aligned blocks, the gradient prologue of an
optimizer step, and ``_advance_counters_kernel``, which bumps per-tensor step counters on the
device (one program per ``COUNTER_BLOCK`` tensors).
"""
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from .tiles import by_backend

# Every multi-tensor kernel's work split. Compiled: a 16K-element chunk per program keeps >1000
# programs in flight for a ResNet-50-sized parameter set, walked in BLOCKs of 1024 by 4 warps (8
# elements of 16 bits or 4 of 32 per thread: one 128-bit access each). Interpreted: the
# interpreter pays per program, not per element.
CHUNK_SIZE = by_backend(interpreter=4096, gpu=16384)
BLOCK = 1024
NUM_WARPS = 4

# 16-byte alignment lets the compiler emit 128-bit vector loads; it cannot prove it for an
# address read from memory, so the launch helper passes it as a hint when it holds.
VECTOR_ALIGNMENT_BYTES = 16


@dataclass(frozen=True)
class TensorTable:
    key: tuple
    tables: torch.Tensor  # int64 [rows + 1, num_tensors] on the tensors' device
    chunks: torch.Tensor  # int64 [2, num_chunks] on the tensors' device
    num_tensors: int
    num_chunks: int
    chunk_size: int
    aligned: bool


def table_key(tensor_lists, numels):
    """Everything the tables encode: a table is stale exactly when this key changes."""
    return tuple(tuple(t.data_ptr() for t in tensors) for tensors in tensor_lists) + (tuple(numels),)


def build_table(tensor_lists, numels, chunk_size, device, key=None):
    """Tables for ``tensor_lists`` (lists of equal length; element counts ``numels``)."""
    if key is None:
        key = table_key(tensor_lists, numels)
    num_tensors = len(numels)
    addresses = np.array(key[:-1], dtype=np.int64).reshape(len(tensor_lists), num_tensors)
    counts = np.array(numels, dtype=np.int64)
    tables = np.concatenate([addresses, counts[None, :]], axis=0)

    chunks_per_tensor = -(-counts // chunk_size)
    chunk_tensor = np.repeat(np.arange(num_tensors, dtype=np.int64), chunks_per_tensor)
    first_chunk = np.cumsum(chunks_per_tensor) - chunks_per_tensor
    chunk_start = (np.arange(chunk_tensor.size, dtype=np.int64) - first_chunk[chunk_tensor]) * chunk_size
    chunks = np.stack([chunk_tensor, chunk_start])

    aligned = bool(np.all(addresses % VECTOR_ALIGNMENT_BYTES == 0))
    return TensorTable(
        key=key,
        tables=_to_device(tables, device),
        chunks=_to_device(chunks, device),
        num_tensors=num_tensors,
        num_chunks=int(chunk_tensor.size),
        chunk_size=chunk_size,
        aligned=aligned,
    )


def _to_device(array, device):
    host = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return host
    # Pinned staging buffers come from torch's caching host allocator, which keeps each one
    # alive until its asynchronous copy has finished: no host sync, no use-after-free.
    return host.pin_memory().to(device, non_blocking=True)


# Tables of recent launches, keyed by what they encode (addresses and sizes): a model's tensors
# keep their addresses from step to step, so a table is built once and reused.
_TABLES = {}
_MAX_TABLES = 64


def cached_table(tensor_lists, device, chunk_size=CHUNK_SIZE):
    """The table of ``tensor_lists`` (the first list's element counts), built on first use."""
    numels = [t.numel() for t in tensor_lists[0]]
    key = table_key(tensor_lists, numels) + (chunk_size,)
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        table = _TABLES[key] = build_table(tensor_lists, numels, chunk_size, device, key=key[:-1])
    return table


# ------------------------------------------------------------------------------------------------
# Triton helpers of every multi-tensor kernel

@triton.jit
def program_chunk(tables_ptr, chunks_ptr, num_tensors, num_chunks, found_inf_ptr,
                  ROW_NUMEL: tl.constexpr, CHUNK_SIZE: tl.constexpr, HAS_FOUND_INF: tl.constexpr):
    """(tensor, chunk_start, chunk_end) of this program. With ``HAS_FOUND_INF`` the chunk is empty
    when GradScaler found inf/NaN: its contract is that such a step changes nothing."""
    pid = tl.program_id(0)
    tensor = tl.load(chunks_ptr + pid)
    chunk_start = tl.load(chunks_ptr + num_chunks + pid)  # int64: tensors may hold >= 2**31 elements
    numel = tl.load(tables_ptr + ROW_NUMEL * num_tensors + tensor)
    chunk_end = tl.minimum(chunk_start + CHUNK_SIZE, numel)
    if HAS_FOUND_INF:
        chunk_end = tl.where(tl.load(found_inf_ptr) != 0, chunk_start, chunk_end)
    return tensor, chunk_start, chunk_end


@triton.jit
def row_pointer(tables_ptr, row, num_tensors, tensor, DTYPE: tl.constexpr):
    """The address in row ``row`` of the table, for ``tensor``, as a pointer to ``DTYPE``."""
    address = tl.load(tables_ptr + row * num_tensors + tensor)
    return address.to(tl.pointer_type(DTYPE))


@triton.jit
def block_pointers(base, offsets, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """Pointers to ``BLOCK`` consecutive elements. With ``ALIGNED`` the compiler is told that they
    are contiguous and start 16-byte aligned (an address loaded from memory proves neither), so it
    emits 128-bit loads and stores."""
    pointers = base + offsets
    if ALIGNED:
        pointers = tl.max_contiguous(tl.multiple_of(pointers, 16), BLOCK)
    return pointers


@triton.jit
def inverse_grad_scale(grad_scale_ptr, HAS_GRAD_SCALE: tl.constexpr):
    """1 / GradScaler's scale (1 without one), read on the device: no host sync."""
    inverse = 1.0
    if HAS_GRAD_SCALE:
        inverse = 1.0 / tl.load(grad_scale_ptr).to(tl.float32)
    return inverse


@triton.jit
def gradient_step_input(grad, param, inv_grad_scale, weight_decay, HAS_GRAD_SCALE: tl.constexpr,
                        MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr):
    """The gradient an optimizer's rule sees, in torch's order: unscaled (GradScaler), negated
    (maximize), then L2 weight decay ``g + weight_decay * p`` (fp32)."""
    if HAS_GRAD_SCALE:
        grad = grad * inv_grad_scale
    if MAXIMIZE:
        grad = -grad
    if HAS_WEIGHT_DECAY:
        grad = grad + weight_decay * param
    return grad


COUNTER_BLOCK = 128
# What _advance_counters_kernel does to each counter: COUNT adds one (a step counter; zero when
# GradScaler found inf/NaN), CLEAR sets it to zero unless the step was skipped (a first-step flag).
COUNT, CLEAR = tl.constexpr(0), tl.constexpr(1)


@triton.jit
def _advance_counters_kernel(tables_ptr, row, num_tensors, found_inf_ptr, MODE: tl.constexpr,
                             HAS_FOUND_INF: tl.constexpr, COUNTER_BLOCK: tl.constexpr):
    tensors = tl.program_id(0) * COUNTER_BLOCK + tl.arange(0, COUNTER_BLOCK)
    in_range = tensors < num_tensors
    addresses = tl.load(tables_ptr + row * num_tensors + tensors, mask=in_range, other=0)
    counter_ptrs = addresses.to(tl.pointer_type(tl.float32))
    skipped = 0.0
    if HAS_FOUND_INF:
        skipped = tl.where(tl.load(found_inf_ptr) != 0, 1.0, 0.0)
    counters = tl.load(counter_ptrs, mask=in_range, other=0.0)
    if MODE == COUNT:
        counters = counters + (1.0 - skipped)
    else:
        counters = counters * skipped
    tl.store(counter_ptrs, counters, mask=in_range)


def advance_counters(table, row, found_inf, mode):
    """One launch over the fp32 scalars in ``row`` of ``table`` (see COUNT and CLEAR); separate
    from the update because every chunk of a tensor reads its counter. Returns 1 (launches)."""
    _advance_counters_kernel[(triton.cdiv(table.num_tensors, COUNTER_BLOCK),)](
        table.tables, row, table.num_tensors, found_inf if found_inf is not None else table.tables,
        MODE=mode, HAS_FOUND_INF=found_inf is not None, COUNTER_BLOCK=COUNTER_BLOCK,
    )
    return 1
