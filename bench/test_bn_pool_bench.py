"""Batch norm + ReLU and max-pool: fastcnn against eager PyTorch and torch.compile, side by side.

BN+ReLU: fastcnn.nn.BatchNorm2dReLU against nn.BatchNorm2d -> nn.ReLU (eager, and compiled as a
pair), training mode, on every distinct ResNet-50 activation shape at batch 64 and 256, fp32 and
bf16, NCHW and channels_last, forward alone and forward + backward. Max-pool: fastcnn.max_pool2d
against F.max_pool2d on ResNet's stem pool. GB/s over the least bytes each pass must move
(fastcnn.benchmarking), fraction of copy bandwidth, and the bytes autograd saves for backward.
``FASTCNN_BENCH_QUICK=1`` keeps batch 64 only.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.benchmarking import ACTIVATION_BATCHES, cuda_time_ms, gbps, saved_tensor_bytes
from fastcnn.ops import batch_norm as batch_norm_op
from fastcnn.ops import max_pool as max_pool_op

QUICK = os.environ.get("FASTCNN_BENCH_QUICK") == "1"
BATCHES = ACTIVATION_BATCHES[:1] if QUICK else ACTIVATION_BATCHES
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
BN_IMPLEMENTATIONS = ("fastcnn", "eager", "torch_compile")


def _bn_module(implementation, channels):
    if implementation == "fastcnn":
        module = fastcnn.nn.BatchNorm2dReLU(channels)
    else:
        module = torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU())
        if implementation == "torch_compile":
            module = torch.compile(module)
    return module.to("cuda")


def _activation(batch, channels, size, dtype_name, layout):
    generator = torch.Generator(device="cuda").manual_seed(0)
    return torch.randn(batch, channels, size, size, device="cuda", dtype=DTYPES[dtype_name],
                       generator=generator).contiguous(memory_format=LAYOUTS[layout])


def _bn_step(module, input, backward):
    if not backward:
        return lambda: module(input)
    grad = torch.ones_like(input)

    def step():
        input.grad = None
        module(input).backward(grad)
    return step


@pytest.mark.parametrize("implementation", BN_IMPLEMENTATIONS)
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("channels,size", batch_norm_op.benchmark_shapes())
def test_batch_norm_relu(benchmark, channels, size, batch, dtype_name, layout, backward, implementation,
                         device_peaks, record_result):
    # bf16 activations with fp32 BN parameters and statistics, as mixed-precision training has them.
    input = _activation(batch, channels, size, dtype_name, layout).requires_grad_(backward)
    modules = {name: _bn_module(name, channels) for name in BN_IMPLEMENTATIONS}
    steps = {name: _bn_step(modules[name], input, backward) for name in BN_IMPLEMENTATIONS}
    times_ms = {name: cuda_time_ms(step) for name, step in steps.items()}
    saved_bytes, _ = saved_tensor_bytes(lambda: modules[implementation](input))
    benchmark.group = f"bn_relu-{channels}x{size}-n{batch}-{dtype_name}-{layout}-{'fb' if backward else 'f'}"
    benchmark.pedantic(lambda: (steps[implementation](), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    bytes_moved = batch_norm_op.bytes_moved(input.numel(), input.element_size(), backward)
    achieved = gbps(bytes_moved, times_ms[implementation])
    figures = {
        "suite": "batch_norm_relu", "op": "batch_norm_relu_" + ("fwd_bwd" if backward else "fwd"),
        "case": f"{channels}x{size}/n{batch}/{dtype_name}/{layout}", "implementation": implementation,
        "median_ms": times_ms[implementation], "gbps": achieved,
        "fraction_of_copy_bandwidth": achieved / device_peaks["copy_gbps"],
        "speedup_vs_eager": times_ms["eager"] / times_ms[implementation],
        "speedup_vs_torch_compile": times_ms["torch_compile"] / times_ms[implementation],
        "saved_for_backward_bytes": saved_bytes, "_peaks": device_peaks,
    }
    benchmark.extra_info.update({k: v for k, v in figures.items() if k != "_peaks"})
    record_result(figures)


@pytest.mark.parametrize("implementation", ["fastcnn", "aten"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("suite", list(max_pool_op.SUITES))
def test_max_pool(benchmark, suite, batch, dtype_name, layout, implementation, device_peaks, record_result):
    config = dict(max_pool_op.SUITES[suite])
    channels, size = config.pop("channels"), config.pop("size")
    input = _activation(batch, channels, size, dtype_name, layout).requires_grad_()
    pools = {"fastcnn": fastcnn.max_pool2d, "aten": F.max_pool2d}

    def step(pool):
        def run():
            input.grad = None
            out = pool(input, **config)
            out.backward(torch.ones_like(out))
        return run

    times_ms = {name: cuda_time_ms(step(pool)) for name, pool in pools.items()}
    saved_bytes, out = saved_tensor_bytes(lambda: pools[implementation](input, **config))
    benchmark.group = f"max_pool-{suite}-n{batch}-{dtype_name}-{layout}"
    benchmark.pedantic(lambda: (step(pools[implementation])(), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    bytes_moved = max_pool_op.bytes_moved(input.numel(), out.numel(), input.element_size(), backward=True)
    achieved = gbps(bytes_moved, times_ms[implementation])
    figures = {
        "suite": "max_pool2d", "op": "max_pool2d_fwd_bwd", "case": f"{suite}/n{batch}/{dtype_name}/{layout}",
        "implementation": implementation, "median_ms": times_ms[implementation], "gbps": achieved,
        "fraction_of_copy_bandwidth": achieved / device_peaks["copy_gbps"],
        "speedup_vs_aten": times_ms["aten"] / times_ms[implementation],
        "saved_for_backward_bytes": saved_bytes, "_peaks": device_peaks,
    }
    benchmark.extra_info.update({k: v for k, v in figures.items() if k != "_peaks"})
    record_result(figures)
