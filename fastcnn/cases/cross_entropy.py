"""cross_entropy's benchmark cases: Loss and gradient of cross-entropy from 10 to 128,000 classes."""
import torch

from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.cross_entropy import bytes_moved, cross_entropy
from ._static import DTYPES

# (rows N, classes C). N is 64k where the logits stay under 2**28 elements, fewer rows for the
# largest vocabularies.
SUITES = {f"C{classes}": (min(65536, 2**28 // classes), classes) for classes in (10, 100, 1000, 32000, 128000)}
PROFILE_OPS = ("cross_entropy",)


def _case(suite, rows, classes, dtype):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        logits = random_input((rows, classes), dtype, "nchw", device, generator).requires_grad_()
        target = torch.randint(0, classes, (rows,), device=device, generator=generator)
        eager = torch.nn.functional.cross_entropy
        return training_steps(cross_entropy, eager, logits, (target,))

    return BenchmarkCase("cross_entropy", f"{suite}/N{rows}", dtype, "-",
                         {"bytes": bytes_moved(rows, classes, element_size(dtype))}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: loss and gradient of every suite (two with ``quick``); logits are 2-d,
    so ``layouts`` does not apply."""
    suites = {"C37": (11, 37)} if smoke else {k: v for k, v in SUITES.items() if not quick or k in ("C1000", "C32000")}
    return [_case(name, rows, classes, dtype) for name, (rows, classes) in suites.items() for dtype in dtypes]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_cross_entropy_kernel",)


def static_launches(kernel_module, options):
    """Loss, row reduction and gradient scaling for 1000 and 10 classes."""
    out = []
    for dtype_name in options.dtypes:
        for rows, classes in ((256, 1000), (1024, 10)):
            def ce(dtype_name=dtype_name, rows=rows, classes=classes):
                cross_entropy = kernel_module("cross_entropy")
                dtype = DTYPES[dtype_name]
                x = torch.empty((rows, classes), dtype=dtype).unsqueeze(-1)
                target = torch.zeros((rows,), dtype=torch.int64).unsqueeze(-1)
                row_loss = torch.empty(rows, dtype=torch.float32)
                row_weight = torch.empty(rows, dtype=torch.float32)
                grad = torch.empty_like(x)
                cross_entropy.forward(x, target, None, row_loss, row_weight, grad, cross_entropy.invalid_buffer("cpu"),
                                      ignore_index=-100, smoothing=0.0, probabilities=False)
                loss, denominator = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
                cross_entropy.reduce_rows(row_loss, row_weight, loss, denominator, mean=True)
                cross_entropy.scale_grad(grad, torch.ones((), dtype=dtype), denominator, mean=True)
            out.append((f"cross_entropy N{rows} C{classes} {dtype_name}", ce))
    return out


def compile_variants(kernel_module):
    """Class-index and probability targets, with class weights and label smoothing, in bf16 and
    fp32, for 10 and 128,000 classes (one row tile, and a chunked row)."""
    def loss(dtype_name, probabilities, classes):
        cross_entropy = kernel_module("cross_entropy")
        dtype, rows = DTYPES[dtype_name], 4
        x = torch.empty((rows, classes), dtype=dtype).unsqueeze(-1)
        target = torch.empty_like(x) if probabilities else torch.zeros((rows,), dtype=torch.int64).unsqueeze(-1)
        row_loss, row_weight = torch.empty(rows, dtype=torch.float32), torch.empty(rows, dtype=torch.float32)
        grad = torch.empty_like(x)
        cross_entropy.forward(x, target, torch.ones(classes, dtype=dtype), row_loss, row_weight, grad,
                              cross_entropy.invalid_buffer("cpu"), ignore_index=-100, smoothing=0.1,
                              probabilities=probabilities)
        loss, denominator = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
        cross_entropy.reduce_rows(row_loss, row_weight, loss, denominator, mean=True)
        cross_entropy.scale_grad(grad, torch.ones((), dtype=dtype), denominator, mean=True)
    return [(f"cross_entropy {'probabilities' if probabilities else 'indices'} C{classes} {dtype_name}",
             lambda dtype_name=dtype_name, probabilities=probabilities, classes=classes: loss(
                 dtype_name, probabilities, classes))
            for dtype_name in ("bf16", "fp32") for probabilities in (False, True) for classes in (10, 128000)]
