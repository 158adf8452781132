"""nll_loss's benchmark cases: loss and gradient of log-probabilities at class indices, an
ImageNet classifier's (N, 1000) and a segmentation head's per-pixel (N, 21, H, W), against torch
eager and torch.compile."""
import torch

from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.nll_loss import bytes_moved, nll_loss
from ._static import DTYPES, empty

# (input shape) of each suite: ImageNet's classes, and Pascal VOC's 21 classes per pixel.
SUITES = {"imagenet": (256, 1000), "segmentation": (8, 21, 256, 256)}
PROFILE_OPS = ("nll_loss",)


def _case(suite, shape, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input(shape, dtype, layout, device, generator).requires_grad_()
        target = torch.randint(0, shape[1], (shape[0],) + shape[2:], device=device, generator=generator)
        return training_steps(nll_loss, torch.nn.functional.nll_loss, input, (target,))

    rows = torch.Size(shape).numel() // shape[1]
    return BenchmarkCase("nll_loss", f"{suite}/{'x'.join(map(str, shape))}", dtype, layout,
                         {"bytes": bytes_moved(rows, shape[1], element_size(dtype))}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """Both suites (a small 4-d one with ``smoke``), in NCHW only: torch's nll_loss2d backward
    refuses a channels_last gradient ("grad_input must be contiguous"), so eager has no
    channels_last baseline."""
    suites = {"smoke": (3, 5, 4, 7)} if smoke else SUITES
    return [_case(suite, shape, dtype, "nchw") for suite, shape in suites.items() for dtype in dtypes]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_nll_loss_backward_kernel",)


def _launch(kernel_module, dtype, shape, channels_last, *, reduce=True, weight=False):
    kernels = kernel_module("nll_loss")
    x = empty(shape, dtype, channels_last)
    rows = x.view(shape[0], shape[1], -1) if not channels_last else x.as_strided(
        (shape[0], shape[1], shape[2] * shape[3]), (x.stride(0), 1, shape[1]))
    target = torch.zeros((shape[0], rows.shape[2]), dtype=torch.int64)
    w = empty((shape[1],), dtype) if weight else None
    partials = kernels.forward_partials(target.numel())
    partial = torch.empty(2 * partials, dtype=torch.float32)
    loss = torch.empty((), dtype=dtype) if reduce else torch.empty(target.numel(), dtype=dtype)
    kernels.forward(rows, target, w, None if reduce else loss, partial if reduce else None,
                    kernels.invalid_buffer("cpu"), ignore_index=-100, reduce=reduce)
    grad_out = torch.empty((), dtype=dtype) if reduce else torch.empty(target.shape, dtype=dtype)
    kernels.backward(grad_out, target, w, torch.empty((), dtype=torch.float32) if reduce else None,
                     torch.empty_like(rows), ignore_index=-100)


def static_launches(kernel_module, options):
    """The segmentation suite's per-pixel loss at 128x128, in each layout and dtype."""
    return [(f"nll_loss N8 C21 128x128 {layout} {dtype_name}",
             lambda dtype_name=dtype_name, layout=layout: _launch(kernel_module, DTYPES[dtype_name],
                                                                  (8, 21, 128, 128), layout == "channels_last"))
            for layout in options.layouts for dtype_name in options.dtypes]


def compile_variants(kernel_module):
    """Class weights with the 'none' reduction (per-row losses and output gradients), and the
    reduced loss without weights."""
    return [("nll_loss weighted none bf16", lambda: _launch(kernel_module, DTYPES["bf16"], (4, 1000, 1, 1), False,
                                                            reduce=False, weight=True)),
            ("nll_loss mean fp32", lambda: _launch(kernel_module, DTYPES["fp32"], (4, 10, 3, 3), True))]
