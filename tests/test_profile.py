"""fastcnn.profile and fastcnn.reporting: the CPU smoke path (no timings), the figures from made-up
timings checked by hand, the table/CSV/JSON/chart writers, and the README table renderer."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from fastcnn import profile, reporting
from fastcnn.benchmarking import BenchmarkCase, write_results

PEAKS = {"copy_gbps": 2000.0, "matmul_bf16_tflops": 4.0, "matmul_fp32_tflops": 2.0}


def _made_up_records():
    conv = BenchmarkCase("conv2d_forward", "layer/n64", "bf16", "channels_last", {"flops": 4e9}, build=None)
    loss = BenchmarkCase("cross_entropy", "C1000/N65536", "fp32", "-", {"bytes": 3e9}, build=None)
    return (reporting.figures(conv, dict(median_ms={"fastcnn": 2.0, "eager": 4.0, "torch_compile": 3.0},
                                         first_call_s=1.25), PEAKS)
            + reporting.figures(loss, dict(median_ms={"fastcnn": 1.5, "eager": 6.0, "torch_compile": 1.5},
                                           first_call_s=0.5), PEAKS))


def test_figures_by_hand():
    conv_ours, conv_eager, _, loss_ours = _made_up_records()[:4]
    # 4e9 FLOPs in 2 ms = 2 TFLOP/s = half of the 4 TFLOP/s bf16 matmul peak.
    assert conv_ours["tflops"] == pytest.approx(2.0) and conv_ours["fraction_of_peak"] == pytest.approx(0.5)
    assert conv_ours["speedup_vs_eager"] == pytest.approx(2.0)
    assert conv_ours["speedup_vs_torch_compile"] == pytest.approx(1.5)
    assert conv_ours["first_call_s"] == 1.25 and "first_call_s" not in conv_eager
    assert "speedup_vs_eager" not in conv_eager and conv_eager["speedup_vs_fastcnn"] == pytest.approx(0.5)
    assert conv_eager["tflops"] == pytest.approx(1.0)
    # 3e9 bytes in 1.5 ms = 2000 GB/s = all of the copy bandwidth.
    loss_ours = _made_up_records()[3]
    assert loss_ours["gbps"] == pytest.approx(2000.0) and loss_ours["fraction_of_peak"] == pytest.approx(1.0)
    assert loss_ours["speedup_vs_eager"] == pytest.approx(4.0)


def test_one_schema_for_extra_baselines_labels_and_memory():
    """A case with a baseline beyond eager and torch.compile (Adam's torch_foreach) gets a
    speedup_vs_<name> for it; its labels and the measured peak memory land in every record."""
    case = BenchmarkCase("adam", "s/2 tensors", "fp32", "-", {"bytes": 2e9}, build=None, labels={"tensors": 2})
    measured = dict(median_ms={"fastcnn": 1.0, "eager": 2.0, "torch_foreach": 3.0, "torch_compile": 1.0},
                    extra_peak_bytes={"fastcnn": 0, "eager": 64, "torch_foreach": 128, "torch_compile": 0})
    ours = next(r for r in reporting.figures(case, measured, PEAKS, suite="bench") if r["implementation"] == "fastcnn")
    assert ours["suite"] == "bench" and ours["tensors"] == 2 and ours["extra_peak_memory_bytes"] == 0
    assert ours["speedup_vs_torch_foreach"] == pytest.approx(3.0) and ours["speedup_vs_eager"] == pytest.approx(2.0)
    assert ours["gbps"] == pytest.approx(2000.0) and "first_call_s" not in ours


def test_every_op_module_defines_catalogue_cases_with_eager_and_compile():
    """The catalogue: every op's smoke cases build fastcnn, eager and torch.compile callables."""
    for case in profile.cases(smoke=True, dtypes=("fp32",), layouts=("nchw",)):
        assert set(case.work) <= {"flops", "bytes"} and len(case.work) == 1, case
        assert {"fastcnn", "eager", "torch_compile"} <= set(case.build("cpu")), case.op


def test_writers_on_made_up_timings(tmp_path):
    records = _made_up_records()
    text = reporting.table(records)
    assert "conv2d_forward" in text and "2.000" in text and "2.0 TFLOP/s" in text and "2000 GB/s" in text
    assert "1.25" in text and "50.0" in text  # first call, % of peak
    summary = reporting.summary(records)
    assert summary["cross_entropy"]["speedup_vs_eager"] == pytest.approx(4.0)
    assert summary["conv2d_forward"]["median_fraction_of_peak"] == pytest.approx(0.5)
    environment = {"date": "2026-11-21T10:00:00+00:00", "gpu": "Made Up GPU", "driver": "1.0", "torch": "x",
                   "triton": "y", "fastcnn": "z"}
    json_path = write_results(str(tmp_path), records, PEAKS, environment)
    assert os.path.basename(json_path) == "Made-Up-GPU-2026-11-21.json"
    saved = json.loads(open(json_path).read())
    assert saved["environment"]["gpu"] == "Made Up GPU" and len(saved["records"]) == 6
    csv_path = str(tmp_path / "out.csv")
    reporting.write_csv(csv_path, records)
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 6 and float(rows[0]["median_ms"]) == 2.0 and list(rows[0])[:5] == [
        "op", "case", "dtype", "layout", "implementation"]
    for path in reporting.write_charts(records, str(tmp_path / "chart")):
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_readme_table_from_the_newest_results(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{reporting.TABLE_BEGIN}\nold text\n{reporting.TABLE_END}\nafter\n")
    assert reporting.render_readme_table(str(readme), str(tmp_path / "results")) is None
    assert "not yet measured" in readme.read_text() and "old text" not in readme.read_text()
    records = _made_up_records()
    for date, factor in (("2026-11-20", 1.0), ("2026-11-21", 2.0)):
        scaled = [dict(r, speedup_vs_eager=r["speedup_vs_eager"] * factor) if "speedup_vs_eager" in r else r
                  for r in records]
        write_results(str(tmp_path / "results"), scaled, PEAKS, {"date": f"{date}T00:00:00+00:00", "gpu": "G"})
    source = reporting.render_readme_table(str(readme), str(tmp_path / "results"))
    text = readme.read_text()
    assert source.endswith("G-2026-11-21.json")
    assert "| cross_entropy | 1 | 8.00 | 1.00 | 100% |" in text and "| conv2d_forward | 1 | 4.00 | 1.50 | 50% |" in text
    assert text.endswith("after\n") and "not yet measured" not in text


def test_unknown_option_values_are_refused():
    with pytest.raises(SystemExit):
        profile.parse_arguments(["--ops", "conv2d_forward,no_such_op"])
    with pytest.raises(SystemExit):
        profile.parse_arguments(["--dtypes", "fp64"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke path is what runs without a GPU")
def test_cpu_smoke_path_writes_nothing_unless_asked(tmp_path):
    """Without a GPU there are no results: run from a checkout's root, the profiler must not
    leave a bench/results/ folder behind."""
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    finished = subprocess.run([sys.executable, "-m", "fastcnn.profile", "--ops", "max_pool2d", "--dtypes", "fp32",
                               "--layouts", "nchw"], cwd=tmp_path, env=environment, capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    assert "written: nothing" in finished.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke path is what runs without a GPU")
def test_cpu_smoke_path_runs_kernels_and_prints_no_timings(tmp_path):
    trace = tmp_path / "trace.json"
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the profiler sets it itself
    finished = subprocess.run(
        [sys.executable, "-m", "fastcnn.profile", "--out", str(tmp_path), "--ops",
         "conv2d_weight_grad,max_pool2d,batch_norm_relu,cross_entropy,adam", "--dtypes", "fp32,bf16",
         "--layouts", "channels_last", "--trace", str(trace)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "No CUDA GPU here" in finished.stdout and "No timings" in finished.stdout
    assert " ms" not in finished.stdout and "GB/s" not in finished.stdout and "passed" in finished.stdout
    records = json.loads((tmp_path / "smoke-check.json").read_text())["records"]
    assert {r["op"] for r in records} == {"conv2d_weight_grad", "max_pool2d", "batch_norm_relu", "cross_entropy",
                                          "adam"}
    assert all(r["check"] == "passed" and "median_ms" not in r for r in records), records
    assert (tmp_path / "smoke-check.csv").exists() and not list(tmp_path.glob("*.png"))
    names = {event.get("name") for event in json.loads(trace.read_text())["traceEvents"]}
    expected = {f"fastcnn.profile {op}" for op in ("conv2d_weight_grad", "max_pool2d", "batch_norm_relu",
                                                     "cross_entropy", "adam")}
    expected |= {"fastcnn::max_pool2d", "fastcnn::batch_norm_apply", "fastcnn::cross_entropy_forward"}
    assert expected <= names, sorted(n for n in names if n and "fastcnn" in n)
