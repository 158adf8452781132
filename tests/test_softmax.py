"""fastcnn.softmax and fastcnn.log_softmax (and their nn modules) against float64 torch: every dim
of 1- to 4-d inputs in every layout, rows longer than one tile, ``dtype``, the implicit dim and
its warning, -inf rows, 0-d and empty inputs, torch's errors, OpInfo samples."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, assert_raises_like_torch, count_launches, make_tensor,
                             opinfo, record_aten_ops)

FUNCTIONS = {"softmax": (fastcnn.softmax, F.softmax), "log_softmax": (fastcnn.log_softmax, F.log_softmax)}


def _check(name, input, dim, seed, generator, what, dtype=None):
    ours, theirs = FUNCTIONS[name]
    out = ours(input, dim, dtype=dtype)
    grad = make_tensor(out.shape, out.dtype, generator=generator)
    (grad_input,) = torch.autograd.grad(out, (input,), grad)
    x = input.detach().double().requires_grad_()
    expected = theirs(x, dim)
    (expected_grad,) = torch.autograd.grad(expected, (x,), grad.double())
    assert out.dtype == (dtype or input.dtype) and out.is_contiguous(), what
    assert_close(out, expected, out.dtype, what=f"{name} {what}", seed=seed, reduction_length=input.shape[dim])
    assert_close(grad_input, expected_grad, input.dtype, what=f"grad {name} {what}", seed=seed,
                 reduction_length=input.shape[dim])


@pytest.mark.every_triton
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_dim_matches_float64_torch(name, layout, seed, generator):
    input = make_tensor((3, 6, 5, 7), layout=layout, generator=generator).requires_grad_()
    for dim in (1, -1, 0, 2):
        with count_launches() as launched, record_aten_ops() as names:
            out = FUNCTIONS[name][0](input, dim)
            out.backward(torch.ones_like(out))
        assert launched["softmax"] == 2, dict(launched)
        assert not [n for n in names if "softmax" in n and not n.startswith("fastcnn::")], names
        _check(name, input, dim, seed, generator, f"{layout} dim {dim}")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_long_rows_other_ranks_and_dtypes(name, seed, generator):
    from fastcnn.kernels import cross_entropy

    classes = cross_entropy.MAX_BLOCK_C + 37  # more than one tile: the row is walked twice
    _check(name, make_tensor((3, classes), generator=generator).requires_grad_(), 1, seed, generator, "long rows")
    _check(name, make_tensor((2, classes, 3), generator=generator).requires_grad_(), 1, seed, generator,
           "long strided rows")
    _check(name, make_tensor((11,), generator=generator).requires_grad_(), 0, seed, generator, "1-d")
    _check(name, make_tensor((4, 9), torch.bfloat16, generator=generator).requires_grad_(), 1, seed, generator,
           "bf16")
    _check(name, make_tensor((4, 9), torch.float16, generator=generator).requires_grad_(), 0, seed, generator,
           "fp16 to fp32", dtype=torch.float32)


def test_implicit_dim_edges_and_modules(generator):
    input = make_tensor((2, 3, 4), generator=generator)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        ours = fastcnn.softmax(input)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(ours, F.softmax(input), atol=1e-6)  # dim 0 for 3-d input, as torch
    assert torch.equal(fastcnn.softmax(torch.tensor(2.5, device=DEVICE), 0), torch.tensor(1.0, device=DEVICE))
    assert fastcnn.log_softmax(torch.empty(0, 3, device=DEVICE), 1).shape == (0, 3)
    integers = torch.arange(6, device=DEVICE).view(2, 3)
    assert torch.allclose(fastcnn.softmax(integers, 1, dtype=torch.float32),
                          F.softmax(integers, 1, dtype=torch.float32))
    minus_inf = torch.full((2, 3), -float("inf"), device=DEVICE)
    assert fastcnn.softmax(minus_inf, 1).isnan().all() and F.softmax(minus_inf, 1).isnan().all()
    converted = fastcnn.convert(torch.nn.Sequential(torch.nn.Softmax(1), torch.nn.LogSoftmax(dim=0)))
    assert [type(m) for m in converted] == [fastcnn.nn.Softmax, fastcnn.nn.LogSoftmax]
    with count_launches() as launched:
        converted(input)
    assert launched["softmax"] == 2


BAD_CALLS = {
    "dim": (lambda: torch.randn(3), (1,), {}, "Dimension out of range", IndexError),
    "integer": (lambda: torch.arange(3), (0,), {}, "not implemented for 'Long'", NotImplementedError),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_like_torch(case):
    make, args, kwargs, fragment, error = BAD_CALLS[case]
    input = make()
    assert_raises_like_torch(lambda: F.softmax(input, *args, **kwargs),
                             lambda: fastcnn.softmax(input, *args, **kwargs), op="softmax", fragment=fragment,
                             error=error)


def test_opinfo_samples(seed):
    checked = 0
    for name in ("softmax", "log_softmax"):
        for sample in opinfo(name).sample_inputs(DEVICE, torch.float32, requires_grad=True):
            out = FUNCTIONS[name][0](sample.input, *sample.args, **sample.kwargs)
            expected = FUNCTIONS[name][1](sample.input.detach().double(), *sample.args, **sample.kwargs)
            assert_close(out, expected, out.dtype, what=f"{name} {tuple(sample.input.shape)} {sample.args}",
                         seed=seed, reduction_length=max(1, sample.input.numel()))
            checked += 1
    assert checked >= 6


def test_bytes_hand_counted():
    from fastcnn.ops import softmax

    assert softmax.bytes_moved(10, 2) == 100 and softmax.bytes_moved(10, 4, backward=False) == 80
