"""Adam's benchmark cases: one step (lr 1e-3) over each parameter suite against torch's
``fused=True`` and ``foreach=True`` steps and torch.compile."""
import torch

from ..ops.adam import bytes_moved
from ._optimizers import PARAMETER_SUITES, optimizer_step_cases
from ._static import DTYPES, RESNET_ISH_SHAPES, parameter_list, triton_type

SUITES = PARAMETER_SUITES
PROFILE_OPS = ("adam",)
profile_cases = optimizer_step_cases(torch.optim.Adam, dict(lr=1e-3), bytes_moved, torch_fused=True)


# ----------------------------------------------------------------------------- the static check's launches
def static_launches(kernel_module, options):
    """One step over ResNet-ish parameters: AdamW in fp32 and bf16, Adam with GradScaler in fp32."""
    out = []
    adam_cases = [("fp32", "AdamW", False), ("fp32", "Adam+GradScaler", True), ("bf16", "AdamW", False)]
    for dtype_name, label, scaler in adam_cases:
        if dtype_name not in options.dtypes:
            continue

        def adam(dtype_name=dtype_name, label=label, scaler=scaler):
            adam_kernels, multi_tensor = kernel_module("adam"), kernel_module("multi_tensor")
            dtype = DTYPES[dtype_name]
            lists = [parameter_list(dtype) for _ in range(4)]
            steps = [torch.zeros((), dtype=torch.float32) for _ in RESNET_ISH_SHAPES]
            tensor_lists = (*lists, lists[3], steps)
            numels = [t.numel() for t in lists[0]]
            table = multi_tensor.build_table(tensor_lists, numels, multi_tensor.CHUNK_SIZE, torch.device("cpu"))
            scale = torch.ones((), dtype=torch.float32) if scaler else None
            found_inf = torch.zeros((), dtype=torch.float32) if scaler else None
            element_type = triton_type(dtype_name)
            adam_kernels.adam_step(table, element_type=element_type, state_type=element_type, lr=1e-3, beta1=0.9,
                                   beta2=0.999, eps=1e-8, weight_decay=0.0 if scaler else 1e-2,
                                   decoupled_weight_decay=not scaler, amsgrad=False, maximize=False,
                                   grad_scale=scale, found_inf=found_inf)
        out.append((f"adam {label} ResNet-ish params {dtype_name}", adam))
    return out


def compile_variants(kernel_module):
    """Adam's step in fp32, bf16 and fp16: every option on (AMSGrad, maximize, decoupled decay,
    GradScaler) over 16-byte aligned parameters, every option off over unaligned ones."""
    def step(dtype_name, aligned):
        adam_kernels, multi_tensor = kernel_module("adam"), kernel_module("multi_tensor")
        dtype = DTYPES[dtype_name]
        lists = [parameter_list(dtype, aligned) for _ in range(5)]
        steps = [torch.zeros((), dtype=torch.float32) for _ in RESNET_ISH_SHAPES]
        table = multi_tensor.build_table((*lists, steps), [t.numel() for t in lists[0]], multi_tensor.CHUNK_SIZE,
                                         torch.device("cpu"))
        flag = torch.zeros((), dtype=torch.float32) if aligned else None
        element_type = triton_type(dtype_name)
        adam_kernels.adam_step(table, element_type=element_type, state_type=element_type, lr=1e-3, beta1=0.9,
                               beta2=0.999, eps=1e-8, weight_decay=1e-2, decoupled_weight_decay=aligned,
                               amsgrad=aligned, maximize=aligned, grad_scale=flag, found_inf=flag)
    return [(f"adam {'every option, aligned' if aligned else 'no option, unaligned'} {dtype_name}",
             lambda dtype_name=dtype_name, aligned=aligned: step(dtype_name, aligned))
            for dtype_name in ("fp32", "bf16", "fp16") for aligned in (True, False)]
