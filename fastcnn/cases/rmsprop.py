"""RMSprop's benchmark cases: one step of the MobileNet/EfficientNet recipe (alpha 0.9, eps 1e-3,
momentum 0.9) over each parameter suite against torch's ``foreach=True`` step (torch has no fused
RMSprop) and torch.compile."""
import torch

from ..ops.rmsprop import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases
from ._static import VariantOptions, optimizer_step_launches

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("rmsprop",)
profile_cases = optimizer_step_cases(
    torch.optim.RMSprop, dict(lr=0.016, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5),
    lambda numel, element_size: bytes_moved(numel, element_size, momentum=True), torch_fused=False)


def static_launches(kernel_module, options):
    """scripts/static_gpu_check.py's launches: one step, every option on, over ResNet-ish parameters."""
    return optimizer_step_launches(kernel_module, options, "rmsprop", "RMSprop centered+momentum", 6, dict(
        lr=0.01, alpha=0.9, eps=1e-3, weight_decay=1e-5, momentum=0.9, centered=True, maximize=False))


def compile_variants(kernel_module):
    """The step with maximize on, in fp32 and bf16, over parameters that do and do not start
    16-byte aligned (the aligned kernel must use 128-bit accesses, the other must not)."""
    return [launch for aligned in (True, False) for launch in optimizer_step_launches(
        kernel_module, VariantOptions, "rmsprop", "RMSprop centered+momentum maximize", 6, dict(
            lr=0.01, alpha=0.9, eps=1e-3, weight_decay=1e-5, momentum=0.9, centered=True, maximize=True), aligned)]
