"""fastcnn.prelu and fastcnn.nn.PReLU against float64 torch: one slope or one per channel, every
layout and rank, NaN as torch, the slope's gradient summed in slices in a fixed order, empty
input, torch's errors, OpInfo samples and convert's swap."""
import copy

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.kernels import prelu as prelu_kernels
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, assert_raises_like_torch, count_launches, gpu_only,
                             make_tensor, opinfo, poisoned_like, record_aten_ops, relative_error, same_layout)


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


# ----------------------------------------------------------------------------- fused into the norms
# activation=nn.PReLU(...) of each norm: (launch op name, fastcnn call, float64 torch reference
# without the PReLU, input shape, channels torch's prelu sees). Each call takes (x, w, b,
# activation) and each reference (x, w, b) in float64; the weight and bias are C values.
def _instance(use_input_stats):
    def run(x, w, b, activation):
        running = (torch.linspace(-0.5, 0.5, x.shape[1], device=x.device), torch.linspace(0.5, 2.0, x.shape[1],
                                                                                         device=x.device))
        return fastcnn.instance_norm(x, *running, w, b, use_input_stats, activation=activation)

    def reference(x, w, b):
        running = (torch.linspace(-0.5, 0.5, x.shape[1], dtype=torch.float64, device=x.device),
                   torch.linspace(0.5, 2.0, x.shape[1], dtype=torch.float64, device=x.device))
        return F.instance_norm(x, *running, w, b, use_input_stats)
    return run, reference


def _batch(training, residual=None):
    def running(x, dtype):
        return (torch.linspace(-0.5, 0.5, x.shape[1], dtype=dtype, device=x.device),
                torch.linspace(0.5, 2.0, x.shape[1], dtype=dtype, device=x.device))

    def run(x, w, b, activation):
        extra = {} if residual is None else dict(residual=residual.to(x.dtype))
        return fastcnn.batch_norm(x, *running(x, torch.float32), w, b, training, activation=activation, **extra)

    def reference(x, w, b):
        out = F.batch_norm(x, *running(x, torch.float64), w, b, training)
        return out if residual is None else out + residual.double()
    return run, reference


_RESIDUAL = make_tensor((3, 6, 5, 7), generator=torch.Generator().manual_seed(5))
FUSED_NORMS = {
    "batch_norm training": ("batch_norm", *_batch(True), (3, 6, 5, 7), 6),
    "batch_norm eval": ("batch_norm", *_batch(False), (3, 6, 5, 7), 6),
    "batch_norm 2-d": ("batch_norm", *_batch(True), (9, 6), 6),
    "batch_norm + residual training": ("batch_norm", *_batch(True, _RESIDUAL), (3, 6, 5, 7), 6),
    "batch_norm + residual eval": ("batch_norm", *_batch(False, _RESIDUAL), (3, 6, 5, 7), 6),
    "group_norm": ("group_norm", lambda x, w, b, a: fastcnn.group_norm(x, 3, w, b, activation=a),
                   lambda x, w, b: F.group_norm(x, 3, w, b), (3, 6, 5, 7), 6),
    "instance_norm training": ("group_norm", *_instance(True), (3, 6, 5, 7), 6),
    "instance_norm eval": ("group_norm", *_instance(False), (3, 6, 5, 7), 6),
    "layer_norm 2-d": ("layer_norm", lambda x, w, b, a: fastcnn.layer_norm(x, (6,), w, b, activation=a),
                       lambda x, w, b: F.layer_norm(x, (6,), w, b), (11, 6), 6),
    "layer_norm2d": ("layer_norm", lambda x, w, b, a: fastcnn.layer_norm2d(x, w, b, activation=a),
                     lambda x, w, b: F.layer_norm(x.movedim(1, -1), (6,), w, b, 1e-6).movedim(-1, 1), (3, 6, 5, 7), 6),
}


def _fused_norm_case(name, slopes, layout, generator):
    op, run, reference, shape, channels = FUSED_NORMS[name]
    input = make_tensor(shape, layout=layout if len(shape) == 4 else "contiguous", generator=generator)
    weight, bias = (make_tensor((6,), generator=generator).requires_grad_() for _ in range(2))
    prelu = torch.nn.PReLU(1 if slopes == "one" else channels).to(DEVICE)
    with torch.no_grad():
        prelu.weight.copy_(make_tensor(prelu.weight.shape, generator=generator))
    return op, run, reference, input.requires_grad_(), weight, bias, prelu


@pytest.mark.every_triton
@pytest.mark.parametrize("slopes", ["one", "per channel"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", sorted(FUSED_NORMS))
def test_prelu_fused_into_the_norms_matches_float64_torch(name, layout, slopes, seed, generator):
    """The slopes are read in the norm's apply pass and their gradient, the sum of dy·z where z <= 0
    per channel, rides in the backward's sums pass: no prelu launch, no ATen prelu."""
    op, run, reference, input, weight, bias, prelu = _fused_norm_case(name, slopes, layout, generator)
    with count_launches() as launched, record_aten_ops() as names:
        out = run(input, weight, bias, prelu)
        grad = make_tensor(out.shape, generator=generator)
        out.backward(grad)
    assert launched[op] >= 2 and not launched["prelu"], dict(launched)
    assert not [n for n in names if "prelu" in n or "norm" in n and not n.startswith("fastcnn::")], names
    leaves = [t.detach().double().requires_grad_() for t in (input, weight, bias, prelu.weight)]
    expected = F.prelu(reference(*leaves[:3]), leaves[3])
    expected.backward(grad.double())
    assert_close(out, expected, torch.float32, what=f"{name} output", seed=seed)
    per_slope = input.numel() // prelu.weight.numel()
    for what, ours, theirs in zip(("input", "weight", "bias", "slopes"), (input, weight, bias, prelu.weight), leaves):
        assert_close(ours.grad, theirs.grad, torch.float32, what=f"{name} grad {what}", seed=seed,
                     reduction_length=per_slope if what == "slopes" else input.numel() // 6)


@pytest.mark.parametrize("name", ["batch_norm training", "batch_norm + residual training", "group_norm",
                                  "layer_norm2d"])
def test_fused_slopes_gradient_is_deterministic_and_nan_takes_torchs_branch(name, generator):
    op, run, reference, input, weight, bias, prelu = _fused_norm_case(name, "per channel", "channels_last", generator)
    grads = []
    for _ in range(2):
        prelu.weight.grad = None
        run(input, weight, bias, prelu).backward(torch.ones(input.shape, device=DEVICE))
        grads.append(prelu.weight.grad.clone())
    assert torch.equal(*grads)
    # A NaN z (from a NaN input, an eval norm's ±inf) takes the slope's branch, as torch's ``z > 0`` sends it.
    with torch.no_grad():
        input[1, 2, 0, 0] = float("nan")
    for tensor in (input, weight, bias, prelu.weight):
        tensor.grad = None
    out = run(input, weight, bias, prelu)
    out.backward(torch.ones_like(out))
    leaves = [t.detach().double().requires_grad_() for t in (input, weight, bias, prelu.weight)]
    expected = F.prelu(reference(*leaves[:3]), leaves[3])
    expected.backward(torch.ones_like(expected))
    for ours, theirs in ((out, expected), *((t.grad, leaf.grad) for t, leaf in zip((input, prelu.weight),
                                                                                    (leaves[0], leaves[3])))):
        assert torch.equal(ours.isnan(), theirs.isnan()), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_prelu_in_half_precision(dtype, seed, generator):
    """fp16/bf16 input with its slopes in the same dtype (torch's prelu refuses to promote), fp32
    norm parameters; the slopes' gradient in their dtype."""
    input = make_tensor((4, 6, 5, 7), dtype, layout="channels_last", generator=generator).requires_grad_()
    prelu = torch.nn.PReLU(6).to(DEVICE, dtype)
    norm = fastcnn.nn.BatchNorm2dAct(6, activation=prelu).to(DEVICE)
    out = norm(input)
    grad = make_tensor(out.shape, dtype, generator=generator)
    out.backward(grad)
    reference = torch.nn.BatchNorm2d(6).to(DEVICE).double()
    leaves = [t.detach().double().requires_grad_() for t in (input, prelu.weight)]
    expected = F.prelu(reference(leaves[0]), leaves[1])
    expected.backward(grad.double())
    assert out.dtype == dtype and prelu.weight.grad.dtype == dtype
    assert_close(out, expected, dtype, what="output", seed=seed)
    assert_close(input.grad, leaves[0].grad, dtype, what="grad input", seed=seed, reduction_length=140)
    assert_close(prelu.weight.grad, leaves[1].grad, dtype, what="grad slopes", seed=seed, reduction_length=140)


@pytest.mark.parametrize("module_type, arguments", [
    (fastcnn.nn.BatchNorm2dAct, (6,)), (fastcnn.nn.BatchNorm2d, (6,)), (fastcnn.nn.GroupNorm, (3, 6)),
    (fastcnn.nn.InstanceNorm2d, (6,)), (fastcnn.nn.LayerNorm2d, (6,))])
def test_norm_modules_keep_the_prelu_as_a_submodule_and_train_its_slopes(module_type, arguments, seed, generator):
    prelu = torch.nn.PReLU(6).to(DEVICE)
    module = module_type(*arguments, activation=prelu).to(DEVICE)
    assert module.prelu is prelu and "prelu.weight" in module.state_dict() and "prelu" in repr(module)
    assert sum(p is prelu.weight for p in module.parameters()) == 1
    input = make_tensor((2, 6, 5, 4), generator=generator)
    with count_launches() as launched:
        out = module(input)
        out.sum().backward()
    assert not launched["prelu"] and prelu.weight.grad is not None and prelu.weight.grad.shape == (6,)
    plain = (torch.nn.BatchNorm2d(6) if module_type in (fastcnn.nn.BatchNorm2dAct, fastcnn.nn.BatchNorm2d)
             else torch.nn.GroupNorm(*arguments) if module_type is fastcnn.nn.GroupNorm
             else torch.nn.InstanceNorm2d(6) if module_type is fastcnn.nn.InstanceNorm2d else None)
    if plain is not None:  # the reference: torch's norm then torch's prelu, one run in float64
        plain = plain.to(DEVICE).double()
        assert_close(out, F.prelu(plain(input.double()), prelu.weight.detach().double()), torch.float32,
                     what=f"{module_type.__name__} output", seed=seed)


def test_prelu_norm_before_a_convolution_or_pool_runs_unfused(seed, generator):
    """A PReLU's slopes are not read in a convolution's or a max-pool's prologue: those fused
    entry points run the norm on its own (and the functional that would fuse refuses PReLU)."""
    norm = fastcnn.nn.BatchNorm2dAct(4, activation=torch.nn.PReLU(4)).to(DEVICE)
    conv = fastcnn.nn.Conv2d(4, 5, 3).to(DEVICE)
    pool = fastcnn.nn.MaxPool2d(2)
    input = make_tensor((2, 4, 7, 6), generator=generator)
    with count_launches() as launched:
        out = fastcnn.nn.batch_norm_into_conv2d(input, norm, conv)
        pooled = fastcnn.nn.batch_norm_into_max_pool2d(input, norm, pool)
    assert launched["batch_norm"] >= 2 and launched["conv2d"] and launched["max_pool2d"], dict(launched)
    with torch.no_grad():
        assert_close(out, conv(norm(input)), torch.float32, what="conv", seed=seed, reduction_length=36)
        assert_close(pooled, pool(norm(input)), torch.float32, what="pool", seed=seed)
    with pytest.raises(ValueError, match="PReLU"):
        fastcnn.batch_norm_conv2d(input, None, None, None, None, True, 0.1, 1e-5, conv.weight,
                                  activation=torch.nn.PReLU(4))
    # convert fuses a torch model's BatchNorm2d → PReLU and keeps that pair out of the conv's prologue.
    class Stem(torch.nn.Module):  # a forward of its own, so that convert traces it past the Sequential
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.PReLU(4), torch.nn.Conv2d(4, 5, 3))

        def forward(self, input):
            return self.body(input)

    converted, report = fastcnn.convert(Stem().to(DEVICE), report=True)
    assert "PReLU's learnable slopes are not read in a convolution's prologue" in dict(report.left)["body.0"], report
    assert converted.body[0].fuses_slopes and type(converted.body[1]) is fastcnn.nn.FusedPReLU


NORM_PRELU_ERRORS = {
    "channels": (lambda: torch.nn.PReLU(5), "Mismatch of parameter numbers"),
    "dtype": (lambda: torch.nn.PReLU(6).double(), "Type promoting not supported"),
}


@pytest.mark.parametrize("case", sorted(NORM_PRELU_ERRORS))
@pytest.mark.parametrize("norm", ["batch_norm training", "group_norm", "layer_norm2d"])
def test_fused_prelu_raises_torchs_errors_before_any_launch(norm, case, generator):
    _, run, reference, input, weight, bias, _ = _fused_norm_case(norm, "one", "contiguous", generator)
    make, fragment = NORM_PRELU_ERRORS[case]
    prelu = make().to(DEVICE)
    with pytest.raises(RuntimeError) as theirs:  # torch's prelu of the norm's output (shaped and typed as the input)
        F.prelu(input.detach(), prelu.weight)
    with count_launches() as launched, pytest.raises(RuntimeError, match=fragment) as ours:
        run(input, weight, bias, prelu)
    assert fragment in str(theirs.value) and not sum(launched.values()), (str(ours.value), dict(launched))


def test_fused_prelu_on_an_empty_batch(generator):
    input = torch.empty(0, 6, 3, 4, device=DEVICE, requires_grad=True)
    prelu = torch.nn.PReLU(6).to(DEVICE)
    running = (torch.zeros(6, device=DEVICE), torch.ones(6, device=DEVICE))
    out = fastcnn.batch_norm(input, *running, training=False, activation=prelu)
    out.sum().backward()
    assert out.shape == input.shape and torch.equal(prelu.weight.grad, torch.zeros(6, device=DEVICE))


# ----------------------------------------------------------------------------- fused by convert
class _PReLUBlock(torch.nn.Module):
    """A face-recognition ResNet's pattern in a forward of its own (convert's traced path): conv →
    BN → PReLU, conv → BN + identity → PReLU, and an embedding head Linear → PReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.prelu1 = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), \
            torch.nn.PReLU(6)
        self.conv2, self.bn2, self.prelu2 = torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.BatchNorm2d(6), \
            torch.nn.PReLU()
        self.fc, self.head_prelu = torch.nn.Linear(6, 5), torch.nn.PReLU(5)

    def forward(self, input):
        out = self.prelu1(self.bn1(self.conv1(input)))
        out = self.prelu2(self.bn2(self.conv2(out)) + out)
        return self.head_prelu(self.fc(out.mean((2, 3))))


def _with_random_slopes(model, generator):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.PReLU):
                module.weight.copy_(make_tensor(module.weight.shape, generator=generator))
    return model.to(DEVICE)


@pytest.mark.parametrize("form", ["forward", "sequential"])
def test_convert_fuses_prelu_keeping_the_module_and_its_state_dict_keys(form, seed, generator):
    """The PReLU stays where it was (a checkpoint loads either way) and the norm or Linear before
    it reads its slopes: one training step of the converted model matches the original, the
    slopes' gradients land on the PReLU's own parameters, and no prelu kernel runs."""
    model = _with_random_slopes(_PReLUBlock() if form == "forward" else torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.PReLU(6), torch.nn.Conv2d(6, 4, 1),
        torch.nn.GroupNorm(2, 4), torch.nn.PReLU()), generator)
    converted, report = fastcnn.convert(model, report=True)
    assert converted.state_dict().keys() == model.state_dict().keys()
    converted.load_state_dict(model.state_dict())
    fused = [name for name, how in report.fused if "PReLU" in how or "prelu" in how]
    assert len(fused) == (3 if form == "forward" else 2), report
    input = make_tensor((2, 3, 9, 8), generator=generator)
    with count_launches() as launched, record_aten_ops() as names:
        out = converted(input)
        out.backward(torch.ones_like(out))
    assert not launched["prelu"] and not [n for n in names if "prelu" in n], (dict(launched), names)
    reference = copy.deepcopy(model).double()
    expected = reference(input.double())
    expected.backward(torch.ones_like(expected))
    assert_close(out, expected, torch.float32, what=f"{form} output", seed=seed, reduction_length=54)
    ours, theirs = dict(converted.named_parameters()), dict(reference.named_parameters())
    assert ours.keys() == theirs.keys()
    for name in ours:
        if name in ("conv1.bias", "conv2.bias", "0.bias"):  # a bias before a batch norm: a zero gradient
            assert ours[name].grad.abs().max() < 1e-4 and theirs[name].grad.abs().max() < 1e-12, name
            continue
        assert_close(ours[name].grad, theirs[name].grad, torch.float32, what=f"{form} grad {name}", seed=seed,
                     reduction_length=2 * 9 * 8 * 6)
    # A copy of the converted model reads its own PReLU's slopes.
    copied = copy.deepcopy(converted)
    slopes = [m for m in copied.modules() if isinstance(m, torch.nn.PReLU)]
    with torch.no_grad():
        for module in slopes:
            module.weight.fill_(0.0)
        assert not torch.equal(copied(input), converted(input).detach())
        assert torch.equal(converted(input), out.detach())


# ----------------------------------------------------------------------------- under torch.autocast
def _autocast_pair(make, input, generator):
    """(fastcnn's output, torch's output) of ``make(activation)`` under CPU autocast (bf16), with
    the same PReLU's slopes, and the slopes' gradients of each."""
    prelu = torch.nn.PReLU(6).to(DEVICE)
    with torch.no_grad():
        prelu.weight.copy_(make_tensor((6,), generator=generator))
    twin = copy.deepcopy(prelu)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        ours = make(prelu, True)
        theirs = make(twin, False)
    ours.float().sum().backward()
    theirs.float().sum().backward()
    return ours, theirs, prelu.weight.grad, twin.weight.grad


@pytest.mark.parametrize("input_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("where", ["prelu", "batch_norm", "group_norm", "layer_norm2d", "linear"])
def test_autocast_runs_prelu_in_the_autocast_dtype_as_torch(where, input_dtype, seed, generator):
    """prelu is one of autocast's lower-precision ops: torch casts its input and slopes to the
    autocast dtype. Fused, the slopes are cast (the norm's output already in that dtype), or prelu
    runs after the op that would have fused it (its output in another dtype, cast down as torch does)."""
    shape = (4, 6) if where == "linear" else (2, 6, 5, 4)
    input = make_tensor(shape, input_dtype, generator=generator)
    weight = make_tensor((6, 6), generator=generator)

    def make(prelu, ours):
        if where == "prelu":
            return (fastcnn.prelu if ours else F.prelu)(input, prelu.weight)
        if where == "linear":
            return fastcnn.linear(input, weight, activation=prelu) if ours else prelu(F.linear(input, weight))
        if where == "batch_norm":
            return (fastcnn.batch_norm(input, None, None, training=True, activation=prelu) if ours
                    else prelu(F.batch_norm(input, None, None, training=True)))
        if where == "group_norm":
            return fastcnn.group_norm(input, 3, activation=prelu) if ours else prelu(F.group_norm(input, 3))
        return (fastcnn.layer_norm2d(input, activation=prelu) if ours
                else prelu(F.layer_norm(input.movedim(1, -1), (6,), eps=1e-6).movedim(-1, 1)))

    with count_launches() as launched:
        ours, theirs, our_grad, their_grad = _autocast_pair(make, input, generator)
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    assert our_grad.dtype == their_grad.dtype == torch.float32
    assert relative_error(ours, theirs) < 2e-2 and relative_error(our_grad, their_grad) < 2e-2, seed
    assert sum(launched.values()) and all(op in ("prelu", "batch_norm", "group_norm", "layer_norm", "linear")
                                          for op in launched), dict(launched)


def test_fused_prelu_norms_compile_without_graph_breaks(seed, generator):
    """torch.compile(fullgraph=True) of a block of norms whose PReLUs are fused (the slopes an
    operand of the norms' operators, their gradient an output): eager's values and gradients."""
    block = torch.nn.Sequential(fastcnn.nn.BatchNorm2dAct(6, activation=torch.nn.PReLU(6)),
                                fastcnn.nn.GroupNorm(3, 6, activation=torch.nn.PReLU()),
                                fastcnn.nn.LayerNorm2d(6, activation=torch.nn.PReLU(6))).to(DEVICE)
    _with_random_slopes(block, generator)
    twin = copy.deepcopy(block)
    input = make_tensor((2, 6, 5, 4), layout="channels_last", generator=generator)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    for model in (block, compiled):
        model(input).square().sum().backward()
    assert_close(compiled(input), block(input).detach().double(), torch.float32, what="compiled output", seed=seed)
    for (name, ours), theirs in zip(block.named_parameters(), twin.parameters()):
        assert_close(theirs.grad, ours.grad.double(), torch.float32, what=f"compiled grad {name}", seed=seed,
                     reduction_length=40)



@gpu_only("CUDA's autocast runs group and layer norm in fp32")
@pytest.mark.parametrize("form", ["module", "pair"])
@pytest.mark.parametrize("norm", ["group_norm", "layer_norm", "layer_norm2d"])
def test_norms_cuda_autocast_runs_in_fp32_prelu_after_them_in_the_autocast_dtype(norm, form, seed, generator):
    """The norms CUDA's autocast runs in fp32: prelu follows in the autocast dtype, as torch's
    norm → prelu, its slopes given as a module or as ("prelu", weight) alike."""
    input = make_tensor((2, 6, 5, 4), torch.float16, generator=generator)
    prelu = torch.nn.PReLU(1).to(DEVICE)
    activation = prelu if form == "module" else ("prelu", prelu.weight)
    ours = {"group_norm": lambda: fastcnn.group_norm(input, 3, activation=activation),
            "layer_norm": lambda: fastcnn.layer_norm(input, (4,), activation=activation),
            "layer_norm2d": lambda: fastcnn.layer_norm2d(input, activation=activation)}[norm]
    theirs = {"group_norm": lambda: prelu(F.group_norm(input, 3)),
              "layer_norm": lambda: prelu(F.layer_norm(input, (4,))),
              "layer_norm2d": lambda: prelu(F.layer_norm(input.movedim(1, -1), (6,), eps=1e-6).movedim(-1, 1))}[norm]
    with torch.autocast("cuda", dtype=torch.float16):
        out, expected = ours(), theirs()
    assert out.dtype == expected.dtype == torch.float16
    assert_close(out, expected.double(), torch.float16, what=f"{norm} {form}", seed=seed)
