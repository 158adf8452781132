"""Batch norm with an optional fused ReLU: ``fastcnn.batch_norm_relu`` (= relu(F.batch_norm))
and ``fastcnn.batch_norm`` (= F.batch_norm), over ``kernels/batch_norm.py``.

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

from . import _backend
from ._layout import as_rows, empty_rows_like, rows_view
from .validation import check_batch_norm

OP = "batch_norm"


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
            _backend.record_launch(OP, _backend.kernel_module("batch_norm").fold(
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
            _backend.record_launch(OP, _backend.kernel_module("batch_norm").apply(
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
            _backend.record_launch(OP, _backend.kernel_module("batch_norm").backward(
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
    statistics, write_back = [], []
    for statistic in (running_mean, running_var):
        vector = None if statistic is None else _vector_view(statistic)
        if statistic is not None and vector is None:  # strides no 1-d view can express: update a copy
            vector = statistic.reshape(-1)  # a copy, as no view exists
            write_back.append((statistic, vector))
        statistics.append(vector)
    folded = _fold_op(input_values, *statistics, weight_values, bias_values, bool(training), float(momentum),
                      float(eps))
    for statistic, vector in write_back:
        statistic.copy_(vector.view(statistic.shape))
    return _apply_op(input, folded, weight, bias, bool(training), relu)


def _vector_view(tensor):
    """``tensor`` as a 1-d view of its C elements (itself when already 1-d), or None when its
    strides cannot be expressed as one."""
    if tensor.dim() == 1:
        return tensor
    try:
        return tensor.view(-1)
    except RuntimeError:
        return None


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
