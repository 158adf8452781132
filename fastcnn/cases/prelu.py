"""prelu's benchmark cases: PReLU with one slope per channel, forward + backward (the slopes'
gradient included) against torch's prelu eager and under torch.compile, on the activations of a
ResNet-50's first stage, where a PReLU-Net puts it."""
import torch

from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.prelu import bytes_moved, prelu
from ._static import DTYPES, empty

# (channels, height = width) of the activations: ResNet-50's first stage, its stem's output.
SUITES = {"resnet50": lambda: [(256, 56), (64, 112)]}
PROFILE_OPS = ("prelu",)


def _case(channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        weight = torch.full((channels,), 0.25, dtype=DTYPES[dtype], device=device, requires_grad=True)
        return training_steps(lambda x, w: prelu(x, w), lambda x, w: torch.nn.functional.prelu(x, w), input,
                              (weight,))

    return BenchmarkCase("prelu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """PReLU forward + backward at the activation batches."""
    shapes = [(5, 7)] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    shapes = shapes[:1] if quick else shapes
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    return [_case(channels, size, batch, dtype, layout) for channels, size in shapes for batch in batches
            for dtype in dtypes for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_prelu_forward_kernel", "_prelu_backward_kernel")


def _launch(kernel_module, dtype, channels_last, n, c, size, shared=False):
    kernels = kernel_module("prelu")
    x, y, dy, dx = (empty((n, c, size, size), dtype, channels_last).view(n, c, size * size)
                    if not channels_last else
                    empty((n, c, size, size), dtype, True).as_strided((n, c, size * size), (c * size * size, 1, c))
                    for _ in range(4))
    slope = empty((1,), dtype).expand(c) if shared else empty((c,), dtype)
    kernels.forward(x, slope, y)
    kernels.backward(dy, x, slope, dx, empty((c,), dtype))


def static_launches(kernel_module, options):
    """PReLU on activations of 128 channels at 56x56, batch 32, in each layout and dtype (the
    recorded launches keep their tensors for the whole check, so shapes stay modest)."""
    return [(f"prelu N32 C128 56x56 {layout} {dtype_name}",
             lambda dtype_name=dtype_name, layout=layout: _launch(kernel_module, DTYPES[dtype_name],
                                                                  layout == "channels_last", 32, 128, 56))
            for layout in options.layouts for dtype_name in options.dtypes]


def compile_variants(kernel_module):
    """Small planes (tiles across images) with one shared slope, and a single image whose plane
    is walked in slices (one partial per slice, summed after)."""
    return [("prelu 5x5 one slope bf16", lambda: _launch(kernel_module, DTYPES["bf16"], True, 8, 40, 5, True)),
            ("prelu one image fp16 nchw", lambda: _launch(kernel_module, DTYPES["fp16"], False, 1, 8, 112))]
