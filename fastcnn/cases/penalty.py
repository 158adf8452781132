"""The elastic-net penalty's benchmark cases: l1·Σ|p| + l2·Σp² and its backward over each
parameter suite (ResNet-50's 161 tensors, 2000 small ones) against the Python loop users write
(eager) and torch.compile of it."""
import torch

from ..benchmarking import element_size
from ..ops.penalty import bytes_moved, penalty
from ._optimizers import PARAMETER_SUITES, optimizer_profile_cases, step_cases
from ._static import DTYPES, parameter_list, triton_type

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("penalty",)
L1, L2 = 1e-5, 1e-4


def _loop(params):
    """The eager baseline: what a training script writes for elastic-net regularisation."""
    return sum(L1 * p.abs().sum() + L2 * p.square().sum() for p in params)


def _implementations():
    def backward_of(function):
        return lambda params: lambda: function(params).backward()

    return {"fastcnn": backward_of(lambda params: penalty(params, L1, L2)), "eager": backward_of(_loop),
            "torch_compile": backward_of(_loop)}


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The penalty and its gradient over each parameter suite (``layouts`` does not apply)."""
    make = step_cases(op, _implementations(), lambda dtype: bytes_moved(1, element_size(dtype)))
    return optimizer_profile_cases(op, dtypes, make, quick=quick, smoke=smoke)


# ----------------------------------------------------------------------------- the static check's launches
def _launch(kernel_module, dtype_name, aligned):
    penalty_kernels, multi_tensor = kernel_module("penalty"), kernel_module("multi_tensor")
    params = parameter_list(DTYPES[dtype_name], aligned)
    grads = [torch.empty_like(p) for p in params]
    table = multi_tensor.build_table((params,), [p.numel() for p in params], multi_tensor.CHUNK_SIZE,
                                     torch.device("cpu"))
    partials = torch.empty((2, table.num_chunks), dtype=torch.float32)
    penalty_kernels.chunk_sums(table, partials, 0, element_type=triton_type(dtype_name))
    penalty_kernels.total(partials, torch.empty((), dtype=DTYPES[dtype_name]), L1, L2)
    grad_table = multi_tensor.build_table((params, grads), [p.numel() for p in params], multi_tensor.CHUNK_SIZE,
                                          torch.device("cpu"))
    penalty_kernels.grad(grad_table, torch.empty((), dtype=torch.float32), L1, L2,
                         element_type=triton_type(dtype_name))


def static_launches(kernel_module, options):
    """The penalty and its gradient over ResNet-ish parameters in each dtype."""
    return [(f"penalty ResNet-ish params {dtype_name}", lambda dtype_name=dtype_name: _launch(
        kernel_module, dtype_name, True)) for dtype_name in options.dtypes]


def compile_variants(kernel_module):
    """Parameters aligned and one element past a 16-byte boundary (no 128-bit accesses may then be
    assumed)."""
    return [(f"penalty {'aligned' if aligned else 'unaligned'} {dtype_name}",
             lambda dtype_name=dtype_name, aligned=aligned: _launch(kernel_module, dtype_name, aligned))
            for dtype_name in ("fp32", "bf16") for aligned in (True, False)]
