"""squeeze_excitation's benchmark cases: the gate (sigmoid of the scale, times the input) forward +
backward against torch's sigmoid and broadcast multiply, eager and under torch.compile, where
EfficientNet-B0's and MobileNetV3's squeeze-excitation blocks sit."""
import torch

from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.squeeze_excitation import bytes_moved, squeeze_excitation_gate
from ._static import DTYPES, empty

# (channels, height = width, the scale's activation) of the gates: EfficientNet-B0's second stage
# (96 channels at 112²) and last (1152 at 7²), MobileNetV3-Large's hardsigmoid gate (72 at 28²).
SUITES = {"efficientnet_b0": lambda: [(96, 112, "sigmoid"), (1152, 7, "sigmoid")],
          "mobilenet_v3_large": lambda: [(72, 28, "hardsigmoid")]}
PROFILE_OPS = ("squeeze_excitation_gate",)


def _case(channels, size, kind, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        scale = random_input((batch, channels, 1, 1), dtype, "nchw", device, generator).requires_grad_()
        activation = {"sigmoid": torch.sigmoid, "hardsigmoid": torch.nn.functional.hardsigmoid}[kind]
        return training_steps(lambda x, s: squeeze_excitation_gate(x, s, activation=kind),
                              lambda x, s: activation(s) * x, input, (scale,))

    return BenchmarkCase("squeeze_excitation_gate", f"{channels}x{size}+{kind}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The gate forward + backward at the activation batches."""
    shapes = [(5, 7, "sigmoid")] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    shapes = shapes[:1] if quick else shapes
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    return [_case(channels, size, kind, batch, dtype, layout) for channels, size, kind in shapes
            for batch in batches for dtype in dtypes for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_gate_forward_kernel", "_gate_backward_kernel")


def _launch(kernel_module, dtype, channels_last, n, c, size, kind):
    gate = kernel_module("squeeze_excitation")
    x, y, dy, dx = (empty((n, c, size, size), dtype, channels_last).view(n, c, size * size)
                    if not channels_last else
                    empty((n, c, size, size), dtype, True).as_strided((n, c, size * size), (c * size * size, 1, c))
                    for _ in range(4))
    scale, ds = empty((n, c), dtype), empty((n, c), dtype)
    gate.forward(x, scale, y, kind=kind, parameter=0.0)
    gate.backward(dy, x, scale, dx, ds, kind=kind, parameter=0.0)


def static_launches(kernel_module, options):
    """EfficientNet-B0's third-stage gate (144 expanded channels at 56x56, batch 32) in each layout
    and dtype (the recorded launches keep their tensors for the whole check, so shapes stay modest)."""
    return [(f"squeeze-excitation gate N32 C144 56x56 {layout} {dtype_name}",
             lambda dtype_name=dtype_name, layout=layout: _launch(kernel_module, DTYPES[dtype_name],
                                                                  layout == "channels_last", 32, 144, 56, "sigmoid"))
            for layout in options.layouts for dtype_name in options.dtypes]


def compile_variants(kernel_module):
    """Small planes (tiles across images), hardsigmoid and no activation, and a batch so small the
    backward sums slices (the partials' kernel)."""
    return [("squeeze-excitation gate 5x5 hardsigmoid bf16",
             lambda: _launch(kernel_module, DTYPES["bf16"], True, 8, 40, 5, "hardsigmoid")),
            ("squeeze-excitation gate sliced fp16 nchw",
             lambda: _launch(kernel_module, DTYPES["fp16"], False, 1, 8, 112, None))]
