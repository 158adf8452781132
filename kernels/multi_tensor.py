"""Pointer tables for multi-tensor kernels: the apex ``multi_tensor_apply`` idea in Triton.

A multi-tensor kernel touches every element of many tensors (a CNN has hundreds of small
parameter tensors) in a single launch. Instead of one pointer argument per tensor it receives:

* ``tables``: an int64 matrix of shape ``[rows, num_tensors]``; row ``r`` holds the addresses of
  the tensors of list ``r`` (params, grads, ...) and the last row holds their element counts.
  The kernel turns an address back into a typed pointer with ``.to(tl.pointer_type(dtype))``.
* ``chunks``: an int64 matrix of shape ``[2, num_chunks]`` mapping program ``i`` to the tensor it
  works on (row 0) and the first element of its chunk (row 1). Launch grid: ``(num_chunks,)``.

Building the tables costs a host loop over the tensors and one host-to-device copy from pinned
memory (no device synchronisation). The owner caches a table under ``table_key`` and rebuilds it
only when a tensor was reallocated (an address or a size changed).
"""
from dataclasses import dataclass

import numpy as np
import torch

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
