"""pytest-benchmark suites: GPU only. On a machine without CUDA every benchmark is skipped
with the reason, and ``pytest bench/`` exits 0.

Each benchmark times fastcnn and its PyTorch baselines side by side in the same process
(``fastcnn.benchmarking.measure_case``), puts GB/s or TFLOP/s, the fraction of the device's
measured peak and the speedups into ``extra_info``, and the session writes every record (the
schema of ``fastcnn.reporting.figures``) to ``<gpu>-<date>.json`` in ``$FASTCNN_RESULTS``
(default ``bench/results/``).
"""
import os

import pytest
import torch

RESULTS_FOLDER = os.environ.get("FASTCNN_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                  "results")
_records = []


def _skip_reason():
    from fastcnn.benchmarking import DRY_RUN

    if DRY_RUN:
        return None  # everything runs on the CPU (bench/test_resnet_bench.py says how)
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


_PEAKS = pytest.StashKey()


@pytest.fixture(scope="session")
def device_peaks(request):
    """The device's copy bandwidth and matmul rate, measured once per pytest run."""
    from fastcnn.benchmarking import measure_peaks

    peaks = measure_peaks("cuda")
    print("measured peaks:", peaks)
    request.config.stash[_PEAKS] = peaks
    return peaks


@pytest.fixture(scope="session")
def record_result():
    """Append one result record (a dict with suite, op, case, implementation and figures)."""
    return _records.append


def pytest_sessionfinish(session, exitstatus):
    if not _records:
        return
    from fastcnn.benchmarking import measure_peaks, write_results
    from fastcnn.cases.conv2d import speedup_summary

    peaks = session.config.stash.get(_PEAKS, None) or (measure_peaks("cuda") if torch.cuda.is_available() else {})
    path = write_results(RESULTS_FOLDER, _records, peaks)
    print(f"\nbenchmark results written to {path}")
    for key, speedup in speedup_summary(_records).items():
        print(f"conv2d geomean speedup vs cuDNN {key}: {speedup:.3f}x")
