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

from fastcnn.benchmarking import cuda_time_ms, tflops
from fastcnn.ops import conv2d as conv2d_op

QUICK = os.environ.get("FASTCNN_BENCH_QUICK") == "1"
BATCHES = conv2d_op.BATCHES[:1] if QUICK else conv2d_op.BATCHES
PRECISIONS = {"bf16_channels_last": ("bf16", "channels_last"), "fp32_tf32": ("fp32", "nchw")}
PASSES = conv2d_op.PASSES
CASES = [(suite, layer) for suite, layers in conv2d_op.SUITES.items() for layer in layers()]


@pytest.mark.parametrize("conv_pass", PASSES)
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("suite,layer", CASES, ids=[f"{suite}-{layer.name}" for suite, layer in CASES])
def test_conv2d(benchmark, suite, layer, batch, precision, conv_pass, device_peaks, record_result):
    dtype, layout = PRECISIONS[precision]
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True  # fastcnn follows it too (conv2d_op.uses_tf32)
    operands = conv2d_op.operands(layer, batch, dtype, layout, "cuda", torch.Generator(device="cuda").manual_seed(0))
    fastcnn_call, _ = conv2d_op.pass_launcher(conv_pass, layer, *operands)
    torch.cuda.synchronize()
    started = time.perf_counter()
    fastcnn_call()  # compiles new kernel variants and autotunes this shape
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - started
    cudnn_call = conv2d_op.aten_pass(conv_pass, layer, *operands)
    times_ms = {"fastcnn": cuda_time_ms(fastcnn_call), "cudnn": cuda_time_ms(cudnn_call)}

    benchmark.group = f"conv2d-{conv_pass}-{precision}-{layer.name}-n{batch}"
    benchmark.pedantic(lambda: (fastcnn_call(), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    flops = layer.flops(batch)
    peak = device_peaks["matmul_bf16_tflops" if dtype == "bf16" else "matmul_fp32_tflops"]
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

