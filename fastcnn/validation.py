"""Argument checks for every fastcnn op, run before any launch.

Each check raises the exception type PyTorch raises for the same mistake, with a message naming
the offending argument, so that code written against torch gets the contract it expects.
"""
from typing import NamedTuple

import torch

from .dtypes import KERNEL_DTYPES, TORCH_FLOAT_DTYPES, TORCH_INTEGER_DTYPES, aten_type_name, real_dtype

# What torch's own kernels compute in, per op (torch raises NotImplementedError for the rest).
CONV_TORCH_DTYPES = TORCH_FLOAT_DTYPES + TORCH_INTEGER_DTYPES + (torch.complex64, torch.complex128)
POOL_TORCH_DTYPES = TORCH_FLOAT_DTYPES + TORCH_INTEGER_DTYPES


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


def _int_pair(op, name, value):
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


class Conv2dGeometry(NamedTuple):
    """Normalised conv2d arguments. ``padding`` is the (top, left) padding; ``total_padding`` what
    is added to the height and width in all (one more than twice ``padding`` for padding='same'
    with an even dilated kernel, as torch pads the odd element at the bottom/right)."""
    stride: tuple
    padding: tuple
    total_padding: tuple
    dilation: tuple
    groups: int
    out_size: tuple


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


def conv2d_output_size(size, kernel, total_padding, dilation, stride):
    """The (height, width) of a convolution's output: floor((size + padding - dilated kernel) / stride) + 1."""
    return tuple((n + t - d * (k - 1) - 1) // s + 1 for n, k, t, d, s in zip(size, kernel, total_padding, dilation, stride))


def check_conv2d(input, weight, bias, stride, padding, dilation, groups):
    """Validate F.conv2d's arguments the way torch does and return their ``Conv2dGeometry``."""
    op = "fastcnn.conv2d"
    for name, tensor in (("input", input), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
    stride = _int_pair(op, "stride", stride)
    dilation = _int_pair(op, "dilation", dilation)
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"{op}: argument 'groups' must be an int, not {type(groups).__name__}")
    check_same_kind(op, input, {"weight": weight, "bias": bias})
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
                           f"{list(input.shape)}")
    if weight.dim() != 4:
        raise RuntimeError(f"{op}: Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight "
                           f"{list(weight.shape)}, but got {input.dim()}-dimensional input of size "
                           f"{list(input.shape)} instead: conv2d needs a 4-dimensional weight")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{op}: non-positive stride is not supported (stride={list(stride)})")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{op}: dilation should be greater than zero, but got {list(dilation)}")
    if groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported (groups={groups})")
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            padding, total = (0, 0), (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise RuntimeError(f"{op}: padding='same' is not supported for strided convolutions "
                                   f"(stride={list(stride)})")
            # torch pads d*(k-1) in total, the odd element (if any) at the bottom/right.
            total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
            padding = tuple(t // 2 for t in total)
        else:
            raise RuntimeError(f"{op}: Invalid padding string: {padding!r} (expected 'valid' or 'same')")
    else:
        padding = _int_pair(op, "padding", padding)
        if any(p < 0 for p in padding):
            raise RuntimeError(f"{op}: negative padding is not supported (padding={list(padding)})")
        total = tuple(2 * p for p in padding)

    batched_shape = list(input.shape) if input.dim() == 4 else [1] + list(input.shape)
    if weight.shape[0] < groups:
        raise RuntimeError(f"{op}: Given groups={groups}, expected weight to be at least {groups} at dimension 0, "
                           f"but got weight of size {list(weight.shape)} instead")
    if weight.shape[0] % groups:
        raise RuntimeError(f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {list(weight.shape)} instead")
    if batched_shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"{op}: Given groups={groups}, weight of size {list(weight.shape)}, expected "
                           f"input{batched_shape} to have {weight.shape[1] * groups} channels, but got "
                           f"{batched_shape[1]} channels instead")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(f"{op}: Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional "
                           f"with {weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead")
    padded = tuple(size + t for size, t in zip(batched_shape[2:], total))
    dilated_kernel = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if any(p < k for p, k in zip(padded, dilated_kernel)):
        raise RuntimeError(f"{op}: Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel size: "
                           f"({dilated_kernel[0]} x {dilated_kernel[1]}). Kernel size can't be greater than actual "
                           f"input size")
    out_size = conv2d_output_size(batched_shape[2:], kernel, total, dilation, stride)
    check_torch_implements(op, "conv2d", input.dtype, CONV_TORCH_DTYPES)
    check_kernel_dtype(op, input)
    return Conv2dGeometry(stride, padding, total, dilation, groups, out_size)


REDUCTIONS = ("none", "mean", "sum")


def check_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    """Validate F.cross_entropy's arguments as torch does, in torch's order; True when ``target``
    holds class probabilities (same shape as ``input``), False for class indices."""
    op = "fastcnn.cross_entropy"
    for name, tensor in (("input", input), ("target", target)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
    if weight is not None and not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: argument 'weight' must be a Tensor, not {type(weight).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction (expected one of {REDUCTIONS})")
    if not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool):
        raise TypeError(f"{op}: argument 'label_smoothing' must be a float, not {type(label_smoothing).__name__}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: argument 'ignore_index' must be an int, not {type(ignore_index).__name__}")
    if input.dim() == 0:
        raise RuntimeError(f"{op}: input tensor should be 1D or more (the classes), got a 0-d tensor")
    for name, tensor in (("target", target), ("weight", weight)):
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: Input ({input.device}) and {name} ({tensor.device}) should be on the same device")
    classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    probabilities = target.shape == input.shape
    if probabilities:
        if not target.is_floating_point():
            raise RuntimeError(f"{op}: Expected floating point type for target with class probabilities, "
                               f"got {aten_type_name(target.dtype)}")
        if ignore_index >= 0:
            raise RuntimeError(f"{op}: ignore_index is not supported for floating point target")
    # torch's log_softmax runs next, and refuses non-floating logits.
    check_torch_implements(op, "log_softmax", input.dtype, TORCH_FLOAT_DTYPES)
    if not probabilities:
        expected = (input.shape[0],) + tuple(input.shape[2:]) if input.dim() > 1 else ()
        if input.dim() <= 2 and target.dim() > 1:
            raise RuntimeError(f"{op}: 0D or 1D target tensor expected, multi-target not supported "
                               f"(input {list(input.shape)}, target {list(target.shape)})")
        if input.dim() > 1 and target.dim() >= 1 and target.shape[0] != input.shape[0]:
            raise ValueError(f"{op}: Expected input batch_size ({input.shape[0]}) to match target batch_size "
                             f"({target.shape[0]}).")
        if tuple(target.shape) != expected:
            raise RuntimeError(f"{op}: Expected target size {list(expected)}, got {list(target.shape)}")
        if target.dtype not in (torch.int64, torch.uint8):
            raise RuntimeError(f"{op}: expected target dtype to be Long or Byte, but got {aten_type_name(target.dtype)}")
    if weight is not None:
        if weight.dim() != 1 or weight.shape[0] != classes:
            raise RuntimeError(f"{op}: weight tensor should be defined either for all {classes} classes or no "
                               f"classes but got weight tensor of shape: {list(weight.shape)}")
        # Class probabilities promote with the weight as with the target (the loss takes the
        # widest dtype); class indices need the logits' dtype.
        if not weight.is_floating_point() or (not probabilities and weight.dtype != input.dtype):
            raise RuntimeError(f"{op}: expected scalar type {aten_type_name(input.dtype)} but found "
                               f"{aten_type_name(weight.dtype)} (the weight's dtype)")
    check_kernel_dtype(op, input)
    return probabilities


def cross_entropy_loss_dtype(input, target, weight, probabilities):
    """The dtype of torch's loss: the logits' for class indices; for class probabilities, the
    promotion of the logits', the target's and the weight's (fp32 logits, fp64 target: fp64)."""
    if not probabilities:
        return input.dtype
    dtype = torch.promote_types(input.dtype, target.dtype)
    return dtype if weight is None else torch.promote_types(dtype, weight.dtype)


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


def _pool_pair(op, name, value, wording):
    """A max_pool2d argument as a pair, with torch's message for a sequence of the wrong length."""
    if isinstance(value, (tuple, list, torch.Size)) and len(value) not in (1, 2):
        raise RuntimeError(f"{op}: max_pool2d: {name} {wording} (got {list(value)})")
    return _int_pair(op, name, value)


def check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate F.max_pool2d's arguments as torch does, in torch's order and words (its
    max_pool2d_with_indices checks, then pooling_output_shape's, then pool2d_shape_check's), and
    return their ``Pool2dGeometry``."""
    op = "fastcnn.max_pool2d"
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    kernel_size = _pool_pair(op, "kernel_size", kernel_size, "must either be a single int, or a tuple of two ints")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel_size
    else:
        stride = _pool_pair(op, "stride", stride, "must either be omitted, a single int, or a tuple of two ints")
    padding = _pool_pair(op, "padding", padding, "must either be a single int, or a tuple of two ints")
    dilation = _pool_pair(op, "dilation", dilation, "must be either a single int, or a tuple of two ints")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: non-empty 3D or 4D (batch mode) tensor expected for input, "
                           f"got {list(input.shape)}")
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
    # Comparisons need no arithmetic: every dtype torch pools runs in the kernels.
    check_torch_implements(op, "max_pool2d", input.dtype, POOL_TORCH_DTYPES)
    return Pool2dGeometry(kernel_size, stride, padding, dilation, bool(ceil_mode), out_size)


def check_batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps):
    """Validate F.batch_norm's arguments as torch does, in its order: the batch size and ``eps``
    (F.batch_norm's own checks), the dtype torch computes in, then the per-channel tensors (C
    elements each, the input's dtype or fp32 for fp16/bf16 input), running statistics required
    in eval."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if input.dim() < 2 and input.numel():
        raise RuntimeError(f"{op}: expected input of shape (N, C, ...) with at least 2 dimensions, "
                           f"got {list(input.shape)}")
    for name, value in (("momentum", momentum), ("eps", eps)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{op}: argument '{name}' must be a float, not {type(value).__name__}")
    channels = input.shape[1] if input.dim() > 1 else 0
    if training and input.numel() // max(channels, 1) == 1:
        raise ValueError(f"{op}: Expected more than 1 value per channel when training, got input size {input.size()}")
    if training and eps <= 0.0:
        raise ValueError(f"{op}: batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"{op}: batch_norm eps must be non-negative, but got {eps}")
    check_torch_implements(op, "batch_norm", input.dtype, TORCH_FLOAT_DTYPES)
    reduced_precision = input.dtype in (torch.float16, torch.bfloat16)
    for name, tensor in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                         ("bias", bias)):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a Tensor, not {type(tensor).__name__}")
        if tensor.numel() != channels:
            raise RuntimeError(f"{op}: {name} should contain {channels} elements not {tensor.numel()}")
        if tensor.device != input.device:
            raise RuntimeError(f"{op}: Input ({input.device}) and {name} ({tensor.device}) should be on the same device")
        if tensor.dtype != input.dtype and not (reduced_precision and tensor.dtype == torch.float32):
            expected = f"{input.dtype} or torch.float32" if reduced_precision else str(input.dtype)
            raise RuntimeError(f"{op}: mixed dtype: expected {name} to have dtype {expected}, but got {tensor.dtype}")
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError(f"{op}: running_mean must be defined in evaluation mode")
    if (running_mean is None) != (running_var is None):
        raise RuntimeError(f"{op}: running_mean and running_var must be given together")
    check_kernel_dtype(op, input)
