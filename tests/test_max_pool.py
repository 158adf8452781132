"""fastcnn.max_pool2d and fastcnn.nn.MaxPool2d against F.max_pool2d: values, indices and
gradients must be identical (the data are small integers, so ties are everywhere, and the output
gradients are multiples of 1/4, so every sum is exact in any order)."""
import random

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.dtypes import aten_type_name
from fastcnn.testing import (DEVICE, assert_close, assert_raises_like_torch, case_random, check_opinfo_error_inputs,
                             count_launches, gpu_only, in_layout, make_tensor, opinfo, record_aten_ops)



def tie_heavy(shape, generator, layout="contiguous", dtype=torch.float32):
    return in_layout(torch.randint(-3, 4, shape, generator=generator).to(DEVICE, dtype), layout)


def check_pool(input, generator, **arguments):
    """Forward with indices and backward, compared element for element with torch."""
    ours_input = input.detach().clone().requires_grad_()
    theirs_input = input.detach().clone().requires_grad_()
    with count_launches() as launched:
        out, indices = fastcnn.max_pool2d(ours_input, return_indices=True, **arguments)
    assert launched["max_pool2d"] == (1 if out.numel() else 0)
    expected, expected_indices = F.max_pool2d(theirs_input, return_indices=True, **arguments)
    grad_out = (torch.randint(1, 9, out.shape, generator=generator) * 0.25 *
                (torch.randint(0, 2, out.shape, generator=generator) * 2 - 1)).to(DEVICE, input.dtype)
    out.backward(grad_out)
    expected.backward(grad_out)
    assert torch.equal(out, expected) or torch.equal(out.isnan(), expected.isnan()) and torch.equal(
        out.nan_to_num(), expected.nan_to_num()), "values differ"
    assert torch.equal(indices, expected_indices), "indices differ"
    assert torch.equal(ours_input.grad, theirs_input.grad), "gradients differ"
    assert out.stride() == expected.stride() and indices.stride() == expected_indices.stride()
    return out


def random_arguments(rng):
    kernel = (rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3, 5]))
    arguments = dict(kernel_size=kernel if rng.random() < 0.7 else kernel[0])
    kernel = kernel if isinstance(arguments["kernel_size"], tuple) else (kernel[0], kernel[0])
    arguments["stride"] = rng.choice([None, 1, 2, (1, 2), (3, 1)])
    arguments["padding"] = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
    arguments["dilation"] = rng.choice([1, 1, 2, (1, 2)])
    arguments["ceil_mode"] = rng.random() < 0.5
    return arguments


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(14))
def test_random_configurations(case, seed, generator):
    rng = case_random(seed, case)
    arguments = random_arguments(rng)
    dilation = arguments["dilation"] if isinstance(arguments["dilation"], tuple) else (arguments["dilation"],) * 2
    kernel = arguments["kernel_size"] if isinstance(arguments["kernel_size"], tuple) else (arguments["kernel_size"],) * 2
    height = dilation[0] * (kernel[0] - 1) + 1 + rng.randint(0, 8)
    width = dilation[1] * (kernel[1] - 1) + 1 + rng.randint(0, 8)
    unbatched = rng.random() < 0.2
    shape = (rng.randint(1, 5), height, width) if unbatched else (rng.randint(1, 3), rng.randint(1, 6), height, width)
    layout = rng.choice(["contiguous", "sliced"] + ([] if unbatched else ["channels_last"]))
    input = tie_heavy(shape, generator, layout)
    print(f"input {tuple(input.shape)} {input.stride()}, {arguments}")
    check_pool(input, generator, **arguments)


def test_nan_propagates_like_torch(generator):
    input = make_tensor((2, 3, 7, 6), generator=generator)
    input[0, 0, 1, 1] = float("nan")
    input[1, 2, 3, 2] = input[1, 2, 3, 3] = float("nan")  # two NaNs in one window: torch keeps the last
    for arguments in (dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, ceil_mode=True)):
        check_pool(input, generator, **arguments)


def test_minus_infinity_windows_take_the_first_tap(generator):
    input = torch.full((1, 2, 5, 5), float("-inf"), device=DEVICE)
    input[0, 1, 4, 4] = 1.0
    check_pool(input, generator, kernel_size=3, stride=2, padding=1)


def test_opinfo_samples(seed, generator):
    """PyTorch's own sample inputs, element for element. There are over a hundred, each two
    interpreted launches (over two minutes of CI): each run checks a different quarter of them,
    drawn with the run's seed (replay a run's draw with its seed; every sample is drawn across
    runs), and always the first and the last."""
    samples = list(opinfo("nn.functional.max_pool2d").sample_inputs(DEVICE, torch.float32, requires_grad=True))
    assert len(samples) > 100
    chosen = sorted(random.Random(seed).sample(range(1, len(samples) - 1), len(samples) // 4))
    for sample in [samples[0]] + [samples[index] for index in chosen] + [samples[-1]]:
        arguments = dict(sample.kwargs)
        arguments.pop("return_indices", None)
        check_pool(sample.input, generator, **arguments)


def test_opinfo_error_inputs():
    """PyTorch's own error inputs: its exception type and its message (the OpInfo's regex)."""
    check_opinfo_error_inputs("nn.functional.max_pool2d", fastcnn.max_pool2d, op="max_pool2d", minimum=5)


BAD_INPUTS = {
    # name: (input shape, arguments, words of torch's message that ours repeats)
    "zero_kernel": ((1, 2, 5, 5), dict(kernel_size=0), "stride should not be zero"),  # stride defaults to the kernel
    "negative_kernel": ((1, 2, 5, 5), dict(kernel_size=(2, -1)),
                        "kernel size should be greater than zero, but got kH: 2 kW: -1"),
    "zero_stride": ((1, 2, 5, 5), dict(kernel_size=2, stride=0), "stride should not be zero"),
    "negative_stride": ((1, 2, 5, 5), dict(kernel_size=2, stride=(1, -1)),
                        "stride should be greater than zero, but got dH: 1 dW: -1"),
    "zero_dilation": ((1, 2, 5, 5), dict(kernel_size=2, dilation=0),
                      "dilation should be greater than zero, but got dilationH: 0 dilationW: 0"),
    "negative_padding": ((1, 2, 5, 5), dict(kernel_size=2, padding=-1), "pad must be non-negative"),
    "padding_over_half_kernel": ((1, 2, 5, 5), dict(kernel_size=3, padding=2),
                                 "pad should be at most half of effective kernel size, but got pad=2, kernel_size=3 "
                                 "and dilation=1"),
    "padding_over_half_dilated": ((1, 2, 9, 9), dict(kernel_size=3, padding=2, dilation=2),
                                  "pad should be smaller than or equal to half of kernel size, but got padW = 2, "
                                  "padH = 2, kW = 3, kH = 3"),
    "empty_output": ((1, 3, 2, 2), dict(kernel_size=3),
                     "Given input size: (3x2x2). Calculated output size: (3x0x0). Output size is too small"),
    "rank_5": ((1, 1, 3, 5, 5), dict(kernel_size=2), "non-empty 3D or 4D (batch mode) tensor expected for input"),
    "no_channels": ((2, 0, 5, 5), dict(kernel_size=2),
                    "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input"),
    "three_kernel_sizes": ((1, 2, 5, 5), dict(kernel_size=(2, 2, 2)),
                           "max_pool2d: kernel_size must either be a single int, or a tuple of two ints"),
    "three_strides": ((1, 2, 5, 5), dict(kernel_size=2, stride=(1, 1, 1)),
                      "max_pool2d: stride must either be omitted, a single int, or a tuple of two ints"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_like_torch(name):
    shape, arguments, fragment = BAD_INPUTS[name]
    input = torch.randn(shape, device=DEVICE)
    assert_raises_like_torch(lambda: F.max_pool2d(input, **arguments), lambda: fastcnn.max_pool2d(input, **arguments),
                             op="max_pool2d", fragment=fragment)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_integer_inputs_pool_like_torch(dtype, layout, generator):
    """torch pools integers; so does fastcnn, comparing in the integers' own dtype: values and
    indices identical, the dtype's extremes included."""
    info = torch.iinfo(dtype)
    input = torch.randint(max(info.min, -50), min(info.max, 50), (2, 3, 9, 8), generator=generator).to(DEVICE, dtype)
    input[0, 0, :2, :2] = info.min
    input[1, 2, 4, 4] = info.max
    input = in_layout(input, layout)
    for arguments in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(2, 3), dilation=(2, 1),
                                                                       ceil_mode=True)):
        with count_launches() as launched:
            out, indices = fastcnn.max_pool2d(input, return_indices=True, **arguments)
        expected, expected_indices = F.max_pool2d(input, return_indices=True, **arguments)
        assert launched["max_pool2d"] == 1 and out.dtype == dtype
        assert torch.equal(out, expected) and torch.equal(indices, expected_indices)
        assert out.stride() == expected.stride()
    assert torch.equal(fastcnn.nn.MaxPool2d(2)(input), F.max_pool2d(input, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_small(dtype, generator):
    """fp16/bf16 everywhere the kernels run (the interpreter too), negative values included:
    compared after an exact widening to fp32."""
    for layout in ("contiguous", "channels_last"):
        check_pool(tie_heavy((2, 3, 9, 8), generator, layout, dtype), generator, kernel_size=3, stride=2, padding=1)


def test_strided_grad_output(generator):
    input = tie_heavy((2, 3, 9, 8), generator, "channels_last")
    ours, theirs = input.clone().requires_grad_(), input.clone().requires_grad_()
    out = fastcnn.max_pool2d(ours, 3, 2, 1)
    grad_out = (torch.randint(1, 9, out.shape[:-1] + (2 * out.shape[-1],), generator=generator) * 0.25).to(DEVICE)
    out.backward(grad_out[..., ::2])
    F.max_pool2d(theirs, 3, 2, 1).backward(grad_out[..., ::2])
    assert torch.equal(ours.grad, theirs.grad)


def test_float64_forward_and_backward(generator):
    """float64 needs no arithmetic forward and accumulates in float64 backward."""
    check_pool(tie_heavy((2, 3, 9, 8), generator, dtype=torch.float64) / 3, generator, kernel_size=3, stride=1,
               padding=1)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.uint16])
def test_dtypes_torch_does_not_pool_raise_torchs_error(dtype):
    input = torch.ones(1, 2, 4, 4, device=DEVICE).to(dtype)
    assert_raises_like_torch(lambda: F.max_pool2d(input, 2), lambda: fastcnn.max_pool2d(input, 2), op="max_pool2d",
                             fragment=f"\"max_pool2d\" not implemented for '{aten_type_name(dtype)}'")


def test_backward_keeps_one_byte_per_output_and_no_aten_pooling(generator):
    input = tie_heavy((2, 4, 9, 8), generator).requires_grad_()
    with record_aten_ops() as names, count_launches() as launched:
        out = fastcnn.max_pool2d(input, 3, 2, 1)
        (taps,) = out.grad_fn.saved_tensors
        out.backward(torch.ones_like(out))
    aten = [name for name in names if name.startswith("aten::")]
    assert not [name for name in aten if "pool" in name or "max" in name or "zeros" in name], names
    assert names.count("fastcnn::max_pool2d") == names.count("fastcnn::max_pool2d_backward") == 1, names
    assert launched["max_pool2d"] == 2
    assert taps.dtype == torch.uint8 and taps.shape == out.shape


# (input shape, pooling arguments): tiles that run on across images in several blocks (37 planes
# of 5x7), a plane larger than a tile in both passes (40x41 pooled 3x3/1: several pixel blocks per
# image), and a plane larger than a tile only in backward (29x37 pooled 2x2).
TILE_CASES = {"across_images": ((37, 3, 5, 7), dict(kernel_size=2, stride=1)),
              "within_images": ((2, 3, 40, 41), dict(kernel_size=3, stride=1, padding=1)),
              "mixed": ((3, 5, 29, 37), dict(kernel_size=2))}


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", sorted(TILE_CASES))
def test_tiles_across_and_within_images(name, layout, generator, monkeypatch):
    """Both ways ``indexing.pixel_tiles`` cuts the pixels (across images for small planes, per
    image for large ones), each over several blocks, match torch exactly. The tiles are the
    GPU's NCHW ones (the interpreter's are too large for these shapes to need several)."""
    from fastcnn.kernels import max_pool
    from fastcnn.kernels.indexing import pixel_tiles

    monkeypatch.setattr(max_pool, "_blocks", lambda channel_stride, epilogue=False: (256, 4))
    shape, arguments = TILE_CASES[name]
    input = tie_heavy(shape, generator, layout)
    out = check_pool(input, generator, **arguments)
    for tensor in (out, input):  # the forward's tiles, then the backward's
        images, channels, height, width = tensor.shape
        grid, pixel_blocks, span, _, _ = pixel_tiles(images, height * width, channels, max_pool._blocks(
            tensor.stride(1)))
        expected_span = {"across_images": True, "within_images": False, "mixed": tensor is out}[name]
        assert span == expected_span and pixel_blocks > 1, (grid, span)


def test_empty_batch(generator):
    input = torch.empty(0, 3, 6, 6, device=DEVICE, requires_grad=True)
    out, indices = fastcnn.max_pool2d(input, 2, return_indices=True)
    assert out.shape == indices.shape == (0, 3, 3, 3)
    out.sum().backward()
    assert input.grad.shape == input.shape


def test_module_is_a_drop_in(generator):
    module = fastcnn.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    torch_module = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    assert isinstance(module, torch.nn.MaxPool2d) and repr(module) == repr(torch_module)
    input = tie_heavy((2, 3, 9, 7), generator)
    for ours, theirs in zip(module(input), torch_module(input)):
        assert torch.equal(ours, theirs)




@gpu_only("fp16/bf16")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, generator):
    for layout in ("contiguous", "channels_last"):
        check_pool(tie_heavy((8, 64, 56, 56), generator, layout, dtype), generator, kernel_size=3, stride=2, padding=1)


def test_bytes_hand_counted():
    from fastcnn.ops import max_pool as max_pool_op

    # 16 inputs and 4 outputs of 4 bytes: forward reads 64 and writes 16, backward the same again.
    assert max_pool_op.bytes_moved(16, 4, 4, backward=True) == 160
    assert max_pool_op.bytes_moved(16, 4, 4, backward=False) == 80


def well_separated(shape, generator, layout, dtype):
    """Values whose windows never nearly tie after any per-channel affine: each channel a
    shuffled ladder of steps 1/16 (exact in fp16) around a mean of 3, so that the argmax of
    act(bn(x)) is the same in float64 and in the input's dtype (ReLU's zeros tie exactly)."""
    n, c, h, w = shape
    ladder = torch.stack([torch.randperm(n * h * w, generator=generator) for _ in range(c)]).to(torch.float64)
    values = (ladder / 16 - n * h * w / 32 + 3).reshape(c, n, h, w).transpose(0, 1)
    return in_layout(values.to(DEVICE, dtype).contiguous(), layout)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("training, activation", [(True, "relu"), (True, None), (True, "silu"), (False, "relu")])
def test_batch_norm_in_the_prologue_matches_float64(dtype, layout, training, activation, seed, generator):
    """fastcnn.batch_norm_max_pool2d = F.max_pool2d(act(F.batch_norm(...))) in float64: the output,
    the gradients of the input and of the norm's weight and bias, the running statistics; one
    pool launch each way and no pass of batch norm's own over act(bn(x))."""
    shape = (3, 5, 13, 11)
    x = well_separated(shape, generator, layout, dtype).requires_grad_()
    weight, bias = (make_tensor((5,), generator=generator).requires_grad_() for _ in range(2))
    running = [make_tensor((5,), generator=generator), make_tensor((5,), generator=generator).abs() + 0.5]
    ours_running = [t.clone() for t in running]
    pool = dict(kernel_size=3, stride=2, padding=1)
    with count_launches() as launched, record_aten_ops() as names:
        out = fastcnn.batch_norm_max_pool2d(x, *ours_running, weight, bias, training, 0.1, 1e-5, activation=activation,
                                            **pool)
        grad = make_tensor(out.shape, dtype, generator=generator)
        out.backward(grad)
    double = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    reference_running = [t.double() for t in running]
    normalized = F.batch_norm(double[0], *reference_running, double[1], double[2], training, 0.1, 1e-5)
    if activation is not None:
        normalized = getattr(F, activation)(normalized)
    reference = F.max_pool2d(normalized, **pool)
    reference.backward(grad.double())
    assert out.dtype == dtype and out.shape == reference.shape
    assert launched["max_pool2d"] == 2, launched  # forward and the backward with batch norm's sums
    assert "fastcnn::max_pool2d_normalized" in names and "fastcnn::batch_norm_apply" not in names, names
    assert "fastcnn::batch_norm_backward_from_sums" in names and "fastcnn::batch_norm_backward" not in names, names
    assert_close(out, reference, dtype, what="output", seed=seed)
    for name, mine, expected in zip(("input", "weight", "bias"), (x.grad, weight.grad, bias.grad),
                                    (t.grad for t in double)):
        assert_close(mine, expected, dtype, what=f"grad {name}", seed=seed, reduction_length=3 * 13 * 11)
    for mine, expected in zip(ours_running, reference_running):
        assert_close(mine, expected, torch.float32, what="running statistics", seed=seed,
                     reduction_length=3 * 13 * 11)
