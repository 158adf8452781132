"""fastcnn.cross_entropy and fastcnn.nn.CrossEntropyLoss against float64 F.cross_entropy."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import (DEVICE, assert_close, assert_raises_like_torch, case_random, count_launches, gpu_only,
                             make_tensor, opinfo, record_aten_ops, strided_copy)

FORBIDDEN = ("softmax", "log_softmax", "_log_softmax", "logsumexp", "nll_loss", "nll_loss2d", "nll_loss_nd",
             "cross_entropy_loss")


def as64(tensor):
    """Weights and probabilities in float64; uint8 class indices as int64 (torch's own
    smoothing-with-weights path rejects uint8, a gather, though the classes mean the same)."""
    return None if tensor is None else (tensor.to(torch.float64) if tensor.is_floating_point() else tensor.long())


def reference(input, target, weight, grad_out, **options):
    leaf = input.detach().to(torch.float64).requires_grad_()
    out = F.cross_entropy(leaf, as64(target), as64(weight), **options)
    out.backward(grad_out.to(torch.float64))
    return out, leaf.grad


def fp32_rounding_floors(input, target, weight, grad_out, **options):
    """Error norms (loss, grad) that fp32 arithmetic cannot beat, torch's included.

    Each row's loss is a sum of lse(x) − x_c with non-negative coefficients (class weight,
    target probability, smoothing), and each rounds at about ε·(|lse| + max|x|). A confident row's
    loss (p_target → 1) is far smaller than its logits, so that absolute error is far above the
    loss's relative tolerance (seed 996506398: loss 0.0039 from logits near 4, off by 1e-7). The
    gradient w·(p − q) inherits it: p = exp(x − lse) carries the same absolute error in its
    exponent. The coefficients' sum per row is the loss at uniform logits over log C, and 'mean'
    divides by a constant of the targets alone, so both come from torch at zero logits."""
    classes = input.shape[1 if input.dim() > 1 else 0]
    if classes < 2:
        return 0.0, 0.0
    logits = input.detach().to(torch.float64)
    dim = 1 if logits.dim() > 1 else 0
    finite = torch.isfinite(logits)  # a -inf logit has p = 0 exactly and adds no error
    magnitude = (torch.logsumexp(logits, dim).abs()
                 + torch.where(finite, logits.abs(), 0.0).amax(dim)).nan_to_num(nan=0.0, posinf=0.0)
    uniform = torch.zeros_like(logits)
    common = {k: v for k, v in options.items() if k != "reduction"}
    uniform_loss = (lambda reduction: F.cross_entropy(uniform, as64(target), as64(weight), reduction=reduction,
                                                      **common))
    per_row = 4 * torch.finfo(torch.float32).eps * magnitude * uniform_loss("none") / math.log(classes)
    reduction = options.get("reduction", "mean")
    if reduction == "mean":
        total = uniform_loss("sum")
        per_row = per_row * (uniform_loss("mean") / total if total > 0 else 0.0)
    loss_floor = per_row.norm() if reduction == "none" else per_row.sum()
    grad_floor = (per_row * grad_out.detach().to(torch.float64).abs()).norm()
    return loss_floor.item(), grad_floor.item()


def check(input, target, weight=None, *, seed, dtype=torch.float32, loss_dtype=None, **options):
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
    loss_dtype = loss_dtype or dtype
    assert out.dtype == loss_dtype and out.shape == expected.shape and input.grad.dtype == dtype
    classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    loss_floor, grad_floor = fp32_rounding_floors(input, target, weight, grad_out, **options)
    # The loss is computed in fp32 whatever it is stored in (a float64 target promotes it to float64).
    assert_close(out, expected, torch.float32 if loss_dtype == torch.float64 else loss_dtype, what="loss", seed=seed,
                 reduction_length=classes, error_floor=loss_floor)
    assert_close(input.grad, expected_grad, dtype, what="grad", seed=seed, reduction_length=classes,
                 error_floor=grad_floor)
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
    weight = (make_tensor((classes,), layout=rng.choice(["contiguous", "sliced"]), generator=generator).abs_()
              if rng.random() < 0.5 else None)
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
        if target.dim() and rng.random() < 0.3:
            target = strided_copy(target)
    return input, target, weight, options


@pytest.mark.every_triton
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
    # name: (changed arguments, exception, words of torch's message that ours repeats)
    "reduction": (dict(reduction="avg"), ValueError, "avg is not a valid value for reduction"),
    "smoothing_above_1": (dict(label_smoothing=1.5), RuntimeError, "label_smoothing must be between 0.0 and 1.0"),
    "batch_mismatch": (dict(target=torch.tensor([0, 1, 2])), ValueError,
                       "Expected input batch_size (4) to match target batch_size (3)."),
    "multi_target": (dict(target=torch.zeros(4, 1, dtype=torch.int64)), RuntimeError,
                     "0D or 1D target tensor expected, multi-target not supported"),
    "int32_target": (dict(target=torch.zeros(4, dtype=torch.int32)), RuntimeError,
                     "expected target dtype to be Long or Byte, but got Int"),
    "float_target_wrong_shape": (dict(target=torch.rand(4, 6)), RuntimeError, "multi-target not supported"),
    "float_target_1d": (dict(target=torch.rand(4)), RuntimeError, "expected target dtype to be Long or Byte, but got Float"),
    "weight_shape": (dict(weight=torch.rand(4)), RuntimeError,
                     "weight tensor should be defined either for all 5 classes or no classes but got weight tensor of "
                     "shape: [4]"),
    "weight_dtype": (dict(weight=torch.rand(5, dtype=torch.float64)), RuntimeError,
                     "expected scalar type Float but found Double"),
    "integer_probabilities": (dict(target=torch.ones(4, 5, dtype=torch.int64)), RuntimeError,
                              "Expected floating point type for target with class probabilities, got Long"),
    "ignore_index_with_probabilities": (dict(target=torch.rand(4, 5), ignore_index=2), RuntimeError,
                                        "ignore_index is not supported for floating point target"),
    "integer_logits": (dict(input=torch.ones(4, 5, dtype=torch.int64)), NotImplementedError,
                       "not implemented for 'Long'"),
    "integer_logits_probabilities": (dict(input=torch.ones(4, 5, dtype=torch.int32), target=torch.rand(4, 5)),
                                     NotImplementedError, "not implemented for 'Int'"),
    "bool_logits_int32_target": (dict(input=torch.ones(4, 5, dtype=torch.bool), target=torch.zeros(4, dtype=torch.int32)),
                                 NotImplementedError, "not implemented for 'Bool'"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_like_torch(name):
    changes, error, fragment = BAD_INPUTS[name]
    arguments = dict(input=torch.randn(4, 5, device=DEVICE), target=torch.tensor([0, 1, 4, 2], device=DEVICE))
    arguments.update({k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in changes.items()})
    assert_raises_like_torch(lambda: F.cross_entropy(**arguments), lambda: fastcnn.cross_entropy(**arguments),
                             op="cross_entropy", fragment=fragment, error=error)


def test_negative_label_smoothing_is_refused():
    """A deliberate difference (README): torch accepts label_smoothing < 0 (it checks only the
    upper bound) and computes a loss that rewards wrong classes; fastcnn refuses it."""
    input, target = torch.randn(4, 5, device=DEVICE), torch.tensor([0, 1, 4, 2], device=DEVICE)
    with count_launches() as launched, pytest.raises(RuntimeError, match="label_smoothing must be between 0.0 and 1.0"):
        fastcnn.cross_entropy(input, target, label_smoothing=-0.1)
    assert not launched


def test_float64_logits_are_refused_with_type_error():
    """A deliberate difference (README): the kernel takes fp32/fp16/bf16 logits; torch computes
    float64 ones, fastcnn refuses them with a TypeError naming the dtype."""
    input = torch.randn(4, 5, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match="dtype torch.float64 is not supported"):
        fastcnn.cross_entropy(input, torch.tensor([0, 1, 4, 2], device=DEVICE))


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


def test_second_backward_through_the_same_graph_is_refused_with_a_clear_error(generator):
    input = make_tensor((3, 4), generator=generator).requires_grad_()
    loss = fastcnn.cross_entropy(input, torch.tensor([0, 1, 3], device=DEVICE))
    loss.backward(retain_graph=True)
    first = input.grad.clone()
    with pytest.raises(RuntimeError) as raised:
        loss.backward()
    message = str(raised.value)
    assert message.startswith("fastcnn.cross_entropy:") and "retain_graph=True" in message, message
    assert "Compute the loss again" in message and "inplace operation" not in message, message
    assert torch.equal(input.grad, first)  # nothing was added by the refused backward


def test_strided_class_weight_and_targets(seed, generator):
    """The class weight and the targets are read through their strides: a strided weight with
    class indices, label smoothing and class probabilities, strided index and probability
    targets."""
    weight = make_tensor((7,), layout="sliced", generator=generator).abs_()
    assert not weight.is_contiguous()
    input = make_tensor((5, 7, 3), generator=generator)
    indices = strided_copy(torch.randint(0, 7, (5, 3), generator=generator).to(DEVICE))
    probabilities = torch.softmax(make_tensor((5, 7, 6), generator=generator), dim=1)[..., ::2]
    assert not indices.is_contiguous() and not probabilities.is_contiguous()
    for target in (indices, probabilities):
        for options in (dict(reduction="mean"), dict(reduction="none", label_smoothing=0.2)):
            check(input, target, weight, seed=seed, **options)
    check(input, indices, weight.contiguous(), seed=seed)
    leaf = input.detach().requires_grad_()
    grad_out = make_tensor((5, 6), generator=generator)[:, ::2]  # a strided upstream gradient for 'none'
    fastcnn.cross_entropy(leaf, indices, weight, reduction="none").backward(grad_out)
    _, expected_grad = reference(input, indices, weight, grad_out, reduction="none")
    assert_close(leaf.grad, expected_grad, torch.float32, what="grad with a strided grad_output", seed=seed,
                 reduction_length=7)


PROBABILITY_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@pytest.mark.parametrize("logits_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_probability_targets_of_any_float_dtype(logits_dtype, seed, generator):
    """Class probabilities of another dtype than the logits (float64 targets with fp32 logits,
    say): torch computes and promotes the loss (to float64 there); so does fastcnn, computing in
    fp32. The gradient keeps the logits' dtype."""
    input = make_tensor((4, 6, 3), generator=generator).to(logits_dtype)
    for target_dtype in PROBABILITY_DTYPES:
        for weight in (None, make_tensor((6,), torch.float64, generator=generator).abs_()):
            target = torch.softmax(make_tensor((4, 6, 3), torch.float64, generator=generator), dim=1).to(target_dtype)
            expected_dtype = F.cross_entropy(input, target, weight).dtype
            for reduction in ("mean", "none"):
                check(input, target, weight, seed=seed, dtype=logits_dtype, loss_dtype=expected_dtype,
                      reduction=reduction)


EMPTY_SHAPES = [  # (logits, class-index target or None for probabilities shaped like the logits)
    ((0, 5), (0,)), ((0, 5, 3), (0, 3)), ((2, 5, 0), (2, 0)), ((0, 5, 0), (0, 0)), ((2, 5, 0, 4), (2, 0, 4)),
    ((0, 5), None), ((0, 5, 3), None), ((2, 5, 0), None), ((2, 0, 3), None), ((3, 0), None), ((0, 0), None),
]


@pytest.mark.parametrize("shapes", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_every_empty_shape_torch_accepts(shapes, reduction, generator):
    """Empty batches, empty spatial dims and no classes: torch's loss (empty, 0 or NaN), shape,
    dtype and gradient."""
    input_shape, target_shape = shapes
    input = make_tensor(input_shape, generator=generator) if 0 not in input_shape else torch.empty(input_shape,
                                                                                                     device=DEVICE)
    if target_shape is None:
        target = torch.softmax(torch.ones(input_shape, device=DEVICE), dim=1)
    else:
        target = torch.zeros(target_shape, dtype=torch.int64, device=DEVICE)
    results = []
    for function in (fastcnn.cross_entropy, F.cross_entropy):
        leaf = input.detach().clone().requires_grad_()
        out = function(leaf, target, reduction=reduction)
        out.sum().backward()
        results.append((out, leaf.grad))
    (out, grad), (expected, expected_grad) = results
    assert out.shape == expected.shape and out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=0, atol=0)
    assert grad.shape == expected_grad.shape
    torch.testing.assert_close(grad, expected_grad, equal_nan=True, rtol=0, atol=0)


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


def test_autocast_runs_in_float32_like_torch(seed, generator):
    device_type = torch.device(DEVICE).type
    input = make_tensor((5, 7), torch.bfloat16, generator=generator)
    target = torch.randint(0, 7, (5,), generator=generator).to(DEVICE)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        out = fastcnn.cross_entropy(input, target)
        expected = F.cross_entropy(input, target)
    assert out.dtype == expected.dtype == torch.float32
    assert_close(out, expected, torch.float32, what="autocast loss", seed=seed)
    # Autocast widens only the 16-bit floats: float64 probabilities keep the loss in float64.
    probabilities = torch.softmax(make_tensor((5, 7), torch.float64, generator=generator), dim=1)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        out = fastcnn.cross_entropy(input, probabilities)
        expected = F.cross_entropy(input, probabilities)
    assert out.dtype == expected.dtype == torch.float64
    assert_close(out, expected, torch.float32, what="autocast loss with float64 targets", seed=seed)




@gpu_only("fp16/bf16 logits")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(6))
def test_half_precision_logits(dtype, case, seed, generator):
    rng = case_random(seed, case)
    input, target, weight, options = random_case(rng, generator)
    cast = (lambda t: None if t is None else t.to(dtype) if t.is_floating_point() else t)
    check(cast(input), cast(target), cast(weight), seed=seed, dtype=dtype, **options)


def test_bytes_hand_counted_and_suites():
    from fastcnn.cases import cross_entropy as cross_entropy_cases
    from fastcnn.ops import cross_entropy as cross_entropy_op

    # 3 rows of 5 fp32 logits: read 60 bytes, write 60 bytes of gradient, read 3 int64 targets.
    assert cross_entropy_op.bytes_moved(3, 5, 4) == 60 + 60 + 24
    assert cross_entropy_cases.SUITES["C1000"] == (65536, 1000) and cross_entropy_cases.SUITES["C128000"][0] == 2097


def test_vector_width_is_promised_only_where_every_row_is_aligned():
    """The kernel promises Triton VECTOR-aligned rows (128-bit accesses on a GPU, where a false
    promise reads misaligned memory): only for contiguous classes whose count and row strides are
    multiples of it; a size-1 dim's stride does not count."""
    from fastcnn.kernels import cross_entropy as kernels
    from fastcnn.kernels.indexing import vector_elements

    assert vector_elements(2, 1000, 1000, 0) == 8 and vector_elements(4, 1000, 1000) == 4
    assert vector_elements(2, 10, 10) == 2 and vector_elements(2, 37) == 1
    logits = torch.empty(256, 1000, dtype=torch.bfloat16)
    assert kernels.row_vector(logits.unsqueeze(-1)) == 8
    assert kernels.row_vector(logits[:, 1:].unsqueeze(-1)) == 1  # rows of 999 classes
    assert kernels.row_vector(logits[:, :992].unsqueeze(-1)) == 8  # 992 classes, rows 1000 apart
    assert kernels.row_vector(torch.empty(4, 12, 5, dtype=torch.bfloat16)) == 1  # classes not contiguous
    assert kernels.row_vector(torch.empty(4, 5, 12, dtype=torch.bfloat16).transpose(1, 2)) == 4  # 12 % 4
