#!/usr/bin/env python3
"""Static (no-GPU) performance check of fastcnn's Triton kernels for an NVIDIA target (default sm_90a, H100).

Usage, from the repository root
-------------------------------
    # the committed report (every scenario, every config; about 10 minutes on 2 cores):
    python scripts/static_gpu_check.py . --check --json bench/static/sm90a.json --output bench/static/sm90a.md

    # CI's representative subset (bf16 and fp32; a few minutes), failing on what is never acceptable:
    python scripts/static_gpu_check.py . --quick --check

    # several Triton installations, one combined report (each runs in its own process):
    python scripts/static_gpu_check.py . --python /tmp/tri36/bin/python --python .venv/bin/python

``--check`` exits with status 1 when any compile fails, any configuration the autotuner may pick
(after the kernels' own pruning) or any fixed launch cannot launch on an H100 (shared memory or
registers beyond an SM's) or spills registers, or when a memory-bound kernel that the issue names
(cross-entropy, max-pool, the norms, activations, dropout) launches fewer programs than the H100 has SMs on
a scenario large enough to fill it. Everything else is reported, not failed.

How it works
------------
1. Loads ``<project>/kernels`` as a stand-alone package (nothing needs to be installed; the
   kernels only import torch, triton, numpy and each other) with TRITON_INTERPRET unset.
2. Calls the project's own launch helpers (``conv2d.forward``, ``batch_norm.fold``, ...) on CPU
   tensors of representative shapes and layouts ("scenarios" below), with ``JITFunction.run`` and
   ``Autotuner.run`` patched to *record* each launch instead of running it (and the SM count
   pinned to an H100's 132). So the kernels, arguments, constexprs, grids and autotune config lists
   are exactly what the code would launch on a GPU.
3. For each recorded launch and each config the GPU path would try (every autotune Config, or the
   launch's own num_warps / num_stages), computes Triton's launch-time specialization with
   Triton's own binder (integers equal to 1 become constants, 16-divisible integers and 16-byte
   aligned pointers get tt.divisibility=16) and compiles with ``triton.compile`` for
   ``GPUTarget("cuda", <arch>, 32)``, each compile in a forked child (crash isolation).
4. Reads the TTGIR (MMA kind, shared-memory multi-buffering), the PTX (wgmma / mma.sync / FMA,
   cp.async / TMA, global load/store widths, 64-bit mul/div/rem inside loops), ``ptxas -v`` (run
   on the PTX with the ptxas that Triton itself picks for the arch: registers, spills) and the
   SASS of Triton's cubin via cuobjdump (HGMMA/HMMA/FFMA, instructions in the main loop).
5. Derives the theoretical occupancy (H100: 65536 regs, 228 KB smem, 64 warps, 32 CTAs per SM;
   1 KB smem reserved per CTA) and, for the GEMM kernels, the ratio of the main loop's issue
   cycles (SASS instructions x warps per scheduler) to its tensor-core cycles at peak
   (dense FLOP/clk/SM: 4096 bf16/fp16, 2048 tf32, 256 fp32 FFMA). A ratio above ~1 means the
   loop cannot keep the tensor cores busy whatever the memory system does.

The scenario list (``scenarios()``) is the one part that knows the launch helpers' signatures;
if a later version of the project changes one, that scenario is reported as failed and the rest
still run.
"""
import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import types

H100 = dict(sms=132, regs_per_sm=65536, max_regs_per_cta=65536, smem_per_sm=233472, max_smem_per_cta=232448,
            smem_reserved_per_cta=1024, smem_unit=128, reg_unit=256, max_warps=64, max_ctas=32)
# Dense peak FLOP per clock per SM (H100 SXM: 989 TFLOPS bf16 = 132 SMs x 1.83 GHz x 4096).
PEAK_FLOP_PER_CLK = {"bf16": 4096, "fp16": 4096, "tf32": 2048, "fp32": 256}
# HBM3 bandwidth per SM per clock (3.35 TB/s / 132 SMs / 1.83 GHz).
HBM_BYTES_PER_CLK_PER_SM = 3.35e12 / 132 / 1.83e9

PACKAGE = "_static_report_kernels"


# ------------------------------------------------------------------------------------------------
# Loading the project and recording launches

def load_kernels(project):
    os.environ.pop("TRITON_INTERPRET", None)
    path = os.path.join(os.path.abspath(project), "kernels")
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    if getattr(package, "INTERPRETED", False):
        raise SystemExit("kernels were loaded for the interpreter; unset TRITON_INTERPRET")
    return package


def kernel_module(name):
    return importlib.import_module(f"{PACKAGE}.{name}")


def pin_sm_count(sms):
    """The launch helpers size split-K from the device's SM count: answer an H100's without CUDA."""
    import torch
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(
        multi_processor_count=sms, name="H100 (static report)", major=9, minor=0)
    try:
        slicing = kernel_module("slicing")
        if hasattr(slicing, "sm_count"):
            slicing.sm_count = lambda device: sms
    except ImportError:
        pass


@dataclasses.dataclass
class Launch:
    scenario: str
    fn: object                # JITFunction
    args: tuple
    kwargs: dict
    grid: object
    configs: list             # list of dicts of kwargs incl. num_warps/num_stages; [kwargs-only] if not autotuned
    autotuned: bool


@contextlib.contextmanager
def recording(sink, scenario):
    from triton.runtime.jit import JITFunction
    from triton.runtime.autotuner import Autotuner
    saved = JITFunction.run, Autotuner.run

    def jit_run(self, *args, grid, warmup, **kwargs):
        sink.append(Launch(scenario, self, args, dict(kwargs), grid, [{}], False))

    def autotuner_run(self, *args, **kwargs):
        grid = kwargs.pop("grid")
        kwargs.pop("warmup", None)
        fn = self.fn
        # What the autotuner would benchmark: its configs after the kernel's own early pruning.
        self.nargs = dict(zip(self.arg_names, args))
        try:
            configs = [config.all_kwargs() for config in self.prune_configs(kwargs)]
        finally:
            self.nargs = None
        sink.append(Launch(scenario, fn, args, dict(kwargs), grid, configs, True))

    JITFunction.run, Autotuner.run = jit_run, autotuner_run
    try:
        yield
    finally:
        JITFunction.run, Autotuner.run = saved


# ------------------------------------------------------------------------------------------------
# Scenarios: representative launches through the project's own launch helpers (CPU tensors).

def _tensor(shape, dtype, channels_last=False):
    """torch.empty in the layout; channels_last as model.to(memory_format=...) and fastcnn's own
    allocations lay it out (a 1x1 weight gets strides (C, 1, C, C), not .contiguous()'s (C, 1, 1, 1))."""
    import torch
    if channels_last and len(shape) == 4:
        return torch.empty(shape, dtype=dtype, memory_format=torch.channels_last)
    return torch.empty(shape, dtype=dtype)


def scenarios(options):
    """(name, callable) pairs; each callable launches kernels through the project's helpers."""
    import torch
    import triton.language as tl
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    layouts = {"nchw": False, "channels_last": True}
    out = []

    def conv_case(label, dtype_name, precision, layout, n, c, k, h, w, r, s, stride, pad, groups=1, bias=False,
                  passes=("forward", "input_grad", "weight_grad"), weight_layout=None):
        def run():
            conv2d = kernel_module("conv2d")
            dtype = dtypes[dtype_name]
            cl = layouts[layout]
            p = (h + 2 * pad - r) // stride + 1
            q = (w + 2 * pad - s) // stride + 1
            x = _tensor((n, c, h, w), dtype, cl)
            weight = _tensor((k, c // groups, r, s), dtype, layouts[weight_layout or layout])
            y = _tensor((n, k, p, q), dtype, cl)
            b = _tensor((k,), dtype) if bias else None
            geo = dict(stride=(stride, stride), padding=(pad, pad), dilation=(1, 1), groups=groups)
            if "forward" in passes:
                conv2d.forward(x, weight, b, y, dot_precision=precision, **geo)
            if "input_grad" in passes:
                conv2d.input_grad(y, weight, _tensor((n, c, h, w), dtype, cl), dot_precision=precision, **geo)
            if "weight_grad" in passes:
                conv2d.weight_grad(x, y, _tensor((k, c // groups, r, s), dtype, cl), dot_precision=precision, **geo)
            if bias:
                conv2d.bias_grad(y, _tensor((k,), dtype))
        wl = f" (weights {weight_layout})" if weight_layout and weight_layout != layout else ""
        return (f"{label} {layout}{wl} {dtype_name}{'/' + precision if dtype_name == 'fp32' else ''}", run)

    conv_dtypes = [(name, precision) for name, precision in (("bf16", "ieee"), ("fp16", "ieee"), ("fp32", "tf32"))
                   if name in options.dtypes]
    if options.fp32_ieee:
        conv_dtypes.append(("fp32", "ieee"))
    for layout in options.layouts:
        for dtype_name, precision in conv_dtypes:
            out.append(conv_case("conv3x3 N32 C128 K128 28x28 s1 p1", dtype_name, precision, layout,
                                 32, 128, 128, 28, 28, 3, 3, 1, 1, bias=True))
    if options.conv1x1:
        # Channels_last model, and channels_last activations with a contiguous (NCHW) weight, whose
        # 1x1 strides are (C, 1, 1, 1): stride 1 in the unit dims turns them into constants.
        out.append(conv_case("conv1x1 N32 C256 K64 56x56 s1", "bf16", "ieee", "channels_last",
                             32, 256, 64, 56, 56, 1, 1, 1, 0))
        out.append(conv_case("conv1x1 N32 C256 K64 56x56 s1", "bf16", "ieee", "channels_last",
                             32, 256, 64, 56, 56, 1, 1, 1, 0, weight_layout="nchw"))
    for layout in options.layouts:
        for dtype_name in options.dtypes:
            out.append(conv_case("depthwise3x3 N32 C128 28x28 s1 p1", dtype_name, "ieee", layout,
                                 32, 128, 128, 28, 28, 3, 3, 1, 1, groups=128, bias=False))

    for layout in options.layouts:
        for dtype_name in options.dtypes:
            def pool(layout=layout, dtype_name=dtype_name):
                import torch
                max_pool = kernel_module("max_pool")
                dtype, cl = dtypes[dtype_name], layouts[layout]
                x = _tensor((32, 64, 112, 112), dtype, cl)
                out_ = _tensor((32, 64, 56, 56), dtype, cl)
                taps = _tensor((32, 64, 56, 56), torch.uint8, cl)
                geo = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
                max_pool.forward(x, out_, taps, None, **geo)
                max_pool.backward(out_, taps, _tensor((32, 64, 112, 112), dtype, cl), **geo)
            out.append((f"maxpool3x3s2 N32 C64 112x112 {layout} {dtype_name}", pool))

    for layout in options.layouts:
        for dtype_name in options.dtypes:
            def bn(layout=layout, dtype_name=dtype_name):
                import torch
                batch_norm = kernel_module("batch_norm")
                dtype, cl = dtypes[dtype_name], layouts[layout]
                c = 128
                x4 = _tensor((32, c, 28, 28), dtype, cl)
                x = x4.view(32, c, -1)
                y = _tensor((32, c, 28, 28), dtype, cl).view(32, c, -1)
                folded = torch.empty((5, c), dtype=torch.float32)
                weight, bias = torch.ones(c), torch.zeros(c)
                running_mean, running_var = torch.zeros(c), torch.ones(c)
                batch_norm.fold(x, folded, weight, bias, running_mean, running_var, training=True, momentum=0.1,
                                eps=1e-5)
                batch_norm.apply(x, None, y, folded, kind="relu", parameter=0.0)
                dx = _tensor((32, c, 28, 28), dtype, cl).view(32, c, -1)
                batch_norm.backward(y, x, None, dx, None, folded, torch.empty(c), torch.empty(c), training=True,
                                    kind="relu", parameter=0.0)
            out.append((f"batchnorm+relu N32 C128 28x28 {layout} {dtype_name}", bn))

    for layout in options.layouts:
        for dtype_name in options.dtypes:
            def bn_add_relu(layout=layout, dtype_name=dtype_name):
                import torch
                batch_norm = kernel_module("batch_norm")
                dtype, cl = dtypes[dtype_name], layouts[layout]
                c = 256  # the end of a ResNet-50 bottleneck in stage 1: bn3 + identity, ReLU
                x, r, y, dx, dr = (_tensor((32, c, 56, 56), dtype, cl).view(32, c, -1) for _ in range(5))
                folded = torch.empty((5, c), dtype=torch.float32)
                batch_norm.fold(x, folded, torch.ones(c), torch.zeros(c), torch.zeros(c), torch.ones(c), training=True,
                                momentum=0.1, eps=1e-5)
                batch_norm.apply(x, r, y, folded, kind="relu", parameter=0.0)
                batch_norm.backward(y, x, r, dx, dr, folded, torch.empty(c), torch.empty(c), training=True,
                                    kind="relu", parameter=0.0)
            out.append((f"batchnorm+add+relu N32 C256 56x56 {layout} {dtype_name}", bn_add_relu))

    for dtype_name in options.dtypes:
        def residual_add(dtype_name=dtype_name):
            add = kernel_module("add")
            x, r, out_ = (_tensor((32, 256, 56, 56), dtypes[dtype_name], True) for _ in range(3))
            add.add(x, r, out_)
        out.append((f"residual add N32 C256 56x56 channels_last {dtype_name}", residual_add))

    for layout in options.layouts:
        for dtype_name in options.dtypes:
            def avg_pools(layout=layout, dtype_name=dtype_name):
                avg_pool = kernel_module("avg_pool")
                dtype, cl = dtypes[dtype_name], layouts[layout]
                head = _tensor((64, 2048, 7, 7), dtype, cl)  # ResNet-50's global pool
                pooled = _tensor((64, 2048, 1, 1), dtype, cl)
                avg_pool.forward(head, pooled)
                avg_pool.backward(pooled, head)
                x = _tensor((32, 192, 35, 35), dtype, cl)  # Inception's 3x3 stride-1 average pool
                y = _tensor((32, 192, 35, 35), dtype, cl)
                window = dict(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), count_include_pad=False)
                avg_pool.forward(x, y, **window)
                avg_pool.backward(y, x, **window)
                small = _tensor((32, 192, 7, 7), dtype, cl)  # an adaptive 35 -> 7
                avg_pool.forward(x, small)
                avg_pool.backward(small, x)
            out.append((f"avgpool global 7x7 N64 C2048, 3x3s1 and adaptive 35->7 N32 C192 {layout} {dtype_name}",
                        avg_pools))

    for layout in options.layouts:
        for dtype_name in options.dtypes:
            def group_norm_silu(layout=layout, dtype_name=dtype_name):
                import torch
                group_norm = kernel_module("group_norm")
                dtype, cl = dtypes[dtype_name], layouts[layout]
                c, groups = 320, 32
                x = _tensor((8, c, 64, 64), dtype, cl).view(8, c, -1)
                y, dx = (_tensor((8, c, 64, 64), dtype, cl).view(8, c, -1) for _ in range(2))
                stats = torch.empty((4, 8 * groups), dtype=torch.float32)
                weight, bias = torch.ones(c), torch.zeros(c)
                group_norm.statistics(x, stats, None, None, groups=groups, eps=1e-5, use_running=False)
                group_norm.apply(x, y, stats, weight, bias, groups=groups, kind="silu", parameter=0.0)
                group_norm.backward(y, x, dx, stats, weight, bias, torch.empty((2, c)), groups=groups,
                                    batch_statistics=True, kind="silu", parameter=0.0)
            out.append((f"groupnorm32+silu N8 C320 64x64 {layout} {dtype_name}", group_norm_silu))

            def layer_norm2d(layout=layout, dtype_name=dtype_name):
                import torch
                layer_norm = kernel_module("layer_norm")
                dtype, cl = dtypes[dtype_name], layouts[layout]
                c = 96
                # ConvNeXt-T's first stage: the [N, H*W, C] view of its NCHW or channels_last activation.
                x, y, dx = (_tensor((64, c, 56, 56), dtype, cl).permute(0, 2, 3, 1).reshape(64, 56 * 56, c)
                            for _ in range(3))
                stats = torch.empty((3, 64 * 56 * 56), dtype=torch.float32)
                weight, bias = torch.ones(c), torch.zeros(c)
                layer_norm.forward(x, y, stats, weight, bias, eps=1e-6, kind=None, parameter=0.0)
                layer_norm.backward(y, x, dx, stats, weight, bias, torch.empty((2, c)), kind=None, parameter=0.0)
            out.append((f"layernorm2d ConvNeXt N64 C96 56x56 {layout} {dtype_name}", layer_norm2d))

    for dtype_name in options.dtypes:
        def elementwise(dtype_name=dtype_name):
            import torch
            activation, dropout = kernel_module("activation"), kernel_module("dropout")
            dtype = dtypes[dtype_name]
            x, y, dy = (_tensor((64, 384, 56, 56), dtype, True) for _ in range(3))
            activation.forward(x, y, kind="gelu", parameter=0.0)
            activation.backward(dy, x, y, kind="gelu", parameter=0.0)
            seed = torch.zeros(1, dtype=torch.int64)
            dropout.dropout(x, y, seed, p=0.2)
            dropout.channel_dropout(x.view(64, 384, -1), y.view(64, 384, -1), seed, p=0.2)
        out.append((f"gelu + dropout + dropout2d N64 C384 56x56 channels_last {dtype_name}", elementwise))

    for dtype_name in options.dtypes:
        for rows, classes in ((256, 1000), (1024, 10)):
            def ce(dtype_name=dtype_name, rows=rows, classes=classes):
                import torch
                cross_entropy = kernel_module("cross_entropy")
                dtype = dtypes[dtype_name]
                x = torch.empty((rows, classes), dtype=dtype).unsqueeze(-1)
                target = torch.zeros((rows,), dtype=torch.int64).unsqueeze(-1)
                row_loss = torch.empty(rows, dtype=torch.float32)
                row_weight = torch.empty(rows, dtype=torch.float32)
                grad = torch.empty_like(x)
                cross_entropy.forward(x, target, None, row_loss, row_weight, grad, cross_entropy.invalid_buffer("cpu"),
                                      ignore_index=-100, smoothing=0.0, probabilities=False)
                loss, denominator = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
                cross_entropy.reduce_rows(row_loss, row_weight, loss, denominator, mean=True)
                cross_entropy.scale_grad(grad, torch.ones((), dtype=dtype), denominator, mean=True)
            out.append((f"cross_entropy N{rows} C{classes} {dtype_name}", ce))

    adam_cases = [("fp32", "AdamW", False), ("fp32", "Adam+GradScaler", True), ("bf16", "AdamW", False)]
    for dtype_name, label, scaler in adam_cases:
        if dtype_name not in options.dtypes:
            continue

        def adam(dtype_name=dtype_name, label=label, scaler=scaler):
            import torch
            adam_kernels, multi_tensor = kernel_module("adam"), kernel_module("multi_tensor")
            dtype = dtypes[dtype_name]
            lists = [[torch.empty(shape, dtype=dtype) for shape in RESNET_ISH_SHAPES] for _ in range(4)]
            steps = [torch.zeros((), dtype=torch.float32) for _ in RESNET_ISH_SHAPES]
            tensor_lists = (*lists, lists[3], steps)
            numels = [t.numel() for t in lists[0]]
            table = multi_tensor.build_table(tensor_lists, numels, multi_tensor.CHUNK_SIZE, torch.device("cpu"))
            scale = torch.ones((), dtype=torch.float32) if scaler else None
            found_inf = torch.zeros((), dtype=torch.float32) if scaler else None
            tl_dtype = {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16}[dtype_name]
            adam_kernels.adam_step(table, element_type=tl_dtype, state_type=tl_dtype, lr=1e-3, beta1=0.9,
                                   beta2=0.999, eps=1e-8, weight_decay=0.0 if scaler else 1e-2,
                                   decoupled_weight_decay=not scaler, amsgrad=False, maximize=False,
                                   grad_scale=scale, found_inf=found_inf)
        out.append((f"adam {label} ResNet-ish params {dtype_name}", adam))

    # The other optimizers and gradient clipping over the same ResNet-ish parameter set.
    optimizer_steps = {
        "SGD momentum+Nesterov": ("sgd", 4, dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4,
                                                 nesterov=True, maximize=False)),
        "RMSprop centered+momentum": ("rmsprop", 6, dict(lr=0.01, alpha=0.9, eps=1e-3, weight_decay=1e-5,
                                                         momentum=0.9, centered=True, maximize=False)),
        "Adagrad": ("adagrad", 4, dict(lr=0.01, lr_decay=1e-4, eps=1e-10, weight_decay=1e-4, maximize=False)),
        "Adadelta": ("adadelta", 5, dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-4, maximize=False)),
    }
    for dtype_name in options.dtypes:
        if dtype_name == "fp16":
            continue
        for label, (name, rows, hyperparameters) in optimizer_steps.items():
            def step(dtype_name=dtype_name, name=name, rows=rows, hyperparameters=hyperparameters):
                import torch
                kernels, multi_tensor = kernel_module(name), kernel_module("multi_tensor")
                dtype = dtypes[dtype_name]
                tensors = [[torch.empty(shape, dtype=dtype) for shape in RESNET_ISH_SHAPES] for _ in range(rows - 1)]
                counters = [torch.zeros((), dtype=torch.float32) for _ in RESNET_ISH_SHAPES]
                table = multi_tensor.build_table((*tensors, counters), [t.numel() for t in tensors[0]],
                                                 multi_tensor.CHUNK_SIZE, torch.device("cpu"))
                tl_dtype = {"fp32": tl.float32, "bf16": tl.bfloat16}[dtype_name]
                launch = getattr(kernels, f"{name}_step")
                types = dict(element_type=tl_dtype) if name == "sgd" else dict(element_type=tl_dtype,
                                                                                 state_type=tl_dtype)
                arguments = (table, None) if name == "sgd" else (table,)
                launch(*arguments, **types, **hyperparameters)
            out.append((f"{name} {label} ResNet-ish params {dtype_name}", step))

        def clip(dtype_name=dtype_name):
            import torch
            clip_grad, multi_tensor = kernel_module("clip_grad"), kernel_module("multi_tensor")
            dtype = dtypes[dtype_name]
            grads = [torch.empty(shape, dtype=dtype) for shape in RESNET_ISH_SHAPES]
            table = multi_tensor.build_table((grads,), [g.numel() for g in grads], multi_tensor.CHUNK_SIZE,
                                             torch.device("cpu"))
            tl_dtype = {"fp32": tl.float32, "bf16": tl.bfloat16}[dtype_name]
            partials = torch.empty((clip_grad.PARTIAL_ROWS, table.num_chunks), dtype=torch.float32)
            total, coefficient = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
            clip_grad.partial_norms(table, partials, 0, 0, element_type=tl_dtype, norm_type=2.0)
            clip_grad.total_norm(partials, total, coefficient, total_type=tl_dtype, norm_type=2.0, max_norm=1.0)
            clip_grad.scale(table, coefficient, element_type=tl_dtype)
            clip_grad.clamp(table, 1.0, element_type=tl_dtype)
        out.append((f"clip_grad norm 2 + scale + clamp ResNet-ish grads {dtype_name}", clip))
    return out


# Parameter shapes of the optimizer scenarios: a ResNet's stem, BN vectors, 1x1 and 3x3 convs, fc.
RESNET_ISH_SHAPES = [(64, 3, 7, 7), (64,), (256, 64, 1, 1), (512, 512, 3, 3), (1000, 2048), (1000,)]


# ------------------------------------------------------------------------------------------------
# Specialisation and compile jobs

def _jsonable(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


@dataclasses.dataclass
class Job:
    key: str
    kernel: str
    scenario: str
    config: str
    fn: object
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    num_warps: int
    programs: int
    dtype: str
    autotuned: bool


def _dtype_label(signature, constexprs_named):
    """The element type of the first pointer argument, plus the dot precision when there is one."""
    dtype = next((v[1:] for v in signature.values() if isinstance(v, str) and v.startswith("*")), "?")
    for name in ("ELEMENT_TYPE",):
        if name in constexprs_named:
            dtype = str(constexprs_named[name]).replace("float32", "fp32").replace("bfloat16", "bf16").replace(
                "float16", "fp16")
    precision = constexprs_named.get("DOT_PRECISION")
    if precision is not None and dtype == "fp32":
        dtype += f"/{precision}"
    return dtype


def _config_label(fn, config, named, num_warps, num_stages):
    blocks = {k: v for k, v in named.items() if re.fullmatch(r"(BLOCK|ROWS|CHUNK)\w*|GROUP_M|\w*BLOCK", k)}
    if all(k in blocks for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")):
        text = f"{blocks['BLOCK_M']}x{blocks['BLOCK_N']}x{blocks['BLOCK_K']}"
    else:
        text = " ".join(f"{k}={v}" for k, v in blocks.items() if k != "GROUP_M")
    return f"{text} w{num_warps} s{num_stages}"


def make_jobs(launches, arch):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    jobs, seen = [], {}
    for launch in launches:
        fn = launch.fn
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        for config in launch.configs:
            kwargs = dict(launch.kwargs, **config)
            kwargs.setdefault("debug", False)
            try:
                from triton import knobs
                kwargs.setdefault("instrumentation_mode", knobs.compilation.instrumentation_mode)
            except Exception:
                pass
            bound, specialization, rest = binder(*launch.args, **kwargs)
            options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, rest)
            names = [p.name for p in fn.params]
            named = {names[path[0]]: value for path, value in constexprs.items() if len(path) == 1}
            num_warps, num_stages = options.num_warps, options.num_stages
            grid = launch.grid
            if callable(grid):
                grid = grid(dict(bound))
            programs = math.prod(int(g) for g in grid)
            key = json.dumps([fn.__name__, signature, sorted((str(k), _jsonable(v)) for k, v in constexprs.items()),
                              sorted((str(k), str(v)) for k, v in attrs.items()),
                              sorted((k, _jsonable(v)) for k, v in options.__dict__.items())])
            label = _config_label(fn, config, named, num_warps, num_stages)
            if key in seen:
                seen[key].scenario += f"; {launch.scenario}"
                continue
            job = Job(key, fn.__name__, launch.scenario, label, fn, signature, constexprs, attrs, options.__dict__,
                      num_warps, programs, _dtype_label(signature, named), launch.autotuned)
            seen[key] = job
            jobs.append(job)
    return jobs, target


# ------------------------------------------------------------------------------------------------
# Analysis of PTX / TTGIR / SASS / ptxas output

def _width(opcode):
    vec = re.search(r"\.v(\d)", opcode)
    bits = re.findall(r"\.[bsuf](\d+)\b", opcode)
    n = int(vec.group(1)) if vec else 1
    return n * (int(bits[-1]) if bits else 32)


def _loops(lines, label_re, branch_re):
    """(start, end) index pairs of backward branches: the loops of a linear instruction listing."""
    labels, loops = {}, []
    for i, line in enumerate(lines):
        m = label_re(line)
        if m is not None:
            labels[m] = i
    for i, line in enumerate(lines):
        target = branch_re(line)
        if target is not None and target in labels and labels[target] <= i:
            loops.append((labels[target], i))
    return loops


def analyse_ptx(ptx):
    body = [re.sub(r"//.*", "", line).strip() for line in ptx.splitlines()]
    body = [line for line in body if line]
    loops = _loops(body, lambda l: l[:-1] if re.fullmatch(r"\$L__\w+:", l) else None,
                   lambda l: (re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+)\s*;", l) or [None, None])[1])
    in_loop = [False] * len(body)
    for start, end in loops:
        for i in range(start, end + 1):
            in_loop[i] = True
    res = dict(wgmma=0, wgmma_shapes=set(), mma_sync=0, mma_shapes=set(), fma_f32=0, ldmatrix=0, tma=0,
               cp_async={}, ld_global={}, st_global={}, atomics=0, loops=len(loops),
               loop_i64_muldiv=0, loop_i64_divrem=0, i64_divrem=0, loop_ld_global={}, loop_cp_async=0,
               i64_div_fast_path=0)
    for i, line in enumerate(body):
        ins = re.sub(r"^@!?%\w+\s+", "", line)
        op = ins.split()[0] if ins.split() else ""
        if op.startswith("wgmma.mma_async"):
            res["wgmma"] += 1
            res["wgmma_shapes"].add(re.sub(r"^wgmma\.mma_async\.sync\.aligned\.", "", op))
        elif op.startswith("mma.sync"):
            res["mma_sync"] += 1
            res["mma_shapes"].add(re.sub(r"^mma\.sync\.aligned\.", "", op))
        elif op.startswith("fma.rn.f32") or op.startswith("fma.rn.ftz.f32"):
            res["fma_f32"] += 1
        elif op.startswith("ldmatrix"):
            res["ldmatrix"] += 1
        elif op.startswith("cp.async.bulk.tensor"):
            res["tma"] += 1
        elif op.startswith("cp.async.") and ".shared.global" in op:
            m = re.search(r"\]\s*,\s*(0x[0-9a-fA-F]+|\d+)\s*[,;]", ins)
            size = int(m.group(1), 0) if m else 0
            res["cp_async"][size * 8] = res["cp_async"].get(size * 8, 0) + 1
            if in_loop[i]:
                res["loop_cp_async"] += 1
        elif re.match(r"ld\.global", op):
            w = _width(op)
            res["ld_global"][w] = res["ld_global"].get(w, 0) + 1
            if in_loop[i]:
                res["loop_ld_global"][w] = res["loop_ld_global"].get(w, 0) + 1
        elif re.match(r"st\.global", op):
            w = _width(op)
            res["st_global"][w] = res["st_global"].get(w, 0) + 1
        elif re.match(r"(atom|red)\.global", op):
            res["atomics"] += 1
        if re.match(r"(div|rem)\.[su]64", op):
            res["i64_divrem"] += 1
            if in_loop[i]:
                res["loop_i64_divrem"] += 1
        if re.match(r"and\.b64", op) and re.search(r",\s*-4294967296\s*;", ins):
            res["i64_div_fast_path"] += 1  # LLVM's check that both operands fit in 32 bits
        if re.match(r"(mul|mad)\.lo\.[su]64", op) and in_loop[i]:
            res["loop_i64_muldiv"] += 1
    res["wgmma_shapes"] = sorted(res["wgmma_shapes"])
    res["mma_shapes"] = sorted(res["mma_shapes"])
    return res


def analyse_ttgir(ttgir):
    res = dict(warp_group_dot="ttng.warp_group_dot" in ttgir, mma_versions=sorted(set(
        int(v) for v in re.findall(r"nvidia_mma<\{versionMajor = (\d+)", ttgir))), async_copies=ttgir.count(
        "ttg.async_copy_global_to_local"), tma_loads=len(re.findall(r"async_tma_copy_global_to_local|tt\.descriptor_load",
                                                                   ttgir)),
        dot=bool(re.search(r"\btt\.dot\b|ttng\.warp_group_dot", ttgir)), buffers=[])
    for m in re.finditer(r"ttg\.local_alloc[^\n]*->\s*!ttg\.memdesc<([0-9x]+)x([a-z0-9]+),", ttgir):
        dims = [int(d) for d in m.group(1).split("x")]
        if len(dims) >= 3:
            res["buffers"].append(dims[0])
    return res


PTXAS_RE = dict(
    regs=re.compile(r"Used (\d+) registers"),
    stack=re.compile(r"(\d+) bytes stack frame"),
    spill_st=re.compile(r"(\d+) bytes spill stores"),
    spill_ld=re.compile(r"(\d+) bytes spill loads"),
    smem=re.compile(r"(\d+) bytes smem"),
)


def ptxas_tool(arch):
    from triton.backends.nvidia import compiler as nv
    if hasattr(nv, "get_ptxas"):
        return nv.get_ptxas(arch).path
    from triton import knobs
    return knobs.nvidia.ptxas.path


def run_ptxas(ptx, arch, workdir):
    from triton.backends.nvidia import compiler as nv
    import inspect
    ptxas = ptxas_tool(arch)
    src = os.path.join(workdir, "k.ptx")
    with open(src, "w") as f:
        f.write(ptx)
    flags = ["-lineinfo", "-v"]
    try:
        if "regAllocOptLevel" in inspect.getsource(nv.CUDABackend.make_cubin):
            flags.append("--regAllocOptLevel=2")
    except (OSError, TypeError):
        pass
    arch_name = nv.sm_arch_from_capability(arch)
    cmd = [ptxas, *flags, f"--gpu-name={arch_name}", src, "-o", os.path.join(workdir, "k.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stderr + proc.stdout
    res = {key: int(m.group(1)) if (m := rx.search(log)) else None for key, rx in PTXAS_RE.items()}
    res["ptxas"] = os.path.basename(ptxas) + " " + (re.search(r"release ([\d.]+)", subprocess.run(
        [ptxas, "--version"], capture_output=True, text=True).stdout) or [None, "?"])[1]
    res["ptxas_cmd_flags"] = " ".join(flags + [f"--gpu-name={arch_name}"])
    if proc.returncode != 0:
        res["ptxas_error"] = log[-2000:]
    return res


SASS_LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def analyse_sass(cubin, workdir):
    from triton import knobs
    try:
        tool = knobs.nvidia.cuobjdump.path
    except Exception:
        return {"sass_error": "no cuobjdump"}
    path = os.path.join(workdir, "k.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    proc = subprocess.run([tool, "-sass", path], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"sass_error": proc.stderr[-500:]}
    ins = []
    for line in proc.stdout.splitlines():
        m = SASS_LINE.match(line)
        if m:
            text = re.sub(r"^@!?U?P[T0-9]+\s+", "", m.group(2))
            ins.append((int(m.group(1), 16), text.split()[0] if text.split() else "", text))
    addr_index = {a: i for i, (a, _, _) in enumerate(ins)}
    loops = []
    for i, (addr, op, text) in enumerate(ins):
        if op.startswith("BRA"):
            t = re.search(r"BRA\s+(?:`\()?(0x[0-9a-f]+)", text)
            if t and int(t.group(1), 16) < addr and int(t.group(1), 16) in addr_index:
                loops.append((addr_index[int(t.group(1), 16)], i))

    def summarise(lo, hi):
        ops = [ins[k][1] for k in range(lo, hi + 1)]
        mma = [o for o in ops if o.startswith(("HGMMA", "HMMA"))]
        return dict(instructions=len(ops), hgmma=sum(o.startswith("HGMMA") for o in ops),
                    hmma=sum(o.startswith("HMMA") for o in ops), ffma=sum(o.startswith("FFMA") for o in ops),
                    mma_shapes=sorted(set(mma)),
                    ldg=sum(o.startswith("LDG.") or o == "LDG" for o in ops),
                    ldgsts=sum(o.startswith("LDGSTS") for o in ops),
                    stg=sum(o.startswith("STG") for o in ops),
                    calls=sum(o.startswith("CALL") for o in ops),
                    global_bytes=sum(_sass_bytes(o) for o in ops),
                    local=sum(o.startswith(("LDL", "STL")) for o in ops))

    whole = summarise(0, len(ins) - 1) if ins else {}
    main = None
    if loops:
        def weight(loop):
            s = summarise(*loop)
            return (s["hgmma"] + s["hmma"] + s["ffma"], s["ldg"] + s["ldgsts"] + s["stg"], s["instructions"])
        lo, hi = max(loops, key=weight)
        main = summarise(lo, hi)
        # Subroutines called from the loop (64-bit division, say): their length up to RET.
        called = []
        for k in range(lo, hi + 1):
            t = re.search(r"CALL\.\w+(?:\.\w+)*\s+(0x[0-9a-f]+)", ins[k][2])
            if t and int(t.group(1), 16) in addr_index:
                start = addr_index[int(t.group(1), 16)]
                end = next((m for m in range(start, len(ins)) if ins[m][1].startswith("RET")), start)
                called.append(end - start + 1)
        main["called_instructions"] = called
    return dict(sass_total=whole, sass_loop=main, sass_loops=len(loops))


def _sass_bytes(op):
    if not op.startswith(("LDG", "STG", "LDGSTS")):
        return 0
    m = re.search(r"\.(128|64|U16|S16|U8|S8)\b", op)
    if not m:
        return 4
    return {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}[m.group(1)]


def occupancy(regs, smem, warps, spec=H100):
    if regs is None or smem is None or not warps:
        return None
    regs_per_warp = math.ceil(max(regs, 1) * 32 / spec["reg_unit"]) * spec["reg_unit"]
    smem_per_cta = math.ceil((smem + spec["smem_reserved_per_cta"]) / spec["smem_unit"]) * spec["smem_unit"]
    limits = dict(warps=spec["max_warps"] // warps, regs=spec["regs_per_sm"] // (regs_per_warp * warps),
                  smem=spec["smem_per_sm"] // smem_per_cta, ctas=spec["max_ctas"])
    if smem > spec["max_smem_per_cta"] or regs_per_warp * warps > spec["max_regs_per_cta"]:
        return dict(ctas=0, warps=0, fraction=0.0, limiter="does not fit")
    ctas = min(limits.values())
    limiter = "/".join(k for k, v in limits.items() if v == ctas)
    return dict(ctas=ctas, warps=ctas * warps, fraction=ctas * warps / spec["max_warps"], limiter=limiter)


def compile_and_analyse(job, target, workdir):
    import triton
    from triton.compiler import ASTSource
    t0 = time.time()
    compiled = triton.compile(ASTSource(job.fn, job.signature, job.constexprs, job.attrs), target=target,
                              options=dict(job.options))
    res = dict(compile_s=round(time.time() - t0, 1))
    asm = compiled.asm
    md = compiled.metadata
    res["shared"] = getattr(md, "shared", None)
    res["num_warps"] = getattr(md, "num_warps", job.num_warps)
    res["num_stages"] = getattr(md, "num_stages", None)
    res.update(analyse_ptx(asm["ptx"]))
    res.update(analyse_ttgir(asm["ttgir"]))
    res.update(run_ptxas(asm["ptx"], target.arch, workdir))
    if "cubin" in asm:
        res.update(analyse_sass(asm["cubin"], workdir))
    res["occupancy"] = occupancy(res.get("regs"), res.get("shared"), res["num_warps"])
    return res


def run_jobs(jobs, target, parallel, timeout):
    """Each compile in a forked child: a crash (MLIR abort, ptxas SIGSEGV) becomes a reported failure."""
    results = [None] * len(jobs)
    pending = list(range(len(jobs)))
    running = {}
    root = tempfile.mkdtemp(prefix="static_gpu_report_")
    while pending or running:
        while pending and len(running) < parallel:
            index = pending.pop(0)
            workdir = os.path.join(root, str(index))
            os.makedirs(workdir)
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                try:
                    log = os.open(os.path.join(workdir, "log.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    sys.stdout = os.fdopen(1, "w", buffering=1)
                    sys.stderr = os.fdopen(2, "w", buffering=1)
                    res = compile_and_analyse(jobs[index], target, workdir)
                    with open(os.path.join(workdir, "result.json"), "w") as f:
                        json.dump(res, f, default=str)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            running[pid] = (index, workdir, time.time())
        done_pid, status = os.waitpid(-1, os.WNOHANG)
        if done_pid == 0:
            time.sleep(0.05)
            for pid, (index, workdir, started) in list(running.items()):
                if time.time() - started > timeout:
                    os.kill(pid, 9)
            continue
        index, workdir, started = running.pop(done_pid)
        result_path = os.path.join(workdir, "result.json")
        if os.path.exists(result_path):
            with open(result_path) as f:
                results[index] = json.load(f)
        else:
            with open(os.path.join(workdir, "log.txt"), errors="replace") as f:
                log = f.read()
            results[index] = dict(error=_error_summary(log, status), error_log=log[-6000:])
        print(f"[{sum(r is not None for r in results)}/{len(jobs)}] {jobs[index].kernel} {jobs[index].config} "
              f"{jobs[index].dtype}: {'FAILED' if 'error' in results[index] else 'ok'} "
              f"({time.time() - started:.1f}s)", file=sys.stderr)
    return results


def _error_summary(log, status):
    lines = [l for l in log.strip().splitlines() if l.strip()]
    interesting = [l for l in lines if re.search(r"error|Error|assert|Assertion|fatal|Exception", l)]
    tail = interesting[-3:] if interesting else lines[-3:]
    signal_note = f" (killed by signal {os.WTERMSIG(status)})" if os.WIFSIGNALED(status) else ""
    return (" | ".join(l.strip() for l in tail) + signal_note)[:1500]


# ------------------------------------------------------------------------------------------------
# Report

def hot_load_widths(r):
    """Widths of the global loads in loops (the streamed data) when there are any, else of all loads."""
    loop = {int(w): n for w, n in (r.get("loop_ld_global") or {}).items()}
    if not loop and not r.get("loop_cp_async"):
        loop = {int(w): n for w, n in (r.get("ld_global") or {}).items()}
    for w, n in (r.get("cp_async") or {}).items():
        loop[int(w)] = loop.get(int(w), 0) + n
    return loop


def vectorized(r):
    widths = hot_load_widths(r)
    if not widths:
        return "-"
    top = max(widths)
    return "yes (128b)" if top >= 128 else ("partly (64b)" if top >= 64 else f"no ({top}b)")


def family(kernel):
    if kernel in ("_conv2d_forward_kernel", "_conv2d_input_grad_kernel", "_conv2d_weight_grad_kernel"):
        return "gemm"
    return "memory"


def _hist(h):
    if not h:
        return "-"
    return " ".join(f"{w}b×{n}" for w, n in sorted(((int(w), n) for w, n in h.items()), reverse=True))


def mma_kind(r):
    if r.get("wgmma"):
        return "wgmma " + ",".join(s.split(".")[0] for s in r["wgmma_shapes"])
    if r.get("mma_sync"):
        return "mma.sync " + ",".join(s.split(".")[0] for s in r["mma_shapes"])
    if r.get("dot"):
        return "FMA (no tensor cores)"
    return "-"


def issue_ratio(r, job):
    loop = r.get("sass_loop")
    if not loop:
        return None
    warps = r.get("num_warps") or job["num_warps"]
    if loop["hgmma"]:
        flops = 0
        for shape in loop["mma_shapes"]:
            m = re.match(r"HGMMA\.(\d+)x(\d+)x(\d+)", shape)
            if m:
                per = 2 * int(m.group(1)) * int(m.group(2)) * int(m.group(3))
                flops = per * loop["hgmma"] * (warps // 4)
                break
    elif loop["hmma"]:
        # SASS names mma.sync shapes m16n8k16 "HMMA.16816", m16n8k8 "HMMA.1688".
        dims = next((re.match(r"HMMA\.168(\d+)", s) for s in loop["mma_shapes"] if s.startswith("HMMA.168")), None)
        if not dims:
            return None
        flops = 2 * 16 * 8 * int(dims.group(1)) * loop["hmma"] * warps
    elif loop["ffma"]:
        flops = 2 * 32 * loop["ffma"] * warps
    else:
        return None
    if not flops:
        return None
    dtype = job["dtype"]
    if loop["ffma"] and not (loop["hgmma"] or loop["hmma"]):
        peak = PEAK_FLOP_PER_CLK["fp32"]
    elif dtype.startswith("fp32"):
        peak = PEAK_FLOP_PER_CLK["tf32"]
    else:
        peak = PEAK_FLOP_PER_CLK.get(dtype, 4096)
    mma_cycles = flops / peak
    issue_cycles = loop["instructions"] * math.ceil(warps / 4)
    return issue_cycles / mma_cycles


def flags_for(job, r):
    flags = []
    if "error" in r:
        return ["COMPILE FAILED"]
    if (r.get("spill_st") or 0) + (r.get("spill_ld") or 0):
        flags.append(f"spills {r['spill_st']}B/{r['spill_ld']}B")
    occ = r.get("occupancy")
    if occ and occ["ctas"] == 0:
        flags.append(f"does not fit on an SM (smem {r.get('shared', 0) / 1024:.0f} KB)")
    elif occ and occ["fraction"] < 0.125:
        flags.append(f"occupancy {occ['warps']} warps")
    if family(job["kernel"]) == "gemm":
        if not r.get("wgmma"):
            flags.append("no wgmma" + (" (mma.sync)" if r.get("mma_sync") else " (FMA)"))
        if not r.get("cp_async") and not r.get("tma"):
            flags.append("no async copy")
        ratio = issue_ratio(r, job)
        if ratio is not None and ratio > 1.0:
            flags.append(f"issue-bound x{ratio:.1f}")
    big_grid = job["programs"] >= H100["sms"]
    widths = set(hot_load_widths(r))
    if big_grid and widths and max(widths) < 64:
        flags.append("scalar global loads")
    stw = {int(w) for w in r.get("st_global", {})}
    if big_grid and stw and max(stw) < 64:
        flags.append("scalar global stores")
    if r.get("loop_i64_muldiv") and family(job["kernel"]) == "gemm":
        flags.append(f"i64 mul in loop ({r['loop_i64_muldiv']})")
    if r.get("loop_i64_divrem"):
        fast = " with 32-bit fast path" if r.get("i64_div_fast_path") else ""
        flags.append(f"i64 div/rem in loop ({r['loop_i64_divrem']}{fast})")
    loop = r.get("sass_loop") or {}
    if loop.get("calls"):
        sizes = loop.get("called_instructions") or []
        size = f" to {'/'.join(str(n) for n in sorted(set(sizes)))}-instr subroutine" if sizes else ""
        flags.append(f"CALL in loop ({loop['calls']}x{size})")
    if job["programs"] < H100["sms"]:
        flags.append(f"{job['programs']} programs < {H100['sms']} SMs")
    return flags


def render(runs, out):
    """``runs``: list of dicts {triton, torch, arch, jobs: [...], results: [...]}."""
    print("# Static GPU report: fastcnn Triton kernels\n", file=out)
    for run in runs:
        print(f"- Triton {run['triton']} / torch {run['torch']} ({run['python']}), target "
              f"sm_{run['arch']}a, ptxas: {run.get('ptxas', '?')}; {len(run['jobs'])} compiles, "
              f"{sum('error' in r for r in run['results'])} failed, project {run['project']}"
              f" @ {run.get('commit', '?')}", file=out)
    print("\nOccupancy: H100 SXM limits (65536 regs, 228 KB smem incl. 1 KB/CTA reserved, 64 warps, "
          "32 CTAs per SM). issue:MMA = main-loop SASS instructions x ceil(warps/4) / tensor-core cycles at "
          "dense peak (>1: the loop cannot feed the tensor cores). instr/16B = SASS instructions per 16 bytes "
          "of global traffic in the main loop (or whole kernel when loop-free). 'programs' = grid size for the "
          "scenario shape.\n", file=out)
    for run in runs:
        print(f"\n## Triton {run['triton']}\n", file=out)
        rows = list(zip(run["jobs"], run["results"]))
        summarise_run(rows, out)
        gemm = [(j, r) for j, r in rows if family(j["kernel"]) == "gemm"]
        other = [(j, r) for j, r in rows if family(j["kernel"]) != "gemm"]
        if gemm:
            print("### Implicit-GEMM conv kernels (every autotune config)\n", file=out)
            print("| kernel | scenario | dtype | config | tensor-core instr | operand staging | regs | spills st/ld B "
                  "| smem KB | CTAs/SM (limit) | occupancy | global ld/st widths | main loop SASS instr | issue:MMA "
                  "| programs | flags |", file=out)
            print("|" + "---|" * 16, file=out)
            for j, r in gemm:
                print(_row(j, r, gemm=True), file=out)
        if other:
            print("\n### Memory-bound / direct kernels\n", file=out)
            print("| kernel | scenario | dtype | config | tensor-core instr | regs | spills st/ld B | smem KB "
                  "| CTAs/SM (limit) | occupancy | global ld widths | global st widths | vectorized ld | loop: i64 "
                  "mul / div | instr/16B (issue ceiling, % HBM) | programs | flags |", file=out)
            print("|" + "---|" * 17, file=out)
            for j, r in other:
                print(_row(j, r, gemm=False), file=out)
        failures = [(j, r) for j, r in rows if "error" in r]
        if failures:
            print(f"\n### Compile failures under Triton {run['triton']}\n", file=out)
            for j, r in failures:
                print(f"- `{j['kernel']}` {j['dtype']} {j['config']} ({j['scenario']}): `{r['error']}`", file=out)
    if len(runs) > 1:
        print("\n## Cross-version comparison (same kernel + specialisation)\n", file=out)
        print("| kernel | dtype | config | scenario | " + " | ".join(
            f"{run['triton']}: instr / regs / spills / smem KB / occ" for run in runs) + " |", file=out)
        print("|" + "---|" * (4 + len(runs)), file=out)
        index = [{_compare_key(j): r for j, r in zip(run["jobs"], run["results"])} for run in runs]
        keys = []
        for run in runs:
            for j in run["jobs"]:
                k = _compare_key(j)
                if k not in keys:
                    keys.append(k)
        for k in keys:
            cells = []
            for idx in index:
                r = idx.get(k)
                if r is None:
                    cells.append("not compiled")
                elif "error" in r:
                    cells.append("**FAILED**")
                else:
                    occ = r.get("occupancy") or {}
                    cells.append(f"{mma_kind(r)} / {r.get('regs')} / {r.get('spill_st')}/{r.get('spill_ld')} / "
                                 f"{(r.get('shared') or 0) / 1024:.0f} / {occ.get('fraction', 0):.0%}")
            print(f"| {k[0].strip('_')} | {k[1]} | {k[2]} | {k[3][:60]} | " + " | ".join(cells) + " |", file=out)


def _range(values, fmt="{}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def summarise_run(rows, out):
    """One line per (kernel, scenario): ranges over the configs the GPU path would try."""
    groups = {}
    for j, r in rows:
        groups.setdefault((j["kernel"], j["scenario"].split(";")[0]), []).append((j, r))
    print("### Summary per kernel and scenario (ranges over the configs tried)\n", file=out)
    print("| kernel | scenario | dtype | configs | tensor-core instr | staging | regs | max spills st/ld B | smem KB "
          "| occupancy | widest hot-loop ld / any st | issue:MMA or instr/16B | flags (configs) |", file=out)
    print("|" + "---|" * 13, file=out)
    for (kernel, scenario), items in groups.items():
        ok = [(j, r) for j, r in items if "error" not in r]
        failed = len(items) - len(ok)
        j0 = items[0][0]
        name = kernel.strip("_").replace("_kernel", "")
        if not ok:
            print(f"| {name} | {scenario} | {j0['dtype']} | {len(items)} | **all failed** |" + " |" * 8, file=out)
            continue
        kinds = sorted({mma_kind(r) for _, r in ok})
        staging = sorted({("cp.async " + "/".join(f"{w}b" for w in sorted({int(w) for w in r["cp_async"]}, reverse=True))
                           + (f" x{max(r['buffers'])} buf" if r.get("buffers") else "")) if r.get("cp_async") else
                          ("TMA" if r.get("tma") else "regs") for _, r in ok})
        regs = _range([r.get("regs") for _, r in ok])
        spill = max(((r.get("spill_st") or 0, r.get("spill_ld") or 0) for _, r in ok), key=sum)
        smem = _range([(r.get("shared") or 0) / 1024 for _, r in ok], "{:.0f}")
        occ = _range([(r.get("occupancy") or {}).get("fraction") for _, r in ok], "{:.0%}")
        ld = max([w for _, r in ok for w in hot_load_widths(r)] or [0])
        st = max([int(w) for _, r in ok for w in r.get("st_global", {})] or [0])
        if family(kernel) == "gemm":
            metric = _range([issue_ratio(r, j) for j, r in ok], "{:.2f}")
        else:
            vals = []
            for _, r in ok:
                region = r.get("sass_loop") or r.get("sass_total") or {}
                if region.get("global_bytes"):
                    vals.append(region["instructions"] / (region["global_bytes"] / 16))
            metric = _range(vals, "{:.0f}") + " instr/16B" if vals else "-"
        counts = {}
        for j, r in ok:
            for flag in flags_for(j, r):
                flag = re.sub(r"\d+(\.\d+)?", "N", flag) if flag.startswith(("issue-bound", "spills", "occupancy")) else flag
                counts[flag] = counts.get(flag, 0) + 1
        flags = "; ".join(f"{k} ({v}/{len(ok)})" for k, v in counts.items()) or "-"
        if failed:
            flags = f"**{failed} FAILED**; " + flags
        print(f"| {name} | {scenario} | {j0['dtype']} | {len(items)} | {', '.join(kinds)} | {', '.join(staging)} "
              f"| {regs} | {spill[0]}/{spill[1]} | {smem} | {occ} | {ld}b / {st}b | {metric} | {flags} |", file=out)
    print("", file=out)


def _brief(items):
    """One cell of the before/after table for a (kernel, scenario, dtype) group of compiles."""
    ok = [(j, r) for j, r in items if "error" not in r]
    if not ok:
        return "all failed"
    spill = max((r.get("spill_st") or 0) + (r.get("spill_ld") or 0) for _, r in ok)
    spilling = sum(1 for _, r in ok if (r.get("spill_st") or 0) + (r.get("spill_ld") or 0))
    no_fit = sum(1 for _, r in ok if (r.get("occupancy") or {}).get("ctas") == 0)
    ld = max([w for _, r in ok for w in hot_load_widths(r)] or [0])
    st = max([int(w) for _, r in ok for w in r.get("st_global", {})] or [0])
    async_copy = "cp.async" if all(r.get("cp_async") or r.get("tma") for _, r in ok) else (
        "some cp.async" if any(r.get("cp_async") for _, r in ok) else "no cp.async")
    programs = _range([j["programs"] for j, _ in ok])
    if family(ok[0][0]["kernel"]) == "gemm":
        metric = "issue:MMA " + _range([issue_ratio(r, j) for j, r in ok], "{:.2f}")
        extra = f"; {async_copy}"
    else:
        values = []
        for _, r in ok:
            region = r.get("sass_loop") or r.get("sass_total") or {}
            if region.get("global_bytes"):
                values.append(region["instructions"] / (region["global_bytes"] / 16))
        metric = _range(values, "{:.0f}") + " instr/16B"
        extra = ""
    return (f"{len(ok)} cfg; regs {_range([r.get('regs') for _, r in ok])}; spills {spilling} cfg (max {spill} B); "
            f"no fit {no_fit}; ld/st {ld}b/{st}b{extra}; {programs} programs; {metric}")


def compare(before, after, out):
    """A before/after table over the (kernel, scenario, dtype) groups of two runs."""
    def groups(run):
        found = {}
        for j, r in zip(run["jobs"], run["results"]):
            found.setdefault((j["kernel"].strip("_").replace("_kernel", ""), j["scenario"].split(";")[0], j["dtype"]),
                             []).append((j, r))
        return found
    old, new = groups(before), groups(after)
    print(f"## Before ({before.get('commit')}) and after ({after.get('commit')}), Triton {after['triton']}\n",
          file=out)
    print("| kernel | scenario | dtype | before | after |", file=out)
    print("|---|---|---|---|---|", file=out)
    for key in list(old) + [k for k in new if k not in old]:
        print(f"| {key[0]} | {key[1]} | {key[2]} | {_brief(old[key]) if key in old else 'not compiled'} | "
              f"{_brief(new[key]) if key in new else 'not compiled'} |", file=out)


def _compare_key(job):
    return (job["kernel"], job["dtype"], job["config"], job["scenario"].split(";")[0])


def _row(j, r, gemm):
    name = j["kernel"].strip("_").replace("_kernel", "")
    scen = j["scenario"].split(";")[0]
    more = j["scenario"].count(";")
    if more:
        scen += f" (+{more})"
    if "error" in r:
        cols = 16 if gemm else 17
        return f"| {name} | {scen} | {j['dtype']} | {j['config']} | **COMPILE FAILED** |" + " |" * (cols - 5) + \
            f" {r['error'][:200].replace('|', '/')} |"
    occ = r.get("occupancy") or {}
    occ_ctas = f"{occ.get('ctas')} ({occ.get('limiter')})" if occ else "?"
    occ_frac = f"{occ.get('fraction', 0):.0%}" if occ else "?"
    spills = f"{r.get('spill_st')}/{r.get('spill_ld')}"
    smem = f"{(r.get('shared') or 0) / 1024:.1f}"
    flags = "; ".join(flags_for(j, r)) or "-"
    loop = r.get("sass_loop") or {}
    if gemm:
        staging = []
        if r.get("cp_async"):
            staging.append("cp.async " + _hist(r["cp_async"]))
        if r.get("tma"):
            staging.append(f"TMA×{r['tma']}")
        if r.get("buffers"):
            staging.append("smem buffers " + "/".join(str(b) for b in r["buffers"]))
        if r.get("ldmatrix"):
            staging.append(f"ldmatrix×{r['ldmatrix']}")
        ratio = issue_ratio(r, j)
        return (f"| {name} | {scen} | {j['dtype']} | {j['config']} | {mma_kind(r)} | {'; '.join(staging) or 'none'} "
                f"| {r.get('regs')} | {spills} | {smem} | {occ_ctas} | {occ_frac} | ld {_hist(r.get('ld_global'))}; "
                f"st {_hist(r.get('st_global'))} | {loop.get('instructions', '-')} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} | {j['programs']} | {flags} |")
    vec = vectorized(r)
    region = loop if loop else (r.get("sass_total") or {})
    per16 = "-"
    if region.get("global_bytes"):
        x = region["instructions"] / (region["global_bytes"] / 16)
        # 4 schedulers x 1 warp-instruction/clk; a warp moves 32 x 16 B per x instructions.
        ceiling = min(1.0, (4 * 32 * 16 / x) / HBM_BYTES_PER_CLK_PER_SM)
        per16 = f"{x:.1f} ({ceiling:.0%})"
    return (f"| {name} | {scen} | {j['dtype']} | {j['config']} | {mma_kind(r)} | {r.get('regs')} | {spills} | {smem} "
            f"| {occ_ctas} | {occ_frac} | {_hist(r.get('ld_global'))} | {_hist(r.get('st_global'))} | {vec} | "
            f"{r.get('loop_i64_muldiv')} / {r.get('loop_i64_divrem')} | {per16} | {j['programs']} | {flags} |")


# ------------------------------------------------------------------------------------------------
# The check: what is never acceptable

# Memory-bound kernels whose grid must fill the GPU on the scenarios' (large) shapes.
GRID_MUST_FILL = ("_cross_entropy_kernel", "_partial_stats_kernel", "_backward_sums_kernel",
                  "_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel", "_partial_grad_sums_kernel",
                  "_apply_kernel", "_backward_apply_kernel", "_forward_kernel", "_backward_kernel", "_dropout_kernel",
                  "_channel_dropout_kernel", "_avg_pool_forward_kernel", "_avg_pool_backward_kernel",
                  "_global_avg_pool_kernel", "_add_kernel")


def violations(run):
    """What ``--check`` fails on, one line each: failed compiles and scenarios, configurations that
    cannot launch on an H100 or spill, and too-small grids of the kernels in GRID_MUST_FILL."""
    found = [f"Triton {run['triton']}: scenario not recorded: {error}" for error in run.get("scenario_errors", [])]
    for job, result in zip(run["jobs"], run["results"]):
        where = f"{job['kernel']} {job['dtype']} {job['config']} ({job['scenario'].split(';')[0]})"
        if "error" in result:
            found.append(f"compile failed: {where}: {result['error'][:300]}")
            continue
        occupancy_ = result.get("occupancy") or {}
        if occupancy_.get("ctas") == 0:
            found.append(f"cannot launch on an H100 ({(result.get('shared') or 0) / 1024:.0f} KB shared memory, "
                         f"{result.get('regs')} registers x {result.get('num_warps')} warps): {where}")
        spilled = (result.get("spill_st") or 0) + (result.get("spill_ld") or 0)
        if spilled:
            found.append(f"spills {result.get('spill_st')} B stored / {result.get('spill_ld')} B loaded: {where}")
        if job["kernel"] in GRID_MUST_FILL and job["programs"] < H100["sms"]:
            found.append(f"{job['programs']} programs on {H100['sms']} SMs: {where}")
    return found


def collect(options):
    """Run in the interpreter that has the Triton to audit; returns the JSON-able run record."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning
    if options.cache_dir:
        os.environ["TRITON_CACHE_DIR"] = options.cache_dir
    import torch
    import triton
    load_kernels(options.project)
    pin_sm_count(H100["sms"])
    launches, scenario_errors = [], []
    for name, run in scenarios(options):
        if options.only and not re.search(options.only, name):
            continue
        try:
            with recording(launches, name):
                run()
        except Exception as error:  # a launch helper whose signature changed, say
            scenario_errors.append(f"{name}: {type(error).__name__}: {error}")
    jobs, target = make_jobs(launches, options.arch)
    if options.kernel:
        jobs = [j for j in jobs if re.search(options.kernel, j.kernel)]
    print(f"Triton {triton.__version__}: {len(launches)} launches recorded, {len(jobs)} distinct compiles",
          file=sys.stderr)
    results = run_jobs(jobs, target, options.jobs, options.timeout)
    commit = subprocess.run(["git", "-C", options.project, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    ptxas = next((r.get("ptxas") for r in results if r and r.get("ptxas")), "?")
    return dict(triton=triton.__version__, torch=torch.__version__, python=sys.executable, arch=options.arch,
                project=os.path.abspath(options.project), commit=commit, ptxas=ptxas,
                scenario_errors=scenario_errors,
                jobs=[dict(kernel=j.kernel, scenario=j.scenario, config=j.config, dtype=j.dtype,
                           num_warps=j.num_warps, programs=j.programs, autotuned=j.autotuned,
                           signature=j.signature) for j in jobs],
                results=results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project", help="path of the fastcnn checkout (the folder holding kernels/)")
    parser.add_argument("--python", action="append", default=[],
                        help="run the collection under this interpreter (repeatable: one report section per "
                             "Triton); default: the current interpreter")
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90 -> sm_90a)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compiles")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per compile")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32", help="element dtypes of the memory-bound scenarios")
    parser.add_argument("--layouts", default="nchw,channels_last")
    parser.add_argument("--no-conv1x1", dest="conv1x1", action="store_false", help="skip the 1x1 conv scenario")
    parser.add_argument("--no-fp32-ieee", dest="fp32_ieee", action="store_false",
                        help="skip conv in fp32 with TF32 disabled (DOT_PRECISION='ieee')")
    parser.add_argument("--only", help="regex on scenario names")
    parser.add_argument("--kernel", help="regex on kernel names")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/static_gpu_report/triton"),
                        help="TRITON_CACHE_DIR for the compiles ('' for Triton's default)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--output", help="write the markdown report here instead of standard output")
    parser.add_argument("--quick", action="store_true",
                        help="CI's representative subset: bf16 and fp32 only, no fp32 with TF32 disabled")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 on what is never acceptable (see the module's docstring)")
    parser.add_argument("--render", metavar="JSON", help="only render a report from a --json file written earlier")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="only print a before/after table of two --json files (their first runs)")
    parser.add_argument("--collect-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.quick:
        options.dtypes, options.fp32_ieee = "bf16,fp32", False
    options.dtypes = options.dtypes.split(",")
    options.layouts = options.layouts.split(",")

    if options.compare:
        runs = []
        for path in options.compare:
            with open(path) as f:
                loaded = json.load(f)
            runs.append(loaded[0] if isinstance(loaded, list) else loaded)
        compare(*runs, sys.stdout)
        return
    if options.render:
        with open(options.render) as f:
            runs = json.load(f)
        runs = runs if isinstance(runs, list) else [runs]
    elif options.python:
        runs = []
        for python in options.python:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                path = tmp.name
            argv = [python, os.path.abspath(__file__), options.project, "--collect-only", "--json", path,
                    "--arch", str(options.arch), "--jobs", str(options.jobs), "--timeout", str(options.timeout),
                    "--dtypes", ",".join(options.dtypes), "--layouts", ",".join(options.layouts),
                    "--cache-dir", options.cache_dir]
            argv += [] if options.conv1x1 else ["--no-conv1x1"]
            argv += [] if options.fp32_ieee else ["--no-fp32-ieee"]
            argv += ["--only", options.only] if options.only else []
            argv += ["--kernel", options.kernel] if options.kernel else []
            proc = subprocess.run(argv)
            if proc.returncode != 0:
                raise SystemExit(f"collection under {python} failed (exit {proc.returncode})")
            with open(path) as f:
                runs.append(json.load(f))
            os.unlink(path)
    else:
        runs = [collect(options)]
        if options.collect_only:
            with open(options.json, "w") as f:
                json.dump(runs[0], f, default=str)
            return
    if options.json and not options.render:
        with open(options.json, "w") as f:
            json.dump(runs, f, default=str)
    for run in runs:
        for error in run.get("scenario_errors", []):
            print(f"scenario failed under Triton {run['triton']}: {error}", file=sys.stderr)
    found = [line for run in runs for line in violations(run)]
    with (open(options.output, "w", encoding="utf-8") if options.output else contextlib.nullcontext(sys.stdout)) as out:
        render(runs, out)
        for run in runs:
            if run.get("scenario_errors"):
                print(f"\n### Scenarios that could not be recorded (Triton {run['triton']})\n", file=out)
                for error in run["scenario_errors"]:
                    print(f"- {error}", file=out)
        print(f"\n## Check: {len(found)} violation(s)\n", file=out)
        for line in found:
            print(f"- {line}", file=out)
    for line in found:
        print(f"VIOLATION {line}", file=sys.stderr)
    print(f"static check: {sum(len(run['jobs']) for run in runs)} compiles, {len(found)} violation(s)", file=sys.stderr)
    if options.check and found:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
