"""fastcnn.conv2d and fastcnn.nn.Conv2d against float64 torch.nn.functional.conv2d.

Without a GPU the kernels run through Triton's interpreter, so shapes are small and odd. Each
test draws fresh random inputs from the printed seed (replay with FASTCNN_TEST_SEED).
"""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn import testing
from fastcnn._backend import kernel_module
from fastcnn.dtypes import TF32_RELATIVE_TOLERANCE, conv_uses_tf32
from fastcnn.testing import (DEVICE, assert_close, case_random, count_launches, make_tensor, opinfo, poisoned_like,
                             record_aten_ops)

ON_GPU = DEVICE == "cuda"
FORBIDDEN_ATEN = ("convolution", "conv2d", "_convolution", "cudnn", "mkldnn", "mm", "addmm", "bmm", "matmul",
                  "im2col", "unfold", "col2im")


@pytest.fixture(autouse=True)
def exact_fp32():
    """Compare fp32 against float64 without TF32 (a separate test covers the TF32 switch)."""
    with cudnn_tf32(False):
        yield


def cudnn_tf32(allowed):
    """torch's own switch (a context manager: torch.testing freezes the global cudnn flags)."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                       allow_tf32=allowed)


def _uses_forbidden(names):
    aten = [name for name in names if name.startswith("aten::")]
    return [name for name in aten if name.split("::")[-1].split(".")[0].lstrip("_") in
            {f.lstrip("_") for f in FORBIDDEN_ATEN} or "conv" in name]


def reference(input, weight, bias, grad_out, **arguments):
    """float64 F.conv2d output and gradients for the given operands."""
    leaves = [t.detach().to(torch.float64).requires_grad_() if t is not None else None for t in (input, weight, bias)]
    out = F.conv2d(*leaves, **arguments)
    out.backward(grad_out.to(torch.float64))
    return out, [leaf.grad if leaf is not None else None for leaf in leaves]


def check_conv(input, weight, bias, *, seed, dtype=torch.float32, **arguments):
    """Run fastcnn.conv2d forward and backward and compare all outputs with float64 torch."""
    input, weight = input.detach().requires_grad_(), weight.detach().requires_grad_()
    bias = bias.detach().requires_grad_() if bias is not None else None
    with count_launches() as launched:
        out = fastcnn.conv2d(input, weight, bias, **arguments)
    assert launched["conv2d"] == (1 if out.numel() else 0)
    grad_out = make_tensor(out.shape, dtype, generator=torch.Generator().manual_seed(seed + 1))
    expected, grads = reference(input, weight, bias, grad_out, **arguments)
    with count_launches() as launched:
        out.backward(grad_out)
    assert launched["conv2d"] >= 1 or input.numel() == 0
    groups = arguments.get("groups", 1)
    kernel_taps = weight.shape[2] * weight.shape[3]
    lengths = {"output": weight.shape[1] * kernel_taps, "grad_input": weight.shape[0] // groups * kernel_taps,
               "grad_weight": out.numel() // max(out.shape[-3], 1), "grad_bias": out.numel() // max(out.shape[-3], 1)}
    tf32 = dtype == torch.float32 and conv_uses_tf32(dtype, input.device)
    floor = TF32_RELATIVE_TOLERANCE if tf32 else 0.0
    for what, actual, wanted in (("output", out, expected), ("grad_input", input.grad, grads[0]),
                                 ("grad_weight", weight.grad, grads[1]), ("grad_bias", None if bias is None else bias.grad,
                                                                          grads[2])):
        if wanted is None:
            continue
        assert actual.dtype == dtype
        assert_close(actual, wanted, dtype, what=what, seed=seed, reduction_length=lengths[what],
                     error_floor=floor * wanted.norm().item())
    return out


def random_case(rng, generator):
    """One random conv2d configuration with odd sizes; returns (input, weight, bias, arguments)."""
    groups_kind = rng.choice(["single", "single", "grouped", "depthwise", "multiplier"])
    groups = {"single": 1, "grouped": rng.choice([2, 3]), "depthwise": rng.choice([3, 5]),
              "multiplier": rng.choice([2, 3])}[groups_kind]
    in_per_group = 1 if groups_kind in ("depthwise", "multiplier") else rng.choice([1, 3, 5, 6])
    out_per_group = {"depthwise": 1, "multiplier": rng.choice([2, 3])}.get(groups_kind, rng.choice([1, 3, 7]))
    kernel = (rng.choice([1, 2, 3, 5]), rng.choice([1, 2, 3, 4]))
    dilation = rng.choice([1, 2, (1, 3), (2, 1)])
    padding = rng.choice([0, 1, (1, 0), (3, 2), "same", "valid"])
    stride = 1 if padding == "same" else rng.choice([1, 2, 3, (2, 1), (1, 4), (3, 2)])
    pair = (lambda value: value if isinstance(value, tuple) else (value, value))
    spans = [d * (k - 1) + 1 for d, k in zip(pair(dilation), kernel)]
    height, width = spans[0] + rng.randint(0, 9), spans[1] + rng.randint(0, 9)
    batch = rng.choice([1, 2, 3])
    layout = rng.choice(testing.LAYOUTS)
    input = make_tensor((batch, groups * in_per_group, height, width), layout=layout, generator=generator)
    weight_layout = rng.choice(["contiguous", "channels_last"])
    weight = make_tensor((groups * out_per_group, in_per_group, *kernel), layout=weight_layout, generator=generator)
    bias = make_tensor((groups * out_per_group,), generator=generator) if rng.random() < 0.7 else None
    arguments = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return input, weight, bias, arguments


@pytest.mark.parametrize("case", range(12))
def test_random_configurations(case, seed, generator):
    rng = case_random(seed, case)
    input, weight, bias, arguments = random_case(rng, generator)
    print(f"input {tuple(input.shape)} stride {input.stride()}, weight {tuple(weight.shape)}, "
          f"bias {bias is not None}, {arguments}")
    check_conv(input, weight, bias, seed=seed, **arguments)


def test_opinfo_samples(seed):
    samples = list(opinfo("nn.functional.conv2d").sample_inputs(DEVICE, torch.float32, requires_grad=True))
    assert len(samples) >= 20
    for sample in samples:
        weight, bias = sample.args[0], (sample.args[1] if len(sample.args) > 1 else None)
        check_conv(sample.input, weight, bias, seed=seed, **sample.kwargs)


def test_opinfo_error_inputs():
    errors = list(opinfo("nn.functional.conv2d").error_inputs(DEVICE))
    assert errors
    for error in errors:
        sample = error.sample_input
        with count_launches() as launched, pytest.raises(error.error_type, match=error.error_regex):
            fastcnn.conv2d(sample.input, *sample.args, **sample.kwargs)
        assert not launched


BAD_INPUTS = {
    # name: (input shape, weight shape, kwargs, exception, message fragment)
    "channels_vs_groups": ((2, 6, 5, 5), (4, 4, 3, 3), dict(groups=2), RuntimeError, "to have 8 channels"),
    "out_channels_not_divisible": ((2, 4, 5, 5), (6, 2, 3, 3), dict(groups=4), RuntimeError, "divisible by 4"),
    "input_rank_5": ((1, 2, 4, 5, 5), (3, 2, 3, 3), {}, RuntimeError, "Expected 3D"),
    "input_rank_2": ((4, 5), (3, 4, 3, 3), {}, RuntimeError, "Expected 3D"),
    "weight_rank_3": ((2, 4, 5, 5), (3, 4, 3), {}, RuntimeError, "weight"),
    "kernel_larger_than_padded_input": ((1, 2, 3, 3), (3, 2, 5, 5), dict(padding=0), RuntimeError, "Kernel size"),
    "dilated_kernel_too_large": ((1, 2, 5, 5), (3, 2, 3, 3), dict(dilation=3), RuntimeError, "Kernel size"),
    "zero_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=0), RuntimeError, "stride"),
    "negative_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=(1, -2)), RuntimeError, "stride"),
    "negative_padding": ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=(-1, 0)), RuntimeError, "padding"),
    "zero_dilation": ((1, 2, 5, 5), (3, 2, 3, 3), dict(dilation=0), RuntimeError, "dilation"),
    "same_with_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding="same", stride=2), RuntimeError, "padding='same'"),
    "unknown_padding_string": ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding="full"), RuntimeError, "padding"),
    "three_strides": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=(1, 1, 1)), RuntimeError, "stride"),
    "float_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=1.5), TypeError, "stride"),
    "zero_groups": ((1, 2, 5, 5), (3, 2, 3, 3), dict(groups=0), RuntimeError, "groups"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_like_torch(name):
    input_shape, weight_shape, kwargs, error, fragment = BAD_INPUTS[name]
    input, weight = torch.randn(input_shape, device=DEVICE), torch.randn(weight_shape, device=DEVICE)
    with pytest.raises(error):
        F.conv2d(input, weight, **kwargs)  # the contract we copy
    with count_launches() as launched, pytest.raises(error, match=fragment) as raised:
        fastcnn.conv2d(input, weight, **kwargs)
    assert "fastcnn.conv2d" in str(raised.value)
    assert not launched


def test_bad_dtypes_and_devices_raise():
    input, weight = torch.randn(1, 2, 5, 5, device=DEVICE), torch.randn(3, 2, 3, 3, device=DEVICE)
    with pytest.raises(RuntimeError, match="weight type"):
        fastcnn.conv2d(input, weight.half())
    with pytest.raises(RuntimeError, match="bias type"):
        fastcnn.conv2d(input, weight, torch.randn(3, dtype=torch.float64, device=DEVICE))
    with pytest.raises(RuntimeError, match="bias to be 1-dimensional with 3 elements"):
        fastcnn.conv2d(input, weight, torch.randn(4, device=DEVICE))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        fastcnn.conv2d(input.long(), weight.long())
    with pytest.raises(TypeError, match="dtype torch.float64"):
        fastcnn.conv2d(input.double(), weight.double())
    with pytest.raises(TypeError, match="'weight' must be a Tensor"):
        fastcnn.conv2d(input, [[1.0]])
    if ON_GPU:
        with pytest.raises(RuntimeError, match="same device"):
            fastcnn.conv2d(input, weight.cpu())


@pytest.mark.parametrize("input_layout,weight_layout", [("contiguous", "contiguous"), ("channels_last", "contiguous"),
                                                        ("contiguous", "channels_last"), ("sliced", "contiguous")])
def test_memory_formats_follow_torch(input_layout, weight_layout, seed, generator):
    input = make_tensor((2, 6, 9, 7), layout=input_layout, generator=generator)
    weight = make_tensor((5, 6, 3, 3), layout=weight_layout, generator=generator)
    bias = make_tensor((5,), generator=generator)
    out = check_conv(input, weight, bias, seed=seed, padding=1, stride=(2, 1))
    expected = F.conv2d(input.double(), weight.double(), padding=1, stride=(2, 1))
    assert out.stride() == expected.stride()


def test_unbatched_input(seed, generator):
    input = make_tensor((3, 8, 7), generator=generator)
    weight = make_tensor((4, 3, 2, 3), generator=generator)
    out = check_conv(input, weight, make_tensor((4,), generator=generator), seed=seed, padding=(1, 0), dilation=2)
    assert out.shape == (4, 8, 3)


def test_empty_batch_and_empty_channels(generator):
    weight = make_tensor((4, 3, 3, 3), generator=generator).requires_grad_()
    bias = make_tensor((4,), generator=generator).requires_grad_()
    input = torch.empty(0, 3, 6, 5, device=DEVICE, requires_grad=True)
    out = fastcnn.conv2d(input, weight, bias, padding=1)
    assert out.shape == (0, 4, 6, 5)
    out.sum().backward()
    assert input.grad.shape == input.shape
    assert torch.equal(weight.grad, torch.zeros_like(weight)) and torch.equal(bias.grad, torch.zeros_like(bias))

    no_channels = torch.empty(2, 0, 6, 5, device=DEVICE)
    empty_weight = torch.empty(4, 0, 3, 3, device=DEVICE)
    out = fastcnn.conv2d(no_channels, empty_weight, bias.detach())
    expected = F.conv2d(no_channels, empty_weight, bias.detach())
    assert out.shape == expected.shape  # torch's shape rule for an input without channels


def test_only_requested_gradients_are_computed(seed, generator):
    input = make_tensor((2, 4, 6, 5), generator=generator).requires_grad_()
    weight = make_tensor((3, 4, 3, 3), generator=generator)
    bias = make_tensor((3,), generator=generator)
    out = fastcnn.conv2d(input, weight, bias)
    with count_launches() as launched:
        out.backward(torch.ones_like(out))
    assert launched["conv2d"] == 1  # grad-input only
    assert weight.grad is None and bias.grad is None and input.grad is not None


def test_kernels_run_and_no_aten_convolution_or_matmul(seed, generator):
    input = make_tensor((2, 5, 9, 8), generator=generator).requires_grad_()
    weight = make_tensor((6, 5, 3, 3), generator=generator).requires_grad_()
    bias = make_tensor((6,), generator=generator).requires_grad_()
    with record_aten_ops() as names, count_launches() as launched:
        out = fastcnn.conv2d(input, weight, bias, stride=2, padding=1)
        out.backward(torch.ones_like(out))
    assert launched["conv2d"] >= 4  # forward, dgrad, wgrad, bias
    assert not _uses_forbidden(names), _uses_forbidden(names)
    assert "aten::convolution" not in names
    assert {"fastcnn::conv2d", "fastcnn::conv2d_input_grad", "fastcnn::conv2d_weight_grad",
            "fastcnn::conv2d_bias_grad"} <= set(names), names


def test_multi_block_paths_with_small_tiles(monkeypatch, seed, generator):
    """Shrink the tiles so that small shapes cross tile edges in every dimension and the channel
    loop runs several blocks per tap."""
    kernels = kernel_module("conv2d")
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "BLOCK_M", 16)
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "BLOCK_N", 16)
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "BLOCK_K", 16)
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "GROUP_M", 2)
    monkeypatch.setattr(kernels, "autotune_enabled", lambda: False)
    input = make_tensor((3, 38, 7, 6), layout="channels_last", generator=generator)
    weight = make_tensor((34, 19, 3, 2), generator=generator)
    check_conv(input, weight, make_tensor((34,), generator=generator), seed=seed, padding=(1, 1), groups=2)


# (input, weight, grad_out shapes, groups): the implicit GEMM and the direct depthwise kernels.
PATHS = {"gemm": ((4, 3, 15, 13), (2, 3, 1, 2), (4, 2, 15, 14), 1),
         "depthwise": ((3, 4, 11, 9), (8, 1, 1, 2), (3, 8, 11, 10), 4)}


@pytest.mark.parametrize("path", list(PATHS))
def test_split_weight_grad_is_deterministic(path, seed, generator):
    """Few output tiles: the weight-grad reduction is cut into slices, added in a fixed order."""
    kernels = kernel_module("conv2d")
    input_shape, weight_shape, grad_out_shape, groups = PATHS[path]
    input = make_tensor(input_shape, generator=generator)
    grad_out = make_tensor(grad_out_shape, generator=generator)
    weight = make_tensor(weight_shape, generator=generator)
    arguments = dict(stride=(1, 1), padding=(0, 1), dilation=(1, 1), groups=groups, dot_precision="ieee")
    results = []
    for _ in range(2):
        grad_weight = poisoned_like(weight)
        assert kernels.weight_grad(input, grad_out, grad_weight, **arguments) == 2  # slices + their sum
        results.append(grad_weight)
    assert torch.equal(results[0], results[1])
    _, grads = reference(input, weight, None, grad_out, padding=(0, 1), groups=groups)
    assert_close(results[0], grads[1], torch.float32, what="grad_weight", seed=seed,
                 reduction_length=grad_out[:, 0].numel())


@pytest.mark.parametrize("path", ["gemm", "depthwise"])
def test_launchers_write_every_output_element(path, seed, generator):
    """Call the kernels on NaN-poisoned outputs: any element left unwritten shows."""
    kernels = kernel_module("conv2d")
    groups = 2 if path == "gemm" else 6
    input = make_tensor((2, 6, 9, 8), layout="channels_last", generator=generator)
    weight = make_tensor((4 if path == "gemm" else 12, 6 // groups, 3, 2), generator=generator)
    bias = make_tensor((weight.shape[0],), generator=generator)
    arguments = dict(stride=(2, 3), padding=(1, 1), dilation=(2, 1), groups=groups, dot_precision="ieee")
    out = torch.empty(2, weight.shape[0], 4, 3, device=DEVICE).fill_(float("nan"))
    kernels.forward(input, weight, bias, out, **arguments)
    grad_out = make_tensor(out.shape, generator=generator)
    grad_input, grad_weight, grad_bias = poisoned_like(input), poisoned_like(weight), poisoned_like(bias)
    kernels.input_grad(grad_out, weight, grad_input, **arguments)
    kernels.weight_grad(input, grad_out, grad_weight, **arguments)
    kernels.bias_grad(grad_out, grad_bias)
    torch_arguments = dict(stride=(2, 3), padding=1, dilation=(2, 1), groups=groups)
    expected, grads = reference(input, weight, bias, grad_out, **torch_arguments)
    for what, actual, wanted in (("output", out, expected), ("grad_input", grad_input, grads[0]),
                                 ("grad_weight", grad_weight, grads[1]), ("grad_bias", grad_bias, grads[2])):
        assert not torch.isnan(actual).any(), f"{what}: unwritten elements"
        assert_close(actual, wanted, torch.float32, what=what, seed=seed, reduction_length=100)


def test_int64_indexing_path(monkeypatch, seed, generator):
    """Tensors of 2**31+ elements switch the index math to int64; run that variant on a small case."""
    kernels = kernel_module("conv2d")
    monkeypatch.setattr(kernels, "_wide_index", lambda *tensors, extra_span=0: True)
    input = make_tensor((2, 4, 7, 6), layout="sliced", generator=generator)
    weight = make_tensor((5, 4, 3, 3), generator=generator)
    check_conv(input, weight, make_tensor((5,), generator=generator), seed=seed, stride=2, padding=1)


def test_module_is_a_drop_in_for_torch_conv2d(seed, generator):
    torch_conv = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2, bias=True)
    conv = fastcnn.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2, bias=True)
    assert isinstance(conv, torch.nn.Conv2d)
    assert repr(conv) == repr(torch_conv)
    assert list(conv.state_dict()) == list(torch_conv.state_dict())
    conv.load_state_dict(torch_conv.state_dict())
    torch_conv.load_state_dict(conv.state_dict())
    input = make_tensor((2, 4, 9, 8), generator=generator)
    assert_close(conv(input), torch_conv.double()(input.double()),
                 torch.float32, what="module output", seed=seed, reduction_length=12)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_module_padding_modes(padding_mode, seed, generator):
    torch_conv = torch.nn.Conv2d(3, 5, 3, padding=(1, 2), padding_mode=padding_mode).double()
    conv = fastcnn.nn.Conv2d(3, 5, 3, padding=(1, 2), padding_mode=padding_mode)
    conv.load_state_dict(torch_conv.state_dict())
    input = make_tensor((2, 3, 7, 6), generator=generator)
    assert_close(conv(input), torch_conv(input.double()), torch.float32, what=f"{padding_mode} output", seed=seed,
                 reduction_length=27)


def test_autocast_casts_like_f_conv2d(seed, generator):
    device_type = torch.device(DEVICE).type
    input = make_tensor((2, 3, 8, 7), generator=generator)
    weight = make_tensor((4, 3, 3, 3), generator=generator)
    bias = make_tensor((4,), generator=generator)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        out = fastcnn.conv2d(input, weight, bias, padding=1)
        expected = F.conv2d(input, weight, bias, padding=1)
    assert out.dtype == expected.dtype == torch.bfloat16
    reference_out = F.conv2d(input.bfloat16().double(), weight.bfloat16().double(), bias.bfloat16().double(), padding=1)
    assert_close(out, reference_out, torch.bfloat16, what="autocast output", seed=seed)


def test_tf32_follows_cudnn_flag():
    with cudnn_tf32(True):
        assert conv_uses_tf32(torch.float32, "cuda")
        assert not conv_uses_tf32(torch.float16, "cuda") and not conv_uses_tf32(torch.float32, "cpu")
    assert not conv_uses_tf32(torch.float32, "cuda")


# --- GPU only ----------------------------------------------------------------------------------

gpu_only = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (fp16/bf16 and large cases)")


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(6))
def test_half_precision_random_configurations(dtype, case, seed, generator):
    rng = case_random(seed, case)
    input, weight, bias, arguments = random_case(rng, generator)
    cast = (lambda t: None if t is None else t.to(dtype))
    check_conv(cast(input), cast(weight), cast(bias), seed=seed, dtype=dtype, **arguments)


@gpu_only
def test_tf32_matches_within_tf32_tolerance(seed, generator):
    input = make_tensor((8, 64, 28, 28), layout="channels_last", generator=generator)
    weight = make_tensor((64, 64, 3, 3), generator=generator)
    with cudnn_tf32(True):
        check_conv(input, weight, None, seed=seed, padding=1)


@gpu_only
def test_large_resnet_layer_bf16(seed, generator):
    input = make_tensor((128, 256, 28, 28), torch.bfloat16, layout="channels_last", generator=generator)
    weight = make_tensor((256, 256, 3, 3), torch.bfloat16, generator=generator)
    check_conv(input, weight, make_tensor((256,), torch.bfloat16, generator=generator), seed=seed,
               dtype=torch.bfloat16, padding=1)


@gpu_only
def test_more_than_2_31_elements(seed):
    total = torch.cuda.get_device_properties(0).total_memory
    if total < 40 * 2**30:
        pytest.skip("needs 40 GiB of GPU memory")
    input = torch.empty(2**31 // (64 * 64 * 64) + 8, 64, 64, 64, dtype=torch.float16, device="cuda").uniform_(-1, 1)
    weight = torch.empty(8, 64, 1, 1, dtype=torch.float16, device="cuda").uniform_(-1, 1)
    assert input.numel() >= 2**31
    out = fastcnn.conv2d(input, weight)
    tail = slice(input.shape[0] - 2, None)  # the images beyond 2**31 elements
    expected = F.conv2d(input[tail].double(), weight.double())
    assert_close(out[tail], expected, torch.float16, what="output beyond 2**31", seed=seed, reduction_length=64)
