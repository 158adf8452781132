"""linear's benchmark cases: forward + backward of the Linear layers torchvision's models train,
fastcnn's fused GEMM (bias and activation in the epilogue) against F.linear → activation eager and
under torch.compile: ConvNeXt-T's MLPs (Linear → GELU and the Linear back, on every pixel of a
stage: M = N·H·W rows) and ResNet-50's classifier head."""
from typing import NamedTuple

import torch

from ..benchmarking import BenchmarkCase, compiled, training_step
from ..ops.activation import DERIVATIVE_FROM_OUTPUT, KINDS, module_for
from ..ops.linear import flops, linear
from ._static import DTYPES, empty, wide_buffer


class LinearLayer(NamedTuple):
    """One Linear layer of a suite: ``pixels`` rows per image (1 for a head), features in and out,
    and the activation that follows it (None: none)."""
    name: str
    pixels: int
    in_features: int
    out_features: int
    activation: object = None


def convnext_tiny_mlps():
    """The two Linears of a ConvNeXt-T block's MLP in its first and third stages (96 and 384
    channels at 56² and 14²; expansion 4, GELU between)."""
    return [LinearLayer(f"convnext_tiny.stage{stage}.mlp.{index}", size * size, *features)
            for stage, channels, size in ((1, 96, 56), (3, 384, 14))
            for index, features in ((0, (channels, 4 * channels, "gelu")), (2, (4 * channels, channels)))]


SUITES = {"convnext_tiny": convnext_tiny_mlps,
          "resnet50": lambda: [LinearLayer("resnet50.fc", 1, 2048, 1000)]}
BATCHES = {"convnext_tiny": (32,), "resnet50": (256,)}
PROFILE_OPS = ("linear",)


def _case(layer, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        dtype_ = DTYPES[dtype]
        input = torch.randn((batch * layer.pixels, layer.in_features), device=device, generator=generator).to(dtype_)
        weight = (torch.randn((layer.out_features, layer.in_features), device=device, generator=generator)
                  / layer.in_features ** 0.5).to(dtype_).requires_grad_()
        bias = torch.randn((layer.out_features,), device=device, generator=generator).to(dtype_).requires_grad_()
        activation = module_for(layer.activation, 0.0) if layer.activation else (lambda t: t)

        def ours(x):
            return linear(x, weight, bias, activation=layer.activation)

        def theirs(x):
            return activation(torch.nn.functional.linear(x, weight, bias))

        input.requires_grad_()
        return {"fastcnn": training_step(ours, input), "eager": training_step(theirs, input),
                "torch_compile": training_step(compiled(theirs), input)}

    act = f"+{layer.activation}" if layer.activation else ""
    return BenchmarkCase("linear", f"{layer.name}{act}/n{batch}", dtype, layout,
                         {"flops": 3 * flops(batch * layer.pixels, layer.in_features, layer.out_features)}, build,
                         labels={"batch": batch})


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """Forward + backward (grad-input, grad-weight with grad-bias) of each layer of SUITES; the
    layers' inputs are 2-d, so the layout names only how the results are filed."""
    if smoke:
        return [_case(LinearLayer("smoke", 3, 13, 7, "gelu"), 2, dtype, layout) for dtype in dtypes
                for layout in layouts[:1]]
    layers = [(layer, batch) for suite, make in SUITES.items() for layer in make() for batch in BATCHES[suite]]
    layers = layers[:2] if quick else layers
    return [_case(layer, batch, dtype, layout) for layer, batch in layers for dtype in dtypes
            for layout in layouts[:1]]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ()


def _passes(kernel_module, dtype_name, rows, in_features, out_features, kind, bias=True, precision="ieee",
            input=None, scaled=False):
    """Forward (with z when the backward needs it), grad-input and grad-weight (with grad-bias and,
    ``scaled``, an output scale and its gradient) of one layer, as autograd runs them."""
    linear_kernels = kernel_module("linear")
    dtype = DTYPES[dtype_name]
    x = empty((rows, in_features), dtype) if input is None else input
    w = empty((out_features, in_features), dtype)
    y = empty((rows, out_features), dtype)
    from_output = kind in DERIVATIVE_FROM_OUTPUT and not scaled
    z = empty((rows, out_features), dtype) if scaled or (kind is not None and not from_output) else None
    saved = z if z is not None else (y if kind is not None else None)
    b = empty((out_features,), dtype) if bias else None
    scale = empty((out_features,), dtype) if scaled else None
    slope = empty((out_features,), dtype) if kind == "prelu" else None
    options = dict(kind=kind, parameter=0.01, dot_precision=precision, scale=scale, slope=slope)
    linear_kernels.forward(x, w, b, y, z, **options)
    gradient = dict(options, from_output=from_output)
    dx = empty((rows, in_features), dtype) if input is None else input  # a wide input: its gradient wide too
    linear_kernels.input_grad(y, saved if kind is not None else None, w, dx, **gradient)
    linear_kernels.weight_grad(y, saved, x, empty((out_features, in_features), dtype), b, **gradient,
                               ds=empty((out_features,), dtype) if scaled else None,
                               dslope=empty((out_features,), dtype) if slope is not None else None)


def static_launches(kernel_module, options):
    """ConvNeXt-T's MLP Linears (96 → 384 with GELU, 384 → 96 with the layer scale) on a batch of
    8 at 56² (the recorded launches keep their tensors for the whole check, so shapes stay modest)
    and ResNet-50's head (2048 → 1000, batch 256), in each dtype (fp32 as TF32, as torch.set_float32_matmul_precision
    ("high") runs it)."""
    out = []
    for dtype_name in options.dtypes:
        precision = "tf32" if dtype_name == "fp32" else "ieee"
        suffix = f"{dtype_name}{'/tf32' if dtype_name == 'fp32' else ''}"
        out.append((f"linear M25088 K96 N384 +gelu (ConvNeXt-T MLP) {suffix}",
                    lambda dtype_name=dtype_name, precision=precision: _passes(
                        kernel_module, dtype_name, 8 * 56 * 56, 96, 384, "gelu", precision=precision)))
        out.append((f"linear M25088 K384 N96 +layer scale (ConvNeXt-T MLP) {suffix}",
                    lambda dtype_name=dtype_name, precision=precision: _passes(
                        kernel_module, dtype_name, 8 * 56 * 56, 384, 96, None, precision=precision, scaled=True)))
        out.append((f"linear M256 K2048 N1000 (ResNet-50 fc) {suffix}",
                    lambda dtype_name=dtype_name, precision=precision: _passes(
                        kernel_module, dtype_name, 256, 2048, 1000, None, precision=precision)))
    return out


def compile_variants(kernel_module):
    """Every activation kind (from the output and from z) and PReLU's learnable slopes in bf16,
    fp16 and fp32 without TF32 (the
    FMA path, torch's default for fp32 matmuls), no bias, and int64 indexing (an input whose rows
    reach past 2**31 elements: a view into ``_static.wide_buffer``)."""
    def wide():
        rows, features = 3, 16
        x = wide_buffer(DTYPES["bf16"]).as_strided((rows, features), (2**30, 1))
        _passes(kernel_module, "bf16", rows, features, 16, "relu", input=x)
    variants = [(f"linear {kind} bf16", lambda kind=kind: _passes(kernel_module, "bf16", 40, 32, 48, kind))
                for kind in KINDS]
    variants += [("linear fp16 no bias", lambda: _passes(kernel_module, "fp16", 40, 32, 48, None, bias=False)),
                 ("linear fp32 ieee gelu", lambda: _passes(kernel_module, "fp32", 40, 32, 48, "gelu")),
                 ("linear relu output scale fp16", lambda: _passes(kernel_module, "fp16", 40, 32, 48, "relu",
                                                                   scaled=True)),
                 ("linear prelu bf16", lambda: _passes(kernel_module, "bf16", 40, 32, 48, "prelu")),
                 ("linear int64 indexing bf16", wide)]
    return variants
