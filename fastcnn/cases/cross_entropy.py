"""cross_entropy's benchmark cases: Loss and gradient of cross-entropy from 10 to 128,000 classes."""
import torch

from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.cross_entropy import bytes_moved, cross_entropy

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
