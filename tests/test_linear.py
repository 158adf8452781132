"""fastcnn.linear and fastcnn.nn.Linear against float64 torch: every fused activation, inputs of
any rank and strides (ConvNeXt's permuted channels_last view read in place), split reductions of
the weight gradient with the bias's gradient in the same pass, empty shapes, torch's errors, the
TF32 rule, autocast, and the kernels really running (no addmm, mm or activation left in ATen)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.kernels import linear as linear_kernels
from fastcnn.ops import linear as linear_op
from fastcnn.testing import (DEVICE, assert_close, assert_raises_like_torch, count_launches, make_tensor,
                             opinfo, poisoned_like, record_aten_ops)

KINDS = [None, "relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "leaky_relu", "hardswish", "silu", "relu6"]
TORCH_ACTIVATIONS = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
                     "sigmoid": torch.sigmoid, "tanh": torch.tanh, "leaky_relu": F.leaky_relu, "hardswish": F.hardswish,
                     "silu": F.silu, "relu6": F.relu6}


def _reference(input, weight, bias, kind, grad):
    """act(F.linear) in float64 and its three gradients for ``grad``."""
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (input, weight, bias)]
    out = TORCH_ACTIVATIONS[kind](F.linear(*leaves))
    out.backward(grad.double())
    return out.detach(), [t.grad if t is not None else None for t in leaves]


def _check(input, weight, bias, kind, dtype, seed, generator, what="", record=None):
    """fastcnn.linear's output and gradients against float64 torch; ``record``: a context the
    fastcnn calls alone run in (its exit ends it)."""
    grad = make_tensor((*input.shape[:-1], weight.shape[0]), dtype, generator=generator)
    with record if record is not None else contextlib.nullcontext():
        out = fastcnn.linear(input, weight, bias, activation=kind)
        out.backward(grad)
    expected, grads = _reference(input, weight, bias, kind, grad)
    in_features, rows = weight.shape[1], out.numel() // max(weight.shape[0], 1)
    assert out.shape == expected.shape and out.dtype == dtype
    assert_close(out, expected, dtype, what=f"output {what}", seed=seed, reduction_length=in_features)
    for name, tensor, reference, length in (("input", input, grads[0], weight.shape[0]),
                                            ("weight", weight, grads[1], rows), ("bias", bias, grads[2], rows)):
        if tensor is not None and tensor.requires_grad:
            assert tensor.grad.shape == tensor.shape
            assert_close(tensor.grad, reference, dtype, what=f"grad {name} {what}", seed=seed, reduction_length=length)
    return out


@pytest.mark.every_triton
@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_gradients_match_float64_torch(kind, seed, generator):
    input = make_tensor((3, 23, 37), generator=generator).requires_grad_()
    weight = make_tensor((19, 37), generator=generator).requires_grad_()
    bias = make_tensor((19,), generator=generator).requires_grad_()
    record = contextlib.ExitStack()
    launched, names = record.enter_context(count_launches()), record.enter_context(record_aten_ops())
    _check(input, weight, bias, kind, torch.float32, seed, generator, kind or "", record=record)
    assert launched["linear"] >= 3, dict(launched)  # forward, grad-input, grad-weight (+ slice sums)
    aten = [name for name in names if any(word in name for word in ("addmm", "aten::mm", "gelu", "sigmoid", "tanh",
                                                                    "relu", "threshold", "hardswish", "silu"))]
    assert not aten, aten
    fastcnn_ops = [name for name in names if name.startswith("fastcnn::")]
    assert fastcnn_ops == ["fastcnn::linear", "fastcnn::linear_weight_grad", "fastcnn::linear_input_grad"], names


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", [None, "gelu", "relu"])
def test_half_precision(kind, dtype, seed, generator):
    input = make_tensor((41, 33), dtype, generator=generator).requires_grad_()
    weight = make_tensor((17, 33), dtype, generator=generator).requires_grad_()
    bias = make_tensor((17,), dtype, generator=generator).requires_grad_()
    _check(input, weight, bias, kind, dtype, seed, generator, f"{dtype} {kind}")


def _convnext_view(generator):
    """ConvNeXt's MLP input: an (N, C, H, W) channels_last tensor permuted to (N, H, W, C)."""
    return make_tensor((2, 24, 5, 3), layout="channels_last", generator=generator).permute(0, 2, 3, 1)


INPUTS = {
    "vector": lambda g: make_tensor((24,), generator=g),
    "matrix": lambda g: make_tensor((9, 24), generator=g),
    "transposed": lambda g: make_tensor((24, 9), generator=g).t(),  # feature stride 9
    "convnext permuted channels_last": _convnext_view,
    "sliced rows": lambda g: make_tensor((4, 14, 24), generator=g)[:, ::3],  # leading dims that do not flatten
    "sliced features": lambda g: make_tensor((3, 5, 24), layout="sliced", generator=g),
}


@pytest.mark.every_triton
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_inputs_of_any_rank_and_strides(name, seed, generator):
    input = INPUTS[name](generator).requires_grad_()
    weight = make_tensor((13, 24), generator=generator).t().contiguous().t().requires_grad_()  # a transposed weight
    bias = make_tensor((13,), generator=generator).requires_grad_()
    out = _check(input, weight, bias, "gelu", torch.float32, seed, generator, name)
    assert out.is_contiguous() and out.shape == F.linear(input, weight, bias).shape


def test_a_permuted_channels_last_input_is_read_in_place(generator):
    input = _convnext_view(generator)
    weight = make_tensor((7, 24), generator=generator)
    with record_aten_ops() as names:
        fastcnn.linear(input, weight)
    assert not [name for name in names if "copy" in name or "clone" in name], names


def test_weight_gradient_reduction_in_slices_with_the_bias_in_the_same_pass(seed, generator):
    """Enough rows that the interpreter (which pretends 2 SMs) cuts the reduction over them into
    slices: fp32 partials for dw and db, each summed by one more launch, in a fixed order (run to
    run identical)."""
    rows = 300
    input = make_tensor((rows, 20), generator=generator).requires_grad_()
    weight = make_tensor((11, 20), generator=generator).requires_grad_()
    bias = make_tensor((11,), generator=generator).requires_grad_()
    _, slices = linear_kernels.weight_grad_slices(11, 20, rows, input.device)
    assert slices > 1
    grad = make_tensor((rows, 11), generator=generator)
    results = []
    for _ in range(2):
        weight.grad = bias.grad = None
        out = fastcnn.linear(input, weight, bias, activation="silu")
        with count_launches() as launched:
            out.backward(grad)
        assert launched["linear"] == 2 + 2, dict(launched)  # grad-input, grad-weight, the two sums of partials
        results.append((weight.grad.clone(), bias.grad.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*results))
    input.grad = weight.grad = bias.grad = None
    _check(input, weight, bias, "silu", torch.float32, seed, generator, "sliced")


def test_launchers_write_every_element(generator):
    """Outputs poisoned with NaN before each launch: every element is written."""
    kernels = linear_kernels
    x, w = make_tensor((37, 21), generator=generator), make_tensor((19, 21), generator=generator)
    b, dy = make_tensor((19,), generator=generator), make_tensor((37, 19), generator=generator)
    y, z = poisoned_like(dy), poisoned_like(dy)
    kernels.forward(x, w, b, y, z, kind="gelu", parameter=0.0, dot_precision="ieee")
    expected_z = x.double() @ w.double().t() + b.double()
    torch.testing.assert_close(z.double(), expected_z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), F.gelu(expected_z), rtol=1e-5, atol=1e-5)
    dx, dw, db = poisoned_like(x), poisoned_like(w), poisoned_like(b)
    kernels.input_grad(dy, None, w, dx, kind=None, parameter=0.0, from_output=False, dot_precision="ieee")
    kernels.weight_grad(dy, None, x, dw, db, kind=None, parameter=0.0, from_output=False, dot_precision="ieee")
    torch.testing.assert_close(dx.double(), dy.double() @ w.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw.double(), dy.double().t() @ x.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(db.double(), dy.double().sum(0), rtol=1e-5, atol=1e-5)


def test_autograd_keeps_what_eager_keeps(generator):
    """relu, sigmoid, tanh: the output (torch's backward takes the result); every other kind the
    pre-activation, which the forward writes beside the output; no activation: nothing more."""
    input = make_tensor((5, 8), generator=generator).requires_grad_()
    weight = make_tensor((6, 8), generator=generator).requires_grad_()
    for kind, extra in ((None, 0), ("relu", 0), ("sigmoid", 0), ("gelu", 1), ("leaky_relu", 1)):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = fastcnn.linear(input, weight, activation=kind)
        sizes = sorted(t.numel() for t in saved if t is not None)
        assert sizes.count(out.numel()) == extra + (kind in ("relu", "sigmoid")), (kind, sizes)


def test_frozen_weight_with_a_trainable_bias(seed, generator):
    input = make_tensor((6, 9), generator=generator).requires_grad_()
    weight = make_tensor((4, 9), generator=generator)
    bias = make_tensor((4,), generator=generator).requires_grad_()
    _check(input, weight, bias, "tanh", torch.float32, seed, generator, "frozen weight")
    assert weight.grad is None


@pytest.mark.parametrize("shape", [(1, 4), (), (1,), (3, 4)])
def test_bias_broadcasting(shape, seed, generator):
    """torch adds any bias that broadcasts to the output: a vector along the features in the
    epilogue (stride 0 for one value), one that varies along the rows after the GEMM."""
    input = make_tensor((3, 5), generator=generator).requires_grad_()
    weight = make_tensor((4, 5), generator=generator).requires_grad_()
    bias = make_tensor(shape, generator=generator).requires_grad_()
    _check(input, weight, bias, "relu", torch.float32, seed, generator, f"bias {shape}")


@pytest.mark.parametrize("shapes", [((0, 7), (5, 7)), ((4, 0), (5, 0)), ((4, 7), (0, 7)), ((2, 0, 7), (5, 7))])
def test_empty(shapes, generator):
    input = make_tensor(shapes[0], generator=generator).requires_grad_()
    weight = make_tensor(shapes[1], generator=generator).requires_grad_()
    bias = make_tensor(shapes[1][:1], generator=generator).requires_grad_()
    out = fastcnn.linear(input, weight, bias, activation="sigmoid")
    expected = torch.sigmoid(F.linear(input.detach(), weight.detach(), bias.detach()))
    assert out.shape == expected.shape and torch.allclose(out, expected)
    out.sum().backward()
    ref = [t.detach().clone().requires_grad_() for t in (input, weight, bias)]
    torch.sigmoid(F.linear(*ref)).sum().backward()
    for ours, theirs in zip((input, weight, bias), ref):
        assert ours.grad.shape == theirs.grad.shape and torch.allclose(ours.grad, theirs.grad, atol=1e-6)


def test_nan_and_inf_propagate_as_torch(generator):
    input = make_tensor((4, 6), generator=generator)
    input[1, 2], input[2, 3] = float("nan"), float("inf")
    weight = make_tensor((5, 6), generator=generator)
    out = fastcnn.linear(input, weight, activation="relu")
    expected = F.relu(F.linear(input, weight))
    assert torch.equal(out.isnan(), expected.isnan()) and torch.equal(out.isinf(), expected.isinf())


BAD_CALLS = {
    "0-d input": ((lambda: torch.randn(()), lambda: torch.randn(5, 4), None), "need to be at least 1D"),
    "3-d weight": ((lambda: torch.randn(3, 4), lambda: torch.randn(5, 4, 1), None), "expects a tensor with <= 2"),
    "features": ((lambda: torch.randn(3, 4), lambda: torch.randn(5, 3), None), "shapes cannot be multiplied"),
    "weight dtype": ((lambda: torch.randn(3, 4), lambda: torch.randn(5, 4).double(), None), "to have the same dtype"),
    "bias dtype": ((lambda: torch.randn(3, 4), lambda: torch.randn(5, 4), lambda: torch.randn(5).double()),
                   "must have the same dtype"),
    "bias size": ((lambda: torch.randn(3, 4), lambda: torch.randn(5, 4), lambda: torch.randn(4)),
                  "must match the existing size"),
    "bias rows": ((lambda: torch.randn(3, 4), lambda: torch.randn(5, 4), lambda: torch.randn(2, 5)),
                  "must match the existing size"),
    "bool": ((lambda: torch.ones(3, 4, dtype=torch.bool), lambda: torch.ones(5, 4, dtype=torch.bool), None),
             "not implemented for 'Bool'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_like_torch(case):
    makers, fragment = BAD_CALLS[case]
    tensors = [maker() if maker is not None else None for maker in makers]
    assert_raises_like_torch(lambda: F.linear(*tensors), lambda: fastcnn.linear(*tensors), op="linear",
                             fragment=fragment)


def test_non_tensor_arguments_raise_type_error():
    assert_raises_like_torch(lambda: F.linear([1.0], torch.randn(5, 1)), lambda: fastcnn.linear([1.0], torch.randn(5, 1)),
                             op="linear", fragment="must be Tensor", error=TypeError)
    assert_raises_like_torch(lambda: F.linear(torch.randn(2, 1), None), lambda: fastcnn.linear(torch.randn(2, 1), None),
                             op="linear", fragment="must be Tensor", error=TypeError)


def test_float64_and_integers_are_refused_with_a_type_error():
    for dtype in (torch.float64, torch.int64):
        with count_launches() as launched, pytest.raises(TypeError, match="fastcnn's kernels"):
            fastcnn.linear(torch.ones(3, 4, dtype=dtype), torch.ones(5, 4, dtype=dtype))
        assert not launched


def test_opinfo_samples(seed):
    checked = 0
    for sample in opinfo("nn.functional.linear").sample_inputs(DEVICE, torch.float32, requires_grad=True):
        out = fastcnn.linear(sample.input, *sample.args, **sample.kwargs)
        leaves = [sample.input] + [a for a in sample.args if isinstance(a, torch.Tensor)]
        references = [t.detach().double().requires_grad_() for t in leaves]
        expected = F.linear(references[0], *references[1:])
        what = f"{tuple(sample.input.shape)} {[tuple(a.shape) for a in sample.args if torch.is_tensor(a)]}"
        assert_close(out, expected, torch.float32, what=what, seed=seed, reduction_length=sample.input.shape[-1])
        if out.numel():
            grad = torch.ones_like(out)
            out.backward(grad)
            expected.backward(grad.double())
            for ours, theirs in zip(leaves, references):
                assert_close(ours.grad, theirs.grad, torch.float32, what=f"gradient {what}", seed=seed,
                             reduction_length=max(out.numel(), 1))
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("allowed", [True, False])
def test_tf32_follows_torchs_matmul_setting(allowed, monkeypatch, generator):
    """Whatever torch's matmul rule says is what the three GEMMs are launched with (forced here:
    TF32 exists only on CUDA), and the rule reads torch.backends.cuda.matmul, not cuDNN's."""
    kernels = linear_kernels
    monkeypatch.setattr(linear_op, "uses_tf32", lambda dtype, device: allowed and dtype == torch.float32)
    precisions = []
    launch = kernels.launch

    def recording_launch(autotuned, kernel, grid, args, constexprs, extents, **options):
        precisions.append((kernel.__name__, constexprs["DOT_PRECISION"]))
        return launch(autotuned, kernel, grid, args, constexprs, extents, **options)

    monkeypatch.setattr(kernels, "launch", recording_launch)
    input = make_tensor((6, 5), generator=generator).requires_grad_()
    weight = make_tensor((3, 5), generator=generator).requires_grad_()
    fastcnn.linear(input, weight).sum().backward()
    expected = "tf32" if allowed else "ieee"
    assert sorted(precisions) == [("_linear_forward_kernel", expected), ("_linear_input_grad_kernel", expected),
                                  ("_linear_weight_grad_kernel", expected)], precisions


def test_tf32_rule_is_torchs_matmul_rule(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert linear_op.uses_tf32(torch.float32, "cuda") and not linear_op.uses_tf32(torch.bfloat16, "cuda")
    assert not linear_op.uses_tf32(torch.float32, "cpu")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    assert not linear_op.uses_tf32(torch.float32, "cuda")


def test_autocast_runs_in_the_autocast_dtype(seed, generator):
    input = make_tensor((7, 9), generator=generator)
    weight = make_tensor((5, 9), generator=generator)
    bias = make_tensor((5,), generator=generator)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = fastcnn.linear(input, weight, bias, activation="gelu")
        expected_dtype = F.linear(input, weight, bias).dtype
    assert out.dtype == expected_dtype == torch.bfloat16
    assert_close(out, F.gelu(F.linear(input.double(), weight.double(), bias.double())), torch.bfloat16,
                 what="autocast", seed=seed, reduction_length=9)


def test_module_is_a_drop_in_and_convert_fuses_its_activation(seed, generator):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.GELU(), torch.nn.Linear(16, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 3))
    converted, report = fastcnn.convert(model, report=True)
    assert [type(m) for m in converted] == [fastcnn.nn.Linear, torch.nn.Identity, fastcnn.nn.Linear, torch.nn.Identity,
                                            fastcnn.nn.Linear]
    assert [m.activation for m in converted[::2]] == [("gelu", 0.0), ("relu", 0.0), None]
    assert converted.state_dict().keys() == model.state_dict().keys()
    assert not [name for name, why in report.left if name == "4"]  # a Linear with no activation after it: nothing missed
    input = make_tensor((4, 12), generator=generator)
    with count_launches() as launched:
        out = converted(input)
    assert launched["linear"] == 3 and "activation" not in launched, dict(launched)
    assert_close(out, model.double()(input.double()), torch.float32, what="converted", seed=seed, reduction_length=16)


def test_bytes_and_flops_hand_counted():
    assert linear_op.flops(8, 3, 5) == 2 * 8 * 3 * 5


@pytest.mark.every_triton
@pytest.mark.parametrize("kind", [None, "gelu", "relu", "tanh"])
@pytest.mark.parametrize("rows", [7, 300])  # one slice, and slices whose partials are summed
def test_output_scale_in_the_epilogue_and_its_gradient_in_the_weight_pass(kind, rows, seed, generator):
    """ConvNeXt's layer scale: s · act(F.linear(x, w, b)), s of shape (C, 1, 1) used per feature;
    s's gradient (the sum of dy·act(z)) comes from the weight gradient's pass."""
    input = make_tensor((rows, 13), generator=generator).requires_grad_()
    weight = make_tensor((6, 13), generator=generator).requires_grad_()
    bias = make_tensor((6,), generator=generator).requires_grad_()
    scale = make_tensor((6, 1, 1), generator=generator).requires_grad_()
    grad = make_tensor((rows, 6), generator=generator)
    with count_launches() as launched, record_aten_ops() as names:
        out = fastcnn.linear(input, weight, bias, activation=kind, output_scale=scale)
        out.backward(grad)
    assert not [name for name in names if name.startswith("aten::") and "mul" in name], names
    slices = linear_kernels.weight_grad_slices(6, 13, rows, input.device)[1]
    assert launched["linear"] == 3 + (3 if slices > 1 else 0), dict(launched)  # + the dw, db and ds sums
    leaves = [t.detach().double().requires_grad_() for t in (input, weight, bias, scale)]
    expected = TORCH_ACTIVATIONS[kind](F.linear(*leaves[:3])) * leaves[3].reshape(-1)
    expected.backward(grad.double())
    assert_close(out, expected, torch.float32, what="scaled output", seed=seed, reduction_length=13)
    for name, tensor, reference, length in (("input", input, leaves[0], 6), ("weight", weight, leaves[1], rows),
                                            ("bias", bias, leaves[2], rows), ("scale", scale, leaves[3], rows)):
        assert tensor.grad.shape == tensor.shape
        assert_close(tensor.grad, reference.grad, torch.float32, what=f"grad {name}", seed=seed,
                     reduction_length=length)


def test_an_output_scale_of_another_dtype_is_torchs_promoting_multiply(generator):
    input = make_tensor((5, 8), torch.bfloat16, generator=generator)
    weight = make_tensor((3, 8), torch.bfloat16, generator=generator)
    scale = make_tensor((3,), generator=generator)  # fp32 beside bf16: torch's mul promotes
    out = fastcnn.linear(input, weight, output_scale=scale)
    expected = F.linear(input, weight) * scale
    assert out.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-2, atol=1e-2)


def test_an_output_scale_of_the_wrong_size_is_refused():
    with count_launches() as launched, pytest.raises(RuntimeError, match="output_scale should contain 3 elements"):
        fastcnn.linear(torch.ones(2, 4), torch.ones(3, 4), output_scale=torch.ones(4))
    assert not launched


@pytest.mark.every_triton
@pytest.mark.parametrize("slopes", [1, 9])
@pytest.mark.parametrize("rows", [7, 300])  # one slice, and slices whose partials are summed
def test_prelu_in_the_epilogue_and_its_slopes_gradient_in_the_weight_pass(slopes, rows, seed, generator):
    """activation=nn.PReLU: its learnable slopes (one, or one per output feature) in the GEMM's
    epilogue and their gradient, the sum of dy·z where z <= 0, beside db in the weight pass; NaN
    and ±inf in z take torch's branch."""
    input = make_tensor((rows, 20), generator=generator).requires_grad_()
    weight = make_tensor((9, 20), generator=generator).requires_grad_()
    bias = make_tensor((9,), generator=generator).requires_grad_()
    prelu = torch.nn.PReLU(slopes).to(DEVICE)
    with torch.no_grad():
        prelu.weight.copy_(make_tensor((slopes,), generator=generator))
    with count_launches() as launched, record_aten_ops() as names:
        out = fastcnn.linear(input, weight, bias, activation=prelu)
        grad = make_tensor(out.shape, generator=generator)
        out.backward(grad)
    assert launched["linear"] >= 3 and not launched["prelu"], dict(launched)
    assert not [n for n in names if ("prelu" in n or "mm" in n) and not n.startswith("fastcnn::")], names
    tensors = (input, weight, bias, prelu.weight)
    references = [t.detach().double().requires_grad_() for t in tensors]
    expected = F.prelu(F.linear(*references[:3]), references[3])
    expected.backward(grad.double())
    assert_close(out, expected, torch.float32, what="prelu output", seed=seed, reduction_length=20)
    for name, ours, theirs in zip(("input", "weight", "bias", "slopes"), tensors, references):
        assert_close(ours.grad, theirs.grad, torch.float32, what=f"prelu grad {name}", seed=seed,
                     reduction_length=rows * 9 if name == "slopes" else rows)


def test_prelu_that_torch_applies_to_another_dim_runs_after_the_gemm(generator):
    """A 3-d output: torch's prelu takes dim 1 as its channels, so per-feature slopes are not
    fusable there: fastcnn's prelu runs after the GEMM and raises torch's error on a mismatch."""
    input = make_tensor((3, 5, 20), generator=generator)
    weight = make_tensor((5, 20), generator=generator)
    prelu = torch.nn.PReLU(5).to(DEVICE)
    with count_launches() as launched:
        out = fastcnn.linear(input, weight, activation=prelu)
    assert launched["linear"] == 1 and launched["prelu"] == 1, dict(launched)
    assert torch.allclose(out, F.prelu(F.linear(input, weight), prelu.weight), atol=1e-5)
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        fastcnn.linear(input, make_tensor((9, 20), generator=generator), activation=torch.nn.PReLU(9).to(DEVICE))


def test_module_with_a_prelu_trains_its_slopes(generator):
    module = fastcnn.nn.Linear(6, 4, activation=torch.nn.PReLU(4)).to(DEVICE)
    assert "prelu.weight" in module.state_dict() and any(p is module.prelu.weight for p in module.parameters())
    out = module(make_tensor((5, 6), generator=generator))
    out.sum().backward()
    assert module.prelu.weight.grad is not None and module.prelu.weight.grad.shape == (4,)
    # Where learned slopes cannot ride (a convolution's prologue), PReLU is refused by name.
    with pytest.raises(ValueError, match="PReLU is not supported"):
        fastcnn.batch_norm_conv2d(make_tensor((2, 3, 4, 4), generator=generator), None, None, None, None, True, 0.1,
                                  1e-5, make_tensor((2, 3, 1, 1), generator=generator), activation=torch.nn.PReLU(3))
