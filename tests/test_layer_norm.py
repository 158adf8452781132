"""fastcnn.layer_norm / layer_norm2d (with fused activations) and their modules against float64 torch."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import (DEVICE, assert_close, assert_raises_like_torch, case_random, count_launches, gpu_only,
                             make_tensor, opinfo, record_aten_ops, relative_error)
from test_group_norm import ACTIVATIONS, check_norm


def _torchvision_layer_norm2d(x, weight, bias, eps=1e-6):
    """torchvision's LayerNorm2d.forward: permute, layer_norm, permute back."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


def random_case(rng, generator):
    rank = rng.choice([2, 3, 4, 4])
    shape = tuple(rng.randint(1, 6) for _ in range(rank - 1)) + (rng.choice([1, 5, 17, 130]),)
    normalized = shape[rank - rng.randint(1, min(rank, 3)):]
    layout = rng.choice(["contiguous", "sliced", "permuted"] + (["channels_last"] if rank == 4 else []))
    if layout == "permuted":  # the last dim strided: a transposed view, as a permuted NHWC tensor is
        input = make_tensor(shape[:-2] + (shape[-1], shape[-2]) if rank > 2 else (shape[1], shape[0]),
                            generator=generator, low=0.0, high=2.0).transpose(-1, -2)
    else:
        input = make_tensor(shape, layout=layout, generator=generator, low=0.0, high=2.0)
    input = input + rng.choice([0.0, -1.0])
    affine = rng.random() < 0.8
    weight = make_tensor(normalized, generator=generator) if affine else None
    bias = make_tensor(normalized, generator=generator) if affine and rng.random() < 0.8 else None
    return input, normalized, weight, bias, rng.choice(ACTIVATIONS), rng.choice([1e-5, 1e-3])


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(16))
def test_random_configurations(case, seed, generator):
    input, normalized, weight, bias, activation, eps = random_case(case_random(seed, case), generator)
    print(f"input {tuple(input.shape)} {input.stride()}, normalized {normalized}, weight {weight is not None}, bias "
          f"{bias is not None}, activation {activation}, eps {eps}")
    out = check_norm(lambda x, w, b: fastcnn.layer_norm(x, normalized, w, b, eps, activation=activation),
                     lambda x, w, b: F.layer_norm(x, normalized, w, b, eps), input, weight, bias, seed=seed,
                     activation=activation, reduction_length=math.prod(normalized))
    assert out.is_contiguous()  # torch's layer_norm returns a contiguous tensor


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("channels", [6, 200])  # 200: more than one tile across the channels of NCHW input
def test_layer_norm2d_matches_torchvisions_permute_and_is_laid_out_alike(layout, channels, seed, generator):
    input = make_tensor((2, channels, 5, 7), layout=layout, generator=generator)
    weight, bias = make_tensor((channels,), generator=generator), make_tensor((channels,), generator=generator)
    with count_launches() as launched:
        out = check_norm(lambda x, w, b: fastcnn.layer_norm2d(x, w, b, activation="gelu"),
                         _torchvision_layer_norm2d, input, weight, bias, seed=seed, activation="gelu",
                         reduction_length=channels)
    # forward; backward, and the sum of the parameter partials when more than one program made them
    assert launched["layer_norm"] in (2, 3), launched
    assert out.stride() == _torchvision_layer_norm2d(input, weight, bias).stride()


def test_the_permuted_nhwc_view_is_read_without_a_copy(seed, generator):
    """ConvNeXt's block norm: LayerNorm over C of x.permute(0, 2, 3, 1) for an NCHW x."""
    input = make_tensor((3, 8, 4, 5), generator=generator).permute(0, 2, 3, 1)
    weight = make_tensor((8,), generator=generator)
    with record_aten_ops() as names:
        out = fastcnn.layer_norm(input, (8,), weight)
    assert not [name for name in names if "copy" in name or "clone" in name or "contiguous" in name
                or "layer_norm" in name and not name.startswith("fastcnn::")], names
    assert_close(out, F.layer_norm(input.double(), (8,), weight.double()), torch.float32, what="NHWC view",
                 seed=seed, reduction_length=8)


def test_long_rows_merge_chunks(seed, generator):
    """Rows longer than one tile: the statistics merge chunk summaries (with a drift along the row)
    and the backward walks the row twice."""
    length = 5000
    drift = torch.linspace(0, 3, length)
    input = make_tensor((3, length), generator=generator) + drift.to(DEVICE)
    weight, bias = make_tensor((length,), generator=generator), make_tensor((length,), generator=generator)
    check_norm(lambda x, w, b: fastcnn.layer_norm(x, (length,), w, b, activation="silu"),
               lambda x, w, b: F.layer_norm(x, (length,), w, b), input, weight, bias, seed=seed, activation="silu",
               reduction_length=length)


def test_large_mean_small_std_keeps_fp32_accuracy(seed, generator):
    input = (torch.randn(5, 6, 40, generator=generator) * 0.5 + 3000.0).to(DEVICE)
    weight, bias = make_tensor((40,), generator=generator), make_tensor((40,), generator=generator)
    wanted = F.layer_norm(input.double(), (40,), weight.double(), bias.double())
    floor = 2 * relative_error(F.layer_norm(input, (40,), weight, bias), wanted)
    check_norm(lambda x, w, b: fastcnn.layer_norm(x, (40,), w, b), lambda x, w, b: F.layer_norm(x, (40,), w, b),
               input, weight, bias, seed=seed, activation=None, reduction_length=40, floor=floor)


def test_modules_are_drop_ins(seed, generator):
    for options in (dict(), dict(elementwise_affine=False), dict(bias=False)):
        ours, theirs = fastcnn.nn.LayerNorm((4, 5), **options), torch.nn.LayerNorm((4, 5), **options)
        assert isinstance(ours, torch.nn.LayerNorm) and list(ours.state_dict()) == list(theirs.state_dict())
        input = make_tensor((3, 4, 5), generator=generator)
        assert_close(ours(input), theirs(input), torch.float32, what=f"LayerNorm {options}", seed=seed)
    ours = fastcnn.nn.LayerNorm2d(6, eps=1e-6)
    input = make_tensor((2, 6, 3, 4), generator=generator)
    assert_close(ours(input), _torchvision_layer_norm2d(input, ours.weight, ours.bias), torch.float32,
                 what="LayerNorm2d", seed=seed)


def test_opinfo_samples(seed):
    checked = 0
    for sample in opinfo("nn.functional.layer_norm").sample_inputs(DEVICE, torch.float32, requires_grad=True):
        normalized, *rest = sample.args
        if sample.input.numel() == 0:
            continue
        reference = sample.input.detach().double().requires_grad_()
        out = check_norm(lambda x, w, b: fastcnn.layer_norm(x, normalized, w, b, **sample.kwargs),
                         lambda x, w, b: F.layer_norm(x, normalized, w, b, **sample.kwargs), sample.input,
                         *(list(rest) + [None, None])[:2], seed=seed, activation=None,
                         reduction_length=math.prod(normalized))
        assert out.shape == reference.shape
        checked += 1
    assert checked >= 5, checked


BAD_INPUTS = {
    "shape": ((torch.randn(2, 6, 3, 3), (4,)), RuntimeError,
              "Given normalized_shape=[4], expected input with shape [*, 4], but got input of size[2, 6, 3, 3]"),
    "weight_shape": ((torch.randn(2, 6, 3, 3), (3,), torch.ones(4)), RuntimeError,
                     "Expected weight to be of same shape as normalized_shape, but got weight of shape [4] and "
                     "normalized_shape = [3]"),
    "empty_shape": ((torch.randn(2, 3), ()), RuntimeError, "Expected normalized_shape to be at least 1-dimensional"),
    "int_shape": ((torch.randn(2, 3), 3), TypeError, "must be tuple of ints, not int"),
    "float_in_shape": ((torch.randn(2, 3), (3.0,)), TypeError, "must be tuple of ints, but found element of type "
                                                              "float at pos 0"),
    "integer": ((torch.ones(2, 3, dtype=torch.int64), (3,)), NotImplementedError, "not implemented for 'Long'"),
    "mixed_dtype": ((torch.randn(2, 3), (3,), torch.ones(3, dtype=torch.float16)), RuntimeError, "mixed dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_like_torch(name):
    args, error, fragment = BAD_INPUTS[name]
    args = tuple(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in args)
    assert_raises_like_torch(lambda: F.layer_norm(*args), lambda: fastcnn.layer_norm(*args), op="layer_norm",
                             fragment=fragment, error=error)


def test_deterministic_and_saves_only_the_input_and_row_statistics(generator):
    input = make_tensor((4, 7, 33), generator=generator).requires_grad_()
    weight = make_tensor((33,), generator=generator).requires_grad_()
    results = []
    for _ in range(2):
        input.grad = weight.grad = None
        out = fastcnn.layer_norm(input, (33,), weight, activation="hardswish")
        saved = out.grad_fn.saved_tensors
        out.backward(torch.ones_like(out))
        results.append((out, input.grad, weight.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert [tuple(t.shape) for t in saved if t is not None] == [(4, 7, 33), (2, 28), (33,)]


def test_empty_input_and_grads():
    input = torch.empty(0, 5, device=DEVICE, requires_grad=True)
    weight = torch.ones(5, device=DEVICE, requires_grad=True)
    out = fastcnn.layer_norm(input, (5,), weight)
    out.sum().backward()
    assert out.shape == input.shape and torch.equal(weight.grad, torch.zeros(5, device=DEVICE))


@gpu_only("fp16/bf16")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(4))
def test_half_precision_with_fp32_parameters(dtype, case, seed, generator):
    input, normalized, weight, bias, activation, eps = random_case(case_random(seed, case), generator)
    check_norm(lambda x, w, b: fastcnn.layer_norm(x, normalized, w, b, eps, activation=activation),
               lambda x, w, b: F.layer_norm(x, normalized, w, b, eps), input.to(dtype), weight, bias, seed=seed,
               activation=activation, reduction_length=math.prod(normalized), dtype=dtype)


@gpu_only("a tensor of more than 2**31 elements")
def test_more_than_2_31_elements_index_in_int64():
    input = torch.randn(2**23 + 64, 256, device=DEVICE, dtype=torch.bfloat16)
    out = fastcnn.layer_norm(input, (256,))
    tail = input[-4096:].float()
    assert_close(out[-4096:], F.layer_norm(tail, (256,)), torch.bfloat16, what="last rows", seed=0)
