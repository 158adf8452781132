"""The residual add: ``fastcnn.add(input, other)`` (= ``input + other``) over ``kernels/add.py``,
for the adds ``fastcnn.convert`` finds no batch norm to fuse into: the checks, the byte count,
the operator ``fastcnn::add`` and its autograd (the gradient passes to both inputs unchanged, so
the backward launches nothing) and the functional.

The kernel takes two tensors of one shape, dtype and dense layout (what a block's two branches
produce); anything else (broadcasting, type promotion, differing layouts, Python numbers) is
torch's own add, which computes the same thing.
"""
import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import is_dense
from ..dtypes import KERNEL_DTYPES

__all__ = ["add"]

OP = "add"


def _kernels():
    """kernels/add.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import add

    return add


# ----------------------------------------------------------------------------- checks
def kernel_takes(input, other):
    """Whether the kernel computes ``input + other``: two tensors of one shape, dtype (a kernel
    dtype or float64), device and dense layout."""
    return (isinstance(input, torch.Tensor) and isinstance(other, torch.Tensor) and input.shape == other.shape
            and input.dtype == other.dtype and input.dtype in KERNEL_DTYPES + (torch.float64,)
            and input.device == other.device and input.stride() == other.stride() and is_dense(input))


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Forward reads both inputs and writes the sum; the backward moves nothing (the output
    gradient is both inputs' gradient)."""
    return 3 * numel * element_size


# ----------------------------------------------------------------------------- operators and autograd
@torch.library.custom_op("fastcnn::add", mutates_args=())
def _add_op(input: Tensor, other: Tensor) -> Tensor:
    """input + other for tensors of one shape, dtype and dense layout; the output laid out alike."""
    out = torch.empty_like(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::add"):
            _backend.record_launch(OP, _kernels().add(input, other, out))
    return out


@_add_op.register_fake
def _(input, other):
    return torch.empty_like(input)


def _backward(ctx, grad_out):
    return grad_out, grad_out


_add_op.register_autograd(_backward)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_add_op, "residual add")
def _add_launches(out, input, other):
    return [one_pass("_add_kernel", [input, other], [out])] if input.numel() else []


# ----------------------------------------------------------------------------- functional
def add(input, other):
    """``input + other``: fastcnn's kernel for two tensors of one shape, dtype and dense layout (a
    residual block's branches), torch's add for anything else (broadcasting, promotion, numbers)."""
    if not kernel_takes(input, other) or _backend.backend_for(input.device) == _backend.FALLBACK:
        return input + other
    return _add_op(input, other)
