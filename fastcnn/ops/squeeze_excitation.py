"""squeeze_excitation_gate: ``fastcnn.squeeze_excitation_gate(input, scale, activation=None)``,
``act(scale) * input`` for a per-(image, channel) ``scale`` of shape (N, C, 1, 1), over the
kernels of ``kernels/squeeze_excitation.py``: the gate that ends torchvision's
``SqueezeExcitation`` (EfficientNet, MobileNetV3, RegNetY), its activation (sigmoid,
hardsigmoid) fused, its backward one pass that writes the input's gradient and sums the scale's.

Everything of the gate on the PyTorch side lives here, in this order: checks, cost, operators
with autograd, and the functional. The output has the input's layout (NCHW or channels_last), as
torch's broadcast multiply gives it.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend, _cost
from .._cost import Launch, launches_of, one_pass, restride, tensor_bytes
from .._layout import dense_copy, rows_view, with_strides
from ..validation import check_kernel_dtype
from .activation import module_for, resolve_activation

__all__ = ["squeeze_excitation_gate"]

OP = "squeeze_excitation"


def _kernels():
    """kernels/squeeze_excitation.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import squeeze_excitation

    return squeeze_excitation


# ----------------------------------------------------------------------------- checks
def check_gate(op, input, scale):
    """Tensors, an (N, C, H, W) input (or unbatched (C, H, W)) and a scale that torch's broadcast
    multiply takes with it; returns whether the kernels compute it: a scale of one value per
    (image, channel), or broadcast along either, of the input's dtype (another dtype is torch's
    promoting multiply)."""
    for name, tensor in (("input", input), ("scale", scale)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
    try:
        shape = torch.broadcast_shapes(scale.shape, input.shape)
    except RuntimeError as error:
        raise RuntimeError(f"{op}: {error}") from None
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: expected a 4-d (N, C, H, W) or unbatched 3-d input, got {input.dim()}-d")
    gate_per_channel = (scale.dim() <= input.dim() and tuple(scale.shape[-2:]) in ((1, 1), ())
                        and scale.dim() >= input.dim() - 1)
    if scale.device != input.device:
        raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two devices, "
                           f"{input.device} and {scale.device}!")
    if tuple(shape) != tuple(input.shape) or not gate_per_channel or scale.dtype != input.dtype:
        return False
    check_kernel_dtype(op, input)
    return True


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Forward reads x and writes y; backward reads dy and x and writes dx (the gate aside)."""
    return numel * element_size * (3 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
@torch.library.custom_op("fastcnn::squeeze_excitation_gate", mutates_args=())
def _gate_op(input: Tensor, gate: Tensor, kind: Optional[str], parameter: float) -> Tensor:
    """input · act(gate[n, c]) for a 4-d input whose planes are dense, ``gate`` [N, C]."""
    out = torch.empty_like(input)
    if out.numel():
        with torch.profiler.record_function("fastcnn::squeeze_excitation_gate"):
            _backend.record_launch(OP, _kernels().forward(rows_view(input), gate, rows_view(out), kind=kind,
                                                          parameter=parameter))
    return out


@_gate_op.register_fake
def _(input, gate, kind, parameter):
    return torch.empty_like(input)


def _empty_gradients(input, gate):
    return torch.empty_like(input), torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)


@torch.library.custom_op("fastcnn::squeeze_excitation_gate_backward", mutates_args=())
def _gate_backward_op(grad_out: Tensor, input: Tensor, gate: Tensor, kind: Optional[str],
                      parameter: float) -> tuple[Tensor, Tensor]:
    """(grad_out · act(gate), act'(gate) · the sum of grad_out · input over each plane)."""
    grad_out = with_strides(grad_out, input.stride())
    grad_input, grad_gate = _empty_gradients(input, gate)
    if grad_input.numel():
        with torch.profiler.record_function("fastcnn::squeeze_excitation_gate backward"):
            _backend.record_launch(OP, _kernels().backward(rows_view(grad_out), rows_view(input), gate,
                                                           rows_view(grad_input), grad_gate, kind=kind,
                                                           parameter=parameter))
    else:
        grad_gate.zero_()
    return grad_input, grad_gate


@_gate_backward_op.register_fake
def _(grad_out, input, gate, kind, parameter):
    return _empty_gradients(input, gate)


def _setup_context(ctx, inputs, output):
    input, gate, kind, parameter = inputs
    ctx.save_for_backward(input, gate)
    ctx.options = (kind, parameter)


def _backward(ctx, grad_out):
    input, gate = ctx.saved_tensors
    grad_input, grad_gate = _gate_backward_op(grad_out, input, gate, *ctx.options)
    return grad_input, grad_gate, None, None


_gate_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_gate_op, "elementwise")
def _gate_launches(out, input, gate, kind, parameter):
    return [one_pass("_gate_forward_kernel", [input, gate], [out])] if out.numel() else []


@launches_of(_gate_backward_op, "elementwise")
def _gate_backward_launches(outputs, grad_out, input, gate, kind, parameter):
    grad_input, grad_gate = outputs
    if not grad_input.numel():
        return []
    images, channels = gate.shape
    _, slices = _kernels().backward_slices(images, channels, grad_input[0, 0].numel(), input.stride(1),
                                           input.device, _cost.target_sms())
    copies = restride(grad_out, input.stride())
    if slices == 1:
        return copies + [one_pass("_gate_backward_kernel", [grad_out, input, gate], [grad_input, grad_gate])]
    partial_bytes = slices * images * channels * 4
    read = sum(map(tensor_bytes, (grad_out, input, gate)))
    return copies + [Launch("_gate_backward_kernel", read, tensor_bytes(grad_input) + partial_bytes,
                            workspace=partial_bytes),
                     Launch("_gate_grad_kernel", partial_bytes + tensor_bytes(gate), tensor_bytes(grad_gate))]


# ----------------------------------------------------------------------------- functional
def squeeze_excitation_gate(input, scale, activation=None):
    """``act(scale) * input``: squeeze-excitation's gate, one value per (image, channel) of
    ``scale`` ((N, C, 1, 1), or (1, C, 1, 1) / (N, 1, 1, 1) broadcast; unbatched (C, H, W) input
    with a (C, 1, 1) scale) multiplying every pixel of that channel, with ``activation`` (anything
    ``fastcnn.batch_norm``'s ``activation=`` takes: "sigmoid", ``nn.Hardsigmoid()``, ...) applied
    to the scale first. Forward one pass over the input; backward one pass that writes the
    input's gradient and sums the scale's (deterministic). Any other broadcast, or a scale of
    another dtype (torch's promotion), is torch's own multiply."""
    op = "fastcnn.squeeze_excitation_gate"
    kind, parameter = resolve_activation(op, activation)
    computable = check_gate(op, input, scale)
    if computable and _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        computable = False
    if not computable:
        gate = module_for(kind, parameter)(scale) if kind is not None else scale
        return gate * input
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    if rows_view(batched) is None:  # planes that are not one run: torch's elementwise layout, dense
        batched = dense_copy(batched)
    images, channels = batched.shape[:2]
    # [N, C] as a view (stride 0 along a broadcast dimension), so autograd adds no ATen op of its own
    gate = (scale if input.dim() == 4 else scale.unsqueeze(0)).expand(images, channels, 1, 1).reshape(images, channels)
    out = _gate_op(batched, gate, kind, float(parameter))
    return out if input.dim() == 4 else out.squeeze(0)
