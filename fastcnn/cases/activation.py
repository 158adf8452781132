"""activation's benchmark cases: SiLU and GELU alone, forward + backward, on EfficientNet-B0 and
ConvNeXt-T activations."""
import torch

from .. import nn as fastcnn_nn
from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.activation import DERIVATIVE_FROM_OUTPUT, KINDS, bytes_moved, module_for
from ._static import DTYPES, empty

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


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_forward_kernel", "_backward_kernel")


def static_launches(kernel_module, options):
    """GELU forward and backward, channels_last; the scenario also launches dropout's kernels, as a
    ConvNeXt/EfficientNet block runs them one after another."""
    out = []
    for dtype_name in options.dtypes:
        def elementwise(dtype_name=dtype_name):
            activation, dropout = kernel_module("activation"), kernel_module("dropout")
            dtype = DTYPES[dtype_name]
            x, y, dy = (empty((64, 384, 56, 56), dtype, True) for _ in range(3))
            activation.forward(x, y, kind="gelu", parameter=0.0)
            activation.backward(dy, x, y, kind="gelu", parameter=0.0)
            seed = torch.zeros(1, dtype=torch.int64)
            dropout.dropout(x, y, seed, p=0.2)
            dropout.channel_dropout(x.view(64, 384, -1), y.view(64, 384, -1), seed, p=0.2)
        out.append((f"gelu + dropout + dropout2d N64 C384 56x56 channels_last {dtype_name}", elementwise))
    return out


def compile_variants(kernel_module):
    """Every kind's forward and backward in bf16 (the interpreter does not check that erf or a
    kind's branch lowers)."""
    def run(kind):
        activation = kernel_module("activation")
        x, y, dy, dx = (empty((4, 8, 5, 5), DTYPES["bf16"], True) for _ in range(4))
        activation.forward(x, y, kind=kind, parameter=0.1)
        activation.backward(dy, x, dx, kind=kind, parameter=0.1)
        if kind in DERIVATIVE_FROM_OUTPUT:  # the backward autograd runs: from the saved output
            activation.backward(dy, y, dx, kind=kind, parameter=0.1, from_output=True)
    return [(f"activation {kind} bf16", lambda kind=kind: run(kind)) for kind in KINDS]
