"""fastcnn.prelu and fastcnn.nn.PReLU against float64 torch: one slope or one per channel, every
layout and rank, NaN as torch, the slope's gradient summed in slices in a fixed order, empty
input, torch's errors, OpInfo samples and convert's swap."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.kernels import prelu as prelu_kernels
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, assert_raises_like_torch, count_launches, make_tensor,
                             opinfo, poisoned_like, record_aten_ops, same_layout)


def _check(input, weight, dtype, seed, generator, what=""):
    out = fastcnn.prelu(input, weight)
    grad = make_tensor(out.shape, dtype, generator=generator)
    out.backward(grad)
    x, w = (t.detach().double().requires_grad_() for t in (input, weight))
    expected = F.prelu(x, w)
    expected.backward(grad.double())
    assert out.dtype == dtype and same_layout(out, F.prelu(input.detach(), weight.detach())), what
    assert_close(out, expected, dtype, what=f"output {what}", seed=seed)
    assert_close(input.grad, x.grad, dtype, what=f"grad input {what}", seed=seed)
    assert_close(weight.grad, w.grad, dtype, what=f"grad weight {what}", seed=seed,
                 reduction_length=max(1, input.numel() // max(weight.numel(), 1)))


@pytest.mark.every_triton
@pytest.mark.parametrize("slopes", ["one", "per channel"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_prelu_and_gradients_match_float64_torch(slopes, layout, seed, generator):
    input = make_tensor((3, 10, 7, 5), layout=layout, generator=generator).requires_grad_()
    weight = make_tensor((1 if slopes == "one" else 10,), generator=generator).abs().requires_grad_()
    with count_launches() as launched, record_aten_ops() as names:
        out = fastcnn.prelu(input, weight)
        out.backward(torch.ones_like(out))
    assert launched["prelu"] >= 2, dict(launched)
    assert not [name for name in names if "prelu" in name and not name.startswith("fastcnn::")], names
    input.grad = weight.grad = None
    _check(input, weight, torch.float32, seed, generator, f"{slopes} {layout}")


@pytest.mark.every_triton
@pytest.mark.parametrize("shape", [(9,), (), (5, 7), (4, 3, 11), (2, 3, 4, 5, 6)])
def test_every_rank(shape, seed, generator):
    input = make_tensor(shape, generator=generator).requires_grad_()
    channels = shape[1] if len(shape) >= 2 else 1
    weight = make_tensor((channels,), generator=generator).requires_grad_()
    _check(input, weight, torch.float32, seed, generator, str(shape))


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, seed, generator):
    input = make_tensor((2, 24, 9, 11), dtype, layout="channels_last", generator=generator).requires_grad_()
    weight = make_tensor((24,), dtype, generator=generator).requires_grad_()
    _check(input, weight, dtype, seed, generator, str(dtype))


def test_slope_gradient_in_slices_is_deterministic(seed, generator):
    """One image with a large plane: the interpreter (2 SMs) walks it in slices, whose partials one
    more launch adds in a fixed order."""
    input = make_tensor((1, 6, 40, 33), layout="channels_last", generator=generator).requires_grad_()
    weight = make_tensor((6,), generator=generator).requires_grad_()
    _, slices = prelu_kernels.backward_slices(1, 6, 40 * 33, 1, torch.device(DEVICE))
    assert slices > 1
    grads = []
    for _ in range(2):
        weight.grad = None
        out = fastcnn.prelu(input, weight)
        with count_launches() as launched:
            out.backward(torch.ones_like(out))
        assert launched["prelu"] == 2, dict(launched)
        grads.append(weight.grad.clone())
    assert torch.equal(*grads)
    input.grad = weight.grad = None
    _check(input, weight, torch.float32, seed, generator, "slices")


def test_nan_takes_torchs_branch(generator):
    input = make_tensor((2, 3, 4), generator=generator)
    input[0, 1, 2], input[1, 0, 0] = float("nan"), float("-inf")
    input.requires_grad_()
    weight = make_tensor((3,), generator=generator).requires_grad_()
    out = fastcnn.prelu(input, weight)
    out.backward(torch.ones_like(out))
    x, w = input.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    expected = F.prelu(x, w)
    expected.backward(torch.ones_like(expected))
    for ours, theirs in ((out, expected), (input.grad, x.grad), (weight.grad, w.grad)):
        assert torch.equal(ours.isnan(), theirs.isnan()) and torch.allclose(ours, theirs, equal_nan=True)


def test_empty(generator):
    input = torch.empty(0, 4, 3, device=DEVICE, requires_grad=True)
    weight = make_tensor((4,), generator=generator).requires_grad_()
    fastcnn.prelu(input, weight).sum().backward()
    assert input.grad.shape == input.shape and torch.equal(weight.grad, torch.zeros_like(weight))


def test_launchers_write_every_element(generator):
    kernels = prelu_kernels
    x = make_tensor((3, 6, 35), generator=generator)
    slope, dy = make_tensor((6,), generator=generator), make_tensor((3, 6, 35), generator=generator)
    y, dx, ds = poisoned_like(x), poisoned_like(dy), poisoned_like(slope)
    kernels.forward(x, slope, y)
    kernels.backward(dy, x, slope, dx, ds)
    x64, slope64, dy64 = x.double(), slope.double(), dy.double()
    negative = x <= 0
    for what, actual, expected in (("y", y, F.prelu(x64, slope64)),
                                   ("dx", dx, torch.where(negative, slope64[:, None] * dy64, dy64)),
                                   ("ds", ds, (dy64 * x64 * negative).sum((0, 2)))):
        assert_close(actual, expected, torch.float32, what=what, seed=0, reduction_length=105)


BAD_CALLS = {
    "2-d weight": (lambda: (torch.randn(2, 3), torch.randn(1, 3)), "Expected `weight` to be a scalar or 1D tensor"),
    "channels": (lambda: (torch.randn(2, 3, 4), torch.randn(4)), "Mismatch of parameter numbers"),
    "1-d channels": (lambda: (torch.randn(5), torch.randn(5)), "Mismatch of parameter numbers"),
    "dtype": (lambda: (torch.randn(2, 3), torch.randn(3).double()), "Type promoting not supported"),
    "integer": (lambda: (torch.ones(2, 3, dtype=torch.long), torch.ones(3, dtype=torch.long)), "not implemented for"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_like_torch(case):
    make, fragment = BAD_CALLS[case]
    input, weight = make()
    assert_raises_like_torch(lambda: F.prelu(input, weight), lambda: fastcnn.prelu(input, weight), op="prelu",
                             fragment=fragment)
    assert_raises_like_torch(lambda: F.prelu(input, 0.25), lambda: fastcnn.prelu(input, 0.25), op="prelu",
                             fragment="must be Tensor", error=TypeError)


def test_opinfo_samples(seed):
    checked = 0
    for sample in opinfo("nn.functional.prelu").sample_inputs(DEVICE, torch.float32, requires_grad=True):
        weight = sample.args[0] if sample.args else sample.kwargs["weight"]
        out = fastcnn.prelu(sample.input, weight)
        x, w = sample.input.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
        expected = F.prelu(x, w)
        assert_close(out, expected, torch.float32, what=f"{tuple(sample.input.shape)}", seed=seed)
        checked += 1
    assert checked >= 3


def test_module_is_a_drop_in_and_convert_swaps_it(seed, generator):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.PReLU(5), torch.nn.PReLU())
    converted = fastcnn.convert(model)
    assert [type(m) for m in converted] == [fastcnn.nn.Conv2d, fastcnn.nn.PReLU, fastcnn.nn.PReLU]
    assert converted.state_dict().keys() == model.state_dict().keys()
    input = make_tensor((2, 3, 8, 7), generator=generator)
    with count_launches() as launched:
        out = converted(input)
    assert launched["prelu"] == 2
    assert_close(out, model.double()(input.double()), torch.float32, what="converted", seed=seed, reduction_length=27)


def test_bytes_hand_counted():
    from fastcnn.ops import prelu as prelu_op

    assert prelu_op.bytes_moved(10, 4, backward=False) == 80
