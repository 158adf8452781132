"""fastcnn's pointwise losses (mse, l1, smooth L1, Huber, BCE, BCE with logits, KL divergence)
and their nn modules against float64 torch: every reduction, gradients of the input, the target
and a weight, strided and channels_last operands, broadcast targets with F's warning, torch's
clamps and NaN, mixed dtypes and autocast, empty inputs, torch's errors, a fixed-order reduction."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.kernels import pointwise_loss as loss_kernels
from fastcnn._layout import elementwise_walk
from fastcnn.testing import (DEVICE, ON_GPU, assert_close, assert_raises_like_torch, count_launches, in_layout,
                             make_tensor, poisoned_like, record_aten_ops)

# name -> (keyword arguments, how its input and target are drawn from never-zero random values)
LOSSES = {
    "mse_loss": ({}, None),
    "l1_loss": ({}, None),
    "smooth_l1_loss": ({"beta": 0.7}, None),
    "huber_loss": ({"delta": 0.6}, None),
    "binary_cross_entropy": ({}, "probabilities"),
    "binary_cross_entropy_with_logits": ({}, "logits"),
    "kl_div": ({}, "log_probabilities"),
    "kl_div log_target": ({"log_target": True}, "log_probabilities"),
}


def _operands(name, shape, generator, layout="contiguous", dtype=torch.float32):
    _, domain = LOSSES[name]
    x, t = make_tensor(shape, generator=generator), make_tensor(shape, generator=generator)
    if domain == "probabilities":
        x, t = torch.sigmoid(x), torch.sigmoid(t)
    elif domain == "logits":
        t = torch.sigmoid(t)
    elif domain == "log_probabilities":
        x = x.log_softmax(1)
        t = t.log_softmax(1) if "log_target" in name else t.softmax(1)
    return (in_layout(x.to(dtype), layout).requires_grad_(), in_layout(t.to(dtype), "contiguous").requires_grad_())


def _call(module, name, input, target, **kwargs):
    function = getattr(module, name.split()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning; tested on its own below
        return function(input, target, **LOSSES[name][0], **kwargs)


def _check(name, input, target, dtype, seed, generator, what, **kwargs):
    out = _call(fastcnn, name, input, target, **kwargs)
    grad = make_tensor(out.shape, dtype, generator=generator)
    grads = torch.autograd.grad(out, (input, target), grad)
    x, t = (v.detach().double().requires_grad_() for v in (input, target))
    expected = _call(F, name, x, t, **kwargs)
    expected_grads = torch.autograd.grad(expected, (x, t), grad.double())
    assert out.dtype == dtype, out.dtype
    length = max(1, input.numel()) if out.dim() == 0 else 1
    assert_close(out, expected, dtype, what=f"loss {what}", seed=seed, reduction_length=length)
    for which, ours, theirs in zip(("input", "target"), grads, expected_grads):
        assert_close(ours, theirs, dtype, what=f"grad {which} {what}", seed=seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_reduction_and_both_gradients_match_float64_torch(name, seed, generator):
    reductions = ("none", "mean", "sum") + (("batchmean",) if name.startswith("kl_div") else ())
    for index, reduction in enumerate(reductions):
        layout = ("sliced", "channels_last", "contiguous", "sliced")[index]
        input, target = _operands(name, (3, 5, 7, 6), generator, layout)
        with count_launches() as launched, record_aten_ops() as names:
            out = _call(fastcnn, name, input, target, reduction=reduction)
            out.backward(torch.ones_like(out))
        assert launched["pointwise_loss"] == (3 if reduction != "none" else 2), dict(launched)
        left = [n for n in names if not n.startswith("fastcnn::") and any(w in n for w in ("loss", "entropy", "kl",
                                                                                           "sub", "abs", "pow"))]
        assert not left, left
        _check(name, input.detach().requires_grad_(), target.detach().requires_grad_(), torch.float32, seed,
               generator, f"{name} {reduction} {layout}", reduction=reduction)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, seed, generator):
    for name in ("mse_loss", "binary_cross_entropy_with_logits", "kl_div log_target"):
        input, target = _operands(name, (4, 9, 11), generator, "contiguous", dtype)
        _check(name, input, target, dtype, seed, generator, f"{name} {dtype}", reduction="sum")


def test_broadcast_target_warns_and_sums_its_gradient(seed, generator):
    input = make_tensor((6, 5, 4), generator=generator).requires_grad_()
    target = make_tensor((5, 1), generator=generator).requires_grad_()
    assert not elementwise_walk((6, 5, 4), [input, target.expand(6, 5, 4), None, None]).flat
    for name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"):
        with pytest.warns(UserWarning, match="different to the input size"):
            fastcnn.mse_loss(input, target) if name == "mse_loss" else getattr(fastcnn, name)(input, target)
        for reduction in ("none", "mean"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _check(name, input, target, torch.float32, seed, generator, f"broadcast {name} {reduction}",
                       reduction=reduction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check("kl_div", input.detach().log_softmax(1).requires_grad_(), torch.rand(5, 1).requires_grad_(),
               torch.float32, seed, generator, "broadcast kl_div", reduction="sum")


def test_weights(seed, generator):
    """mse/l1 with ``weight``: Σ w·e / Σ w and the weight's own gradient; Huber's weighted mean
    over the count; BCE's weight broadcast from the last dim; BCE with logits' weight and
    pos_weight (one per class)."""
    shape = (5, 3, 8)
    for name in ("mse_loss", "l1_loss", "huber_loss"):
        for reduction in ("mean", "none", "sum"):
            input, target = _operands(name, shape, generator)
            weight = make_tensor(shape, generator=generator).abs().requires_grad_()
            out = getattr(fastcnn, name)(input, target, reduction=reduction, weight=weight)
            grad = make_tensor(out.shape, generator=generator)
            ours = torch.autograd.grad(out, (input, target, weight), grad)
            x, t, w = (v.detach().double().requires_grad_() for v in (input, target, weight))
            expected = getattr(F, name)(x, t, reduction=reduction, weight=w)
            theirs = torch.autograd.grad(expected, (x, t, w), grad.double())
            what = f"{name} weighted {reduction}"
            assert_close(out, expected, torch.float32, what=what, seed=seed, reduction_length=input.numel())
            for which, a, b in zip(("input", "target", "weight"), ours, theirs):
                assert_close(a, b, torch.float32, what=f"grad {which} {what}", seed=seed,
                             reduction_length=input.numel() if which == "weight" and reduction == "mean" else 1)
    input, target = _operands("binary_cross_entropy", shape, generator)
    weight = make_tensor((8,), generator=generator).abs()
    _check("binary_cross_entropy", input, target, torch.float32, seed, generator, "bce weight", weight=weight)
    input, target = _operands("binary_cross_entropy_with_logits", shape, generator)
    pos_weight = make_tensor((8,), generator=generator).abs()
    _check("binary_cross_entropy_with_logits", input, target, torch.float32, seed, generator,
           "bce_with_logits weights", weight=make_tensor((3, 1), generator=generator).abs(), pos_weight=pos_weight)


def test_pos_weight_with_channels_last_operands(seed, generator):
    """A broadcast pos_weight makes the walk strided while the other operands share a
    channels_last layout: outputs and gradients must be laid out as that walk writes them."""
    shape = (2, 5, 3, 4)
    input = make_tensor(shape, layout="channels_last", generator=generator).requires_grad_()
    target = torch.sigmoid(make_tensor(shape, layout="channels_last", generator=generator)).requires_grad_()
    pos_weight = make_tensor((4,), generator=generator).abs()
    for reduction in ("none", "sum"):
        _check("binary_cross_entropy_with_logits", input, target, torch.float32, seed, generator,
               f"channels_last pos_weight {reduction}", reduction=reduction, pos_weight=pos_weight)


def test_torchs_clamps_nan_and_edges(generator):
    """BCE's log clamped at -100 (its target gradient is not clamped), BCE with logits at ±inf, KL
    at a zero target, l1's zero gradient for NaN, smooth L1 with beta 0 (l1)."""
    cases = [
        ("binary_cross_entropy", torch.tensor([0.0, 1.0, 0.5, 1e-30, 1.0]), torch.tensor([1.0, 0.0, 0.5, 0.5, 1.0]),
         {}),
        ("binary_cross_entropy_with_logits", torch.tensor([float("inf"), -float("inf"), 40.0, -40.0, 0.0]),
         torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5]), {}),
        ("kl_div", torch.tensor([-0.5, -1.0, float("nan"), -2.0]), torch.tensor([0.0, 0.3, 0.1, float("nan")]), {}),
        ("l1_loss", torch.tensor([0.5, float("nan"), 1.0]), torch.tensor([0.0, 0.3, 1.0]), {}),
        ("smooth_l1_loss", torch.tensor([0.5, float("nan"), 1.0, -2.0]), torch.tensor([0.0, 0.3, 1.0, 0.0]),
         {"beta": 0.0}),
        ("huber_loss", torch.tensor([0.5, float("nan"), 3.0, -2.0]), torch.tensor([0.0, 0.3, 1.0, 0.0]), {}),
    ]
    for name, x, t, kwargs in cases:
        for reduction in ("none", "sum"):
            xs, ts = x.to(DEVICE).requires_grad_(), t.to(DEVICE).requires_grad_()
            ours = getattr(fastcnn, name)(xs, ts, reduction=reduction, **kwargs)
            ours_grads = torch.autograd.grad(ours, (xs, ts), torch.ones_like(ours))
            xr, tr = x.to(DEVICE).requires_grad_(), t.to(DEVICE).requires_grad_()
            theirs = getattr(F, name)(xr, tr, reduction=reduction, **kwargs)
            theirs_grads = torch.autograd.grad(theirs, (xr, tr), torch.ones_like(theirs))
            for what, a, b in zip(("loss", "grad input", "grad target"), (ours, *ours_grads),
                                  (theirs, *theirs_grads)):
                assert torch.equal(a.isnan(), b.isnan()), (name, reduction, what, a, b)
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True), (name, reduction, what, a, b)


def test_mixed_dtypes_take_torchs_result_dtype(generator):
    half, single = torch.float16, torch.float32
    for name, input_dtype, target_dtype in (("mse_loss", half, single), ("huber_loss", half, single),
                                            ("binary_cross_entropy_with_logits", single, half),
                                            ("kl_div", half, single), ("l1_loss", single, torch.int64)):
        input = make_tensor((3, 4), generator=generator).to(input_dtype)
        target = (make_tensor((3, 4), generator=generator).abs() * 3).to(target_dtype)
        if name == "binary_cross_entropy_with_logits":
            target = target.sigmoid()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours, theirs = getattr(fastcnn, name)(input, target), getattr(F, name)(input, target)
        assert ours.dtype == theirs.dtype, (name, ours.dtype, theirs.dtype)
        assert torch.allclose(ours.float(), theirs.float(), rtol=2e-3), (name, ours, theirs)


def test_autocast_runs_the_losses_in_float32(generator):
    input = make_tensor((4, 6), torch.bfloat16, generator=generator)
    target = make_tensor((4, 6), torch.bfloat16, generator=generator)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        for name in ("mse_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "kl_div")[:3 if ON_GPU else 4]:
            assert getattr(fastcnn, name)(input, target.sigmoid()).dtype == torch.float32, name
        if not ON_GPU:  # CPU autocast runs BCE in fp32; CUDA's refuses it (as torch)
            assert fastcnn.binary_cross_entropy(input.sigmoid(), target.sigmoid()).dtype == torch.float32


def test_empty_inputs(generator):
    for name in ("mse_loss", "binary_cross_entropy_with_logits", "kl_div"):
        input = torch.empty(0, 4, device=DEVICE, requires_grad=True)
        target = torch.empty(0, 4, device=DEVICE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for reduction in ("none", "mean", "sum"):
                ours, theirs = getattr(fastcnn, name)(input, target, reduction=reduction), getattr(F, name)(
                    input, target, reduction=reduction)
                assert ours.shape == theirs.shape and torch.equal(ours.isnan(), theirs.isnan()), (name, reduction)
                assert torch.allclose(ours, theirs, equal_nan=True)
                ours.sum().backward()
                assert input.grad.shape == input.shape
                input.grad = None


def test_kl_div_warns_for_mean_and_legacy_arguments_resolve(generator):
    input, target = _operands("kl_div", (4, 5), generator)
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        fastcnn.kl_div(input, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fastcnn.mse_loss(input, target, size_average=False)
        theirs = F.mse_loss(input, target, size_average=False)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs)


def test_reduction_is_deterministic_across_partials(generator):
    """More blocks than partials: each program walks several blocks, and the finish adds the
    partials in a fixed order, so two runs are bit-identical."""
    numel = loss_kernels.BLOCK * (loss_kernels.MAX_PARTIALS + 3) + 17
    input, target = make_tensor((numel,), generator=generator), make_tensor((numel,), generator=generator)
    first, second = fastcnn.mse_loss(input, target), fastcnn.mse_loss(input, target)
    assert torch.equal(first, second)
    assert_close(first, F.mse_loss(input.double(), target.double()), torch.float32, what="many partials", seed=0,
                 reduction_length=numel)


def test_launchers_write_every_element(generator):
    shape = (5, 37)
    x, t = make_tensor(shape, generator=generator), make_tensor(shape, generator=generator)
    walk = elementwise_walk(shape, [x, t, None, None])
    out, dx, dt = poisoned_like(x), poisoned_like(x), poisoned_like(x)
    loss_kernels.forward(walk, "huber", x, t, None, None, 0.5, out, None, None, reduce=False, weight_total=False,
                         check_range=False)
    grad = make_tensor(shape, generator=generator)
    loss_kernels.backward(walk, "huber", grad, x, t, None, None, 0.5, None, None, dx, dt, None, reduce=False,
                          weight_total=False)
    x64, t64 = x.double().requires_grad_(), t.double().requires_grad_()
    expected = F.huber_loss(x64, t64, reduction="none", delta=0.5)
    gx, gt = torch.autograd.grad(expected, (x64, t64), grad.double())
    for what, actual, reference in (("loss", out, expected), ("dx", dx, gx), ("dt", dt, gt)):
        assert_close(actual, reference, torch.float32, what=what, seed=0)


def _bad(loss, make, kwargs=None):
    return loss, make, kwargs or {}


BAD_CALLS = {
    "reduction": (_bad("mse_loss", lambda: (torch.randn(3), torch.randn(3)), {"reduction": "average"}),
                  "is not a valid value for reduction", ValueError),
    "shapes": (_bad("l1_loss", lambda: (torch.randn(3, 2), torch.randn(4))), "must match the size", RuntimeError),
    "beta": (_bad("smooth_l1_loss", lambda: (torch.randn(3), torch.randn(3)), {"beta": -1.0}),
             "does not support negative values for beta", RuntimeError),
    "delta": (_bad("huber_loss", lambda: (torch.randn(3), torch.randn(3)), {"delta": 0.0}),
              "does not support non-positive values for delta", RuntimeError),
    "bce size": (_bad("binary_cross_entropy", lambda: (torch.rand(3, 1), torch.rand(3))),
                 "is deprecated", ValueError),
    "bce dtype": (_bad("binary_cross_entropy", lambda: (torch.rand(3), torch.rand(3).double())),
                  "Found dtype Double but expected Float", RuntimeError),
    "bce weight": (_bad("binary_cross_entropy", lambda: (torch.rand(3), torch.rand(3)), {"weight": torch.rand(2)}),
                   "Attempting to broadcast a dimension", RuntimeError),
    "bce weight grad": (_bad("binary_cross_entropy", lambda: (torch.rand(3), torch.rand(3)),
                             {"weight": torch.rand(3, requires_grad=True)}), "is not differentiable", RuntimeError),
    "logits size": (_bad("binary_cross_entropy_with_logits", lambda: (torch.rand(3, 1), torch.rand(3))),
                    "must be the same as input size", ValueError),
    "pos_weight": (_bad("binary_cross_entropy_with_logits", lambda: (torch.rand(3, 2), torch.rand(3, 2)),
                        {"pos_weight": torch.rand(3)}), "must match the size", RuntimeError),
    "kl integers": (_bad("kl_div", lambda: (torch.randn(3), torch.arange(3))), "Integral inputs not supported",
                    RuntimeError),
    "mse integers": (_bad("mse_loss", lambda: (torch.arange(3), torch.arange(3))), "not implemented for",
                     NotImplementedError),
    "weight size": (_bad("mse_loss", lambda: (torch.randn(3, 2), torch.randn(3, 2)), {"weight": torch.rand(2)}),
                    "Weights and input must have the same size", ValueError),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_like_torch(case):
    (loss, make, kwargs), fragment, error = BAD_CALLS[case]
    input, target = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exception = assert_raises_like_torch(lambda: getattr(F, loss)(input, target, **kwargs),
                                             lambda: getattr(fastcnn, loss)(input, target, **kwargs),
                                             op=loss, fragment=fragment, error=error)
    assert exception is not None


def test_bce_refuses_probabilities_outside_0_1_after_its_launch():
    """The range is checked by the kernel and read back once: torch's RuntimeError, in its words."""
    for bad in (1.5, -0.25, float("nan")):
        input, target = torch.tensor([0.5, bad, 0.25], device=DEVICE), torch.tensor([1.0, 0.0, 1.0], device=DEVICE)
        with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1") as torchs:
            F.binary_cross_entropy(input, target)
        with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1") as ours:
            fastcnn.binary_cross_entropy(input, target)
        assert str(ours.value).startswith("fastcnn.binary_cross_entropy: ") and torchs.value is not None


def test_modules_are_drop_ins_and_convert_swaps_them(seed, generator):
    modules = [torch.nn.MSELoss(), torch.nn.L1Loss(reduction="sum"), torch.nn.SmoothL1Loss(beta=0.5),
               torch.nn.HuberLoss(delta=2.0), torch.nn.BCELoss(), torch.nn.BCEWithLogitsLoss(
                   pos_weight=torch.full((6,), 2.0)), torch.nn.KLDivLoss(reduction="batchmean", log_target=True)]
    converted = fastcnn.convert(torch.nn.ModuleList(modules))
    assert [type(m).__name__ for m in converted] == [type(m).__name__ for m in modules]
    assert all(type(m).__module__ == "fastcnn.nn" for m in converted)
    for ours, theirs in zip(converted, modules):
        input, target = torch.rand(4, 6, device=DEVICE), torch.rand(4, 6, device=DEVICE)
        with count_launches() as launched:
            out = ours(input, target)
        assert launched["pointwise_loss"] == 2, (type(ours), dict(launched))
        assert_close(out, theirs(input.double(), target.double()), torch.float32, what=type(ours).__name__,
                     seed=seed, reduction_length=24)


def test_bytes_hand_counted():
    from fastcnn.ops import pointwise_loss

    assert pointwise_loss.bytes_moved(10, 4) == 200 and pointwise_loss.bytes_moved(10, 2, backward=False) == 40
