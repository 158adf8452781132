"""Elementwise sum of two tensors laid out alike, out = x + r: the residual add that no batch norm
took (EfficientNet's ``result += input`` after its stochastic depth, a U-Net block's ``x + h``).

Both inputs and the output share one dense layout, so they are walked as flat arrays in memory
order; the sum is computed in fp32 (fp64 for float64) and rounded once. Its gradient is the output
gradient itself for both inputs: no backward kernel.

Bytes: reads x and r, writes out (3 · numel · element size). Launch grid: (cdiv(numel, BLOCK),).
"""
import torch
import triton
import triton.language as tl

from .tiles import by_backend

BLOCK = by_backend(interpreter=1024, gpu=2048)
NUM_WARPS = 8


@triton.jit
def _add_kernel(x_ptr, r_ptr, out_ptr, numel, ACCUMULATOR: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACCUMULATOR)
    r = tl.load(r_ptr + offsets, mask=mask, other=0.0).to(ACCUMULATOR)
    tl.store(out_ptr + offsets, (x + r).to(out_ptr.dtype.element_ty), mask=mask)


def add(x, r, out):
    """out = x + r for dense tensors laid out alike (``out`` may be ``x``). One launch."""
    _add_kernel[(triton.cdiv(x.numel(), BLOCK),)](
        x, r, out, x.numel(), ACCUMULATOR=tl.float64 if x.dtype == torch.float64 else tl.float32, BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return 1
