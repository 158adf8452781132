"""fastcnn.avg_pool2d / adaptive_avg_pool2d and their modules against float64 torch: every
argument of F.avg_pool2d (ceil_mode, count_include_pad, divisor_override), any adaptive output
size, every layout, PyTorch's OpInfo samples and error inputs."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, assert_raises_like_torch, case_random,
                             check_opinfo_error_inputs, count_launches, make_tensor, opinfo, poisoned_like,
                             record_aten_ops)



def check_pool(function, reference, input, seed, *, window):
    """``function(input)`` and its input gradient against ``reference`` in float64; the output
    and gradient are written over poisoned memory (a kernel that skips an element shows NaN)."""
    ours = input.detach().clone().requires_grad_()
    theirs = input.detach().double().requires_grad_()
    with count_launches() as launched:
        out = function(ours)
    expected = reference(theirs)
    assert out.shape == expected.shape and out.dtype == input.dtype
    grad_out = make_tensor(out.shape, input.dtype, generator=torch.Generator().manual_seed(seed + 1))
    out.backward(grad_out)
    expected.backward(grad_out.double())
    if expected.numel():
        assert launched["avg_pool2d"] == 1
        assert_close(out, expected, input.dtype, what="output", seed=seed, reduction_length=window)
    assert_close(ours.grad, theirs.grad, input.dtype, what="grad_input", seed=seed, reduction_length=window)
    if input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last) and input.shape[1] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    return out


def random_avg_pool_arguments(rng):
    kernel = (rng.choice([1, 2, 3, 4]), rng.choice([1, 2, 3, 5]))
    stride = rng.choice([None, (rng.randint(1, 3), rng.randint(1, 3))])
    padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
    return dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=rng.random() < 0.5,
                count_include_pad=rng.random() < 0.5, divisor_override=rng.choice([None, None, 3, 7]))


@pytest.mark.every_triton
@pytest.mark.parametrize("case", range(12))
def test_avg_pool2d_random_arguments(case, seed, generator):
    rng = case_random(seed, case)
    arguments = random_avg_pool_arguments(rng)
    layout = LAYOUTS[case % 3]
    shape = (rng.randint(1, 3), rng.choice([1, 3, 5, 17]), rng.randint(5, 12), rng.randint(5, 12))
    if case % 4 == 3:
        shape = shape[1:]  # unbatched (C, H, W)
    input = make_tensor(shape, layout=layout if len(shape) == 4 else "contiguous", generator=generator)
    print(f"{shape} {layout} {arguments}")
    check_pool(lambda x: fastcnn.avg_pool2d(x, **arguments), lambda x: F.avg_pool2d(x, **arguments), input, seed,
               window=arguments["kernel_size"][0] * arguments["kernel_size"][1])


@pytest.mark.every_triton
@pytest.mark.parametrize("output_size", [1, (1, 1), (3, 4), (5, None), (7, 13), (2, 1), (None, None)],
                         ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_adaptive_avg_pool2d(output_size, layout, seed, generator):
    """Windows of unequal sizes (9 rows to 5, 11 columns to 4), a larger output than input (7 x
    13 from 9 x 11: windows overlap), and the global 1x1 reduction."""
    input = make_tensor((2, 6, 9, 11), layout=layout, generator=generator)
    check_pool(lambda x: fastcnn.adaptive_avg_pool2d(x, output_size),
               lambda x: F.adaptive_avg_pool2d(x, output_size), input, seed, window=99)


def test_global_pool_of_a_large_plane_and_many_channels(seed, generator):
    """More pixels than one tile holds (the reduction loops) and channels over several programs."""
    for layout in ("contiguous", "channels_last"):
        input = make_tensor((2, 37, 23, 19), layout=layout, generator=generator)
        check_pool(lambda x: fastcnn.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1), input, seed,
                   window=23 * 19)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_sum_in_wide_precision(dtype, seed, generator):
    input = make_tensor((2, 5, 13, 9), dtype, layout="channels_last", generator=generator)
    check_pool(lambda x: fastcnn.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
               lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), input, seed, window=9)
    check_pool(lambda x: fastcnn.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1), input, seed,
               window=117)


def test_output_is_fully_written_and_no_aten_pooling_runs(generator):
    input = make_tensor((3, 4, 10, 7), generator=generator).requires_grad_()
    with record_aten_ops() as names:
        out = fastcnn.avg_pool2d(input, 3, 2, 1)
        pooled = fastcnn.adaptive_avg_pool2d(input, (4, 3))
        (out.sum() + pooled.sum()).backward()
    assert not [name for name in names if "pool" in name and not name.startswith("fastcnn::")], names
    assert names.count("fastcnn::avg_pool2d") == 2 and names.count("fastcnn::avg_pool2d_backward") == 2
    assert not out.isnan().any() and not input.grad.isnan().any()
    # The kernel writes into memory that starts as NaN: every element must have been written.
    from fastcnn.kernels import avg_pool

    target = poisoned_like(torch.empty((3, 4, 5, 4), device=DEVICE))
    avg_pool.forward(input.detach(), target, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    assert not target.isnan().any()


@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 4, 5, 3), (2, 3, 0, 4)], ids=str)
def test_global_pool_takes_any_input_torch_takes(shape, seed, generator):
    """torch's 1x1 adaptive pool is a mean over the last two dims: any rank from 2, and an empty
    plane (NaN, the mean of nothing)."""
    input = make_tensor(shape, generator=generator)
    out = fastcnn.adaptive_avg_pool2d(input, 1)
    expected = F.adaptive_avg_pool2d(input.double(), 1)
    assert out.shape == expected.shape
    if input.numel():
        check_pool(lambda x: fastcnn.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1), input, seed,
                   window=42)
    else:
        assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().all()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape, output_size", [((37, 3, 7, 5), (5, 4)), ((2, 3, 41, 40), (40, 39))], ids=str)
def test_tiles_across_and_within_images(shape, output_size, layout, seed, generator, monkeypatch):
    """Tiles that run on across images (37 small planes) and tiles within one large plane, each in
    several blocks (see test_max_pool's twin; the GPU's NCHW tiles)."""
    from fastcnn.kernels import avg_pool
    from fastcnn.kernels.indexing import pixel_tiles

    monkeypatch.setattr(avg_pool, "_blocks", lambda channel_stride: (256, 4))
    input = make_tensor(shape, generator=generator)
    input = input.to(memory_format=torch.channels_last) if layout == "channels_last" else input
    out = check_pool(lambda x: fastcnn.adaptive_avg_pool2d(x, output_size),
                     lambda x: F.adaptive_avg_pool2d(x, output_size), input, seed, window=9)
    for tensor in (out, input):
        images, channels, height, width = tensor.shape
        _, pixel_blocks, span, _, _ = pixel_tiles(images, height * width, channels, avg_pool._blocks(tensor.stride(1)))
        assert span == (shape[0] == 37) and pixel_blocks > 1


@pytest.mark.parametrize("shape, output_size", [((0, 4, 4), 1), ((0, 4, 4), 2), ((3, 0, 4), 1), ((0, 4, 4), (0, 2)),
                                                ((2, 0, 3, 5), (2, 2))], ids=str)
def test_empty_unbatched_and_zero_channel_inputs_give_torchs_result(shape, output_size, generator):
    """torch returns an empty tensor (or NaN, the mean of no pixels) for these; so must fastcnn."""
    input = make_tensor(shape, generator=generator).requires_grad_()
    out = fastcnn.adaptive_avg_pool2d(input, output_size)
    expected = F.adaptive_avg_pool2d(input.detach(), output_size)
    assert out.shape == expected.shape and torch.equal(out.isnan(), expected.isnan())
    out.sum().backward()
    assert input.grad.shape == input.shape


def test_empty_inputs_and_zero_sized_outputs(generator):
    empty_batch = make_tensor((0, 3, 6, 6), generator=generator).requires_grad_()
    assert fastcnn.avg_pool2d(empty_batch, 2).shape == (0, 3, 3, 3)
    out = fastcnn.adaptive_avg_pool2d(empty_batch, 2)
    out.sum().backward()
    assert out.shape == (0, 3, 2, 2) and empty_batch.grad.shape == empty_batch.shape
    input = make_tensor((2, 3, 6, 6), generator=generator).requires_grad_()
    out = fastcnn.adaptive_avg_pool2d(input, (0, 4))
    assert out.shape == F.adaptive_avg_pool2d(input, (0, 4)).shape
    out.sum().backward()
    assert torch.equal(input.grad, torch.zeros_like(input))


def test_modules_are_drop_ins(seed, generator):
    pool = fastcnn.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    adaptive = fastcnn.nn.AdaptiveAvgPool2d((2, None))
    assert isinstance(pool, torch.nn.AvgPool2d) and isinstance(adaptive, torch.nn.AdaptiveAvgPool2d)
    assert repr(pool) == repr(torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False))
    input = make_tensor((2, 4, 9, 7), generator=generator)
    assert_close(pool(input), F.avg_pool2d(input.double(), 3, 2, 1, ceil_mode=True, count_include_pad=False),
                 torch.float32, what="AvgPool2d", seed=seed, reduction_length=9)
    assert_close(adaptive(input), F.adaptive_avg_pool2d(input.double(), (2, None)), torch.float32,
                 what="AdaptiveAvgPool2d", seed=seed, reduction_length=9)


@pytest.mark.every_triton
@pytest.mark.parametrize("name, function", [("nn.functional.avg_pool2d", fastcnn.avg_pool2d),
                                            ("nn.functional.adaptive_avg_pool2d", fastcnn.adaptive_avg_pool2d)],
                         ids=["avg_pool2d", "adaptive_avg_pool2d"])
def test_opinfo_samples(name, function, seed):
    samples = list(opinfo(name).sample_inputs(DEVICE, torch.float32, requires_grad=True))
    assert len(samples) >= 4, len(samples)
    for sample in samples:
        reference = getattr(F, name.rsplit(".", 1)[1])
        check_pool(lambda x: function(x, *sample.args, **sample.kwargs),
                   lambda x: reference(x, *sample.args, **sample.kwargs), sample.input.detach(), seed, window=64)


@pytest.mark.every_triton
@pytest.mark.parametrize("name, function, op", [
    ("nn.functional.avg_pool2d", fastcnn.avg_pool2d, "avg_pool2d"),
    ("nn.functional.adaptive_avg_pool2d", fastcnn.adaptive_avg_pool2d, "adaptive_avg_pool2d")],
    ids=["avg_pool2d", "adaptive_avg_pool2d"])
def test_opinfo_error_inputs(name, function, op):
    check_opinfo_error_inputs(name, function, op=op, minimum=0)


BAD_AVG_POOL = {
    "kernel_size length": (dict(kernel_size=(2, 2, 2)), "kernel_size must either be a single int"),
    "zero stride": (dict(kernel_size=2, stride=0), "stride should not be zero"),
    "negative padding": (dict(kernel_size=3, padding=-1), "pad must be non-negative"),
    "padding over half": (dict(kernel_size=3, padding=2), "pad should be at most half of effective kernel size"),
    "zero divisor": (dict(kernel_size=2, divisor_override=0), "divisor must be not zero"),
    "window larger than input": (dict(kernel_size=9), "Output size is too small"),
}


@pytest.mark.parametrize("name", sorted(BAD_AVG_POOL))
def test_bad_avg_pool_arguments_raise_like_torch(name, generator):
    arguments, fragment = BAD_AVG_POOL[name]
    input = make_tensor((2, 3, 6, 6), generator=generator)
    assert_raises_like_torch(lambda: F.avg_pool2d(input, **arguments), lambda: fastcnn.avg_pool2d(input, **arguments),
                             op="avg_pool2d", fragment=fragment)


def test_bad_inputs_raise_like_torch(generator):
    assert_raises_like_torch(lambda: F.avg_pool2d(torch.ones(2, 3, device=DEVICE), 1),
                             lambda: fastcnn.avg_pool2d(torch.ones(2, 3, device=DEVICE), 1), op="avg_pool2d",
                             fragment="Dimension out of range")
    assert_raises_like_torch(lambda: F.adaptive_avg_pool2d(torch.ones(2, 3, device=DEVICE), 2),
                             lambda: fastcnn.adaptive_avg_pool2d(torch.ones(2, 3, device=DEVICE), 2),
                             op="adaptive_avg_pool2d", fragment="Expected 3D or 4D tensor")
    empty_plane = torch.ones(2, 3, 0, 4, device=DEVICE)
    assert_raises_like_torch(lambda: F.adaptive_avg_pool2d(empty_plane, 2),
                             lambda: fastcnn.adaptive_avg_pool2d(empty_plane, 2), op="adaptive_avg_pool2d",
                             fragment="non-zero size for non-batch dimensions")
    input = make_tensor((2, 3, 6, 6), generator=generator)
    assert_raises_like_torch(lambda: F.adaptive_avg_pool2d(input, (-1, 2)),
                             lambda: fastcnn.adaptive_avg_pool2d(input, (-1, 2)), op="adaptive_avg_pool2d",
                             fragment="elements of output_size must be greater than or equal to 0")
    with pytest.raises(TypeError, match="argument 'input' must be a Tensor"):
        fastcnn.avg_pool2d([1.0], 2)


def test_bytes_hand_counted():
    from fastcnn.ops import avg_pool as avg_pool_op

    assert avg_pool_op.bytes_moved(100, 25, 4, backward=False) == 500  # read x, write out
    assert avg_pool_op.bytes_moved(100, 25, 2, backward=True) == 500  # + read dy, write dx
