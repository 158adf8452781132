"""Batch norm with an optional fused ReLU: ``fastcnn.batch_norm_relu`` (= relu(F.batch_norm))
and ``fastcnn.batch_norm`` (= F.batch_norm), over ``kernels/batch_norm.py``: the argument checks
(torch's, in torch's order), the byte count, the operators and autograd, the functionals and the
benchmark cases.

Registered as three PyTorch operators so that ``torch.compile`` keeps them in its graph:
``fastcnn::batch_norm_fold`` computes the per-channel statistics, updates the running statistics
in place (the one mutation, declared in its schema) and folds them into five floats per channel;
``fastcnn::batch_norm_apply`` normalises (and applies the ReLU), with an autograd formula whose
backward is ``fastcnn::batch_norm_backward``. The statistics are not differentiated through the
fold: the backward formula accounts for them (see kernels/batch_norm.py).

Saved for backward: the input and five floats per channel; the ReLU mask is recomputed from the
input, so no pre-ReLU tensor is ever kept.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._layout import as_rows, empty_rows_like, rows_view, statistic_vectors
from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..dtypes import TORCH_FLOAT_DTYPES
from ..validation import check_kernel_dtype, check_parameter_dtypes, check_torch_implements

__all__ = ["batch_norm", "batch_norm_relu"]

OP = "batch_norm"


def _kernels():
    """kernels/batch_norm.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import batch_norm

    return batch_norm


# ----------------------------------------------------------------------------- checks
def check_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps):
    """Validate F.batch_norm's arguments as torch does, in its order: the batch size and ``eps``
    (F.batch_norm's own checks), the dtype torch computes in, then the per-channel tensors (C
    elements each, the input's dtype or fp32 for fp16/bf16 input), running statistics required
    in eval."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() < 2 and input.numel():
        raise RuntimeError(f"{op}: expected input of shape (N, C, ...) with at least 2 dimensions, "
                           f"got {list(input.shape)}")
    for name, value in (("momentum", momentum), ("eps", eps)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{op}: argument '{name}' must be a float, not {type(value).__name__}")
    channels = input.shape[1] if input.dim() > 1 else 0
    if training and input.numel() // max(channels, 1) == 1:
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
        raise RuntimeError(f"{op}: running_mean must be defined in evaluation mode")
    if (running_mean is None) != (running_var is None):
        raise RuntimeError(f"{op}: running_mean and running_var must be given together")
    check_kernel_dtype(op, input)


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Bytes BN+ReLU must move at the least: forward reads x and writes y; backward reads x and
    dy and writes dx (per-channel vectors are negligible)."""
    return numel * element_size * (5 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
def _empty_folded(input):
    return torch.empty((5, input.shape[1]), dtype=torch.float32, device=input.device)


@torch.library.custom_op("fastcnn::batch_norm_fold", mutates_args=("running_mean", "running_var"))
def _fold_op(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor], weight: Optional[Tensor],
             bias: Optional[Tensor], training: bool, momentum: float, eps: float) -> Tensor:
    """fp32 [5, C]: (scale, beta, shift, centred mean, invstd) from the batch (training) or the
    running statistics (eval); in training the running statistics are updated in place."""
    folded = _empty_folded(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm statistics"):
            _backend.record_launch(OP, _kernels().fold(
                rows_view(input), folded, weight, bias, running_mean, running_var, training=training,
                momentum=momentum, eps=eps))
    return folded


@_fold_op.register_fake
def _(input, running_mean, running_var, weight, bias, training, momentum, eps):
    return _empty_folded(input)


@torch.library.custom_op("fastcnn::batch_norm_apply", mutates_args=())
def _apply_op(input: Tensor, folded: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], training: bool,
              relu: bool) -> Tensor:
    """[relu](batch_norm(input)) from the folded statistics. ``weight`` and ``bias`` are already
    folded in; they are arguments so that autograd routes their gradients here."""
    out = empty_rows_like(input)
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm forward"):
            _backend.record_launch(OP, _kernels().apply(
                rows_view(input), rows_view(out), folded, relu=relu))
    return out


@_apply_op.register_fake
def _(input, folded, weight, bias, training, relu):
    return empty_rows_like(input)


@torch.library.custom_op("fastcnn::batch_norm_backward", mutates_args=())
def _backward_op(grad_out: Tensor, input: Tensor, folded: Tensor, training: bool, relu: bool,
                 output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias); the last two in fp32; each empty when its
    ``output_mask`` entry is False."""
    grad_input, grad_weight, grad_bias = _empty_grads(input, output_mask)
    wanted = [grad if needed else None for grad, needed in zip((grad_input, grad_weight, grad_bias), output_mask)]
    if input.numel():
        with torch.profiler.record_function("fastcnn::batch_norm backward"):
            _backend.record_launch(OP, _kernels().backward(
                as_rows(grad_out), rows_view(input), None if wanted[0] is None else rows_view(grad_input), folded,
                wanted[1], wanted[2], training=training, relu=relu))
    else:
        grad_weight.zero_()
        grad_bias.zero_()
    return grad_input, grad_weight, grad_bias


def _empty_grads(input, output_mask):
    channels = input.shape[1]
    grad_input = empty_rows_like(input) if output_mask[0] else input.new_empty(0)
    grad_weight, grad_bias = (torch.empty(channels if needed else 0, dtype=torch.float32, device=input.device)
                              for needed in output_mask[1:])
    return grad_input, grad_weight, grad_bias


@_backward_op.register_fake
def _(grad_out, input, folded, training, relu, output_mask):
    return _empty_grads(input, output_mask)


def _setup_context(ctx, inputs, output):
    input, folded, weight, bias, training, relu = inputs
    ctx.save_for_backward(input, folded)
    ctx.options = (training, relu)
    ctx.parameter_dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)


def _backward(ctx, grad_out):
    input, folded = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]]
    grad_input, grad_weight, grad_bias = _backward_op(grad_out, input, folded, *ctx.options, mask)
    weight_dtype, bias_dtype = ctx.parameter_dtypes
    return (grad_input if mask[0] else None, None, grad_weight.to(weight_dtype) if mask[1] else None,
            grad_bias.to(bias_dtype) if mask[2] else None, None, None)


_apply_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- functional
def _batch_norm(op, relu, input, running_mean, running_var, weight, bias, training, momentum, eps):
    check_batch_norm(f"fastcnn.{op}", input, running_mean, running_var, weight, bias, training, momentum, eps)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(op, input.device)
        out = torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return torch.relu(out) if relu else out
    if input.dim() < 2:  # an empty 1-d input, which torch passes through
        return input.clone()
    if rows_view(input) is None:  # a strided view whose spatial dims cannot be merged: one copy
        input = input.contiguous()
    input_values, weight_values, bias_values = (None if t is None else t.detach() for t in (input, weight, bias))
    # The kernels read each per-channel tensor as a vector through its stride (any C-element
    # tensor torch accepts: a strided view, a (C, 1) buffer).
    weight_values, bias_values = (None if t is None else t.reshape(-1) for t in (weight_values, bias_values))
    statistics, write_back = statistic_vectors((running_mean, running_var))
    folded = _fold_op(input_values, *statistics, weight_values, bias_values, bool(training), float(momentum),
                      float(eps))
    for statistic, vector in write_back:
        statistic.copy_(vector.view(statistic.shape))
    return _apply_op(input, folded, weight, bias, bool(training), relu)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                    eps=1e-5):
    """``relu(F.batch_norm(input, ...))`` in one fused pass forward and backward. Input (N, C),
    (N, C, L) or (N, C, H, W), NCHW or channels_last; in training the batch statistics are
    computed in fp32 and the running statistics (when given) are updated in the kernel with the
    unbiased variance, as torch does. fp16/bf16 input keeps fp32 parameters and statistics."""
    return _batch_norm("batch_norm_relu", True, input, running_mean, running_var, weight, bias, training, momentum,
                       eps)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """``F.batch_norm`` on the same kernels as ``batch_norm_relu``, without the ReLU."""
    return _batch_norm("batch_norm", False, input, running_mean, running_var, weight, bias, training, momentum, eps)


# ----------------------------------------------------------------------------- benchmark cases
def resnet50_activation_shapes():
    """Distinct (channels, height = width) of the activations that ResNet-50's batch norms see
    (each conv's output), from 64 x 112² to 2048 x 7²."""
    from .conv2d import resnet_conv_layers

    return sorted({(layer.out_channels, layer.out_size) for layer in resnet_conv_layers(50)},
                  key=lambda shape: (-shape[1], shape[0]))


# Activation shapes (channels, height = width) of a network's batch norms.
SUITES = {"resnet50": resnet50_activation_shapes}
PROFILE_OPS = ("batch_norm_relu",)


def benchmark_shapes():
    """Every suite's (channels, size), in order: what the profiler and bench/ time."""
    return [shape for suite in SUITES.values() for shape in suite()]


def _case(channels, size, batch, dtype, layout):
    from ..nn import BatchNorm2dReLU

    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        pair = torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU()).to(device)
        return training_steps(BatchNorm2dReLU(channels).to(device), pair, input)

    return BenchmarkCase("batch_norm_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: BN+ReLU forward + backward in training on ResNet-50's activations."""
    activations = [(5, 7)] if smoke else benchmark_shapes()
    activations = activations[:3] if quick else activations
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    return [_case(channels, size, batch, dtype, layout) for channels, size in activations for batch in batches
            for dtype in dtypes for layout in layouts]
