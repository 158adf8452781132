"""One Adam step over a parameter suite: fastcnn vs torch.optim.Adam(fused=True) and
(foreach=True), timed side by side in the same process. fp32 params: 28 bytes per element."""
import math

import pytest
import torch

import fastcnn
from fastcnn.benchmarking import cuda_time_ms, gbps
from fastcnn.ops import adam as adam_op

IMPLEMENTATIONS = {
    "fastcnn": lambda params: fastcnn.optim.Adam(params, lr=1e-3),
    "torch_fused": lambda params: torch.optim.Adam(params, lr=1e-3, fused=True),
    "torch_foreach": lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True),
}


def _optimizer_with_grads(implementation, shapes):
    generator = torch.Generator(device="cuda").manual_seed(0)
    params = [torch.randn(s, device="cuda", generator=generator).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device="cuda", generator=generator)
    optimizer = IMPLEMENTATIONS[implementation](params)
    optimizer.step()  # state creation and first-call compilation
    torch.cuda.synchronize()
    return optimizer


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("suite", list(adam_op.SUITES))
def test_adam_step(benchmark, suite, implementation, device_peaks, record_result):
    shapes = adam_op.SUITES[suite]()
    numel = sum(math.prod(s) for s in shapes)
    bytes_moved = adam_op.bytes_moved(numel, 4)
    times_ms = {name: cuda_time_ms(_optimizer_with_grads(name, shapes).step) for name in IMPLEMENTATIONS}
    optimizer = _optimizer_with_grads(implementation, shapes)

    def step():
        optimizer.step()
        torch.cuda.synchronize()

    benchmark.group = f"adam-{suite}"
    benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    achieved = gbps(bytes_moved, times_ms[implementation])
    figures = {
        "suite": "adam", "op": "adam_step", "case": suite, "implementation": implementation,
        "tensors": len(shapes), "elements": numel, "dtype": "float32",
        "median_ms": times_ms[implementation],
        "gbps": achieved,
        "fraction_of_copy_bandwidth": achieved / device_peaks["copy_gbps"],
        "speedup_vs_torch_fused": times_ms["torch_fused"] / times_ms[implementation],
        "speedup_vs_torch_foreach": times_ms["torch_foreach"] / times_ms[implementation],
        "_peaks": device_peaks,
    }
    benchmark.extra_info.update({k: v for k, v in figures.items() if k != "_peaks"})
    record_result(figures)
