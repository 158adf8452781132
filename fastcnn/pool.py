"""max_pool2d: ``fastcnn.max_pool2d`` (as ``torch.nn.functional.max_pool2d``) over
``kernels/max_pool.py``, registered as the PyTorch operators ``torch.ops.fastcnn.max_pool2d`` and
``torch.ops.fastcnn.max_pool2d_backward`` (fake implementations and an autograd formula, so
``torch.compile`` keeps them in its graph).

For backward the op keeps one byte per output element (the chosen tap of each window) instead of
torch's int64 indices; PyTorch's indices are produced only for ``return_indices=True``.
"""
import torch
from torch import Tensor

from . import _backend
from ._layout import suggests_channels_last
from .validation import check_max_pool2d, pool_output_size

OP = "max_pool2d"


def _memory_format(input):
    return torch.channels_last if suggests_channels_last(input) else torch.contiguous_format


def _empty_outputs(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    """(out, taps, indices) for a 4-d ``input``; ``indices`` is empty unless asked for."""
    out_size = tuple(pool_output_size(size, k, p, s, d, ceil_mode)
                     for size, k, p, s, d in zip(input.shape[2:], kernel_size, padding, stride, dilation))
    shape = (input.shape[0], input.shape[1], *out_size)
    options = dict(device=input.device, memory_format=_memory_format(input))
    # Windows of up to 256 taps name their maximum in one byte.
    tap_dtype = torch.uint8 if kernel_size[0] * kernel_size[1] <= 256 else torch.int32
    indices_shape = shape if return_indices else (0, 0, 0, 0)
    return (torch.empty(shape, dtype=input.dtype, **options), torch.empty(shape, dtype=tap_dtype, **options),
            torch.empty(indices_shape, dtype=torch.int64, **options))


@torch.library.custom_op("fastcnn::max_pool2d", mutates_args=())
def _max_pool2d_op(input: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
                   ceil_mode: bool, return_indices: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(pooled output, the chosen tap of each window, torch's int64 indices or an empty tensor)."""
    out, taps, indices = _empty_outputs(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    if out.numel():
        with torch.profiler.record_function("fastcnn::max_pool2d forward"):
            _backend.record_launch(OP, _backend.kernel_module("max_pool").forward(
                input, out, taps, indices if return_indices else None, kernel_size=tuple(kernel_size),
                stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation)))
    return out, taps, indices


@_max_pool2d_op.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return _empty_outputs(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@torch.library.custom_op("fastcnn::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward_op(grad_out: Tensor, taps: Tensor, input_shape: list[int], kernel_size: list[int],
                            stride: list[int], padding: list[int], dilation: list[int]) -> Tensor:
    """grad_input: each input element gathers grad_out from every window whose tap chose it."""
    grad_input = torch.empty(input_shape, dtype=grad_out.dtype, device=grad_out.device,
                             memory_format=_memory_format(taps))
    if grad_input.numel():
        with torch.profiler.record_function("fastcnn::max_pool2d backward"):
            _backend.record_launch(OP, _backend.kernel_module("max_pool").backward(
                grad_out, taps, grad_input, kernel_size=tuple(kernel_size), stride=tuple(stride),
                padding=tuple(padding), dilation=tuple(dilation)))
    return grad_input


@_max_pool2d_backward_op.register_fake
def _(grad_out, taps, input_shape, kernel_size, stride, padding, dilation):
    return torch.empty(input_shape, dtype=grad_out.dtype, device=grad_out.device, memory_format=_memory_format(taps))


def _setup_context(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, _, _ = inputs
    _, taps, indices = output
    ctx.mark_non_differentiable(taps, indices)
    ctx.set_materialize_grads(False)  # no output-sized zeros for the taps' and indices' gradients
    ctx.save_for_backward(taps)
    ctx.arguments = (list(input.shape), kernel_size, stride, padding, dilation)


def _backward(ctx, grad_out, _grad_taps, _grad_indices):
    (taps,) = ctx.saved_tensors
    return _max_pool2d_backward_op(grad_out, taps, *ctx.arguments), None, None, None, None, None, None


_max_pool2d_op.register_autograd(_backward, setup_context=_setup_context)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on fastcnn's Triton kernels; same arguments, same values,
    same int64 indices (ties to the first element in scan order, NaN propagates)."""
    geometry = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                                              return_indices=return_indices)
    unbatched = input.dim() == 3
    out, _, indices = _max_pool2d_op(input.unsqueeze(0) if unbatched else input, list(geometry.kernel_size),
                                     list(geometry.stride), list(geometry.padding), list(geometry.dilation),
                                     geometry.ceil_mode, bool(return_indices))
    if unbatched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out
