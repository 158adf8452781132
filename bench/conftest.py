"""pytest-benchmark suites: GPU only. On a machine without CUDA every benchmark is skipped
with the reason, and ``pytest bench/`` exits 0.

Each benchmark times fastcnn and its PyTorch baselines side by side in the same process
(``fastcnn.benchmarking.cuda_time_ms``), puts GB/s or TFLOP/s, the fraction of the device's
measured peak and the speedups into ``extra_info``, and the session writes every record to
``bench/results/<gpu>-<date>.json``.
"""
import os

import pytest
import torch

RESULTS_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_records = []


def _skip_reason():
    if not torch.cuda.is_available():
        return "benchmarks need a CUDA GPU: on CPU they would time Triton's interpreter, not the kernels"
    from fastcnn.kernels import INTERPRETED

    if INTERPRETED:
        return "TRITON_INTERPRET=1 is set: benchmarks time compiled kernels only"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say once why every benchmark skipped (``-q`` shows only a count)."""
    reason = _skip_reason()
    if reason and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line(f"{len(terminalreporter.stats['skipped'])} benchmarks skipped: {reason}")


@pytest.fixture(scope="session")
def device_peaks():
    """The device's copy bandwidth and matmul rate, measured once per pytest run."""
    from fastcnn.benchmarking import measure_peaks

    peaks = measure_peaks("cuda")
    print("measured peaks:", peaks)
    return peaks


@pytest.fixture(scope="session")
def record_result():
    """Append one result record (a dict with suite, op, case, implementation and figures)."""
    return _records.append


def pytest_sessionfinish(session, exitstatus):
    if not _records:
        return
    from fastcnn.benchmarking import measure_peaks, write_results
    from fastcnn.ops.conv2d import speedup_summary

    peaks = _records[0].get("_peaks") or measure_peaks("cuda")
    records = [{k: v for k, v in r.items() if k != "_peaks"} for r in _records]
    path = write_results(RESULTS_FOLDER, records, peaks)
    print(f"\nbenchmark results written to {path}")
    for key, speedup in speedup_summary(records).items():
        print(f"conv2d geomean speedup vs cuDNN {key}: {speedup:.3f}x")
