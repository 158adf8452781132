"""Where Triton's interpreter (TRITON_INTERPRET=1) computes differently from a GPU, and the
correction fastcnn installs so that the CPU tests check what a GPU will do.

bfloat16 conversions. On a GPU, a float32 value stored to or cast to bfloat16 rounds to nearest,
ties to even (``cvt.rn.bf16.f32``), as torch's ``.to(torch.bfloat16)`` does. Triton's
interpreter (3.6 to 3.9) truncates instead: its ``cast_impl`` converts float32 to bfloat16 with
no rounding mode, which drops the low 16 bits, so every bf16 result lands up to one unit in the
last place towards zero. A kernel that keeps state in bf16 (an optimizer's moments) then drifts
towards zero step after step, which no GPU does, and a test that bounds the GPU's rounding fails
at random seeds. Other casts touching bfloat16 are worse (float64 or integers to bfloat16 go
through NumPy's ``astype`` on the uint16 storage). ``install`` routes every cast to or from
bfloat16 through torch's conversion, which is the GPU's: exact widening, round-to-nearest-even
narrowing (the explicit ``fp_downcast_rounding="rtz"`` keeps Triton's own truncation).

The other known difference, ``tl.dot`` on bf16 blocks, is handled where it arises
(``conv2d_gemm``'s ``UPCAST``).
"""
import numpy as np
import torch
import triton.language as tl

# The Triton types whose interpreter storage NumPy holds as the matching torch dtype; bf16 is
# stored as uint16 and reinterpreted.
_TORCH_DTYPES = {
    tl.float16: torch.float16, tl.float32: torch.float32, tl.float64: torch.float64,
    tl.bfloat16: torch.bfloat16, tl.int1: torch.bool, tl.int8: torch.int8, tl.uint8: torch.uint8,
    tl.int16: torch.int16, tl.int32: torch.int32, tl.int64: torch.int64,
}


def _as_torch(data, triton_type):
    data = np.require(data, requirements="C")  # keeps 0-d arrays 0-d, unlike ascontiguousarray
    if triton_type == tl.bfloat16:
        return torch.from_numpy(data.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(data)


def _as_numpy(tensor, triton_type):
    if triton_type == tl.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def converts_through_torch(source_type, target_type):
    """Whether a cast from ``source_type`` to ``target_type`` (scalar Triton types) is one the
    correction takes over: exactly one side is bfloat16 and both sides have a torch dtype."""
    return ((source_type == tl.bfloat16) != (target_type == tl.bfloat16)
            and source_type in _TORCH_DTYPES and target_type in _TORCH_DTYPES)


def convert(data, source_type, target_type):
    """``data`` (the interpreter's NumPy storage of ``source_type``) converted to
    ``target_type``'s storage by torch's conversion."""
    return _as_numpy(_as_torch(data, source_type).to(_TORCH_DTYPES[target_type]), target_type)


def install():
    """Make the interpreter's casts to and from bfloat16 round as a GPU does. Idempotent."""
    from triton.runtime import interpreter
    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_fastcnn_bfloat16_rounding", False):
        return
    triton_cast, triton_fp_to_fp = builder.cast_impl, builder.create_fp_to_fp
    round_toward_zero = interpreter._ir.ROUNDING_MODE.RTZ

    def cast_impl(self, src, dst_type):
        if converts_through_torch(src.dtype.scalar, dst_type.scalar):
            return interpreter.TensorHandle(convert(src.data, src.dtype.scalar, dst_type.scalar), dst_type.scalar)
        return triton_cast(self, src, dst_type)

    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        if rounding_mode != round_toward_zero and converts_through_torch(src.dtype.scalar, dst_type.scalar):
            return cast_impl(self, src, dst_type)
        return triton_fp_to_fp(self, src, dst_type, rounding_mode)

    builder.cast_impl, builder.create_fp_to_fp = cast_impl, create_fp_to_fp
    builder._fastcnn_bfloat16_rounding = True
