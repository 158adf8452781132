"""SGD with momentum, dampening, Nesterov and weight decay: one fused multi-tensor step, the op
behind ``fastcnn.optim.SGD`` (fastcnn/optim.py), over ``kernels/sgd.py``: the byte count, the
in-place operator ``torch.ops.fastcnn.sgd_step_`` and the functional ``sgd_step`` that picks it or
the PyTorch reference path. The optimizer's argument checks are torch's
(its constructor) and fastcnn/validation.py's.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of
from ..multi_tensor import counter_launches, step_launches
from ..dtypes import triton_dtype
from ..multi_tensor import run_step, step_input, write

__all__ = []  # its public face is fastcnn.optim.SGD


def _kernels():
    """(kernels/sgd.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import multi_tensor, sgd

    return sgd, multi_tensor


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, momentum=True):
    """Bytes an SGD step must move: read param and grad, write param (3 accesses); with momentum
    also read and write the momentum buffer (5)."""
    return numel * element_size * (5 if momentum else 3)


# ----------------------------------------------------------------------------- operator, functional, reference path
@torch.library.custom_op("fastcnn::sgd_step_", mutates_args=("params", "momentum_buffers", "first_step_flags"))
def _sgd_step_op(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor],
                 first_step_flags: list[Tensor], pending: list[int], grad_scale: Optional[Tensor],
                 found_inf: Optional[Tensor], *, lr: float, momentum: float, dampening: float, weight_decay: float,
                 nesterov: bool, maximize: bool) -> None:
    """One SGD step, in place, over tensors that share a device and dtype, walkable as flat arrays
    (see fastcnn.optim); ``momentum_buffers`` and ``first_step_flags`` (fp32 scalars, 1 where the
    buffer takes this step's gradient) are empty without momentum; the flags at ``pending`` are
    cleared by the step (kept where GradScaler skipped it)."""
    if not params:
        return
    sgd_kernels, multi_tensor = _kernels()
    device = params[0].device
    has_momentum = momentum != 0
    tensor_lists = (params, grads, momentum_buffers if has_momentum else params,
                    first_step_flags if has_momentum else params)
    table = multi_tensor.cached_table(tensor_lists, device)
    pending_table = None
    if pending:
        pending_table = multi_tensor.cached_table(([first_step_flags[index] for index in pending],), device)
    with torch.profiler.record_function("fastcnn::sgd_step"):
        _backend.record_launch("sgd_step", sgd_kernels.sgd_step(
            table, pending_table, element_type=triton_dtype(params[0].dtype), lr=lr, momentum=momentum,
            dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
            grad_scale=grad_scale, found_inf=found_inf))


@_sgd_step_op.register_fake
def _(params, grads, momentum_buffers, first_step_flags, pending, grad_scale, found_inf, **hyperparameters):
    return None


@launches_of(_sgd_step_op, "optimizer")
def _sgd_step_launches(_, params, grads, momentum_buffers, first_step_flags, pending, grad_scale, found_inf,
                       **hyperparameters):
    if not params:
        return []
    state = [momentum_buffers, first_step_flags]
    launches = step_launches("_sgd_step_kernel", [params, grads, *state, grad_scale], [params, *state])
    if pending:  # the first-step flags the step cleared
        launches += counter_launches([first_step_flags[index] for index in pending])
    return launches


def sgd_step(op, params, grads, momentum_buffers, first_step_flags, pending_flags, *, grad_scale=None,
             found_inf=None, **hyperparameters):
    """One SGD step, in place, over tensors on one device that share a dtype and can be walked as
    flat arrays (fastcnn.optim prepares them): the fused kernel, or the PyTorch reference path
    (announced once with a FallbackWarning naming ``op``) where no kernel can run.
    ``pending_flags`` are those of ``first_step_flags`` the step must clear; ``hyperparameters``
    are lr, momentum, dampening, weight_decay, nesterov, maximize."""
    pending_ids = {id(flag) for flag in pending_flags}
    pending = [index for index, flag in enumerate(first_step_flags) if id(flag) in pending_ids]
    run_step(op, params, _sgd_step_op, reference_sgd_step, params, grads, momentum_buffers, first_step_flags,
             pending, grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


def reference_sgd_step(params, grads, momentum_buffers, first_step_flags, pending, *, lr, momentum, dampening,
                       weight_decay, nesterov, maximize, grad_scale=None, found_inf=None):
    """The PyTorch path of ``sgd_step``, where no Triton kernel can run: the kernel's math (see
    kernels/sgd.py) in fp32 torch ops, so a model gives the same results with or without Triton."""
    keep = None if found_inf is None else (found_inf == 0)
    for index, param in enumerate(params):
        grad = step_input(param, grads[index], grad_scale=grad_scale, maximize=maximize, weight_decay=weight_decay)
        if momentum != 0:
            buffer = momentum_buffers[index]
            new_buffer = torch.where(first_step_flags[index] != 0, grad,
                                     momentum * buffer.float() + (1.0 - dampening) * grad)
            write(buffer, new_buffer, keep)
            grad = grad + momentum * new_buffer if nesterov else new_buffer
        write(param, param.float() - lr * grad, keep)
    for index in pending:
        flag = first_step_flags[index]
        flag.mul_(0.0 if keep is None else (~keep).to(flag.dtype))
