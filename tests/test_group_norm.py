"""fastcnn.group_norm / instance_norm (with fused activations) and their modules against float64 torch."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.dtypes import tolerance as relative_tolerance
from fastcnn.ops.activation import KINDS, module_for, resolve_activation
from fastcnn.testing import (DEVICE, assert_close, assert_raises_like_torch, case_random, check_opinfo_error_inputs,
                             count_launches, gpu_only, make_tensor, opinfo, record_aten_ops, relative_error,
                             strided_copy)

ACTIVATIONS = (None,) + KINDS


def _activated(out, activation):
    kind, parameter = resolve_activation("test", activation)
    return out if kind is None else module_for(kind, parameter)(out)


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def check_norm(ours, theirs, input, weight, bias, *, seed, activation, reduction_length, dtype=torch.float32,
               floor=0.0, stats=()):
    """Run ``ours(input, weight, bias)`` and float64 ``theirs`` (+ the activation), compare the output,
    the three gradients and the (running) statistics in ``stats`` (pairs of ours, float64 copy)."""
    leaves = _leaves(input, weight, bias)
    out = ours(*leaves)
    grad_out = make_tensor(out.shape, dtype, generator=torch.Generator().manual_seed(seed + 5))
    out.backward(grad_out)
    reference = _leaves(*(None if t is None else t.double() for t in (input, weight, bias)))
    expected = _activated(theirs(*reference), activation)
    expected.backward(grad_out.double())
    # grad_input subtracts terms of size |rstd·w·dy| that nearly cancel for short rows: allow their rounding.
    terms = relative_tolerance(dtype) * 3 * (grad_out.double().norm() * (1.0 if weight is None else
                                                                           weight.double().abs().max())).item()
    terms /= max(input.double().std(correction=0).item(), 1e-3)
    names = ("output", "grad_input", "grad_weight", "grad_bias")
    for what, actual, wanted in zip(names, [out] + [None if t is None else t.grad for t in leaves],
                                    [expected] + [None if t is None else t.grad for t in reference]):
        if wanted is None:
            continue
        allowance = floor * wanted.norm().item() + (terms if what == "grad_input" else 0.0)
        if what in ("grad_weight", "grad_bias"):
            # Σ dy·x̂ and Σ dy (times the activation's slope) can cancel to ~0 (one value per row: x̂ = 0,
            # and the output is the bias): allow their terms' rounding
            allowance += relative_tolerance(torch.float32) * grad_out.double().norm().item()
        if what == "output":  # x̂ is O(1) per element, and exactly 0 for rows of one value (torch's float64: 1e-15)
            allowance += relative_tolerance(dtype) * math.sqrt(wanted.numel())
        assert_close(actual, wanted, dtype if what in names[:2] else torch.float32, what=what, seed=seed,
                     reduction_length=reduction_length, error_floor=allowance)
    for what, actual, wanted in stats:
        assert_close(actual, wanted, torch.float32, what=what, seed=seed, reduction_length=reduction_length)
    return out


def random_group_case(rng, generator):
    groups = rng.choice([1, 2, 3, 4])
    channels = groups * rng.choice([1, 2, 5])
    rank = rng.choice([2, 3, 4, 4, 5])
    spatial = {2: (), 3: (rng.randint(2, 9),), 4: (rng.randint(1, 6), rng.randint(2, 7)), 5: (2, 3, rng.randint(2, 4))}
    shape = (rng.randint(1, 4), channels) + spatial[rank]
    layout = rng.choice(["contiguous", "sliced"] + (["channels_last"] if rank == 4 else []))
    if shape[0] * channels // groups * math.prod(shape[2:]) == 1:
        shape = (2,) + shape[1:]
    input = make_tensor(shape, layout=layout, generator=generator, low=0.0, high=2.0) + rng.choice([0.0, 0.5, -1.0])
    affine = rng.random() < 0.8
    vector_layout = rng.choice(["contiguous", "sliced"])
    weight = make_tensor((channels,), layout=vector_layout, generator=generator) if affine else None
    bias = make_tensor((channels,), layout=vector_layout, generator=generator) if affine and rng.random() < 0.8 else None
    return input, groups, weight, bias, rng.choice(ACTIVATIONS), dict(eps=rng.choice([1e-5, 1e-3]))


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(16))
def test_group_norm_random_configurations(case, seed, generator):
    input, groups, weight, bias, activation, options = random_group_case(case_random(seed, case), generator)
    print(f"input {tuple(input.shape)} {input.stride()}, groups {groups}, weight {weight is not None}, bias "
          f"{bias is not None}, activation {activation}, {options}")
    length = input.numel() // (input.shape[0] * groups)
    check_norm(lambda x, w, b: fastcnn.group_norm(x, groups, w, b, activation=activation, **options),
               lambda x, w, b: F.group_norm(x, groups, w, b, **options), input, weight, bias, seed=seed,
               activation=activation, reduction_length=length)


def test_group_norm_long_rows_many_tiles(seed, generator):
    """Rows longer than a tile in both the channel and the pixel direction, with a mean that
    drifts along the row, so the per-tile summaries must merge with their cross term."""
    drift = torch.arange(48, dtype=torch.float32).view(1, 48, 1, 1) * 0.2
    for layout in ("contiguous", "channels_last"):
        input = make_tensor((2, 48, 11, 13), layout=layout, generator=generator) + drift.to(DEVICE)
        weight, bias = make_tensor((48,), generator=generator), make_tensor((48,), generator=generator)
        check_norm(lambda x, w, b: fastcnn.group_norm(x, 2, w, b, activation="silu"),
                   lambda x, w, b: F.group_norm(x, 2, w, b), input, weight, bias, seed=seed, activation="silu",
                   reduction_length=24 * 143)
    # One sample of few channels: its pixels are cut into several slices whose summaries merge.
    input = make_tensor((1, 4, 10, 23), generator=generator) + torch.linspace(0, 2, 230).view(1, 1, 10, 23).to(DEVICE)
    weight = make_tensor((4,), generator=generator)
    check_norm(lambda x, w, b: fastcnn.group_norm(x, 2, w, b, activation="gelu"),
               lambda x, w, b: F.group_norm(x, 2, w, b), input, weight, None, seed=seed, activation="gelu",
               reduction_length=460)


@pytest.mark.parametrize("norm", ["group", "instance"])
def test_large_mean_small_std_keeps_fp32_accuracy(norm, seed, generator):
    input = (torch.randn(3, 4, 6, 7, generator=generator) * 0.5 + 3000.0).to(DEVICE)
    weight, bias = make_tensor((4,), generator=generator), make_tensor((4,), generator=generator)
    if norm == "group":
        ours, theirs = (lambda x, w, b: fastcnn.group_norm(x, 2, w, b)), (lambda x, w, b: F.group_norm(x, 2, w, b))
    else:
        ours, theirs = (lambda x, w, b: fastcnn.instance_norm(x, weight=w, bias=b)), (
            lambda x, w, b: F.instance_norm(x, weight=w, bias=b))
    wanted = theirs(input.double(), weight.double(), bias.double())
    floor = 2 * relative_error(theirs(input, weight, bias), wanted)  # what float32 torch itself achieves
    check_norm(ours, theirs, input, weight, bias, seed=seed, activation=None, reduction_length=84, floor=floor)


def random_instance_case(rng, generator):
    channels = rng.choice([1, 3, 6])
    rank = rng.choice([3, 4, 4, 5])
    spatial = {3: (rng.randint(2, 9),), 4: (rng.randint(1, 5), rng.randint(2, 6)), 5: (2, 2, rng.randint(2, 4))}[rank]
    layout = rng.choice(["contiguous", "sliced"] + (["channels_last"] if rank == 4 else []))
    input = make_tensor((rng.randint(1, 4), channels) + spatial, layout=layout, generator=generator, low=0.0, high=2.0)
    use_input_stats = rng.random() < 0.7
    track = not use_input_stats or rng.random() < 0.6
    running_mean = make_tensor((channels,), generator=generator) if track else None
    running_var = make_tensor((channels,), generator=generator, low=0.5, high=1.5).abs_() if track else None
    affine = rng.random() < 0.7
    weight = make_tensor((channels,), generator=generator) if affine else None
    bias = make_tensor((channels,), generator=generator) if affine else None
    options = dict(use_input_stats=use_input_stats, momentum=rng.choice([0.1, 0.5]), eps=rng.choice([1e-5, 1e-3]))
    return input, running_mean, running_var, weight, bias, options, rng.choice(ACTIVATIONS)


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(12))
def test_instance_norm_random_configurations(case, seed, generator):
    input, running_mean, running_var, weight, bias, options, activation = random_instance_case(
        case_random(seed, case), generator)
    print(f"input {tuple(input.shape)} {input.stride()}, running {running_mean is not None}, weight "
          f"{weight is not None}, activation {activation}, {options}")
    ours_stats = [None if t is None else t.clone() for t in (running_mean, running_var)]
    torch_stats = [None if t is None else t.double().clone() for t in (running_mean, running_var)]
    check_norm(lambda x, w, b: fastcnn.instance_norm(x, *ours_stats, w, b, activation=activation, **options),
               lambda x, w, b: F.instance_norm(x, *torch_stats, w, b, **options), input, weight, bias, seed=seed,
               activation=activation, reduction_length=math.prod(input.shape[2:]),
               stats=[] if running_mean is None else [("running_mean", ours_stats[0], torch_stats[0]),
                                                      ("running_var", ours_stats[1], torch_stats[1])])


def test_modules_are_drop_ins_and_track_running_statistics(seed, generator):
    ours, theirs = fastcnn.nn.GroupNorm(3, 6, activation="gelu"), torch.nn.GroupNorm(3, 6)
    assert isinstance(ours, torch.nn.GroupNorm) and list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    input = make_tensor((2, 6, 5, 4), layout="channels_last", generator=generator)
    assert_close(ours(input), F.gelu(theirs(input)), torch.float32, what="GroupNorm+GELU",
                 seed=seed, reduction_length=40)
    for module_type, torch_type, shape in ((fastcnn.nn.InstanceNorm1d, torch.nn.InstanceNorm1d, (3, 4, 9)),
                                           (fastcnn.nn.InstanceNorm2d, torch.nn.InstanceNorm2d, (3, 4, 5, 6)),
                                           (fastcnn.nn.InstanceNorm3d, torch.nn.InstanceNorm3d, (2, 4, 3, 2, 5))):
        for options in (dict(affine=True, track_running_stats=True), dict(momentum=None, track_running_stats=True),
                        dict()):
            ours, theirs = module_type(4, **options), torch_type(4, **options)
            assert isinstance(ours, torch_type) and list(ours.state_dict()) == list(theirs.state_dict())
            for step, training in enumerate((True, True, False)):
                ours.train(training), theirs.train(training)
                batch = make_tensor(shape, generator=generator) + step
                assert_close(ours(batch), theirs(batch), torch.float32, what=f"{module_type.__name__} {options}",
                             seed=seed, reduction_length=30)
            for key, value in theirs.state_dict().items():
                assert_close(ours.state_dict()[key], value, torch.float32, what=key, seed=seed)
        unbatched = make_tensor(shape[1:], generator=generator)
        assert_close(module_type(4)(unbatched), torch_type(4)(unbatched), torch.float32, what="unbatched", seed=seed)


def test_kernels_run_deterministically_and_save_only_the_input_and_row_statistics(generator):
    input = make_tensor((3, 8, 7, 5), layout="channels_last", generator=generator).requires_grad_()
    weight, bias = (make_tensor((8,), generator=generator).requires_grad_() for _ in range(2))
    results = []
    for _ in range(2):
        input.grad = weight.grad = None
        with record_aten_ops() as names, count_launches() as launched:
            out = fastcnn.group_norm(input, 4, weight, bias, activation="silu")
            saved = out.grad_fn.saved_tensors
            out.backward(torch.ones_like(out))
        results.append((out, input.grad, weight.grad))
    # statistics: slices, merge; normalise; backward: slices, merge, sum over the samples, grad-input
    assert launched["group_norm"] == 7
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert [tuple(t.shape) for t in saved if t is not None][:2] == [tuple(input.shape), (4, 12)]
    aten = [name for name in names if name.startswith("aten::")]
    assert not [name for name in aten if "norm" in name or "silu" in name or "sigmoid" in name], names
    assert [name for name in names if name.startswith("fastcnn::")] == [
        "fastcnn::group_norm_stats", "fastcnn::group_norm_apply", "fastcnn::group_norm_backward"], names


@pytest.mark.parametrize("special", [float("nan"), float("inf")])
@pytest.mark.parametrize("norm", ["group", "instance"])
def test_nan_and_inf_propagate_like_torch(norm, special, generator):
    """One NaN or inf in the input: its row's statistics become NaN (an inf's deviation is inf
    and inf - inf is NaN), NaN spreads through that row and the gradients exactly where torch's do."""
    input = make_tensor((3, 4, 5, 3), generator=generator)
    input[1, 2, 3, 1] = special
    weight, bias = make_tensor((4,), generator=generator), make_tensor((4,), generator=generator)
    grad_out = make_tensor(input.shape, generator=generator)
    results = []
    for function in ((lambda x, w, b: fastcnn.group_norm(x, 2, w, b, activation="relu"),
                      lambda x, w, b: torch.relu(F.group_norm(x, 2, w, b))) if norm == "group" else
                     (lambda x, w, b: fastcnn.instance_norm(x, weight=w, bias=b, activation="relu"),
                      lambda x, w, b: torch.relu(F.instance_norm(x, weight=w, bias=b)))):
        leaves = _leaves(input, weight, bias)
        out = function(*leaves)
        out.backward(grad_out)
        results.append([out] + [leaf.grad for leaf in leaves])
    for name, actual, expected in zip(("output", "grad_input", "grad_weight", "grad_bias"), *results):
        assert torch.equal(torch.isnan(actual), torch.isnan(expected)), name


def test_opinfo_samples(seed):
    checked = 0
    for name, ours, theirs in (("nn.functional.group_norm", fastcnn.group_norm, F.group_norm),
                               ("nn.functional.instance_norm", fastcnn.instance_norm, F.instance_norm)):
        for sample in opinfo(name).sample_inputs(DEVICE, torch.float32, requires_grad=True):
            args, kwargs = sample.args, dict(sample.kwargs)
            if name.endswith("instance_norm"):
                stats = [kwargs.pop(key, None) for key in ("running_mean", "running_var")]
                kwargs.update({key: None if t is None else t.detach().clone() for key, t in
                               zip(("running_mean", "running_var"), stats)})
            out = ours(sample.input, *args, **kwargs)
            if name.endswith("instance_norm"):
                kwargs.update({key: None if t is None else t.detach().clone() for key, t in
                               zip(("running_mean", "running_var"), stats)})
            expected = theirs(sample.input.detach().double(), *[a.double() if isinstance(a, torch.Tensor) else a
                                                                for a in args],
                              **{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
            assert_close(out, expected, torch.float32, what=f"{name} {tuple(sample.input.shape)}", seed=seed,
                         reduction_length=max(1, sample.input.numel()))
            checked += 1
    assert checked >= 6, checked


def test_opinfo_error_inputs():
    check_opinfo_error_inputs("nn.functional.group_norm", fastcnn.group_norm, op="group_norm")


BAD_GROUP = {
    "not_divisible": ((torch.randn(2, 6, 3, 3), 4), RuntimeError, "Expected number of channels in input to be divisible"),
    "zero_groups": ((torch.randn(2, 6, 3, 3), 0), ZeroDivisionError, "integer division or modulo by zero"),
    "weight_size": ((torch.randn(2, 6, 3, 3), 3, torch.ones(5)), RuntimeError,
                    "Expected weight to be a vector of size equal to the number of channels in input, but got weight "
                    "of shape [5] and input of shape [2, 6, 3, 3]"),
    "bias_rank": ((torch.randn(2, 6, 3, 3), 3, None, torch.ones(2, 3)), RuntimeError,
                  "Expected bias to be a vector of size equal to the number of channels"),
    "one_value": ((torch.randn(1, 6), 6), ValueError, "Expected more than 1 value per channel when training, got "
                                                      "input size [1, 6]"),
    "one_dim": ((torch.randn(6), 6), RuntimeError, "Expected at least 2 dimensions for input tensor but received 1"),
    "integer": ((torch.ones(2, 6, 3, dtype=torch.int64), 3), NotImplementedError, "not implemented for 'Long'"),
    "mixed_dtype": ((torch.randn(2, 6, 3), 3, torch.ones(6, dtype=torch.float16)), RuntimeError, "mixed dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_GROUP))
def test_group_norm_bad_input_raises_like_torch(name):
    args, error, fragment = BAD_GROUP[name]
    args = tuple(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in args)
    assert_raises_like_torch(lambda: F.group_norm(*args), lambda: fastcnn.group_norm(*args), op="group_norm",
                             fragment=fragment, error=error)


BAD_INSTANCE = {
    "one_pixel": ((torch.randn(2, 3, 1, 1),), {}, ValueError, "Expected more than 1 spatial element when training"),
    "no_running_statistics": ((torch.randn(2, 3, 4),), dict(use_input_stats=False), RuntimeError,
                              "Expected running_mean and running_var to be defined when use_input_stats is false"),
    "weight_size": ((torch.randn(2, 6, 3, 3),), dict(weight=torch.ones(5)), RuntimeError,
                    "weight should contain 12 elements not 10"),
    "running_mean_size": ((torch.randn(2, 6, 3, 3), torch.zeros(5), torch.ones(5)), {}, RuntimeError,
                          "running_mean should contain 12 elements not 10"),
    "integer": ((torch.ones(2, 3, 4, dtype=torch.int64),), {}, NotImplementedError, "not implemented for 'Long'"),
    "only_running_mean": ((torch.randn(2, 3, 4), torch.zeros(3)), {}, ValueError,
                          "running_mean and running_var must either both be None or neither be None"),
    "only_running_var": ((torch.randn(2, 3, 4), None, torch.ones(3)), {}, ValueError,
                         "running_mean and running_var must either both be None or neither be None"),
}


@pytest.mark.parametrize("name", sorted(BAD_INSTANCE))
def test_instance_norm_bad_input_raises_like_torch(name):
    args, kwargs, error, fragment = BAD_INSTANCE[name]
    args = tuple(None if t is None else t.to(DEVICE) for t in args)
    kwargs = {k: v.to(DEVICE) for k, v in kwargs.items()} if kwargs.get("weight") is not None else kwargs
    assert_raises_like_torch(lambda: F.instance_norm(*args, **kwargs), lambda: fastcnn.instance_norm(*args, **kwargs),
                             op="instance_norm", fragment=fragment, error=error)


def test_strided_statistics_and_gradient(seed, generator):
    input = make_tensor((4, 3, 5, 6), generator=generator)
    running_mean, running_var = strided_copy(make_tensor((3,), generator=generator), 3), strided_copy(
        make_tensor((3,), generator=generator).abs_(), 3)
    expected = [running_mean.double().clone(), running_var.double().clone()]
    fastcnn.instance_norm(input, running_mean, running_var, momentum=0.3)
    F.instance_norm(input.double(), *expected, momentum=0.3)
    assert_close(running_var, expected[1], torch.float32, what="running_var", seed=seed)
    assert torch.isnan(running_mean._base[..., 1:]).all()
    leaf = input.clone().requires_grad_()
    grad_out = make_tensor((4, 3, 5, 12), generator=generator)[..., ::2]
    fastcnn.group_norm(leaf, 3, activation="tanh").backward(grad_out)
    reference = input.double().requires_grad_()
    torch.tanh(F.group_norm(reference, 3)).backward(grad_out.double())
    assert_close(leaf.grad, reference.grad, torch.float32, what="grad from a strided grad_output", seed=seed,
                 reduction_length=30)


def test_empty_batch():
    input = torch.empty(0, 4, 3, 3, device=DEVICE, requires_grad=True)
    weight = torch.ones(4, device=DEVICE, requires_grad=True)
    out = fastcnn.group_norm(input, 2, weight)
    out.sum().backward()
    assert out.shape == input.shape and torch.equal(weight.grad, torch.zeros(4, device=DEVICE))


@gpu_only("fp16/bf16")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(4))
def test_half_precision_with_fp32_parameters(dtype, case, seed, generator):
    input, groups, weight, bias, activation, options = random_group_case(case_random(seed, case), generator)
    length = input.numel() // (input.shape[0] * groups)
    check_norm(lambda x, w, b: fastcnn.group_norm(x, groups, w, b, activation=activation, **options),
               lambda x, w, b: F.group_norm(x, groups, w, b, **options), input.to(dtype), weight, bias, seed=seed,
               activation=activation, reduction_length=length, dtype=dtype)


def test_bytes_hand_counted():
    from fastcnn.ops import group_norm as group_norm_op

    assert group_norm_op.bytes_moved(10, 2, backward=True) == 100  # x, y; x, dy, dx


@gpu_only("a tensor of more than 2**31 elements")
def test_more_than_2_31_elements_index_in_int64():
    """bf16 input of 2**31 + 64·1024 elements: offsets past 2**31 must not wrap (each of the 32
    rows of the last sample lies beyond them)."""
    input = torch.randn(2, 64, 2**24 + 512, device=DEVICE, dtype=torch.bfloat16)
    out = fastcnn.group_norm(input, 32, activation="silu")
    tail = input[1:].float()
    expected = F.silu(F.group_norm(tail, 32))
    assert_close(out[1:], expected, torch.bfloat16, what="last sample", seed=0)


@gpu_only("CUDA autocast")
def test_cuda_autocast_runs_group_and_layer_norm_in_float32_as_torch_does(generator):
    input = make_tensor((2, 8, 5, 5), generator=generator)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ours = [fastcnn.group_norm(input.bfloat16(), 4), fastcnn.layer_norm(input.bfloat16(), (5,))]
        theirs = [F.group_norm(input.bfloat16(), 4), F.layer_norm(input.bfloat16(), (5,))]
    assert [t.dtype for t in ours] == [t.dtype for t in theirs]
