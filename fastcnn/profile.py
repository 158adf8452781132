"""``python -m fastcnn.profile`` (or ``fastcnn-profile``): kernel throughput of every fastcnn op on
its benchmark cases (each op's ``profile_cases`` in ``fastcnn/cases``), against PyTorch eager and
``torch.compile``.

For each op, shape, dtype and layout it times fastcnn, eager and torch.compile (median of CUDA
events after warm-up, L2 flushed between calls: ``fastcnn.benchmarking.cuda_time_ms``), and
reports the speedups, the achieved TFLOP/s (conv2d: 2·N·P·Q·K·C/g·R·S per pass) or GB/s (the
least bytes a memory-bound op must move), the fraction of the device's peak measured at start
(copy bandwidth, matmul rate), and fastcnn's first-call cost (compile + autotune). It prints a
table, and writes JSON (with the environment: GPU, driver, torch, triton, fastcnn, date) and CSV
of every figure and two PNG charts (speedups per op; fractions of peak) into ``--out``
(``fastcnn/reporting.py`` formats them). ``--trace FILE`` writes a ``torch.profiler`` Chrome
trace of one call of each fastcnn op.

Without a GPU it says so and runs each kernel once through Triton's interpreter on tiny shapes,
checking its result against PyTorch (a smoke check). It prints no timings then.
"""
import argparse
import json
import os
import sys
import time

import torch

from . import cases as case_modules, estimation
from .benchmarking import DTYPES, MEMORY_FORMATS
from .reporting import figures, summary, table, write_charts, write_csv

# Every profiled op name (conv2d's three passes are three) -> the case module that builds its cases.
OPS = case_modules.by_profile_op()
DEFAULT_OUT = os.path.join("bench", "results")  # where GPU results go unless --out says otherwise


def cases(ops=tuple(OPS), dtypes=("bf16", "fp32"), layouts=("channels_last", "nchw"), quick=False, smoke=False):
    """The cases to run: each op's ``profile_cases`` (tiny ones for ``smoke``)."""
    found = []
    for op in ops:
        if op not in OPS:
            raise ValueError(f"fastcnn.profile: unknown op {op!r}; choose from {', '.join(OPS)}")
        found += OPS[op].profile_cases(op, dtypes, layouts, quick=quick, smoke=smoke)
    return found


# ----------------------------------------------------------------------------- running
def _smoke_check(case):
    """Run fastcnn's and eager's callables once each (interpreter) and compare what they touched."""
    from .dtypes import tolerance
    from .testing import relative_error

    callables = case.build("cpu")
    ours, theirs = callables["fastcnn"](), callables["eager"]()  # each case's first baseline: PyTorch eager
    if case.smoke_view is not None:
        ours, theirs = case.smoke_view(ours), case.smoke_view(theirs)
    error = relative_error(ours, theirs)
    # Both sides round to the dtype; the reductions here are short (tiny shapes).
    passed = error <= 8 * tolerance(DTYPES[case.dtype])
    return {"suite": "profile", "op": case.op, "case": case.case, "dtype": case.dtype, "layout": case.layout,
            "implementation": "fastcnn", "check": "passed" if passed else "FAILED", "relative_error": error}


def _trace(selected, device, path):
    """A Chrome trace of one call of each fastcnn op (its kernels named in it)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    first_of_each = {}
    for case in selected:
        first_of_each.setdefault(case.op, case)
    built = {op: case.build(device)["fastcnn"] for op, case in first_of_each.items()}
    for run in built.values():  # compile and autotune outside the trace
        run()
    with profile(activities=activities) as profiler:
        for op, run in built.items():
            with record_function(f"fastcnn.profile {op}"):
                run()
        if device == "cuda":
            torch.cuda.synchronize()
    profiler.export_chrome_trace(path)
    return path


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastcnn-profile",
        description="Time every fastcnn op on its benchmark cases against PyTorch eager and torch.compile, "
                    "with TFLOP/s or GB/s and the fraction of the GPU's measured peak. Without a GPU: a smoke "
                    "check of every kernel through Triton's interpreter, and no timings.")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, from: {', '.join(OPS)}")
    parser.add_argument("--dtypes", default="bf16,fp32", help="comma-separated, from: fp32, fp16, bf16")
    parser.add_argument("--layouts", default="channels_last,nchw", help="comma-separated, from: nchw, channels_last")
    parser.add_argument("--quick", action="store_true", help="batch 64 only and a few shapes per op")
    parser.add_argument("--out", default=None,
                        help=f"folder for JSON, CSV and charts (default on a GPU: {DEFAULT_OUT}; without a GPU "
                             f"the smoke check writes its records only when --out is given)")
    parser.add_argument("--trace", metavar="FILE", help="also write a torch.profiler Chrome trace here")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no case after this many seconds (the cases left are listed as not run), so "
                             "that a run fits a time limit and still writes what it measured")
    estimation.add_arguments(parser)
    arguments = parser.parse_args(argv)
    arguments.ops = [op.strip() for op in arguments.ops.split(",") if op.strip()]
    arguments.dtypes = [d.strip() for d in arguments.dtypes.split(",") if d.strip()]
    arguments.layouts = [layout.strip() for layout in arguments.layouts.split(",") if layout.strip()]
    for name, chosen, allowed in (("--ops", arguments.ops, OPS), ("--dtypes", arguments.dtypes, DTYPES),
                                  ("--layouts", arguments.layouts, MEMORY_FORMATS)):
        unknown = [value for value in chosen if value not in allowed]
        if unknown or not chosen:
            parser.error(f"{name}: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(allowed)}")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    if arguments.estimate:  # counts on fake tensors: no kernel runs, no GPU is needed
        return estimation.run_from_arguments(arguments)
    gpu = torch.cuda.is_available()
    if not gpu:
        # Before anything imports triton: the smoke check runs the kernels through the interpreter.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
    from tqdm.auto import tqdm

    from .benchmarking import environment, measure_case, measure_peaks, write_results

    selected = cases(arguments.ops, arguments.dtypes, arguments.layouts, arguments.quick, smoke=not gpu)
    out = arguments.out or (DEFAULT_OUT if gpu else None)  # no results without a GPU: nothing to write
    info = environment()
    if gpu:
        print(f"fastcnn.profile on {info['gpu']} (driver {info.get('driver')}), torch {info['torch']}, "
              f"triton {info['triton']}: {len(selected)} cases")
        peaks = measure_peaks("cuda")
        print("measured peaks: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in peaks.items()))
    else:
        peaks = {}
        print("No CUDA GPU here: each kernel runs once through Triton's interpreter on tiny shapes as a smoke "
              "check against PyTorch. No timings are measured or shown (the interpreter says nothing about "
              "GPU speed).")
    records, not_run, began = [], [], time.monotonic()
    for index, case in enumerate(tqdm(selected, desc="profiling", unit="case", file=sys.stderr)):
        if arguments.budget_s is not None and time.monotonic() - began > arguments.budget_s:
            not_run = selected[index:]
            break
        if gpu:
            records += figures(case, measure_case(case, "cuda"), peaks)
            torch._dynamo.reset()  # compiled baselines of finished cases need not stay resident
        else:
            records.append(_smoke_check(case))
    print(table(records))
    if not_run:
        print(f"not run (past --budget-s {arguments.budget_s:g}): {len(not_run)} of {len(selected)} cases, from "
              f"{not_run[0].op} {not_run[0].case} {not_run[0].dtype} {not_run[0].layout}")
    if gpu:
        for op, row in summary(records).items():
            print(f"{op}: geomean {row['speedup_vs_eager']:.2f}x eager, {row['speedup_vs_torch_compile']:.2f}x "
                  f"torch.compile, median {100 * row['median_fraction_of_peak']:.0f}% of peak over {row['cases']} "
                  f"cases")
        json_path = write_results(out, records, peaks, info)
    elif out is not None:
        os.makedirs(out, exist_ok=True)
        json_path = os.path.join(out, "smoke-check.json")
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump({"environment": info, "peaks": None, "records": records}, handle, indent=2)
    written = []
    if out is not None:
        stem = os.path.splitext(json_path)[0]
        write_csv(stem + ".csv", records)
        written = [json_path, stem + ".csv"]
        if gpu:
            written += write_charts(records, stem)
    if arguments.trace:
        written.append(_trace(selected, "cuda" if gpu else "cpu", arguments.trace))
    print("written: " + (", ".join(written) if written else "nothing (no GPU results; --out saves the smoke "
                                                             "check's records)"))
    failed = [r for r in records if r.get("check") == "FAILED"]
    return 1 if failed else 0


def _console():  # the fastcnn-profile console script
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
