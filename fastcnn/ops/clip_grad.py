"""Gradient clipping, ``fastcnn.clip_grad_norm_`` and ``fastcnn.clip_grad_value_``, with
``torch.nn.utils``' arguments, semantics and return value, over ``kernels/clip_grad.py``: the
checks, the byte count, the operators (``torch.ops.fastcnn.grad_norm``, ``scale_grads_``,
``clamp_grads_``) and the functionals.

The norm is a multi-tensor reduction (one launch per (device, dtype) bucket, then one that merges
the chunks in a fixed order: deterministic, fp32, scaled so that neither huge nor tiny gradients
overflow), the scaling a second multi-tensor launch that reads the coefficient on the device: no
host sync, unless ``error_if_nonfinite=True`` asks for one (it must look at the norm).
"""
import functools
import math
import types
import warnings

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from ..dtypes import KERNEL_DTYPES, real_dtype, triton_dtype
from ..multi_tensor import flat_walkable

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _kernels():
    """(kernels/clip_grad.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import clip_grad, multi_tensor

    return clip_grad, multi_tensor


# ----------------------------------------------------------------------------- checks
def _gradients(op, parameters):
    """The grads of ``parameters`` (a tensor or an iterable of them) that are not None, checked."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    for grad in grads:
        if grad.is_sparse or grad.layout != torch.strided:
            raise RuntimeError(f"fastcnn.{op}: sparse gradients are not supported (got a {grad.layout} grad); "
                               f"use torch.nn.utils.{op} for them")
        if real_dtype(grad.dtype) not in KERNEL_DTYPES:
            raise TypeError(f"fastcnn.{op}: gradients of dtype {grad.dtype} are not supported by fastcnn's kernels "
                            f"(fastcnn takes {', '.join(str(d) for d in KERNEL_DTYPES)})")
    return grads


def _by_device(grads):
    """{device: (walkable grads, write_back pairs)}, devices in order of first appearance."""
    groups = {}
    for grad in grads:
        walkable, write_back = groups.setdefault(grad.device, ([], []))
        walkable.extend(flat_walkable([grad], write_back, read_only=()))
    return groups


def _norm_dtype(grads):
    """The dtype torch's total norm has: the per-tensor norms' (the grads' dtypes) promoted."""
    return functools.reduce(torch.promote_types, (grad.dtype for grad in grads))


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, clipped=True):
    """Bytes clip_grad_norm_ must move: read every gradient for the norm, then (when it clips)
    read and write it again; clip_grad_value_ reads and writes once (``clipped``)."""
    return numel * element_size * (3 if clipped else 1)


# ----------------------------------------------------------------------------- operators
def _tables(grads, multi_tensor):
    """One table per dtype of ``grads`` (all on one device): [(table, triton dtype)]."""
    by_dtype = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    return [(multi_tensor.cached_table((same,), same[0].device), triton_dtype(dtype))
            for dtype, same in by_dtype.items()]


@torch.library.custom_op("fastcnn::grad_norm", mutates_args=())
def _grad_norm_op(grads: list[Tensor], norm_type: float, max_norm: float) -> tuple[Tensor, Tensor]:
    """(the total norm of ``grads`` (one device, flat-walkable) in torch's dtype, the clip
    coefficient min(1, max_norm / (norm + 1e-6)) in fp32)."""
    clip_kernels, multi_tensor = _kernels()
    device = grads[0].device
    tables = _tables(grads, multi_tensor)
    num_chunks = sum(table.num_chunks for table, _ in tables)
    if norm_type == 0 or num_chunks == 0:
        # Zero-filled: the 0-norm's per-tensor slots, or one slot when every grad is empty.
        partials = torch.zeros((clip_kernels.PARTIAL_ROWS, max(num_chunks, len(grads), 1)), dtype=torch.float32,
                               device=device)
    else:
        partials = torch.empty((clip_kernels.PARTIAL_ROWS, num_chunks), dtype=torch.float32, device=device)
    total = torch.empty((), dtype=_norm_dtype(grads), device=device)
    coefficient = torch.empty((), dtype=torch.float32, device=device)
    launches, offset, tensor_offset = 0, 0, 0
    with torch.profiler.record_function("fastcnn::grad_norm"):
        for table, element_type in tables:
            launches += clip_kernels.partial_norms(table, partials, offset, tensor_offset, element_type=element_type,
                                                   norm_type=norm_type)
            offset += table.num_chunks
            tensor_offset += table.num_tensors
        launches += clip_kernels.total_norm(partials, total, coefficient, total_type=triton_dtype(total.dtype),
                                            norm_type=norm_type, max_norm=max_norm)
    _backend.record_launch("grad_norm", launches)
    return total, coefficient


@_grad_norm_op.register_fake
def _(grads, norm_type, max_norm):
    device = grads[0].device
    return (torch.empty((), dtype=_norm_dtype(grads), device=device),
            torch.empty((), dtype=torch.float32, device=device))


def _launch_per_dtype(name, grads, launch):
    """``launch(kernel module, table, element type)`` over each dtype's table of ``grads``, the
    launches recorded as ``name``."""
    clip_kernels, multi_tensor = _kernels()
    with torch.profiler.record_function(f"fastcnn::{name}"):
        for table, element_type in _tables(grads, multi_tensor):
            _backend.record_launch(name, launch(clip_kernels, table, element_type))


@torch.library.custom_op("fastcnn::scale_grads_", mutates_args=("grads",))
def _scale_grads_op(grads: list[Tensor], coefficient: Tensor) -> None:
    """grads *= coefficient (an fp32 scalar on their device), in place; nothing written where it is 1."""
    _launch_per_dtype("scale_grads", grads, lambda kernels, table, element_type: kernels.scale(
        table, coefficient, element_type=element_type))


@_scale_grads_op.register_fake
def _(grads, coefficient):
    return None


@torch.library.custom_op("fastcnn::clamp_grads_", mutates_args=("grads",))
def _clamp_grads_op(grads: list[Tensor], clip_value: float) -> None:
    """grads = clamp(grads, -clip_value, clip_value), in place."""
    _launch_per_dtype("clamp_grads", grads, lambda kernels, table, element_type: kernels.clamp(
        table, clip_value, element_type=element_type))


@_clamp_grads_op.register_fake
def _(grads, clip_value):
    return None


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
def _per_dtype(kernel, grads, written):
    """One launch of ``kernel`` per dtype of ``grads`` with any element (one table each)."""
    by_dtype = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    return [one_pass(kernel, same, same if written else []) for same in by_dtype.values()
            if any(grad.numel() for grad in same)]


@launches_of(_grad_norm_op, "optimizer")
def _grad_norm_launches(outputs, grads, norm_type, max_norm):
    partials = _per_dtype("_partial_norms_kernel", grads, written=False)
    fill = [one_pass("aten::zero_", [], [])] if norm_type == 0 or not partials else []
    return fill + partials + [one_pass("_total_norm_kernel", [], outputs)]


@launches_of(_scale_grads_op, "optimizer")
def _scale_grads_launches(_, grads, coefficient):
    return _per_dtype("_scale_kernel", grads, written=True)


@launches_of(_clamp_grads_op, "optimizer")
def _clamp_grads_launches(_, grads, clip_value):
    return _per_dtype("_scale_kernel", grads, written=True)


# ----------------------------------------------------------------------------- functionals
NONFINITE_MESSAGE = ("The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it "
                     "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
                     "anyway, set `error_if_nonfinite=False`")


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Clip the gradient norm of ``parameters`` (a tensor or an iterable of tensors) in place:
    torch.nn.utils.clip_grad_norm_'s arguments, semantics and return value, the total norm of
    all gradients as one vector (a 0-dim tensor: 0.0 on the CPU when no parameter has a grad).
    ``foreach`` is accepted for compatibility; the kernels are always multi-tensor. The norm is
    computed in fp32 and scaled (see kernels/clip_grad.py), so it stays finite where torch's
    fp32 sum of squares would overflow."""
    if not isinstance(parameters, torch.Tensor):
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    grads = _gradients("clip_grad_norm_", parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if (math.isinf(norm_type) or norm_type < 0) and any(grad.numel() == 0 for grad in grads):
        raise RuntimeError(f"fastcnn.clip_grad_norm_: cannot compute the {norm_type} norm of an empty gradient "
                           f"because the operation does not have an identity (as torch.linalg.vector_norm)")
    if not grads:
        return torch.tensor(0.0)
    # A complex gradient is scaled as its (real, imaginary) pairs; its norm is that of its
    # magnitudes |z| (torch's vector_norm of a complex tensor), which for the 2-norm is the norm
    # of the pairs themselves, and otherwise needs the magnitudes (a real temporary).
    groups = _by_device([torch.view_as_real(grad) if grad.is_complex() else grad for grad in grads])
    norm_groups = groups
    if any(grad.is_complex() for grad in grads) and norm_type != 2.0:
        norm_groups = _by_device([grad.abs() if grad.is_complex() else grad for grad in grads])
    if any(_backend.backend_for(device) == _backend.FALLBACK for device in groups):
        _backend.warn_fallback("clip_grad_norm_", next(iter(groups)))
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
    norms = {device: _grad_norm_op(walkable, norm_type, max_norm) for device, (walkable, _) in norm_groups.items()}
    first_device = grads[0].device
    if len(norms) == 1:
        total, coefficient = norms[first_device]
    else:  # gradients on several devices: their norms are combined where the first one lives
        device_norms = torch.stack([norm.to(first_device) for norm, _ in norms.values()])
        # (Each device's 0-"norm" already counts its tensors with a nonzero element: they add up.)
        total = device_norms.sum() if norm_type == 0 else torch.linalg.vector_norm(device_norms, norm_type)
        coefficient = torch.clamp(max_norm / (total.float() + 1e-6), max=1.0)
    if error_if_nonfinite and not torch.isfinite(total).item():
        raise RuntimeError(NONFINITE_MESSAGE.format(norm_type=norm_type))
    for device, (walkable, write_back) in groups.items():
        _scale_grads_op(walkable, coefficient.to(device))
        for destination, staged in write_back:
            destination.copy_(staged)
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp the gradients of ``parameters`` (a tensor or an iterable of tensors) to
    [-clip_value, clip_value] in place: torch.nn.utils.clip_grad_value_'s arguments and semantics
    (NaN stays NaN). ``foreach`` is accepted for compatibility."""
    if not isinstance(parameters, torch.Tensor):
        parameters = list(parameters)
    grads = _gradients("clip_grad_value_", parameters)
    clip_value = float(clip_value)
    groups = _by_device(grads)
    if any(_backend.backend_for(device) == _backend.FALLBACK for device in groups):
        _backend.warn_fallback("clip_grad_value_", next(iter(groups)))
        torch.nn.utils.clip_grad_value_(parameters, clip_value, foreach)
        return
    for walkable, write_back in groups.values():
        _clamp_grads_op(walkable, clip_value)
        for destination, staged in write_back:
            destination.copy_(staged)
