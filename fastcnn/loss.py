"""Softmax cross-entropy: ``fastcnn.cross_entropy`` (as ``torch.nn.functional.cross_entropy``)
and its autograd Function over ``kernels/cross_entropy.py``.

The forward kernel writes the loss and, when the logits need a gradient, the unscaled gradient
into one logits-sized buffer; backward scales that buffer in place by grad_output (and the
'mean' denominator) and returns it. That buffer is the only logits-sized memory the op adds.
"""
import torch

from . import _backend
from ._layout import as_rows, empty_rows_like, rows_view
from .validation import check_cross_entropy

OP = "cross_entropy"


class CrossEntropyFunction(torch.autograd.Function):
    """F.cross_entropy for batched input (N, C, d1, ...), arguments already validated."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing, probabilities):
        kernels = _backend.kernel_module("cross_entropy")
        logits = as_rows(input)
        targets = as_rows(target, 2 if probabilities else 1)
        num_rows = logits.shape[0] * logits.shape[2]
        grad = None
        if ctx.needs_input_grad[0]:
            grad = empty_rows_like(input)
        per_row_dtype = input.dtype if reduction == "none" else torch.float32
        row_loss = torch.empty(num_rows, dtype=per_row_dtype, device=input.device)
        row_weight = torch.empty(num_rows, dtype=torch.float32, device=input.device)
        if num_rows:
            invalid = kernels.invalid_buffer(input.device)
            _backend.record_launch(OP, kernels.forward(
                logits, targets, weight, row_loss, row_weight, None if grad is None else rows_view(grad), invalid,
                ignore_index=ignore_index, smoothing=float(label_smoothing), probabilities=probabilities))
            if not probabilities:
                # The one host read of the op: a class index outside [0, C) must not pass silently.
                flagged, value = invalid.tolist()
                if flagged:
                    raise IndexError(f"fastcnn.cross_entropy: Target {value} is out of bounds "
                                     f"(classes are 0..{input.shape[1] - 1}, ignore_index={ignore_index}).")
        denominator = None
        if reduction == "none":
            out = row_loss.view((input.shape[0],) + tuple(input.shape[2:]))
        else:
            out = torch.empty((), dtype=input.dtype, device=input.device)
            denominator = torch.empty((), dtype=torch.float32, device=input.device)
            _backend.record_launch(OP, kernels.reduce_rows(row_loss, row_weight, out, denominator,
                                                           mean=reduction == "mean"))
        ctx.grad = grad
        ctx.denominator = denominator
        ctx.reduction = reduction
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError("fastcnn.cross_entropy: backward ran twice through the same graph; the stored "
                               "gradient is scaled in place by the first backward (retain_graph=True is not "
                               "supported by this op)")
        ctx.grad = None
        if grad.numel():
            kernels = _backend.kernel_module("cross_entropy")
            rows = as_rows(grad_out, 1) if ctx.reduction == "none" else grad_out
            _backend.record_launch(OP, kernels.scale_grad(rows_view(grad), rows, ctx.denominator,
                                                          mean=ctx.reduction == "mean"))
        return grad, None, None, None, None, None, None


def _autocast_to_float32(input):
    """torch.autocast runs cross_entropy in fp32: True when that applies to ``input``."""
    device_type = input.device.type
    return (device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type)
            and input.dtype in (torch.float16, torch.bfloat16))


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy`` on fastcnn's fused Triton kernel.

    ``input`` (N, C), (N, C, d1, ...) or unbatched (C,); ``target`` class indices (N, d1, ...)
    (int64 or uint8) or class probabilities shaped like ``input``. Same options and results as
    torch, including torch's rules for label smoothing with weights and ignore_index, and NaN
    for a 'mean' over no counted target. A class index outside [0, C) that is not
    ``ignore_index`` raises IndexError (read back from the device once per call).
    """
    if isinstance(input, torch.Tensor) and _autocast_to_float32(input):
        with torch.autocast(input.device.type, enabled=False):
            cast = (lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t)
            return cross_entropy(cast(input), cast(target), cast(weight), ignore_index, reduction, label_smoothing)
    probabilities = check_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.cross_entropy(input, target, weight, ignore_index=ignore_index,
                                                 reduction=reduction, label_smoothing=label_smoothing)
    if input.dim() == 1:
        out = CrossEntropyFunction.apply(input.unsqueeze(0), target.unsqueeze(0), weight, ignore_index, reduction,
                                         label_smoothing, probabilities)
        return out.squeeze(0) if reduction == "none" else out
    return CrossEntropyFunction.apply(input, target, weight, ignore_index, reduction, label_smoothing, probabilities)
