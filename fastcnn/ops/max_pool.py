"""max_pool2d: ``fastcnn.max_pool2d`` (as ``torch.nn.functional.max_pool2d``) over
``kernels/max_pool.py``: argument checks and output-size math (torch's, in torch's order and
words), the byte count, the PyTorch operators ``torch.ops.fastcnn.max_pool2d`` and
``torch.ops.fastcnn.max_pool2d_backward`` (fake implementations and an autograd formula, so
``torch.compile`` keeps them in its graph) and the functional.

For backward the op keeps one byte per output element (the chosen tap of each window) instead of
torch's int64 indices; PyTorch's indices are produced only for ``return_indices=True``.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import suggests_channels_last
from ..dtypes import TORCH_FLOAT_DTYPES, TORCH_INTEGER_DTYPES
from ..validation import check_torch_implements, int_pair
from . import batch_norm as _batch_norm

__all__ = ["max_pool2d", "batch_norm_max_pool2d"]

OP = "max_pool2d"
# What torch pools (it raises NotImplementedError for the rest); comparisons need no arithmetic,
# so every one of them runs in the kernels.
TORCH_DTYPES = TORCH_FLOAT_DTYPES + TORCH_INTEGER_DTYPES


def _kernels():
    """kernels/max_pool.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import max_pool

    return max_pool


# ----------------------------------------------------------------------------- checks and geometry
class Pool2dGeometry(NamedTuple):
    """Normalised max_pool2d arguments and the output's (height, width)."""
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool
    out_size: tuple


def pool_output_size(size, kernel, pad, stride, dilation, ceil_mode):
    """PyTorch's pooling_output_shape: with ceil_mode a last window that would start in the
    right/bottom padding is dropped."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_pair(op, name, value, wording, pool="max_pool2d"):
    """A ``pool`` argument as a pair, with torch's message for a sequence of the wrong length."""
    if isinstance(value, (tuple, list, torch.Size)) and len(value) not in (1, 2):
        raise RuntimeError(f"{op}: {pool}: {name} {wording} (got {list(value)})")
    return int_pair(op, name, value)


def window_pairs(op, pool, kernel_size, stride, padding):
    """(kernel_size, stride, padding) of a 2-d pool as pairs, stride defaulting to the kernel (None
    or empty), with torch's messages for sequences of the wrong length. Shared by the pools."""
    kernel_size = pool_pair(op, "kernel_size", kernel_size, "must either be a single int, or a tuple of two ints", pool)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel_size
    else:
        stride = pool_pair(op, "stride", stride, "must either be omitted, a single int, or a tuple of two ints", pool)
    return kernel_size, stride, pool_pair(op, "padding", padding, "must either be a single int, or a tuple of two ints",
                                          pool)


def check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate F.max_pool2d's arguments as torch does, in torch's order and words (its
    max_pool2d_with_indices checks, then pooling_output_shape's, then pool2d_shape_check's), and
    return their ``Pool2dGeometry``."""
    op = "fastcnn.max_pool2d"
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    kernel_size, stride, padding = window_pairs(op, "max_pool2d", kernel_size, stride, padding)
    dilation = pool_pair(op, "dilation", dilation, "must be either a single int, or a tuple of two ints")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: non-empty 3D or 4D (batch mode) tensor expected for input, "
                           f"got {list(input.shape)}")
    out_size = check_window(op, input, kernel_size, stride, padding, dilation, ceil_mode)
    # Comparisons need no arithmetic: every dtype torch pools runs in the kernels.
    check_torch_implements(op, "max_pool2d", input.dtype, TORCH_DTYPES)
    return Pool2dGeometry(kernel_size, stride, padding, dilation, bool(ceil_mode), out_size)


def check_window(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """torch's pooling_output_shape and pool2d_shape_check, in their order and words, for the
    pairs of a 2-d pooling window; returns the output (height, width). Shared by the pools."""
    for k, s, p, d in zip(kernel_size, stride, padding, dilation):
        if s == 0:
            raise RuntimeError(f"{op}: stride should not be zero")
        if p < 0:
            raise RuntimeError(f"{op}: pad must be non-negative, but got pad: {p}")
        effective_kernel = (k - 1) * d + 1
        if p > int(effective_kernel / 2):  # C++'s division, which truncates a negative kernel's toward 0
            raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, but got pad={p}, "
                               f"kernel_size={k} and dilation={d}")
    (kernel_h, kernel_w), (stride_h, stride_w), (pad_h, pad_w) = kernel_size, stride, padding
    if kernel_h <= 0 or kernel_w <= 0:
        raise RuntimeError(f"{op}: kernel size should be greater than zero, but got kH: {kernel_h} kW: {kernel_w}")
    if stride_h <= 0 or stride_w <= 0:
        raise RuntimeError(f"{op}: stride should be greater than zero, but got dH: {stride_h} dW: {stride_w}")
    if dilation[0] <= 0 or dilation[1] <= 0:
        raise RuntimeError(f"{op}: dilation should be greater than zero, but got dilationH: {dilation[0]} "
                           f"dilationW: {dilation[1]}")
    if any(size == 0 for size in input.shape[-3:]):
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got: {list(input.shape)}")
    if pad_w > kernel_w // 2 or pad_h > kernel_h // 2:
        raise RuntimeError(f"{op}: pad should be smaller than or equal to half of kernel size, but got "
                           f"padW = {pad_w}, padH = {pad_h}, kW = {kernel_w}, kH = {kernel_h}")
    out_size = tuple(pool_output_size(size, k, p, s, d, ceil_mode)
                     for size, k, p, s, d in zip(input.shape[-2:], kernel_size, padding, stride, dilation))
    if any(size < 1 for size in out_size):
        channels, height, width = input.shape[-3:]
        raise RuntimeError(f"{op}: Given input size: ({channels}x{height}x{width}). Calculated output size: "
                           f"({channels}x{out_size[0]}x{out_size[1]}). Output size is too small")
    return out_size


# ----------------------------------------------------------------------------- cost
def bytes_moved(input_numel, output_numel, element_size, backward):
    """Bytes max-pool must move at the least: forward reads x and writes the output; backward
    reads the output gradient and writes the input gradient (saved indices not counted)."""
    return (input_numel + output_numel) * element_size * (2 if backward else 1)


# ----------------------------------------------------------------------------- operators and autograd


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
            _backend.record_launch(OP, _kernels().forward(
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
            _backend.record_launch(OP, _kernels().backward(
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


# ----------------------------------------------------------------------------- batch norm in the prologue
# max_pool2d(act(bn(x))) as one node, a ResNet stem's bn → relu → max-pool: the pool normalises
# what it loads, and its backward takes the gathered gradient through act' and sums what batch
# norm's backward needs (kernels/max_pool.py); then only batch norm's finalize and apply run.
@torch.library.custom_op("fastcnn::max_pool2d_normalized", mutates_args=())
def _max_pool2d_normalized_op(input: Tensor, stats: Tensor, norm_weight: Optional[Tensor],
                              norm_bias: Optional[Tensor], training: bool, kind: Optional[str], parameter: float,
                              kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
                              ceil_mode: bool) -> tuple[Tensor, Tensor]:
    """(max_pool2d(act(batch_norm(input))), the chosen tap of each window), from the batch norm's
    statistics ``stats`` (``training``: the batch's) and its affine parameters."""
    out, taps, _ = _empty_outputs(input, kernel_size, stride, padding, dilation, ceil_mode, False)
    if out.numel():
        with torch.profiler.record_function("fastcnn::max_pool2d forward (batch norm in the prologue)"):
            _backend.record_launch(OP, _kernels().forward(
                input, out, taps, None, kernel_size=tuple(kernel_size), stride=tuple(stride), padding=tuple(padding),
                dilation=tuple(dilation),
                prologue=_batch_norm.input_prologue(stats, kind, parameter)))
    return out, taps


@_max_pool2d_normalized_op.register_fake
def _(input, stats, norm_weight, norm_bias, training, kind, parameter, kernel_size, stride, padding, dilation,
      ceil_mode):
    return _empty_outputs(input, kernel_size, stride, padding, dilation, ceil_mode, False)[:2]


def _empty_sums(input):
    slots = _kernels().backward_sum_slots(input.shape, input.stride(1))
    return torch.empty((slots, 2, input.shape[1]), dtype=torch.float32, device=input.device)


@torch.library.custom_op("fastcnn::max_pool2d_normalized_backward", mutates_args=())
def _max_pool2d_normalized_backward_op(grad_out: Tensor, taps: Tensor, input: Tensor, stats: Tensor,
                                       norm_weight: Optional[Tensor], norm_bias: Optional[Tensor], training: bool,
                                       kind: Optional[str], parameter: float, kernel_size: list[int],
                                       stride: list[int], padding: list[int],
                                       dilation: list[int]) -> tuple[Tensor, Tensor]:
    """(g = act'(bn(input))·(the pool's input gradient), the partial sums of g and g·x̂, fp32
    [slots, 2, C]): what ``fastcnn::batch_norm_backward_from_sums`` takes."""
    grad = torch.empty(input.shape, dtype=grad_out.dtype, device=grad_out.device, memory_format=_memory_format(taps))
    sums = _empty_sums(grad)
    if grad.numel():
        with torch.profiler.record_function("fastcnn::max_pool2d backward (and batch norm's sums)"):
            _backend.record_launch(OP, _kernels().backward(
                grad_out, taps, grad, kernel_size=tuple(kernel_size), stride=tuple(stride), padding=tuple(padding),
                dilation=tuple(dilation),
                epilogue=(input, _batch_norm.input_prologue(stats, kind, parameter),
                          sums)))
    return grad, sums


@_max_pool2d_normalized_backward_op.register_fake
def _(grad_out, taps, input, stats, norm_weight, norm_bias, training, kind, parameter, kernel_size, stride, padding,
      dilation):
    grad = torch.empty(input.shape, dtype=grad_out.dtype, device=grad_out.device, memory_format=_memory_format(taps))
    return grad, _empty_sums(grad)


def _setup_normalized_context(ctx, inputs, output):
    """Saved: the input, the statistics and the chosen taps; act(bn(x)) is never kept."""
    input, stats, norm_weight, norm_bias, training, kind, parameter, kernel_size, stride, padding, dilation, _ = inputs
    _, taps = output
    ctx.mark_non_differentiable(taps)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, stats, norm_weight, norm_bias, taps)
    ctx.arguments = (training, kind, parameter, kernel_size, stride, padding, dilation)


def _normalized_backward(ctx, grad_out, _grad_taps):
    input, stats, norm_weight, norm_bias, taps = ctx.saved_tensors
    needs = ctx.needs_input_grad
    wanted = [needs[0], needs[2], needs[3]]  # input, norm weight, norm bias
    if grad_out is None or not any(wanted):
        return (None,) * 12
    grad, sums = _max_pool2d_normalized_backward_op(grad_out, taps, input, stats, norm_weight, norm_bias,
                                                    *ctx.arguments)
    grads = _batch_norm._backward_from_sums_op(grad, input, sums, stats, norm_weight, norm_bias, ctx.arguments[0],
                                               wanted)
    grads = [value if needed else None for value, needed in zip(grads, wanted)]
    return grads[0], None, grads[1], grads[2], None, None, None, None, None, None, None, None


_max_pool2d_normalized_op.register_autograd(_normalized_backward, setup_context=_setup_normalized_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_max_pool2d_op, "pooling")
def _max_pool2d_launches(outputs, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    # Writes the output and one byte per output element (the chosen tap), torch's int64 indices only when asked.
    return [one_pass("_max_pool2d_forward_kernel", [input], outputs)] if outputs[0].numel() else []


@launches_of(_max_pool2d_backward_op, "pooling")
def _max_pool2d_backward_launches(grad_input, grad_out, taps, input_shape, kernel_size, stride, padding, dilation):
    return [one_pass("_max_pool2d_backward_kernel", [grad_out, taps], [grad_input])] if grad_input.numel() else []


@launches_of(_max_pool2d_normalized_op, "pooling")
def _max_pool2d_normalized_launches(outputs, input, stats, norm_weight, norm_bias, training, kind, parameter,
                                    kernel_size, stride, padding, dilation, ceil_mode):
    return [one_pass("_max_pool2d_forward_kernel", [input], outputs)] if outputs[0].numel() else []


@launches_of(_max_pool2d_normalized_backward_op, "pooling")
def _max_pool2d_normalized_backward_launches(outputs, grad_out, taps, input, stats, norm_weight, norm_bias, training,
                                             kind, parameter, kernel_size, stride, padding, dilation):
    # Gathers dy through the taps, reads x for act' and x̂; writes g and the partial sums.
    return [one_pass("_max_pool2d_backward_kernel", [grad_out, taps, input], list(outputs))] if input.numel() else []


# ----------------------------------------------------------------------------- functional
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


def batch_norm_max_pool2d(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                          eps=1e-5, *, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                          activation=None, moments=None):
    """``F.max_pool2d(act(F.batch_norm(input, running_mean, running_var, weight, bias, training,
    momentum, eps)), kernel_size, stride, padding, dilation, ceil_mode)`` with the batch norm in
    the pool's prologue (a ResNet stem's bn → relu → max-pool): its statistics in one pass over
    the input in training (none with ``moments``, the input's from the convolution that computed
    it), then one pool that normalises and activates what it loads. act(bn(x)) is never written
    nor kept: backward saves the input, six floats per channel and one byte per output, and the
    pool's backward sums what batch norm's backward needs. Batch norm's arguments and checks are
    ``fastcnn.batch_norm``'s (the running statistics updated in place in training), the pool's
    ``fastcnn.max_pool2d``'s (no ``return_indices``); input ``(N, C, H, W)``."""
    op = "fastcnn.batch_norm_max_pool2d"
    kind, parameter = _batch_norm.check_inside(op, input, running_mean, running_var, weight, bias, training, momentum,
                                               eps, activation)
    geometry = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(op, input.device)
        normalized = _batch_norm.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                                            activation=activation, moments=moments)
        return max_pool2d(normalized, kernel_size, stride, padding, dilation, ceil_mode)
    input, stats = _batch_norm.prologue_statistics(op, input, running_mean, running_var, weight, bias, training,
                                                   momentum, eps, moments)
    out, _ = _max_pool2d_normalized_op(input, stats, weight, bias, bool(training), kind, parameter,
                                       list(geometry.kernel_size), list(geometry.stride), list(geometry.padding),
                                       list(geometry.dilation), geometry.ceil_mode)
    return out
