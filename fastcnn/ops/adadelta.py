"""Adadelta (weight decay): one fused multi-tensor step, the op behind ``fastcnn.optim.Adadelta``
(fastcnn/optim.py), over ``kernels/adadelta.py``: the byte count, the in-place operator
``torch.ops.fastcnn.adadelta_step_`` and the functional ``adadelta_step`` that picks it or the
PyTorch reference path.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of
from ..multi_tensor import step_launches
from ..dtypes import triton_dtype
from ..multi_tensor import count_step, run_step, step_input, write

__all__ = []  # its public face is fastcnn.optim.Adadelta


def _kernels():
    """(kernels/adadelta.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import adadelta, multi_tensor

    return adadelta, multi_tensor


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size):
    """Bytes an Adadelta step must move: read param, grad, square_avg, acc_delta and write param,
    square_avg, acc_delta (7 accesses)."""
    return numel * element_size * 7


# ----------------------------------------------------------------------------- operator, functional, reference path
@torch.library.custom_op("fastcnn::adadelta_step_", mutates_args=("params", "square_avgs", "acc_deltas", "steps"))
def _adadelta_step_op(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor],
                      acc_deltas: list[Tensor], steps: list[Tensor], grad_scale: Optional[Tensor],
                      found_inf: Optional[Tensor], *, lr: float, rho: float, eps: float, weight_decay: float,
                      maximize: bool) -> None:
    """One Adadelta step, in place, over tensors that share a device and dtypes, walkable as flat
    arrays (see fastcnn.optim)."""
    if not params:
        return
    adadelta_kernels, multi_tensor = _kernels()
    table = multi_tensor.cached_table((params, grads, square_avgs, acc_deltas, steps), params[0].device)
    with torch.profiler.record_function("fastcnn::adadelta_step"):
        _backend.record_launch("adadelta_step", adadelta_kernels.adadelta_step(
            table, element_type=triton_dtype(params[0].dtype), state_type=triton_dtype(square_avgs[0].dtype),
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
            grad_scale=grad_scale, found_inf=found_inf))


@_adadelta_step_op.register_fake
def _(params, grads, square_avgs, acc_deltas, steps, grad_scale, found_inf, **hyperparameters):
    return None


@launches_of(_adadelta_step_op, "optimizer")
def _adadelta_step_launches(_, params, grads, square_avgs, acc_deltas, steps, grad_scale, found_inf,
                            **hyperparameters):
    if not params:
        return []
    states = [square_avgs, acc_deltas]
    return step_launches("_adadelta_step_kernel", [params, grads, *states, grad_scale], [params, *states], steps)


def adadelta_step(op, params, grads, square_avgs, acc_deltas, steps, *, grad_scale=None, found_inf=None,
                  **hyperparameters):
    """One Adadelta step, in place, over tensors on one device that share dtypes and can be walked
    as flat arrays (fastcnn.optim prepares them): the fused kernels, or the PyTorch reference path
    (announced once with a FallbackWarning naming ``op``) where no kernel can run.
    ``hyperparameters`` are lr, rho, eps, weight_decay, maximize."""
    run_step(op, params, _adadelta_step_op, reference_adadelta_step, params, grads, square_avgs, acc_deltas, steps,
             grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


def reference_adadelta_step(params, grads, square_avgs, acc_deltas, steps, *, lr, rho, eps, weight_decay, maximize,
                            grad_scale=None, found_inf=None):
    """The PyTorch path of ``adadelta_step``, where no Triton kernel can run: the kernel's math
    (see kernels/adadelta.py) in fp32 torch ops, so a model gives the same results either way."""
    keep = None if found_inf is None else (found_inf == 0)
    for index, param in enumerate(params):
        count_step(steps[index], keep)
        grad = step_input(param, grads[index], grad_scale=grad_scale, maximize=maximize, weight_decay=weight_decay)
        square_avg = rho * square_avgs[index].float() + (1.0 - rho) * grad * grad
        acc_delta = acc_deltas[index].float()
        delta = (acc_delta + eps).sqrt() / (square_avg + eps).sqrt() * grad
        write(square_avgs[index], square_avg, keep)
        write(acc_deltas[index], rho * acc_delta + (1.0 - rho) * delta * delta, keep)
        write(param, param.float() - lr * delta, keep)
