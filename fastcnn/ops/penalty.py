"""The elastic-net penalty, ``fastcnn.penalty(parameters, l1=0.0, l2=0.0)`` = l1·Σ|p| + l2·Σp² over
every element of every tensor, over ``kernels/penalty.py``: the L1, L2 or elastic-net
regularisation term users add to a loss, in one multi-tensor launch (per dtype) and a
fixed-order sum instead of a Python loop of small kernels; differentiable, its backward one
multi-tensor launch that writes every tensor's gradient g·(l1·sign(p) + 2·l2·p).

Everything of the penalty on the PyTorch side lives here, in this order: checks, cost, operators
with autograd, and the functional.
"""
import functools
import numbers

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import is_dense
from ..dtypes import KERNEL_DTYPES, triton_dtype

__all__ = ["penalty"]

OP = "penalty"


def _kernels():
    """(kernels/penalty.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import multi_tensor, penalty

    return penalty, multi_tensor


# ----------------------------------------------------------------------------- checks
def check_penalty(op, tensors, l1, l2):
    for name, value in (("l1", l1), ("l2", l2)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{op}: {name} must be a real number, not {type(value).__name__}")
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: parameters[{index}] must be a Tensor, not {type(tensor).__name__}")
        if tensor.layout != torch.strided:
            raise RuntimeError(f"{op}: parameters[{index}] has layout {tensor.layout}; only strided tensors are "
                               "supported")
        if tensor.dtype not in KERNEL_DTYPES:
            raise TypeError(f"{op}: parameters[{index}] of dtype {tensor.dtype} is not supported by fastcnn's kernels "
                            f"(fastcnn takes {', '.join(str(d) for d in KERNEL_DTYPES)})")
        if tensor.device != tensors[0].device:
            raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two "
                               f"devices, {tensors[0].device} and {tensor.device}!")


def penalty_dtype(tensors):
    """The dtype of Σ l1·|p| + l2·p² written in torch: the tensors' dtypes promoted."""
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward=True):
    """The penalty reads every element once; its gradient reads it and writes its gradient."""
    return numel * element_size * (3 if backward else 1)


# ----------------------------------------------------------------------------- operators and autograd
def _by_dtype(*lists):
    """{dtype: the lists restricted to the tensors of that dtype}, in order of first appearance."""
    groups = {}
    for position, tensor in enumerate(lists[0]):
        group = groups.setdefault(tensor.dtype, tuple([] for _ in lists))
        for column, values in zip(group, lists):
            column.append(values[position])
    return groups


@torch.library.custom_op("fastcnn::penalty", mutates_args=())
def _penalty_op(tensors: list[Tensor], l1: float, l2: float) -> Tensor:
    """l1·Σ|p| + l2·Σp² of dense ``tensors`` on one device, in their promoted dtype."""
    penalty_kernels, multi_tensor = _kernels()
    device = tensors[0].device
    tables = [(multi_tensor.cached_table(group, device), triton_dtype(dtype))
              for dtype, group in _by_dtype(tensors).items()]
    chunks = sum(table.num_chunks for table, _ in tables)
    partials = torch.empty((2, chunks), dtype=torch.float32, device=device)
    out = torch.empty((), dtype=penalty_dtype(tensors), device=device)
    launches, offset = 0, 0
    with torch.profiler.record_function("fastcnn::penalty"):
        for table, element_type in tables:
            launches += penalty_kernels.chunk_sums(table, partials, offset, element_type=element_type)
            offset += table.num_chunks
        launches += penalty_kernels.total(partials, out, l1, l2)
    _backend.record_launch(OP, launches)
    return out


@_penalty_op.register_fake
def _(tensors, l1, l2):
    return torch.empty((), dtype=penalty_dtype(tensors), device=tensors[0].device)


@torch.library.custom_op("fastcnn::penalty_backward", mutates_args=())
def _penalty_backward_op(grad_out: Tensor, tensors: list[Tensor], l1: float, l2: float) -> list[Tensor]:
    """Every tensor's gradient, g·(l1·sign(p) + 2·l2·p), laid out as the tensor."""
    penalty_kernels, multi_tensor = _kernels()
    grads = [torch.empty_like(t) for t in tensors]
    launches = 0
    with torch.profiler.record_function("fastcnn::penalty backward"):
        for dtype, (params, outs) in _by_dtype(tensors, grads).items():
            # The gradients are new tensors each step: a table of their own, not cached.
            table = multi_tensor.build_table((params, outs), [p.numel() for p in params], multi_tensor.CHUNK_SIZE,
                                             tensors[0].device)
            launches += penalty_kernels.grad(table, grad_out, l1, l2, element_type=triton_dtype(dtype))
    _backend.record_launch(OP, launches)
    return grads


@_penalty_backward_op.register_fake
def _(grad_out, tensors, l1, l2):
    return [torch.empty_like(t) for t in tensors]


def _setup_context(ctx, inputs, output):
    tensors, l1, l2 = inputs
    ctx.save_for_backward(*tensors)
    ctx.l1, ctx.l2 = l1, l2


def _backward(ctx, grad_out):
    return _penalty_backward_op(grad_out, list(ctx.saved_tensors), ctx.l1, ctx.l2), None, None


_penalty_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_penalty_op, "optimizer")
def _penalty_launches(out, tensors, l1, l2):
    groups = [group for (group,) in _by_dtype(tensors).values() if any(t.numel() for t in group)]
    return [one_pass("_penalty_partials_kernel", group, []) for group in groups] + [
        one_pass("_penalty_total_kernel", [], [out])]


@launches_of(_penalty_backward_op, "optimizer")
def _penalty_backward_launches(grads, grad_out, tensors, l1, l2):
    return [one_pass("_penalty_grad_kernel", params, outs) for params, outs in _by_dtype(tensors, grads).values()
            if any(t.numel() for t in params)]


# ----------------------------------------------------------------------------- functional
def penalty(parameters, l1=0.0, l2=0.0):
    """l1·Σ|p| + l2·Σp² over every element of ``parameters`` (a tensor or an iterable of them, as
    ``model.parameters()``): add it to the loss for L1 (lasso), L2 or elastic-net regularisation.
    One multi-tensor launch per dtype and a fixed-order fp32 sum (deterministic); differentiable,
    its backward one multi-tensor launch (sign(0) = 0, as torch's abs). An empty iterable gives 0."""
    op = "fastcnn.penalty"
    tensors = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    check_penalty(op, tensors, l1, l2)
    if not tensors:
        return torch.zeros(())
    device = tensors[0].device
    if _backend.backend_for(device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, device)
        return sum(l1 * t.abs().sum() + l2 * t.square().sum() for t in tensors)
    # The kernels walk each tensor as a flat run: a strided view is read from a (differentiable) copy.
    return _penalty_op([t if is_dense(t) else t.contiguous() for t in tensors], float(l1), float(l2))
