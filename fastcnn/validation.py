"""Argument checks shared by several ops, run before any launch: int pairs, same dtype and device,
the dtypes torch and the kernels compute in, and the optimizers' checks. Each op's own checks (its
shapes, its arguments, torch's order of checking them) live in its module under ``fastcnn/ops``.

Each check raises the exception type PyTorch raises for the same mistake, with a message naming
the offending argument, so that code written against torch gets the contract it expects.
"""
import torch

from .dtypes import KERNEL_DTYPES, aten_type_name, real_dtype


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


def int_pair(op, name, value):
    """``value`` as a pair of ints, accepting torch's spellings: an int or a sequence of 1 or 2."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(value) == 1:
            return (value[0], value[0])
        if len(value) == 2:
            return tuple(value)
        raise RuntimeError(f"{op}: expected {name} to be a single integer value or a list of 2 values to match "
                           f"the convolution dimensions, but got {name}={list(value)}")
    raise TypeError(f"{op}: argument '{name}' must be an int or a tuple of 2 ints, not {type(value).__name__}")


def check_same_kind(op, input, others):
    """Every tensor in ``others`` (name -> tensor or None) has ``input``'s dtype and device, as
    torch's convolution requires."""
    for name, tensor in others.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
        if tensor.dtype != input.dtype:
            raise RuntimeError(f"{op}: Input type ({input.dtype}) and {name} type ({tensor.dtype}) should be the same")
        if tensor.device != input.device:
            raise RuntimeError(f"{op}: Input ({input.device}) and {name} ({tensor.device}) should be on the same device")


def check_torch_implements(op, aten_name, dtype, torch_dtypes):
    """Raise torch's NotImplementedError, in its words, for a dtype torch's own op rejects."""
    if dtype not in torch_dtypes:
        raise NotImplementedError(f"{op}: \"{aten_name}\" not implemented for '{aten_type_name(dtype)}'")


def check_kernel_dtype(op, input):
    """The kernels take fp32, fp16 and bf16. Checked after torch's own argument checks (so that a
    float64 call with a wrong shape gets torch's error for the shape) and only for dtypes torch
    computes in: the one deliberate difference from torch, a TypeError, is for those (float64,
    and integer or complex convolutions)."""
    if input.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{op}: input of dtype {input.dtype} is not supported by fastcnn's kernels (torch "
                        f"computes it; fastcnn takes {', '.join(str(d) for d in KERNEL_DTYPES)})")


INT32_LIMIT = 2**31


def check_index_range(op, **extents):
    """Extents (rows, channels, pixels) a kernel indexes in int32 while its offsets are int64: each
    must be below 2**31. A ValueError naming the first that is not."""
    for name, extent in extents.items():
        if extent >= INT32_LIMIT:
            raise ValueError(f"{op}: the input has {extent} {name.replace('_', ' ')}; fastcnn's kernels index them in "
                             f"int32 and take fewer than 2**31")


def check_parameter_dtypes(op, input, tensors):
    """Each of ``tensors`` ({name: tensor or None}: a norm's weight, bias, running statistics) on
    the input's device and of its dtype, or fp32 beside fp16/bf16 input (torch's mixed-precision
    rule for norm parameters)."""
    import torch

    reduced_precision = input.dtype in (torch.float16, torch.bfloat16)
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if tensor.device != input.device:
            raise RuntimeError(f"{op}: Input ({input.device}) and {name} ({tensor.device}) should be on the same device")
        if tensor.dtype != input.dtype and not (reduced_precision and tensor.dtype == torch.float32):
            expected = f"{input.dtype} or torch.float32" if reduced_precision else str(input.dtype)
            raise RuntimeError(f"{op}: mixed dtype: expected {name} to have dtype {expected}, but got {tensor.dtype}")


def autocast_dtype(device_type, input):
    """The dtype ``torch.autocast`` would run one of its lower-precision ops (conv2d, linear) in
    for ``input`` on ``device_type``, or None when autocast does not apply (disabled, a
    non-floating or float64 input, a device type it does not cover)."""
    import torch

    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None
    if not input.is_floating_point() or input.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(device_type)
