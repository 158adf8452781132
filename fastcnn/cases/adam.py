"""Adam's benchmark cases: one step (lr 1e-3) over each parameter suite against torch's
``fused=True`` and ``foreach=True`` steps and torch.compile."""
import torch

from ..ops.adam import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("adam",)
profile_cases = optimizer_step_cases(torch.optim.Adam, dict(lr=1e-3), bytes_moved, torch_fused=True)
