"""softmax's benchmark cases: softmax over an ImageNet classifier's 1000 logits and a vision
transformer's attention rows, log_softmax over a segmentation head's 21 classes per pixel (dim 1
of NCHW: a strided row), forward + backward against torch eager and torch.compile."""
import torch

from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.softmax import bytes_moved, log_softmax, softmax
from ._static import DTYPES, empty

# (function, input shape, dim) of each suite.
SUITES = {"imagenet": ("softmax", (256, 1000), 1), "attention": ("softmax", (64, 12, 197, 197), -1),
          "segmentation": ("log_softmax", (8, 21, 256, 256), 1)}
PROFILE_OPS = ("softmax", "log_softmax")


def _case(suite, name, shape, dim, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input(shape, dtype, layout, device, generator).requires_grad_()
        ours, theirs = (softmax, torch.nn.functional.softmax) if name == "softmax" else (
            log_softmax, torch.nn.functional.log_softmax)
        # Not ones: softmax's gradient of a sum is 0 (every row sums to 1), which checks nothing.
        grad = random_input(shape, dtype, "nchw", device, generator)
        return training_steps(lambda x: ours(x, dim), lambda x: theirs(x, dim), input, output_grad=lambda out: grad)

    return BenchmarkCase(name, f"{suite}/{'x'.join(map(str, shape))}/dim{dim}", dtype, layout,
                         {"bytes": bytes_moved(torch.Size(shape).numel(), element_size(dtype))}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The suites of ``op`` (softmax or log_softmax); a small one with ``smoke``."""
    suites = {"smoke": (op, (3, 5, 4, 7), 1)} if smoke else {k: v for k, v in SUITES.items() if v[0] == op}
    return [_case(suite, name, shape, dim, dtype, layout if len(shape) == 4 else "nchw")
            for suite, (name, shape, dim) in suites.items() for dtype in dtypes
            for layout in (layouts if len(shape) == 4 and dim == 1 else layouts[:1])]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_softmax_forward_kernel", "_softmax_backward_kernel")


def _launch(kernel_module, dtype, rows_shape, log):
    kernels = kernel_module("softmax")
    x, y, dy, dx = (empty(rows_shape, dtype) for _ in range(4))
    kernels.forward(x, y, log=log)
    kernels.backward(y, dy, dx, log=log)


def static_launches(kernel_module, options):
    """Softmax over 1000 classes (rows contiguous) and log_softmax over 21 classes per pixel of a
    128x128 map (classes strided), in each dtype."""
    out = []
    for dtype_name in options.dtypes:
        out.append((f"softmax N256 C1000 {dtype_name}",
                    lambda dtype_name=dtype_name: _launch(kernel_module, DTYPES[dtype_name], (256, 1000, 1), False)))
        out.append((f"log_softmax N8 C21 128x128 {dtype_name}",
                    lambda dtype_name=dtype_name: _launch(kernel_module, DTYPES[dtype_name], (8, 21, 128 * 128),
                                                          True)))
    return out


def compile_variants(kernel_module):
    """Rows longer than one tile (walked twice) and short rows (one tile), both functions; and
    strided classes over a plane (tiles of one image's positions)."""
    variants = [(f"{'log_' if log else ''}softmax C{classes} bf16",
                 lambda log=log, classes=classes: _launch(kernel_module, DTYPES["bf16"], (2, classes, 1), log))
                for log in (False, True) for classes in (128000, 10)]
    variants.append(("softmax C21 per image fp16", lambda: _launch(kernel_module, DTYPES["fp16"], (2, 21, 4096),
                                                                   False)))
    return variants
