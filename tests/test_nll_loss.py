"""fastcnn.nll_loss and fastcnn.nn.NLLLoss against float64 torch: every reduction, class weights,
ignore_index, (N, C), (N, C, d1, ...) in NCHW and channels_last, unbatched, empty input, every
target ignored (NaN), out-of-range targets, torch's errors, and the OpInfo samples."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, assert_raises_like_torch, count_launches, make_tensor,
                             opinfo, record_aten_ops)


def _check(input, target, seed, generator, what, **kwargs):
    out = fastcnn.nll_loss(input, target, **kwargs)
    grad = make_tensor(out.shape, generator=generator)
    (ours,) = torch.autograd.grad(out, (input,), grad)
    x = input.detach().double().contiguous().requires_grad_()  # torch's CPU nll_loss2d backward wants it so
    weight = kwargs.pop("weight", None)
    expected = F.nll_loss(x, target, weight=None if weight is None else weight.double(), **kwargs)
    (theirs,) = torch.autograd.grad(expected, (x,), grad.double())
    assert out.dtype == input.dtype and out.shape == expected.shape, what
    assert_close(out, expected, input.dtype, what=f"loss {what}", seed=seed, reduction_length=max(1, target.numel()))
    assert_close(ours, theirs, input.dtype, what=f"grad {what}", seed=seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_matches_float64_torch(layout, reduction, seed, generator):
    input = make_tensor((3, 7, 5, 4), layout=layout, generator=generator).requires_grad_()
    target = torch.randint(0, 7, (3, 5, 4), device=DEVICE, generator=generator)
    target[0, 1, 2] = target[2, 0, 0] = 2  # an ignored class among the rows
    weight = make_tensor((7,), generator=generator).abs()
    with count_launches() as launched, record_aten_ops() as names:
        out = fastcnn.nll_loss(input, target, weight=weight, ignore_index=2, reduction=reduction)
        out.backward(torch.ones_like(out))
    assert launched["nll_loss"] == (3 if reduction != "none" else 2), dict(launched)
    assert not [name for name in names if "nll" in name and not name.startswith("fastcnn::")], names
    input.grad = None
    _check(input, target, seed, generator, f"{layout} {reduction}", weight=weight, ignore_index=2,
           reduction=reduction)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_two_dims_unbatched_and_half_precision(dtype, seed, generator):
    input = make_tensor((37, 1000), dtype, generator=generator).requires_grad_()
    target = torch.randint(0, 1000, (37,), device=DEVICE, generator=generator)
    _check(input, target, seed, generator, f"2-d {dtype}")
    single = make_tensor((9,), generator=generator).requires_grad_()
    for reduction in ("none", "mean"):
        _check(single, torch.tensor(4, device=DEVICE), seed, generator, f"unbatched {reduction}", reduction=reduction)


def test_every_target_ignored_and_empty(generator):
    input = make_tensor((4, 3), generator=generator).requires_grad_()
    target = torch.full((4,), -100, device=DEVICE)
    loss = fastcnn.nll_loss(input, target)
    assert loss.isnan() and F.nll_loss(input, target).isnan()
    loss.backward()
    assert torch.equal(input.grad, torch.zeros_like(input))
    empty = torch.empty(0, 3, device=DEVICE, requires_grad=True)
    for reduction in ("none", "mean", "sum"):
        ours = fastcnn.nll_loss(empty, torch.empty(0, dtype=torch.long, device=DEVICE), reduction=reduction)
        theirs = F.nll_loss(empty, torch.empty(0, dtype=torch.long, device=DEVICE), reduction=reduction)
        assert ours.shape == theirs.shape and torch.allclose(ours, theirs, equal_nan=True), reduction


def test_out_of_range_target_raises_index_error(generator):
    input = make_tensor((3, 4), generator=generator)
    for bad in (4, -1):
        with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
            F.nll_loss(input, torch.tensor([0, bad, 1], device=DEVICE))
        with pytest.raises(IndexError, match=f"fastcnn.nll_loss: Target {bad} is out of bounds"):
            fastcnn.nll_loss(input, torch.tensor([0, bad, 1], device=DEVICE))


BAD_CALLS = {
    "0-d": (lambda: (torch.randn(()), torch.tensor(1)), {}, "Expected 1 or more dimensions", ValueError),
    "batch": (lambda: (torch.randn(3, 4), torch.tensor([0, 1])), {}, "to match target batch_size", ValueError),
    "spatial": (lambda: (torch.randn(3, 4, 5), torch.tensor([0, 1, 2])), {}, "Expected target size", RuntimeError),
    "int32 target": (lambda: (torch.randn(3, 4), torch.tensor([0, 1, 2], dtype=torch.int32)), {},
                     "expected target dtype to be Long or Byte", RuntimeError),
    "weight size": (lambda: (torch.randn(3, 4), torch.tensor([0, 1, 2])), {"weight": torch.rand(3)},
                    "weight tensor should be defined either for all 4 classes", RuntimeError),
    "weight dtype": (lambda: (torch.randn(3, 4), torch.tensor([0, 1, 2])), {"weight": torch.rand(4).double()},
                     "expected scalar type Float but found Double", RuntimeError),
    "weight grad": (lambda: (torch.randn(3, 4), torch.tensor([0, 1, 2])),
                    {"weight": torch.rand(4, requires_grad=True)}, "is not differentiable", RuntimeError),
    "reduction": (lambda: (torch.randn(3, 4), torch.tensor([0, 1, 2])), {"reduction": "mea"},
                  "is not a valid value for reduction", ValueError),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_like_torch(case):
    make, kwargs, fragment, error = BAD_CALLS[case]
    input, target = make()
    assert_raises_like_torch(lambda: F.nll_loss(input, target, **kwargs),
                             lambda: fastcnn.nll_loss(input, target, **kwargs), op="nll_loss", fragment=fragment,
                             error=error)


def test_opinfo_samples(seed):
    checked = 0
    for sample in opinfo("nn.functional.nll_loss").sample_inputs(DEVICE, torch.float32, requires_grad=True):
        out = fastcnn.nll_loss(sample.input, *sample.args, **sample.kwargs)
        kwargs = dict(sample.kwargs)
        if kwargs.get("weight") is not None:
            kwargs["weight"] = kwargs["weight"].double()
        expected = F.nll_loss(sample.input.detach().double(), *sample.args, **kwargs)
        assert_close(out, expected, torch.float32, what=f"{tuple(sample.input.shape)} {sample.kwargs}", seed=seed,
                     reduction_length=max(1, sample.input.numel()))
        checked += 1
    assert checked >= 5


def test_module_is_a_drop_in_and_convert_swaps_it(seed, generator):
    module = torch.nn.NLLLoss(weight=torch.rand(5, device=DEVICE), ignore_index=1)
    converted = fastcnn.convert(module)
    assert type(converted) is fastcnn.nn.NLLLoss and converted.state_dict().keys() == module.state_dict().keys()
    input, target = make_tensor((6, 5), generator=generator), torch.randint(0, 5, (6,), device=DEVICE)
    with count_launches() as launched:
        out = converted(input, target)
    assert launched["nll_loss"] == 2
    expected = F.nll_loss(input.double(), target, weight=module.weight.double(), ignore_index=1)
    assert_close(out, expected, torch.float32, what="module", seed=seed, reduction_length=6)


def test_bytes_hand_counted():
    from fastcnn.ops import nll_loss

    assert nll_loss.bytes_moved(2, 10, 4) == 2 * (4 + 16) + 80
