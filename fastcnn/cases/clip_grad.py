"""Gradient clipping's benchmark cases: clip_grad_norm_ (max_norm 1, which clips every call, and
inf, which never does) and clip_grad_value_ over each parameter suite against torch's foreach path
and torch.compile of it."""
import torch

from ..benchmarking import element_size
from ..ops.clip_grad import bytes_moved, clip_grad_norm_, clip_grad_value_
from ._optimizers import PARAMETER_SUITES, optimizer_profile_cases, step_cases

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("clip_grad_norm", "clip_grad_value")


def _implementations(ours, theirs):
    """fastcnn's clipping (``ours(params)``), torch's foreach path (eager, ``theirs(params,
    foreach=True)``) and torch.compile of it."""
    def torch_clip(params):
        return lambda: theirs(params, foreach=True)

    return {"fastcnn": lambda params: lambda: ours(params), "eager": torch_clip, "torch_compile": torch_clip}


def _norm_cases(op, max_norm, clipped):
    return step_cases(op, _implementations(lambda params: clip_grad_norm_(params, max_norm),
                                           lambda params, **options: torch.nn.utils.clip_grad_norm_(
                                               params, max_norm, **options)),
                      lambda dtype: bytes_moved(1, element_size(dtype), clipped), f"max_norm={max_norm:g}")


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: clipping over each suite's parameters (see
    multi_tensor.optimizer_profile_cases); ``layouts`` does not apply. max_norm 1 clips every
    call (the norm settles a hair under 1 + 1e-6, so the coefficient stays below 1); max_norm inf
    never clips, where fastcnn only reads (torch also writes)."""
    if op == "clip_grad_value":
        cases = [step_cases(op, _implementations(lambda params: clip_grad_value_(params, 0.5),
                                                 lambda params, **options: torch.nn.utils.clip_grad_value_(
                                                     params, 0.5, **options)),
                            lambda dtype: 2 * element_size(dtype))]
    else:
        cases = [_norm_cases(op, 1.0, clipped=True), _norm_cases(op, float("inf"), clipped=False)]
    return optimizer_profile_cases(op, dtypes, lambda *suite: [make(*suite) for make in cases], quick=quick,
                                   smoke=smoke)
