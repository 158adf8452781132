"""add's benchmark cases: The residual add no batch norm took, forward + backward, on ResNet-50's
first-stage block output."""
import torch

from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.add import add, bytes_moved
from ._static import DTYPES, empty

# (channels, height = width) of ResNet-50's first-stage block output, where the add sits.
SUITES = {"resnet50_stage1": lambda: [(256, 56)]}
PROFILE_OPS = ("add",)


def _case(channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        shape = (batch, channels, size, size)
        input = random_input(shape, dtype, layout, device, generator).requires_grad_()
        residual = random_input(shape, dtype, layout, device, generator)
        return training_steps(lambda x: add(x, residual), lambda x: x + residual, input)

    return BenchmarkCase("add", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: the residual add forward + backward at the activation batches."""
    shapes = [(3, 5)] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    return [_case(channels, size, batch, dtype, layout) for channels, size in shapes for batch in batches
            for dtype in dtypes for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_add_kernel",)


def static_launches(kernel_module, options):
    """The residual add on ResNet-50's first-stage block output, channels_last."""
    out = []
    for dtype_name in options.dtypes:
        def residual_add(dtype_name=dtype_name):
            add = kernel_module("add")
            x, r, out_ = (empty((32, 256, 56, 56), DTYPES[dtype_name], True) for _ in range(3))
            add.add(x, r, out_)
        out.append((f"residual add N32 C256 56x56 channels_last {dtype_name}", residual_add))
    return out
