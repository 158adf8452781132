"""SGD's benchmark cases: one step of ResNet's recipe (momentum 0.9, weight decay 1e-4) over each
parameter suite against torch's ``fused=True`` and ``foreach=True`` steps and torch.compile."""
import torch

from ..ops.sgd import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("sgd",)
profile_cases = optimizer_step_cases(torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4), bytes_moved,
                                     torch_fused=True)
