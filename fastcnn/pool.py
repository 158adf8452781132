"""max_pool2d: ``fastcnn.max_pool2d`` (as ``torch.nn.functional.max_pool2d``) and its autograd
Function over ``kernels/max_pool.py``.

For backward the op keeps one byte per output element (the chosen tap of each window) instead of
torch's int64 indices; PyTorch's indices are produced only for ``return_indices=True``.
"""
import torch

from . import _backend
from ._layout import prefers_channels_last
from .validation import check_max_pool2d

OP = "max_pool2d"


def _tap_dtype(geometry):
    taps = geometry.kernel_size[0] * geometry.kernel_size[1]
    return torch.uint8 if taps <= 256 else torch.int32


class MaxPool2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, geometry, return_indices):
        kernels = _backend.kernel_module("max_pool")
        memory_format = torch.channels_last if prefers_channels_last(input) else torch.contiguous_format
        shape = (input.shape[0], input.shape[1], *geometry.out_size)
        out = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=memory_format)
        taps = torch.empty(shape, dtype=_tap_dtype(geometry), device=input.device, memory_format=memory_format)
        indices = (torch.empty(shape, dtype=torch.int64, device=input.device, memory_format=memory_format)
                   if return_indices else None)
        arguments = dict(kernel_size=geometry.kernel_size, stride=geometry.stride, padding=geometry.padding,
                         dilation=geometry.dilation)
        if out.numel():
            _backend.record_launch(OP, kernels.forward(input, out, taps, indices, **arguments))
        ctx.save_for_backward(taps)
        ctx.arguments = arguments
        ctx.input_shape = input.shape
        ctx.memory_format = memory_format
        if return_indices:
            ctx.mark_non_differentiable(indices)
            return out, indices
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, *unused):
        (taps,) = ctx.saved_tensors
        grad_in = torch.empty(ctx.input_shape, dtype=grad_out.dtype, device=grad_out.device,
                              memory_format=ctx.memory_format)
        if grad_in.numel():
            _backend.record_launch(OP, _backend.kernel_module("max_pool").backward(
                grad_out, taps, grad_in, **ctx.arguments))
        return grad_in, None, None


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on fastcnn's Triton kernels; same arguments, same values,
    same int64 indices (ties to the first element in scan order, NaN propagates)."""
    geometry = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                                              return_indices=return_indices)
    if input.dim() == 3:
        result = MaxPool2dFunction.apply(input.unsqueeze(0), geometry, return_indices)
        return tuple(t.squeeze(0) for t in result) if return_indices else result.squeeze(0)
    return MaxPool2dFunction.apply(input, geometry, return_indices)
