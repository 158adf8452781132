"""Argument checks for every fastcnn op, run before any launch.

Each check raises the exception type PyTorch raises for the same mistake, with a message naming
the offending argument, so that code written against torch gets the contract it expects.
"""
import torch

from .dtypes import KERNEL_DTYPES, real_dtype


def check_optimizer_flags(name, *, differentiable):
    if differentiable:
        raise ValueError(
            f"fastcnn.optim.{name}: differentiable=True is not supported (the fused kernel updates "
            f"tensors in place outside autograd); use torch.optim.{name} for it"
        )


def check_gradient(name, param):
    grad = param.grad
    if grad.is_sparse:
        raise RuntimeError(f"{name} does not support sparse gradients, please consider SparseAdam instead")
    if grad.shape != param.shape:
        raise RuntimeError(f"{name}: grad of shape {tuple(grad.shape)} for a param of shape {tuple(param.shape)}")
    if grad.dtype != param.dtype or grad.device != param.device:
        raise RuntimeError(
            f"{name}: grad is {grad.dtype} on {grad.device} but its param is {param.dtype} on {param.device}"
        )
    if real_dtype(param.dtype) not in KERNEL_DTYPES:
        raise TypeError(
            f"{name}: params of dtype {param.dtype} are not supported; "
            f"supported: {', '.join(str(d) for d in KERNEL_DTYPES)} and complex64"
        )


def scalar_hyperparameter(name, value):
    """A Python float for ``value`` (float or one-element tensor), without a device sync."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        if value.device.type != "cpu":
            raise ValueError(
                f"{name} as a {value.device.type} Tensor is not supported: reading it would "
                f"synchronise with the device every step; pass a float or a CPU tensor"
            )
        return float(value)
    return float(value)
