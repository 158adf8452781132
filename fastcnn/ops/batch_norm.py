"""Batch norm with an optional fused residual add and activation: ``fastcnn.batch_norm(...,
activation=None, residual=None)`` (= act(F.batch_norm(...) + residual)) and
``fastcnn.batch_norm_relu`` (its activation="relu" shorthand), over ``kernels/batch_norm.py``:
the argument checks (torch's, in torch's order), the byte count, the operators and autograd, the
functionals.

Registered as PyTorch operators so that ``torch.compile`` keeps them in its graph:
``fastcnn::batch_norm_statistics`` computes the per-channel statistics (mean and 1/std, what
torch saves, and four coefficients a prologue conv takes: kernels/prologue.py) and updates
the running statistics in place (the one mutation, declared in its schema), or
``fastcnn::batch_norm_statistics_from_moments`` the same from the moments the convolution that
wrote the input emitted (``moments=``, ops/conv2d.py), without a pass over it;
``fastcnn::batch_norm_apply`` normalises and applies the activation, with an autograd formula
whose backward is ``fastcnn::batch_norm_backward`` (the gradients of the input, the weight and
the bias in two passes). With a residual, ``fastcnn::batch_norm_residual_apply`` computes
act(bn(x) + r) in the same one pass; in training its backward is
``fastcnn::batch_norm_residual_grad_with_sums`` (g = act'(z)·dy, the gradient of r and of bn(x),
and its per-channel sums, in one pass), then ``fastcnn::batch_norm_backward_from_sums`` (x's, w's
and b's gradients from them); in eval ``fastcnn::batch_norm_residual_grad`` (g alone), then
``fastcnn::batch_norm_backward`` without activation.
The statistics are not differentiated through: the backward formula accounts for them
(see kernels/batch_norm.py).

Saved for backward: the input and six floats per channel (those statistics), from which the activation's
derivative is recomputed, so no pre-activation tensor is ever kept; with a residual, the output
too when the activation is relu, sigmoid or tanh (their torch backward takes the result; a ResNet
block's output is kept by the next block's first convolution anyway), nothing more without an
activation, else the residual (see ``_setup_residual_context``).
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import as_rows, empty_rows_like, rows_view
from .._norms import statistic_vectors
from ..dtypes import TORCH_FLOAT_DTYPES
from ..validation import check_kernel_dtype, check_parameter_dtypes, check_torch_implements
from .activation import (DERIVATIVE_FROM_OUTPUT, apply_activation, prelu_channel_slopes, resolve_activation,
                         resolve_fused_activation)
from .prelu import autocast_slope, prelu

__all__ = ["batch_norm", "batch_norm_add_batch_norm", "batch_norm_relu"]

OP = "batch_norm"


def _kernels():
    """kernels/batch_norm.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import batch_norm

    return batch_norm


# ----------------------------------------------------------------------------- checks
def check_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps, *,
                     per_process=True):
    """Validate F.batch_norm's arguments as torch does, in its order: the batch size and ``eps``
    (F.batch_norm's own checks), the dtype torch computes in, then the per-channel tensors (C
    elements each, the input's dtype or fp32 for fp16/bf16 input), running statistics required
    in eval. ``per_process`` False: the batch spans processes (SyncBatchNorm), so one value per
    channel here is no error."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() < 2 and input.numel():
        raise RuntimeError(f"{op}: expected input of shape (N, C, ...) with at least 2 dimensions, "
                           f"got {list(input.shape)}")
    for name, value in (("momentum", momentum), ("eps", eps)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{op}: argument '{name}' must be a float, not {type(value).__name__}")
    channels = input.shape[1] if input.dim() > 1 else 0
    if training and per_process and input.numel() // max(channels, 1) == 1:
        raise ValueError(f"{op}: Expected more than 1 value per channel when training, got input size {input.size()}")
    if training and eps <= 0.0:
        raise ValueError(f"{op}: batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"{op}: batch_norm eps must be non-negative, but got {eps}")
    check_torch_implements(op, "batch_norm", input.dtype, TORCH_FLOAT_DTYPES)
    per_channel = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, tensor in per_channel.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
        if tensor.numel() != channels:
            raise RuntimeError(f"{op}: {name} should contain {channels} elements not {tensor.numel()}")
    check_parameter_dtypes(op, input, per_channel)
    if not training and (running_mean is None or running_var is None):
        missing = "running_mean" if running_mean is None else "running_var"
        raise RuntimeError(f"{op}: {missing} must be defined in evaluation mode")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must either both be None or neither be None")
    check_kernel_dtype(op, input)


def check_residual(op, input, residual):
    """``residual`` is added to batch_norm's output before the activation: a tensor of the input's
    dtype and device whose shape broadcasts to the input's (the output keeps the input's shape,
    so a residual that would enlarge it is refused as ``out += residual`` refuses it)."""
    if residual is None:
        return
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"{op}: argument 'residual' must be a Tensor, not {type(residual).__name__}")
    if residual.dtype != input.dtype:
        raise TypeError(f"{op}: residual has dtype {residual.dtype} but input has dtype {input.dtype}; fastcnn adds "
                        f"them without type promotion, so they must match")
    if residual.device != input.device:
        raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found input on "
                           f"{input.device} and residual on {residual.device}")
    try:
        shape = torch.broadcast_shapes(input.shape, residual.shape)
    except RuntimeError:
        shape = None
    if shape != input.shape:
        raise RuntimeError(f"{op}: output with shape {list(input.shape)} doesn't match the broadcast shape of the "
                           f"residual {list(residual.shape)}")


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward, residual=False):
    """Bytes BN[+add]+act must move at the least: forward reads x (and r) and writes y; backward
    reads x, dy (and r) and writes dx (and dr); per-channel vectors are negligible."""
    forward = 3 if residual else 2
    return numel * element_size * (forward + ((5 if residual else 3) if backward else 0))


# ----------------------------------------------------------------------------- operators and autograd
def _empty_statistics(input):
    from ..kernels.prologue import STATISTICS_ROWS

    return torch.empty((STATISTICS_ROWS, input.shape[1]), dtype=torch.float32, device=input.device)


def input_prologue(stats, kind, parameter):
    """The ``kernels/prologue.py`` Prologue of act(batch_norm(x)) for a kernel that normalises x as
    it loads it (conv2d's, max-pool's): ``stats`` from ``batch_statistics`` (whose rows 2 to 5
    hold the batch norm's weight and bias in the form the kernels take)."""
    from ..kernels.prologue import Prologue

    return Prologue(stats, kind, parameter)


def _vector(tensor):
    """A per-channel tensor as the 1-d vector the kernels read through its stride (any C-element
    tensor torch accepts: a strided view, a (C, 1) buffer), or None."""
    return None if tensor is None else tensor.reshape(-1)


@torch.library.custom_op("fastcnn::batch_norm_statistics", mutates_args=("running_mean", "running_var"))
def _statistics_op(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                   weight: Optional[Tensor], bias: Optional[Tensor], training: bool, momentum: float,
                   eps: float) -> Tensor:
    """fp32 [STATISTICS_ROWS, C] (kernels/prologue.py): (mean, invstd) of the batch (training; the
    mean that of x - x[0, c, 0]) or the running statistics (eval), then the input prologue's
    coefficients from ``weight`` and ``bias``; in training the running statistics are updated in
    place."""
    stats = _empty_statistics(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm statistics"):
            _backend.record_launch(OP, _kernels().statistics(
                rows_view(input), stats, running_mean, running_var, _vector(weight), _vector(bias), training=training,
                momentum=momentum, eps=eps))
    return stats


@_statistics_op.register_fake
def _(input, running_mean, running_var, weight, bias, training, momentum, eps):
    return _empty_statistics(input)


@torch.library.custom_op("fastcnn::batch_norm_statistics_from_moments", mutates_args=("running_mean", "running_var"))
def _moments_statistics_op(input: Tensor, moments: Tensor, running_mean: Optional[Tensor],
                           running_var: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                           momentum: float, eps: float) -> Tensor:
    """``fastcnn::batch_norm_statistics`` in training, from the moments the convolution that wrote
    ``input`` emitted (kernels/moments.py) rather than from a pass over ``input``."""
    stats = _empty_statistics(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm statistics (from moments)"):
            _backend.record_launch(OP, _kernels().statistics_from_moments(
                rows_view(input), moments, stats, running_mean, running_var, _vector(weight), _vector(bias),
                momentum=momentum, eps=eps))
    return stats


@_moments_statistics_op.register_fake
def _(input, moments, running_mean, running_var, weight, bias, momentum, eps):
    return _empty_statistics(input)


def check_moments(op, input, moments):
    """``moments``: what a fastcnn convolution's moments epilogue wrote for ``input`` (fp32, one
    4 x C summary per 128 of its N·H·W pixels), else a ValueError."""
    from ..kernels.moments import MOMENT_FIELDS, moment_slots

    pixels = input.numel() // max(input.shape[1], 1)
    shape = (moment_slots(pixels), MOMENT_FIELDS, input.shape[1])
    if not isinstance(moments, torch.Tensor) or moments.dtype != torch.float32 or tuple(moments.shape) != shape \
            or not moments.is_contiguous() or moments.device != input.device:
        described = (f"{moments.dtype} {list(moments.shape)} on {moments.device}" if isinstance(moments, torch.Tensor)
                     else type(moments).__name__)
        raise ValueError(f"{op}: moments must be the contiguous float32 {list(shape)} tensor on {input.device} that "
                         f"a fastcnn convolution wrote with this input, got {described}")


def check_inside(op, input, running_mean, running_var, weight, bias, training, momentum, eps, activation):
    """The checks of a batch norm (+ ``activation``) that runs inside the op reading its output
    (a convolution's or a max-pool's prologue): batch norm's own, the activation's, and the 4-D
    input both take. Returns the activation's (kind, parameter)."""
    check_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps)
    kind, parameter = resolve_activation(op, activation)
    if input.dim() != 4:
        raise RuntimeError(f"{op}: expected 4D input (got {input.dim()}D input)")
    return kind, parameter


def prologue_statistics(op, input, running_mean, running_var, weight, bias, training, momentum, eps, moments):
    """(input, stats) for a kernel that normalises ``input`` as it loads it: the input itself, or
    one contiguous copy of a strided view whose spatial dims cannot be merged into rows; and
    ``batch_statistics`` of it."""
    if rows_view(input) is None:
        input = input.contiguous()
    return input, batch_statistics(op, input, running_mean, running_var, weight, bias, training, momentum, eps,
                                   moments)


def batch_statistics(op, input, running_mean, running_var, weight, bias, training, momentum, eps, moments=None):
    """fp32 [STATISTICS_ROWS, C] statistics of ``input`` for batch norm (the batch's in training,
    from ``moments`` when given, else the running ones) and the input prologue's coefficients
    from ``weight`` and ``bias`` (kernels/prologue.py), running statistics updated in training."""
    running, write_back = statistic_vectors((running_mean, running_var))
    affine = [t.detach() if isinstance(t, torch.Tensor) else t for t in (weight, bias)]
    if moments is not None and training:
        check_moments(op, input, moments)
        stats = _moments_statistics_op(input.detach(), moments, *running, *affine, float(momentum), float(eps))
    else:
        stats = _statistics_op(input.detach(), *running, *affine, bool(training), float(momentum), float(eps))
    for statistic, vector in write_back:
        statistic.copy_(vector.view(statistic.shape))
    return stats


@torch.library.custom_op("fastcnn::batch_norm_apply", mutates_args=())
def _apply_op(input: Tensor, stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], training: bool,
              kind: Optional[str], parameter: float, slope: Optional[Tensor]) -> Tensor:
    """act(batch_norm(input)) from the statistics, the weight and the bias; ``slope``: PReLU's C
    slopes (kind "prelu")."""
    return _apply(input, None, stats, weight, bias, training, kind, parameter, slope=slope)


def _apply(input, residual, stats, weight, bias, training, kind, parameter, residual_norm=None, slope=None):
    out = empty_rows_like(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm forward"):
            _backend.record_launch(OP, _kernels().apply(
                rows_view(input), None if residual is None else as_rows(residual), rows_view(out), stats,
                _vector(weight), _vector(bias), training=training, kind=kind, parameter=parameter,
                residual_norm=None if residual_norm is None else (residual_norm[0], *map(_vector, residual_norm[1:])),
                slope=slope))
    return out


@_apply_op.register_fake
def _(input, stats, weight, bias, training, kind, parameter, slope):
    return empty_rows_like(input)


@torch.library.custom_op("fastcnn::batch_norm_backward", mutates_args=())
def _backward_op(grad_out: Tensor, input: Tensor, stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                 training: bool, kind: Optional[str], parameter: float, slope: Optional[Tensor],
                 output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias, grad_slope) of act(batch_norm(input)), the activation's
    derivative at z recomputed from the input; the parameters' in their dtypes (summed in fp32),
    the slopes' (PReLU's, kind "prelu") per channel; each empty when its ``output_mask`` entry
    (input, weight, bias[, slope]) is False."""
    grads = _empty_grads(input, weight, bias, slope, output_mask)
    wanted = [grad if needed else None for grad, needed in zip(grads, _full_mask(output_mask))]
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm backward"):
            _backend.record_launch(OP, _kernels().backward(
                as_rows(grad_out), rows_view(input), None, None if wanted[0] is None else rows_view(wanted[0]), None,
                stats, _vector(weight), _vector(bias), wanted[1], wanted[2], training=training, kind=kind,
                parameter=parameter, slope=slope, grad_slope=wanted[3]))
    else:
        for grad in grads[1:]:
            grad.zero_()
    return grads


def _full_mask(output_mask):
    """(input, weight, bias, slope) from a mask of the first three or all four."""
    return [*output_mask, False][:4]


def _empty_grads(input, weight, bias, slope, output_mask):
    channels = input.shape[1]
    output_mask = _full_mask(output_mask)
    grad_input = empty_rows_like(input) if output_mask[0] else input.new_empty(0)
    grad_weight, grad_bias, grad_slope = (
        torch.empty(channels if needed else 0, dtype=torch.float32 if parameter is None else parameter.dtype,
                    device=input.device) for parameter, needed in zip((weight, bias, slope), output_mask[1:]))
    return grad_input, grad_weight, grad_bias, grad_slope


@_backward_op.register_fake
def _(grad_out, input, stats, weight, bias, training, kind, parameter, slope, output_mask):
    return _empty_grads(input, weight, bias, slope, output_mask)


@torch.library.custom_op("fastcnn::batch_norm_backward_from_sums", mutates_args=())
def _backward_from_sums_op(grad: Tensor, input: Tensor, partial_sums: Tensor, stats: Tensor, weight: Optional[Tensor],
                           bias: Optional[Tensor], training: bool,
                           output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``fastcnn::batch_norm_backward`` when ``grad`` is already g = act'·dy and ``partial_sums``
    hold the sums of g and g·x̂ (fp32 [slots, 2, C]), as the grad-input epilogue of the
    convolution that read act(batch_norm(input)) writes them (ops/conv2d.py): no pass over
    ``grad`` and ``input`` for the sums, only the apply. [slots, 3, C] sums (a PReLU's, from
    ``fastcnn::batch_norm_residual_grad_with_sums``) also give its slopes' gradient, per channel
    in fp32, when ``output_mask`` has a fourth entry asking for it."""
    grads = _empty_grads(input, weight, bias, None, output_mask)
    wanted = [grad if needed else None for grad, needed in zip(grads, _full_mask(output_mask))]
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm backward (from sums)"):
            _backend.record_launch(OP, _kernels().backward_from_sums(
                as_rows(grad), rows_view(input), None if wanted[0] is None else rows_view(wanted[0]), partial_sums,
                stats, _vector(weight), _vector(bias), wanted[1], wanted[2], training=training,
                grad_slope=wanted[3]))
    else:
        for grad in grads[1:]:
            grad.zero_()
    return grads


@_backward_from_sums_op.register_fake
def _(grad, input, partial_sums, stats, weight, bias, training, output_mask):
    return _empty_grads(input, weight, bias, None, output_mask)


def _setup_context(ctx, inputs, output):
    """Saved: the input and the statistics (the weight, the bias and PReLU's slopes are the
    parameters themselves: no memory of their own); the activation's derivative is recomputed
    from them."""
    input, stats, weight, bias, training, kind, parameter, slope = inputs
    ctx.save_for_backward(input, stats, weight, bias, slope)
    ctx.activation = (training, kind, parameter)


def _backward(ctx, grad_out):
    needs = ctx.needs_input_grad
    wanted = [needs[0], needs[2], needs[3], needs[7]]  # input, weight, bias, slopes
    input, stats, weight, bias, slope = ctx.saved_tensors
    grads = _backward_op(grad_out, input, stats, weight, bias, *ctx.activation, slope, wanted)
    grad_input, grad_weight, grad_bias, grad_slope = (grad if needed else None for grad, needed in zip(grads, wanted))
    return grad_input, None, grad_weight, grad_bias, None, None, None, grad_slope


_apply_op.register_autograd(_backward, setup_context=_setup_context)


# With a residual, act(bn(x) + r) is one kernel forward and one autograd node whose backward, in
# training, is two passes over the activation-sized tensors: ``fastcnn::batch_norm_residual_grad_with_sums``
# turns dy into g = act'(z)·dy (the gradient of r and of bn(x)) while it sums g and g·x̂ per
# channel, then ``fastcnn::batch_norm_backward_from_sums`` finishes the sums (the weight's and the
# bias's gradients) and applies them to g (x's). Torch's bn → add → act runs the sums as a pass of
# their own over g and x: one read of x more than it needs. The price is memory for the length of
# the node: dy, g and x's gradient live together (torch's two nodes hold two of them at a time).
# The residual may itself be a batch norm's input (``residual_stats``, a ResNet downsample's
# batch norm): z = bn(x) + bn_r(r), bn_r(r) never stored, its sums taken in the same pass.
@torch.library.custom_op("fastcnn::batch_norm_residual_apply", mutates_args=())
def _residual_apply_op(input: Tensor, stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                       residual: Tensor, residual_stats: Optional[Tensor], residual_weight: Optional[Tensor],
                       residual_bias: Optional[Tensor], training: bool, kind: Optional[str],
                       parameter: float, slope: Optional[Tensor]) -> Tensor:
    """act(batch_norm(input) + residual) (``residual`` shaped as the input); with
    ``residual_stats``, act(batch_norm(input) + batch_norm_r(residual)), the second norm's
    statistics and affine parameters those given (its activation's derivative must be one taken
    from the output, or there must be no activation). ``slope``: PReLU's C slopes (kind "prelu")."""
    normalized = residual_stats is not None
    if normalized and kind is not None and kind not in DERIVATIVE_FROM_OUTPUT:
        raise ValueError(f"fastcnn::batch_norm_residual_apply: a normalised residual takes no activation {kind!r}")
    return _apply(input, residual, stats, weight, bias, training, kind, parameter,
                  (residual_stats, residual_weight, residual_bias) if normalized else None, slope=slope)


@_residual_apply_op.register_fake
def _(input, stats, weight, bias, residual, residual_stats, residual_weight, residual_bias, training, kind,
      parameter, slope):
    return empty_rows_like(input)


@torch.library.custom_op("fastcnn::batch_norm_residual_grad", mutates_args=())
def _residual_grad_op(grad_out: Tensor, input: Optional[Tensor], residual: Optional[Tensor], output: Optional[Tensor],
                      stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], training: bool, kind: str,
                      parameter: float) -> Tensor:
    """g = act'(z)·grad_out for z = batch_norm(input) + residual, taken from ``output`` = act(z)
    when it is given, else recomputed from ``input`` and ``residual``."""
    like = output if output is not None else input
    grad = empty_rows_like(like)
    if like.numel():
        with torch.profiler.record_function("fastcnn::batch_norm residual backward"):
            _backend.record_launch(OP, _kernels().backward(
                as_rows(grad_out), rows_view(like), None if residual is None else as_rows(residual), None,
                rows_view(grad), stats, _vector(weight), _vector(bias), None, None, training=training, kind=kind,
                parameter=parameter, output=None if output is None else rows_view(output)))
    return grad


@_residual_grad_op.register_fake
def _(grad_out, input, residual, output, stats, weight, bias, training, kind, parameter):
    return empty_rows_like(output if output is not None else input)


def _empty_partial_sums(input, wanted=True, sums=2):
    slots = _kernels().backward_sum_slices(rows_view(input)) if wanted else 0
    return torch.empty((slots, sums, input.shape[1]), dtype=torch.float32, device=input.device)


@torch.library.custom_op("fastcnn::batch_norm_residual_grad_with_sums", mutates_args=())
def _residual_grad_with_sums_op(grad_out: Tensor, input: Tensor, residual: Optional[Tensor],
                                output: Optional[Tensor], stats: Tensor, weight: Optional[Tensor],
                                bias: Optional[Tensor], kind: str, parameter: float,
                                residual_stats: Optional[Tensor], slope: Optional[Tensor],
                                training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(g, the partial sums of g and g·x̂, fp32 [slices, 2, C] ([slices, 3, C] for a PReLU, kind
    "prelu" with slopes ``slope``: the third row its slopes' gradient), and with
    ``residual_stats`` those of g and g·r̂ for the batch norm whose input ``residual`` is, else an
    empty [0, 2, C]) in one pass, g = act'(z)·grad_out for z = batch_norm(input) + residual taken
    from ``output`` = act(z) when it is given, else recomputed from ``input`` and ``residual``;
    the sums are what ``fastcnn::batch_norm_backward_from_sums`` takes. In training; a PReLU's
    backward takes this pass in eval too (``training`` False: x̂ from the running statistics)."""
    grad = empty_rows_like(input)
    partial = _empty_partial_sums(input, sums=3 if kind == "prelu" else 2)
    residual_partial = _empty_partial_sums(input, residual_stats is not None)
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm residual backward (with sums)"):
            _backend.record_launch(OP, _kernels().grad_with_sums(
                as_rows(grad_out), rows_view(input), None if residual is None else as_rows(residual), rows_view(grad),
                partial, stats, _vector(weight), _vector(bias), kind=kind, parameter=parameter,
                output=None if output is None else rows_view(output),
                residual_norm=None if residual_stats is None else (residual_stats, residual_partial), slope=slope,
                training=training))
    return grad, partial, residual_partial


@_residual_grad_with_sums_op.register_fake
def _(grad_out, input, residual, output, stats, weight, bias, kind, parameter, residual_stats, slope, training):
    return (empty_rows_like(input), _empty_partial_sums(input, sums=3 if kind == "prelu" else 2),
            _empty_partial_sums(input, residual_stats is not None))


def _setup_residual_context(ctx, inputs, output):
    """Saved: the input and the statistics, and what act'(z) needs, as torch's bn → add → act keeps
    it: the output for an activation whose torch backward takes the result (relu, sigmoid, tanh;
    a ResNet block's output is kept by the next block's first convolution anyway), nothing more
    without an activation, else the residual; a normalised residual's input and statistics."""
    (input, stats, weight, bias, residual, residual_stats, residual_weight, residual_bias, training, kind,
     parameter, slope) = inputs
    ctx.activation = (training, kind, parameter)
    from_output = kind in DERIVATIVE_FROM_OUTPUT
    keep_residual = residual_stats is not None or (kind is not None and not from_output)
    ctx.save_for_backward(input, residual if keep_residual else None, output if from_output else None, stats, weight,
                          bias, residual_stats, residual_weight, residual_bias, slope)


def _residual_backward(ctx, grad_out):
    training, kind, parameter = ctx.activation
    (input, residual, output, stats, weight, bias, residual_stats, residual_weight, residual_bias,
     slope) = ctx.saved_tensors
    needs = ctx.needs_input_grad
    wanted = [needs[0], needs[2], needs[3], needs[11]]  # input, weight, bias, PReLU's slopes
    normalized = residual_stats is not None
    residual_wanted = [needs[4], needs[6], needs[7]] if normalized else [False] * 3
    # A PReLU (whose slopes' sums ride in the pass that writes g) takes this branch in eval too.
    if (training and kind is not None and (any(wanted) or any(residual_wanted))) or kind == "prelu":
        # One pass writes g = act'(z)·dy and both norms' sums of g and g·x̂; each norm finishes from its sums.
        grad, partial, residual_partial = _residual_grad_with_sums_op(
            grad_out, input, residual, output, stats, weight, bias, kind, parameter, residual_stats, slope, training)

        def norm_grads(x, sums, norm_stats, norm_weight, norm_bias, needed):
            return (_backward_from_sums_op(grad, x, sums, norm_stats, norm_weight, norm_bias, training, needed)
                    if any(needed) else None)
        grads = norm_grads(input, partial, stats, weight, bias, wanted)
        residual_grads = norm_grads(residual, residual_partial, residual_stats, residual_weight, residual_bias,
                                    residual_wanted)
    else:
        # g = dy without an activation, else one pass for it; each norm's backward then sums from g.
        grad = grad_out if kind is None else _residual_grad_op(
            grad_out, None if output is not None else input, None if normalized else residual, output, stats, weight,
            bias, training, kind, parameter)

        def norm_grads(x, norm_stats, norm_weight, norm_bias, needed):
            return (_backward_op(grad, x, norm_stats, norm_weight, norm_bias, training, None, 0.0, None, needed)
                    if any(needed) else None)
        grads = norm_grads(input, stats, weight, bias, wanted)
        residual_grads = norm_grads(residual, residual_stats, residual_weight, residual_bias, residual_wanted)
    grads = [None] * 4 if grads is None else [value if needed else None for value, needed in zip(grads, wanted)]
    if normalized:
        residual_grads = [None] * 3 if residual_grads is None else [
            value if needed else None for value, needed in zip(residual_grads, residual_wanted)]
    else:
        residual_grads = [grad if needs[4] else None, None, None]
    return (grads[0], None, grads[1], grads[2], residual_grads[0], None, residual_grads[1], residual_grads[2], None,
            None, None, grads[3])


_residual_apply_op.register_autograd(_residual_backward, setup_context=_setup_residual_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
# Per-channel vectors (statistics, partials, parameters) are a few KB; the passes over the input
# are what cost.
@launches_of(_statistics_op, "norm")
def _statistics_launches(stats, input, running_mean, running_var, weight, bias, training, momentum, eps):
    if not input.numel():
        return []
    finalize = one_pass("_finalize_kernel", [running_mean, running_var, weight, bias],
                        [stats, running_mean, running_var])
    return ([one_pass("_partial_stats_kernel", [input], [])] if training else []) + [finalize]


@launches_of(_moments_statistics_op, "norm")
def _moments_statistics_launches(stats, input, moments, running_mean, running_var, weight, bias, momentum, eps):
    if not input.numel():
        return []
    return [one_pass("_moments_finalize_kernel", [moments, running_mean, running_var, weight, bias],
                     [stats, running_mean, running_var])]


@launches_of(_apply_op, "norm")
def _apply_launches(out, input, stats, weight, bias, training, kind, parameter, slope):
    return [one_pass("_apply_kernel", [input], [out])] if input.numel() else []


@launches_of(_residual_apply_op, "norm")
def _residual_apply_launches(out, input, stats, weight, bias, residual, residual_stats, residual_weight, residual_bias,
                             training, kind, parameter, slope):
    return [one_pass("_apply_kernel", [input, residual], [out])] if input.numel() else []


@launches_of(_backward_op, "norm")
def _backward_launches(grads, grad_out, input, stats, weight, bias, training, kind, parameter, slope, output_mask):
    if not input.numel():
        return [one_pass("aten::zero_", [], grads[1:])]
    launches = []
    if (training and output_mask[0]) or any(output_mask[1:]):
        launches += [one_pass("_backward_sums_kernel", [grad_out, input], []),
                     one_pass("_backward_finalize_kernel", [], grads[1:])]
    if output_mask[0]:
        launches.append(one_pass("_backward_apply_kernel", [grad_out, input], grads[:1]))
    return launches


@launches_of(_backward_from_sums_op, "norm")
def _backward_from_sums_launches(grads, grad, input, partial_sums, stats, weight, bias, training, output_mask):
    if not input.numel():
        return [one_pass("aten::zero_", [], grads[1:])]
    launches = [one_pass("_backward_finalize_kernel", [partial_sums], grads[1:])]
    if output_mask[0]:
        launches.append(one_pass("_backward_apply_kernel", [grad, input], grads[:1]))
    return launches


@launches_of(_residual_grad_op, "norm")
def _residual_grad_launches(grad, grad_out, input, residual, output, stats, weight, bias, training, kind, parameter):
    # From the output the kernel reads dy and y (it never uses x); else dy, x and r.
    reads = [grad_out, output] if output is not None else [grad_out, input, residual]
    return [one_pass("_backward_apply_kernel", reads, [grad])] if grad.numel() else []


@launches_of(_residual_grad_with_sums_op, "norm")
def _residual_grad_with_sums_launches(outputs, grad_out, input, residual, output, stats, weight, bias, kind,
                                      parameter, residual_stats, slope, training):
    # dy, x (for x̂) and the output (or the residual, to recompute z), and a normalised residual's
    # input (for r̂); writes g and the partials.
    reads = [grad_out, input, output if output is not None else residual]
    if residual_stats is not None:
        reads.append(residual)
    return [one_pass("_backward_sums_kernel", reads, list(outputs))] if input.numel() else []


# ----------------------------------------------------------------------------- functional
def _batch_norm(name, activation, residual, input, running_mean, running_var, weight, bias, training, momentum, eps,
                moments=None):
    op = f"fastcnn.{name}"
    check_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps)
    check_residual(op, input, residual)
    kind, parameter, slope = resolve_fused_activation(op, activation)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(op, input.device)
        out = torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return apply_activation(out if residual is None else out + residual, kind, parameter, slope)
    if input.dim() < 2:  # an empty 1-d input, which torch passes through
        out = input.clone() if residual is None else input + residual
        return apply_activation(out, kind, parameter, slope)
    if slope is not None:
        slope, fusable = autocast_slope(slope, input)
        if not fusable:  # under autocast torch's prelu casts the norm's output down: it runs after the norm
            return prelu(_batch_norm(name, None, residual, input, running_mean, running_var, weight, bias, training,
                                     momentum, eps, moments), slope)
    slopes = None if slope is None else prelu_channel_slopes(op, slope, input)
    if rows_view(input) is None:  # a strided view whose spatial dims cannot be merged: one copy
        input = input.contiguous()
    stats = batch_statistics(op, input, running_mean, running_var, weight, bias, training, momentum, eps, moments)
    if residual is None:
        return _apply_op(input, stats, weight, bias, bool(training), kind, parameter, slopes)
    if residual.shape != input.shape:
        residual = residual.expand(input.shape)  # autograd sums its gradient back to the given shape
    return _residual_apply_op(input, stats, weight, bias, residual, None, None, None, bool(training), kind, parameter,
                              slopes)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5, *,
               activation=None, residual=None, moments=None):
    """``act(F.batch_norm(input, ...) + residual)`` in one pass forward and one fused backward
    (the gradients of input, residual, weight and bias together); without ``residual`` and
    ``activation`` it is ``F.batch_norm``. ``activation``: None or anything
    ``fastcnn.ops.activation.resolve_activation`` takes ("relu", "relu6", ("leaky_relu", 0.2),
    nn.SiLU(), ...), or an ``nn.PReLU`` module, whose learnable slopes (one, or one per channel)
    are read in the same pass and whose gradient the backward sums per channel, deterministically.
    ``residual``: None or a tensor of the input's dtype that broadcasts to its shape (a ResNet
    block's identity). Input (N, C), (N, C, L) or (N, C, H, W), NCHW or
    channels_last; in training the batch statistics are computed in fp32 and the running
    statistics (when given) are updated in the kernel with the unbiased variance, as torch does.
    fp16/bf16 input keeps fp32 parameters and statistics. ``moments``: what the fastcnn
    convolution that computed ``input`` emitted for it (``fastcnn.nn.conv2d_with_moments``); in
    training the batch statistics come from them instead of a pass over ``input``."""
    return _batch_norm("batch_norm", activation, residual, input, running_mean, running_var, weight, bias, training,
                       momentum, eps, moments)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5, *, residual=None):
    """``relu(F.batch_norm(input, ...) [+ residual])``: ``batch_norm`` with activation="relu"."""
    return _batch_norm("batch_norm_relu", "relu", residual, input, running_mean, running_var, weight, bias, training,
                       momentum, eps)


def batch_norm_add_batch_norm(input, running_mean, running_var, weight, bias, residual_input, residual_running_mean,
                              residual_running_var, residual_weight=None, residual_bias=None, training=False,
                              momentum=0.1, eps=1e-5, residual_momentum=0.1, residual_eps=1e-5, *, activation=None,
                              moments=None, residual_moments=None):
    """``act(F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    + F.batch_norm(residual_input, residual_running_mean, residual_running_var, residual_weight,
    residual_bias, training, residual_momentum, residual_eps))``: the end of a ResNet block whose
    identity is a downsample's batch norm, in one pass, the residual's normalised tensor never
    stored; in training its backward takes both norms' sums in the pass that computes the
    gradient of their outputs. ``activation``: None, or one whose torch backward takes the result
    (relu, sigmoid, tanh); others run the residual's batch norm on its own first. Each norm's
    arguments, checks and running statistics are ``fastcnn.batch_norm``'s; both inputs (N, C, H, W)
    of one shape and dtype; ``moments``, ``residual_moments``: each input's, from the convolution
    that computed it (``fastcnn.conv2d_with_moments``)."""
    op = "fastcnn.batch_norm_add_batch_norm"
    check_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps)
    check_batch_norm(op, residual_input, residual_running_mean, residual_running_var, residual_weight, residual_bias,
                     training, residual_momentum, residual_eps)
    kind, parameter, slope = resolve_fused_activation(op, activation)
    fusable = (slope is None and _backend.backend_for(input.device) != _backend.FALLBACK and input.dim() == 4
               and residual_input.shape == input.shape and residual_input.dtype == input.dtype
               and residual_input.device == input.device and (kind is None or kind in DERIVATIVE_FROM_OUTPUT))
    if not fusable:  # as the unfused layers: the residual's batch norm, then batch norm with the residual
        residual = batch_norm(residual_input, residual_running_mean, residual_running_var, residual_weight,
                              residual_bias, training, residual_momentum, residual_eps, moments=residual_moments)
        return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                          activation=activation, residual=residual, moments=moments)
    input, residual_input = (t if rows_view(t) is not None else t.contiguous() for t in (input, residual_input))
    stats = batch_statistics(op, input, running_mean, running_var, weight, bias, training, momentum, eps, moments)
    residual_stats = batch_statistics(op, residual_input, residual_running_mean, residual_running_var,
                                      residual_weight, residual_bias, training, residual_momentum, residual_eps,
                                      residual_moments)
    return _residual_apply_op(input, stats, weight, bias, residual_input, residual_stats, residual_weight,
                              residual_bias, bool(training), kind, parameter, None)
