"""Layer norm with an optional fused activation: ``fastcnn.layer_norm`` (= act(F.layer_norm)) and
``fastcnn.layer_norm2d`` (torchvision's ConvNeXt ``LayerNorm2d``: F.layer_norm over the channels
of an (N, C, ...) tensor, which torchvision computes as permute, layer_norm, permute), over
``kernels/layer_norm.py``: torch's checks in its order and words, the byte count, the operators and
autograd and the functionals.

Both are one operator, ``fastcnn::layer_norm`` (output and per-row statistics), whose backward
is ``fastcnn::layer_norm_backward``. The input is read through its strides as [A, B, L] (see the
kernel file), so neither a permuted NHWC view nor LayerNorm2d's channel axis is ever copied. The
output is laid out as torch's: contiguous (layer_norm), channels-last order (layer_norm2d, as
torchvision's permute back leaves it). Saved for backward: the input and two floats per row.
"""
import math
from typing import Optional

import torch
from torch import Tensor

from .. import _backend, _cost
from .._cost import launches_of, one_pass
from .._layout import view_or_none
from .._norms import norm_parameter_grads
from ..dtypes import TORCH_FLOAT_DTYPES, autocast_runs_in_float32
from ..validation import check_index_range, check_kernel_dtype, check_parameter_dtypes, check_torch_implements
from .activation import apply_activation, resolve_fused_activation
from .prelu import autocast_slope, check_prelu, prelu

__all__ = ["layer_norm", "layer_norm2d"]

OP = "layer_norm"


def _kernels():
    """kernels/layer_norm.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import layer_norm

    return layer_norm


# ----------------------------------------------------------------------------- checks
def normalized_shape_of(op, normalized_shape):
    """``normalized_shape`` as a tuple of ints: a tuple, list or torch.Size of ints, as
    F.layer_norm's binding accepts it (an int alone is its TypeError, in its words)."""
    if not isinstance(normalized_shape, (tuple, list, torch.Size)):
        raise TypeError(f"{op}: argument 'normalized_shape' must be tuple of ints, not "
                        f"{type(normalized_shape).__name__}")
    for position, size in enumerate(normalized_shape):
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"{op}: argument 'normalized_shape' must be tuple of ints, but found element of type "
                            f"{type(size).__name__} at pos {position}")
    return tuple(normalized_shape)


def check_layer_norm(op, input, normalized_shape, weight, bias):
    """torch's _check_layer_norm_inputs, in its order, then the dtype and mixed dtypes."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if not normalized_shape:
        raise RuntimeError(f"{op}: Expected normalized_shape to be at least 1-dimensional, i.e., containing at least "
                           f"one element, but got normalized_shape = []")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
        if tuple(tensor.shape) != normalized_shape:
            raise RuntimeError(f"{op}: Expected {name} to be of same shape as normalized_shape, but got {name} of "
                               f"shape {list(tensor.shape)} and normalized_shape = {list(normalized_shape)}")
    count = len(normalized_shape)
    if input.dim() < count or tuple(input.shape[input.dim() - count:]) != normalized_shape:
        raise RuntimeError(f"{op}: Given normalized_shape={list(normalized_shape)}, expected input with shape "
                           f"[*, {', '.join(str(size) for size in normalized_shape)}], but got input of size"
                           f"{list(input.shape)}")
    check_torch_implements(op, "LayerNormKernelImpl", input.dtype, TORCH_FLOAT_DTYPES)
    check_parameter_dtypes(op, input, {"weight": weight, "bias": bias})
    check_kernel_dtype(op, input)
    check_index_range(op, rows=math.prod(input.shape[:input.dim() - count]), normalized_values=math.prod(normalized_shape))


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Forward reads x and writes y; backward reads x and dy and writes dx."""
    return numel * element_size * (5 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
def _moved(tensor, channels_first):
    """The tensor with its normalised axes last: LayerNorm2d's channel axis moved to the end (a view)."""
    return tensor.movedim(1, -1) if channels_first else tensor


def _rows(tensor, normalized_ndim, split=None):
    """(``tensor`` viewed as [A, B, L], split) with L the last ``normalized_ndim`` dims and A, B the
    leading dims before and after ``split`` (the first split whose strides allow a view when not
    given), or (None, None) when no view exists."""
    lead = tensor.shape[:tensor.dim() - normalized_ndim]
    length = math.prod(tensor.shape[tensor.dim() - normalized_ndim:])
    for candidate in ([split] if split is not None else range(len(lead) + 1)):
        view = view_or_none(tensor, (math.prod(lead[:candidate]), math.prod(lead[candidate:]), length))
        if view is not None:
            return view, candidate
    return None, None


def _output(input, normalized_ndim, channels_first):
    """Torch's output layout: contiguous, in the moved order for LayerNorm2d."""
    moved = _moved(input, channels_first)
    out = torch.empty(moved.shape, dtype=input.dtype, device=input.device)
    return out.movedim(-1, 1) if channels_first else out


def _num_rows(input, normalized_ndim):
    return math.prod(input.shape[:input.dim() - normalized_ndim]) if normalized_ndim <= input.dim() else 0


def _flat(parameter):
    return None if parameter is None else parameter.reshape(-1)


@torch.library.custom_op("fastcnn::layer_norm", mutates_args=())
def _layer_norm_op(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], normalized_ndim: int,
                   channels_first: bool, eps: float, kind: Optional[str], parameter: float,
                   slope: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(act(layer_norm(input)), fp32 [2, rows] statistics (mean, rstd)); ``input``'s strides admit an [A, B, L]
    view (the functional makes sure); ``slope``: PReLU's slopes, one per normalised element (kind
    "prelu")."""
    out = _output(input, normalized_ndim, channels_first)
    stats = torch.empty((2, _num_rows(_moved(input, channels_first), normalized_ndim)), dtype=torch.float32,
                        device=input.device)
    if input.numel():
        x, split = _rows(_moved(input, channels_first), normalized_ndim)
        y, _ = _rows(_moved(out, channels_first), normalized_ndim, split)
        with torch.profiler.record_function("fastcnn::layer_norm forward"):
            _backend.record_launch(OP, _kernels().forward(x, y, stats, _flat(weight), _flat(bias), eps=eps, kind=kind,
                                                          parameter=parameter, slope=slope))
    return out, stats


@_layer_norm_op.register_fake
def _(input, weight, bias, normalized_ndim, channels_first, eps, kind, parameter, slope):
    return (_output(input, normalized_ndim, channels_first),
            input.new_empty((2, _num_rows(_moved(input, channels_first), normalized_ndim)), dtype=torch.float32))


@torch.library.custom_op("fastcnn::layer_norm_backward", mutates_args=())
def _backward_op(grad_out: Tensor, input: Tensor, stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                 normalized_ndim: int, channels_first: bool, kind: Optional[str], parameter: float,
                 slope: Optional[Tensor], output_mask: list[bool]) -> tuple[Tensor, Tensor]:
    """(grad_input laid out as the input, fp32 [2, L] (grad_bias, grad_weight) flat, [3, L] with
    PReLU's slopes' third); each empty when not asked for."""
    grad_input, sums = _empty_grads(input, normalized_ndim, channels_first, output_mask, slope)
    if input.numel():
        x, split = _rows(_moved(input, channels_first), normalized_ndim)
        dy, _ = _rows(_moved(grad_out, channels_first), normalized_ndim, split)
        if dy is None:  # a gradient whose strides do not split where the input's do: one copy
            dy, _ = _rows(_moved(grad_out, channels_first).contiguous(), normalized_ndim, split)
        dx = _rows(_moved(grad_input, channels_first), normalized_ndim, split)[0] if output_mask[0] else None
        with torch.profiler.record_function("fastcnn::layer_norm backward"):
            _backend.record_launch(OP, _kernels().backward(
                dy, x, dx, stats, _flat(weight), _flat(bias), sums if sums.numel() else None, kind=kind,
                parameter=parameter, slope=slope))
    else:
        sums.zero_()
    return grad_input, sums


def _empty_grads(input, normalized_ndim, channels_first, output_mask, slope=None):
    length = math.prod(_moved(input, channels_first).shape[input.dim() - normalized_ndim:])
    grad_input = torch.empty_like(input) if output_mask[0] else input.new_empty(0)
    sums = torch.empty((2 if slope is None else 3, length) if any(output_mask[1:]) else (0,), dtype=torch.float32,
                       device=input.device)
    return grad_input, sums


@_backward_op.register_fake
def _(grad_out, input, stats, weight, bias, normalized_ndim, channels_first, kind, parameter, slope, output_mask):
    return _empty_grads(input, normalized_ndim, channels_first, output_mask, slope)


def _setup_context(ctx, inputs, output):
    input, weight, bias, normalized_ndim, channels_first, eps, kind, parameter, slope = inputs
    ctx.save_for_backward(input, output[1], weight, bias, slope)
    ctx.mark_non_differentiable(output[1])
    ctx.options = (normalized_ndim, channels_first, kind, parameter)


def _backward(ctx, grad_out, grad_stats):
    grad_input, grad_weight, grad_bias, grad_slope = norm_parameter_grads(ctx, grad_out, _backward_op, (0, 1, 2, 8))
    return grad_input, grad_weight, grad_bias, None, None, None, None, None, grad_slope


_layer_norm_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
def _passes(x):
    """Passes a kernel makes over each row of ``x`` [A, B, L]: one when a row fits its tile, else
    two (the statistics, then the normalisation)."""
    return 1 if _kernels().tiles(x.shape[2], x.stride(2))[2] else 2


@launches_of(_layer_norm_op, "norm")
def _layer_norm_launches(outputs, input, weight, bias, normalized_ndim, channels_first, eps, kind, parameter, slope):
    if not input.numel():
        return []
    x, _ = _rows(_moved(input, channels_first), normalized_ndim)
    reads = [input] * _passes(x) + [weight, bias]
    return [one_pass("_forward_kernel", reads, outputs)]


@launches_of(_backward_op, "norm")
def _backward_launches(grads, grad_out, input, stats, weight, bias, normalized_ndim, channels_first, kind, parameter,
                       slope, output_mask):
    grad_input, sums = grads
    if not input.numel():
        return [one_pass("aten::zero_", [], [sums])] if sums.numel() else []
    x, split = _rows(_moved(input, channels_first), normalized_ndim)
    launches = []
    if _rows(_moved(grad_out, channels_first), normalized_ndim, split)[0] is None:
        launches.append(one_pass("aten::contiguous", [grad_out], [grad_out]))
    launches.append(one_pass("_backward_kernel", [grad_out, input] * _passes(x) + [stats, weight], grads))
    if sums.numel() and _kernels().backward_programs(x.shape[0] * x.shape[1], x.shape[2], x.stride(2), x.device,
                                                     _cost.target_sms()) > 1:
        launches.append(one_pass("_sum_slices_kernel", [], [sums]))
    return launches


# ----------------------------------------------------------------------------- functional
def _launch(op, input, weight, bias, normalized_ndim, channels_first, eps, kind, parameter, slope):
    """act(layer_norm(input)): PReLU's slopes ride in the kernel when they are one per normalised
    element, which is where torch's prelu puts its channels (dim 1) only for one slope, for
    LayerNorm2d (the channels are normalised) and for a 2-d input over its last dim; otherwise
    fastcnn's prelu runs after the norm (and raises torch's errors)."""
    slopes = None
    if slope is not None:
        # Unfused under autocast where torch's prelu casts the norm's output down, and where the
        # slopes do not lie along the normalised dims.
        slope, fusable = autocast_slope(slope, input)
        channels_normalised = channels_first or (input.dim() == 2 and normalized_ndim == 1)
        if not fusable or (slope.numel() != 1 and not channels_normalised):
            return prelu(_launch(op, input, weight, bias, normalized_ndim, channels_first, eps, None, 0.0, None), slope)
        check_prelu(op, input, slope)
        length = math.prod(_moved(input, channels_first).shape[input.dim() - normalized_ndim:])
        slopes = slope.reshape(-1).expand(length)  # one slope (stride 0), or the channels' = the normalised
    if _rows(_moved(input, channels_first), normalized_ndim)[0] is None:  # strides no [A, B, L] view takes
        input = input.contiguous()
    out, _ = _layer_norm_op(input, weight, bias, normalized_ndim, channels_first, float(eps), kind, float(parameter),
                            slopes)
    return out


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, activation=None):
    """``F.layer_norm`` followed by ``activation`` (see ``resolve_activation``; or an ``nn.PReLU``,
    whose slopes ride in the kernel when torch's prelu would read them along the normalised
    dims: one slope, or a 2-d input) in one pass forward and backward: each row normalised over the trailing ``normalized_shape`` dims, statistics in fp32
    (shifted by the row's first value), any strides (a permuted view is read as it lies)."""
    op = "fastcnn.layer_norm"
    if autocast_runs_in_float32(input, ("cuda",)):  # on CUDA, torch's autocast runs layer_norm in fp32
        slope = resolve_fused_activation(op, activation)[2]
        if slope is not None:  # and prelu in the autocast dtype, after it
            return prelu(layer_norm(input, normalized_shape, weight, bias, eps), slope)
        with torch.autocast("cuda", enabled=False):
            return layer_norm(input.float(), normalized_shape, weight, bias, eps, activation=activation)
    normalized_shape = normalized_shape_of(op, normalized_shape)
    kind, parameter, slope = resolve_fused_activation(op, activation)
    check_layer_norm(op, input, normalized_shape, weight, bias)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        out = torch.nn.functional.layer_norm(input, normalized_shape, weight, bias, eps)
        return apply_activation(out, kind, parameter, slope)
    return _launch(op, input, weight, bias, len(normalized_shape), False, eps, kind, parameter, slope)


def layer_norm2d(input, weight=None, bias=None, eps=1e-6, *, activation=None):
    """torchvision's ``LayerNorm2d`` (ConvNeXt's): ``F.layer_norm`` over dim 1 of an (N, C, ...)
    input, i.e. ``F.layer_norm(x.permute(0, 2, 3, 1), (C,)).permute(0, 3, 1, 2)`` for 4-d x,
    without the permutes: the kernel reads the channels through their stride. The output is
    laid out as that expression leaves it (channels last)."""
    op = "fastcnn.layer_norm2d"
    if autocast_runs_in_float32(input, ("cuda",)):  # on CUDA, torch's autocast runs layer_norm in fp32
        slope = resolve_fused_activation(op, activation)[2]
        if slope is not None:  # and prelu in the autocast dtype, after it
            return prelu(layer_norm2d(input, weight, bias, eps), slope)
        with torch.autocast("cuda", enabled=False):
            return layer_norm2d(input.float(), weight, bias, eps, activation=activation)
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() < 2:
        raise RuntimeError(f"{op}: expected input of shape (N, C, ...) with at least 2 dimensions, got "
                           f"{list(input.shape)}")
    kind, parameter, slope = resolve_fused_activation(op, activation)
    check_layer_norm(op, input.movedim(1, -1), (input.shape[1],), weight, bias)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        out = torch.nn.functional.layer_norm(input.movedim(1, -1), (input.shape[1],), weight, bias, eps).movedim(-1, 1)
        return apply_activation(out, kind, parameter, slope)
    return _launch(op, input, weight, bias, 1, True, eps, kind, parameter, slope)
