"""Batch norm with an optional fused ReLU: ``fastcnn.batch_norm_relu`` (= relu(F.batch_norm))
and ``fastcnn.batch_norm`` (= F.batch_norm), over ``kernels/batch_norm.py``.

Saved for backward: the input and five floats per channel; the ReLU mask is recomputed from the
input, so no pre-ReLU tensor is ever kept.
"""
import torch

from . import _backend
from ._layout import as_rows, empty_rows_like, rows_view
from .validation import check_batch_norm

OP = "batch_norm"


class BatchNormFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, running_mean, running_var, weight, bias, training, momentum, eps, relu):
        kernels = _backend.kernel_module("batch_norm")
        if rows_view(input) is None:  # a strided view whose spatial dims cannot be merged: one copy
            input = input.contiguous()
        out = empty_rows_like(input)
        folded = torch.empty((5, input.shape[1]), dtype=torch.float32, device=input.device)
        if input.numel():
            _backend.record_launch(OP, kernels.forward(
                rows_view(input), rows_view(out), folded, weight, bias, running_mean, running_var, training=training,
                momentum=momentum, eps=eps, relu=relu))
        ctx.save_for_backward(input, folded)
        ctx.options = dict(training=training, relu=relu)
        ctx.parameter_dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        input, folded = ctx.saved_tensors
        channels = input.shape[1]
        weight_dtype, bias_dtype = ctx.parameter_dtypes
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = empty_rows_like(input)
        if ctx.needs_input_grad[3]:
            grad_weight = torch.empty(channels, dtype=weight_dtype, device=input.device)
        if ctx.needs_input_grad[4]:
            grad_bias = torch.empty(channels, dtype=bias_dtype, device=input.device)
        if input.numel():
            _backend.record_launch(OP, _backend.kernel_module("batch_norm").backward(
                as_rows(grad_out), rows_view(input), None if grad_input is None else rows_view(grad_input), folded, grad_weight,
                grad_bias, **ctx.options))
        else:
            grad_weight = None if grad_weight is None else grad_weight.zero_()
            grad_bias = None if grad_bias is None else grad_bias.zero_()
        return grad_input, None, None, grad_weight, grad_bias, None, None, None, None


def _batch_norm(op, relu, input, running_mean, running_var, weight, bias, training, momentum, eps):
    check_batch_norm(f"fastcnn.{op}", input, running_mean, running_var, weight, bias, training, momentum, eps)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(op, input.device)
        out = torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        return torch.relu(out) if relu else out
    if input.dim() < 2:  # an empty 1-d input, which torch passes through
        return input.clone()
    return BatchNormFunction.apply(input, running_mean, running_var, weight, bias, bool(training), momentum, eps,
                                   relu)


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
