"""bfloat16 results round to nearest, ties to even, as torch's and a GPU's conversions do.

Triton's interpreter truncates float32 to bfloat16 unless fastcnn's correction
(``fastcnn.kernels.interpreter``) is installed; on a GPU the same tests check the compiled
conversion. Each comparison is bit for bit, over random bit patterns and the awkward values
(NaN, infinities, signed zeros, exact ties, subnormals, the largest finite values)."""
import pytest
import torch
import triton
import triton.language as tl

import fastcnn
import fastcnn.kernels  # noqa: F401  (as fastcnn's first launch does: installs the correction when interpreted)
from fastcnn.testing import DEVICE, count_launches, make_tensor

pytestmark = pytest.mark.every_triton  # also run under the second Triton (scripts/triton_version_check.sh)


@triton.jit
def _casts_kernel(source_ptr, stored_ptr, converted_ptr, widened_ptr, count, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < count
    value = tl.load(source_ptr + offsets, mask=mask)
    tl.store(stored_ptr + offsets, value, mask=mask)  # the store's implicit cast
    tl.store(converted_ptr + offsets, value.to(tl.bfloat16), mask=mask)
    # widening back from the bf16 just stored
    tl.store(widened_ptr + offsets, tl.load(stored_ptr + offsets, mask=mask).to(widened_ptr.dtype.element_ty),
             mask=mask)


def _awkward_float32(generator, count=4099):
    """Random float32 bit patterns (every exponent, NaNs with any payload, subnormals), then the
    values where rounding decides: ties to even either way, just above and below a tie, the
    largest finite float32 (rounds to infinity) and the largest value that rounds down."""
    bits = torch.randint(-2**31, 2**31, (count,), generator=generator, dtype=torch.int64).to(torch.int32)
    special = torch.tensor([0x7FC00000, 0x7F800001, 0xFF800000 - 2**32, 0x7F800000, 0, -2**31,
                            0x3F808000,  # 1 + 2^-8: a tie, rounds down to the even 1.0
                            0x3F818000,  # 1 + 3·2^-8: a tie, rounds up to the even 1 + 2^-6
                            0x3F808001, 0x3F807FFF, 0x00008000, 0x00018000, 0x807F8000 - 2**32,
                            0x7F7FFFFF, 0x7F7F7FFF,
                            0x477FE000,  # 65504, fp16's largest: rounds to bf16's 65536, inf back in fp16
                            ], dtype=torch.int64).to(torch.int32)
    return torch.cat([special, bits]).view(torch.float32)


_SAME_WIDTH_INTEGER = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _differing_bits(actual, expected):
    """Where two float tensors of one dtype differ bit for bit, except that any NaN matches any
    NaN (payloads differ between implementations of the conversion)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    as_integer = _SAME_WIDTH_INTEGER[actual.element_size()]
    return ~((actual.view(as_integer) == expected.view(as_integer)) | (actual.isnan() & expected.isnan()))


@pytest.mark.parametrize("source_dtype", [torch.float32, torch.float64, torch.float16])
def test_casts_to_bfloat16_round_to_nearest_even(source_dtype, generator, seed):
    source = _awkward_float32(generator).to(DEVICE)
    if source_dtype != torch.float32:  # float64 keeps every float32 value; float16 rounds them first
        source = source.to(source_dtype)
    stored, converted = (torch.full(source.shape, 7.0, dtype=torch.bfloat16, device=DEVICE) for _ in range(2))
    widened = torch.full(source.shape, 7.0, dtype=source_dtype, device=DEVICE)
    block = 1024
    _casts_kernel[(triton.cdiv(source.numel(), block),)](source, stored, converted, widened, source.numel(),
                                                         BLOCK=block)
    expected = source.to(torch.bfloat16)
    # Widening is checked against torch's widening: exact to float32/float64, and to float16 inf
    # where bf16's rounding went past 65504.
    for name, converted_from, actual, wanted in (("stored", source, stored, expected),
                                                 ("converted", source, converted, expected),
                                                 ("widened", expected, widened, expected.to(source_dtype))):
        wrong = _differing_bits(actual, wanted)
        assert not wrong.any(), (f"{name}: {int(wrong.sum())} of {source.numel()} conversions from "
                                 f"{converted_from.dtype} to {actual.dtype} differ from torch's, e.g. "
                                 f"{converted_from[wrong][:3].tolist()} -> {actual[wrong][:3].tolist()}, "
                                 f"not {wanted[wrong][:3].tolist()} (seed {seed})")


def test_a_bfloat16_kernel_result_is_torchs_rounding(generator, seed):
    """A fastcnn op's bf16 output (fastcnn.add sums in float32) is torch's bf16 add bit for bit:
    truncation would leave about half of the elements one unit towards zero."""
    x, r = (make_tensor((5, 7, 9, 11), torch.bfloat16, generator=generator) for _ in range(2))
    with count_launches() as launched:
        out = fastcnn.add(x, r)
    assert launched.get("add") == 1, dict(launched)
    expected = (x.float() + r.float()).to(torch.bfloat16)
    wrong = _differing_bits(out, expected)
    assert not wrong.any(), f"{int(wrong.sum())} of {out.numel()} elements differ from torch's rounding (seed {seed})"
