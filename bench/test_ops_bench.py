"""Every op of the benchmark catalogue under pytest-benchmark: the cases each op's case module
(``fastcnn/cases/<op>.py``) defines in its ``profile_cases``, the same cases ``fastcnn-profile``
runs, timed the same way (``fastcnn.benchmarking.measure_case``: fastcnn and every baseline of
the case side by side in this process, L2 flushed between calls) and recorded in the same schema
(``fastcnn.reporting.figures``), into the session's results file.

bf16 and fp32 (TF32 as PyTorch's own setting says, on both sides), channels_last and NCHW.
``FASTCNN_BENCH_QUICK=1`` keeps the profiler's quick subset (batch 64, a few shapes per op).
"""
import os

import pytest
import torch

from fastcnn.benchmarking import DRY_RUN, measure_case
from fastcnn.profile import cases
from fastcnn.reporting import figures

# The catalogue's dry run is fastcnn-profile's CPU smoke check (scripts/gpu_check.sh runs it).
pytestmark = pytest.mark.skipif(DRY_RUN, reason="FASTCNN_BENCH_DRY_RUN: only the ResNet benchmark has a dry run")
QUICK = os.environ.get("FASTCNN_BENCH_QUICK") == "1"
CASES = cases(dtypes=("bf16", "fp32"), layouts=("channels_last", "nchw"), quick=QUICK)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.op}-{c.case}-{c.dtype}-{c.layout}" for c in CASES])
def test_op(benchmark, case, device_peaks, record_result):
    measured = measure_case(case, "cuda")
    ours = case.build("cuda")["fastcnn"]
    benchmark.group = f"{case.op}-{case.case}-{case.dtype}-{case.layout}"
    benchmark.pedantic(lambda: (ours(), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    records = figures(case, measured, device_peaks, suite="bench")
    benchmark.extra_info.update(next(r for r in records if r["implementation"] == "fastcnn"))
    for record in records:
        record_result(record)
    torch._dynamo.reset()  # compiled baselines of finished cases need not stay resident
