"""The pointwise losses: ``fastcnn.mse_loss``, ``l1_loss``, ``smooth_l1_loss``, ``huber_loss``,
``binary_cross_entropy``, ``binary_cross_entropy_with_logits`` and ``kl_div``, as
``torch.nn.functional``'s, over ``kernels/pointwise_loss.py``: one forward kernel (the loss,
reduced in fp32 partials added in a fixed order) and one backward kernel (the gradients of the
input, the target and a differentiable weight, in one pass).

Everything of these losses on the PyTorch side lives here, in this order: checks (torch's, in
torch's order and words: F's size warning, broadcasting, legacy ``size_average``/``reduce``, the
result dtype each loss gives mixed dtypes), cost, operators with autograd, and the functionals.
Operands are passed broadcast (stride-0 views: autograd's expand sums their gradients) and in
their own dtypes; the kernels read them in place.
"""
import math
import warnings
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import Launch, launches_of, one_pass, restride, tensor_bytes
from .._layout import elementwise_walk, with_strides
from ..dtypes import KERNEL_DTYPES, aten_type_name, autocast_runs_in_float32

__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "kl_div"]

OP = "pointwise_loss"


def _kernels():
    """kernels/pointwise_loss.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import pointwise_loss

    return pointwise_loss


# ----------------------------------------------------------------------------- checks
def reduction_of(op, size_average, reduce, reduction, allowed=("none", "mean", "sum")):
    """torch's reduction: the legacy ``size_average``/``reduce`` spelled as a string, else
    ``reduction`` checked (torch's ValueError)."""
    if size_average is not None or reduce is not None:
        return torch.nn._reduction.legacy_get_string(size_average, reduce, emit_warning=True)
    if reduction not in allowed:
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction")
    return reduction


def check_tensors(op, function, **tensors):
    for position, (name, tensor) in enumerate(tensors.items(), start=1):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: {function}(): argument '{name}' (position {position}) must be Tensor, not "
                            f"{type(tensor).__name__}")


def warn_size_mismatch(input, target):
    """F.mse_loss's (l1, smooth L1, Huber) warning: a target that only broadcasts to the input."""
    if target.size() != input.size():
        warnings.warn(f"Using a target size ({target.size()}) that is different to the input size ({input.size()}). "
                      "This will likely lead to incorrect results due to broadcasting. "
                      "Please ensure they have the same size.", stacklevel=3)


def check_not_differentiable(op, function, **tensors):
    """torch's refusal of a gradient it does not define (BCE's weights)."""
    for name, tensor in tensors.items():
        if tensor is not None and tensor.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{op}: The function '{function}' is not differentiable with respect to argument "
                               f"'{name}'. This input cannot have requires_grad True.")


def check_loss_dtype(op, aten_name, dtype):
    """The loss's dtype must be one torch computes the op in and one the kernels take: torch's
    NotImplementedError for integers, fastcnn's TypeError for float64 (see
    validation.check_kernel_dtype)."""
    if not dtype.is_floating_point:
        raise NotImplementedError(f"{op}: \"{aten_name}\" not implemented for '{aten_type_name(dtype)}'")
    if dtype not in KERNEL_DTYPES:
        raise TypeError(f"{op}: a loss of dtype {dtype} is not supported by fastcnn's kernels (torch computes it; "
                        f"fastcnn takes {', '.join(str(d) for d in KERNEL_DTYPES)})")


def check_same_device(op, input, **others):
    for name, tensor in others.items():
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two "
                               f"devices, {input.device} and {tensor.device}! ({name})")


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward=True):
    """Forward reads the input and the target; backward reads them and writes the input's
    gradient (a reduced loss and the 0-d grad_output aside)."""
    return numel * element_size * (5 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
def _walk(input, target, weight, pos_weight):
    """(the kernels' ElementwiseWalk, the operands it walks): the operands themselves, or
    contiguous copies where their strides do not collapse to four dims."""
    operands = [input, target, weight, pos_weight]
    walk = elementwise_walk(input.shape, operands)
    if walk is None:
        operands = [o.contiguous() if o is not None else None for o in operands]
        walk = elementwise_walk(input.shape, operands)
    return walk, operands


def _empty_loss(walk, input, reduction, loss_dtype):
    """(loss, the 0-d fp32 denominator of a reduced loss or an empty tensor); a 'none' loss laid
    out as ``walk`` writes it."""
    if reduction == "none":
        return (walk.empty(input.shape, loss_dtype, input.device),
                torch.empty(0, dtype=torch.float32, device=input.device))
    return (torch.empty((), dtype=loss_dtype, device=input.device),
            torch.empty((), dtype=torch.float32, device=input.device))


@torch.library.custom_op("fastcnn::pointwise_loss", mutates_args=())
def _loss_op(input: Tensor, target: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor], kind: str,
             reduction: str, divisor: float, parameter: float, loss_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(loss, denominator) of operands broadcast to one shape, arguments validated. ``reduction``
    'none', 'sum' or 'mean' (over ``divisor``), or 'weight_mean' (over the sum of ``weight``)."""
    walk, (x, t, w, p) = _walk(input, target, weight, pos_weight)
    loss, denominator = _empty_loss(walk, input, reduction, loss_dtype)
    if reduction == "none" and not loss.numel():
        return loss, denominator
    kernels = _kernels()
    reduce, weight_total = reduction != "none", reduction == "weight_mean"
    check_range = kind == "bce"
    invalid = kernels.invalid_buffer(input.device) if check_range else None
    with torch.profiler.record_function(f"fastcnn::{kind}_loss"):
        if reduce:
            partials = kernels.forward_partials(walk.numel)
            partial = torch.empty(partials * (2 if weight_total else 1), dtype=torch.float32, device=input.device)
            _backend.record_launch(OP, kernels.forward(walk, kind, x, t, w, p, parameter, loss, partial, invalid,
                                                       reduce=True, weight_total=weight_total,
                                                       check_range=check_range))
            _backend.record_launch(OP, kernels.finish(partial, partials, loss, denominator, divisor,
                                                      weight_total=weight_total))
        else:
            _backend.record_launch(OP, kernels.forward(walk, kind, x, t, w, p, parameter, loss, None, invalid,
                                                       reduce=False, weight_total=False, check_range=check_range))
        # BCE's one host read: torch refuses probabilities outside [0, 1] rather than return garbage.
        if check_range and invalid.item():
            raise RuntimeError("fastcnn.binary_cross_entropy: all elements of input should be between 0 and 1")
    return loss, denominator


@_loss_op.register_fake
def _(input, target, weight, pos_weight, kind, reduction, divisor, parameter, loss_dtype):
    return _empty_loss(_walk(input, target, weight, pos_weight)[0], input, reduction, loss_dtype)


def _empty_gradients(walk, input, target, weight, needs_grad):
    """The gradients ``needs_grad`` asks for, laid out as ``walk`` writes them (the walk of every
    operand, pos_weight's included: it decides whether the walk is flat), empty tensors for the
    others."""
    return tuple(walk.empty(tensor.shape, tensor.dtype, tensor.device) if needed
                 else torch.empty(0, dtype=tensor.dtype, device=tensor.device)
                 for tensor, needed in zip((input, target, weight if weight is not None else input), needs_grad))


@torch.library.custom_op("fastcnn::pointwise_loss_backward", mutates_args=())
def _loss_backward_op(grad_out: Tensor, input: Tensor, target: Tensor, weight: Optional[Tensor],
                      pos_weight: Optional[Tensor], loss: Tensor, denominator: Tensor, kind: str, reduction: str,
                      parameter: float, needs_grad: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of the input, the target and the weight that ``needs_grad`` asks for (an
    empty tensor for the others), in one pass."""
    walk, (x, t, w, p) = _walk(input, target, weight, pos_weight)
    grads = _empty_gradients(walk, input, target, weight, needs_grad)
    if not input.numel() or not any(needs_grad):
        return grads
    reduce = reduction != "none"
    if not reduce:
        grad_out = with_strides(grad_out, walk.out_strides)
    with torch.profiler.record_function(f"fastcnn::{kind}_loss backward"):
        _backend.record_launch(OP, _kernels().backward(
            walk, kind, grad_out, x, t, w, p, parameter, loss, denominator,
            *(g if needed else None for g, needed in zip(grads, needs_grad)), reduce=reduce,
            weight_total=reduction == "weight_mean"))
    return grads


@_loss_backward_op.register_fake
def _(grad_out, input, target, weight, pos_weight, loss, denominator, kind, reduction, parameter, needs_grad):
    return _empty_gradients(_walk(input, target, weight, pos_weight)[0], input, target, weight, needs_grad)


def _setup_context(ctx, inputs, output):
    input, target, weight, pos_weight, kind, reduction, _, parameter, _ = inputs
    loss, denominator = output
    ctx.save_for_backward(input, target, weight, pos_weight, loss, denominator)
    ctx.kind, ctx.reduction, ctx.parameter = kind, reduction, parameter
    ctx.mark_non_differentiable(denominator)


def _backward(ctx, grad_loss, _):
    input, target, weight, pos_weight, loss, denominator = ctx.saved_tensors
    needs_grad = [bool(n) for n in ctx.needs_input_grad[:3]]
    if weight is None:
        needs_grad[2] = False
    grads = _loss_backward_op(grad_loss, input, target, weight, pos_weight, loss, denominator, ctx.kind,
                              ctx.reduction, ctx.parameter, needs_grad)
    return (*(g if needed else None for g, needed in zip(grads, needs_grad)), None, None, None, None, None, None)


_loss_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_loss_op, "loss")
def _loss_launches(outputs, input, target, weight, pos_weight, kind, reduction, divisor, parameter, loss_dtype):
    loss, denominator = outputs
    operands = [input, target, weight, pos_weight]
    if reduction == "none":
        return [one_pass("_pointwise_loss_forward_kernel", operands, [loss])] if loss.numel() else []
    partial_bytes = 4 * _kernels().forward_partials(input.numel()) * (2 if reduction == "weight_mean" else 1)
    forward = one_pass("_pointwise_loss_forward_kernel", operands, [], workspace=partial_bytes)
    return [Launch(forward.kernel, forward.bytes_read, partial_bytes, workspace=partial_bytes),
            Launch("_finish_kernel", partial_bytes, tensor_bytes(loss) + tensor_bytes(denominator))]


@launches_of(_loss_backward_op, "loss")
def _loss_backward_launches(grads, grad_out, input, target, weight, pos_weight, loss, denominator, kind, reduction,
                            parameter, needs_grad):
    if not input.numel() or not any(needs_grad):
        return []
    walk, _ = _walk(input, target, weight, pos_weight)
    copies = restride(grad_out, walk.out_strides) if reduction == "none" else []
    return copies + [one_pass("_pointwise_loss_backward_kernel", [grad_out, input, target, weight, pos_weight],
                              [g for g, needed in zip(grads, needs_grad) if needed])]


# ----------------------------------------------------------------------------- functionals
AUTOCAST_DEVICES = ("cuda", "cpu")


def _widened(*tensors):
    """Autocast runs the losses in fp32: 16-bit floating tensors widened, the others kept."""
    return tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16) else t
                 for t in tensors)


def _pointwise_loss(op, kind, input, target, weight, pos_weight, reduction, parameter, loss_dtype, divisor=None):
    """The shared tail of the functionals: fallback or the operator on broadcast operands."""
    shape = input.shape
    operands = [o.expand(shape) if o is not None and o.shape != shape else o
                for o in (input, target, weight, pos_weight)]
    if reduction == "mean" and divisor is None:
        divisor = math.prod(shape)
    loss, _ = _loss_op(*operands, kind, reduction, float(divisor if divisor is not None else 1.0), float(parameter),
                       loss_dtype)
    return loss


def _broadcast(op, *tensors):
    """``tensors`` broadcast to one shape, as views (torch.broadcast_tensors, its error in its words)."""
    try:
        return torch.broadcast_tensors(*tensors)
    except RuntimeError as error:
        raise RuntimeError(f"{op}: {error}") from None


def _regression_loss(op, kind, aten_name, input, target, size_average, reduce, reduction, weight, parameter,
                     weight_mean):
    """mse, l1 and smooth L1 (and Huber, whose reduction has no legacy spelling): F's order."""
    check_tensors(op, kind + "_loss", input=input, target=target, weight=weight)
    if autocast_runs_in_float32(input, AUTOCAST_DEVICES):
        with torch.autocast(input.device.type, enabled=False):
            return _regression_loss(op, kind, aten_name, *_widened(input, target), size_average, reduce,
                                    reduction, *_widened(weight), parameter, weight_mean)
    warn_size_mismatch(input, target)
    reduction = reduction_of(op, size_average, reduce, reduction)
    input, target = _broadcast(op, input, target)
    check_same_device(op, input, target=target, weight=weight)
    if kind == "huber":  # torch's huber_loss writes into the input's dtype
        loss_dtype = input.dtype
        if not loss_dtype.is_floating_point and target.dtype.is_floating_point:
            raise RuntimeError(f"{op}: result type {aten_type_name(target.dtype)} can't be cast to the desired "
                               f"output type {aten_type_name(loss_dtype)}")
    else:
        loss_dtype = torch.promote_types(input.dtype, target.dtype)
    if weight is not None:
        if weight.size() != input.size():
            raise ValueError(f"{op}: Weights and input must have the same size.")
        loss_dtype = torch.promote_types(loss_dtype, weight.dtype)
    check_loss_dtype(op, aten_name, loss_dtype)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return None
    if weight is not None and weight_mean and reduction == "mean":
        reduction = "weight_mean"
    return _pointwise_loss(op, kind, input, target, weight, None, reduction, parameter, loss_dtype)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """``torch.nn.functional.mse_loss``: (input - target)², kept or reduced; with ``weight``
    (shaped as the input) Σ w·e over Σ w for 'mean'."""
    loss = _regression_loss("fastcnn.mse_loss", "mse", "mse_cpu", input, target, size_average, reduce, reduction,
                            weight, 0.0, weight_mean=True)
    return loss if loss is not None else torch.nn.functional.mse_loss(input, target, size_average, reduce, reduction,
                                                                      weight=weight)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """``torch.nn.functional.l1_loss``: |input - target|, kept or reduced (``weight`` as mse_loss's)."""
    loss = _regression_loss("fastcnn.l1_loss", "l1", "abs_cpu", input, target, size_average, reduce, reduction,
                            weight, 0.0, weight_mean=True)
    return loss if loss is not None else torch.nn.functional.l1_loss(input, target, size_average, reduce, reduction,
                                                                     weight=weight)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """``torch.nn.functional.smooth_l1_loss``: quadratic below ``beta``, linear above (beta = 0
    is l1_loss)."""
    op = "fastcnn.smooth_l1_loss"
    if beta < 0:
        raise RuntimeError(f"{op}: smooth_l1_loss does not support negative values for beta.")
    loss = _regression_loss(op, "smooth_l1", "smooth_l1_cpu", input, target, size_average, reduce, reduction, None,
                            float(beta), weight_mean=False)
    return loss if loss is not None else torch.nn.functional.smooth_l1_loss(input, target, size_average, reduce,
                                                                            reduction, beta)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """``torch.nn.functional.huber_loss``: quadratic below ``delta``, delta-scaled linear above;
    with ``weight``, w·e kept or reduced ('mean' over the element count, as torch)."""
    op = "fastcnn.huber_loss"
    if delta <= 0:
        raise RuntimeError(f"{op}: huber_loss does not support non-positive values for delta.")
    loss = _regression_loss(op, "huber", "huber_cpu", input, target, None, None, reduction, weight, float(delta),
                            weight_mean=False)
    return loss if loss is not None else torch.nn.functional.huber_loss(input, target, reduction, delta,
                                                                        weight=weight)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """``torch.nn.functional.binary_cross_entropy`` of probabilities in [0, 1] (torch's clamp of
    each log at -100; a probability outside [0, 1] raises, read back once per call). ``weight``
    broadcasts to the target and is not differentiable, as in torch."""
    op = "fastcnn.binary_cross_entropy"
    check_tensors(op, "binary_cross_entropy", input=input, target=target, weight=weight)
    if autocast_runs_in_float32(input, ("cuda",)):
        raise RuntimeError(
            f"{op}: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
            "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
            "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
            "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
            "safe to autocast.")
    if autocast_runs_in_float32(input, ("cpu",)):  # on the CPU, torch's autocast runs it in fp32
        with torch.autocast(input.device.type, enabled=False):
            return binary_cross_entropy(*_widened(input, target, weight), size_average, reduce, reduction)
    reduction = reduction_of(op, size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(f"{op}: Using a target size ({target.size()}) that is different to the input size "
                         f"({input.size()}) is deprecated. Please ensure they have the same size.")
    if weight is not None:
        try:
            weight = weight.expand(torch.broadcast_shapes(target.size(), weight.size()))
        except RuntimeError as error:
            raise RuntimeError(f"{op}: {error}") from None
    check_same_device(op, input, target=target, weight=weight)
    for name, tensor in (("target", target), ("weight", weight)):
        if tensor is not None and tensor.dtype != input.dtype:
            raise RuntimeError(f"{op}: Found dtype {aten_type_name(tensor.dtype)} but expected "
                               f"{aten_type_name(input.dtype)} ({name})")
    check_loss_dtype(op, "binary_cross_entropy", input.dtype)
    check_not_differentiable(op, "binary_cross_entropy", weight=weight)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.binary_cross_entropy(input, target, weight, reduction=reduction)
    return _pointwise_loss(op, "bce", input, target, weight, None, reduction, 0.0, input.dtype)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """``torch.nn.functional.binary_cross_entropy_with_logits``: sigmoid and BCE in one stable
    formula; ``weight`` broadcasts to the input, ``pos_weight`` (one per class, the last dim) to the
    target. The loss has the target's dtype, as torch's."""
    op = "fastcnn.binary_cross_entropy_with_logits"
    check_tensors(op, "binary_cross_entropy_with_logits", input=input, target=target, weight=weight,
                  pos_weight=pos_weight)
    if autocast_runs_in_float32(input, AUTOCAST_DEVICES):
        with torch.autocast(input.device.type, enabled=False):
            return binary_cross_entropy_with_logits(*_widened(input, target, weight), size_average, reduce, reduction,
                                                    *_widened(pos_weight))
    reduction = reduction_of(op, size_average, reduce, reduction)
    if target.size() != input.size():
        raise ValueError(f"{op}: Target size ({target.size()}) must be the same as input size ({input.size()})")
    if pos_weight is not None:  # torch's (pos_weight - 1) * target: its broadcast error
        pos_weight = _broadcast(op, pos_weight, target)[0]
    if weight is not None:
        weight = _broadcast(op, input, weight)[1]
        if weight.shape != input.shape:
            raise RuntimeError(f"{op}: output with shape {list(input.shape)} doesn't match the broadcast shape "
                               f"{list(weight.shape)}")
    check_same_device(op, input, target=target, weight=weight, pos_weight=pos_weight)
    if not input.dtype.is_floating_point:
        raise NotImplementedError(f"{op}: \"log_sigmoid_cpu\" not implemented for '{aten_type_name(input.dtype)}'")
    if not target.dtype.is_floating_point:
        raise RuntimeError(f"{op}: result type {aten_type_name(input.dtype)} can't be cast to the desired output "
                           f"type {aten_type_name(target.dtype)}")
    check_loss_dtype(op, "binary_cross_entropy_with_logits", target.dtype)
    check_loss_dtype(op, "binary_cross_entropy_with_logits", input.dtype)
    check_not_differentiable(op, "binary_cross_entropy_with_logits", weight=weight, pos_weight=pos_weight)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                                    pos_weight=pos_weight)
    return _pointwise_loss(op, "bce_with_logits", input, target, weight, pos_weight, reduction, 0.0, target.dtype)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """``torch.nn.functional.kl_div`` of log-probabilities ``input`` against probabilities
    ``target`` (log-probabilities with ``log_target``): 'batchmean' divides the sum by the batch
    size, 'mean' by the element count (with torch's warning)."""
    op = "fastcnn.kl_div"
    check_tensors(op, "kl_div", input=input, target=target)
    if autocast_runs_in_float32(input, AUTOCAST_DEVICES):
        with torch.autocast(input.device.type, enabled=False):
            return kl_div(*_widened(input, target), size_average, reduce, reduction, log_target)
    if size_average is not None or reduce is not None:
        reduction = reduction_of(op, size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      stacklevel=2)
    elif reduction not in ("none", "sum", "batchmean"):
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction")
    if not input.dtype.is_floating_point or not target.dtype.is_floating_point:
        raise RuntimeError(f"{op}: kl_div: Integral inputs not supported.")
    shape_input, shape_target = _broadcast(op, input, target)
    check_same_device(op, input, target=target)
    loss_dtype = torch.promote_types(input.dtype, target.dtype)
    check_loss_dtype(op, "kl_div", loss_dtype)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.kl_div(input, target, reduction=reduction, log_target=log_target)
    divisor = None
    if reduction == "batchmean":
        reduction, divisor = ("mean", input.shape[0]) if input.dim() else ("sum", None)
    return _pointwise_loss(op, "kl_div_log_target" if log_target else "kl_div", shape_input, shape_target, None,
                           None, reduction, 0.0, loss_dtype, divisor)
