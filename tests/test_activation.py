"""fastcnn's standalone activations and their modules against float64 torch."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.ops.activation import KINDS, module_for, resolve_activation
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, assert_raises_like_torch, count_launches, gpu_only,
                             STRIDED_VIEWS, make_tensor, opinfo, record_aten_ops, relative_error, strided_view_base)

PARAMETERS = {"leaky_relu": 0.2, "elu": 0.7}
FUNCTIONS = {
    "relu": lambda x: fastcnn.relu(x), "relu6": lambda x: fastcnn.relu6(x),
    "leaky_relu": lambda x: fastcnn.leaky_relu(x, 0.2), "elu": lambda x: fastcnn.elu(x, 0.7),
    "silu": fastcnn.silu, "gelu": fastcnn.gelu, "gelu_tanh": lambda x: fastcnn.gelu(x, approximate="tanh"),
    "hardswish": fastcnn.hardswish, "hardsigmoid": fastcnn.hardsigmoid, "sigmoid": fastcnn.sigmoid,
    "tanh": fastcnn.tanh,
}
# Values on every branch of every formula: both sides of 0, of ±3 and of 6, and large ones.
SPECIAL = [float("nan"), float("inf"), -float("inf"), -3.0, 3.0, 0.0, 6.0, -6.0, 2.5, -2.5, 7.0, -0.5, 0.5, 30.0, -30.0]


def reference(kind):
    return module_for(kind, PARAMETERS.get(kind, resolve_activation("test", kind)[1]))


@pytest.mark.every_triton
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_backward_match_float64_torch(kind, layout, seed, generator):
    input = (make_tensor((3, 5, 4, 7), generator=generator, low=0.0, high=1.0) * 8.0)
    input = fastcnn.testing.in_layout(input, layout).requires_grad_()
    out = FUNCTIONS[kind](input)
    grad_out = make_tensor(out.shape, generator=generator)
    out.backward(grad_out)
    leaf = input.detach().double().requires_grad_()
    expected = reference(kind)(leaf)
    expected.backward(grad_out.double())
    assert_close(out, expected, torch.float32, what=f"{kind} output", seed=seed)
    assert_close(input.grad, leaf.grad, torch.float32, what=f"{kind} grad_input", seed=seed)
    if layout != "sliced":
        assert out.stride() == input.stride()


@pytest.mark.every_triton
@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_infinities_follow_torch_forward_and_backward(kind):
    """Each special value gives torch's float32 result exactly where it is not rounding: NaN in
    the same places, infinities equal. torch's CPU GELU returns NaN at ±inf (its vectorised erf),
    its CUDA kernel ±inf and 0; the kernel gives the CUDA values, so those two are skipped."""
    values = torch.tensor(SPECIAL, device=DEVICE)
    if kind.startswith("gelu") and DEVICE == "cpu":
        values = values[torch.isfinite(values) | torch.isnan(values)]
    results = []
    for function in (FUNCTIONS[kind], reference(kind)):
        leaf = values.clone().requires_grad_()
        out = function(leaf)
        out.backward(torch.full_like(out, 2.0))
        results.append((out.detach(), leaf.grad))
    for what, actual, expected in zip(("output", "gradient"), results[0], results[1]):
        assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (kind, what, actual, expected)
        finite = ~torch.isnan(expected)
        torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-5, atol=1e-6, msg=f"{kind} {what}")


OPINFO_NAMES = {"relu": "nn.functional.relu", "relu6": "nn.functional.relu6", "leaky_relu": "nn.functional.leaky_relu",
                "elu": "nn.functional.elu", "silu": "nn.functional.silu", "gelu": "nn.functional.gelu",
                "hardswish": "nn.functional.hardswish", "hardsigmoid": "nn.functional.hardsigmoid",
                "sigmoid": "sigmoid", "tanh": "tanh"}


@pytest.mark.parametrize("kind", sorted(OPINFO_NAMES))
def test_opinfo_samples(kind, seed):
    function = getattr(fastcnn, kind)
    checked = 0
    for sample in opinfo(OPINFO_NAMES[kind]).sample_inputs(DEVICE, torch.float32, requires_grad=True):
        kwargs = {key: value for key, value in sample.kwargs.items() if key != "inplace"}
        out = function(sample.input, *sample.args, **kwargs)
        expected_input = sample.input.detach().double().requires_grad_()
        torch_function = getattr(F, kind, None) or getattr(torch, kind)
        expected = torch_function(expected_input, *sample.args, **kwargs)
        assert_close(out, expected, torch.float32, what=f"{kind} {tuple(sample.input.shape)} {kwargs}", seed=seed)
        if out.numel():
            grad = torch.ones_like(out)
            out.backward(grad)
            expected.backward(grad.double())
            assert_close(sample.input.grad, expected_input.grad, torch.float32, what=f"{kind} gradient", seed=seed)
        checked += 1
    assert checked >= 1


def test_kernel_runs_and_no_aten_activation(generator):
    input = make_tensor((4, 6, 5, 3), layout="channels_last", generator=generator).requires_grad_()
    with record_aten_ops() as names, count_launches() as launched:
        out = fastcnn.silu(input)
        out.backward(torch.ones_like(out))
    assert launched["activation"] == 2
    assert [name for name in names if name.startswith("fastcnn::")] == ["fastcnn::activation",
                                                                        "fastcnn::activation_backward"], names
    assert not [name for name in names if "silu" in name or "sigmoid" in name], names


def test_inplace_writes_the_input_only_when_autograd_does_not_need_it(generator):
    values = make_tensor((5, 9), generator=generator)
    input = values.clone()
    assert fastcnn.relu(input, inplace=True) is input
    assert torch.equal(input, torch.relu(values))
    leaf = values.clone().requires_grad_()
    out = fastcnn.relu6(leaf, inplace=True)
    assert out is not leaf and torch.equal(leaf.detach(), values)
    out.sum().backward()
    assert torch.equal(leaf.grad, ((values > 0) & (values < 6)).float())


@pytest.mark.parametrize("kind", KINDS)
def test_autograd_keeps_the_tensor_torch_keeps(kind, generator):
    """relu, sigmoid and tanh keep their output (torch's backward takes the result), every other
    kind its input; so modifying the kept tensor in place before backward fails as torch's does."""
    leaf = make_tensor((3, 5, 4), generator=generator).requires_grad_()
    input = leaf * 1.0
    out = fastcnn.ops.activation.activation(input, kind)
    (saved,) = out.grad_fn.saved_tensors
    keeps_output = kind in ("relu", "sigmoid", "tanh")
    assert saved.data_ptr() == (out if keeps_output else input).data_ptr() != (input if keeps_output else out).data_ptr()
    if keeps_output:
        out.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.backward(torch.ones_like(out))


def test_strided_input_and_gradient(seed, generator):
    input = make_tensor((6, 10), generator=generator)[:, ::3].requires_grad_()
    out = fastcnn.elu(input)
    grad_out = make_tensor((8, 6), generator=generator).t()[:, :4]
    out.backward(grad_out)
    leaf = input.detach().double().requires_grad_()
    F.elu(leaf).backward(grad_out.double())
    assert_close(input.grad, leaf.grad, torch.float32, what="grad from strided views", seed=seed)


INPLACE_KINDS = ("relu", "relu6", "leaky_relu", "elu", "silu", "hardswish", "hardsigmoid")


@pytest.mark.parametrize("view", sorted(STRIDED_VIEWS))
@pytest.mark.parametrize("kind", INPLACE_KINDS)
def test_inplace_on_a_strided_view_writes_where_torch_writes(kind, view, generator):
    """``fastcnn.<kind>(x[view], inplace=True)`` and ``nn.<Kind>(inplace=True)`` change the viewed
    tensor as torch's do (values in the view, nothing outside it) and return the view."""
    values = make_tensor((3, 5, 4, 6), generator=generator) * 4
    module_type = next(m for m in fastcnn.nn.ACTIVATIONS if m.fastcnn_kind == kind)
    for call in (lambda v: getattr(fastcnn, kind)(v, inplace=True), lambda v: module_type(inplace=True)(v)):
        ours, theirs = strided_view_base(values, view), strided_view_base(values, view)
        with count_launches() as launched:
            returned = call(STRIDED_VIEWS[view](ours))
        getattr(F, kind)(STRIDED_VIEWS[view](theirs), inplace=True)
        assert launched["activation"] == 1
        assert relative_error(ours, theirs) < 1e-6, (kind, view)
        view_of_ours = STRIDED_VIEWS[view](ours)
        assert returned.data_ptr() == view_of_ours.data_ptr() and returned.stride() == view_of_ours.stride()


@pytest.mark.parametrize("view", sorted(STRIDED_VIEWS))
def test_outputs_of_strided_views_have_torchs_strides(view, generator):
    """torch lays an elementwise op's output out in its input's dimension order (dense): so do
    the activations, forward and backward."""
    values = make_tensor((3, 5, 4, 6), generator=generator)
    input = STRIDED_VIEWS[view](strided_view_base(values, view)).detach().requires_grad_()
    for kind in ("relu", "gelu", "sigmoid"):
        out, expected = getattr(fastcnn, kind)(input), getattr(torch, kind)(input) if kind != "gelu" else F.gelu(input)
        assert out.stride() == expected.stride(), (kind, out.stride(), expected.stride())


@pytest.mark.parametrize("kind", KINDS)
def test_integer_and_bool_input_get_torchs_answer(kind):
    """torch computes relu/relu6 of integers (fastcnn's deliberate TypeError) and refuses their
    bools (RuntimeError), promotes sigmoid/tanh to float, and has no integer kernel for the rest
    (NotImplementedError)."""
    function = (lambda x: fastcnn.gelu(x, approximate="tanh")) if kind == "gelu_tanh" else getattr(fastcnn, kind)
    theirs = (lambda x: F.gelu(x, approximate="tanh")) if kind == "gelu_tanh" else module_for(kind, 0.01)
    for dtype in (torch.int64, torch.uint8, torch.bool):
        input = torch.ones(2, 3, dtype=dtype, device=DEVICE)
        if kind in ("sigmoid", "tanh"):
            out = function(input)
            assert out.dtype == torch.float32 and relative_error(out, theirs(input.cpu())) < 1e-6
            continue
        if kind in ("relu", "relu6") and dtype != torch.bool:
            with pytest.raises(TypeError, match="is not supported by fastcnn's kernels"):
                function(input)
            continue
        error = RuntimeError if kind in ("relu", "relu6") else NotImplementedError
        fragment = "not supported for" if kind in ("relu", "relu6") else "not implemented for"
        assert_raises_like_torch(lambda: theirs(input.cpu()), lambda: function(input), op=kind.split("_tanh")[0],
                                 fragment=fragment, error=error)


@pytest.mark.parametrize("module_type", fastcnn.nn.ACTIVATIONS, ids=lambda m: m.__name__)
def test_modules_are_drop_ins(module_type, seed, generator):
    torch_type = module_type.__mro__[1]
    ours, theirs = module_type(), torch_type()
    assert isinstance(ours, torch_type) and repr(ours) == repr(theirs)
    input = make_tensor((2, 3, 4, 5), generator=generator) * 4
    with count_launches() as launched:
        out = ours(input)
    assert launched["activation"] == 1
    assert_close(out, theirs(input.double()), torch.float32, what=module_type.__name__, seed=seed)


def test_empty_and_bad_input():
    empty = torch.empty(0, 3, device=DEVICE, requires_grad=True)
    out = fastcnn.gelu(empty)
    out.sum().backward()
    assert out.shape == empty.shape and empty.grad.shape == empty.shape
    assert_raises_like_torch(lambda: F.gelu(torch.ones(3), approximate="exact"),
                             lambda: fastcnn.gelu(torch.ones(3, device=DEVICE), approximate="exact"), op="gelu",
                             fragment="approximate argument must be either none or tanh")
    with pytest.raises(TypeError, match="fastcnn.silu: input of dtype torch.float64 is not supported"):
        fastcnn.silu(torch.ones(3, dtype=torch.float64, device=DEVICE))
    with pytest.raises(TypeError, match="argument 'input' must be a Tensor"):
        fastcnn.tanh([1.0])


def test_resolve_activation_names_modules_and_refusals():
    assert resolve_activation("op", None) == (None, 0.0)
    assert resolve_activation("op", "leaky_relu") == ("leaky_relu", 0.01)
    assert resolve_activation("op", ("elu", 0.5)) == ("elu", 0.5)
    assert resolve_activation("op", torch.nn.LeakyReLU(0.3)) == ("leaky_relu", 0.3)
    assert resolve_activation("op", torch.nn.GELU(approximate="tanh")) == ("gelu_tanh", 0.0)
    assert resolve_activation("op", fastcnn.nn.SiLU()) == ("silu", 0.0)
    with pytest.raises(ValueError, match="op: activation module Softplus is not supported"):
        resolve_activation("op", torch.nn.Softplus())
    with pytest.raises(ValueError, match="op: activation must be None or one of relu"):
        resolve_activation("op", "swish")
    # The forms users write: F.gelu's approximate argument, a 1-tuple, a list.
    assert resolve_activation("op", ("gelu", "tanh")) == ("gelu_tanh", 0.0)
    assert resolve_activation("op", ("gelu", "none")) == ("gelu", 0.0)
    assert resolve_activation("op", ("leaky_relu",)) == ("leaky_relu", 0.01)
    assert resolve_activation("op", ["elu", 2]) == ("elu", 2.0)
    # A parameter where the activation has none, or one that is not a number, is refused, and
    # the message lists the valid forms.
    for spec in (("relu", 0.5), ("gelu", "exact"), ("leaky_relu", "0.2"), ("elu", True), ("silu", 1, 2), ()):
        with pytest.raises(ValueError, match="valid forms are"):
            resolve_activation("op", spec)


@gpu_only("fp16/bf16")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
def test_half_precision(kind, dtype, seed, generator):
    input = (make_tensor((64, 33), generator=generator) * 6).to(dtype).requires_grad_()
    out = FUNCTIONS[kind](input)
    out.backward(torch.ones_like(out))
    leaf = input.detach().double().requires_grad_()
    reference(kind)(leaf).backward(torch.ones_like(leaf))
    assert out.dtype == dtype
    assert_close(out, reference(kind)(input.detach().double()), dtype, what=f"{kind} {dtype}", seed=seed)
    assert_close(input.grad, leaf.grad, dtype, what=f"{kind} {dtype} gradient", seed=seed)
