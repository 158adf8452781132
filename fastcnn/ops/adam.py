"""Adam / AdamW: one fused multi-tensor step, the op behind ``fastcnn.optim.Adam`` and
``fastcnn.optim.AdamW`` (fastcnn/optim.py holds those torch.optim subclasses, as nn.py holds the
modules), over ``kernels/adam.py``: the byte count, the in-place PyTorch operator
``torch.ops.fastcnn.adam_step_`` and the functional ``adam_step`` that picks it or the PyTorch
reference path. The optimizers' argument checks are shared with the
rest of the optimizer family in fastcnn/validation.py.
"""
from typing import Optional

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of
from ..multi_tensor import step_launches
from ..dtypes import triton_dtype
from ..multi_tensor import count_step, run_step, step_input, write


__all__ = []  # its public face is fastcnn.optim.Adam / AdamW

def _kernels():
    """(kernels/adam.py, kernels/multi_tensor.py), imported on the first launch (see
    ops/conv2d.py's ``_kernels``)."""
    from ..kernels import adam, multi_tensor

    return adam, multi_tensor


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, amsgrad=False):
    """Bytes an Adam step must move: read param, grad, exp_avg, exp_avg_sq and write param,
    exp_avg, exp_avg_sq (7 accesses; 9 with amsgrad's max_exp_avg_sq read and write)."""
    return numel * element_size * (9 if amsgrad else 7)


# ----------------------------------------------------------------------------- operator, functional, reference path

@torch.library.custom_op("fastcnn::adam_step_",
                         mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "steps"))
def _adam_step_op(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                  max_exp_avg_sqs: list[Tensor], steps: list[Tensor], grad_scale: Optional[Tensor],
                  found_inf: Optional[Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float, decoupled_weight_decay: bool, amsgrad: bool, maximize: bool) -> None:
    """One Adam/AdamW step, in place, over tensors that share a device and dtypes, walkable as
    flat arrays (see Adam._buckets); ``max_exp_avg_sqs`` is empty unless ``amsgrad``."""
    if not params:
        return
    adam_kernels, multi_tensor = _kernels()
    tensor_lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else exp_avg_sqs, steps)
    table = multi_tensor.cached_table(tensor_lists, params[0].device)
    with torch.profiler.record_function("fastcnn::adam_step"):
        _backend.record_launch("adam_step", adam_kernels.adam_step(
            table, element_type=triton_dtype(params[0].dtype), state_type=triton_dtype(exp_avgs[0].dtype), lr=lr,
            beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
            grad_scale=grad_scale, found_inf=found_inf))


@_adam_step_op.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, grad_scale, found_inf, **hyperparameters):
    return None


@launches_of(_adam_step_op, "optimizer")
def _adam_step_launches(_, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, grad_scale, found_inf,
                        **hyperparameters):
    if not params:
        return []
    states = [exp_avgs, exp_avg_sqs, max_exp_avg_sqs]
    return step_launches("_adam_step_kernel", [params, grads, *states, grad_scale], [params, *states], steps)


def adam_step(op, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, grad_scale=None, found_inf=None,
              **hyperparameters):
    """One Adam/AdamW step, in place, over tensors on one device that share dtypes and can be walked
    as flat arrays (fastcnn.optim prepares them): the fused kernels, or the PyTorch reference
    path (announced once with a FallbackWarning naming ``op``) where no kernel can run.
    ``max_exp_avg_sqs`` is read only with ``amsgrad``; ``hyperparameters`` are lr, beta1, beta2,
    eps, weight_decay, decoupled_weight_decay, amsgrad, maximize."""
    run_step(op, params, _adam_step_op, reference_adam_step, params, grads, exp_avgs, exp_avg_sqs,
             max_exp_avg_sqs if hyperparameters["amsgrad"] else [], steps, grad_scale=grad_scale,
             found_inf=found_inf, **hyperparameters)


def reference_adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
                        weight_decay, decoupled_weight_decay, amsgrad, maximize, grad_scale=None, found_inf=None):
    """The PyTorch path of ``adam_step``, where no Triton kernel can run: in-place Adam/AdamW over
    lists of tensors, following the kernel's math step for step (fp32 arithmetic, the same
    formulas; see kernels/adam.py), so a model gives the same results with or without Triton."""
    keep = None if found_inf is None else (found_inf == 0)
    for index, param in enumerate(params):
        step = steps[index]
        count_step(step, keep)
        if param.numel() == 0:
            continue
        step_value = step.to(torch.float64)
        bias_correction1 = 1.0 - torch.pow(torch.tensor(beta1, dtype=torch.float64, device=step.device), step_value)
        bias_correction2 = 1.0 - torch.pow(torch.tensor(beta2, dtype=torch.float64, device=step.device), step_value)
        step_size = (lr / bias_correction1).float()
        inv_bias_correction2_sqrt = bias_correction2.rsqrt().float()

        p = param.float()
        grad = step_input(param, grads[index], grad_scale=grad_scale, maximize=maximize,
                          weight_decay=0.0 if decoupled_weight_decay else weight_decay)
        if decoupled_weight_decay and weight_decay != 0:
            p = p * (1.0 - lr * weight_decay)
        exp_avg = exp_avgs[index].float()
        exp_avg_sq = exp_avg_sqs[index].float()
        exp_avg = exp_avg + (1.0 - beta1) * (grad - exp_avg)
        exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * grad * grad
        second_moment = exp_avg_sq
        if amsgrad:
            second_moment = torch.maximum(max_exp_avg_sqs[index].float(), exp_avg_sq)
            write(max_exp_avg_sqs[index], second_moment, keep)
        denom = second_moment.sqrt() * inv_bias_correction2_sqrt + eps
        p = p - step_size * (exp_avg / denom)
        write(param, p, keep)
        write(exp_avgs[index], exp_avg, keep)
        write(exp_avg_sqs[index], exp_avg_sq, keep)
