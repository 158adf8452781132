"""Gradient clipping's benchmark cases: clip_grad_norm_ (max_norm 1, which clips every call, and
inf, which never does) and clip_grad_value_ over each parameter suite against torch's foreach path
and torch.compile of it."""
import torch

from ..benchmarking import element_size
from ..ops.clip_grad import bytes_moved, clip_grad_norm_, clip_grad_value_
from ._optimizers import PARAMETER_SUITES, optimizer_profile_cases, step_cases
from ._static import DTYPES, parameter_list, triton_type

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
    _optimizers.optimizer_profile_cases); ``layouts`` does not apply. max_norm 1 clips every
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


# ----------------------------------------------------------------------------- the static check's launches
def static_launches(kernel_module, options):
    """scripts/static_gpu_check.py's launches: the 2-norm, scaling and clamping over ResNet-ish
    gradients, in each of the options' dtypes but fp16."""
    out = []
    for dtype_name in options.dtypes:
        if dtype_name == "fp16":
            continue

        def clip(dtype_name=dtype_name):
            clip_grad, multi_tensor = kernel_module("clip_grad"), kernel_module("multi_tensor")
            dtype = DTYPES[dtype_name]
            grads = parameter_list(dtype)
            table = multi_tensor.build_table((grads,), [g.numel() for g in grads], multi_tensor.CHUNK_SIZE,
                                             torch.device("cpu"))
            element_type = triton_type(dtype_name)
            partials = torch.empty((clip_grad.PARTIAL_ROWS, table.num_chunks), dtype=torch.float32)
            total, coefficient = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
            clip_grad.partial_norms(table, partials, 0, 0, element_type=element_type, norm_type=2.0)
            clip_grad.total_norm(partials, total, coefficient, total_type=element_type, norm_type=2.0, max_norm=1.0)
            clip_grad.scale(table, coefficient, element_type=element_type)
            clip_grad.clamp(table, 1.0, element_type=element_type)
        out.append((f"clip_grad norm 2 + scale + clamp ResNet-ish grads {dtype_name}", clip))
    return out


def compile_variants(kernel_module):
    """Every norm type's partial norms and merge (2, 3.5, inf, -inf, 0, -1.5) in fp32; the 2-norm
    in bf16; scaling and clamping in fp32 and bf16; each over aligned and unaligned gradients."""
    def clip(dtype_name, norm_type, aligned):
        clip_grad, multi_tensor = kernel_module("clip_grad"), kernel_module("multi_tensor")
        dtype = DTYPES[dtype_name]
        grads = parameter_list(dtype, aligned)
        table = multi_tensor.build_table((grads,), [g.numel() for g in grads], multi_tensor.CHUNK_SIZE,
                                         torch.device("cpu"))
        element_type = triton_type(dtype_name)
        partials = torch.empty((clip_grad.PARTIAL_ROWS, table.num_chunks), dtype=torch.float32)
        total, coefficient = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
        clip_grad.partial_norms(table, partials, 0, 0, element_type=element_type, norm_type=norm_type)
        clip_grad.total_norm(partials, total, coefficient, total_type=element_type, norm_type=norm_type,
                             max_norm=1.0)
        clip_grad.scale(table, coefficient, element_type=element_type)
        clip_grad.clamp(table, 1.0, element_type=element_type)
    cases = [("fp32", norm_type, True) for norm_type in (2.0, 3.5, float("inf"), float("-inf"), 0.0, -1.5)]
    cases += [(dtype_name, 2.0, aligned) for dtype_name in ("fp32", "bf16") for aligned in (True, False)]
    return [(f"clip_grad norm {norm_type:g} {'aligned' if aligned else 'unaligned'} {dtype_name}",
             lambda dtype_name=dtype_name, norm_type=norm_type, aligned=aligned: clip(dtype_name, norm_type, aligned))
            for dtype_name, norm_type, aligned in cases]
