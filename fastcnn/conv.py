"""conv2d: ``fastcnn.conv2d`` (functional, as ``torch.nn.functional.conv2d``) and its autograd
Function over the implicit-GEMM Triton kernels of ``kernels/conv2d.py``.

The output, grad-input and grad-weight take the memory format PyTorch's convolution gives them
(channels_last when the input or the weight is channels_last); every operand is read through its
strides, so no layout copy is ever made.
"""
import torch

from . import _backend
from ._layout import prefers_channels_last
from .dtypes import conv_uses_tf32
from .validation import check_conv2d

OP = "conv2d"


def _memory_format(input, weight):
    """torch's rule for cuDNN convolutions: channels_last if the input or the weight is."""
    if prefers_channels_last(input) or prefers_channels_last(weight):
        return torch.channels_last
    return torch.contiguous_format


def _dot_precision(tensor):
    return "tf32" if conv_uses_tf32(tensor.dtype, tensor.device) else "ieee"


class Conv2dFunction(torch.autograd.Function):
    """y = conv2d(x, w, b) for a 4-d ``x``, with validated ``geometry`` (see validation.check_conv2d)."""

    @staticmethod
    def forward(ctx, input, weight, bias, geometry):
        kernels = _backend.kernel_module("conv2d")
        memory_format = _memory_format(input, weight)
        # torch gives an input without channels an output without channels, whatever the weight.
        out_channels = weight.shape[0] if input.shape[1] else 0
        out = torch.empty((input.shape[0], out_channels, *geometry.out_size), dtype=input.dtype,
                          device=input.device, memory_format=memory_format)
        if out.numel():
            _backend.record_launch(OP, kernels.forward(
                input, weight, bias, out, stride=geometry.stride, padding=geometry.padding,
                dilation=geometry.dilation, groups=geometry.groups, dot_precision=_dot_precision(input)))
        ctx.save_for_backward(input, weight)
        ctx.geometry = geometry
        ctx.memory_format = memory_format
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        kernels = _backend.kernel_module("conv2d")
        input, weight = ctx.saved_tensors
        geometry = ctx.geometry
        arguments = dict(stride=geometry.stride, padding=geometry.padding, dilation=geometry.dilation,
                         groups=geometry.groups, dot_precision=_dot_precision(input))
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                                     memory_format=ctx.memory_format)
            if grad_input.numel():
                _backend.record_launch(OP, kernels.input_grad(grad_out, weight, grad_input, **arguments))
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device,
                                      memory_format=ctx.memory_format)
            if grad_weight.numel():
                _backend.record_launch(OP, kernels.weight_grad(input, grad_out, grad_weight, **arguments))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            if grad_out.shape[1] == weight.shape[0]:
                grad_bias = torch.empty(weight.shape[0], dtype=weight.dtype, device=weight.device)
                if grad_bias.numel():
                    _backend.record_launch(OP, kernels.bias_grad(grad_out, grad_bias))
            else:  # the channel-less output above did not use the bias
                grad_bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        return grad_input, grad_weight, grad_bias, None


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
    backend = _backend.backend_for(input.device)
    if backend == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if input.dim() == 3:
        return Conv2dFunction.apply(input.unsqueeze(0), weight, bias, geometry).squeeze(0)
    return Conv2dFunction.apply(input, weight, bias, geometry)
