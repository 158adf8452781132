"""dtype tables: which dtypes the kernels take, their Triton names, and test tolerances.

Tolerances are on the relative error ||out - ref|| / ||ref|| against a float64 reference. They
start from the unit roundoff of the storage dtype (fp32 2**-24, fp16 2**-11, bf16 2**-8) with a
small safety factor; ops that reduce over ``n`` terms widen them by sqrt(n), the growth of a
random-walk rounding error.
"""
import math

import torch

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The dtypes torch's own CPU/CUDA kernels compute in, per kind of op; torch raises
# NotImplementedError ('"batch_norm" not implemented for 'Long'') for the others, and so do we.
TORCH_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TORCH_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

RELATIVE_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}

# Unit roundoff of each storage dtype: the relative error of storing one value.
UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
}

_TRITON_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}


def tolerance(dtype, reduction_length=1):
    """Relative-error tolerance for results stored in ``dtype`` after reducing ``reduction_length`` terms."""
    return RELATIVE_TOLERANCE[dtype] * max(1.0, math.sqrt(reduction_length))


def triton_dtype(dtype):
    """The ``triton.language`` dtype for a torch dtype (imports triton)."""
    import triton.language as tl

    return getattr(tl, _TRITON_NAMES[dtype])


def aten_type_name(dtype):
    """ATen's name of ``dtype`` ('Long', 'Half', 'ComplexFloat', ...), as torch's messages spell it."""
    try:
        return torch.empty(0, dtype=dtype).type().removeprefix("torch.").removesuffix("Tensor")
    except (RuntimeError, TypeError):
        return str(dtype).removeprefix("torch.")


def real_dtype(dtype):
    """The dtype a kernel sees for ``dtype``: complex tensors are updated as (re, im) pairs."""
    return {torch.complex64: torch.float32, torch.complex32: torch.float16}.get(dtype, dtype)


# Relative tolerance of an fp32 result whose products were rounded to TF32 (10-bit mantissa).
TF32_RELATIVE_TOLERANCE = 2e-3


def autocast_runs_in_float32(input, device_types):
    """True when ``torch.autocast`` is on for ``input``'s device (one of ``device_types``, where
    torch's autocast lists the op among its fp32 ops) and ``input`` is fp16/bf16: the op then runs
    in fp32, as torch's would, and its caller widens the input."""
    device_type = getattr(getattr(input, "device", None), "type", None)
    return (device_type in device_types and torch.is_autocast_enabled(device_type)
            and input.dtype in (torch.float16, torch.bfloat16))
