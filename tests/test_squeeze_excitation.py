"""fastcnn.squeeze_excitation_gate and fastcnn.nn.SqueezeExcitation against float64 torch: every
layout, the scale's activation fused, broadcast scales, the backward's sums in slices, empty and
unbatched inputs, torch's multiply for what the kernels do not take, and convert's swap."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.kernels import squeeze_excitation as gate_kernels
from fastcnn.testing import (DEVICE, LAYOUTS, assert_close, count_launches, make_tensor, poisoned_like,
                             record_aten_ops)

ACTIVATIONS = {None: lambda t: t, "sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid, "silu": F.silu}


def _check(input, scale, kind, dtype, seed, generator, what=""):
    out = fastcnn.squeeze_excitation_gate(input, scale, activation=kind)
    grad = make_tensor(out.shape, dtype, generator=generator)
    out.backward(grad)
    x, s = (t.detach().double().requires_grad_() for t in (input, scale))
    expected = ACTIVATIONS[kind](s) * x
    expected.backward(grad.double())
    assert out.shape == expected.shape and out.dtype == dtype
    assert out.stride() == (ACTIVATIONS[kind](scale.detach()) * input.detach()).stride(), what
    assert_close(out, expected, dtype, what=f"output {what}", seed=seed)
    assert_close(input.grad, x.grad, dtype, what=f"grad input {what}", seed=seed)
    plane = input.shape[-1] * input.shape[-2]
    assert_close(scale.grad, s.grad, dtype, what=f"grad scale {what}", seed=seed, reduction_length=plane)


@pytest.mark.every_triton
@pytest.mark.parametrize("kind", sorted(ACTIVATIONS, key=str))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gate_and_gradients_match_float64_torch(kind, layout, seed, generator):
    input = make_tensor((3, 10, 7, 5), layout=layout, generator=generator).requires_grad_()
    scale = make_tensor((3, 10, 1, 1), generator=generator).requires_grad_()
    with count_launches() as launched, record_aten_ops() as names:
        _check(input, scale, kind, torch.float32, seed, generator, f"{kind} {layout}")
    assert launched["squeeze_excitation"] >= 2, dict(launched)
    ours = [name for name in names if name.startswith("fastcnn::squeeze")]
    assert ours == ["fastcnn::squeeze_excitation_gate", "fastcnn::squeeze_excitation_gate_backward"], names


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, seed, generator):
    input = make_tensor((2, 24, 9, 11), dtype, layout="channels_last", generator=generator).requires_grad_()
    scale = make_tensor((2, 24, 1, 1), dtype, generator=generator).requires_grad_()
    _check(input, scale, "sigmoid", dtype, seed, generator, str(dtype))


@pytest.mark.parametrize("shape", [(1, 6, 40, 33), (2, 3, 64, 64)])
def test_backward_sums_in_slices(shape, seed, generator):
    """Few (image, channel) tiles and large planes: the interpreter (2 SMs) cuts each plane into
    slices whose fp32 partials one more kernel adds in order, then applies act'."""
    _, slices = gate_kernels.backward_slices(shape[0], shape[1], shape[2] * shape[3], 1,
                                                                   torch.device(DEVICE))
    assert slices > 1
    input = make_tensor(shape, layout="channels_last", generator=generator).requires_grad_()
    scale = make_tensor(shape[:2] + (1, 1), generator=generator).requires_grad_()
    out = fastcnn.squeeze_excitation_gate(input, scale, activation="sigmoid")
    with count_launches() as launched:
        out.backward(torch.ones_like(out))
    assert launched["squeeze_excitation"] == 2, dict(launched)
    input.grad = scale.grad = None
    _check(input, scale, "sigmoid", torch.float32, seed, generator, "slices")


@pytest.mark.parametrize("scale_shape", [(1, 5, 1, 1), (4, 1, 1, 1), (5, 1, 1)])
def test_broadcast_scales(scale_shape, seed, generator):
    input = make_tensor((4, 5, 6, 3), generator=generator).requires_grad_()
    scale = make_tensor(scale_shape, generator=generator).requires_grad_()
    with count_launches() as launched:
        _check(input, scale, "hardsigmoid", torch.float32, seed, generator, str(scale_shape))
    assert launched["squeeze_excitation"] >= 2


def test_unbatched_and_empty(seed, generator):
    input = make_tensor((5, 4, 3), generator=generator).requires_grad_()
    scale = make_tensor((5, 1, 1), generator=generator).requires_grad_()
    _check(input, scale, "sigmoid", torch.float32, seed, generator, "unbatched")
    empty = torch.empty(0, 5, 4, 3, device=DEVICE, requires_grad=True)
    empty_scale = torch.empty(0, 5, 1, 1, device=DEVICE, requires_grad=True)
    out = fastcnn.squeeze_excitation_gate(empty, empty_scale, activation="sigmoid")
    out.sum().backward()
    assert out.shape == empty.shape and empty_scale.grad.shape == empty_scale.shape
    no_pixels = torch.empty(2, 5, 0, 3, device=DEVICE, requires_grad=True)
    scale = make_tensor((2, 5, 1, 1), generator=generator).requires_grad_()
    fastcnn.squeeze_excitation_gate(no_pixels, scale, activation="sigmoid").sum().backward()
    assert torch.equal(scale.grad, torch.zeros_like(scale))


def test_what_the_kernels_do_not_take_is_torchs_multiply(generator):
    input = make_tensor((2, 3, 4, 5), generator=generator)
    cases = [make_tensor((2, 3, 4, 1), generator=generator),  # varies along H
             make_tensor((2, 3, 1, 1), generator=generator).double(),  # promotes
             make_tensor((5,), generator=generator)]  # broadcast along W
    with count_launches() as launched:
        for scale in cases:
            out = fastcnn.squeeze_excitation_gate(input, scale, activation="sigmoid")
            expected = torch.sigmoid(scale) * input
            assert out.dtype == expected.dtype and torch.allclose(out, expected)
    assert not launched
    with pytest.raises(RuntimeError, match="fastcnn.squeeze_excitation_gate: "):
        fastcnn.squeeze_excitation_gate(input, make_tensor((3, 3, 1, 1), generator=generator))
    with pytest.raises(TypeError, match="argument 'scale' must be a Tensor"):
        fastcnn.squeeze_excitation_gate(input, 2.0)


def test_launchers_write_every_element(generator):
    kernels = gate_kernels
    x = make_tensor((3, 6, 5, 7), layout="channels_last", generator=generator)
    rows = x.as_strided((3, 6, 35), (6 * 35, 1, 6))
    gate, dy = make_tensor((3, 6), generator=generator), make_tensor((3, 6, 35), generator=generator)
    y, dx, ds = poisoned_like(rows), poisoned_like(dy), poisoned_like(gate)
    kernels.forward(rows, gate, y, kind="sigmoid", parameter=0.0)
    kernels.backward(dy, rows, gate, dx, ds, kind="sigmoid", parameter=0.0)
    s = torch.sigmoid(gate.double())[..., None]
    for what, actual, expected in (("y", y, rows.double() * s), ("dx", dx, dy.double() * s),
                                   ("ds", ds, (dy.double() * rows.double()).sum(-1) * (s * (1 - s))[..., 0])):
        assert_close(actual, expected, torch.float32, what=what, seed=0, reduction_length=35)


class _SqueezeExcitation(torch.nn.Module):
    """torchvision's SqueezeExcitation, as tests/replicas.py writes it."""

    def __init__(self, channels, squeezed, scale_activation=torch.nn.Sigmoid):
        super().__init__()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc1 = torch.nn.Conv2d(channels, squeezed, 1)
        self.fc2 = torch.nn.Conv2d(squeezed, channels, 1)
        self.activation = torch.nn.SiLU()
        self.scale_activation = scale_activation()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


_SqueezeExcitation.__name__ = "SqueezeExcitation"


@pytest.mark.parametrize("scale_activation", [torch.nn.Sigmoid, torch.nn.Hardsigmoid])
def test_convert_swaps_torchvisions_module(scale_activation, seed, generator):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), _SqueezeExcitation(8, 2, scale_activation))
    converted, report = fastcnn.convert(model, report=True)
    assert type(converted[1]) is fastcnn.nn.SqueezeExcitation
    assert "SqueezeExcitation -> fastcnn.nn.SqueezeExcitation" in str(report)
    assert converted.state_dict().keys() == model.state_dict().keys()
    input = make_tensor((2, 3, 9, 7), layout="channels_last", generator=generator).requires_grad_()
    with record_aten_ops() as names:
        out = converted(input)
        out.backward(torch.ones_like(out))
    assert "fastcnn::squeeze_excitation_gate" in names
    assert not [name for name in names if "mul" in name or "sigmoid" in name or "hardsigmoid" in name], names
    assert_close(out, model.double()(input.detach().double()), torch.float32, what="converted", seed=seed,
                 reduction_length=63)


def test_module_builds_torchvisions_submodules():
    module = fastcnn.nn.SqueezeExcitation(16, 4, activation=torch.nn.SiLU, scale_activation=torch.nn.Hardsigmoid)
    assert [name for name, _ in module.named_children()] == ["avgpool", "fc1", "fc2", "activation",
                                                             "scale_activation"]
    assert sorted(module.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]


def test_bytes_hand_counted():
    from fastcnn.ops import squeeze_excitation

    assert squeeze_excitation.bytes_moved(10, 2, backward=True) == 60  # dy and x read, dx written
