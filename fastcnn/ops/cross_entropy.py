"""Softmax cross-entropy: ``fastcnn.cross_entropy`` (as ``torch.nn.functional.cross_entropy``)
over ``kernels/cross_entropy.py``: argument checks (torch's, in torch's order), the byte count,
the operators and autograd and the functional. Registered as the PyTorch
operators
``torch.ops.fastcnn.cross_entropy_forward`` and ``torch.ops.fastcnn.cross_entropy_backward_``
(with fake implementations) so that ``torch.compile`` keeps them in its graph.

The forward kernel writes the loss and, when the logits need a gradient, the unscaled gradient
into one logits-sized buffer; backward scales that buffer in place by grad_output (and the
'mean' denominator) and returns it. That buffer is the only logits-sized memory the op adds.
"""
import dataclasses
from typing import Optional

import torch
from torch import Tensor

from .. import _backend, _cost
from .._cost import launches_of, one_pass, tensor_bytes
from .._layout import as_rows, empty_rows_like, rows_view
from ..dtypes import TORCH_FLOAT_DTYPES, aten_type_name, autocast_runs_in_float32
from ..validation import check_kernel_dtype, check_torch_implements

__all__ = ["cross_entropy"]

OP = "cross_entropy"


def _kernels():
    """kernels/cross_entropy.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import cross_entropy

    return cross_entropy


# ----------------------------------------------------------------------------- checks
REDUCTIONS = ("none", "mean", "sum")


def check_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    """Validate F.cross_entropy's arguments as torch does, in torch's order; True when ``target``
    holds class probabilities (same shape as ``input``), False for class indices."""
    op = "fastcnn.cross_entropy"
    for name, tensor in (("input", input), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
    if weight is not None and not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: argument 'weight' must be a Tensor, not {type(weight).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction (expected one of {REDUCTIONS})")
    if not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool):
        raise TypeError(f"{op}: argument 'label_smoothing' must be a float, not {type(label_smoothing).__name__}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: argument 'ignore_index' must be an int, not {type(ignore_index).__name__}")
    if input.dim() == 0:
        raise RuntimeError(f"{op}: input tensor should be 1D or more (the classes), got a 0-d tensor")
    for name, tensor in (("target", target), ("weight", weight)):
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: Input ({input.device}) and {name} ({tensor.device}) should be on the same device")
    classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    probabilities = target.shape == input.shape
    if probabilities:
        if not target.is_floating_point():
            raise RuntimeError(f"{op}: Expected floating point type for target with class probabilities, "
                               f"got {aten_type_name(target.dtype)}")
        if ignore_index >= 0:
            raise RuntimeError(f"{op}: ignore_index is not supported for floating point target")
    # torch's log_softmax runs next, and refuses non-floating logits.
    check_torch_implements(op, "log_softmax", input.dtype, TORCH_FLOAT_DTYPES)
    if not probabilities:
        check_class_targets(op, input, target)
    check_class_weight(op, input, weight, classes, same_dtype=not probabilities)
    check_kernel_dtype(op, input)
    return probabilities


def check_class_targets(op, input, target):
    """Class-index targets as torch's nll_loss_nd checks them (cross_entropy's and nll_loss's):
    one per row of ``input`` (N, C, d1, ...) or (C,), int64 or uint8."""
    expected = (input.shape[0],) + tuple(input.shape[2:]) if input.dim() > 1 else ()
    if input.dim() <= 2 and target.dim() > 1:
        raise RuntimeError(f"{op}: 0D or 1D target tensor expected, multi-target not supported "
                           f"(input {list(input.shape)}, target {list(target.shape)})")
    if input.dim() > 1 and target.dim() >= 1 and target.shape[0] != input.shape[0]:
        raise ValueError(f"{op}: Expected input batch_size ({input.shape[0]}) to match target batch_size "
                         f"({target.shape[0]}).")
    if tuple(target.shape) != expected:
        raise RuntimeError(f"{op}: Expected target size {list(expected)}, got {list(target.shape)}")
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"{op}: expected target dtype to be Long or Byte, but got {aten_type_name(target.dtype)}")


def check_class_weight(op, input, weight, classes, *, same_dtype):
    """A per-class weight as torch checks it: one value per class, floating, and the logits'
    dtype where ``same_dtype`` (class indices; probabilities promote with it instead)."""
    if weight is None:
        return
    if weight.dim() != 1 or weight.shape[0] != classes:
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {classes} classes or no "
                           f"classes but got weight tensor of shape: {list(weight.shape)}")
    if not weight.is_floating_point() or (same_dtype and weight.dtype != input.dtype):
        raise RuntimeError(f"{op}: expected scalar type {aten_type_name(input.dtype)} but found "
                           f"{aten_type_name(weight.dtype)} (the weight's dtype)")


def cross_entropy_loss_dtype(input, target, weight, probabilities):
    """The dtype of torch's loss: the logits' for class indices; for class probabilities, the
    promotion of the logits', the target's and the weight's (fp32 logits, fp64 target: fp64)."""
    if not probabilities:
        return input.dtype
    dtype = torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


# ----------------------------------------------------------------------------- cost
def bytes_moved(rows, classes, element_size, target_size=8):
    """Bytes a fused cross-entropy forward + backward must move at the least: read the logits
    once, write their gradient once, read the class-index targets."""
    return 2 * rows * classes * element_size + rows * target_size


# ----------------------------------------------------------------------------- operators and autograd


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
    kernels = _kernels()
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
            _backend.record_launch(OP, _kernels().scale_grad(
                rows_view(grad), rows, denominator if reduction == "mean" else None, mean=reduction == "mean"))


@_scale_grad_op.register_fake
def _(grad, grad_out, denominator, reduction):
    return None


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_forward_op, "loss")
def _forward_launches(outputs, input, target, weight, ignore_index, reduction, label_smoothing, probabilities, grad,
                      loss_dtype):
    loss, denominator = outputs
    if probabilities and input.shape[1] == 0:
        return [one_pass("aten::fill_", [], [loss]), one_pass("aten::fill_", [], [denominator])]
    rows = input.numel() // max(input.shape[1], 1)
    row_bytes = 2 * rows * 4  # fp32 per-row losses and denominators
    launches = []
    if rows:
        launches.append(one_pass("aten::zero_ (index check)", [], []))
        forward = one_pass("_cross_entropy_kernel", [input, target, weight], [grad], workspace=row_bytes)
        launches.append(dataclasses.replace(forward, bytes_written=forward.bytes_written + row_bytes))
    if reduction != "none":
        launches.append(_cost.Launch("_reduce_rows_kernel", row_bytes, tensor_bytes(loss) + tensor_bytes(denominator)))
    return launches


@launches_of(_scale_grad_op, "loss")
def _scale_grad_launches(_, grad, grad_out, denominator, reduction):
    return [one_pass("_scale_grad_kernel", [grad, grad_out], [grad])] if grad.numel() else []


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


# ----------------------------------------------------------------------------- functional
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy`` on fastcnn's fused Triton kernel.

    ``input`` (N, C), (N, C, d1, ...) or unbatched (C,); ``target`` class indices (N, d1, ...)
    (int64 or uint8) or class probabilities shaped like ``input``. Same options and results as
    torch, including torch's rules for label smoothing with weights and ignore_index, and NaN
    for a 'mean' over no counted target. A class index outside [0, C) that is not
    ``ignore_index`` raises IndexError (read back from the device once per call).
    """
    if autocast_runs_in_float32(input, ("cuda", "cpu")):  # torch's autocast runs cross_entropy in fp32
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
