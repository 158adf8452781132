"""conv2d forward, grad-input and grad-weight, each timed alone: fastcnn's kernels against cuDNN
(``torch.ops.aten.convolution`` / ``convolution_backward`` with one output requested), side by
side in the same process, on every distinct conv layer of ResNet-18 and ResNet-50 and a
MobileNetV2 depthwise layer, at batch 64 and 256; bf16 channels_last, and fp32 with TF32 on both
sides. cudnn.benchmark is on, so cuDNN runs the algorithm it finds fastest, as tuned models do.

``FASTCNN_BENCH_QUICK=1`` keeps batch 64 only. The first fastcnn call of each case (compile, when
the kernel variant is new, plus autotuning) is timed separately and recorded as ``first_call_s``.
"""
import os
import time

import pytest
import torch

from fastcnn._backend import kernel_module
from fastcnn.benchmarking import conv2d_flops, cuda_time_ms, tflops
from fastcnn.shapes import CONV_BATCHES, CONV_SUITES

QUICK = os.environ.get("FASTCNN_BENCH_QUICK") == "1"
BATCHES = CONV_BATCHES[:1] if QUICK else CONV_BATCHES
PRECISIONS = {"bf16_channels_last": (torch.bfloat16, torch.channels_last),
              "fp32_tf32": (torch.float32, torch.contiguous_format)}
PASSES = ("forward", "input_grad", "weight_grad")
CASES = [(suite, layer) for suite, layers in CONV_SUITES.items() for layer in layers()]
_first_calls = {}


def _operands(layer, batch, dtype, memory_format):
    generator = torch.Generator(device="cuda").manual_seed(0)
    make = (lambda *shape: torch.randn(shape, device="cuda", dtype=dtype, generator=generator)
            .contiguous(memory_format=memory_format))
    input = make(batch, layer.in_channels, layer.size, layer.size)
    weight = make(layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel)
    grad_out = make(batch, layer.out_channels, layer.out_size, layer.out_size)
    return input, weight, grad_out


def _fastcnn_call(conv_pass, layer, input, weight, grad_out):
    kernels = kernel_module("conv2d")
    arguments = dict(stride=(layer.stride,) * 2, padding=(layer.padding,) * 2, dilation=(1, 1),
                     groups=layer.groups, dot_precision="tf32" if input.dtype == torch.float32 else "ieee")
    if conv_pass == "forward":
        out = torch.empty_like(grad_out)
        return lambda: kernels.forward(input, weight, None, out, **arguments)
    if conv_pass == "input_grad":
        grad_input = torch.empty_like(input)
        return lambda: kernels.input_grad(grad_out, weight, grad_input, **arguments)
    grad_weight = torch.empty_like(weight)
    return lambda: kernels.weight_grad(input, grad_out, grad_weight, **arguments)


def _cudnn_call(conv_pass, layer, input, weight, grad_out):
    stride, padding = [layer.stride] * 2, [layer.padding] * 2
    if conv_pass == "forward":
        return lambda: torch.ops.aten.convolution(input, weight, None, stride, padding, [1, 1], False, [0, 0],
                                                  layer.groups)
    mask = [conv_pass == "input_grad", conv_pass == "weight_grad", False]
    return lambda: torch.ops.aten.convolution_backward(grad_out, input, weight, None, stride, padding, [1, 1], False,
                                                       [0, 0], layer.groups, mask)


@pytest.mark.parametrize("conv_pass", PASSES)
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("suite,layer", CASES, ids=[f"{suite}-{layer.name}" for suite, layer in CASES])
def test_conv2d(benchmark, suite, layer, batch, precision, conv_pass, device_peaks, record_result):
    dtype, memory_format = PRECISIONS[precision]
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    operands = _operands(layer, batch, dtype, memory_format)
    fastcnn_call = _fastcnn_call(conv_pass, layer, *operands)
    torch.cuda.synchronize()
    started = time.perf_counter()
    fastcnn_call()  # compiles new kernel variants and autotunes this shape
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - started
    cudnn_call = _cudnn_call(conv_pass, layer, *operands)
    times_ms = {"fastcnn": cuda_time_ms(fastcnn_call), "cudnn": cuda_time_ms(cudnn_call)}

    benchmark.group = f"conv2d-{conv_pass}-{precision}-{layer.name}-n{batch}"
    benchmark.pedantic(lambda: (fastcnn_call(), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    flops = conv2d_flops(batch, layer)
    peak = device_peaks["matmul_bf16_tflops" if dtype == torch.bfloat16 else "matmul_fp32_tflops"]
    for implementation, milliseconds in times_ms.items():
        figures = {
            "suite": "conv2d", "op": f"conv2d_{conv_pass}", "implementation": implementation,
            "case": f"{suite}/{layer.name}/n{batch}/{precision}", "model": suite, "layer": layer._asdict(),
            "batch": batch, "precision": precision, "kernel": layer.kernel, "depthwise": layer.groups > 1,
            "flops": flops, "median_ms": milliseconds, "tflops": tflops(flops, milliseconds),
            "fraction_of_matmul_peak": tflops(flops, milliseconds) / peak,
            "speedup_vs_cudnn": times_ms["cudnn"] / milliseconds,
            "_peaks": device_peaks,
        }
        if implementation == "fastcnn":
            figures["first_call_s"] = first_call_s
            benchmark.extra_info.update({k: v for k, v in figures.items() if k not in ("_peaks", "layer")})
        record_result(figures)

