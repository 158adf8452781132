"""layer_norm's benchmark cases: LayerNorm2d and ConvNeXt blocks' LayerNorm, forward + backward, on
ConvNeXt-T's activations."""
import torch

from .. import nn as fastcnn_nn
from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.layer_norm import bytes_moved
from ._static import DTYPES, empty, per_layout_and_dtype

# (channels, height = width) of ConvNeXt-T's LayerNorm2d inputs (stem and downsamples) and of its
# blocks' LayerNorm (over C of the permuted NHWC view), one per stage.
SUITES = {"convnext_tiny": lambda: [(96, 56), (192, 28), (384, 14), (768, 7)]}
PROFILE_OPS = ("layer_norm2d", "layer_norm")
CONVNEXT_BATCH = 64


def _torchvision_style_layer_norm2d(channels):
    """LayerNorm2d as torchvision writes it (permute, layer_norm, permute): the baseline."""
    norm = torch.nn.LayerNorm(channels, eps=1e-6)

    class LayerNorm2d(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = norm

        @property
        def weight(self):
            return self.norm.weight

        def forward(self, x):
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    return LayerNorm2d()


def _case(op, channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator)
        if op == "layer_norm":  # the block's norm sees the permuted NHWC view of the conv's output
            input = input.permute(0, 2, 3, 1)
            theirs, ours = torch.nn.LayerNorm(channels, eps=1e-6), fastcnn_nn.LayerNorm(channels, eps=1e-6)
        else:
            theirs, ours = _torchvision_style_layer_norm2d(channels), fastcnn_nn.LayerNorm2d(channels, eps=1e-6)
        input.requires_grad_()
        theirs, ours = theirs.to(device), ours.to(device)
        # Random, equal weights: with unit ones the input gradient of a ones output gradient is 0.
        weight = torch.randn(channels, device=device, generator=generator) * 0.5 + 1.0
        with torch.no_grad():
            for module in (theirs, ours):
                module.weight.copy_(weight)
        return training_steps(ours, theirs, input)

    return BenchmarkCase(op, f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """LayerNorm2d and the blocks' LayerNorm, forward + backward, on ConvNeXt-T's activations."""
    shapes = [(24, 5)] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    shapes = shapes[:2] if quick else shapes
    batch = 2 if smoke else CONVNEXT_BATCH
    return [_case(op, channels, size, batch, dtype, layout) for channels, size in shapes for dtype in dtypes
            for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_forward_kernel", "_backward_kernel")


def static_launches(kernel_module, options):
    """ConvNeXt-T's first-stage LayerNorm2d over the [N, H*W, C] view, forward and backward."""
    def layer_norm2d(dtype, channels_last):
        layer_norm = kernel_module("layer_norm")
        c = 96
        # ConvNeXt-T's first stage: the [N, H*W, C] view of its NCHW or channels_last activation.
        x, y, dx = (empty((64, c, 56, 56), dtype, channels_last).permute(0, 2, 3, 1).reshape(64, 56 * 56, c)
                    for _ in range(3))
        stats = torch.empty((2, 64 * 56 * 56), dtype=torch.float32)
        weight, bias = torch.ones(c), torch.zeros(c)
        layer_norm.forward(x, y, stats, weight, bias, eps=1e-6, kind=None, parameter=0.0)
        layer_norm.backward(y, x, dx, stats, weight, bias, torch.empty((2, c)), kind=None, parameter=0.0)
    return (per_layout_and_dtype(options, "layernorm2d ConvNeXt N64 C96 56x56", layer_norm2d)
            + per_layout_and_dtype(options, PRELU_SCENARIO, lambda dtype, channels_last: _layer_norm2d_prelu(
                kernel_module, dtype, channels_last)))


PRELU_SCENARIO = "layernorm2d+prelu N64 C96 56x56"


def _layer_norm2d_prelu(kernel_module, dtype, channels_last):
    """LayerNorm2d → PReLU(C) fused: one slope per normalised channel, their gradient a third row
    of each program's partials."""
    layer_norm = kernel_module("layer_norm")
    c = 96
    x, y, dx = (empty((64, c, 56, 56), dtype, channels_last).permute(0, 2, 3, 1).reshape(64, 56 * 56, c)
                for _ in range(3))
    stats = torch.empty((2, 64 * 56 * 56), dtype=torch.float32)
    weight, bias, slope = torch.ones(c), torch.zeros(c), torch.empty(c, dtype=dtype)
    layer_norm.forward(x, y, stats, weight, bias, eps=1e-6, kind="prelu", parameter=0.0, slope=slope)
    layer_norm.backward(y, x, dx, stats, weight, bias, torch.empty((3, c)), kind="prelu", parameter=0.0, slope=slope)


def compile_variants(kernel_module):
    """ConvNeXt's 768-channel norms with a fused GELU, in bf16 and fp32: a block's LayerNorm over
    the permuted NHWC view (rows of one tile) and LayerNorm2d on NCHW (rows strided by H*W)."""
    def norm(dtype_name, channels_last):
        layer_norm = kernel_module("layer_norm")
        c, n, size = 768, 4, 7
        x, y, dx = (empty((n, c, size, size), DTYPES[dtype_name], channels_last).permute(0, 2, 3, 1)
                    .reshape(n, size * size, c) for _ in range(3))
        stats = torch.empty((2, n * size * size), dtype=torch.float32)
        weight, bias = torch.ones(c), torch.zeros(c)
        layer_norm.forward(x, y, stats, weight, bias, eps=1e-6, kind="gelu", parameter=0.0)
        layer_norm.backward(y, x, dx, stats, weight, bias, torch.empty((2, c)), kind="gelu", parameter=0.0)
    return [(f"layer_norm C768 gelu {'channels_last' if channels_last else 'nchw'} {dtype_name}",
             lambda dtype_name=dtype_name, channels_last=channels_last: norm(dtype_name, channels_last))
            for dtype_name in ("bf16", "fp32") for channels_last in (False, True)] + [
        (f"{PRELU_SCENARIO} bf16 channels_last", lambda: _layer_norm2d_prelu(kernel_module, DTYPES["bf16"], True))]
