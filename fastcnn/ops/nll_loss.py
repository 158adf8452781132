"""nll_loss: ``fastcnn.nll_loss`` (as ``torch.nn.functional.nll_loss``) over
``kernels/nll_loss.py``: the loss of log-probabilities at class indices, with class weights,
``ignore_index`` and every reduction; forward gathers one logit per row, backward writes the
gradient (zeros but one per row) in one pass.

Everything of nll_loss on the PyTorch side lives here, in this order: checks (torch's, shared
with cross_entropy's class-index targets), cost, operators with autograd, and the functional.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import Launch, launches_of, one_pass, tensor_bytes
from .._layout import as_rows, empty_rows_like, rows_view
from ..dtypes import TORCH_FLOAT_DTYPES, autocast_runs_in_float32
from ..validation import check_kernel_dtype, check_torch_implements
from .cross_entropy import check_class_targets, check_class_weight
from .pointwise_loss import check_not_differentiable, check_tensors, reduction_of

__all__ = ["nll_loss"]

OP = "nll_loss"


def _kernels():
    """kernels/nll_loss.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import nll_loss

    return nll_loss


# ----------------------------------------------------------------------------- checks
def check_nll_loss(op, input, target, weight, ignore_index):
    """F.nll_loss's checks in torch's order and words."""
    check_tensors(op, "nll_loss", input=input, target=target, weight=weight)
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: argument 'ignore_index' must be an int, not {type(ignore_index).__name__}")
    if input.dim() < 1:
        raise ValueError(f"{op}: Expected 1 or more dimensions (got {input.dim()})")
    for name, tensor in (("target", target), ("weight", weight)):
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two "
                               f"devices, {input.device} and {tensor.device}! ({name})")
    check_class_targets(op, input, target)
    check_class_weight(op, input, weight, input.shape[1] if input.dim() > 1 else input.shape[0], same_dtype=True)
    check_torch_implements(op, "nll_loss_forward_reduce_cuda_kernel_2d_index", input.dtype, TORCH_FLOAT_DTYPES)
    check_kernel_dtype(op, input)
    check_not_differentiable(op, "nll_loss_forward", weight=weight)


# ----------------------------------------------------------------------------- cost
def bytes_moved(rows, classes, element_size, target_size=8):
    """Forward gathers one logit and reads one target per row; backward writes the whole gradient
    and reads the targets again."""
    return rows * (element_size + 2 * target_size) + rows * classes * element_size


# ----------------------------------------------------------------------------- operators and autograd
def _empty_loss(input, reduction):
    if reduction == "none":
        return (torch.empty((input.shape[0],) + tuple(input.shape[2:]), dtype=input.dtype, device=input.device),
                torch.empty(0, dtype=torch.float32, device=input.device))
    return (torch.empty((), dtype=input.dtype, device=input.device),
            torch.empty((), dtype=torch.float32, device=input.device))


@torch.library.custom_op("fastcnn::nll_loss", mutates_args=())
def _nll_loss_op(input: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                 reduction: str) -> tuple[Tensor, Tensor]:
    """(loss, denominator: Σ w_y for 'mean', 1 for 'sum', empty for 'none') of batched (N, C, ...)
    log-probabilities, arguments validated."""
    loss, denominator = _empty_loss(input, reduction)
    kernels = _kernels()
    x = as_rows(input)
    num_rows = x.shape[0] * x.shape[2]
    if reduction == "none" and not num_rows:
        return loss, denominator
    invalid = kernels.invalid_buffer(input.device)
    with torch.profiler.record_function("fastcnn::nll_loss"):
        if reduction == "none":
            _backend.record_launch(OP, kernels.forward(x, as_rows(target, 1), weight, loss.view(-1), None, invalid,
                                                       ignore_index=ignore_index, reduce=False))
        else:
            partials = kernels.forward_partials(num_rows)
            partial = torch.empty(2 * partials, dtype=torch.float32, device=input.device)
            _backend.record_launch(OP, kernels.forward(x, as_rows(target, 1), weight, None, partial, invalid,
                                                       ignore_index=ignore_index, reduce=True))
            mean = reduction == "mean"
            _backend.record_launch(OP, _finish(partial, partials, loss, denominator, mean))
        # The one host read of the op: a class index outside [0, C) must not pass silently.
        flagged, value = invalid.tolist()
        if flagged:
            raise IndexError(f"fastcnn.nll_loss: Target {value} is out of bounds.")
    return loss, denominator


def _finish(partial, partials, loss, denominator, mean):
    """Add the (loss, weight) partials in order: over Σ w_y for 'mean', as they are for 'sum'
    (``pointwise_loss``'s finish; its denominator 1 then)."""
    from ..kernels import pointwise_loss

    return pointwise_loss.finish(partial, partials, loss, denominator, 1.0, weight_total=mean)


@_nll_loss_op.register_fake
def _(input, target, weight, ignore_index, reduction):
    return _empty_loss(input, reduction)


@torch.library.custom_op("fastcnn::nll_loss_backward", mutates_args=())
def _nll_loss_backward_op(grad_out: Tensor, input: Tensor, target: Tensor, weight: Optional[Tensor],
                          denominator: Tensor, ignore_index: int, reduction: str) -> Tensor:
    """The input's gradient, laid out as the input (or contiguous where its dims do not merge)."""
    grad_input = empty_rows_like(input)
    if grad_input.numel():
        with torch.profiler.record_function("fastcnn::nll_loss backward"):
            _backend.record_launch(OP, _kernels().backward(
                grad_out if reduction != "none" else as_rows(grad_out, 1), as_rows(target, 1), weight,
                denominator if reduction != "none" else None, rows_view(grad_input), ignore_index=ignore_index))
    return grad_input


@_nll_loss_backward_op.register_fake
def _(grad_out, input, target, weight, denominator, ignore_index, reduction):
    return empty_rows_like(input)


def _setup_context(ctx, inputs, output):
    input, target, weight, ignore_index, reduction = inputs
    ctx.save_for_backward(input, target, weight, output[1])
    ctx.ignore_index, ctx.reduction = ignore_index, reduction
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_loss, _):
    input, target, weight, denominator = ctx.saved_tensors
    return (_nll_loss_backward_op(grad_loss, input, target, weight, denominator, ctx.ignore_index, ctx.reduction),
            None, None, None, None)


_nll_loss_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_nll_loss_op, "loss")
def _nll_loss_launches(outputs, input, target, weight, ignore_index, reduction):
    loss, denominator = outputs
    rows = input.numel() // max(input.shape[1], 1)
    if reduction == "none" and not rows:
        return []
    gathered = rows * input.element_size() + tensor_bytes(target) + tensor_bytes(weight)
    check = one_pass("aten::zero_ (index check)", [], [])
    if reduction == "none":
        return [check, Launch("_nll_loss_forward_kernel", gathered, tensor_bytes(loss))]
    partial_bytes = 8 * _kernels().forward_partials(rows)
    return [check, Launch("_nll_loss_forward_kernel", gathered, partial_bytes, workspace=partial_bytes),
            Launch("_finish_kernel", partial_bytes, tensor_bytes(loss) + tensor_bytes(denominator))]


@launches_of(_nll_loss_backward_op, "loss")
def _nll_loss_backward_launches(grad_input, grad_out, input, target, weight, denominator, ignore_index, reduction):
    return [one_pass("_nll_loss_backward_kernel", [grad_out, target], [grad_input])] if grad_input.numel() else []


# ----------------------------------------------------------------------------- functional
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """``torch.nn.functional.nll_loss``: -weight[y] · input[n, y, ...] for log-probabilities
    ``input`` (N, C), (N, C, d1, ...) or unbatched (C,) and class indices ``target`` (int64 or
    uint8), ``ignore_index`` rows counting nothing; 'mean' divides by the weights of the counted
    rows (NaN when none is). A class index outside [0, C) raises IndexError, read back from the
    device once per call."""
    op = "fastcnn.nll_loss"
    if autocast_runs_in_float32(input, ("cuda", "cpu")):
        with torch.autocast(input.device.type, enabled=False):
            widen = (lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16)
                     else t)
            return nll_loss(widen(input), target, widen(weight), size_average, ignore_index, reduce, reduction)
    reduction = reduction_of(op, size_average, reduce, reduction)
    check_nll_loss(op, input, target, weight, ignore_index)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    loss, _ = _nll_loss_op(input, target, weight, int(ignore_index), reduction)
    return loss.squeeze(0) if unbatched and reduction == "none" else loss
