"""activation's benchmark cases: SiLU and GELU alone, forward + backward, on EfficientNet-B0 and ConvNeXt-T activations."""
import torch

from .. import nn as fastcnn_nn
from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.activation import bytes_moved, module_for

# (channels, height = width) of activations that a standalone activation sees: EfficientNet-B0's
# SiLU after its stem and in its middle stage, and a ConvNeXt-T MLP's GELU (4·96 channels at 56²).
SUITES = {"efficientnet_b0": lambda: [(32, 112), (240, 28)], "convnext_tiny": lambda: [(384, 56)]}
PROFILE_OPS = ("silu", "gelu")


def _case(kind, channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        theirs = module_for(kind, 0.0)
        ours = {"silu": fastcnn_nn.SiLU, "gelu": fastcnn_nn.GELU}[kind]()
        return training_steps(ours, theirs, input)

    return BenchmarkCase(kind, f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """Forward + backward of the activation alone on those shapes."""
    shapes = [(5, 7)] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    shapes = shapes[:1] if quick else shapes
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1]
    return [_case(op, channels, size, batch, dtype, layout) for channels, size in shapes for batch in batches
            for dtype in dtypes for layout in layouts]
