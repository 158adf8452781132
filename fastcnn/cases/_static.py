"""What the case modules' ``static_launches`` share: the dtypes and layouts the static check's
options name, CPU tensors laid out as a model's, the optimizers' parameter shapes and their
launches. Nothing here imports triton at import time (``import fastcnn.cases`` must not fix the
kernels' mode before TRITON_INTERPRET is set)."""
import functools
import math

import torch

from ..benchmarking import DTYPES, MEMORY_FORMATS

# Whether each of the benchmark catalogue's memory formats is channels_last.
CHANNELS_LAST = {name: memory_format is torch.channels_last for name, memory_format in MEMORY_FORMATS.items()}

# Parameter shapes of the optimizer scenarios: a ResNet's stem, BN vectors, 1x1 and 3x3 convs, fc.
RESNET_ISH_SHAPES = [(64, 3, 7, 7), (64,), (256, 64, 1, 1), (512, 512, 3, 3), (1000, 2048), (1000,)]


def empty(shape, dtype, channels_last=False):
    """torch.empty in the layout; channels_last as model.to(memory_format=...) and fastcnn's own
    allocations lay it out (a 1x1 weight gets strides (C, 1, C, C), not .contiguous()'s (C, 1, 1, 1))."""
    if channels_last and len(shape) == 4:
        return torch.empty(shape, dtype=dtype, memory_format=torch.channels_last)
    return torch.empty(shape, dtype=dtype)


@functools.lru_cache(maxsize=None)
def wide_buffer(dtype):
    """An untouched allocation of 2**31 + 4096 elements of ``dtype``, for views that reach past
    2**31 elements (int64 indexing) without using the memory. One per dtype, shared by every op's
    compile variants: the recorded launches keep their tensors, and the static check's forked
    compile workers inherit each of these 4 to 8 GiB of address space."""
    return torch.empty(2**31 + 4096, dtype=dtype)


def per_layout_and_dtype(options, name, launch):
    """(f"{name} {layout} {dtype}", callable) for each of the options' layouts and, within each,
    dtypes: the callable runs ``launch(dtype, channels_last)``."""
    return [(f"{name} {layout} {dtype_name}", functools.partial(launch, DTYPES[dtype_name], CHANNELS_LAST[layout]))
            for layout in options.layouts for dtype_name in options.dtypes]


def parameter_list(dtype, aligned=True):
    """Tensors of RESNET_ISH_SHAPES; without ``aligned`` each starts one element past a 16-byte
    boundary (a view into a larger buffer), so a multi-tensor launch may not assume alignment."""
    if aligned:
        return [torch.empty(shape, dtype=dtype) for shape in RESNET_ISH_SHAPES]
    return [torch.empty(math.prod(shape) + 1, dtype=dtype)[1:].view(shape) for shape in RESNET_ISH_SHAPES]


def triton_type(dtype_name):
    import triton.language as tl

    return {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16}[dtype_name]


def optimizer_step_launches(kernel_module, options, name, label, rows, hyperparameters, aligned=True,
                            clear_flags=False):
    """One step of optimizer ``name`` (its kernel module and ``<name>_step`` launcher) over the
    ResNet-ish parameters in each of the options' dtypes but fp16: ``rows`` tensor lists (param,
    grad, states) and the step counters; ``clear_flags``: SGD also clears its first-step flags.
    Without ``aligned`` the tensors start off a 16-byte boundary."""
    def step(dtype_name):
        kernels, multi_tensor = kernel_module(name), kernel_module("multi_tensor")
        dtype = DTYPES[dtype_name]
        tensors = [parameter_list(dtype, aligned) for _ in range(rows - 1)]
        counters = [torch.zeros((), dtype=torch.float32) for _ in RESNET_ISH_SHAPES]
        table = multi_tensor.build_table((*tensors, counters), [t.numel() for t in tensors[0]],
                                         multi_tensor.CHUNK_SIZE, torch.device("cpu"))
        element_type = triton_type(dtype_name)
        launch = getattr(kernels, f"{name}_step")
        types = dict(element_type=element_type) if name == "sgd" else dict(element_type=element_type,
                                                                             state_type=element_type)
        pending = None
        if clear_flags:
            pending = multi_tensor.build_table((counters,), [1] * len(counters), multi_tensor.CHUNK_SIZE,
                                               torch.device("cpu"))
        arguments = (table, pending) if name == "sgd" else (table,)
        launch(*arguments, **types, **hyperparameters)
    alignment = "" if aligned else " unaligned"
    return [(f"{name} {label} ResNet-ish params{alignment} {dtype_name}",
             lambda dtype_name=dtype_name: step(dtype_name)) for dtype_name in options.dtypes if dtype_name != "fp16"]


class VariantOptions:
    """The options a compile variant runs under: both element types the multi-tensor kernels are
    compiled in, both layouts."""
    dtypes = ("fp32", "bf16")
    layouts = ("nchw", "channels_last")
