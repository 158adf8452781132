"""RMSprop (centered, momentum, weight decay): one fused multi-tensor step, the op behind
``fastcnn.optim.RMSprop`` (fastcnn/optim.py), over ``kernels/rmsprop.py``: the byte count, the
in-place operator ``torch.ops.fastcnn.rmsprop_step_`` and the functional ``rmsprop_step`` that picks
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

__all__ = []  # its public face is fastcnn.optim.RMSprop


def _kernels():
    """(kernels/rmsprop.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import multi_tensor, rmsprop

    return rmsprop, multi_tensor


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, centered=False, momentum=False):
    """Bytes an RMSprop step must move: read param, grad, square_avg and write param, square_avg
    (5 accesses), plus a read and a write of grad_avg (centered) and of the momentum buffer."""
    return numel * element_size * (5 + 2 * centered + 2 * momentum)


# ----------------------------------------------------------------------------- operator, functional, reference path
@torch.library.custom_op("fastcnn::rmsprop_step_",
                         mutates_args=("params", "square_avgs", "grad_avgs", "momentum_buffers", "steps"))
def _rmsprop_step_op(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor], grad_avgs: list[Tensor],
                     momentum_buffers: list[Tensor], steps: list[Tensor], grad_scale: Optional[Tensor],
                     found_inf: Optional[Tensor], *, lr: float, alpha: float, eps: float, weight_decay: float,
                     momentum: float, centered: bool, maximize: bool) -> None:
    """One RMSprop step, in place, over tensors that share a device and dtypes, walkable as flat
    arrays (see fastcnn.optim); ``grad_avgs`` is empty unless ``centered``, ``momentum_buffers``
    unless ``momentum > 0``."""
    if not params:
        return
    rmsprop_kernels, multi_tensor = _kernels()
    tensor_lists = (params, grads, square_avgs, grad_avgs if centered else square_avgs,
                    momentum_buffers if momentum > 0 else square_avgs, steps)
    table = multi_tensor.cached_table(tensor_lists, params[0].device)
    with torch.profiler.record_function("fastcnn::rmsprop_step"):
        _backend.record_launch("rmsprop_step", rmsprop_kernels.rmsprop_step(
            table, element_type=triton_dtype(params[0].dtype), state_type=triton_dtype(square_avgs[0].dtype),
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
            maximize=maximize, grad_scale=grad_scale, found_inf=found_inf))


@_rmsprop_step_op.register_fake
def _(params, grads, square_avgs, grad_avgs, momentum_buffers, steps, grad_scale, found_inf, **hyperparameters):
    return None


@launches_of(_rmsprop_step_op, "optimizer")
def _rmsprop_step_launches(_, params, grads, square_avgs, grad_avgs, momentum_buffers, steps, grad_scale, found_inf,
                           **hyperparameters):
    if not params:
        return []
    states = [square_avgs, grad_avgs, momentum_buffers]
    return step_launches("_rmsprop_step_kernel", [params, grads, *states, grad_scale], [params, *states], steps)


def rmsprop_step(op, params, grads, square_avgs, grad_avgs, momentum_buffers, steps, *, grad_scale=None,
                 found_inf=None, **hyperparameters):
    """One RMSprop step, in place, over tensors on one device that share dtypes and can be walked
    as flat arrays (fastcnn.optim prepares them): the fused kernels, or the PyTorch reference path
    (announced once with a FallbackWarning naming ``op``) where no kernel can run.
    ``hyperparameters`` are lr, alpha, eps, weight_decay, momentum, centered, maximize."""
    run_step(op, params, _rmsprop_step_op, reference_rmsprop_step, params, grads, square_avgs, grad_avgs,
             momentum_buffers, steps, grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


def reference_rmsprop_step(params, grads, square_avgs, grad_avgs, momentum_buffers, steps, *, lr, alpha, eps,
                           weight_decay, momentum, centered, maximize, grad_scale=None, found_inf=None):
    """The PyTorch path of ``rmsprop_step``, where no Triton kernel can run: the kernel's math
    (see kernels/rmsprop.py) in fp32 torch ops, so a model gives the same results either way."""
    keep = None if found_inf is None else (found_inf == 0)
    for index, param in enumerate(params):
        count_step(steps[index], keep)
        grad = step_input(param, grads[index], grad_scale=grad_scale, maximize=maximize, weight_decay=weight_decay)
        square_avg = alpha * square_avgs[index].float() + (1.0 - alpha) * grad * grad
        write(square_avgs[index], square_avg, keep)
        if centered:
            grad_avg = grad_avgs[index].float()
            grad_avg = grad_avg + (1.0 - alpha) * (grad - grad_avg)
            write(grad_avgs[index], grad_avg, keep)
            denom = (square_avg - grad_avg * grad_avg).sqrt() + eps
        else:
            denom = square_avg.sqrt() + eps
        if momentum > 0:
            buffer = momentum * momentum_buffers[index].float() + grad / denom
            write(momentum_buffers[index], buffer, keep)
            write(param, param.float() - lr * buffer, keep)
        else:
            write(param, param.float() - lr * (grad / denom), keep)
