"""Softmax cross-entropy: ``fastcnn.cross_entropy`` (as ``torch.nn.functional.cross_entropy``)
over ``kernels/cross_entropy.py``, registered as the PyTorch operators
``torch.ops.fastcnn.cross_entropy_forward`` and ``torch.ops.fastcnn.cross_entropy_backward_``
(with fake implementations) so that ``torch.compile`` keeps them in its graph.

The forward kernel writes the loss and, when the logits need a gradient, the unscaled gradient
into one logits-sized buffer; backward scales that buffer in place by grad_output (and the
'mean' denominator) and returns it. That buffer is the only logits-sized memory the op adds.
"""
from typing import Optional

import torch
from torch import Tensor

from . import _backend
from ._layout import as_rows, empty_rows_like, rows_view
from .validation import check_cross_entropy, cross_entropy_loss_dtype

OP = "cross_entropy"


def _empty_outputs(input, reduction, loss_dtype):
    """(loss, the 'sum'/'mean' denominator or an empty tensor)."""
    if reduction == "none":
        loss = torch.empty((input.shape[0],) + tuple(input.shape[2:]), dtype=loss_dtype, device=input.device)
        return loss, torch.empty(0, dtype=torch.float32, device=input.device)
    return (torch.empty((), dtype=loss_dtype, device=input.device),
            torch.empty((), dtype=torch.float32, device=input.device))


@torch.library.custom_op("fastcnn::cross_entropy_forward", mutates_args=("grad",))
def _forward_op(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
                label_smoothing: float, probabilities: bool, grad: Optional[Tensor],
                loss_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(loss, denominator) of batched logits (N, C, d1, ...), arguments validated; the unscaled
    gradient is written into ``grad`` (shaped and laid out like ``input``) when it is given."""
    loss, denominator = _empty_outputs(input, reduction, loss_dtype)
    if probabilities and input.shape[1] == 0:
        # No classes: every row's loss is an empty sum (0), and torch's 'mean' divides by
        # numel / C = 0 / 0. Nothing for a kernel to read.
        loss.fill_(float("nan") if reduction == "mean" else 0.0)
        return loss, denominator.fill_(0.0)
    kernels = _backend.kernel_module("cross_entropy")
    logits = as_rows(input)
    num_rows = logits.shape[0] * logits.shape[2]
    # 'none' writes the per-row losses straight into the output; sums reduce fp32 partials.
    row_loss = loss.view(-1) if reduction == "none" else torch.empty(num_rows, dtype=torch.float32,
                                                                     device=input.device)
    row_weight = torch.empty(num_rows, dtype=torch.float32, device=input.device)
    with torch.profiler.record_function("fastcnn::cross_entropy forward"):
        if num_rows:
            invalid = kernels.invalid_buffer(input.device)
            _backend.record_launch(OP, kernels.forward(
                logits, as_rows(target, 2 if probabilities else 1), weight, row_loss, row_weight,
                None if grad is None else rows_view(grad), invalid, ignore_index=ignore_index,
                smoothing=float(label_smoothing), probabilities=probabilities))
            if not probabilities:
                # The one host read of the op: a class index outside [0, C) must not pass silently.
                flagged, value = invalid.tolist()
                if flagged:
                    raise IndexError(f"fastcnn.cross_entropy: Target {value} is out of bounds "
                                     f"(classes are 0..{input.shape[1] - 1}, ignore_index={ignore_index}).")
        if reduction != "none":
            _backend.record_launch(OP, kernels.reduce_rows(row_loss, row_weight, loss, denominator,
                                                           mean=reduction == "mean"))
    return loss, denominator


@_forward_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, probabilities, grad, loss_dtype):
    return _empty_outputs(input, reduction, loss_dtype)


@torch.library.custom_op("fastcnn::cross_entropy_backward_", mutates_args=("grad",))
def _scale_grad_op(grad: Tensor, grad_out: Tensor, denominator: Tensor, reduction: str) -> None:
    """``grad`` *= grad_out (/ the denominator for 'mean'), in place."""
    if grad.numel():
        with torch.profiler.record_function("fastcnn::cross_entropy backward"):
            rows = as_rows(grad_out, 1) if reduction == "none" else grad_out
            _backend.record_launch(OP, _backend.kernel_module("cross_entropy").scale_grad(
                rows_view(grad), rows, denominator if reduction == "mean" else None, mean=reduction == "mean"))


@_scale_grad_op.register_fake
def _(grad, grad_out, denominator, reduction):
    return None


class CrossEntropyFunction(torch.autograd.Function):
    """F.cross_entropy of batched logits, arguments validated. An autograd Function rather than an
    autograd formula on the operator: the gradient buffer is filled by the forward operator and
    scaled in place by the backward one, which a functional operator could not express without a
    second logits-sized buffer. A second backward through the same graph (``retain_graph=True``)
    would find that buffer already scaled, so it is refused with an error that says so."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing, probabilities, compute_grad,
                loss_dtype):
        grad = empty_rows_like(input) if compute_grad else None
        loss, denominator = _forward_op(input, target, weight, ignore_index, reduction, label_smoothing,
                                        probabilities, grad, loss_dtype)
        ctx.save_for_backward(grad, denominator)
        ctx.reduction = reduction
        ctx.backward_done = False
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if ctx.backward_done:
            raise RuntimeError(
                "fastcnn.cross_entropy: a second backward through the same graph (retain_graph=True) is not "
                "supported: the first backward scaled the saved gradient of the logits in place. Compute the loss "
                "again for each backward, or use torch.nn.functional.cross_entropy where the graph must be "
                "reused.")
        ctx.backward_done = True
        grad, denominator = ctx.saved_tensors
        if grad is None:  # only a probability target asked for a gradient; torch's is not offered either
            return (None,) * 9
        _scale_grad_op(grad, grad_out, denominator, ctx.reduction)
        return grad, None, None, None, None, None, None, None, None


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
            # Autocast widens the 16-bit floats only: a float64 target stays float64 (and so does the loss).
            cast = (lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16)
                    else t)
            return cross_entropy(cast(input), cast(target), cast(weight), ignore_index, reduction, label_smoothing)
    probabilities = check_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.cross_entropy(input, target, weight, ignore_index=ignore_index,
                                                 reduction=reduction, label_smoothing=label_smoothing)
    compute_grad = torch.is_grad_enabled() and input.requires_grad
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    loss = CrossEntropyFunction.apply(input, target, weight, int(ignore_index), reduction, float(label_smoothing),
                                      probabilities, compute_grad,
                                      cross_entropy_loss_dtype(input, target, weight, probabilities))
    return loss.squeeze(0) if unbatched and reduction == "none" else loss
