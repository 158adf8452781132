"""Adagrad's benchmark cases: one step over each parameter suite against torch's ``fused=True``
and ``foreach=True`` steps and torch.compile."""
import torch

from ..ops.adagrad import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases
from ._static import VariantOptions, optimizer_step_launches

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("adagrad",)
profile_cases = optimizer_step_cases(torch.optim.Adagrad, dict(lr=0.01, lr_decay=1e-4, weight_decay=1e-4),
                                     bytes_moved, torch_fused=True)


def static_launches(kernel_module, options):
    """scripts/static_gpu_check.py's launches: one step over ResNet-ish parameters."""
    return optimizer_step_launches(kernel_module, options, "adagrad", "Adagrad", 4, dict(
        lr=0.01, lr_decay=1e-4, eps=1e-10, weight_decay=1e-4, maximize=False))


def compile_variants(kernel_module):
    """The step with maximize on, in fp32 and bf16, over parameters that do and do not start
    16-byte aligned (the aligned kernel must use 128-bit accesses, the other must not)."""
    return [launch for aligned in (True, False) for launch in optimizer_step_launches(
        kernel_module, VariantOptions, "adagrad", "Adagrad maximize", 4, dict(
            lr=0.01, lr_decay=1e-4, eps=1e-10, weight_decay=1e-4, maximize=True), aligned)]
