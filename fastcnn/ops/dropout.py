"""Dropout, channel-wise dropout and stochastic depth: ``fastcnn.dropout`` (= F.dropout),
``fastcnn.dropout2d`` (= F.dropout2d, torch's feature dropout: whole (sample, channel) planes) and
``fastcnn.stochastic_depth`` (= torchvision.ops.stochastic_depth: whole samples, or the whole
batch, which is channel dropout of the input seen as [N, 1, rest] or [1, 1, all]), over
``kernels/dropout.py``: torch's checks and warnings, the byte count, the operator and autograd, the
functionals.

One operator, ``fastcnn::dropout(input, seed, p, channelwise)``, whose backward is the same
operator applied to the output gradient: the seed (one int64 on the device, drawn from torch's
generator with ``torch.randint``, so ``torch.manual_seed`` repeats a run and nothing syncs) names
the mask, which is regenerated rather than stored. Saved for backward: the 8-byte seed. As
torch does, p = 0 and eval mode return the input itself, and p = 1 multiplies by zero (NaN stays
NaN). ``inplace=True`` writes into the input when autograd does not need it.
"""
import math
import warnings

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import as_rows, dense_copy, elementwise_strides, empty_rows_like, rows_view, with_strides
from ..dtypes import aten_type_name
from ..validation import check_index_range, check_kernel_dtype

__all__ = ["dropout", "dropout2d", "stochastic_depth"]

OP = "dropout"


def _kernels():
    """kernels/dropout.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import dropout

    return dropout


# ----------------------------------------------------------------------------- checks
def probability(op, p):
    """``p`` as torch's dropout takes it: a number (a bool is 0 or 1; kept as given, so that
    messages print it as torch's do) or a 0-dim real tensor (read on the host, as torch's binding
    reads it); anything else is torch's TypeError."""
    if isinstance(p, torch.Tensor) and p.dim() == 0 and not p.is_complex():
        return float(p.item())
    if not isinstance(p, (int, float)):
        raise TypeError(f"{op}: argument 'p' must be float, not {type(p).__name__}")
    return p


def check_dropout(op, input, p, training, *, channelwise):
    """Validate F.dropout's/F.dropout2d's arguments as torch does, in its order (Python's range
    check, then ATen's, which also refuses NaN, in eval too); return whether to compute."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if p < 0.0 or p > 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    if math.isnan(p):
        raise RuntimeError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    if channelwise:
        if input.dim() not in (3, 4):
            warnings.warn(f"dropout2d: Received a {input.dim()}-D input to dropout2d, which is deprecated and will "
                          "result in an error in a future release. To retain the behavior and silence this warning, "
                          "please use dropout instead. Note that dropout2d exists to provide channel-wise dropout on "
                          "inputs with 2 spatial dimensions, a channel dimension, and an optional batch dimension "
                          "(i.e. 3D or 4D inputs).", stacklevel=3)
        if input.dim() == 3:
            warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                          "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel "
                          "dim. This behavior will change in a future release to interpret the input as one without "
                          "a batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout "
                          "behavior, please switch to using dropout1d instead.", stacklevel=3)
    if not training or p == 0.0 or input.numel() == 0:
        return False  # nothing to compute: torch returns the input
    if channelwise and input.dim() < 2:
        raise RuntimeError(f"{op}: Feature dropout requires at least 2 dimensions in the input")
    if not input.is_floating_point():
        raise RuntimeError(f"{op}: result type Float can't be cast to the desired output type "
                           f"{aten_type_name(input.dtype)}")
    check_kernel_dtype(op, input)
    if channelwise:
        check_index_range(op, sample_channel_pairs=input.shape[0] * input.shape[1])
    return True


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Forward reads x and writes y; backward reads dy and writes dx."""
    return numel * element_size * (4 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
def draw_seed(device):
    """One int64 Philox seed on ``device`` from torch's generator for it (no host sync)."""
    return torch.randint(0, 2**62, (1,), device=device, dtype=torch.int64)


def _launch(input, out, seed, p, channelwise):
    if input.numel():
        with torch.profiler.record_function("fastcnn::dropout2d" if channelwise else "fastcnn::dropout"):
            if channelwise:
                launches = _kernels().channel_dropout(as_rows(input), rows_view(out), seed, p=p)
            else:
                launches = _kernels().dropout(input, out, seed, p=p)
            _backend.record_launch(OP, launches)


def _like(input, channelwise):
    return empty_rows_like(input) if channelwise else torch.empty_like(input)


@torch.library.custom_op("fastcnn::dropout", mutates_args=())
def _dropout_op(input: Tensor, seed: Tensor, p: float, channelwise: bool) -> Tensor:
    """input · mask / (1 - p), the mask Philox's at ``seed``; ``input`` dense unless ``channelwise``."""
    out = _like(input, channelwise)
    _launch(input, out, seed, p, channelwise)
    return out


@_dropout_op.register_fake
def _(input, seed, p, channelwise):
    return _like(input, channelwise)


@torch.library.custom_op("fastcnn::dropout_", mutates_args=("input",))
def _dropout_inplace_op(input: Tensor, seed: Tensor, p: float, channelwise: bool) -> None:
    _launch(input, input, seed, p, channelwise)


@_dropout_inplace_op.register_fake
def _(input, seed, p, channelwise):
    return None


def _setup_context(ctx, inputs, output):
    input, seed, p, channelwise = inputs
    ctx.save_for_backward(seed)
    ctx.options = (p, channelwise)
    ctx.strides = output.stride()


def _backward(ctx, grad_out):
    (seed,) = ctx.saved_tensors
    p, channelwise = ctx.options
    if not channelwise:  # the flat kernel pairs elements by memory position: the output's layout
        grad_out = with_strides(grad_out, ctx.strides)
    return _dropout_op(grad_out, seed, p, channelwise), None, None, None


_dropout_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
def _dropout_launch(input, out, channelwise):
    """The mask is drawn from the seed in the kernel: nothing but the input is read."""
    kernel = "_channel_dropout_kernel" if channelwise else "_dropout_kernel"
    return [one_pass(kernel, [input], [out])] if input.numel() else []


@launches_of(_dropout_op, "dropout")
def _dropout_launches(out, input, seed, p, channelwise):
    return _dropout_launch(input, out, channelwise)


@launches_of(_dropout_inplace_op, "dropout")
def _dropout_inplace_launches(_, input, seed, p, channelwise):
    return _dropout_launch(input, input, channelwise)


# ----------------------------------------------------------------------------- functional
def _dropout(op, input, p, training, inplace, channelwise):
    p = probability(f"fastcnn.{op}", p)
    if not check_dropout(f"fastcnn.{op}", input, p, training, channelwise=channelwise):
        return input
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(op, input.device)
        function = torch.nn.functional.dropout2d if channelwise else torch.nn.functional.dropout
        return function(input, p, training, inplace)
    seed = draw_seed(input.device)
    # The flat kernel takes a dense tensor: a strided view is dropped out in a dense copy laid out
    # in the dimension order torch's output would have (written back into the view when in place).
    dense = input if channelwise else dense_copy(input)
    if inplace and not (torch.is_grad_enabled() and input.requires_grad):
        if channelwise and rows_view(input) is None:
            dense = as_rows(input).view(input.shape)  # the channel kernel reads [N, C, S] rows
        _dropout_inplace_op(dense, seed, float(p), channelwise)
        return input if dense is input else input.copy_(dense)
    return _dropout_op(dense, seed, float(p), channelwise)


def dropout(input, p=0.5, training=True, inplace=False):
    """``F.dropout``: each element zeroed with probability ``p``, the rest scaled by 1/(1-p), the
    random numbers Philox's from a seed drawn from torch's generator."""
    return _dropout("dropout", input, p, training, inplace, False)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """``F.dropout2d``: whole channels (each (n, c) plane of an (N, C, ...) input) zeroed with
    probability ``p``, the rest scaled by 1/(1-p); torch's warnings for inputs not 4-d."""
    return _dropout("dropout2d", input, p, training, inplace, True)


def _in_memory_order(tensor):
    """(``tensor`` permuted so that its strides decrease, the permutation): contiguous for a dense
    tensor, so it views as rows of consecutive memory."""
    order = sorted(range(tensor.dim()), key=lambda dim: (-tensor.stride(dim), dim))
    return tensor.permute(order), order


def stochastic_depth(input, p, mode, training=True):
    """``torchvision.ops.stochastic_depth``: in training each sample ("row") or the whole batch
    ("batch") is zeroed with probability ``p`` and the rest scaled by 1/(1 - p) (p = 1 zeroes
    everything); the mask is Philox's, regenerated in backward like dropout2d's."""
    op = "fastcnn.stochastic_depth"
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    p = probability(op, p)
    if p < 0.0 or p > 1.0:
        raise ValueError(f"{op}: drop probability has to be between 0 and 1, but got {p}")
    if mode not in ("batch", "row"):
        raise ValueError(f"{op}: mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    if math.isnan(p):  # torchvision's bernoulli_(1 - p) refuses it, even for an empty input
        raise RuntimeError(f"{op}: bernoulli_ expects p to be in [0, 1], but got p={1.0 - p}")
    if input.numel() == 0:
        return input
    if not input.is_floating_point():
        raise RuntimeError(f"{op}: stochastic depth takes floating-point input, got {input.dtype}")
    check_kernel_dtype(op, input)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback("stochastic_depth", input.device)
        shape = [input.shape[0]] + [1] * (input.dim() - 1) if mode == "row" else [1] * input.dim()
        noise = torch.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(1.0 - p)
        return input * (noise / (1.0 - p) if p < 1.0 else noise)
    rows = input.shape[0] if mode == "row" else 1
    check_index_range(op, sample_channel_pairs=rows)
    ordered, order = _in_memory_order(input)
    if not ordered.is_contiguous() or (mode == "row" and order[0] != 0 and input.shape[0] > 1):
        ordered, order = input.contiguous(), list(range(input.dim()))  # strided, or samples interleaved
    # The mask of channel dropout depends only on the row: a row of [rows, 1, numel / rows] is one
    # sample (or, rows = 1, everything), its elements in memory order.
    dropped = _dropout_op(ordered.view(rows, 1, -1), draw_seed(input.device), float(p), True)
    dropped = dropped.view(ordered.shape).permute([order.index(dim) for dim in range(input.dim())])
    # torchvision's input * noise is laid out in the input's dimension order; where the kernel
    # needed another (a strided view, samples interleaved), the result is copied into that one.
    return with_strides(dropped, elementwise_strides(input))
