"""conv2d: ``fastcnn.conv2d`` (functional, as ``torch.nn.functional.conv2d``) over the Triton
kernels of ``kernels/conv2d.py`` (implicit GEMMs, and direct kernels for depthwise layers).

Everything conv2d is on the PyTorch side lives here, in this order: its argument checks and
geometry (torch's contract, in torch's order), its cost formula, its PyTorch operators
(``torch.ops.fastcnn.conv2d`` and its three gradient ops, with fake implementations and an
autograd formula, so ``torch.compile`` sees one opaque node per launch instead of breaking the
graph) and the functional.

The output, grad-input and grad-weight take the memory format PyTorch's convolution gives them
(channels_last when the input's or the weight's ``suggest_memory_format()`` is) and are written
through their strides. The implicit GEMMs read operands whose channels are contiguous; an NCHW
operand is copied to channels_last first (kernels/conv2d_gemm.py, ``channels_contiguous``, says
why and what it costs). The depthwise kernels and the bias read every layout as it is.

The input prologue (kernels/prologue.py): ``conv2d(..., input_scale=, input_shift=,
input_activation=)`` and ``batch_norm_conv2d`` (a batch norm, its activation and the convolution
after it) normalise each input tile as the kernels load it, so act(bn(x)) is never written, read
back or kept: ``fastcnn::conv2d_normalized`` saves x and six floats per channel, its backward
recomputes act(bn(x)) inside the weight gradient's loads and runs batch norm's own backward
(ops/batch_norm.py) on the gradient of act(bn(x)) that grad-input produces.

The moments epilogue (kernels/moments.py): ``conv2d_with_moments`` (``fastcnn::conv2d_moments``,
and ``fastcnn::conv2d_normalized_moments`` under ``batch_norm_conv2d(emit_moments=True)``) also
returns the output's per-channel summaries, from which the batch norm that reads the output
takes its training statistics (``fastcnn.batch_norm(..., moments=)``) without a pass over it.
"""
import dataclasses
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _backend, _cost
from .._cost import Launch, launches_of, one_pass, tensor_bytes
from .._layout import suggests_channels_last
from ..dtypes import TORCH_FLOAT_DTYPES, TORCH_INTEGER_DTYPES
from ..validation import (autocast_dtype, check_kernel_dtype, check_parameter_dtypes, check_same_kind,
                          check_torch_implements, int_pair)
from . import batch_norm as _batch_norm
from .activation import module_for, resolve_activation

__all__ = ["conv2d", "batch_norm_conv2d", "conv2d_with_moments"]

OP = "conv2d"
# What torch's own convolution computes in (it raises NotImplementedError for the rest).
TORCH_DTYPES = TORCH_FLOAT_DTYPES + TORCH_INTEGER_DTYPES + (torch.complex64, torch.complex128)


def _kernels():
    """kernels/conv2d.py, imported on the first launch (so that TRITON_INTERPRET may be set until
    then) and only when ``_backend.backend_for`` has found a usable triton."""
    from ..kernels import conv2d

    return conv2d


# ----------------------------------------------------------------------------- checks and geometry
class Conv2dGeometry(NamedTuple):
    """Normalised conv2d arguments. ``padding`` is the (top, left) padding; ``total_padding`` what
    is added to the height and width in all (one more than twice ``padding`` for padding='same'
    with an even dilated kernel, as torch pads the odd element at the bottom/right)."""
    stride: tuple
    padding: tuple
    total_padding: tuple
    dilation: tuple
    groups: int
    out_size: tuple


def conv2d_output_size(size, kernel, total_padding, dilation, stride):
    """The (height, width) of a convolution's output: floor((size + padding - dilated kernel) / stride) + 1."""
    return tuple((n + t - d * (k - 1) - 1) // s + 1 for n, k, t, d, s in zip(size, kernel, total_padding, dilation, stride))


def check_conv2d(input, weight, bias, stride, padding, dilation, groups):
    """Validate F.conv2d's arguments the way torch does and return their ``Conv2dGeometry``."""
    op = "fastcnn.conv2d"
    for name, tensor in (("input", input), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
    stride = int_pair(op, "stride", stride)
    dilation = int_pair(op, "dilation", dilation)
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"{op}: argument 'groups' must be an int, not {type(groups).__name__}")
    check_same_kind(op, input, {"weight": weight, "bias": bias})
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
                           f"{list(input.shape)}")
    if weight.dim() != 4:
        raise RuntimeError(f"{op}: Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight "
                           f"{list(weight.shape)}, but got {input.dim()}-dimensional input of size "
                           f"{list(input.shape)} instead: conv2d needs a 4-dimensional weight")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{op}: non-positive stride is not supported (stride={list(stride)})")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{op}: dilation should be greater than zero, but got {list(dilation)}")
    if groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported (groups={groups})")
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            padding, total = (0, 0), (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions "
                                   f"(stride={list(stride)})")
            # torch pads d*(k-1) in total, the odd element (if any) at the bottom/right.
            total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
            padding = tuple(t // 2 for t in total)
        else:
            raise RuntimeError(f"{op}: Invalid padding string: {padding!r} (expected 'valid' or 'same')")
    else:
        padding = int_pair(op, "padding", padding)
        if any(p < 0 for p in padding):
            raise RuntimeError(f"{op}: negative padding is not supported (padding={list(padding)})")
        total = tuple(2 * p for p in padding)

    batched_shape = list(input.shape) if input.dim() == 4 else [1] + list(input.shape)
    if weight.shape[0] < groups:
        raise RuntimeError(f"{op}: Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
                           f"but got weight of size {list(weight.shape)} instead")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {list(weight.shape)} instead")
    if batched_shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"{op}: Given groups={groups}, weight of size {list(weight.shape)}, expected "
                           f"input{batched_shape} to have {weight.shape[1] * groups} channels, but got "
                           f"{batched_shape[1]} channels instead")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(f"{op}: Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional "
                           f"with {weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead")
    padded = tuple(size + t for size, t in zip(batched_shape[2:], total))
    dilated_kernel = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if any(p < k for p, k in zip(padded, dilated_kernel)):
        raise RuntimeError(f"{op}: Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel size: "
                           f"({dilated_kernel[0]} x {dilated_kernel[1]}). Kernel size can't be greater than actual "
                           f"input size")
    out_size = conv2d_output_size(batched_shape[2:], kernel, total, dilation, stride)
    check_torch_implements(op, "conv2d", input.dtype, TORCH_DTYPES)
    check_kernel_dtype(op, input)
    return Conv2dGeometry(stride, padding, total, dilation, groups, out_size)


# ----------------------------------------------------------------------------- cost
def flops(batch, in_channels, out_channels, groups, kernel_size, out_size):
    """FLOPs of one conv2d pass (forward, grad-input or grad-weight: the same GEMM size):
    2 · N · P · Q · K · (C / groups) · R · S."""
    return 2 * batch * math.prod(out_size) * out_channels * (in_channels // groups) * math.prod(kernel_size)


# ----------------------------------------------------------------------------- operators and autograd


def _memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def _channels_last(input, weight):
    """torch's rule (cudnn_conv_suggest_memory_format): the output and both gradients are
    channels_last when the input's or the weight's ``suggest_memory_format()`` is, which includes
    a 1x1 weight whose strides are both contiguous and channels_last."""
    return suggests_channels_last(input) or suggests_channels_last(weight)


def uses_tf32(dtype, device):
    """Whether PyTorch's own convolution would run this fp32 conv in TF32 (cuDNN on a CUDA device
    with ``torch.backends.cudnn.allow_tf32``, on by default), so fastcnn does exactly the same.
    The benchmarks and the profiler ask this too, so every comparison runs both sides alike."""
    if dtype != torch.float32 or torch.device(device).type != "cuda":
        return False
    precision = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def dot_precision(tensor):
    """The kernels' ``dot_precision`` for operands like ``tensor``: 'tf32' or 'ieee'."""
    return "tf32" if uses_tf32(tensor.dtype, tensor.device) else "ieee"


def _empty_output(input, weight, total_padding, stride, dilation):
    # torch gives an input without channels an output without channels, whatever the weight.
    out_channels = weight.shape[0] if input.shape[1] else 0
    out_size = conv2d_output_size(input.shape[2:], weight.shape[2:], total_padding, dilation, stride)
    return torch.empty((input.shape[0], out_channels, *out_size), dtype=input.dtype, device=input.device,
                       memory_format=_memory_format(_channels_last(input, weight)))


@torch.library.custom_op("fastcnn::conv2d", mutates_args=())
def _conv2d_op(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
               total_padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """conv2d of a 4-d input; ``padding`` is (top, left), ``total_padding`` what is added to the
    height and width in all (they differ only for padding='same' with an even kernel)."""
    out = _empty_output(input, weight, total_padding, stride, dilation)
    if out.numel():
        with torch.profiler.record_function("fastcnn::conv2d forward"):
            _backend.record_launch(OP, _kernels().forward(
                input, weight, bias, out, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=dot_precision(input)))
    return out


@_conv2d_op.register_fake
def _(input, weight, bias, stride, padding, total_padding, dilation, groups):
    return _empty_output(input, weight, total_padding, stride, dilation)


def _empty_gradient(shape, like, channels_last):
    """An uninitialised grad-input or grad-weight of ``shape`` with ``like``'s dtype and device."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_memory_format(channels_last))


def _gradient(pass_name, launcher, operands, shape, like, channels_last, stride, padding, dilation, groups):
    """A grad-input or grad-weight tensor of ``shape`` (``like``'s dtype and device) filled by the
    ``launcher`` of kernels/conv2d.py from ``operands``."""
    result = _empty_gradient(shape, like, channels_last)
    if result.numel():
        with torch.profiler.record_function(f"fastcnn::conv2d {pass_name}"):
            _backend.record_launch(OP, getattr(_kernels(), launcher)(
                *operands, result, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=dot_precision(like)))
    return result


@torch.library.custom_op("fastcnn::conv2d_input_grad", mutates_args=())
def _conv2d_input_grad_op(grad_out: Tensor, weight: Tensor, input_shape: list[int], channels_last: bool,
                          stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    return _gradient("grad_input", "input_grad", (grad_out, weight), input_shape, weight, channels_last, stride,
                     padding, dilation, groups)


@_conv2d_input_grad_op.register_fake
def _(grad_out, weight, input_shape, channels_last, stride, padding, dilation, groups):
    return _empty_gradient(input_shape, weight, channels_last)


@torch.library.custom_op("fastcnn::conv2d_weight_grad", mutates_args=())
def _conv2d_weight_grad_op(input: Tensor, grad_out: Tensor, weight_shape: list[int], channels_last: bool,
                           stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    return _gradient("grad_weight", "weight_grad", (input, grad_out), weight_shape, input, channels_last, stride,
                     padding, dilation, groups)


@_conv2d_weight_grad_op.register_fake
def _(input, grad_out, weight_shape, channels_last, stride, padding, dilation, groups):
    return _empty_gradient(weight_shape, input, channels_last)


@torch.library.custom_op("fastcnn::conv2d_bias_grad", mutates_args=())
def _conv2d_bias_grad_op(grad_out: Tensor) -> Tensor:
    """The sum of ``grad_out`` over every dimension but the channels."""
    grad_bias = torch.empty(grad_out.shape[1], dtype=grad_out.dtype, device=grad_out.device)
    if grad_bias.numel():
        with torch.profiler.record_function("fastcnn::conv2d grad_bias"):
            _backend.record_launch(OP, _kernels().bias_grad(grad_out, grad_bias))
    return grad_bias


@_conv2d_bias_grad_op.register_fake
def _(grad_out):
    return grad_out.new_empty(grad_out.shape[1])


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, total_padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = (list(stride), list(padding), list(dilation), groups)
    ctx.channels_last = _channels_last(input, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out):
    input, weight = ctx.saved_tensors
    grad_input = grad_weight = grad_bias = None
    groups = ctx.geometry[3]
    if ctx.needs_input_grad[0] and ctx.needs_input_grad[1] and not _kernels().is_direct(input.shape[1], groups):
        # Both GEMMs read dy with contiguous channels: an NCHW gradient is copied once for the two
        # (kernels/conv2d_gemm.py's channels_contiguous), not once in each.
        grad_out = _kernels().conv2d_gemm.channels_contiguous(grad_out)
    # The weight's gradient first: the layout copy of the input it may make is freed before the
    # input's gradient is allocated.
    if ctx.needs_input_grad[1]:
        grad_weight = _conv2d_weight_grad_op(input, grad_out, list(weight.shape), ctx.channels_last, *ctx.geometry)
    if ctx.needs_input_grad[0]:
        grad_input = _conv2d_input_grad_op(grad_out, weight, list(input.shape), ctx.channels_last, *ctx.geometry)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        if grad_out.shape[1] == weight.shape[0]:
            grad_bias = _conv2d_bias_grad_op(grad_out)
        else:  # the channel-less output above did not use the bias
            grad_bias = weight.new_zeros(weight.shape[0])
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- the input prologue
# conv2d(act(bn(x)), w, b) as one node: the statistics (``fastcnn::batch_norm_statistics``, or (0, 1)
# for a plain affine) are its input, the normalised tensor never exists.
@torch.library.custom_op("fastcnn::conv2d_normalized", mutates_args=())
def _conv2d_normalized_op(input: Tensor, stats: Tensor, norm_weight: Optional[Tensor], norm_bias: Optional[Tensor],
                          training: bool, kind: Optional[str], parameter: float, weight: Tensor, bias: Optional[Tensor],
                          stride: list[int], padding: list[int], total_padding: list[int], dilation: list[int],
                          groups: int) -> Tensor:
    """conv2d(act(batch_norm(input)), weight, bias): batch norm from ``stats`` (fp32 [STATISTICS_ROWS, C]
    as ``fastcnn::batch_norm_statistics`` gives them, with the prologue's coefficients of
    ``norm_weight`` and ``norm_bias``: kernels/prologue.py; ``training``: the batch's), its affine
    ``norm_weight`` and ``norm_bias`` (for batch norm's backward), the activation ``kind`` (None
    for none)."""
    out = _empty_output(input, weight, total_padding, stride, dilation)
    if out.numel():
        with torch.profiler.record_function("fastcnn::conv2d forward (normalised input)"):
            _backend.record_launch(OP, _kernels().forward(
                input, weight, bias, out, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=dot_precision(input),
                prologue=_batch_norm.input_prologue(stats, kind, parameter)))
    return out


@_conv2d_normalized_op.register_fake
def _(input, stats, norm_weight, norm_bias, training, kind, parameter, weight, bias, stride, padding, total_padding,
      dilation, groups):
    return _empty_output(input, weight, total_padding, stride, dilation)


@torch.library.custom_op("fastcnn::conv2d_normalized_weight_grad", mutates_args=())
def _conv2d_normalized_weight_grad_op(input: Tensor, stats: Tensor, norm_weight: Optional[Tensor],
                                      norm_bias: Optional[Tensor], training: bool, kind: Optional[str],
                                      parameter: float, grad_out: Tensor, weight_shape: list[int],
                                      channels_last: bool, stride: list[int], padding: list[int],
                                      dilation: list[int], groups: int) -> Tensor:
    """The weight gradient of conv2d(act(batch_norm(input)), w), act(batch_norm(input))
    recomputed as input is loaded."""
    result = _empty_gradient(weight_shape, input, channels_last)
    if result.numel():
        with torch.profiler.record_function("fastcnn::conv2d grad_weight (normalised input)"):
            _backend.record_launch(OP, _kernels().weight_grad(
                input, grad_out, result, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=dot_precision(input),
                prologue=_batch_norm.input_prologue(stats, kind, parameter)))
    return result


@_conv2d_normalized_weight_grad_op.register_fake
def _(input, stats, norm_weight, norm_bias, training, kind, parameter, grad_out, weight_shape, channels_last, stride,
      padding, dilation, groups):
    return _empty_gradient(weight_shape, input, channels_last)


@torch.library.custom_op("fastcnn::conv2d_normalized_input_grad", mutates_args=())
def _conv2d_normalized_input_grad_op(grad_out: Tensor, weight: Tensor, input: Tensor, stats: Tensor,
                                     norm_weight: Optional[Tensor], norm_bias: Optional[Tensor], training: bool,
                                     kind: Optional[str], parameter: float, channels_last: bool, stride: list[int],
                                     padding: list[int], dilation: list[int], groups: int) -> tuple[Tensor, Tensor]:
    """For conv2d(act(batch_norm(input)), weight): g = act'·(the gradient of act(batch_norm(input))),
    the grad-input kernel's result taken through the activation's derivative in its epilogue (the
    implicit GEMM's or the depthwise kernel's), and the partial sums of g and g·x̂ (fp32
    [slots, 2, C]) for ``fastcnn::batch_norm_backward_from_sums``."""
    grad = _empty_gradient(list(input.shape), weight, channels_last)
    sums = _input_grad_sums(grad, stride, groups)
    if grad.numel():
        with torch.profiler.record_function("fastcnn::conv2d grad_input (and batch norm's sums)"):
            _backend.record_launch(OP, _kernels().input_grad(
                grad_out, weight, grad, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=dot_precision(weight),
                epilogue=(input, _batch_norm.input_prologue(stats, kind, parameter),
                          sums)))
    return grad, sums


@_conv2d_normalized_input_grad_op.register_fake
def _(grad_out, weight, input, stats, norm_weight, norm_bias, training, kind, parameter, channels_last, stride,
      padding, dilation, groups):
    grad = _empty_gradient(list(input.shape), weight, channels_last)
    return grad, _input_grad_sums(grad, stride, groups)


def _input_grad_sums(grad, stride, groups):
    """The fp32 [slots, 2, C] buffer the grad-input epilogue fills for ``grad`` (kernels/conv2d.py)."""
    return torch.empty((_kernels().input_grad_sum_slots(grad, stride, groups), 2, grad.shape[1]), dtype=torch.float32,
                       device=grad.device)


def _setup_normalized_context(ctx, inputs, output):
    """Saved: the input, its statistics, the norm's affine parameters and the weight (the
    parameters are the module's own tensors: no memory of their own); act(bn(x)) is not saved."""
    (input, stats, norm_weight, norm_bias, training, kind, parameter, weight, bias, stride, padding, total_padding,
     dilation, groups) = inputs
    ctx.save_for_backward(input, stats, norm_weight, norm_bias, weight)
    ctx.normalization = (training, kind, parameter)
    ctx.geometry = (list(stride), list(padding), list(dilation), groups)
    ctx.channels_last = _channels_last(input, weight)
    ctx.has_bias = bias is not None


def _normalized_backward(ctx, grad_out):
    input, stats, norm_weight, norm_bias, weight = ctx.saved_tensors
    needs = ctx.needs_input_grad
    norm_needs = [needs[0], needs[2], needs[3]]
    grad_input = grad_norm_weight = grad_norm_bias = grad_weight = grad_bias = None
    groups = ctx.geometry[3]
    if any(norm_needs) and needs[7] and not _kernels().is_direct(input.shape[1], groups):
        grad_out = _kernels().conv2d_gemm.channels_contiguous(grad_out)  # one copy for both GEMMs (see _backward)
    if needs[7]:
        grad_weight = _conv2d_normalized_weight_grad_op(input, stats, norm_weight, norm_bias, *ctx.normalization,
                                                        grad_out, list(weight.shape), ctx.channels_last, *ctx.geometry)
    if any(norm_needs):
        # grad-input's epilogue takes the gradient of act(bn(x)) through the activation and sums
        # what batch norm's backward needs; then only its apply runs (ops/batch_norm.py).
        grad, sums = _conv2d_normalized_input_grad_op(grad_out, weight, input, stats, norm_weight, norm_bias,
                                                      *ctx.normalization, ctx.channels_last, *ctx.geometry)
        grads = _batch_norm._backward_from_sums_op(grad, input, sums, stats, norm_weight, norm_bias,
                                                   ctx.normalization[0], norm_needs)
        grad_input, grad_norm_weight, grad_norm_bias = (grad if needed else None
                                                        for grad, needed in zip(grads, norm_needs))
    if ctx.has_bias and needs[8]:
        grad_bias = (_conv2d_bias_grad_op(grad_out) if grad_out.shape[1] == weight.shape[0]
                     else weight.new_zeros(weight.shape[0]))
    return (grad_input, None, grad_norm_weight, grad_norm_bias, None, None, None, grad_weight, grad_bias,
            None, None, None, None, None)


_conv2d_normalized_op.register_autograd(_normalized_backward, setup_context=_setup_normalized_context)


# The same two forwards with the moments epilogue (kernels/moments.py): the output's per-channel
# summaries for the batch norm that reads it next (``fastcnn::batch_norm_statistics_from_moments``),
# so that batch norm needs no statistics pass. The moments are not differentiable; backward is
# the forward's own.
def _empty_moments(out):
    from ..kernels.moments import MOMENT_FIELDS, moment_slots

    pixels = out.shape[0] * out.shape[2] * out.shape[3]
    return torch.empty((moment_slots(pixels), MOMENT_FIELDS, out.shape[1]), dtype=torch.float32, device=out.device)


def _forward_with_moments(input, weight, bias, stride, padding, total_padding, dilation, groups, prologue):
    out = _empty_output(input, weight, total_padding, stride, dilation)
    moments = _empty_moments(out)
    if out.numel():
        with torch.profiler.record_function("fastcnn::conv2d forward (and moments)"):
            _backend.record_launch(OP, _kernels().forward(
                input, weight, bias, out, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=dot_precision(input), prologue=prologue, moments=moments))
    return out, moments


@torch.library.custom_op("fastcnn::conv2d_moments", mutates_args=())
def _conv2d_moments_op(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
                       total_padding: list[int], dilation: list[int], groups: int) -> tuple[Tensor, Tensor]:
    """(conv2d, its output's moments)."""
    return _forward_with_moments(input, weight, bias, stride, padding, total_padding, dilation, groups, None)


@_conv2d_moments_op.register_fake
def _(input, weight, bias, stride, padding, total_padding, dilation, groups):
    out = _empty_output(input, weight, total_padding, stride, dilation)
    return out, _empty_moments(out)


@torch.library.custom_op("fastcnn::conv2d_normalized_moments", mutates_args=())
def _conv2d_normalized_moments_op(input: Tensor, stats: Tensor, norm_weight: Optional[Tensor],
                                  norm_bias: Optional[Tensor], training: bool, kind: Optional[str], parameter: float,
                                  weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
                                  total_padding: list[int], dilation: list[int],
                                  groups: int) -> tuple[Tensor, Tensor]:
    """(conv2d(act(batch_norm(input))), its output's moments)."""
    return _forward_with_moments(input, weight, bias, stride, padding, total_padding, dilation, groups,
                                 _batch_norm.input_prologue(stats, kind, parameter))


@_conv2d_normalized_moments_op.register_fake
def _(input, stats, norm_weight, norm_bias, training, kind, parameter, weight, bias, stride, padding, total_padding,
      dilation, groups):
    out = _empty_output(input, weight, total_padding, stride, dilation)
    return out, _empty_moments(out)


def _register_autograd_with_moments(operator, setup_context, backward):
    """Give ``operator``, a forward's variant that also returns moments, that forward's autograd
    formula (the moments are not differentiable)."""
    def setup(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zero-filled gradient of the moments, which nothing reads
        setup_context(ctx, inputs, output[0])

    def formula(ctx, grad_out, grad_moments):
        if grad_out is None:  # the output itself took no part in the loss
            return (None,) * len(ctx.needs_input_grad)
        return backward(ctx, grad_out)

    operator.register_autograd(formula, setup_context=setup)


_register_autograd_with_moments(_conv2d_moments_op, _setup_context, _backward)
_register_autograd_with_moments(_conv2d_normalized_moments_op, _setup_normalized_context, _normalized_backward)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
def _gemm_operands(*tensors):
    """The channels_last copies kernels/conv2d_gemm.py makes of operands without contiguous
    channels (``channels_contiguous``): one read and one write each, held during the GEMM."""
    copies = [t for t in tensors if _kernels().conv2d_gemm.needs_channels_last_copy(t)]
    return [one_pass("aten::copy_ (to channels_last)", [t], [t]) for t in copies], sum(map(tensor_bytes, copies))


def _split_reduction(kernel, reads, result, slices, flops=0, math=None, workspace=0):
    """A reduction into ``result`` cut into ``slices`` (kernels/slicing.py): with several, each
    writes an fp32 partial of ``result``'s size and a second kernel sums them in order."""
    if slices == 1:
        return [one_pass(kernel, reads, [result], flops=flops, math=math, workspace=workspace)]
    partial_bytes = slices * result.numel() * 4
    return [Launch(kernel, sum(map(tensor_bytes, reads)), partial_bytes, flops, math, workspace + partial_bytes),
            Launch("_sum_slices_kernel", partial_bytes, tensor_bytes(result))]


@launches_of(_conv2d_op, "convolution")
def _conv2d_launches(out, input, weight, bias, stride, padding, total_padding, dilation, groups):
    if not out.numel():
        return []
    cost = dict(flops=flops(input.shape[0], input.shape[1], out.shape[1], groups, weight.shape[2:], out.shape[2:]),
                math=_cost.math_of(input.dtype, uses_tf32(input.dtype, "cuda")))
    if _kernels().is_direct(input.shape[1], groups):
        return [one_pass("_depthwise_forward_kernel", [input, weight, bias], [out], **dict(cost, math="fp32"))]
    copies, copied = _gemm_operands(input, weight)
    return copies + [one_pass("_conv2d_forward_kernel", [input, weight, bias], [out], workspace=copied, **cost)]


@launches_of(_conv2d_input_grad_op, "convolution")
def _conv2d_input_grad_launches(grad_input, grad_out, weight, input_shape, channels_last, stride, padding, dilation,
                                groups):
    if not grad_input.numel():
        return []
    cost = dict(flops=flops(input_shape[0], input_shape[1], weight.shape[0], groups, weight.shape[2:],
                            grad_out.shape[2:]), math=_cost.math_of(weight.dtype, uses_tf32(weight.dtype, "cuda")))
    if _kernels().is_direct(input_shape[1], groups):
        return [one_pass("_depthwise_input_grad_kernel", [grad_out, weight], [grad_input], **dict(cost, math="fp32"))]
    copies, copied = _gemm_operands(grad_out, weight)
    # One launch per stride phase holding input pixels; each reads dy and w, writes its share of dx.
    gemm = _kernels().conv2d_gemm
    rows = [gemm.phase_size(input_shape[2], stride[0], phase) for phase in range(stride[0])]
    cols = [gemm.phase_size(input_shape[3], stride[1], phase) for phase in range(stride[1])]
    shares = [r * c / (input_shape[2] * input_shape[3]) for r in rows for c in cols if r * c]
    read = tensor_bytes(grad_out) + tensor_bytes(weight)
    return copies + [Launch("_conv2d_input_grad_kernel", read, round(share * tensor_bytes(grad_input)),
                            round(share * cost["flops"]), cost["math"], copied) for share in shares]


@launches_of(_conv2d_weight_grad_op, "convolution")
def _conv2d_weight_grad_launches(grad_weight, input, grad_out, weight_shape, channels_last, stride, padding, dilation,
                                 groups):
    if not grad_weight.numel():
        return []
    cost = dict(flops=flops(input.shape[0], input.shape[1], weight_shape[0], groups, weight_shape[2:],
                            grad_out.shape[2:]), math=_cost.math_of(input.dtype, uses_tf32(input.dtype, "cuda")))
    kernels = _kernels()
    if _kernels().is_direct(input.shape[1], groups):
        _, slices = kernels.conv2d_depthwise.weight_grad_slices(weight_shape, grad_out, grad_out.device,
                                                                _cost.target_sms())
        return _split_reduction("_depthwise_weight_grad_kernel", [input, grad_out], grad_weight, slices,
                                **dict(cost, math="fp32"))
    copies, copied = _gemm_operands(input, grad_out)
    pixels = grad_out.shape[0] * grad_out.shape[2] * grad_out.shape[3]
    _, slices = kernels.conv2d_gemm.weight_grad_slices(weight_shape, groups, pixels, grad_out.device,
                                                       _cost.target_sms())
    return copies + _split_reduction("_conv2d_weight_grad_kernel", [input, grad_out], grad_weight, slices,
                                     workspace=copied, **cost)


@launches_of(_conv2d_bias_grad_op, "convolution")
def _conv2d_bias_grad_launches(grad_bias, grad_out):
    if not grad_bias.numel():
        return []
    _, slices = _kernels().bias_grad_slices(grad_out, grad_out.device, _cost.target_sms())
    return _split_reduction("_bias_grad_kernel", [grad_out], grad_bias, slices)


@launches_of(_conv2d_normalized_op, "convolution")
def _conv2d_normalized_launches(out, input, stats, norm_weight, norm_bias, training, kind, parameter, weight, bias,
                                stride, padding, total_padding, dilation, groups):
    # The forward kernel with its prologue: the same passes; the per-channel vectors are noise.
    return _conv2d_launches(out, input, weight, bias, stride, padding, total_padding, dilation, groups)


@launches_of(_conv2d_normalized_weight_grad_op, "convolution")
def _conv2d_normalized_weight_grad_launches(grad_weight, input, stats, norm_weight, norm_bias, training, kind,
                                            parameter, grad_out, weight_shape, channels_last, stride, padding,
                                            dilation, groups):
    return _conv2d_weight_grad_launches(grad_weight, input, grad_out, weight_shape, channels_last, stride, padding,
                                        dilation, groups)


@launches_of(_conv2d_normalized_input_grad_op, "convolution")
def _conv2d_normalized_input_grad_launches(outputs, grad_out, weight, input, stats, norm_weight, norm_bias, training,
                                           kind, parameter, channels_last, stride, padding, dilation, groups):
    # grad-input's launches, each epilogue also reading x where it writes g, and writing its sums
    grad, sums = outputs
    launches = _conv2d_input_grad_launches(grad, grad_out, weight, list(input.shape), channels_last, stride, padding,
                                           dilation, groups)
    kernels = ("_conv2d_input_grad_kernel", "_depthwise_input_grad_kernel")
    total = sum(launch.bytes_written for launch in launches if launch.kernel in kernels)
    return [launch if launch.kernel not in kernels else dataclasses.replace(
        launch, bytes_read=launch.bytes_read + round(launch.bytes_written / max(total, 1) * tensor_bytes(input)),
        bytes_written=launch.bytes_written + round(launch.bytes_written / max(total, 1) * tensor_bytes(sums)))
        for launch in launches]


def _moments_write(outputs):
    """The moments epilogue's extra write: the moments buffer, once."""
    return tensor_bytes(outputs[1])


@launches_of(_conv2d_moments_op, "convolution")
def _conv2d_moments_launches(outputs, input, weight, bias, stride, padding, total_padding, dilation, groups):
    launches = _conv2d_launches(outputs[0], input, weight, bias, stride, padding, total_padding, dilation, groups)
    if launches:  # the forward kernel is the last launch; it writes the moments too
        launches[-1] = dataclasses.replace(launches[-1], bytes_written=launches[-1].bytes_written
                                           + _moments_write(outputs))
    return launches


@launches_of(_conv2d_normalized_moments_op, "convolution")
def _conv2d_normalized_moments_launches(outputs, input, stats, norm_weight, norm_bias, training, kind, parameter,
                                        weight, bias, stride, padding, total_padding, dilation, groups):
    return _conv2d_moments_launches(outputs, input, weight, bias, stride, padding, total_padding, dilation, groups)


# ----------------------------------------------------------------------------- functional
def check_input_affine(op, input, input_scale, input_shift):
    """``input_scale`` and ``input_shift``: None or tensors of C elements (the input's channels) on
    its device, of its dtype or fp32 beside fp16/bf16 input, as a batch norm's weight and bias."""
    channels = input.shape[1] if input.dim() == 4 else input.shape[0]
    for name, tensor in (("input_scale", input_scale), ("input_shift", input_shift)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
        if tensor.numel() != channels:
            raise RuntimeError(f"{op}: {name} should contain {channels} elements (one per input channel) not "
                               f"{tensor.numel()}")
    check_parameter_dtypes(op, input, {"input_scale": input_scale, "input_shift": input_shift})


def _identity_statistics(input, input_scale, input_shift):
    """Batch norm's statistics (mean 0, invstd 1) under which it is the plain affine, with the
    prologue's coefficients of ``input_scale`` and ``input_shift`` (kernels/prologue.py)."""
    from ..kernels.prologue import affine_statistics

    return affine_statistics(input.shape[1], input_scale, input_shift, input.device)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, input_scale=None, input_shift=None,
           input_activation=None):
    """``torch.nn.functional.conv2d`` on fastcnn's Triton kernels; same arguments, same result.

    Input ``(N, C, H, W)`` or unbatched ``(C, H, W)``, weight ``(K, C/groups, R, S)``; ``stride``,
    ``padding``, ``dilation`` an int or a pair; ``padding`` also ``'valid'`` or ``'same'``.
    fp32, fp16 and bf16, accumulated in fp32; fp32 uses TF32 exactly when cuDNN would. Under
    ``torch.autocast`` the operands are cast to the autocast dtype, as F.conv2d's are.

    The input prologue: with ``input_scale``, ``input_shift`` (C elements each, the input's dtype
    or fp32) or ``input_activation`` (anything ``fastcnn.batch_norm``'s ``activation=`` takes),
    the result is ``F.conv2d(act(input * scale[c] + shift[c]), weight, ...)``, computed on each
    input tile as the kernels load it (the padding is zeros of the transformed input); that
    tensor is never stored, and backward recomputes it. All three are differentiable.
    """
    if input_scale is None and input_shift is None and input_activation is None:
        return _conv2d(input, weight, bias, stride, padding, dilation, groups)
    op = "fastcnn.conv2d"
    kind, parameter = resolve_activation(op, input_activation)
    if isinstance(input, torch.Tensor) and input.dim() in (3, 4):
        check_input_affine(op, input, input_scale, input_shift)
    cast = autocast_dtype(input.device.type, input) if isinstance(input, torch.Tensor) else None
    if cast is not None:
        with torch.autocast(input.device.type, enabled=False):
            return conv2d(*(t.to(cast) if isinstance(t, torch.Tensor) else t for t in (input, weight, bias)),
                          stride, padding, dilation, groups, input_scale=input_scale, input_shift=input_shift,
                          input_activation=input_activation)
    geometry = check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        shape = (-1, 1, 1) if input.dim() == 3 else (1, -1, 1, 1)
        transformed = input * input_scale.reshape(shape) if input_scale is not None else input
        transformed = transformed + input_shift.reshape(shape) if input_shift is not None else transformed
        transformed = module_for(kind, parameter)(transformed) if kind is not None else transformed
        return torch.nn.functional.conv2d(transformed.to(input.dtype), weight, bias, stride, padding, dilation,
                                          groups)
    batched = input if input.dim() == 4 else input.unsqueeze(0)
    stats = _identity_statistics(batched, input_scale, input_shift)
    out = _conv2d_normalized_op(batched, stats, input_scale, input_shift, False, kind, parameter, weight, bias,
                                *_arguments(geometry))
    return out if input.dim() == 4 else out.squeeze(0)


def _arguments(geometry):
    return (list(geometry.stride), list(geometry.padding), list(geometry.total_padding), list(geometry.dilation),
            geometry.groups)


def _conv2d(input, weight, bias, stride, padding, dilation, groups):
    if isinstance(input, torch.Tensor):
        cast = autocast_dtype(input.device.type, input)
        if cast is not None:
            with torch.autocast(input.device.type, enabled=False):
                return _conv2d(*(t.to(cast) if isinstance(t, torch.Tensor) else t for t in (input, weight, bias)),
                               stride, padding, dilation, groups)
    geometry = check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if input.dim() == 3:
        return _conv2d_op(input.unsqueeze(0), weight, bias, *_arguments(geometry)).squeeze(0)
    return _conv2d_op(input, weight, bias, *_arguments(geometry))


def conv2d_with_moments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """(``fastcnn.conv2d(input, weight, ...)``, the moments of its output): the per-channel
    summaries the forward kernel's epilogue writes as it stores the output (kernels/moments.py),
    from which ``fastcnn.batch_norm(..., moments=)`` takes its training statistics without a pass
    over the output. Input ``(N, C, H, W)``; the moments are None where the kernels do not run
    (PyTorch's path, no Triton)."""
    cast = autocast_dtype(input.device.type, input) if isinstance(input, torch.Tensor) else None
    if cast is not None:
        with torch.autocast(input.device.type, enabled=False):
            return conv2d_with_moments(*(t.to(cast) if isinstance(t, torch.Tensor) else t
                                         for t in (input, weight, bias)), stride, padding, dilation, groups)
    geometry = check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    if input.dim() != 4:
        raise RuntimeError(f"fastcnn.conv2d_with_moments: expected 4D input (got {input.dim()}D input)")
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        return conv2d(input, weight, bias, stride, padding, dilation, groups), None
    return _conv2d_moments_op(input, weight, bias, *_arguments(geometry))


def batch_norm_conv2d(input, running_mean, running_var, norm_weight, norm_bias, training, momentum, eps, weight,
                      bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, moments=None,
                      emit_moments=False):
    """``F.conv2d(act(F.batch_norm(input, running_mean, running_var, norm_weight, norm_bias,
    training, momentum, eps)), weight, bias, stride, padding, dilation, groups)`` with the batch
    norm in the convolution's prologue: its statistics in one pass over the input (training; in
    eval the running statistics, folded into the prologue's scale and shift), then one
    convolution that normalises and activates each input tile as it loads it. act(bn(x)) is
    never written nor kept: backward saves the input and six floats per channel, as batch norm
    alone does. Batch norm's arguments and checks are ``fastcnn.batch_norm``'s (the running
    statistics updated in place in training), the convolution's ``fastcnn.conv2d``'s; input
    ``(N, C, H, W)``. ``moments``: the input's, from the convolution that computed it
    (``conv2d_with_moments``): the training statistics without the pass over the input.
    ``emit_moments``: return (output, the output's moments or None), as ``conv2d_with_moments``."""
    op = "fastcnn.batch_norm_conv2d"
    kind, parameter = _batch_norm.check_inside(op, input, running_mean, running_var, norm_weight, norm_bias, training,
                                               momentum, eps, activation)
    cast = autocast_dtype(input.device.type, input)
    unfused = _backend.backend_for(input.device) == _backend.FALLBACK or (cast is not None and cast != input.dtype)
    if cast is not None and not unfused:  # autocast casts only the convolution's weight and bias here
        weight, bias = (t.to(cast) if isinstance(t, torch.Tensor) else t for t in (weight, bias))
    geometry = check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    if unfused:
        # Without the kernels, or under autocast with an input it would cast: batch norm runs in
        # the input's dtype and the convolution casts its result, as the unfused layers would.
        if _backend.backend_for(input.device) == _backend.FALLBACK:
            _backend.warn_fallback(op, input.device)
        normalized = _batch_norm.batch_norm(input, running_mean, running_var, norm_weight, norm_bias, training,
                                            momentum, eps, activation=activation, moments=moments)
        if emit_moments:
            return conv2d_with_moments(normalized, weight, bias, stride, padding, dilation, groups)
        return conv2d(normalized, weight, bias, stride, padding, dilation, groups)
    input, stats = _batch_norm.prologue_statistics(op, input, running_mean, running_var, norm_weight, norm_bias,
                                                   training, momentum, eps, moments)
    arguments = (input, stats, norm_weight, norm_bias, bool(training), kind, parameter, weight, bias,
                 *_arguments(geometry))
    return _conv2d_normalized_moments_op(*arguments) if emit_moments else _conv2d_normalized_op(*arguments)
