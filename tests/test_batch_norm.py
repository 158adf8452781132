"""fastcnn.batch_norm (with its activation and residual epilogue), batch_norm_relu and their
modules against float64 torch."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.dtypes import tolerance as assert_tolerance
from fastcnn.ops.activation import KINDS, module_for, resolve_activation
from fastcnn.testing import (DEVICE, assert_close, assert_raises_like_torch, case_random, count_launches, gpu_only,
                             make_tensor, opinfo, record_aten_ops, relative_error, strided_copy)



def reference(input, running_mean, running_var, weight, bias, grad_out, *, relu, activation=None, residual=None,
              **options):
    """act(F.batch_norm(...) + residual) in float64: (output, [grad of input, weight, bias,
    residual], running statistics)."""
    as64 = (lambda t: None if t is None else t.detach().to(torch.float64).clone())
    leaves = [None if t is None else as64(t).requires_grad_() for t in (input, weight, bias, residual)]
    stats = [as64(running_mean), as64(running_var)]
    out = F.batch_norm(leaves[0], stats[0], stats[1], leaves[1], leaves[2], **options)
    out = out if residual is None else out + leaves[3]
    kind, parameter = resolve_activation("test", "relu" if relu else activation)
    out = out if kind is None else module_for(kind, parameter)(out)
    out.backward(grad_out.to(torch.float64))
    return out, [leaf.grad if leaf is not None else None for leaf in leaves], stats


def check_bn(input, running_mean, running_var, weight, bias, *, seed, relu, dtype=torch.float32, floor=None,
             activation=None, residual=None, **options):
    input = input.detach().requires_grad_()
    weight = None if weight is None else weight.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    residual = None if residual is None else residual.detach().requires_grad_()
    stats_before = [None if t is None else t.clone() for t in (running_mean, running_var)]
    if relu:
        out = fastcnn.batch_norm_relu(input, running_mean, running_var, weight, bias, residual=residual, **options)
    else:
        out = fastcnn.batch_norm(input, running_mean, running_var, weight, bias, activation=activation,
                                 residual=residual, **options)
    grad_out = make_tensor(out.shape, dtype, generator=torch.Generator().manual_seed(seed + 3))
    out.backward(grad_out)
    expected, grads, stats = reference(input, *stats_before, weight, bias, grad_out, relu=relu,
                                       activation=activation, residual=residual, **options)
    per_channel = input.numel() // input.shape[1]
    # grad_input subtracts terms of size |scale·dy| that can nearly cancel (few values per
    # channel): allow the rounding of those terms, not of their small difference.
    dims = [d for d in range(input.dim()) if d != 1]
    variance = (input.detach().double().var(dim=dims, unbiased=False) if options.get("training", False)
                else stats_before[1].double())
    scale = (1.0 if weight is None else weight.detach().double().abs()) / torch.sqrt(variance + options.get("eps", 1e-5))
    floor = dict(floor or {})
    terms = (grad_out.double().norm() * scale.max()).item() * 3
    compared = (("output", out, expected), ("grad_input", input.grad, grads[0]),
                ("grad_weight", None if weight is None else weight.grad, grads[1]),
                ("grad_bias", None if bias is None else bias.grad, grads[2]),
                ("grad_residual", None if residual is None else residual.grad, grads[3]),
                ("running_mean", running_mean, stats[0]), ("running_var", running_var, stats[1]))
    for what, actual, wanted in compared:
        if wanted is None:
            continue
        allowance = floor.get(what, 0.0) * wanted.norm().item()
        if what == "grad_input":
            allowance += assert_tolerance(dtype) * terms
        assert_close(actual, wanted, dtype if what.startswith(("output", "grad_input", "grad_residual"))
                     else torch.float32,
                     what=what, seed=seed, reduction_length=per_channel, error_floor=allowance)
    assert out.stride() == expected.stride()
    return out


def random_case(rng, generator):
    rank = rng.choice([2, 3, 4, 4])
    channels = rng.choice([1, 3, 5, 17])
    shape = {2: (rng.randint(2, 9), channels), 3: (rng.randint(1, 4), channels, rng.randint(2, 7)),
             4: (rng.randint(1, 4), channels, rng.randint(1, 6), rng.randint(2, 7))}[rank]
    layout = rng.choice(["contiguous", "sliced"] + (["channels_last"] if rank == 4 else []))
    input = make_tensor(shape, layout=layout, generator=generator, low=0.0, high=2.0) + rng.choice([0.0, 0.5, -1.0])
    training = rng.random() < 0.7
    track = not training or rng.random() < 0.7
    # Per-channel tensors are contiguous or strided views: the kernels read them through strides.
    vector_layout = rng.choice(["contiguous", "sliced"])
    running_mean = make_tensor((channels,), layout=vector_layout, generator=generator) if track else None
    running_var = (make_tensor((channels,), layout=vector_layout, generator=generator, low=0.5, high=1.5).abs_()
                   if track else None)
    affine = rng.random() < 0.7
    weight = make_tensor((channels,), layout=vector_layout, generator=generator) if affine else None
    bias = make_tensor((channels,), layout=vector_layout, generator=generator) if affine and rng.random() < 0.8 else None
    options = dict(training=training, momentum=rng.choice([0.1, 0.5, 1.0]), eps=rng.choice([1e-5, 1e-3]))
    return input, running_mean, running_var, weight, bias, options, rng.random() < 0.7


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(14))
def test_random_configurations(case, seed, generator):
    input, running_mean, running_var, weight, bias, options, relu = random_case(case_random(seed, case), generator)
    print(f"input {tuple(input.shape)} {input.stride()}, stats {running_mean is not None}, weight "
          f"{weight is not None}, bias {bias is not None}, relu {relu}, {options}")
    check_bn(input, running_mean, running_var, weight, bias, seed=seed, relu=relu, **options)


@pytest.mark.parametrize("relu", [True, False])
def test_large_mean_small_std_keeps_fp32_accuracy(relu, seed, generator):
    """Mean 3000, std 0.5: the statistics stay as accurate as fp32 allows (what float32 torch
    itself achieves is the allowance for the output, whose floor is the rounding of x and mean)."""
    input = (torch.randn(6, 4, 5, 7, generator=generator) * 0.5 + 3000.0).to(DEVICE)
    running_mean, running_var = torch.zeros(4, device=DEVICE), torch.ones(4, device=DEVICE)
    weight, bias = make_tensor((4,), generator=generator), make_tensor((4,), generator=generator)
    torch_fp32 = F.batch_norm(input, running_mean.clone(), running_var.clone(), weight, bias, training=True)
    torch_fp32 = torch.relu(torch_fp32) if relu else torch_fp32
    wanted, _, _ = reference(input, running_mean, running_var, weight, bias, torch.ones_like(input), relu=relu,
                             training=True)
    floor = 2 * relative_error(torch_fp32, wanted)
    check_bn(input, running_mean, running_var, weight, bias, seed=seed, relu=relu, training=True,
             floor={"output": floor, "grad_input": floor, "grad_weight": floor})
    # The variance itself (0.25) is accurate to fp32 precision, not to the 3000-scale rounding.
    assert abs(running_var.mean().item() - (0.9 + 0.1 * input.double().var(dim=(0, 2, 3)).mean().item())) < 1e-5


def test_statistics_merge_across_tiles_and_slices(seed, generator):
    """Enough rows per channel for many tiles and several slices, with a mean that drifts from
    image to image, so that merging (count, mean, m2) partials must carry the cross term."""
    # 120 images of 72 pixels: 8640 rows a channel, 4 slices of 2176 rows, 3 interpreter tiles each.
    drift = torch.arange(120, dtype=torch.float32).view(120, 1, 1, 1) * 0.1
    input = (make_tensor((120, 3, 9, 8), generator=generator) + drift.to(DEVICE))
    check_bn(input, torch.zeros(3, device=DEVICE), torch.ones(3, device=DEVICE), None, None, seed=seed, relu=True,
             training=True)


def test_running_statistics_over_several_steps_match_torch_modules(seed, generator):
    for momentum in (0.1, None):
        ours, theirs = fastcnn.nn.BatchNorm2dReLU(5, momentum=momentum), torch.nn.BatchNorm2d(5, momentum=momentum)
        theirs.load_state_dict(ours.state_dict())
        for step in range(4):
            input = make_tensor((3, 5, 4, 6), generator=generator, high=3.0) + step
            ours(input)
            theirs(input)
        for key, value in theirs.state_dict().items():
            if key == "num_batches_tracked":
                assert torch.equal(ours.state_dict()[key], value)
            else:
                assert_close(ours.state_dict()[key], value, torch.float32, what=key, seed=seed, reduction_length=72)
        ours.eval(), theirs.eval()
        input = make_tensor((2, 5, 3, 3), generator=generator)
        assert_close(ours(input), torch.relu(theirs(input)), torch.float32, what="eval output", seed=seed)


@pytest.mark.parametrize("options", [dict(affine=False), dict(track_running_stats=False), dict(momentum=None)])
def test_modules_are_drop_ins(options, seed, generator):
    for module_type in (fastcnn.nn.BatchNorm2d, fastcnn.nn.BatchNorm2dReLU):
        ours, theirs = module_type(6, **options), torch.nn.BatchNorm2d(6, **options)
        assert isinstance(ours, torch.nn.BatchNorm2d)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        theirs.load_state_dict(ours.state_dict())
        ours.load_state_dict(theirs.state_dict())
        relu = module_type is fastcnn.nn.BatchNorm2dReLU
        for training in (True, False, True):
            ours.train(training), theirs.train(training)
            input = make_tensor((2, 6, 3, 5), layout="channels_last", generator=generator)
            expected = theirs(input)
            assert_close(ours(input), torch.relu(expected) if relu else expected, torch.float32,
                         what=f"{module_type.__name__} {options} training={training}", seed=seed, reduction_length=30)


def test_opinfo_samples(seed):
    samples = list(opinfo("nn.functional.batch_norm").sample_inputs(DEVICE, torch.float32, requires_grad=True))
    assert len(samples) >= 10, len(samples)
    checked = 0
    for sample in samples:
        running_mean, running_var, weight, bias = sample.args
        stats = [None if t is None else t.detach().clone() for t in (running_mean, running_var)]
        if sample.input.dim() < 2:
            assert fastcnn.batch_norm(sample.input, *stats, weight, bias, **sample.kwargs).shape == sample.input.shape
            continue
        check_bn(sample.input, *stats, weight, bias, seed=seed, relu=False, **sample.kwargs)
        checked += 1
    assert checked >= 10, checked


def test_deterministic_and_saves_only_input_and_per_channel_statistics(generator):
    input = make_tensor((5, 7, 9, 6), layout="channels_last", generator=generator).requires_grad_()
    weight, bias = make_tensor((7,), generator=generator).requires_grad_(), make_tensor((7,), generator=generator)
    results = []
    for _ in range(2):
        input.grad = None
        with record_aten_ops() as names, count_launches() as launched:
            out = fastcnn.batch_norm_relu(input, None, None, weight, bias, training=True)
            saved = out.grad_fn.saved_tensors
            out.backward(torch.ones_like(out))
        results.append((out, input.grad))
    assert launched["batch_norm"] == 6  # statistics, finalize, normalise; two sums, finalize, grad-input
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    # the input, two floats per channel (mean and invstd, as torch saves), and the parameters themselves
    # the statistics: mean and invstd, and the input prologue's rows beside them (kernels/prologue.py)
    from fastcnn.kernels.prologue import STATISTICS_ROWS as rows
    assert [tuple(t.shape) for t in saved if t is not None] == [tuple(input.shape), (rows, 7), (7,), (7,)]
    assert saved[2].data_ptr() == weight.data_ptr() and saved[3].data_ptr() == bias.data_ptr()
    aten = [name for name in names if name.startswith("aten::")]
    assert not [name for name in aten if "batch_norm" in name or "relu" in name or "threshold" in name], names
    assert [name for name in names if name.startswith("fastcnn::")] == [
        "fastcnn::batch_norm_statistics", "fastcnn::batch_norm_apply", "fastcnn::batch_norm_backward"], names


def saved_activations(out):
    """data_ptr()s of the activation-sized tensors (shaped as ``out``) autograd keeps for the
    graph behind ``out``."""
    found, nodes, seen = set(), [out.grad_fn], set()
    while nodes:
        node = nodes.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        found |= {t.data_ptr() for t in getattr(node, "saved_tensors", ()) if t is not None and t.shape == out.shape}
        nodes += [next_node for next_node, _ in node.next_functions]
    return found


@pytest.mark.every_triton
@pytest.mark.parametrize("activation, kept", [("relu", "output"), ("sigmoid", "output"), ("tanh", "output"),
                                              (None, None), ("silu", "residual"), (("leaky_relu", 0.2), "residual")])
def test_with_a_residual_keeps_what_torch_would(activation, kept, seed, generator):
    """bn → add → act keeps, besides the input and the statistics, the output where torch's act
    backward takes its result, nothing without an activation, else the residual; the gradients
    are right either way."""
    input, residual = (make_tensor((4, 6, 5, 3), layout="channels_last", generator=generator).requires_grad_()
                       for _ in range(2))
    weight, bias = (make_tensor((6,), generator=generator).requires_grad_() for _ in range(2))
    out = fastcnn.batch_norm(input, None, None, weight, bias, training=True, activation=activation, residual=residual)
    kept_tensors = {"output": [out], "residual": [residual], None: []}[kept]
    assert saved_activations(out) == {t.data_ptr() for t in [input] + kept_tensors}
    grad = make_tensor(out.shape, generator=generator)
    ours = torch.autograd.grad(out, (input, residual, weight, bias), grad)
    double = [t.detach().double().requires_grad_() for t in (input, residual, weight, bias)]
    reference = torch.nn.functional.batch_norm(double[0], None, None, double[2], double[3], training=True)
    reference = reference + double[1]
    if activation is not None:
        reference = module_for(*resolve_activation("test", activation))(reference)
    theirs = torch.autograd.grad(reference, double, grad.double())
    for name, mine, expected in zip(("input", "residual", "weight", "bias"), ours, theirs):
        assert_close(mine, expected, torch.float32, what=f"grad {name}", seed=seed, reduction_length=4 * 5 * 3)


BAD_INPUTS = {
    # name: (arguments, exception, words of torch's message that ours repeats)
    "one_value_per_channel": (lambda: ((torch.randn(1, 3), torch.zeros(3), torch.ones(3)), dict(training=True)),
                              ValueError, "Expected more than 1 value per channel when training"),
    "eval_without_statistics": (lambda: ((torch.randn(4, 3), None, None), dict(training=False)), RuntimeError,
                                "running_mean must be defined in evaluation mode"),
    "eval_without_running_var": (lambda: ((torch.randn(4, 3), torch.zeros(3), None), dict(training=False)),
                                 RuntimeError, "running_var must be defined in evaluation mode"),
    "only_running_mean": (lambda: ((torch.randn(4, 3), torch.zeros(3), None), dict(training=True)), ValueError,
                          "running_mean and running_var must either both be None or neither be None"),
    "only_running_var": (lambda: ((torch.randn(4, 3, 2), None, torch.ones(3)), dict(training=True)), ValueError,
                         "running_mean and running_var must either both be None or neither be None"),
    "running_mean_size": (lambda: ((torch.randn(4, 3), torch.zeros(4), torch.ones(3)), dict(training=True)),
                          RuntimeError, "running_mean should contain 3 elements not 4"),
    "weight_size": (lambda: ((torch.randn(4, 3), torch.zeros(3), torch.ones(3), torch.ones(2)), {}),
                    RuntimeError, "weight should contain 3 elements not 2"),
    "zero_eps_training": (lambda: ((torch.randn(4, 3), None, None), dict(training=True, eps=0.0)), ValueError,
                          "batch_norm eps must be positive during training, but got 0.0"),
    "negative_eps_training": (lambda: ((torch.randn(4, 3), torch.zeros(3), torch.ones(3)),
                                       dict(training=True, eps=-1e-5)), ValueError, "eps must be positive"),
    "negative_eps_eval": (lambda: ((torch.randn(4, 3), torch.zeros(3), torch.ones(3)), dict(training=False, eps=-1e-5)),
                          ValueError, "batch_norm eps must be non-negative, but got -1e-05"),
    "integer_input": (lambda: ((torch.ones(4, 3, dtype=torch.int64), None, None), dict(training=True)),
                      NotImplementedError, "\"batch_norm\" not implemented for 'Long'"),
    "complex_input": (lambda: ((torch.ones(4, 3, dtype=torch.complex64), None, None), dict(training=True)),
                      NotImplementedError, "not implemented for 'ComplexFloat'"),
    "float64_input_float32_statistics": (lambda: ((torch.randn(4, 3, dtype=torch.float64), torch.zeros(3),
                                                   torch.ones(3)), dict(training=True)), RuntimeError, "mixed dtype"),
    "float32_input_float16_weight": (lambda: ((torch.randn(4, 3), None, None, torch.ones(3, dtype=torch.float16)),
                                              dict(training=True)), RuntimeError, "mixed dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_like_torch(name):
    make, error, fragment = BAD_INPUTS[name]
    args, kwargs = make()
    args = tuple(None if t is None else t.to(DEVICE) for t in args)
    for function, op in ((fastcnn.batch_norm_relu, "batch_norm_relu"), (fastcnn.batch_norm, "batch_norm")):
        assert_raises_like_torch(lambda: F.batch_norm(*args, **kwargs), lambda: function(*args, **kwargs), op=op,
                                 fragment=fragment, error=error)


@pytest.mark.parametrize("training", [True, False])
def test_module_refuses_eps_as_torchs_module_does(training):
    ours, theirs = fastcnn.nn.BatchNorm2d(3, eps=0.0 if training else -1.0), torch.nn.BatchNorm2d(
        3, eps=0.0 if training else -1.0)
    ours.train(training), theirs.train(training)
    input = torch.randn(2, 3, 4, 4, device=DEVICE)
    assert_raises_like_torch(lambda: theirs.to(DEVICE)(input), lambda: ours.to(DEVICE)(input), op="batch_norm",
                             fragment="batch_norm eps must be")


def test_float64_input_is_refused_with_type_error():
    """The deliberate difference (README): torch computes float64 batch norm, the kernels take
    fp32/fp16/bf16 and refuse float64 with a TypeError naming the dtype, before any launch."""
    input = torch.randn(4, 3, 5, dtype=torch.float64, device=DEVICE)
    with count_launches() as launched, pytest.raises(TypeError, match="dtype torch.float64 is not supported"):
        fastcnn.batch_norm(input, None, None, training=True)
    assert not launched


@pytest.mark.parametrize("relu", [True, False], ids=["bn_relu", "bn"])
@pytest.mark.parametrize("training", [True, False])
def test_nan_propagates_like_torch_forward_and_backward(relu, training, generator):
    """One NaN in the input: torch's batch statistics spread it over its channel (training) or
    keep it in place (eval), and relu keeps NaN as NaN; the gradients follow. The fused kernels
    must give NaN exactly where torch does."""
    input = make_tensor((4, 3, 5, 3), generator=generator)
    input[1, 2, 3, 1] = float("nan")
    weight, bias = make_tensor((3,), generator=generator), make_tensor((3,), generator=generator)
    statistics = [make_tensor((3,), generator=generator), make_tensor((3,), generator=generator).abs_()]
    grad_out = make_tensor(input.shape, generator=generator)
    results = []
    for function in ((fastcnn.batch_norm_relu if relu else fastcnn.batch_norm),
                     (lambda *a, **k: torch.relu(F.batch_norm(*a, **k))) if relu else F.batch_norm):
        leaves = [t.detach().clone().requires_grad_() for t in (input, weight, bias)]
        stats = [t.clone() for t in statistics]
        out = function(leaves[0], *stats, leaves[1], leaves[2], training=training)
        out.backward(grad_out)
        results.append([out] + [leaf.grad for leaf in leaves] + stats)
    names = ["output", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var"]
    for name, actual, expected in zip(names, *results):
        assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (
            f"{name}: {int(torch.isnan(actual).sum())} NaN, torch {int(torch.isnan(expected).sum())}")
    assert int(torch.isnan(results[0][0]).sum()) == (60 if training else 1)


def test_per_channel_tensors_are_read_and_written_through_their_strides(seed, generator):
    """weight, bias and running statistics as strided views (and running statistics shaped
    (2, 3) with strides no 1-d view can express): the same values as contiguous copies, the
    running statistics updated in place, and the rest of their buffers untouched."""
    input = make_tensor((5, 6, 4, 3), generator=generator)
    values = [make_tensor((6,), generator=generator) for _ in range(4)]
    values[3].abs_()
    for training in (True, False):
        weight, bias, running_mean, running_var = (strided_copy(v, step=3) for v in values)
        check_bn(input, running_mean, running_var, weight, bias, seed=seed, relu=True, training=training)
        assert torch.isnan(running_mean._base[..., 1:]).all() and torch.isnan(running_var._base[..., 1:]).all()
    grid = torch.full((4, 6), float("nan"), device=DEVICE)
    running_mean, running_var = grid[0::2, 0::2], grid[1::2, 1::2]  # (2, 3) each, strides (12, 2)
    running_mean.copy_(values[2].view(2, 3))
    running_var.copy_(values[3].view(2, 3))
    expected_mean, expected_var = values[2].clone(), values[3].clone()
    fastcnn.batch_norm(input, running_mean, running_var, training=True, momentum=0.5)
    F.batch_norm(input, expected_mean, expected_var, training=True, momentum=0.5)
    assert_close(running_mean.reshape(-1), expected_mean, torch.float32, what="running_mean", seed=seed)
    assert_close(running_var.reshape(-1), expected_var, torch.float32, what="running_var", seed=seed)
    assert int(torch.isnan(grid).sum()) == 12


@pytest.mark.parametrize("training", [True, False])
def test_strided_grad_output(training, seed, generator):
    input = make_tensor((4, 5, 3, 6), layout="channels_last", generator=generator)
    weight, bias = make_tensor((5,), generator=generator), make_tensor((5,), generator=generator)
    statistics = [make_tensor((5,), generator=generator), make_tensor((5,), generator=generator).abs_()]
    leaves = [t.detach().requires_grad_() for t in (input, weight, bias)]
    out = fastcnn.batch_norm_relu(leaves[0], *[t.clone() for t in statistics], leaves[1], leaves[2], training=training)
    grad_out = make_tensor((4, 5, 3, 12), generator=generator)[..., ::2]
    out.backward(grad_out)
    _, grads, _ = reference(input, *statistics, weight, bias, grad_out, relu=True, training=training)
    for what, actual, expected in zip(("grad_input", "grad_weight", "grad_bias"), [t.grad for t in leaves], grads):
        assert_close(actual, expected, torch.float32, what=f"{what} from a strided grad_output", seed=seed,
                     reduction_length=72)


def test_empty_batch(generator):
    input = torch.empty(0, 3, 4, 4, device=DEVICE, requires_grad=True)
    running_mean = torch.zeros(3, device=DEVICE)
    out = fastcnn.batch_norm_relu(input, running_mean, torch.ones(3, device=DEVICE), training=False)
    assert out.shape == input.shape
    out.sum().backward()
    assert input.grad.shape == input.shape




@gpu_only("fp16/bf16")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(4))
def test_half_precision_with_fp32_parameters(dtype, case, seed, generator):
    input, running_mean, running_var, weight, bias, options, relu = random_case(case_random(seed, case), generator)
    check_bn(input.to(dtype), running_mean, running_var, weight, bias, seed=seed, relu=relu, dtype=dtype, **options)


def test_bytes_hand_counted_and_activation_shapes():
    from fastcnn.cases import batch_norm as batch_norm_cases
    from fastcnn.ops import batch_norm as batch_norm_op

    assert batch_norm_op.bytes_moved(10, 4, backward=False) == 80  # read x, write y
    assert batch_norm_op.bytes_moved(10, 2, backward=True) == 100  # + read x, dy; write dx
    assert batch_norm_op.bytes_moved(10, 2, backward=True, residual=True) == 160  # + r twice, dr
    shapes = batch_norm_cases.resnet50_activation_shapes()
    assert shapes[0] == (64, 112) and (2048, 7) in shapes


# Each kind with a parameter unlike torch's default, where it has one.
ACTIVATIONS = {kind: (kind, {"leaky_relu": 0.2, "elu": 0.7}[kind]) if kind in ("leaky_relu", "elu") else kind
               for kind in KINDS}


@pytest.mark.every_triton
@pytest.mark.parametrize("residual", [False, True], ids=["bn_act", "bn_add_act"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_activation_with_and_without_residual(kind, residual, seed, generator):
    """act(bn(x) [+ r]) and its four gradients against float64 torch, in training (running
    statistics updated) and eval, NCHW, channels_last and a strided input; the residual laid out
    unlike the input."""
    rng = case_random(seed, KINDS.index(kind) + 20 * residual)
    for training, layout in ((True, rng.choice(["contiguous", "channels_last"])), (False, "sliced")):
        shape = (rng.randint(2, 4), 5, rng.randint(2, 6), rng.randint(3, 7))
        input = make_tensor(shape, layout=layout, generator=generator, low=-1.0, high=2.0)
        other = rng.choice(["contiguous", "channels_last", "sliced"])
        r = make_tensor(shape, layout=other, generator=generator) if residual else None
        statistics = [make_tensor((5,), generator=generator), make_tensor((5,), generator=generator, low=0.5).abs_()]
        weight, bias = make_tensor((5,), generator=generator), make_tensor((5,), generator=generator)
        print(f"{kind} residual={residual} training={training} {shape} input {layout} residual {other}")
        check_bn(input, *statistics, weight, bias, seed=seed, relu=False, activation=ACTIVATIONS[kind], residual=r,
                 training=training)


def _strided(tensor):
    """``tensor``'s values in every other element of a buffer twice its size (differentiably)."""
    return torch.stack([tensor, torch.zeros_like(tensor)], dim=-1)[..., 0]


@pytest.mark.every_triton
@pytest.mark.parametrize("kind", KINDS)
def test_nan_and_infinities_through_the_residual_follow_torch(kind, generator):
    """The residual carries NaN, ±inf and values at each activation's corners (±3, 6, 0), so
    that z = bn(x) + r meets them: outputs and the input and residual gradients are NaN where
    float32 torch's are and equal elsewhere. As in test_activation, torch's CPU GELU (NaN at
    ±inf, its CUDA kernel ±inf and 0) is not compared at ±inf. torch's CPU kernels disagree with
    themselves at NaN (hardtanh_backward, elu_backward and hardswish_backward pass a NaN's
    gradient on in their scalar loop and give 0 or NaN in their vectorised one), so the
    reference applies the activation to a strided copy of z, which takes the scalar loop: the
    formula their CUDA kernels use too."""
    special = [float("nan"), float("inf"), -float("inf"), -3.0, 3.0, 0.0, 6.0, -6.0, 2.5, -2.5, 30.0, -30.0]
    if kind.startswith("gelu") and DEVICE == "cpu":
        special = [v for v in special if abs(v) != float("inf")]
    residual = torch.tensor(special * 4, device=DEVICE)[: 2 * 3 * 4].view(2, 3, 4, 1).expand(2, 3, 4, 2).contiguous()
    input = make_tensor((2, 3, 4, 2), generator=generator) * 1e-3
    statistics = [torch.zeros(3, device=DEVICE), torch.full((3,), 1.0 - 1e-5, device=DEVICE)]
    results = []
    for function in (lambda x, r: fastcnn.batch_norm(x, *statistics, activation=ACTIVATIONS[kind], residual=r),
                     lambda x, r: module_for(*resolve_activation("test", ACTIVATIONS[kind]))(
                         _strided(F.batch_norm(x, *statistics) + r))):
        leaves = [t.detach().clone().requires_grad_() for t in (input, residual)]
        out = function(*leaves)
        out.backward(torch.full_like(out, 2.0))
        results.append([out.detach()] + [leaf.grad for leaf in leaves])
    for what, actual, expected in zip(("output", "grad_input", "grad_residual"), *results):
        assert torch.equal(torch.isnan(actual), torch.isnan(expected)), (kind, what, actual, expected)
        kept = ~torch.isnan(expected)
        torch.testing.assert_close(actual[kept], expected[kept], rtol=1e-4, atol=1e-5, msg=f"{kind} {what}")


def test_residual_broadcasts_and_bad_residuals_raise(seed, generator):
    input = make_tensor((3, 4, 5, 2), generator=generator)
    statistics = [make_tensor((4,), generator=generator), make_tensor((4,), generator=generator).abs_()]
    # A per-channel residual (1, C, 1, 1): its gradient is summed back to its shape by autograd.
    check_bn(input, *statistics, None, None, seed=seed, relu=True, residual=make_tensor((1, 4, 1, 1),
                                                                                        generator=generator),
             training=True)
    with count_launches() as launched:
        with pytest.raises(TypeError, match="fastcnn.batch_norm: residual has dtype torch.float16"):
            fastcnn.batch_norm(input, *statistics, residual=input.half())
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            fastcnn.batch_norm(input, *statistics, residual=torch.ones(3, 4, 5, 3, device=DEVICE))
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):  # would enlarge the output
            fastcnn.batch_norm(input, *statistics, residual=torch.ones(2, 3, 4, 5, 2, device=DEVICE))
        with pytest.raises(TypeError, match="argument 'residual' must be a Tensor"):
            fastcnn.batch_norm(input, *statistics, residual=1.0)
        with pytest.raises(ValueError, match="activation must be None or one of"):
            fastcnn.batch_norm(input, *statistics, activation="softplus")
    assert not launched


def test_residual_fusion_runs_no_aten_math_and_saves_input_and_residual(generator):
    input = make_tensor((4, 6, 5, 3), layout="channels_last", generator=generator).requires_grad_()
    residual = make_tensor((4, 6, 5, 3), generator=generator).requires_grad_()
    weight, bias = make_tensor((6,), generator=generator).requires_grad_(), make_tensor((6,), generator=generator)
    with record_aten_ops() as names, count_launches() as launched:
        out = fastcnn.batch_norm(input, None, None, weight, bias, True, activation="silu", residual=residual)
        saved = saved_activations(out)
        out.backward(torch.ones_like(out))
    # statistics, finalize, normalise; g = silu'(z)·dy with its sums in one pass, finalize, grad-input
    assert launched["batch_norm"] == 6
    assert [name for name in names if name.startswith("fastcnn::")] == [
        "fastcnn::batch_norm_statistics", "fastcnn::batch_norm_residual_apply",
        "fastcnn::batch_norm_residual_grad_with_sums", "fastcnn::batch_norm_backward_from_sums"], names
    assert saved == {input.data_ptr(), residual.data_ptr()}
    assert not [name for name in names if name.startswith("aten::") and any(
        word in name for word in ("batch_norm", "add", "silu", "sigmoid", "mul"))], names
    assert input.grad is not None and residual.grad is not None and weight.grad is not None


def test_batch_norm_act_module(seed, generator):
    ours = fastcnn.nn.BatchNorm2dAct(5, activation=torch.nn.LeakyReLU(0.3), momentum=0.2)
    theirs = torch.nn.BatchNorm2d(5, momentum=0.2)
    assert isinstance(ours, torch.nn.BatchNorm2d) and ours.activation == ("leaky_relu", 0.3)
    assert list(ours.state_dict()) == list(theirs.state_dict()) and "leaky_relu" in repr(ours)
    theirs.load_state_dict(ours.state_dict())
    for training in (True, False):
        ours.train(training), theirs.train(training)
        input = make_tensor((3, 5, 4, 3), generator=generator)
        residual = make_tensor((3, 5, 4, 3), layout="channels_last", generator=generator)
        expected = F.leaky_relu(theirs(input) + residual, 0.3)
        assert_close(ours(input, residual), expected, torch.float32, what=f"training={training}", seed=seed,
                     reduction_length=36)
    assert_close(ours.running_var, theirs.running_var, torch.float32, what="running_var", seed=seed)
    assert fastcnn.nn.BatchNorm2dReLU(3).activation == ("relu", 0.0)
    assert fastcnn.nn.BatchNorm2d(3).activation is None


@pytest.mark.every_triton
@pytest.mark.parametrize("training, activation, layout", [(True, "relu", "channels_last"), (True, None, "contiguous"),
                                                          (True, "sigmoid", "channels_last"),
                                                          (False, "relu", "contiguous"), (True, "silu", "contiguous")])
def test_batch_norm_add_batch_norm_matches_float64(training, activation, layout, seed, generator):
    """act(bn(x) + bn_r(r)) (a ResNet downsample block's end) in one pass: the output, the six
    gradients and both norms' running statistics as float64 torch; in training with ReLU, no pass
    of its own for the residual's batch norm forward or for either norm's backward sums."""
    x, r = (make_tensor((4, 6, 5, 3), layout=layout, generator=generator).requires_grad_() for _ in range(2))
    parameters = [make_tensor((6,), generator=generator).requires_grad_() for _ in range(4)]
    running = [make_tensor((6,), generator=generator), make_tensor((6,), generator=generator).abs() + 0.5,
               make_tensor((6,), generator=generator), make_tensor((6,), generator=generator).abs() + 0.5]
    ours_running = [t.clone() for t in running]
    with record_aten_ops() as names:
        out = fastcnn.batch_norm_add_batch_norm(x, *ours_running[:2], *parameters[:2], r, *ours_running[2:],
                                                *parameters[2:], training, 0.1, 1e-5, 0.3, 1e-3, activation=activation)
        grad = make_tensor(out.shape, generator=generator)
        out.backward(grad)
    double = [t.detach().double().requires_grad_() for t in (x, r, *parameters)]
    reference_running = [t.double() for t in running]
    reference = (F.batch_norm(double[0], *reference_running[:2], double[2], double[3], training, 0.1, 1e-5)
                 + F.batch_norm(double[1], *reference_running[2:], double[4], double[5], training, 0.3, 1e-3))
    if activation is not None:
        reference = getattr(torch, activation)(reference) if activation != "silu" else F.silu(reference)
    reference.backward(grad.double())
    assert_close(out, reference, torch.float32, what="output", seed=seed)
    for name, mine, expected in zip(("x", "r", "weight", "bias", "residual weight", "residual bias"),
                                    (x.grad, r.grad, *(p.grad for p in parameters)), (t.grad for t in double)):
        assert_close(mine, expected, torch.float32, what=f"grad {name}", seed=seed, reduction_length=4 * 5 * 3)
    for mine, expected in zip(ours_running, reference_running):
        assert_close(mine, expected, torch.float32, what="running statistics", seed=seed, reduction_length=60)
    ops = [name for name in names if name.startswith("fastcnn::")]
    if activation == "silu":  # not from the output: the residual's batch norm runs on its own
        assert "fastcnn::batch_norm_apply" in ops, ops
    else:
        assert "fastcnn::batch_norm_apply" not in ops and ops.count("fastcnn::batch_norm_residual_apply") == 1, ops
    if training and activation == "relu":
        assert ops.count("fastcnn::batch_norm_backward_from_sums") == 2 and "fastcnn::batch_norm_backward" not in ops, ops
