"""dropout's benchmark cases: Dropout and Dropout2d (p = 0.2) forward + backward in training."""
import torch

from .. import nn as fastcnn_nn
from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.dropout import bytes_moved

# (channels, height = width) of activations dropout sees: a classifier head's features (1280,
# EfficientNet-B0 / MobileNetV2) and a conv block's output for Dropout2d.
SUITES = {"heads": lambda: [(1280, 1)], "blocks": lambda: [(256, 28)]}
PROFILE_OPS = ("dropout", "dropout2d")


def _case(op, channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        theirs = torch.nn.Dropout2d(0.2) if op == "dropout2d" else torch.nn.Dropout(0.2)
        ours = fastcnn_nn.Dropout2d(0.2) if op == "dropout2d" else fastcnn_nn.Dropout(0.2)
        return training_steps(ours, theirs, input)

    return BenchmarkCase(op, f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build,
                         smoke_view=_kept_scale)


def _kept_scale(grad):
    """What two dropouts' input gradients (ones through the mask) share whatever their random
    masks: the kept elements' value, 1/(1-p)."""
    return grad.amax().reshape(1)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """Forward + backward of dropout (p = 0.2) in training."""
    shapes = [(5, 7)] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    shapes = shapes[:1] if quick and op == "dropout" else shapes[1:] if quick else shapes
    batches = (2,) if smoke else ACTIVATION_BATCHES[-1:] if op == "dropout" else ACTIVATION_BATCHES[:1]
    return [_case(op, channels, size, batch, dtype, layout) for channels, size in shapes for batch in batches
            for dtype in dtypes for layout in layouts]


# The static check launches them in the activation scenario (cases/activation.py).
MEMORY_BOUND_KERNELS = ("_dropout_kernel", "_channel_dropout_kernel")
