"""fastcnn.cross_entropy and fastcnn.nn.CrossEntropyLoss against float64 F.cross_entropy."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import DEVICE, assert_close, case_random, count_launches, make_tensor, opinfo, record_aten_ops

ON_GPU = DEVICE == "cuda"
FORBIDDEN = ("softmax", "log_softmax", "_log_softmax", "logsumexp", "nll_loss", "nll_loss2d", "nll_loss_nd",
             "cross_entropy_loss")


def reference(input, target, weight, grad_out, **options):
    leaf = input.detach().to(torch.float64).requires_grad_()
    # uint8 class indices go to torch as int64: torch's own smoothing-with-weights path rejects
    # uint8 (a gather), though the classes mean the same.
    as64 = (lambda t: None if t is None else (t.to(torch.float64) if t.is_floating_point() else t.long()))
    out = F.cross_entropy(leaf, as64(target), as64(weight), **options)
    out.backward(grad_out.to(torch.float64))
    return out, leaf.grad


def check(input, target, weight=None, *, seed, dtype=torch.float32, **options):
    input = input.detach().requires_grad_()
    original = input.detach().clone()
    with count_launches() as launched:
        out = fastcnn.cross_entropy(input, target, weight, **options)
    rows = input.numel() // input.shape[1 if input.dim() > 1 else 0]
    assert launched["cross_entropy"] == (1 if rows else 0) + (0 if options.get("reduction") == "none" else 1)
    generator = torch.Generator().manual_seed(seed + 7)
    grad_out = make_tensor(out.shape, torch.float32, generator=generator).to(out.dtype)
    expected, expected_grad = reference(input, target, weight, grad_out, **options)
    out.backward(grad_out)
    assert torch.equal(input.detach(), original), "the caller's logits were overwritten"
    assert out.dtype == dtype and out.shape == expected.shape
    classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    assert_close(out, expected, dtype, what="loss", seed=seed, reduction_length=classes)
    assert_close(input.grad, expected_grad, dtype, what="grad", seed=seed, reduction_length=classes)
    return out


def random_case(rng, generator):
    rank = rng.choice([1, 2, 2, 3, 4])
    classes = rng.choice([2, 3, 7, 10, 33, 1100])
    shape = {1: (classes,), 2: (rng.randint(1, 9), classes), 3: (rng.randint(1, 4), classes, rng.randint(1, 6)),
             4: (rng.randint(1, 3), classes, rng.randint(1, 4), rng.randint(1, 5))}[rank]
    layout = rng.choice(["contiguous", "sliced"] + (["channels_last"] if rank == 4 else []))
    input = make_tensor(shape, layout=layout, generator=generator, low=0.0, high=4.0)
    options = dict(reduction=rng.choice(["none", "mean", "sum"]),
                   label_smoothing=rng.choice([0.0, 0.0, 0.1, 0.45, 1.0]))
    weight = make_tensor((classes,), generator=generator).abs() if rng.random() < 0.5 else None
    if rng.random() < 0.3:  # class probabilities
        target = torch.softmax(make_tensor(shape, generator=generator, high=3.0), dim=1 if rank > 1 else 0)
    else:
        target_shape = (shape[0],) + shape[2:] if rank > 1 else ()
        target = torch.randint(0, classes, target_shape, generator=generator).to(DEVICE)
        ignore_index = rng.choice([-100, 0, classes - 1])
        if ignore_index != 0 or rng.random() < 0.5:
            options["ignore_index"] = ignore_index
        if target.dim() and rng.random() < 0.6:
            target.view(-1)[0] = options.get("ignore_index", -100)
        if rng.random() < 0.3:
            target = target.to(torch.uint8) if classes < 256 and options.get("ignore_index", -100) >= 0 else target
    return input, target, weight, options


@pytest.mark.parametrize("case", range(14))
def test_random_combinations(case, seed, generator):
    rng = case_random(seed, case)
    input, target, weight, options = random_case(rng, generator)
    print(f"input {tuple(input.shape)} {input.stride()}, target {tuple(target.shape)} {target.dtype}, "
          f"weight {weight is not None}, {options}")
    check(input, target, weight, seed=seed, **options)


@pytest.mark.parametrize("classes", [2, 1000, 131072])
def test_class_counts_up_to_128k(classes, seed, generator):
    input = make_tensor((3, classes), generator=generator, low=0.0, high=5.0)
    target = torch.randint(0, classes, (3,), generator=generator).to(DEVICE)
    check(input, target, seed=seed, label_smoothing=0.1)


def test_online_softmax_across_blocks(seed, generator):
    """Rows longer than one block whose maximum keeps rising (and one where it falls): the running
    sum must be rescaled each time the running maximum moves."""
    classes = 3000
    ramp = torch.arange(classes, dtype=torch.float32, device=DEVICE) * 0.02
    input = torch.stack([ramp, ramp.flip(0), ramp.roll(1500)]) + make_tensor((3, classes), generator=generator)
    target = torch.tensor([classes - 1, 5, 1700], device=DEVICE)
    check(input, target, seed=seed, label_smoothing=0.3, reduction="none")


def test_large_logits_and_minus_infinity(seed, generator):
    input = make_tensor((6, 9), generator=generator, low=0.0, high=1.0) * 1e4
    target = torch.randint(0, 9, (6,), generator=generator).to(DEVICE)
    check(input, target, seed=seed)
    input = make_tensor((5, 8), generator=generator)
    input[:, 3] = float("-inf")
    input[0, :] = float("-inf")
    input[0, 2] = 1.0  # a row with a single finite logit
    target = torch.tensor([2, 0, 1, 7, 4], device=DEVICE)
    out = check(input, target, seed=seed, reduction="none")
    assert torch.isfinite(out).all()


def test_all_ignored_and_empty_batches(generator):
    input = make_tensor((4, 5), generator=generator).requires_grad_()
    target = torch.full((4,), -100, device=DEVICE)
    for reduction in ("mean", "sum", "none"):
        out = fastcnn.cross_entropy(input, target, reduction=reduction)
        expected = F.cross_entropy(input, target, reduction=reduction)
        torch.testing.assert_close(out, expected, equal_nan=True)
    assert torch.isnan(fastcnn.cross_entropy(input, target)).item()
    for reduction in ("mean", "sum"):
        input.grad = None
        fastcnn.cross_entropy(input, target, reduction=reduction, label_smoothing=0.1).backward()
        expected_grad = torch.autograd.grad(F.cross_entropy(input, target, reduction=reduction,
                                                            label_smoothing=0.1), input)[0]
        assert torch.equal(input.grad, expected_grad) and not input.grad.any()
    empty = torch.empty(0, 5, device=DEVICE, requires_grad=True)
    no_target = torch.empty(0, dtype=torch.int64, device=DEVICE)
    for reduction in ("mean", "sum", "none"):
        out = fastcnn.cross_entropy(empty, no_target, reduction=reduction)
        torch.testing.assert_close(out, F.cross_entropy(empty, no_target, reduction=reduction), equal_nan=True)
    fastcnn.cross_entropy(empty, no_target, reduction="sum").backward()
    assert empty.grad.shape == (0, 5)


def test_opinfo_samples(seed):
    samples = list(opinfo("nn.functional.cross_entropy").sample_inputs(DEVICE, torch.float32, requires_grad=True))
    assert len(samples) >= 10
    for sample in samples:
        options = dict(sample.kwargs)
        weight = options.pop("weight", None)
        check(sample.input, sample.args[0], weight, seed=seed, **options)


BAD_INPUTS = {
    "reduction": (dict(reduction="avg"), ValueError, "reduction"),
    "smoothing_above_1": (dict(label_smoothing=1.5), RuntimeError, "label_smoothing"),
    "smoothing_negative": (dict(label_smoothing=-0.1), RuntimeError, "label_smoothing"),
    "batch_mismatch": (dict(target=torch.tensor([0, 1, 2])), ValueError, "batch_size"),
    "multi_target": (dict(target=torch.zeros(4, 1, dtype=torch.int64)), RuntimeError, "multi-target"),
    "int32_target": (dict(target=torch.zeros(4, dtype=torch.int32)), RuntimeError, "Long or Byte"),
    "float_target_wrong_shape": (dict(target=torch.rand(4, 6)), RuntimeError, "target"),
    "float_target_1d": (dict(target=torch.rand(4)), RuntimeError, "Long or Byte"),
    "weight_shape": (dict(weight=torch.rand(4)), RuntimeError, "weight"),
    "weight_dtype": (dict(weight=torch.rand(5, dtype=torch.float64)), RuntimeError, "weight type"),
    "integer_probabilities": (dict(target=torch.ones(4, 5, dtype=torch.int64)), RuntimeError, "floating point"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_before_launch(name):
    changes, error, fragment = BAD_INPUTS[name]
    arguments = dict(input=torch.randn(4, 5, device=DEVICE), target=torch.tensor([0, 1, 4, 2], device=DEVICE))
    arguments.update({k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in changes.items()})
    if name != "smoothing_negative":  # torch accepts a negative label_smoothing; fastcnn refuses it
        with pytest.raises(error):
            F.cross_entropy(**arguments)
    with count_launches() as launched, pytest.raises(error, match=fragment) as raised:
        fastcnn.cross_entropy(**arguments)
    assert "fastcnn.cross_entropy" in str(raised.value)
    assert not launched


@pytest.mark.parametrize("bad", [5, -3])
def test_out_of_range_target_raises(bad):
    input = torch.randn(4, 5, device=DEVICE)
    target = torch.tensor([0, 1, bad, 2], device=DEVICE)
    with pytest.raises(IndexError):
        F.cross_entropy(input, target)
    with pytest.raises(IndexError, match=f"Target {bad} is out of bounds"):
        fastcnn.cross_entropy(input, target)


def test_no_aten_softmax_or_nll_and_one_buffer(seed, generator):
    input = make_tensor((6, 2, 3, 4), layout="channels_last", generator=generator).requires_grad_()
    target = torch.randint(0, 2, (6, 3, 4), generator=generator).to(DEVICE)
    with record_aten_ops() as names, count_launches() as launched:
        loss = fastcnn.cross_entropy(input, target, label_smoothing=0.2)
        loss.backward()
    assert launched["cross_entropy"] == 3  # fused pass, sum, scale
    used = [name for name in names if name.startswith("aten::") and name.split("::")[-1].split(".")[0] in FORBIDDEN]
    assert not used, used
    assert [name for name in names if name.startswith("fastcnn::")] == [
        "fastcnn::cross_entropy_forward", "fastcnn::cross_entropy_backward_"], names
    assert input.grad.stride() == input.stride()  # the gradient buffer takes the logits' layout


def test_second_backward_through_the_same_graph_is_refused(generator):
    input = make_tensor((3, 4), generator=generator).requires_grad_()
    loss = fastcnn.cross_entropy(input, torch.tensor([0, 1, 3], device=DEVICE))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_module_is_a_drop_in(seed, generator):
    weight = make_tensor((6,), generator=generator).abs()
    module = fastcnn.nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.05)
    torch_module = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.05)
    assert isinstance(module, torch.nn.CrossEntropyLoss) and repr(module) == repr(torch_module)
    assert list(module.state_dict()) == list(torch_module.state_dict())
    module.load_state_dict(torch_module.state_dict())
    input = make_tensor((7, 6), generator=generator)
    target = torch.randint(0, 6, (7,), generator=generator).to(DEVICE)
    assert_close(module(input, target), torch.nn.CrossEntropyLoss(
        weight=weight.double(), ignore_index=1, label_smoothing=0.05)(input.double(), target), torch.float32,
        what="module loss", seed=seed, reduction_length=6)


def test_autocast_runs_in_float32_like_torch(generator):
    device_type = torch.device(DEVICE).type
    input = make_tensor((5, 7), torch.bfloat16, generator=generator)
    target = torch.randint(0, 7, (5,), generator=generator).to(DEVICE)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        out = fastcnn.cross_entropy(input, target)
        expected = F.cross_entropy(input, target)
    assert out.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (fp16/bf16 logits)")


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(6))
def test_half_precision_logits(dtype, case, seed, generator):
    rng = case_random(seed, case)
    input, target, weight, options = random_case(rng, generator)
    cast = (lambda t: None if t is None else t.to(dtype) if t.is_floating_point() else t)
    check(cast(input), cast(target), cast(weight), seed=seed, dtype=dtype, **options)
