"""Softmax cross-entropy forward + backward: fastcnn against eager F.cross_entropy and
torch.compile of it, side by side, for C = 10 ... 128k classes, fp32 and bf16 logits.

GB/s counts the least traffic a fused op needs (read the logits, write their gradient, read the
targets); extra peak memory is the peak allocated during one forward + backward beyond the
logits and targets, in units of the logits' size (goal: at most 1).
"""
import functools

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.benchmarking import cuda_time_ms, gbps
from fastcnn.ops import cross_entropy as cross_entropy_op

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def _compiled_cross_entropy():
    return torch.compile(F.cross_entropy)  # built on first use: importing inductor is slow and noisy


IMPLEMENTATIONS = {
    "fastcnn": fastcnn.cross_entropy,
    "eager": F.cross_entropy,
    "torch_compile": lambda input, target: _compiled_cross_entropy()(input, target),
}


def _step(implementation, logits, target):
    def run():
        logits.grad = None
        IMPLEMENTATIONS[implementation](logits, target).backward()
    return run


def _extra_peak_in_logits(run, logits):
    run()
    torch.cuda.synchronize()
    logits.grad = None
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - baseline) / (logits.numel() * logits.element_size())


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("suite", list(cross_entropy_op.SUITES))
def test_cross_entropy_forward_backward(benchmark, suite, dtype_name, implementation, device_peaks, record_result):
    rows, classes = cross_entropy_op.SUITES[suite]
    generator = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(rows, classes, device="cuda", dtype=DTYPES[dtype_name], generator=generator)
    logits.requires_grad_()
    target = torch.randint(0, classes, (rows,), device="cuda", generator=generator)
    times_ms = {name: cuda_time_ms(_step(name, logits, target)) for name in IMPLEMENTATIONS}
    run = _step(implementation, logits, target)
    extra_peak = _extra_peak_in_logits(run, logits)

    benchmark.group = f"cross_entropy-{suite}-{dtype_name}"
    benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    bytes_moved = cross_entropy_op.bytes_moved(rows, classes, logits.element_size())
    achieved = gbps(bytes_moved, times_ms[implementation])
    figures = {
        "suite": "cross_entropy", "op": "cross_entropy_fwd_bwd", "case": f"{suite}/N{rows}/{dtype_name}",
        "implementation": implementation, "rows": rows, "classes": classes, "dtype": dtype_name,
        "median_ms": times_ms[implementation], "gbps": achieved,
        "fraction_of_copy_bandwidth": achieved / device_peaks["copy_gbps"],
        "speedup_vs_eager": times_ms["eager"] / times_ms[implementation],
        "speedup_vs_torch_compile": times_ms["torch_compile"] / times_ms[implementation],
        "extra_peak_memory_in_logits": extra_peak,
        "_peaks": device_peaks,
    }
    benchmark.extra_info.update({k: v for k, v in figures.items() if k != "_peaks"})
    record_result(figures)
