"""prelu: ``fastcnn.prelu(input, weight)`` (as ``torch.nn.functional.prelu``) over the kernels of
``kernels/prelu.py``: a learnable slope per channel (or one for all), forward one pass, backward
one pass that writes the input's gradient and sums the slope's in fp32 partials added in a fixed
order (deterministic).

Everything of prelu on the PyTorch side lives here, in this order: checks, cost, operators with
autograd, and the functional. The output has the input's layout, as torch's.
"""
import math

import torch
from torch import Tensor

from .. import _backend, _cost
from .._cost import Launch, launches_of, one_pass, restride, tensor_bytes
from .._layout import dense_copy, rows_view, with_strides
from ..dtypes import TORCH_FLOAT_DTYPES, aten_type_name
from ..validation import autocast_dtype, check_kernel_dtype, check_torch_implements

__all__ = ["prelu"]

OP = "prelu"


def _kernels():
    """kernels/prelu.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import prelu

    return prelu


# ----------------------------------------------------------------------------- checks
def check_prelu(op, input, weight):
    """F.prelu's checks, in torch's order and words; returns the number of channels."""
    for position, (name, tensor) in enumerate((("input", input), ("weight", weight)), start=1):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: prelu(): argument '{name}' (position {position}) must be Tensor, not "
                            f"{type(tensor).__name__}")
    if weight.dim() > 1:
        raise RuntimeError(f"{op}: prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = "
                           f"{weight.dim()}")
    channels = input.shape[1] if input.dim() >= 2 else 1
    if weight.numel() != 1 and weight.numel() != channels:
        raise RuntimeError(f"{op}: Mismatch of parameter numbers and input channel size. Found parameter numbers = "
                           f"{weight.numel()} and channel size = {channels}.")
    if weight.dtype != input.dtype:
        raise RuntimeError(f"{op}: prelu: Type promoting not supported. Got {aten_type_name(input.dtype)} and "
                           f"{aten_type_name(weight.dtype)}")
    if weight.device != input.device:
        raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two devices, "
                           f"{input.device} and {weight.device}!")
    check_torch_implements(op, "prelu_cpu", input.dtype, TORCH_FLOAT_DTYPES)
    check_kernel_dtype(op, input)
    return channels


def autocast_operand(tensor, cast):
    """``tensor`` as torch's autocast hands it to a lower-precision op: floating tensors other than
    float64 cast to ``cast``, the others as they are."""
    return tensor.to(cast) if tensor.is_floating_point() and tensor.dtype != torch.float64 else tensor


def autocast_slope(slope, output):
    """(``slope`` as torch's autocast hands prelu its weight after an op whose result is typed as
    ``output``, whether a kernel that fuses the PReLU into that op computes what torch would).
    Outside autocast (slope, True); inside it, prelu runs in the autocast dtype: when ``output``
    is already in it, the slopes cast to it and True; else (slope, False), since torch's prelu
    would cast that output down: the caller runs ``prelu`` after the op, which casts as torch does."""
    cast = autocast_dtype(output.device.type, output)
    if cast is None:
        return slope, True
    return (autocast_operand(slope, cast), True) if output.dtype == cast else (slope, False)


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Forward reads x and writes y; backward reads dy and x and writes dx (the slopes aside)."""
    return numel * element_size * (3 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
@torch.library.custom_op("fastcnn::prelu", mutates_args=())
def _prelu_op(input: Tensor, slope: Tensor) -> Tensor:
    """prelu of an [N, C, S] input whose planes are single runs, ``slope`` C values."""
    out = torch.empty_like(input)
    if out.numel():
        with torch.profiler.record_function("fastcnn::prelu"):
            _backend.record_launch(OP, _kernels().forward(input, slope, out))
    return out


@_prelu_op.register_fake
def _(input, slope):
    return torch.empty_like(input)


def _empty_gradients(input, slope):
    return torch.empty_like(input), torch.empty(slope.shape, dtype=slope.dtype, device=slope.device)


@torch.library.custom_op("fastcnn::prelu_backward", mutates_args=())
def _prelu_backward_op(grad_out: Tensor, input: Tensor, slope: Tensor) -> tuple[Tensor, Tensor]:
    """(the input's gradient, the slopes' per channel)."""
    grad_out = with_strides(grad_out, input.stride())
    grad_input, grad_slope = _empty_gradients(input, slope)
    if grad_input.numel():
        with torch.profiler.record_function("fastcnn::prelu backward"):
            _backend.record_launch(OP, _kernels().backward(grad_out, input, slope, grad_input, grad_slope))
    else:
        grad_slope.zero_()
    return grad_input, grad_slope


@_prelu_backward_op.register_fake
def _(grad_out, input, slope):
    return _empty_gradients(input, slope)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out):
    input, slope = ctx.saved_tensors
    return _prelu_backward_op(grad_out, input, slope)


_prelu_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_prelu_op, "activation")
def _prelu_launches(out, input, slope):
    return [one_pass("_prelu_forward_kernel", [input, slope], [out])] if out.numel() else []


@launches_of(_prelu_backward_op, "activation")
def _prelu_backward_launches(outputs, grad_out, input, slope):
    grad_input, grad_slope = outputs
    if not grad_input.numel():
        return []
    images, channels, plane = input.shape
    _, slices = _kernels().backward_slices(images, channels, plane, input.stride(1), input.device, _cost.target_sms())
    rows = slices * images
    copies = restride(grad_out, input.stride())
    if rows == 1:
        return copies + [one_pass("_prelu_backward_kernel", [grad_out, input, slope], [grad_input, grad_slope])]
    partial_bytes = rows * channels * 4
    read = sum(map(tensor_bytes, (grad_out, input, slope)))
    return copies + [Launch("_prelu_backward_kernel", read, tensor_bytes(grad_input) + partial_bytes,
                            workspace=partial_bytes),
                     Launch("_sum_slices_kernel", partial_bytes, tensor_bytes(grad_slope))]


# ----------------------------------------------------------------------------- functional
def prelu(input, weight):
    """``torch.nn.functional.prelu``: ``input`` where it is > 0, ``weight[c] * input`` elsewhere,
    ``weight`` one slope or one per channel (dim 1 of ``input``; none below 2 dims). Both are
    differentiable; the slope's gradient is summed deterministically. Under ``torch.autocast`` both
    run in the autocast dtype, as F.prelu's do (one of autocast's lower-precision ops)."""
    op = "fastcnn.prelu"
    if isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor):
        cast = autocast_dtype(input.device.type, input)
        if cast is not None:
            with torch.autocast(input.device.type, enabled=False):
                return prelu(*(autocast_operand(t, cast) for t in (input, weight)))
    channels = check_prelu(op, input, weight)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.prelu(input, weight)
    rows_shape = ((input.shape[0], channels, math.prod(input.shape[2:])) if input.dim() >= 2
                  else (1, 1, input.numel()))
    dense = input if rows_view(input) is not None or input.dim() < 2 else dense_copy(input)
    if input.dim() >= 2 and rows_view(dense) is None:  # a dense layout whose planes are not one run
        dense = input.contiguous()
    rows = dense.reshape(rows_shape)
    slope = weight.reshape(-1).expand(channels)  # one slope: stride 0 (autograd sums its C gradients)
    return _prelu_op(rows, slope).view(dense.shape)
