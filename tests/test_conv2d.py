"""fastcnn.conv2d and fastcnn.nn.Conv2d against float64 torch.nn.functional.conv2d.

Without a GPU the kernels run through Triton's interpreter, so shapes are small and odd. Each
test draws fresh random inputs from the printed seed (replay with FASTCNN_TEST_SEED).
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn import testing
from fastcnn._layout import suggests_channels_last
from fastcnn.dtypes import TF32_RELATIVE_TOLERANCE, aten_type_name
from fastcnn.kernels import conv2d as conv2d_kernels
from fastcnn.kernels import conv2d_gemm
from fastcnn.cases import conv2d as conv2d_cases
from fastcnn.ops import conv2d as conv2d_op
from fastcnn.testing import (DEVICE, ON_GPU, assert_close, assert_raises_like_torch, case_random,
                             check_opinfo_error_inputs, count_launches, gpu_only, make_tensor, opinfo, poisoned_like,
                             record_aten_ops, same_layout)

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
    tf32 = dtype == torch.float32 and conv2d_op.uses_tf32(dtype, input.device)
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
    bias = (make_tensor((groups * out_per_group,), layout=rng.choice(["contiguous", "sliced"]), generator=generator)
            if rng.random() < 0.7 else None)
    arguments = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return input, weight, bias, arguments


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(12))
def test_random_configurations(case, seed, generator):
    rng = case_random(seed, case)
    input, weight, bias, arguments = random_case(rng, generator)
    print(f"input {tuple(input.shape)} stride {input.stride()}, weight {tuple(weight.shape)}, "
          f"bias {None if bias is None else bias.stride()}, {arguments}")
    check_conv(input, weight, bias, seed=seed, **arguments)


def test_opinfo_samples(seed):
    samples = list(opinfo("nn.functional.conv2d").sample_inputs(DEVICE, torch.float32, requires_grad=True))
    assert len(samples) >= 20
    for sample in samples:
        weight, bias = sample.args[0], (sample.args[1] if len(sample.args) > 1 else None)
        check_conv(sample.input, weight, bias, seed=seed, **sample.kwargs)


def test_opinfo_error_inputs():
    """PyTorch's own error inputs: its exception type and its message (the OpInfo's regex)."""
    check_opinfo_error_inputs("nn.functional.conv2d", fastcnn.conv2d, op="conv2d")


BAD_INPUTS = {
    # name: (input shape, weight shape, kwargs, words of torch's message that ours repeats)
    "channels_vs_groups": ((2, 6, 5, 5), (4, 4, 3, 3), dict(groups=2),
                           "expected input[2, 6, 5, 5] to have 8 channels, but got 6 channels instead"),
    "out_channels_not_divisible": ((2, 4, 5, 5), (6, 2, 3, 3), dict(groups=4),
                                   "expected weight to be divisible by 4 at dimension 0"),
    "input_rank_5": ((1, 2, 4, 5, 5), (3, 2, 3, 3), {},
                     "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [1, 2, 4, 5, 5]"),
    "input_rank_2": ((4, 5), (3, 4, 3, 3), {}, "Expected 3D (unbatched) or 4D (batched) input to conv2d"),
    # torch's message here is about the stride ("a list of 1 values"); ours names the weight's rank.
    "weight_rank_3": ((2, 4, 5, 5), (3, 4, 3), {}, None),
    "kernel_larger_than_padded_input": ((1, 2, 3, 3), (3, 2, 5, 5), dict(padding=0),
                                        "Calculated padded input size per channel: (3 x 3). Kernel size: (5 x 5). "
                                        "Kernel size can't be greater than actual input size"),
    "dilated_kernel_too_large": ((1, 2, 5, 5), (3, 2, 3, 3), dict(dilation=3), "Kernel size: (7 x 7)"),
    "zero_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=0), "non-positive stride is not supported"),
    "negative_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=(1, -2)), "non-positive stride is not supported"),
    "negative_padding": ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding=(-1, 0)), "negative padding is not supported"),
    "zero_dilation": ((1, 2, 5, 5), (3, 2, 3, 3), dict(dilation=0),
                      "dilation should be greater than zero, but got [0, 0]"),
    "same_with_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding="same", stride=2),
                         "padding='same' is not supported for strided convolutions"),
    "unknown_padding_string": ((1, 2, 5, 5), (3, 2, 3, 3), dict(padding="full"), "Invalid padding string: 'full'"),
    "three_strides": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=(1, 1, 1)),
                      "expected stride to be a single integer value or a list of 2 values to match the convolution "
                      "dimensions, but got stride=[1, 1, 1]"),
    "float_stride": ((1, 2, 5, 5), (3, 2, 3, 3), dict(stride=1.5), "stride"),
    "zero_groups": ((1, 2, 5, 5), (3, 2, 3, 3), dict(groups=0), "non-positive groups is not supported"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_like_torch(name):
    input_shape, weight_shape, kwargs, fragment = BAD_INPUTS[name]
    input, weight = torch.randn(input_shape, device=DEVICE), torch.randn(weight_shape, device=DEVICE)
    if fragment is None:  # a deliberate difference in wording: same exception type, our own words
        with pytest.raises(RuntimeError):
            F.conv2d(input, weight, **kwargs)
        with count_launches() as launched, pytest.raises(RuntimeError, match="fastcnn.conv2d: .*weight"):
            fastcnn.conv2d(input, weight, **kwargs)
        assert not launched
        return
    assert_raises_like_torch(lambda: F.conv2d(input, weight, **kwargs), lambda: fastcnn.conv2d(input, weight, **kwargs),
                             op="conv2d", fragment=fragment)


def test_bad_dtypes_and_devices_raise():
    input, weight = torch.randn(1, 2, 5, 5, device=DEVICE), torch.randn(3, 2, 3, 3, device=DEVICE)
    with pytest.raises(RuntimeError, match="weight type"):
        fastcnn.conv2d(input, weight.half())
    with pytest.raises(RuntimeError, match="bias type"):
        fastcnn.conv2d(input, weight, torch.randn(3, dtype=torch.float64, device=DEVICE))
    with pytest.raises(RuntimeError, match="bias to be 1-dimensional with 3 elements"):
        fastcnn.conv2d(input, weight, torch.randn(4, device=DEVICE))
    with pytest.raises(TypeError, match="'weight' must be a Tensor"):
        fastcnn.conv2d(input, [[1.0]])
    if ON_GPU:
        with pytest.raises(RuntimeError, match="same device"):
            fastcnn.conv2d(input, weight.cpu())


def test_dtypes_torch_rejects_raise_torchs_error():
    """bool (and the wider unsigned types) torch's convolution does not implement: its
    NotImplementedError, in its words, not a TypeError of our own."""
    for dtype in (torch.bool, torch.uint16):
        input, weight = torch.ones(1, 2, 5, 5, device=DEVICE).to(dtype), torch.ones(3, 2, 3, 3, device=DEVICE).to(dtype)
        assert_raises_like_torch(lambda: F.conv2d(input, weight), lambda: fastcnn.conv2d(input, weight), op="conv2d",
                                 fragment=f"not implemented for '{aten_type_name(dtype)}'")


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.int8, torch.complex64])
def test_dtypes_torch_computes_but_the_kernels_do_not_take_raise_type_error(dtype):
    """The one deliberate difference (README): torch's CPU convolution computes these; fastcnn's
    kernels take fp32, fp16 and bf16 and refuse the rest with a TypeError naming the dtype."""
    input, weight = torch.ones(1, 2, 5, 5, device=DEVICE).to(dtype), torch.ones(3, 2, 3, 3, device=DEVICE).to(dtype)
    with count_launches() as launched, pytest.raises(TypeError, match=f"dtype {dtype} is not supported"):
        fastcnn.conv2d(input, weight)
    assert not launched


@pytest.mark.parametrize("input_layout,weight_layout", [("contiguous", "contiguous"), ("channels_last", "contiguous"),
                                                        ("contiguous", "channels_last"), ("sliced", "contiguous")])
def test_memory_formats_follow_torch(input_layout, weight_layout, seed, generator):
    input = make_tensor((2, 6, 9, 7), layout=input_layout, generator=generator)
    weight = make_tensor((5, 6, 3, 3), layout=weight_layout, generator=generator)
    bias = make_tensor((5,), generator=generator)
    out = check_conv(input, weight, bias, seed=seed, padding=1, stride=(2, 1))
    expected = F.conv2d(input.double(), weight.double(), padding=1, stride=(2, 1))
    assert out.stride() == expected.stride()


def _channels_last_weight(shape, generator):
    """A weight allocated channels_last: for a 1x1 kernel its strides (C, 1, C, C) are also
    contiguous, the ambiguous case torch resolves as channels_last."""
    return torch.empty(shape, device=DEVICE, memory_format=torch.channels_last).copy_(make_tensor(shape, generator=generator))


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3)])
@pytest.mark.parametrize("input_layout", ["contiguous", "channels_last"])
def test_channels_last_weight_gives_torchs_layouts(kernel, input_layout, seed, generator):
    """Output, grad-input and grad-weight take torch's layout (its suggest_memory_format rule),
    also for a 1x1 channels_last weight beside a contiguous input."""
    input = make_tensor((2, 4, 6, 5), layout=input_layout, generator=generator).requires_grad_()
    weight = _channels_last_weight((3, 4, *kernel), generator).requires_grad_()
    out = check_conv(input, weight, None, seed=seed)
    expected = F.conv2d(input.detach().requires_grad_(), weight.detach().requires_grad_())
    assert same_layout(out, expected), (out.stride(), expected.stride())
    assert suggests_channels_last(out)  # a channels_last weight makes every result channels_last
    grad_input, grad_weight = torch.autograd.grad(fastcnn.conv2d(input, weight), (input, weight),
                                                  torch.ones_like(expected))
    assert suggests_channels_last(grad_input) and suggests_channels_last(grad_weight)


def test_layout_rule_is_atens_suggest_memory_format():
    """Every permutation of a few shapes with size-1 dimensions, against torch's own Python copy
    of ATen's rule (where this torch has one)."""
    prims = pytest.importorskip("torch._prims_common")
    if not hasattr(prims, "suggest_memory_format"):
        pytest.skip("this torch has no torch._prims_common.suggest_memory_format")
    checked = 0
    for shape in [(3, 4, 1, 1), (1, 4, 1, 1), (3, 1, 1, 1), (3, 4, 3, 1), (1, 1, 3, 3), (2, 3, 4, 5), (2, 1, 3, 1)]:
        for order in itertools.permutations(range(4)):
            permuted = torch.empty([shape[d] for d in order]).permute([order.index(d) for d in range(4)])
            for tensor in (permuted, torch.empty(shape, memory_format=torch.channels_last)):
                expected = prims.suggest_memory_format(tensor) == torch.channels_last
                assert suggests_channels_last(tensor) == expected, (shape, tensor.stride())
                checked += 1
    assert checked == 7 * 24 * 2


def test_non_contiguous_bias_input_and_weight(seed, generator):
    """A Conv2d(3, 8, 7, stride=2, padding=3) whose bias is a strided view,
    and the functional with every operand non-contiguous (PyTorch's test_conv_backend cases);
    the GEMM and the depthwise kernels."""
    conv = fastcnn.nn.Conv2d(3, 8, 7, stride=2, padding=3)
    conv.bias = torch.nn.Parameter(make_tensor((8, 2), generator=generator)[:, 1])
    input = make_tensor((2, 3, 32, 32), generator=generator)
    assert not conv.bias.is_contiguous()
    assert_close(conv(input), F.conv2d(input.double(), conv.weight.double(), conv.bias.double(), 2, 3),
                 torch.float32, what="strided-bias module output", seed=seed, reduction_length=3 * 49)
    input = make_tensor((2, 10, 9, 8), generator=generator)[:, ::2]  # channels strided
    weight = make_tensor((6, 5, 3, 3), generator=generator).transpose(2, 3)
    bias = make_tensor((6, 3), generator=generator)[:, 2]
    check_conv(input, weight, bias, seed=seed, padding=1)
    depthwise_weight = make_tensor((10, 1, 3, 2), generator=generator)[::2]
    check_conv(input, depthwise_weight, bias[:5], seed=seed, padding=1, groups=5)
    for kernel, groups in ((weight, 1), (depthwise_weight, 5)):  # a strided upstream gradient too
        leaves = [t.detach().requires_grad_() for t in (input, kernel)]
        out = fastcnn.conv2d(*leaves, padding=1, groups=groups)
        grad_out = make_tensor(out.shape[:-1] + (2 * out.shape[-1],), generator=generator)[..., ::2]
        out.backward(grad_out)
        _, grads = reference(input, kernel, None, grad_out, padding=1, groups=groups)
        for what, actual, expected in (("grad_input", leaves[0].grad, grads[0]), ("grad_weight", leaves[1].grad,
                                                                                   grads[1])):
            assert_close(actual, expected, torch.float32, what=f"{what} from a strided grad_output", seed=seed,
                         reduction_length=out.numel())


def test_unbatched_input(seed, generator):
    input = make_tensor((3, 8, 7), generator=generator)
    weight = make_tensor((4, 3, 2, 3), generator=generator)
    out = check_conv(input, weight, make_tensor((4,), generator=generator), seed=seed, padding=(1, 0), dilation=2)
    assert out.shape == (4, 8, 3)


def test_empty_batch_and_empty_channels(generator):
    """Empty batches and inputs without channels: torch's shapes, layouts and values, gradients
    included (the bias still gets its gradient of zeros)."""
    weight = make_tensor((4, 3, 3, 3), generator=generator)
    bias = make_tensor((4,), generator=generator)
    cases = [(torch.empty(0, 3, 6, 5, device=DEVICE), weight, dict(padding=1)),
             (torch.empty(2, 0, 6, 5, device=DEVICE), torch.empty(4, 0, 3, 3, device=DEVICE), {}),
             (torch.empty(0, 3, 6, 5, device=DEVICE).contiguous(memory_format=torch.channels_last), weight, {})]
    for input, kernel, options in cases:
        results = []
        for function in (fastcnn.conv2d, F.conv2d):
            leaves = [t.detach().clone().requires_grad_() for t in (input, kernel, bias)]
            out = function(*leaves, **options)
            out.sum().backward()
            results.append((out, *[leaf.grad for leaf in leaves]))
        for actual, expected in zip(*results):
            assert actual.shape == expected.shape and actual.dtype == expected.dtype
            assert same_layout(actual, expected), (actual.stride(), expected.stride())
            torch.testing.assert_close(actual, expected, rtol=0, atol=0)


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
    kernels = conv2d_gemm
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "BLOCK_M", 16)
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "BLOCK_N", 16)
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "BLOCK_K", 16)
    monkeypatch.setitem(kernels.DEFAULT_CONFIG[0], "GROUP_M", 2)
    monkeypatch.setattr(kernels, "autotune_enabled", lambda: False)
    input = make_tensor((3, 38, 7, 6), layout="channels_last", generator=generator)
    weight = make_tensor((34, 19, 3, 2), generator=generator)
    check_conv(input, weight, make_tensor((34,), generator=generator), seed=seed, padding=(1, 1), groups=2)


def test_autotune_configs_that_cannot_launch_or_spill_are_pruned():
    """What scripts/static_gpu_check.py read from ptxas, as the autotuners' pruning rule: no config
    over an H100's 227 KB of shared memory, fp32 accumulators within 64 registers, small tiles
    for an output without contiguous channels, no narrow FMA tiles."""
    import triton

    def config(m, n, k, warps, stages):
        return triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8), num_warps=warps, num_stages=stages)

    large = config(128, 256, 64, 8, 3)
    assert conv2d_gemm.shared_bytes(large, 4) == 3 * (128 + 256) * 64 * 4 > conv2d_gemm.MAX_SHARED_BYTES
    assert conv2d_gemm.fits(large, 2) and not conv2d_gemm.fits(large, 4)
    assert not conv2d_gemm.fits(large, 2, output_channels_contiguous=False)
    assert conv2d_gemm.fits(config(128, 64, 32, 4, 4), 2, output_channels_contiguous=False)
    assert not conv2d_gemm.fits(config(64, 16, 32, 4, 4), 4, fma=True)
    assert conv2d_gemm.fits(config(64, 64, 64, 4, 4), 4, fma=True)
    # the input prologue's operand in registers: beside 128 accumulator registers per thread only
    # on 8 warps with at most 32 of its elements per thread (the forward's A, grad-weight's B)
    assert conv2d_gemm.fits(large, 2, prologue="A") and not conv2d_gemm.fits(large, 2, prologue="B")
    wide = config(256, 128, 64, 8, 3)
    assert conv2d_gemm.fits(wide, 2, prologue="B") and not conv2d_gemm.fits(wide, 2, prologue="A")
    assert not conv2d_gemm.fits(config(128, 128, 32, 4, 4), 2, prologue="B")
    assert conv2d_gemm.fits(config(128, 128, 64, 8, 3), 2, prologue="A")
    # the moments epilogue beside 128 accumulator registers per thread spills on 4 warps only
    assert not conv2d_gemm.fits(config(128, 128, 32, 4, 4), 2, moments=True)
    assert conv2d_gemm.fits(large, 2, moments=True) and conv2d_gemm.fits(config(128, 128, 32, 4, 4), 2)
    # and its tiles, as the grad-input epilogue's, cover whole 128-row summaries
    assert not conv2d_gemm.fits(config(64, 64, 64, 4, 4), 2, moments=True)
    assert not conv2d_gemm.fits(config(64, 64, 64, 4, 4), 2, epilogue=True)
    assert not conv2d_gemm.fits(config(128, 128, 32, 4, 4), 2, epilogue=True)  # the prologue's registers too
    assert conv2d_gemm.fits(config(64, 64, 64, 4, 4), 2, prologue="A")


# (input, weight, grad_out shapes, groups): the implicit GEMM and the direct depthwise kernels.
PATHS = {"gemm": ((4, 3, 15, 13), (2, 3, 1, 2), (4, 2, 15, 14), 1),
         "depthwise": ((3, 4, 11, 9), (8, 1, 1, 2), (3, 8, 11, 10), 4)}


@pytest.mark.parametrize("path", list(PATHS))
def test_split_weight_grad_is_deterministic(path, seed, generator):
    """Few output tiles: the weight-grad reduction is cut into slices, added in a fixed order."""
    kernels = conv2d_kernels
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


def test_weight_grad_of_a_gradient_whose_pixels_are_not_one_run(seed, generator):
    """dy a channels_last view sliced along W: channel stride 1, so no copy, but its pixels are
    not one run, so grad-weight must address them by (image, row, column) rather than by the
    flat index it uses for a dense dy (kernels/conv2d_gemm.py, DENSE_DY)."""
    from fastcnn.kernels.indexing import dense_pixels

    input = make_tensor((3, 5, 7, 6), layout="channels_last", generator=generator)
    weight = make_tensor((4, 5, 3, 2), generator=generator)
    grad_out = make_tensor((3, 4, 7, 9), layout="channels_last", generator=generator)[..., 1:8]
    assert grad_out.stride(1) == 1 and not dense_pixels(grad_out)
    assert dense_pixels(grad_out.contiguous(memory_format=torch.channels_last))
    grad_weight = poisoned_like(weight)
    conv2d_kernels.weight_grad(input, grad_out, grad_weight, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1,
                               dot_precision="ieee")
    _, grads = reference(input, weight, None, grad_out, padding=1)
    assert_close(grad_weight, grads[1], torch.float32, what="grad_weight of a sliced dy", seed=seed,
                 reduction_length=grad_out[:, 0].numel())


@pytest.mark.parametrize("path", ["gemm", "depthwise"])
def test_launchers_write_every_output_element(path, seed, generator):
    """Call the kernels on NaN-poisoned outputs: any element left unwritten shows."""
    kernels = conv2d_kernels
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
    """Tensors of 2**31+ elements switch the index math to int64; run that variant on a small case
    (every kernel module of conv2d decides it through its own import of ``needs_wide_index``)."""
    from fastcnn.kernels import conv2d_depthwise

    for kernels in (conv2d_kernels, conv2d_gemm, conv2d_depthwise):
        monkeypatch.setattr(kernels, "needs_wide_index", lambda *tensors, extra_span=0: True)
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
        assert conv2d_op.uses_tf32(torch.float32, "cuda")
        assert not conv2d_op.uses_tf32(torch.float16, "cuda") and not conv2d_op.uses_tf32(torch.float32, "cpu")
    assert not conv2d_op.uses_tf32(torch.float32, "cuda")


@pytest.mark.parametrize("allowed", [True, False])
def test_tf32_choice_reaches_every_gemm_launch(allowed, monkeypatch, generator):
    """Whatever the predicate says for a tensor is what the forward, grad-input and grad-weight
    kernels are launched with (on CPU the predicate is forced: TF32 exists only on CUDA)."""
    kernels = conv2d_gemm
    monkeypatch.setattr(conv2d_op, "uses_tf32", lambda dtype, device: allowed and dtype == torch.float32)
    precisions = []
    launch = kernels.launch

    def recording_launch(autotuned, kernel, grid, args, constexprs, extents, **options):
        precisions.append((kernel.__name__, constexprs["DOT_PRECISION"]))
        return launch(autotuned, kernel, grid, args, constexprs, extents, **options)

    monkeypatch.setattr(kernels, "launch", recording_launch)
    input = make_tensor((2, 4, 6, 5), generator=generator).requires_grad_()
    weight = make_tensor((3, 4, 3, 3), generator=generator).requires_grad_()
    fastcnn.conv2d(input, weight, padding=1).sum().backward()
    expected = "tf32" if allowed else "ieee"
    assert sorted(precisions) == [("_conv2d_forward_kernel", expected), ("_conv2d_input_grad_kernel", expected),
                                  ("_conv2d_weight_grad_kernel", expected)], precisions


# --- GPU only ----------------------------------------------------------------------------------



@pytest.mark.every_triton
@gpu_only("fp16/bf16 and large cases")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(6))
def test_half_precision_random_configurations(dtype, case, seed, generator):
    rng = case_random(seed, case)
    input, weight, bias, arguments = random_case(rng, generator)
    cast = (lambda t: None if t is None else t.to(dtype))
    check_conv(cast(input), cast(weight), cast(bias), seed=seed, dtype=dtype, **arguments)


@gpu_only("fp16/bf16 and large cases")
def test_tf32_matches_within_tf32_tolerance_and_is_really_used(seed, generator):
    """With TF32 allowed the result is within TF32's tolerance and measurably less exact than
    with it off (a 10-bit mantissa loses about 2**-11 per product where fp32 loses 2**-24): the
    tensor cores' TF32 path really ran."""
    input = make_tensor((8, 64, 28, 28), layout="channels_last", generator=generator)
    weight = make_tensor((64, 64, 3, 3), generator=generator)
    expected = F.conv2d(input.double(), weight.double(), padding=1)
    with cudnn_tf32(True):
        check_conv(input, weight, None, seed=seed, padding=1)
        tf32_error = testing.relative_error(fastcnn.conv2d(input, weight, padding=1), expected)
    ieee_error = testing.relative_error(fastcnn.conv2d(input, weight, padding=1), expected)
    print(f"relative error: TF32 {tf32_error:.2e}, IEEE fp32 {ieee_error:.2e}")
    assert tf32_error > 10 * ieee_error


@gpu_only("fp16/bf16 and large cases")
def test_large_resnet_layer_bf16(seed, generator):
    input = make_tensor((128, 256, 28, 28), torch.bfloat16, layout="channels_last", generator=generator)
    weight = make_tensor((256, 256, 3, 3), torch.bfloat16, generator=generator)
    check_conv(input, weight, make_tensor((256,), torch.bfloat16, generator=generator), seed=seed,
               dtype=torch.bfloat16, padding=1)


@gpu_only("fp16/bf16 and large cases")
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


# --- cost formula and benchmark suites (no GPU needed) ---------------------------------------

def test_flops_hand_counted():
    # 4x4 output, 3 output channels, 2 input channels, 3x3 taps: 16 * 3 * 2 * 9 multiply-adds.
    assert conv2d_cases.ConvLayer("t", 2, 3, 3, 1, 1, 1, 4).flops(1) == 2 * 16 * 3 * 2 * 9
    # depthwise: each output channel reads one input channel; stride 2 halves the output side.
    assert conv2d_cases.ConvLayer("dw", 8, 8, 3, 2, 1, 8, 8).flops(2) == 2 * 2 * 4 * 4 * 8 * 1 * 9
    assert conv2d_op.flops(2, 6, 4, 3, (3, 2), (5, 7)) == 2 * 2 * 35 * 4 * 2 * 6


def test_benchmark_layer_output_size_is_the_ops():
    """A suite layer's output size comes from the op's own formula, dilation included."""
    layer = conv2d_cases.ConvLayer("d", 4, 4, 3, 1, 1, 1, 10, dilation=2)
    assert layer.out_size == F.conv2d(torch.zeros(1, 4, 10, 10), torch.zeros(4, 4, 3, 3), padding=1,
                                      dilation=2).shape[-1] == 8


def test_resnet_suites_match_the_architectures():
    resnet18, resnet50 = conv2d_cases.resnet_conv_layers(18), conv2d_cases.resnet_conv_layers(50)
    assert resnet18[0] == conv2d_cases.ConvLayer("conv1", 3, 64, 7, 2, 3, 1, 224) and resnet18[0].out_size == 112
    assert len(resnet18) == 11 and len(resnet50) == 23  # distinct shapes
    assert {layer.out_size for layer in resnet50} == {112, 56, 28, 14, 7}
    # ResNet-50 multiply-adds over its distinct layers can't exceed the whole network's 4.1 GMACs.
    assert sum(layer.flops(1) for layer in resnet50) / 2 < 4.1e9
    assert conv2d_cases.SUITES["mobilenet_v2_depthwise"]()[0].groups == 144


def test_speedup_summary_is_a_geometric_mean():
    records = [dict(suite="bench", implementation="fastcnn", layer_kind=kind, op="conv2d_forward", dtype="bf16",
                    layout="channels_last", speedup_vs_eager=s) for kind, s in (("1x1", 2.0), ("spatial", 0.5))]
    summary = conv2d_cases.speedup_summary(records + [dict(records[0], implementation="eager")])
    assert summary["conv2d_forward/bf16_channels_last/all"] == pytest.approx(1.0)
    assert summary["conv2d_forward/bf16_channels_last/1x1"] == pytest.approx(2.0)
    layers = {layer.name: conv2d_cases.layer_kind(layer) for suite in conv2d_cases.SUITES.values() for layer in suite()}
    assert layers["conv1"] == "spatial" and layers["layer1.0.conv1"] == "1x1"
    assert layers[conv2d_cases.MOBILENET_V2_DEPTHWISE.name] == "depthwise"


# ----------------------------------------------------------------------------- the input prologue
def _prologue_reference(input, scale, shift, kind, parameter, weight, bias, arguments, dtype, norm=None):
    """float64 conv2d(act(input·scale + shift)) (or of act(batch_norm(input)) with ``norm`` =
    (running_mean, running_var, training, momentum, eps), running statistics updated in float64
    copies) as the unfused layers compute it: act(...) stored in ``dtype`` before the convolution."""
    leaves = [t.detach().to(torch.float64).requires_grad_() if t is not None else None
              for t in (input, scale, shift, weight, bias)]
    x, s, t, w, b = leaves
    running = None
    if norm is not None:
        running_mean, running_var, training, momentum, eps = norm
        running = [None if r is None else r.to(torch.float64) for r in (running_mean, running_var)]
        transformed = F.batch_norm(x, *running, s, t, training, momentum, eps)
    else:
        shape = (1, -1, 1, 1)
        transformed = x * s.reshape(shape) if s is not None else x
        transformed = transformed + t.reshape(shape) if t is not None else transformed
    if kind is not None:
        transformed = fastcnn.ops.activation.module_for(kind, parameter).double()(transformed)
    # The unfused layers store act(...) in the input's dtype; its rounding is not the kernels' error.
    stored = transformed + (transformed.detach().to(dtype).to(torch.float64) - transformed.detach())
    out = F.conv2d(stored, w, b, **arguments)
    return out, leaves, running


def _prologue_case(rng, generator, dtype):
    input, weight, bias, arguments = random_case(rng, generator)
    channels = input.shape[1]
    scale = make_tensor((channels,), generator=generator, low=0.5, high=2.0) if rng.random() < 0.8 else None
    shift = make_tensor((channels,), generator=generator) if rng.random() < 0.8 else None
    kind = rng.choice((None,) + fastcnn.ops.activation.KINDS)
    cast = (lambda t: None if t is None else t.to(dtype))
    return cast(input), cast(scale), cast(shift), kind, cast(weight), cast(bias), arguments


def _backward_and_compare(out, expected, leaves, references, names, *, dtype, seed, weight, groups, generator):
    """Backward of ``out`` and of the float64 ``expected`` with one random output gradient; then
    the output and each named leaf's gradient against its reference's, tolerances scaled by the
    length of the sum that produced each."""
    grad_out = make_tensor(out.shape, dtype, generator=generator)
    out.backward(grad_out)
    expected.backward(grad_out.to(torch.float64))
    taps = weight.shape[2] * weight.shape[3]
    pixels = out.numel() // max(out.shape[1], 1)
    lengths = {"grad_weight": pixels, "grad_bias": pixels}
    assert_close(out, expected, dtype, what="output", seed=seed, reduction_length=weight.shape[1] * taps)
    for what, leaf, reference in zip(names, leaves, references):
        if reference is None:
            continue
        assert leaf.grad is not None, what
        length = lengths.get(what, pixels * (weight.shape[0] // groups) * taps)
        assert_close(leaf.grad, reference.grad, dtype, what=what, seed=seed, reduction_length=length)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(6))
def test_input_prologue_random_configurations(dtype, case, seed, generator):
    """conv2d(input_scale=, input_shift=, input_activation=) against float64 F.conv2d of
    act(x·scale + shift): every layout, groups and depthwise, stride, dilation and the padding of
    the transformed input ('same' included), every activation, each of scale and shift optional;
    the output and the gradients of x, scale, shift, weight and bias."""
    rng = case_random(seed, case)
    input, scale, shift, kind, weight, bias, arguments = _prologue_case(rng, generator, dtype)
    print(f"input {tuple(input.shape)} stride {input.stride()}, weight {tuple(weight.shape)}, {arguments}, "
          f"scale {scale is not None}, shift {shift is not None}, activation {kind}")
    parameter = fastcnn.ops.activation.resolve_activation("test", kind)[1]
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (input, scale, shift, weight, bias)]
    with count_launches() as launched:
        out = fastcnn.conv2d(leaves[0], leaves[3], leaves[4], **arguments, input_scale=leaves[1],
                             input_shift=leaves[2], input_activation=kind)
    assert launched["conv2d"] == 1 and out.dtype == dtype
    expected, references, _ = _prologue_reference(input, scale, shift, kind, parameter, weight, bias, arguments, dtype)
    _backward_and_compare(out, expected, leaves, references,
                          ("grad_input", "grad_input_scale", "grad_input_shift", "grad_weight", "grad_bias"),
                          dtype=dtype, seed=seed, weight=weight, groups=arguments["groups"], generator=generator)


def _batch_norm_case(rng, generator, dtype):
    input, scale, shift, kind, weight, bias, arguments = _prologue_case(rng, generator, dtype)
    if input.shape[0] * input.shape[2] * input.shape[3] < 2:  # training needs two values per channel
        input = torch.cat([input, input.flip(0) * 0.5 + 0.25])
    channels = input.shape[1]
    running = (make_tensor((channels,), generator=generator), make_tensor((channels,), generator=generator).abs())
    return input, scale, shift, kind, weight, bias, arguments, running


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
@pytest.mark.parametrize("case", range(4))
def test_batch_norm_conv2d_random_configurations(dtype, training, case, seed, generator):
    """fastcnn.batch_norm_conv2d against float64 F.conv2d(act(F.batch_norm(...))): output, the
    gradients of x, the norm's weight and bias, the conv's weight and bias, and the running
    statistics (updated in training, folded into the prologue in eval; affine optional)."""
    rng = case_random(seed, case)
    input, norm_weight, norm_bias, kind, weight, bias, arguments, running = _batch_norm_case(rng, generator, dtype)
    running = [r.to(torch.float32) for r in running]
    norm_weight, norm_bias = (None if t is None else t.to(torch.float32) for t in (norm_weight, norm_bias))
    print(f"input {tuple(input.shape)} stride {input.stride()}, weight {tuple(weight.shape)}, {arguments}, "
          f"affine {norm_weight is not None}/{norm_bias is not None}, activation {kind}")
    parameter = fastcnn.ops.activation.resolve_activation("test", kind)[1]
    momentum, eps = rng.choice([0.1, 0.5]), rng.choice([1e-5, 1e-3])
    ours = [r.clone() for r in running]
    leaves = [t.detach().requires_grad_() if t is not None else None
              for t in (input, norm_weight, norm_bias, weight, bias)]
    with record_aten_ops() as names, count_launches() as launched:
        out = fastcnn.batch_norm_conv2d(leaves[0], *ours, leaves[1], leaves[2], training, momentum, eps, leaves[3],
                                        leaves[4], **arguments, activation=kind)
    assert launched["conv2d"] == 1 and launched["batch_norm"] == (2 if training else 1), launched
    assert "fastcnn::conv2d_normalized" in names and not _uses_forbidden(names), names
    assert not [name for name in names if "batch_norm" in name and name.startswith("aten::")], names
    expected, references, running64 = _prologue_reference(input, norm_weight, norm_bias, kind, parameter, weight, bias,
                                                           arguments, dtype, norm=(*running, training, momentum, eps))
    _backward_and_compare(out, expected, leaves, references,
                          ("grad_input", "grad_norm_weight", "grad_norm_bias", "grad_weight", "grad_bias"),
                          dtype=dtype, seed=seed, weight=weight, groups=arguments["groups"], generator=generator)
    for what, actual, wanted in zip(("running_mean", "running_var"), ours, running64):
        assert_close(actual, wanted, torch.float32, what=what, seed=seed,
                     reduction_length=input.numel() // input.shape[1])


@pytest.mark.parametrize("multiplier", [1, 2])
def test_batch_norm_depthwise_conv2d_sums_batch_norm_backward_in_grad_input(multiplier, seed, generator):
    """MobileNet's bn → relu6 → depthwise conv: the depthwise grad-input's epilogue takes the
    gradient of act(bn(x)) through relu6 and sums batch norm's backward terms
    (kernels/conv2d_depthwise.py), so batch norm's backward is its apply from those sums, with no
    pass of its own over the gradient; every gradient against float64 torch."""
    input = make_tensor((3, 6, 9, 7), layout="channels_last", generator=generator)
    weight = make_tensor((6 * multiplier, 1, 3, 3), generator=generator)
    norm_weight, norm_bias = make_tensor((6,), generator=generator), make_tensor((6,), generator=generator)
    running = (make_tensor((6,), generator=generator), make_tensor((6,), generator=generator).abs())
    arguments = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 1), groups=6)
    leaves = [t.detach().requires_grad_() for t in (input, norm_weight, norm_bias, weight)]
    out = fastcnn.batch_norm_conv2d(leaves[0], *[r.clone() for r in running], leaves[1], leaves[2], True, 0.1, 1e-5,
                                    leaves[3], None, **arguments, activation="relu6")
    expected, references, _ = _prologue_reference(input, norm_weight, norm_bias, "relu6", 0.0, weight, None, arguments,
                                                   torch.float32, norm=(*running, True, 0.1, 1e-5))
    with record_aten_ops() as names:
        _backward_and_compare(out, expected, leaves, references[:4],
                              ("grad_input", "grad_norm_weight", "grad_norm_bias", "grad_weight"), dtype=torch.float32,
                              seed=seed, weight=weight, groups=6, generator=generator)
    assert "fastcnn::conv2d_normalized_input_grad" in names and "fastcnn::batch_norm_backward_from_sums" in names, names
    assert "fastcnn::batch_norm_backward" not in names, names


def test_batch_norm_conv2d_saves_the_input_not_the_normalized_tensor(seed, generator):
    """What autograd keeps of the fused unit: the input, the statistics and the parameters, and no
    tensor the size of act(bn(x)) (the unfused layers keep bn's input and relu's output)."""
    input = make_tensor((2, 6, 9, 7), layout="channels_last", generator=generator).requires_grad_()
    weight = make_tensor((5, 6, 3, 3), generator=generator).requires_grad_()
    norm_weight = make_tensor((6,), generator=generator).requires_grad_()
    norm_bias = make_tensor((6,), generator=generator).requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fastcnn.batch_norm_conv2d(input, None, None, norm_weight, norm_bias, True, 0.1, 1e-5, weight,
                                        padding=1, activation="relu")
    activation_sized = [t for t in saved if t.numel() == input.numel()]
    assert len(activation_sized) == 1 and activation_sized[0].data_ptr() == input.data_ptr(), \
        [tuple(t.shape) for t in saved]
    out.sum().backward()
    assert input.grad is not None and norm_weight.grad is not None and weight.grad is not None


def test_input_prologue_padding_is_zero_after_the_transform(seed, generator):
    """A shift that moves every value far from zero: the border of the output sees zeros where
    the window leaves the input (as a padded act(x·s + t) has them), not act(0·s + t)."""
    input = make_tensor((1, 3, 5, 5), generator=generator)
    weight = torch.ones((1, 3, 3, 3))
    shift = torch.full((3,), 10.0)
    out = fastcnn.conv2d(input, weight, padding=1, input_shift=shift, input_activation="relu")
    expected = F.conv2d(F.relu(input + 10.0), weight, padding=1)
    assert_close(out, expected, torch.float32, what="output", seed=seed, reduction_length=27)
    assert out[0, 0, 0, 0] < out[0, 0, 2, 2] * 0.6  # the corner sums 4 of 9 taps


def test_input_prologue_bad_arguments_raise_naming_them(generator):
    input = make_tensor((2, 4, 5, 5), generator=generator)
    weight = make_tensor((3, 4, 3, 3), generator=generator)
    with pytest.raises(RuntimeError, match="input_scale should contain 4 elements"):
        fastcnn.conv2d(input, weight, input_scale=torch.ones(3))
    with pytest.raises(RuntimeError, match="expected input_shift to have dtype"):
        fastcnn.conv2d(input, weight, input_shift=torch.ones(4, dtype=torch.float16))
    with pytest.raises(TypeError, match="'input_scale' must be a Tensor"):
        fastcnn.conv2d(input, weight, input_scale=2.0)
    with pytest.raises(ValueError, match="activation"):
        fastcnn.conv2d(input, weight, input_activation="softplus")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        fastcnn.batch_norm_conv2d(input[:1, :, :1, :1], None, None, None, None, True, 0.1, 1e-5, weight[:, :, :1, :1])
    with pytest.raises(ValueError, match="eps must be positive during training"):
        fastcnn.batch_norm_conv2d(input, None, None, None, None, True, 0.1, 0.0, weight)
    with pytest.raises(RuntimeError, match="running_mean should contain 4 elements"):
        fastcnn.batch_norm_conv2d(input, torch.zeros(3), torch.ones(3), None, None, False, 0.1, 1e-5, weight)
    with pytest.raises(RuntimeError, match="expected input"):
        fastcnn.batch_norm_conv2d(input, None, None, None, None, True, 0.1, 1e-5, weight[:, :3])


def test_input_prologue_unbatched_and_empty(seed, generator):
    input = make_tensor((4, 6, 5), generator=generator)
    weight = make_tensor((3, 4, 3, 3), generator=generator)
    scale = make_tensor((4,), generator=generator)
    out = fastcnn.conv2d(input, weight, padding=1, input_scale=scale, input_activation="silu")
    expected = F.conv2d(F.silu(input * scale[:, None, None]), weight, padding=1)
    assert out.shape == expected.shape
    assert_close(out, expected, torch.float32, what="output", seed=seed, reduction_length=36)
    empty = fastcnn.conv2d(input.new_empty((0, 4, 6, 5)), weight, input_scale=scale)
    assert empty.shape == (0, 3, 4, 3)


# ----------------------------------------------------------------------------- the moments epilogue
@pytest.mark.every_triton
@pytest.mark.parametrize("block_m", [16, 256, None], ids=["tiles16", "tiles256", "default"])
@pytest.mark.parametrize("path", ["gemm", "depthwise"])
def test_moments_give_batch_norm_the_statistics_without_a_pass(path, block_m, monkeypatch, seed, generator):
    """conv2d_with_moments, then batch norm from its moments: the output, the gradients and the
    running statistics as float64 torch's, for channels far from zero relative to their spread
    (mean 3000, std about 0.5: fp32 accuracy kept); no statistics pass runs, and the moments are
    the same bits every run. Tiles of 16 rows are raised to the moments' 128-row granule, tiles of
    256 rows write one summary and an empty one per 128 rows."""
    if block_m is not None:
        monkeypatch.setitem(conv2d_gemm.DEFAULT_CONFIG[0], "BLOCK_M", block_m)
        monkeypatch.setattr(conv2d_gemm, "autotune_enabled", lambda: False)
    groups, channels, out_channels = (1, 5, 7) if path == "gemm" else (6, 6, 12)
    layout = case_random(seed, 0).choice(["contiguous", "channels_last"])
    input = make_tensor((3, channels, 11, 13), layout=layout, generator=generator)
    weight = make_tensor((out_channels, channels // groups, 3, 3), generator=generator) * 0.1
    bias = torch.full((out_channels,), 3000.0) + make_tensor((out_channels,), generator=generator)
    running = (torch.zeros(out_channels), torch.ones(out_channels))
    norm_weight, norm_bias = make_tensor((out_channels,), generator=generator), make_tensor((out_channels,),
                                                                                         generator=generator)
    leaves = [t.detach().requires_grad_() for t in (input, weight, norm_weight, norm_bias)]
    ours = [r.clone() for r in running]
    with record_aten_ops() as names, count_launches() as launched:
        out, moments = fastcnn.conv2d_with_moments(leaves[0], leaves[1], bias, padding=1, groups=groups)
        result = fastcnn.batch_norm(out, *ours, leaves[2], leaves[3], True, 0.1, 1e-5, activation="relu",
                                    moments=moments)
    assert launched["batch_norm"] == 2 and "fastcnn::batch_norm_statistics" not in names, names
    again = fastcnn.conv2d_with_moments(input, weight, bias, padding=1, groups=groups)[1]
    assert torch.equal(moments, again)
    references = [t.detach().double().requires_grad_() for t in (input, weight, norm_weight, norm_bias)]
    running64 = [r.double() for r in running]
    conv64 = F.conv2d(references[0], references[1], bias.double(), padding=1, groups=groups)
    # fastcnn's and torch's batch norm both read the stored fp32 output: round the reference's too
    conv64 = conv64 + (conv64.detach().float().double() - conv64.detach())
    expected = F.relu(F.batch_norm(conv64, *running64, references[2], references[3], True, 0.1, 1e-5))
    grad = make_tensor(result.shape, generator=generator)
    with record_aten_ops() as backward_names:
        result.backward(grad)
    assert "aten::zeros" not in backward_names, backward_names  # no zero gradient made for the moments
    expected.backward(grad.double())
    pixels = out.numel() // out_channels
    assert_close(result, expected, torch.float32, what="output", seed=seed, reduction_length=pixels)
    for what, leaf, reference in zip(("grad_input", "grad_weight", "grad_norm_weight", "grad_norm_bias"), leaves,
                                     references):
        assert_close(leaf.grad, reference.grad, torch.float32, what=what, seed=seed, reduction_length=pixels * 9)
    for what, actual, wanted in zip(("running_mean", "running_var"), ours, running64):
        assert_close(actual, wanted, torch.float32, what=what, seed=seed, reduction_length=pixels)


def test_moments_of_another_tensor_are_refused(generator):
    input = make_tensor((2, 4, 13, 13), generator=generator)  # 338 pixels: 3 summaries of 128; half of it 2
    weight = make_tensor((3, 4, 3, 3), generator=generator)
    out, moments = fastcnn.conv2d_with_moments(input, weight, padding=1)
    with pytest.raises(ValueError, match="moments must be the contiguous float32"):
        fastcnn.batch_norm(out[:1], None, None, training=True, moments=moments)
    with pytest.raises(ValueError, match="moments must be"):
        fastcnn.batch_norm(out, None, None, training=True, moments=moments.double())
    # in eval the running statistics are used: the moments are not needed and not read
    evaluated = fastcnn.batch_norm(out, torch.zeros(3), torch.ones(3), training=False, moments=moments)
    assert_close(evaluated, F.batch_norm(out, torch.zeros(3), torch.ones(3)), torch.float32, what="eval",
                 seed=0)


@pytest.mark.every_triton
@pytest.mark.parametrize("block_m", [16, 256], ids=["tiles16", "tiles256"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_batch_norm_backward_in_the_grad_input_epilogue(block_m, training, monkeypatch, seed, generator):
    """The GEMM grad-input of a batch norm inside a convolution takes its result through the
    activation's derivative and sums batch norm's two per-channel terms in its epilogue, per
    stride phase (stride 2: four), with tiles smaller and larger than the 128-row granule of the
    sums; batch norm's backward then only applies them. Gradients as float64 torch's; no pass
    of batch norm's backward sums runs."""
    monkeypatch.setitem(conv2d_gemm.DEFAULT_CONFIG[0], "BLOCK_M", block_m)
    monkeypatch.setattr(conv2d_gemm, "autotune_enabled", lambda: False)
    input = make_tensor((3, 6, 23, 21), layout="channels_last", generator=generator)  # phases of ~400 pixels
    weight = make_tensor((5, 6, 3, 3), generator=generator)
    norm_weight, norm_bias = make_tensor((6,), generator=generator), make_tensor((6,), generator=generator)
    running = [make_tensor((6,), generator=generator), make_tensor((6,), generator=generator).abs()]
    leaves = [t.detach().requires_grad_() for t in (input, norm_weight, norm_bias, weight)]
    out = fastcnn.batch_norm_conv2d(leaves[0], *[r.clone() for r in running], leaves[1], leaves[2], training, 0.1,
                                    1e-5, leaves[3], None, 2, 1, activation="silu")
    expected, references, _ = _prologue_reference(input, norm_weight, norm_bias, "silu", 0.0, weight, None,
                                                  dict(stride=2, padding=1), torch.float32,
                                                  norm=(*running, training, 0.1, 1e-5))
    with record_aten_ops() as names:
        _backward_and_compare(out, expected, leaves + [None], references,
                              ("grad_input", "grad_norm_weight", "grad_norm_bias", "grad_weight", "grad_bias"),
                              dtype=torch.float32, seed=seed, weight=weight, groups=1, generator=generator)
    assert {"fastcnn::conv2d_normalized_input_grad", "fastcnn::batch_norm_backward_from_sums"} <= set(names), names
    assert "fastcnn::batch_norm_backward" not in names, names
