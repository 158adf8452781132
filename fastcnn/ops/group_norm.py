"""Group norm and instance norm with an optional fused activation: ``fastcnn.group_norm``
(= act(F.group_norm)) and ``fastcnn.instance_norm`` (= act(F.instance_norm)), over
``kernels/group_norm.py``: torch's argument checks in torch's order, the byte count, the operators
and autograd and the functionals. Instance norm is group norm with one
channel per group plus torch's running-statistics rules.

Registered as three PyTorch operators, as batch norm is: ``fastcnn::group_norm_stats`` computes
each (sample, group) row's statistics and, for instance norm in training, moves the running
statistics (the one mutation, declared in its schema); ``fastcnn::group_norm_apply`` normalises
and applies the activation, with an autograd formula whose backward is
``fastcnn::group_norm_backward``. Saved for backward: the input and four floats per row.
"""
import math
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import as_rows, empty_rows_like, rows_view
from .._norms import empty_norm_grads, norm_parameter_grads, statistic_vectors
from ..dtypes import TORCH_FLOAT_DTYPES, autocast_runs_in_float32
from ..validation import check_index_range, check_kernel_dtype, check_parameter_dtypes, check_torch_implements
from .activation import apply_activation, prelu_channel_slopes, resolve_fused_activation
from .prelu import autocast_slope, prelu

__all__ = ["group_norm", "instance_norm"]

OP = "group_norm"


def _kernels():
    """kernels/group_norm.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import group_norm

    return group_norm


# ----------------------------------------------------------------------------- checks
def _check_tensor(op, name, tensor):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")


def check_group_norm(op, input, num_groups, weight, bias):
    """F.group_norm's checks in its order: rank, F.group_norm's own value count, then
    torch.group_norm's divisibility and parameter shapes, the dtype, mixed dtypes."""
    _check_tensor(op, "input", input)
    if input.dim() < 2:
        raise RuntimeError(f"{op}: Expected at least 2 dimensions for input tensor but received {input.dim()}")
    if not isinstance(num_groups, int) or isinstance(num_groups, bool):
        raise TypeError(f"{op}: argument 'num_groups' must be int, not {type(num_groups).__name__}")
    batch, channels = input.shape[:2]
    if num_groups == 0:
        raise ZeroDivisionError(f"{op}: integer division or modulo by zero")
    sizes = [batch * channels // num_groups, num_groups] + list(input.shape[2:])
    if sizes[0] * math.prod(sizes[2:]) == 1:
        raise ValueError(f"{op}: Expected more than 1 value per channel when training, got input size {sizes}")
    if num_groups < 0 or channels % num_groups:
        raise RuntimeError(f"{op}: Expected number of channels in input to be divisible by num_groups, but got "
                           f"input of shape {list(input.shape)} and num_groups={num_groups}")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is None:
            continue
        _check_tensor(op, name, tensor)
        if tensor.dim() != 1 or tensor.numel() != channels:
            raise RuntimeError(f"{op}: Expected {name} to be a vector of size equal to the number of channels in "
                               f"input, but got {name} of shape {list(tensor.shape)} and input of shape "
                               f"{list(input.shape)}")
    check_torch_implements(op, "GroupNormKernelImpl", input.dtype, TORCH_FLOAT_DTYPES)
    check_parameter_dtypes(op, input, {"weight": weight, "bias": bias})
    check_kernel_dtype(op, input)
    check_index_range(op, sample_channel_pairs=batch * channels, pixels_per_channel=math.prod(input.shape[2:]))


def check_instance_norm(op, input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps):
    """F.instance_norm's checks in its order: the spatial size, the running statistics required
    without input statistics, then batch norm's on the (1, N·C, ...) view torch reshapes to."""
    _check_tensor(op, "input", input)
    for name, value in (("momentum", momentum), ("eps", eps)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{op}: argument '{name}' must be a float, not {type(value).__name__}")
    if use_input_stats and math.prod(input.shape[2:]) == 1:
        raise ValueError(f"{op}: Expected more than 1 spatial element when training, got input size {input.size()}")
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError(f"{op}: Expected running_mean and running_var to be defined when use_input_stats is false")
    if input.dim() < 2:
        raise RuntimeError(f"{op}: expected input of shape (N, C, ...) with at least 2 dimensions, "
                           f"got {list(input.shape)}")
    batch, channels = input.shape[:2]
    for name, tensor in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                         ("running_var", running_var)):
        if tensor is None:
            continue
        _check_tensor(op, name, tensor)
        if tensor.numel() != channels:
            raise RuntimeError(f"{op}: {name} should contain {batch * channels} elements not "
                               f"{batch * tensor.numel()}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must either both be None or neither be None")
    check_torch_implements(op, "batch_norm", input.dtype, TORCH_FLOAT_DTYPES)
    check_parameter_dtypes(op, input, {"weight": weight, "bias": bias, "running_mean": running_mean,
                                       "running_var": running_var})
    check_kernel_dtype(op, input)
    check_index_range(op, sample_channel_pairs=batch * channels, pixels_per_channel=math.prod(input.shape[2:]))


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """The least a fused norm + activation moves: forward reads x and writes y; backward reads x
    and dy and writes dx (per-row and per-channel vectors are negligible)."""
    return numel * element_size * (5 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
@torch.library.custom_op("fastcnn::group_norm_stats", mutates_args=("running_mean", "running_var"))
def _stats_op(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor], groups: int, eps: float,
              use_running: bool, momentum: float) -> Tensor:
    """fp32 [4, N·G]: (shift, centred mean, rstd, biased variance) per (sample, group) row. With
    running statistics and not ``use_running`` (instance norm in training), they move by
    ``momentum`` towards the batch average."""
    stats = input.new_empty((4, input.shape[0] * groups), dtype=torch.float32)
    if input.numel():
        with torch.profiler.record_function("fastcnn::group_norm statistics"):
            rows = rows_view(input)
            kernels = _kernels()
            launches = kernels.statistics(rows, stats, running_mean, running_var, groups=groups, eps=eps,
                                          use_running=use_running)
            if running_mean is not None and not use_running:
                launches += kernels.update_running(stats, running_mean, running_var, batch=input.shape[0],
                                                   momentum=momentum, reduction_length=rows.shape[2])
            _backend.record_launch(OP, launches)
    return stats


@_stats_op.register_fake
def _(input, running_mean, running_var, groups, eps, use_running, momentum):
    return input.new_empty((4, input.shape[0] * groups), dtype=torch.float32)


@torch.library.custom_op("fastcnn::group_norm_apply", mutates_args=())
def _apply_op(input: Tensor, stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], groups: int,
              batch_statistics: bool, kind: Optional[str], parameter: float, slope: Optional[Tensor]) -> Tensor:
    """act(group_norm(input)) from the statistics; ``slope``: PReLU's C slopes (kind "prelu")."""
    out = empty_rows_like(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::group_norm forward"):
            _backend.record_launch(OP, _kernels().apply(rows_view(input), rows_view(out), stats, weight, bias,
                                                        groups=groups, kind=kind, parameter=parameter, slope=slope))
    return out


@_apply_op.register_fake
def _(input, stats, weight, bias, groups, batch_statistics, kind, parameter, slope):
    return empty_rows_like(input)


@torch.library.custom_op("fastcnn::group_norm_backward", mutates_args=())
def _backward_op(grad_out: Tensor, input: Tensor, stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                 groups: int, batch_statistics: bool, kind: Optional[str], parameter: float, slope: Optional[Tensor],
                 output_mask: list[bool]) -> tuple[Tensor, Tensor]:
    """(grad_input, fp32 [2, C] (grad_bias, grad_weight), or [3, C] with PReLU's slopes' third);
    each empty when not asked for."""
    grad_input, sums = empty_norm_grads(input, output_mask, slope)
    if input.numel():
        with torch.profiler.record_function("fastcnn::group_norm backward"):
            _backend.record_launch(OP, _kernels().backward(
                as_rows(grad_out), rows_view(input), rows_view(grad_input) if output_mask[0] else None, stats,
                weight, bias, sums if sums.numel() else None, groups=groups, batch_statistics=batch_statistics,
                kind=kind, parameter=parameter, slope=slope))
    else:
        sums.zero_()
    return grad_input, sums


@_backward_op.register_fake
def _(grad_out, input, stats, weight, bias, groups, batch_statistics, kind, parameter, slope, output_mask):
    return empty_norm_grads(input, output_mask, slope)


def _setup_context(ctx, inputs, output):
    input, stats, weight, bias, groups, batch_statistics, kind, parameter, slope = inputs
    ctx.save_for_backward(input, stats, weight, bias, slope)
    ctx.options = (groups, batch_statistics, kind, parameter)


def _backward(ctx, grad_out):
    grad_input, grad_weight, grad_bias, grad_slope = norm_parameter_grads(ctx, grad_out, _backward_op, (0, 2, 3, 8))
    return grad_input, None, grad_weight, grad_bias, None, None, None, None, grad_slope


_apply_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
# Per-(sample, group) and per-channel vectors are small; the passes over the input are what cost.
@launches_of(_stats_op, "norm")
def _stats_launches(stats, input, running_mean, running_var, groups, eps, use_running, momentum):
    if not input.numel():
        return []
    launches = [] if use_running else [one_pass("_partial_stats_kernel", [input], [])]
    launches.append(one_pass("_finalize_stats_kernel", [running_mean, running_var] if use_running else [], [stats]))
    if running_mean is not None and not use_running:
        launches.append(one_pass("_running_stats_kernel", [stats, running_mean, running_var],
                                 [running_mean, running_var]))
    return launches


@launches_of(_apply_op, "norm")
def _apply_launches(out, input, stats, weight, bias, groups, batch_statistics, kind, parameter, slope):
    return [one_pass("_apply_kernel", [input, stats, weight, bias], [out])] if input.numel() else []


@launches_of(_backward_op, "norm")
def _backward_launches(grads, grad_out, input, stats, weight, bias, groups, batch_statistics, kind, parameter, slope,
                       output_mask):
    grad_input, sums = grads
    if not input.numel():
        return [one_pass("aten::zero_", [], [sums])] if sums.numel() else []
    launches = []
    if batch_statistics and output_mask[0] or sums.numel():
        launches += [one_pass("_partial_grad_sums_kernel", [grad_out, input], []),
                     one_pass("_finalize_grad_sums_kernel", [], [sums])]
        if sums.numel() and input.shape[0] > 1:  # per-sample channel sums, added in order
            launches.append(one_pass("_sum_slices_kernel", [], []))
    if output_mask[0]:
        launches.append(one_pass("_backward_apply_kernel", [grad_out, input], [grad_input]))
    return launches


# ----------------------------------------------------------------------------- functional
def _normalise(op, input, groups, weight, bias, running_mean, running_var, *, eps, batch_statistics, momentum,
               kind, parameter, slope):
    if slope is not None:
        slope, fusable = autocast_slope(slope, input)
        if not fusable:  # under autocast torch's prelu casts the norm's output down: it runs after the norm
            return prelu(_normalise(op, input, groups, weight, bias, running_mean, running_var, eps=eps,
                                    batch_statistics=batch_statistics, momentum=momentum, kind=None, parameter=0.0,
                                    slope=None), slope)
    slopes = None if slope is None else prelu_channel_slopes(op, slope, input)
    if rows_view(input) is None:  # a strided view whose spatial dims cannot be merged: one copy
        input = input.contiguous()
    (mean_vector, var_vector), write_back = statistic_vectors((running_mean, running_var))
    stats = _stats_op(input.detach(), mean_vector, var_vector, groups, float(eps), not batch_statistics,
                      float(momentum))
    for statistic, vector in write_back:
        statistic.copy_(vector.view(statistic.shape))
    return _apply_op(input, stats, weight, bias, groups, batch_statistics, kind, parameter, slopes)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, activation=None):
    """``F.group_norm`` followed by ``activation`` (None, or anything ``resolve_activation`` takes:
    "silu", nn.GELU(), ("leaky_relu", 0.2), ..., or an ``nn.PReLU`` module, whose learnable
    slopes are read per channel and whose gradient the backward sums) in one pass forward and
    backward. Any input
    rank torch takes, NCHW or channels_last through strides; statistics in fp32 (shifted by each
    row's first value and merged with Chan's formula); fp16/bf16 input keeps fp32 parameters."""
    op = "fastcnn.group_norm"
    if autocast_runs_in_float32(input, ("cuda",)):  # on CUDA, torch's autocast runs group_norm in fp32
        slope = resolve_fused_activation(op, activation)[2]
        if slope is not None:  # and prelu in the autocast dtype, after it
            return prelu(group_norm(input, num_groups, weight, bias, eps), slope)
        with torch.autocast("cuda", enabled=False):
            return group_norm(input.float(), num_groups, weight, bias, eps, activation=activation)
    kind, parameter, slope = resolve_fused_activation(op, activation)
    check_group_norm(op, input, num_groups, weight, bias)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        out = torch.nn.functional.group_norm(input, num_groups, weight, bias, eps)
        return apply_activation(out, kind, parameter, slope)
    return _normalise(op, input, num_groups, _vector(weight), _vector(bias), None, None, eps=eps,
                      batch_statistics=True, momentum=0.0, kind=kind, parameter=parameter, slope=slope)


def _vector(tensor):
    """A per-channel parameter as the 1-d tensor the kernels read through its stride (a view when
    one exists; the autograd graph reaches the original either way)."""
    return None if tensor is None else tensor.reshape(-1)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5, *, activation=None):
    """``F.instance_norm`` followed by ``activation``: each (sample, channel) normalised over its
    pixels (``use_input_stats``; the running statistics, when given, move by ``momentum`` towards
    the batch average of the per-sample mean and unbiased variance, in the kernel), or by the
    running statistics (``use_input_stats=False``)."""
    op = "fastcnn.instance_norm"
    kind, parameter, slope = resolve_fused_activation(op, activation)
    check_instance_norm(op, input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback("instance_norm", input.device)
        out = torch.nn.functional.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                                                momentum, eps)
        return apply_activation(out, kind, parameter, slope)
    return _normalise(op, input, input.shape[1], _vector(weight), _vector(bias), running_mean, running_var, eps=eps,
                      batch_statistics=bool(use_input_stats), momentum=momentum, kind=kind, parameter=parameter,
                      slope=slope)
