"""SGD's benchmark cases: one step of ResNet's recipe (momentum 0.9, weight decay 1e-4) over each
parameter suite against torch's ``fused=True`` and ``foreach=True`` steps and torch.compile."""
import torch

from ..ops.sgd import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases
from ._static import VariantOptions, optimizer_step_launches

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("sgd",)
profile_cases = optimizer_step_cases(torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4), bytes_moved,
                                     torch_fused=True)


def static_launches(kernel_module, options):
    """scripts/static_gpu_check.py's launches: one step, every option on, over ResNet-ish parameters."""
    return optimizer_step_launches(kernel_module, options, "sgd", "SGD momentum+Nesterov", 4, dict(
        lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=True, maximize=False))


def compile_variants(kernel_module):
    """The step with maximize on, in fp32 and bf16, over parameters that do and do not start
    16-byte aligned (the aligned kernel must use 128-bit accesses, the other must not)."""
    return [launch for aligned in (True, False) for launch in optimizer_step_launches(
        kernel_module, VariantOptions, "sgd", "SGD momentum+Nesterov maximize", 4, dict(
            lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=True, maximize=True), aligned,
        clear_flags=True)]
