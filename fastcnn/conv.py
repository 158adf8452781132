"""conv2d: ``fastcnn.conv2d`` (functional, as ``torch.nn.functional.conv2d``) over the
implicit-GEMM Triton kernels of ``kernels/conv2d.py``.

The kernels are registered as PyTorch operators (``torch.ops.fastcnn.conv2d`` and its three
gradient ops) with fake implementations and an autograd formula, so ``torch.compile`` sees one
opaque node per launch instead of breaking the graph. The output, grad-input and grad-weight take
the memory format PyTorch's convolution gives them (channels_last when the input's or the weight's
``suggest_memory_format()`` is); every operand, the bias included, is read through its strides, so
no layout copy is ever made.
"""
from typing import Optional

import torch
from torch import Tensor

from . import _backend
from ._layout import suggests_channels_last
from .dtypes import conv_uses_tf32
from .validation import check_conv2d, conv2d_output_size

OP = "conv2d"


def _memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def _channels_last(input, weight):
    """torch's rule (cudnn_conv_suggest_memory_format): the output and both gradients are
    channels_last when the input's or the weight's ``suggest_memory_format()`` is, which includes
    a 1x1 weight whose strides are both contiguous and channels_last."""
    return suggests_channels_last(input) or suggests_channels_last(weight)


def _dot_precision(tensor):
    return "tf32" if conv_uses_tf32(tensor.dtype, tensor.device) else "ieee"


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
            _backend.record_launch(OP, _backend.kernel_module("conv2d").forward(
                input, weight, bias, out, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=_dot_precision(input)))
    return out


@_conv2d_op.register_fake
def _(input, weight, bias, stride, padding, total_padding, dilation, groups):
    return _empty_output(input, weight, total_padding, stride, dilation)


def _gradient(pass_name, launcher, operands, shape, like, channels_last, stride, padding, dilation, groups):
    """A grad-input or grad-weight tensor of ``shape`` (``like``'s dtype and device) filled by the
    ``launcher`` of kernels/conv2d.py from ``operands``."""
    result = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_memory_format(channels_last))
    if result.numel():
        with torch.profiler.record_function(f"fastcnn::conv2d {pass_name}"):
            _backend.record_launch(OP, getattr(_backend.kernel_module("conv2d"), launcher)(
                *operands, result, stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                groups=groups, dot_precision=_dot_precision(like)))
    return result


@torch.library.custom_op("fastcnn::conv2d_input_grad", mutates_args=())
def _conv2d_input_grad_op(grad_out: Tensor, weight: Tensor, input_shape: list[int], channels_last: bool,
                          stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    return _gradient("grad_input", "input_grad", (grad_out, weight), input_shape, weight, channels_last, stride,
                     padding, dilation, groups)


@_conv2d_input_grad_op.register_fake
def _(grad_out, weight, input_shape, channels_last, stride, padding, dilation, groups):
    return torch.empty(input_shape, dtype=grad_out.dtype, device=grad_out.device,
                       memory_format=_memory_format(channels_last))


@torch.library.custom_op("fastcnn::conv2d_weight_grad", mutates_args=())
def _conv2d_weight_grad_op(input: Tensor, grad_out: Tensor, weight_shape: list[int], channels_last: bool,
                           stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    return _gradient("grad_weight", "weight_grad", (input, grad_out), weight_shape, input, channels_last, stride,
                     padding, dilation, groups)


@_conv2d_weight_grad_op.register_fake
def _(input, grad_out, weight_shape, channels_last, stride, padding, dilation, groups):
    return torch.empty(weight_shape, dtype=input.dtype, device=input.device,
                       memory_format=_memory_format(channels_last))


@torch.library.custom_op("fastcnn::conv2d_bias_grad", mutates_args=())
def _conv2d_bias_grad_op(grad_out: Tensor) -> Tensor:
    """The sum of ``grad_out`` over every dimension but the channels."""
    grad_bias = torch.empty(grad_out.shape[1], dtype=grad_out.dtype, device=grad_out.device)
    if grad_bias.numel():
        with torch.profiler.record_function("fastcnn::conv2d grad_bias"):
            _backend.record_launch(OP, _backend.kernel_module("conv2d").bias_grad(grad_out, grad_bias))
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
    if ctx.needs_input_grad[0]:
        grad_input = _conv2d_input_grad_op(grad_out, weight, list(input.shape), ctx.channels_last, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        grad_weight = _conv2d_weight_grad_op(input, grad_out, list(weight.shape), ctx.channels_last, *ctx.geometry)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        if grad_out.shape[1] == weight.shape[0]:
            grad_bias = _conv2d_bias_grad_op(grad_out)
        else:  # the channel-less output above did not use the bias
            grad_bias = weight.new_zeros(weight.shape[0])
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _autocast_dtype(device_type, input):
    """The dtype torch.autocast would run F.conv2d in here, or None when autocast does not apply."""
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    if not input.is_floating_point() or input.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(device_type)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on fastcnn's Triton kernels; same arguments, same result.

    Input ``(N, C, H, W)`` or unbatched ``(C, H, W)``, weight ``(K, C/groups, R, S)``; ``stride``,
    ``padding``, ``dilation`` an int or a pair; ``padding`` also ``'valid'`` or ``'same'``.
    fp32, fp16 and bf16, accumulated in fp32; fp32 uses TF32 exactly when cuDNN would. Under
    ``torch.autocast`` the operands are cast to the autocast dtype, as F.conv2d's are.
    """
    if isinstance(input, torch.Tensor):
        cast = _autocast_dtype(input.device.type, input)
        if cast is not None:
            with torch.autocast(input.device.type, enabled=False):
                return conv2d(*(t.to(cast) if isinstance(t, torch.Tensor) else t for t in (input, weight, bias)),
                              stride, padding, dilation, groups)
    geometry = check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)
    arguments = (list(geometry.stride), list(geometry.padding), list(geometry.total_padding), list(geometry.dilation),
                 geometry.groups)
    if input.dim() == 3:
        return _conv2d_op(input.unsqueeze(0), weight, bias, *arguments).squeeze(0)
    return _conv2d_op(input, weight, bias, *arguments)
