"""fastcnn.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils' run in float64.

Every test here runs the Triton kernels (the interpreter on CPU). Gradient sets mix odd sizes, a
channels_last grad, a sliced (strided) grad, an empty one and one longer than a kernel chunk.
"""
import pytest
import torch

import fastcnn
from fastcnn.kernels.multi_tensor import CHUNK_SIZE
from fastcnn.testing import assert_close, count_launches, gpu_only, make_tensor, record_aten_ops

SHAPES_AND_LAYOUTS = [((3, 5, 7, 7), "channels_last"), ((13,), "contiguous"), ((1,), "contiguous"),
                      ((0, 4), "contiguous"), ((33, 17), "sliced"), ((CHUNK_SIZE + 907,), "contiguous")]
NORM_TYPES = [1.0, 2.0, 3.5, float("inf"), float("-inf"), 0.0, -1.5]


def params_with_grads(generator, dtype=torch.float32, scale=1.0, specs=SHAPES_AND_LAYOUTS):
    params = []
    for shape, layout in specs:
        param = torch.zeros(shape, dtype=dtype, requires_grad=True)
        param.grad = make_tensor(shape, dtype, layout=layout, generator=generator) * scale
        params.append(param)
    return params


def float64_copies(params):
    copies = []
    for param in params:
        copy = torch.zeros(param.shape, dtype=torch.float64, requires_grad=True)
        copy.grad = param.grad.to(torch.float64)
        copies.append(copy)
    return copies


def usable(norm_type, specs=SHAPES_AND_LAYOUTS):
    """torch refuses the inf and negative norms of an empty tensor (no identity): leave it out."""
    return [spec for spec in specs if spec[0] != (0, 4)] if norm_type < 0 or norm_type == float("inf") else specs


def check_against_torch(params, norm_type, max_norm, dtype, seed, *, what):
    reference = float64_copies(params)
    expected_total = torch.nn.utils.clip_grad_norm_(reference, max_norm, norm_type)
    with count_launches() as launched:
        total = fastcnn.clip_grad_norm_(params, max_norm, norm_type)
    torch_dtype = torch.nn.utils.clip_grad_norm_([p.detach().clone().requires_grad_() for p in params[:0]] or
                                                 [_like(params[0])], max_norm, norm_type).dtype
    assert total.dtype == torch_dtype and total.shape == () and total.device == params[0].grad.device
    count = sum(p.grad.numel() for p in params)
    assert_close(total, expected_total, dtype, what=f"{what} norm", seed=seed, reduction_length=count)
    for index, (p, r) in enumerate(zip(params, reference)):
        assert_close(p.grad, r.grad, dtype, what=f"{what} grad {index}", seed=seed, reduction_length=count)
    assert launched["grad_norm"] == 2 and launched["scale_grads"] == 1, dict(launched)
    return total


def _like(param):
    copy = torch.zeros(param.shape, dtype=param.dtype, requires_grad=True)
    copy.grad = torch.ones_like(param.grad)
    return copy


@pytest.mark.every_triton
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "within"])
def test_norm_and_clipping_match_torch(norm_type, max_norm, generator, seed):
    params = params_with_grads(generator, specs=usable(norm_type))
    check_against_torch(params, norm_type, max_norm, torch.float32, seed, what=f"p={norm_type}")


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_low_precision_grads(dtype, norm_type, generator, seed):
    params = params_with_grads(generator, dtype, specs=usable(norm_type))
    check_against_torch(params, norm_type, 0.5, dtype, seed, what=str(dtype))


def test_mixed_dtypes_return_the_promoted_dtype(generator, seed):
    """One partial-norm launch per dtype, one merge: the norm in torch's promoted dtype."""
    params = params_with_grads(generator, torch.float16, specs=SHAPES_AND_LAYOUTS[:3])
    params += params_with_grads(generator, torch.float32, specs=SHAPES_AND_LAYOUTS[3:])
    reference = float64_copies(params)
    expected = torch.nn.utils.clip_grad_norm_(reference, 0.5)
    with count_launches() as launched:
        total = fastcnn.clip_grad_norm_(params, 0.5)
    assert total.dtype == torch.float32
    assert launched == {"grad_norm": 3, "scale_grads": 2}
    assert_close(total, expected, torch.float32, what="norm", seed=seed)
    for index, (p, r) in enumerate(zip(params, reference)):
        assert_close(p.grad, r.grad, p.grad.dtype, what=f"grad {index}", seed=seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("scale", [1e30, 1e-30], ids=["huge", "tiny"])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, float("inf")])
def test_huge_and_tiny_gradients_keep_their_norm(scale, norm_type, generator, seed):
    """The scaled sum: the squares of 1e30 overflow fp32 and those of 1e-30 underflow, the norm
    does neither."""
    params = params_with_grads(generator, scale=scale, specs=usable(norm_type))
    total = check_against_torch(params, norm_type, 1.0, torch.float32, seed, what=f"x{scale}")
    assert torch.isfinite(total) and total > 0


def test_zero_gradients_have_norm_zero_and_stay(generator):
    params = params_with_grads(generator, specs=SHAPES_AND_LAYOUTS[:3])
    for p in params:
        p.grad.zero_()
    assert fastcnn.clip_grad_norm_(params, 1.0).item() == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in params)


@pytest.mark.parametrize("bad", ["inf", "nan", "both"])
@pytest.mark.parametrize("norm_type", [2.0, float("inf"), 1.0])
def test_non_finite_gradients_as_torch(bad, norm_type, generator, seed):
    """inf gives an inf norm (the grads scaled by 0: inf * 0 is NaN), NaN a NaN norm, as torch."""
    params = params_with_grads(generator, specs=usable(norm_type, SHAPES_AND_LAYOUTS[:3]))
    if bad in ("inf", "both"):
        params[0].grad[1, 2, 3, 4] = float("-inf")
    if bad in ("nan", "both"):
        params[1].grad[3] = float("nan")
    reference = float64_copies(params)
    expected = torch.nn.utils.clip_grad_norm_(reference, 1.0, norm_type)
    total = fastcnn.clip_grad_norm_(params, 1.0, norm_type)
    assert (torch.isnan(total) and torch.isnan(expected)) or total.item() == expected.item()
    for p, r in zip(params, reference):
        assert torch.equal(torch.isnan(p.grad), torch.isnan(r.grad))
        assert_close(p.grad, r.grad, torch.float32, what="grad", seed=seed)
    with pytest.raises(RuntimeError, match="is non-finite, so it cannot be clipped"):
        fastcnn.clip_grad_norm_(params, 1.0, norm_type, error_if_nonfinite=True)


def test_accepted_parameter_forms(generator, seed):
    """A single tensor, a generator, grads of None, an empty list: as torch."""
    param = torch.zeros(7, requires_grad=True)
    param.grad = make_tensor((7,), generator=generator)
    expected = param.grad.double().norm()
    assert_close(fastcnn.clip_grad_norm_(param, 1e9), expected, torch.float32, what="tensor", seed=seed)
    no_grad = torch.zeros(3, requires_grad=True)
    assert_close(fastcnn.clip_grad_norm_((p for p in [param, no_grad]), 1e9), expected, torch.float32,
                 what="generator", seed=seed)
    for parameters in ([], [no_grad]):
        with count_launches() as launched:
            total = fastcnn.clip_grad_norm_(parameters, 1.0)
        assert not launched and total.item() == 0.0 and total.device.type == "cpu"
        assert torch.equal(total, torch.nn.utils.clip_grad_norm_(parameters, 1.0))
        fastcnn.clip_grad_value_(parameters, 1.0)


def test_same_bits_every_run(generator):
    """The merge runs in a fixed order: no atomics, no run-to-run difference."""
    params = params_with_grads(generator, specs=usable(2.0))
    copies = [torch.zeros_like(p).requires_grad_() for p in params]
    for copy, p in zip(copies, params):
        copy.grad = p.grad.clone()
    totals = [fastcnn.clip_grad_norm_(group, 1e9) for group in (params, copies, params)]
    assert totals[0].item() == totals[1].item() == totals[2].item()


def test_no_aten_math_runs(generator):
    params = params_with_grads(generator, specs=SHAPES_AND_LAYOUTS[1:4])
    with record_aten_ops() as ops:
        fastcnn.clip_grad_norm_(params, 0.1)
        fastcnn.clip_grad_value_(params, 0.01)
    math = [op for op in ops if op.startswith("aten::") and any(
        word in op for word in ("norm", "mul", "div", "add", "clamp", "stack", "pow", "abs", "max", "sum"))]
    assert not math, f"ATen math ran: {math}"
    assert ops.count("fastcnn::grad_norm") == 1 and ops.count("fastcnn::scale_grads_") == 1, ops


@pytest.mark.every_triton
@pytest.mark.parametrize("clip_value", [0.3, 2.0, -0.5, float("inf")])
def test_clip_grad_value_matches_torch(clip_value, generator, seed):
    params = params_with_grads(generator)
    params[1].grad[2] = float("nan")
    reference = float64_copies(params)
    torch.nn.utils.clip_grad_value_(reference, clip_value)
    with count_launches() as launched:
        assert fastcnn.clip_grad_value_(params, clip_value) is None
    assert launched == {"clamp_grads": 1}
    for index, (p, r) in enumerate(zip(params, reference)):
        assert torch.equal(torch.isnan(p.grad), torch.isnan(r.grad))
        assert_close(p.grad, r.grad, torch.float32, what=f"grad {index}", seed=seed)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf"), 0.0])
def test_complex_gradients_are_clipped_as_torch_clips_them(norm_type, generator, seed):
    """torch's norm of a complex gradient is that of its magnitudes; the clipping scales it."""
    def values(shape, complex_values):
        real = make_tensor(shape, generator=generator)
        return torch.complex(real, make_tensor(shape, generator=generator)) if complex_values else real

    parameters = [torch.nn.Parameter(values((7, 3), True)), torch.nn.Parameter(values((5,), False))]
    for parameter in parameters:
        parameter.grad = values(parameter.shape, parameter.is_complex()) * 3
    theirs = [torch.nn.Parameter(p.detach().double() if not p.is_complex() else p.detach().to(torch.complex128))
              for p in parameters]
    for parameter, mine in zip(theirs, parameters):
        parameter.grad = mine.grad.to(parameter.dtype)
    with count_launches() as launched:
        total = fastcnn.clip_grad_norm_(parameters, 0.5, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    assert launched["grad_norm"] >= 1 and total.dtype == torch.float32
    assert_close(total, expected, torch.float32, what="total norm", seed=seed, reduction_length=26)
    for mine, parameter in zip(parameters, theirs):
        assert_close(mine.grad, parameter.grad, torch.float32, what="clipped grad", seed=seed, reduction_length=26)


def test_an_empty_generator_warns_as_torch_does():
    with pytest.warns(UserWarning) as ours:
        assert fastcnn.clip_grad_norm_((p for p in []), 1.0).item() == 0.0
    with pytest.warns(UserWarning) as theirs:
        torch.nn.utils.clip_grad_norm_((p for p in []), 1.0)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert "empty generator" in str(ours[0].message) and ours[0].filename == __file__


def test_bad_gradients_are_refused_before_launch():
    param = torch.zeros(4, 3, requires_grad=True)
    param.grad = torch.ones(4, 3).to_sparse()
    for clip in (lambda: fastcnn.clip_grad_norm_([param], 1.0), lambda: fastcnn.clip_grad_value_([param], 1.0)):
        with count_launches() as launched, pytest.raises(RuntimeError, match="sparse gradients are not supported"):
            clip()
        assert not launched
    param = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    param.grad = torch.ones(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64 are not supported"):
        fastcnn.clip_grad_norm_([param], 1.0)


@pytest.mark.parametrize("norm_type", [float("inf"), -1.5])
def test_norms_without_identity_refuse_empty_grads_as_torch(norm_type):
    param = torch.zeros(0, 3, requires_grad=True)
    param.grad = torch.zeros(0, 3)
    with pytest.raises(RuntimeError, match="empty"):
        torch.nn.utils.clip_grad_norm_([param], 1.0, norm_type)
    with count_launches() as launched, pytest.raises(RuntimeError, match="empty"):
        fastcnn.clip_grad_norm_([param], 1.0, norm_type)
    assert not launched


@gpu_only("host synchronisation exists only with a device")
def test_clipping_never_synchronizes_with_the_device(generator):
    """Only error_if_nonfinite=True reads the norm back to the host."""
    params = [torch.zeros(n, 7, device="cuda", requires_grad=True) for n in (3, 300)]
    for p in params:
        p.grad = make_tensor(p.shape, device="cuda", generator=generator)
    fastcnn.clip_grad_norm_(params, 0.5)  # first call: tables built and cached
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for norm_type in (2.0, float("inf"), 1.0):
            fastcnn.clip_grad_norm_(params, 0.5, norm_type)
        fastcnn.clip_grad_value_(params, 0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@gpu_only("~17 GB of device memory")
def test_gradient_of_more_than_2_to_the_31_elements(seed):
    """Offsets past 2**31 index in int64: a norm that counts every element (fp32 sums of
    halves), and a clip that reaches the last one."""
    numel = 2**31 + 4099
    param = torch.zeros(numel, device="cuda", requires_grad=True)
    param.grad = torch.full((numel,), 0.5, device="cuda")
    total = fastcnn.clip_grad_norm_([param], 1.0, norm_type=1.0)
    assert total.item() == pytest.approx(0.5 * numel, rel=1e-6)
    expected = 0.5 / (0.5 * numel + 1e-6)
    for index in (0, 2**31 - 1, 2**31, numel - 1):
        assert param.grad[index].item() == pytest.approx(expected, rel=1e-6), index
