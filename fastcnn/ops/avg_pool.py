"""Average pooling: ``fastcnn.avg_pool2d`` and ``fastcnn.adaptive_avg_pool2d`` (as
``torch.nn.functional``'s) over ``kernels/avg_pool.py``: argument checks and output sizes
(torch's, in torch's order and words), the byte count, the PyTorch operators
``fastcnn::avg_pool2d`` / ``fastcnn::avg_pool2d_backward`` (adaptive pooling is the same pair
with ``kernel_size`` empty) and the functionals.

Nothing is saved for backward but the input's shape: the gradient of a window average is its
output gradient spread over the window.
"""
import math
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import suggests_channels_last
from ..dtypes import TORCH_FLOAT_DTYPES
from ..validation import check_torch_implements
from .max_pool import check_window, window_pairs

__all__ = ["avg_pool2d", "adaptive_avg_pool2d"]

OP = "avg_pool2d"


def _kernels():
    """kernels/avg_pool.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import avg_pool

    return avg_pool


# ----------------------------------------------------------------------------- checks and geometry
def _check_input(op, input):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")


def check_avg_pool2d(input, kernel_size, stride, padding, ceil_mode, divisor_override):
    """Validate F.avg_pool2d's arguments as torch does, in its order and words (avg_pool2d's
    own checks, pooling_output_shape's, pool2d_shape_check's); return (kernel_size, stride,
    padding, out_size)."""
    op = "fastcnn.avg_pool2d"
    _check_input(op, input)
    kernel_size, stride, padding = window_pairs(op, "avg_pool2d", kernel_size, stride, padding)
    if divisor_override is not None and (not isinstance(divisor_override, int) or isinstance(divisor_override, bool)):
        raise TypeError(f"{op}: argument 'divisor_override' must be int, not {type(divisor_override).__name__}")
    if divisor_override == 0:
        raise RuntimeError(f"{op}: divisor must be not zero")
    if input.dim() < 3:  # torch reads input.size(-3) first
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of [{-max(input.dim(), 1)}, "
                         f"{max(input.dim(), 1) - 1}], but got -3)")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got: {list(input.shape)}")
    out_size = check_window(op, input, kernel_size, stride, padding, (1, 1), ceil_mode)
    check_torch_implements(op, "avg_pool2d", input.dtype, TORCH_FLOAT_DTYPES)
    return kernel_size, stride, padding, out_size


def check_adaptive_avg_pool2d(input, output_size):
    """Validate F.adaptive_avg_pool2d's arguments as torch does (its Python default filling, then
    its C++ checks); return the output (height, width), a None entry meaning the input's size
    along that axis. A 1x1 output is torch's mean over the last two dims, which takes any input
    of two dims or more; other sizes take (C, H, W) or (N, C, H, W) with non-empty planes."""
    op = "fastcnn.adaptive_avg_pool2d"
    _check_input(op, input)
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        sizes = [output_size, output_size]
    else:
        if not isinstance(output_size, (tuple, list, torch.Size)):
            raise TypeError(f"{op}: output_size must be an int or a tuple of ints, not {type(output_size).__name__}")
        sizes = list(output_size)
        if sizes and input.dim() <= len(sizes):
            raise ValueError(f"{op}: Input dimension should be at least {len(sizes) + 1}")
        sizes = [default if size is None else size for size, default in zip(sizes, input.shape[-len(sizes):])]
        sizes = sizes * 2 if len(sizes) == 1 else sizes
    if len(sizes) != 2:
        raise RuntimeError(f"{op}: adaptive_avg_pool2d: output_size must be 2")
    for size in sizes:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"{op}: output_size must be ints (or None), got {sizes}")
    if any(size < 0 for size in sizes):
        raise RuntimeError(f"{op}: adaptive_avg_pool2d: elements of output_size must be greater than or equal to 0 "
                           f"but received {{{', '.join(str(size) for size in sizes)}}}")
    if sizes == [1, 1] and input.dim() >= 2:
        check_torch_implements(op, "adaptive_avg_pool2d", input.dtype, TORCH_FLOAT_DTYPES)
        return (1, 1)
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    for axis in range(input.dim() - 2, input.dim()):  # the spatial dims: zero channels pool to nothing
        if input.shape[axis] == 0:
            raise RuntimeError(f"{op}: adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
                               f"dimensions, but input has sizes {list(input.shape)} with dimension {axis} being "
                               f"empty")
    check_torch_implements(op, "adaptive_avg_pool2d", input.dtype, TORCH_FLOAT_DTYPES)
    return tuple(sizes)


# ----------------------------------------------------------------------------- cost
def bytes_moved(input_numel, output_numel, element_size, backward):
    """Bytes average pooling must move at the least: forward reads x and writes the output;
    backward reads the output gradient and writes the input gradient."""
    return (input_numel + output_numel) * element_size * (2 if backward else 1)


# ----------------------------------------------------------------------------- operators and autograd
def _empty_like_layout(like, shape, dtype):
    memory_format = torch.channels_last if suggests_channels_last(like) else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=like.device, memory_format=memory_format)


def _window_arguments(kernel_size, stride, padding, count_include_pad, divisor_override):
    """The launchers' window keywords; an empty ``kernel_size`` means adaptive pooling."""
    if not kernel_size:
        return {}
    return dict(kernel_size=tuple(kernel_size), stride=tuple(stride), padding=tuple(padding),
                count_include_pad=count_include_pad, divisor_override=divisor_override)


@torch.library.custom_op("fastcnn::avg_pool2d", mutates_args=())
def _avg_pool2d_op(input: Tensor, out_size: list[int], kernel_size: list[int], stride: list[int],
                   padding: list[int], count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    """The pooled [N, C, *out_size] output; adaptive pooling when ``kernel_size`` is empty."""
    out = _empty_like_layout(input, (*input.shape[:2], *out_size), input.dtype)
    if out.numel():
        with torch.profiler.record_function("fastcnn::avg_pool2d forward"):
            _backend.record_launch(OP, _kernels().forward(
                input, out, **_window_arguments(kernel_size, stride, padding, count_include_pad, divisor_override)))
    return out


@_avg_pool2d_op.register_fake
def _(input, out_size, kernel_size, stride, padding, count_include_pad, divisor_override):
    return _empty_like_layout(input, (*input.shape[:2], *out_size), input.dtype)


@torch.library.custom_op("fastcnn::avg_pool2d_backward", mutates_args=())
def _avg_pool2d_backward_op(grad_out: Tensor, input_shape: list[int], kernel_size: list[int], stride: list[int],
                            padding: list[int], count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    """grad_input: each input element gathers grad_out / divisor from the windows containing it."""
    grad_input = _empty_like_layout(grad_out, input_shape, grad_out.dtype)
    if grad_input.numel():
        with torch.profiler.record_function("fastcnn::avg_pool2d backward"):
            if grad_out.numel():
                _backend.record_launch(OP, _kernels().backward(
                    grad_out, grad_input,
                    **_window_arguments(kernel_size, stride, padding, count_include_pad, divisor_override)))
            else:  # a 0x0 adaptive output: no window contains anything
                grad_input.zero_()
    return grad_input


@_avg_pool2d_backward_op.register_fake
def _(grad_out, input_shape, kernel_size, stride, padding, count_include_pad, divisor_override):
    return _empty_like_layout(grad_out, input_shape, grad_out.dtype)


def _setup_context(ctx, inputs, output):
    input, _, kernel_size, stride, padding, count_include_pad, divisor_override = inputs
    ctx.arguments = (list(input.shape), kernel_size, stride, padding, count_include_pad, divisor_override)


def _backward(ctx, grad_out):
    return _avg_pool2d_backward_op(grad_out, *ctx.arguments), None, None, None, None, None, None


_avg_pool2d_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_avg_pool2d_op, "pooling")
def _avg_pool2d_launches(out, input, out_size, kernel_size, stride, padding, count_include_pad, divisor_override):
    if not out.numel():
        return []
    global_pool = not kernel_size and out.shape[2] == out.shape[3] == 1
    return [one_pass("_global_avg_pool_kernel" if global_pool else "_avg_pool_forward_kernel", [input], [out])]


@launches_of(_avg_pool2d_backward_op, "pooling")
def _avg_pool2d_backward_launches(grad_input, grad_out, input_shape, kernel_size, stride, padding, count_include_pad,
                                  divisor_override):
    if not grad_input.numel():
        return []
    if not grad_out.numel():
        return [one_pass("aten::zero_", [], [grad_input])]
    return [one_pass("_avg_pool_backward_kernel", [grad_out], [grad_input])]


# ----------------------------------------------------------------------------- functionals
def _pool(input, out_size, *window):
    """The operator on ``input`` seen as (N, C, H, W): a (C, H, W) input gains a batch dim, an
    (H, W) one a batch and a channel, more leading dims are merged into the batch (global pooling
    takes any of them)."""
    if input.dim() == 4:
        return _avg_pool2d_op(input, list(out_size), *window)
    # The batch spelled out, not -1: reshape cannot infer it when the input is empty.
    batched = (input.reshape(math.prod(input.shape[:-3]), *input.shape[-3:]) if input.dim() > 2
               else input.view(1, 1, *input.shape))
    out = _avg_pool2d_op(batched, list(out_size), *window)
    return out.view(*input.shape[:-2], *out_size)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on fastcnn's Triton kernels: every argument (ceil_mode,
    count_include_pad, divisor_override), (C, H, W) or (N, C, H, W) input, NCHW or channels_last."""
    kernel_size, stride, padding, out_size = check_avg_pool2d(input, kernel_size, stride, padding, ceil_mode,
                                                              divisor_override)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return torch.nn.functional.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                              divisor_override)
    return _pool(input, out_size, list(kernel_size), list(stride), list(padding), bool(count_include_pad),
                 divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` on fastcnn's Triton kernels: any output size
    (None keeps the input's), torch's windows (floor(i·H/OH) to ceil((i+1)·H/OH)); the global
    1x1 output is one reduction per (image, channels)."""
    output_size = check_adaptive_avg_pool2d(input, output_size)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback("adaptive_avg_pool2d", input.device)
        return torch.nn.functional.adaptive_avg_pool2d(input, output_size)
    return _pool(input, output_size, [], [], [], True, None)
