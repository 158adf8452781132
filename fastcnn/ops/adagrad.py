"""Adagrad (lr decay, weight decay): one fused multi-tensor step, the op behind
``fastcnn.optim.Adagrad`` (fastcnn/optim.py), over ``kernels/adagrad.py``: the byte count, the
in-place operator ``torch.ops.fastcnn.adagrad_step_`` and the functional ``adagrad_step`` that picks
it or the PyTorch reference path.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of
from ..multi_tensor import step_launches
from ..dtypes import triton_dtype
from ..multi_tensor import count_step, run_step, step_input, write

__all__ = []  # its public face is fastcnn.optim.Adagrad


def _kernels():
    """(kernels/adagrad.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import adagrad, multi_tensor

    return adagrad, multi_tensor


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size):
    """Bytes an Adagrad step must move: read param, grad, sum and write param, sum (5 accesses)."""
    return numel * element_size * 5


# ----------------------------------------------------------------------------- operator, functional, reference path
@torch.library.custom_op("fastcnn::adagrad_step_", mutates_args=("params", "state_sums", "steps"))
def _adagrad_step_op(params: list[Tensor], grads: list[Tensor], state_sums: list[Tensor], steps: list[Tensor],
                     grad_scale: Optional[Tensor], found_inf: Optional[Tensor], *, lr: float, lr_decay: float,
                     eps: float, weight_decay: float, maximize: bool) -> None:
    """One Adagrad step, in place, over tensors that share a device and dtypes, walkable as flat
    arrays (see fastcnn.optim)."""
    if not params:
        return
    adagrad_kernels, multi_tensor = _kernels()
    table = multi_tensor.cached_table((params, grads, state_sums, steps), params[0].device)
    with torch.profiler.record_function("fastcnn::adagrad_step"):
        _backend.record_launch("adagrad_step", adagrad_kernels.adagrad_step(
            table, element_type=triton_dtype(params[0].dtype), state_type=triton_dtype(state_sums[0].dtype),
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay, maximize=maximize,
            grad_scale=grad_scale, found_inf=found_inf))


@_adagrad_step_op.register_fake
def _(params, grads, state_sums, steps, grad_scale, found_inf, **hyperparameters):
    return None


@launches_of(_adagrad_step_op, "optimizer")
def _adagrad_step_launches(_, params, grads, state_sums, steps, grad_scale, found_inf, **hyperparameters):
    if not params:
        return []
    return step_launches("_adagrad_step_kernel", [params, grads, state_sums, grad_scale], [params, state_sums], steps)


def adagrad_step(op, params, grads, state_sums, steps, *, grad_scale=None, found_inf=None, **hyperparameters):
    """One Adagrad step, in place, over tensors on one device that share dtypes and can be walked
    as flat arrays (fastcnn.optim prepares them): the fused kernels, or the PyTorch reference path
    (announced once with a FallbackWarning naming ``op``) where no kernel can run.
    ``hyperparameters`` are lr, lr_decay, eps, weight_decay, maximize."""
    run_step(op, params, _adagrad_step_op, reference_adagrad_step, params, grads, state_sums, steps,
             grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


def reference_adagrad_step(params, grads, state_sums, steps, *, lr, lr_decay, eps, weight_decay, maximize,
                           grad_scale=None, found_inf=None):
    """The PyTorch path of ``adagrad_step``, where no Triton kernel can run: the kernel's math
    (see kernels/adagrad.py) in torch ops, so a model gives the same results either way."""
    keep = None if found_inf is None else (found_inf == 0)
    for index, param in enumerate(params):
        step = steps[index]
        count_step(step, keep)
        step_size = (lr / (1.0 + (step.to(torch.float64) - 1.0) * lr_decay)).float()
        grad = step_input(param, grads[index], grad_scale=grad_scale, maximize=maximize, weight_decay=weight_decay)
        square_sum = state_sums[index].float() + grad * grad
        write(state_sums[index], square_sum, keep)
        write(param, param.float() - step_size * (grad / (square_sum.sqrt() + eps)), keep)
