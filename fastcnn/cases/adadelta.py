"""Adadelta's benchmark cases: one step over each parameter suite against torch's ``foreach=True``
step (torch has no fused Adadelta) and torch.compile."""
import torch

from ..ops.adadelta import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases
from ._static import VariantOptions, optimizer_step_launches

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("adadelta",)
profile_cases = optimizer_step_cases(torch.optim.Adadelta, dict(lr=1.0, rho=0.9, weight_decay=1e-4), bytes_moved,
                                     torch_fused=False)


def static_launches(kernel_module, options):
    """scripts/static_gpu_check.py's launches: one step over ResNet-ish parameters."""
    return optimizer_step_launches(kernel_module, options, "adadelta", "Adadelta", 5, dict(
        lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-4, maximize=False))


def compile_variants(kernel_module):
    """The step with maximize on, in fp32 and bf16, over parameters that do and do not start
    16-byte aligned (the aligned kernel must use 128-bit accesses, the other must not)."""
    return [launch for aligned in (True, False) for launch in optimizer_step_launches(
        kernel_module, VariantOptions, "adadelta", "Adadelta maximize", 5, dict(
            lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-4, maximize=True), aligned)]
