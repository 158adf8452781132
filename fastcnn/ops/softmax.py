"""softmax and log_softmax: ``fastcnn.softmax`` and ``fastcnn.log_softmax`` (as
``torch.nn.functional``'s) over ``kernels/softmax.py``: any dim of any layout, the row statistics
computed online in one read, backward one pass from the saved output.

Everything of softmax on the PyTorch side lives here, in this order: checks (torch's dim rules,
the implicit dim's warning, ``dtype``), cost, operators with autograd, and the functionals. The
output is contiguous, as torch's; the input is read in place when its dims before and after the
softmax dim each merge into one ([N, C, S] view), else from a contiguous copy.
"""
import math
import warnings

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass, restride
from .._layout import contiguous_strides, view_or_none
from ..dtypes import KERNEL_DTYPES, aten_type_name, autocast_runs_in_float32

__all__ = ["softmax", "log_softmax"]

OP = "softmax"


def _kernels():
    """kernels/softmax.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import softmax

    return softmax


# ----------------------------------------------------------------------------- checks
def implicit_dim(name, ndim, stacklevel):
    """torch's legacy choice of dim when none is given (0 for 0-, 1- and 3-d input, else 1), with
    its deprecation warning."""
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X "
                  "as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def wrap_dim(op, dim, ndim):
    """``dim`` in [0, ndim) (a 0-d tensor has the one dim -1/0), torch's IndexError otherwise."""
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got "
                         f"{dim})")
    return dim % rank


def check_softmax(op, name, input, dim, dtype, stacklevel):
    """The normalised dim and the output dtype, checked as torch checks them."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: {name}(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
    if dim is None:
        dim = implicit_dim(name, input.dim(), stacklevel + 1)
    dim = wrap_dim(op, dim, input.dim())
    out_dtype = input.dtype if dtype is None else dtype
    if not out_dtype.is_floating_point:
        kernel = "softmax_lastdim_kernel_impl" if name == "softmax" else "log_softmax_lastdim_kernel_impl"
        raise NotImplementedError(f"{op}: \"{kernel}\" not implemented for '{aten_type_name(out_dtype)}'")
    if out_dtype not in KERNEL_DTYPES:
        raise TypeError(f"{op}: output of dtype {out_dtype} is not supported by fastcnn's kernels (torch computes "
                        f"it; fastcnn takes {', '.join(str(d) for d in KERNEL_DTYPES)})")
    return dim, out_dtype


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward=True):
    """Forward reads x and writes y; backward reads y and dy and writes dx."""
    return numel * element_size * (5 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
def _rows_shape(shape, dim):
    """[N, C, S] of ``shape`` around ``dim``."""
    return (math.prod(shape[:dim]), shape[dim] if shape else 1, math.prod(shape[dim + 1:]))


def _as_rows(tensor, dim):
    """``tensor`` as an [N, C, S] view, or of a contiguous copy where its dims do not merge."""
    shape = _rows_shape(tensor.shape, dim)
    view = view_or_none(tensor, shape)
    return view if view is not None else tensor.contiguous().view(shape)


@torch.library.custom_op("fastcnn::softmax", mutates_args=())
def _softmax_op(input: Tensor, dim: int, log: bool, out_dtype: torch.dtype) -> Tensor:
    """softmax (``log``: log_softmax) of ``input`` over ``dim`` (normalised), as ``out_dtype``."""
    out = torch.empty(input.shape, dtype=out_dtype, device=input.device)
    if out.numel():
        with torch.profiler.record_function("fastcnn::log_softmax" if log else "fastcnn::softmax"):
            _backend.record_launch(OP, _kernels().forward(_as_rows(input, dim), out.view(_rows_shape(out.shape, dim)),
                                                          log=log))
    return out


@_softmax_op.register_fake
def _(input, dim, log, out_dtype):
    return torch.empty(input.shape, dtype=out_dtype, device=input.device)


@torch.library.custom_op("fastcnn::softmax_backward", mutates_args=())
def _softmax_backward_op(grad_out: Tensor, output: Tensor, dim: int, log: bool, input_dtype: torch.dtype) -> Tensor:
    """The input's gradient (contiguous, in ``input_dtype``) from the output and its gradient."""
    grad_input = torch.empty(output.shape, dtype=input_dtype, device=output.device)
    if grad_input.numel():
        shape = _rows_shape(output.shape, dim)
        with torch.profiler.record_function("fastcnn::log_softmax backward" if log else "fastcnn::softmax backward"):
            _backend.record_launch(OP, _kernels().backward(output.view(shape), _as_rows(grad_out, dim),
                                                           grad_input.view(shape), log=log))
    return grad_input


@_softmax_backward_op.register_fake
def _(grad_out, output, dim, log, input_dtype):
    return torch.empty(output.shape, dtype=input_dtype, device=output.device)


def _setup_context(ctx, inputs, output):
    input, dim, log, _ = inputs
    ctx.save_for_backward(output)
    ctx.dim, ctx.log, ctx.input_dtype = dim, log, input.dtype


def _backward(ctx, grad_out):
    (output,) = ctx.saved_tensors
    return _softmax_backward_op(grad_out, output, ctx.dim, ctx.log, ctx.input_dtype), None, None, None


_softmax_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
def _copied(tensor, dim):
    """The contiguous copy ``_as_rows`` makes of ``tensor``, as launches: none for a view."""
    if view_or_none(tensor, _rows_shape(tensor.shape, dim)) is not None:
        return []
    return restride(tensor, contiguous_strides(tensor.shape))


@launches_of(_softmax_op, "activation")
def _softmax_launches(out, input, dim, log, out_dtype):
    return _copied(input, dim) + [one_pass("_softmax_forward_kernel", [input], [out])] if out.numel() else []


@launches_of(_softmax_backward_op, "activation")
def _softmax_backward_launches(grad_input, grad_out, output, dim, log, input_dtype):
    if not grad_input.numel():
        return []
    return _copied(grad_out, dim) + [one_pass("_softmax_backward_kernel", [output, grad_out], [grad_input])]


# ----------------------------------------------------------------------------- functionals
def _softmax(name, input, dim, stacklevel, dtype, log):
    op = f"fastcnn.{name}"
    if autocast_runs_in_float32(input, ("cuda",)) and dtype is None:  # CUDA autocast runs both in fp32
        dtype = torch.float32
    dim, out_dtype = check_softmax(op, name, input, dim, dtype, stacklevel + 1)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        function = torch.nn.functional.log_softmax if log else torch.nn.functional.softmax
        return function(input, dim, dtype=dtype)
    if input.dim() == 0:
        return _softmax_op(input.reshape(1), 0, log, out_dtype).reshape(())
    return _softmax_op(input, dim, log, out_dtype)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.softmax``: exp(x - logsumexp(x)) over ``dim`` (torch's implicit dim
    and its warning when None), computed in fp32, written as ``dtype`` when given (an integer
    input then too). Differentiable; the output is contiguous."""
    return _softmax("softmax", input, dim, _stacklevel, dtype, log=False)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """``torch.nn.functional.log_softmax``: x - logsumexp(x) over ``dim``, as ``softmax``."""
    return _softmax("log_softmax", input, dim, _stacklevel, dtype, log=True)
