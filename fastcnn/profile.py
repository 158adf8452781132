"""``python -m fastcnn.profile`` (or ``fastcnn-profile``): kernel throughput of every fastcnn op on
the shared shape suites (``fastcnn/shapes.py``), against PyTorch eager and ``torch.compile``.

For each op, shape, dtype and layout it times fastcnn, eager and torch.compile (median of CUDA
events after warm-up, L2 flushed between calls: ``fastcnn.benchmarking.cuda_time_ms``), and
reports the speedups, the achieved TFLOP/s (conv2d: 2·N·P·Q·K·C/g·R·S per pass) or GB/s (the
least bytes a memory-bound op must move), the fraction of the device's peak measured at start
(copy bandwidth, matmul rate), and fastcnn's first-call cost (compile + autotune). It prints a
table, and writes JSON (with the environment: GPU, driver, torch, triton, fastcnn, date) and CSV
of every figure and two PNG charts (speedups per op; fractions of peak) into ``--out``.
``--trace FILE`` writes a ``torch.profiler`` Chrome trace of one call of each fastcnn op.

Without a GPU it says so and runs each kernel once through Triton's interpreter on tiny shapes,
checking its result against PyTorch (a smoke check). It prints no timings then.
"""
import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch

OPS = ("conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d", "batch_norm_relu",
       "cross_entropy", "adam")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DEFAULT_OUT = os.path.join("bench", "results")  # where GPU results go unless --out says otherwise
IMPLEMENTATIONS = ("fastcnn", "eager", "torch_compile")
PEAK_KEYS = {"flops": None, "bytes": "copy_gbps"}  # which measured peak a figure is a fraction of


@dataclass
class Case:
    """One thing to time: ``build(device)`` returns {implementation: zero-argument callable}; each
    callable returns the tensor it computed (the output or gradient), which the smoke check
    compares across implementations."""

    op: str
    case: str
    dtype: str
    layout: str
    work: dict  # {"flops": n} for compute-bound ops, {"bytes": n} for memory-bound ones
    build: object = field(repr=False)


# ----------------------------------------------------------------------------- cases
def _randn(shape, dtype, layout, device, generator):
    tensor = torch.randn(shape, device=device, generator=generator).to(dtype)
    return tensor.contiguous(memory_format=LAYOUTS[layout]) if tensor.dim() == 4 else tensor


def _compiled(function):
    return torch.compile(function, dynamic=False)


def _conv_case(conv_pass, layer, batch, dtype, layout):
    from .benchmarking import conv2d_flops

    def build(device):
        from . import _backend
        from .dtypes import conv_uses_tf32

        generator = torch.Generator(device=device).manual_seed(0)
        input = _randn((batch, layer.in_channels, layer.size, layer.size), DTYPES[dtype], layout, device, generator)
        weight = _randn((layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel),
                        DTYPES[dtype], layout, device, generator)
        grad_out = _randn((batch, layer.out_channels, layer.out_size, layer.out_size), DTYPES[dtype], layout, device,
                          generator)
        kernels = _backend.kernel_module("conv2d")
        stride, padding = [layer.stride] * 2, [layer.padding] * 2
        arguments = dict(stride=tuple(stride), padding=tuple(padding), dilation=(1, 1), groups=layer.groups,
                         dot_precision="tf32" if conv_uses_tf32(input.dtype, input.device) else "ieee")
        if conv_pass == "forward":
            target = torch.empty_like(grad_out)
            launch = lambda: kernels.forward(input, weight, None, target, **arguments)  # noqa: E731

            def theirs():
                return torch.ops.aten.convolution(input, weight, None, stride, padding, [1, 1], False, [0, 0],
                                                  layer.groups)
        else:
            mask = [conv_pass == "input_grad", conv_pass == "weight_grad", False]
            target = torch.empty_like(input if mask[0] else weight)
            if mask[0]:
                launch = lambda: kernels.input_grad(grad_out, weight, target, **arguments)  # noqa: E731
            else:
                launch = lambda: kernels.weight_grad(input, grad_out, target, **arguments)  # noqa: E731

            def theirs():
                gradients = torch.ops.aten.convolution_backward(grad_out, input, weight, None, stride, padding,
                                                                [1, 1], False, [0, 0], layer.groups, mask)
                return gradients[0] if mask[0] else gradients[1]

        def ours():
            launch()
            return target
        return {"fastcnn": ours, "eager": theirs, "torch_compile": _compiled(theirs)}

    return Case(f"conv2d_{conv_pass}", f"{layer.name}/n{batch}", dtype, layout,
                {"flops": conv2d_flops(batch, layer)}, build)


def _training_step(function, input, extra=()):
    """forward + backward of ``function(input, *extra)`` with a ones-like output gradient."""
    grad = []

    def step():
        input.grad = None
        out = function(input, *extra)
        if not grad:
            grad.append(torch.ones_like(out))
        out.backward(grad[0])
        return input.grad
    return step


def _max_pool_case(suite, batch, dtype, layout):
    from .benchmarking import max_pool_bytes
    from .pool import max_pool2d
    from .validation import pool_output_size

    pool = dict(suite)
    channels, size = pool.pop("channels"), pool.pop("size")
    out_size = pool_output_size(size, pool["kernel_size"], pool["padding"], pool["stride"], 1, False)
    numel_in, numel_out = batch * channels * size * size, batch * channels * out_size * out_size

    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = _randn((batch, channels, size, size), DTYPES[dtype], layout, device, generator).requires_grad_()
        eager = lambda x: torch.nn.functional.max_pool2d(x, **pool)  # noqa: E731
        return {"fastcnn": _training_step(lambda x: max_pool2d(x, **pool), input),
                "eager": _training_step(eager, input), "torch_compile": _training_step(_compiled(eager), input)}

    element_size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return Case("max_pool2d", f"{channels}x{size}/n{batch}", dtype, layout,
                {"bytes": max_pool_bytes(numel_in, numel_out, element_size, True)}, build)


def _batch_norm_case(channels, size, batch, dtype, layout):
    from .benchmarking import batch_norm_relu_bytes
    from .nn import BatchNorm2dReLU

    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = _randn((batch, channels, size, size), DTYPES[dtype], layout, device, generator).requires_grad_()
        pair = torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU()).to(device)
        return {"fastcnn": _training_step(BatchNorm2dReLU(channels).to(device), input),
                "eager": _training_step(pair, input), "torch_compile": _training_step(_compiled(pair), input)}

    element_size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return Case("batch_norm_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                {"bytes": batch_norm_relu_bytes(batch * channels * size * size, element_size, True)}, build)


def _cross_entropy_case(suite, rows, classes, dtype):
    from .benchmarking import cross_entropy_bytes
    from .loss import cross_entropy

    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        logits = _randn((rows, classes), DTYPES[dtype], "nchw", device, generator).requires_grad_()
        target = torch.randint(0, classes, (rows,), device=device, generator=generator)
        eager = torch.nn.functional.cross_entropy
        return {"fastcnn": _training_step(cross_entropy, logits, (target,)),
                "eager": _training_step(eager, logits, (target,)),
                "torch_compile": _training_step(_compiled(eager), logits, (target,))}

    element_size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return Case("cross_entropy", f"{suite}/N{rows}", dtype, "-",
                {"bytes": cross_entropy_bytes(rows, classes, element_size)}, build)


def _adam_case(suite, shapes, dtype):
    from .benchmarking import adam_bytes
    from .optim import Adam

    numel = sum(math.prod(shape) for shape in shapes)

    def build(device):
        def step(kind):
            generator = torch.Generator(device=device).manual_seed(0)  # the same parameters for each
            params = [torch.randn(shape, device=device, generator=generator).to(DTYPES[dtype]).requires_grad_()
                      for shape in shapes]
            for param in params:
                param.grad = torch.randn(param.shape, device=device, generator=generator).to(DTYPES[dtype])
            optimizer = (Adam(params, lr=1e-3) if kind == "fastcnn"
                         else torch.optim.Adam(params, lr=1e-3, foreach=True))
            update = _compiled(optimizer.step) if kind == "torch_compile" else optimizer.step

            def run():
                update()
                return params[0]
            return run

        return {kind: step(kind) for kind in IMPLEMENTATIONS}

    element_size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    return Case("adam", f"{suite}/{len(shapes)} tensors", dtype, "-", {"bytes": adam_bytes(numel, element_size)}, build)


def cases(ops=OPS, dtypes=("bf16", "fp32"), layouts=("channels_last", "nchw"), quick=False, smoke=False):
    """The cases to run, from the shape suites of ``fastcnn.shapes`` (tiny ones for ``smoke``)."""
    from . import shapes

    found = []
    batches = (2,) if smoke else shapes.ACTIVATION_BATCHES[:1] if quick else shapes.ACTIVATION_BATCHES
    for op in ops:
        if op.startswith("conv2d_"):
            if smoke:
                layers = [shapes.ConvLayer("smoke", 5, 6, 3, 2, 1, 1, 9), shapes.ConvLayer("smoke_dw", 4, 4, 3, 1, 1, 4, 7)]
            else:
                layers = [layer for suite in shapes.CONV_SUITES.values() for layer in suite()]
                layers = layers[:4] if quick else list({layer[1:]: layer for layer in layers}.values())
            conv_batches = (2,) if smoke else shapes.CONV_BATCHES[:1] if quick else shapes.CONV_BATCHES
            found += [_conv_case(op[len("conv2d_"):], layer, batch, dtype, layout)
                      for layer in layers for batch in conv_batches for dtype in dtypes for layout in layouts]
        elif op == "max_pool2d":
            suites = [dict(channels=3, size=9, kernel_size=3, stride=2, padding=1)] if smoke else list(
                shapes.MAX_POOL_SUITES.values())
            found += [_max_pool_case(suite, batch, dtype, layout) for suite in suites for batch in batches
                      for dtype in dtypes for layout in layouts]
        elif op == "batch_norm_relu":
            activations = [(5, 7)] if smoke else shapes.resnet50_activation_shapes()[:3 if quick else None]
            found += [_batch_norm_case(channels, size, batch, dtype, layout) for channels, size in activations
                      for batch in batches for dtype in dtypes for layout in layouts]
        elif op == "cross_entropy":
            suites = {"C37": (11, 37)} if smoke else {k: v for k, v in shapes.CROSS_ENTROPY_SUITES.items()
                                                       if not quick or k in ("C1000", "C32000")}
            found += [_cross_entropy_case(name, rows, classes, dtype) for name, (rows, classes) in suites.items()
                      for dtype in dtypes]
        elif op == "adam":
            suites = {"smoke": lambda: [(7, 3), (13,)]} if smoke else {
                k: v for k, v in shapes.ADAM_SUITES.items() if not quick or k == "resnet50"}
            found += [_adam_case(name, make(), dtype) for name, make in suites.items() for dtype in dtypes
                      if dtype == "fp32" or not smoke]
        else:
            raise ValueError(f"fastcnn.profile: unknown op {op!r}; choose from {', '.join(OPS)}")
    return found


# ----------------------------------------------------------------------------- figures
def figures(case, times_ms, peaks, first_call_s=None):
    """One record per implementation: median ms, speedups, TFLOP/s or GB/s and the fraction of
    the matching measured peak (matmul rate for the dtype, or copy bandwidth)."""
    from .benchmarking import gbps, tflops

    records = []
    for implementation, milliseconds in times_ms.items():
        record = {"suite": "profile", "op": case.op, "case": case.case, "dtype": case.dtype, "layout": case.layout,
                  "implementation": implementation, "median_ms": milliseconds,
                  "speedup_vs_eager": times_ms["eager"] / milliseconds,
                  "speedup_vs_torch_compile": times_ms["torch_compile"] / milliseconds}
        if "flops" in case.work:
            record["tflops"] = tflops(case.work["flops"], milliseconds)
            peak = peaks["matmul_fp32_tflops" if case.dtype == "fp32" else "matmul_bf16_tflops"]
            record["fraction_of_peak"] = record["tflops"] / peak
        else:
            record["gbps"] = gbps(case.work["bytes"], milliseconds)
            record["fraction_of_peak"] = record["gbps"] / peaks["copy_gbps"]
        if implementation == "fastcnn" and first_call_s is not None:
            record["first_call_s"] = first_call_s
        records.append(record)
    return records


def _case_key(record):
    return (record["op"], record["case"], record["dtype"], record["layout"])


def table(records):
    """A readable table of fastcnn's figures, one row per case."""
    by_case = {}
    for record in records:
        by_case.setdefault(_case_key(record), {})[record["implementation"]] = record
    if not any("median_ms" in record for record in records):  # smoke-check records: no timing columns
        lines = [f"{'op':<19} {'case':<34} {'dtype':<5} {'layout':<13} {'check':<7} relative error vs PyTorch"]
        lines += [f"{key[0]:<19} {key[1]:<34} {key[2]:<5} {key[3]:<13} {ours['check']:<7} {ours['relative_error']:.1e}"
                  for key, ours in ((key, found["fastcnn"]) for key, found in by_case.items())]
        return "\n".join(lines)
    lines = [f"{'op':<19} {'case':<34} {'dtype':<5} {'layout':<13} {'fastcnn ms':>10} {'eager ms':>9} "
             f"{'compile ms':>10} {'x eager':>7} {'x compile':>9} {'throughput':>14} {'% peak':>6} {'1st call s':>10}"]
    for key, implementations in by_case.items():
        ours = implementations["fastcnn"]
        throughput = f"{ours['tflops']:.1f} TFLOP/s" if "tflops" in ours else f"{ours['gbps']:.0f} GB/s"
        first = ours.get("first_call_s")
        lines.append(
            f"{key[0]:<19} {key[1]:<34} {key[2]:<5} {key[3]:<13} {ours['median_ms']:>10.3f} "
            f"{implementations['eager']['median_ms']:>9.3f} {implementations['torch_compile']['median_ms']:>10.3f} "
            f"{ours['speedup_vs_eager']:>7.2f} {ours['speedup_vs_torch_compile']:>9.2f} {throughput:>14} "
            f"{100 * ours['fraction_of_peak']:>6.1f} {'' if first is None else format(first, '.2f'):>10}")
    return "\n".join(lines)


def write_csv(path, records):
    columns = sorted({key for record in records for key in record})
    leading = [c for c in ("op", "case", "dtype", "layout", "implementation") if c in columns]
    columns = leading + [c for c in columns if c not in leading]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


# The names bench/ records use for the same figures (conv2d's eager baseline is cuDNN).
_ALIASES = {"speedup_vs_eager": ("speedup_vs_eager", "speedup_vs_cudnn"),
            "speedup_vs_torch_compile": ("speedup_vs_torch_compile",),
            "fraction_of_peak": ("fraction_of_peak", "fraction_of_matmul_peak", "fraction_of_copy_bandwidth")}


def _figure(record, name):
    return next((record[key] for key in _ALIASES[name] if record.get(key) is not None), None)


def summary(records):
    """Per op: geometric-mean speedups of fastcnn over eager and torch.compile, and the median
    fraction of peak, over the timed fastcnn records (the profiler's or bench/'s)."""
    from .benchmarking import geometric_mean

    ops = {}
    for record in records:
        if record.get("implementation") == "fastcnn" and "median_ms" in record:
            ops.setdefault(record["op"], []).append(record)
    result = {}
    for op, rows in ops.items():
        row = {"cases": len(rows)}
        for name in ("speedup_vs_eager", "speedup_vs_torch_compile"):
            values = [v for v in (_figure(r, name) for r in rows) if v is not None]
            row[name] = geometric_mean(values) if values else None
        fractions = sorted(v for v in (_figure(r, "fraction_of_peak") for r in rows) if v is not None)
        row["median_fraction_of_peak"] = fractions[len(fractions) // 2] if fractions else None
        result[op] = row
    return result


TABLE_BEGIN = "<!-- performance-table:begin (written by scripts/render_perf_table.py) -->"
TABLE_END = "<!-- performance-table:end -->"
NOT_MEASURED = ("**Speed is not yet measured**: no GPU run of the benchmarks or the profiler has been recorded "
                "in `bench/results/`.")


def newest_results(folder):
    """The path of the newest results file in ``folder`` (by its recorded date), or None."""
    newest = None
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith(".json") or name.startswith("smoke-check"):
            continue
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as handle:
            date = json.load(handle).get("environment", {}).get("date", "")
        if newest is None or date >= newest[0]:
            newest = (date, path)
    return None if newest is None else newest[1]


def performance_table(results_path):
    """Markdown for the README: per op, fastcnn's geomean speedups and median fraction of peak
    from one results file, with where and when it was measured."""
    if results_path is None:
        return NOT_MEASURED
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    environment = results["environment"]
    rows = summary(results["records"])
    if not rows:
        return NOT_MEASURED

    def cell(value, pattern):
        return "n/a" if value is None else pattern.format(value)

    lines = [f"Measured on {environment.get('gpu')} (driver {environment.get('driver')}, torch "
             f"{environment.get('torch')}, triton {environment.get('triton')}, fastcnn {environment.get('fastcnn')}) "
             f"on {environment.get('date', '')[:10]}; from `{os.path.basename(results_path)}`. Speedups are "
             "geometric means over the cases; conv2d's eager baseline is cuDNN.", "",
             "| op | cases | × eager | × torch.compile | median fraction of peak |", "| --- | --- | --- | --- | --- |"]
    for op, row in sorted(rows.items()):
        lines.append(f"| {op} | {row['cases']} | {cell(row['speedup_vs_eager'], '{:.2f}')} | "
                     f"{cell(row['speedup_vs_torch_compile'], '{:.2f}')} | "
                     f"{cell(row['median_fraction_of_peak'], '{:.0%}')} |")
    return "\n".join(lines)


def render_readme_table(readme_path, results_folder):
    """Replace the text between the performance-table markers of ``readme_path`` with the table of
    the newest results file in ``results_folder``. Returns the results file used (or None)."""
    with open(readme_path, encoding="utf-8") as handle:
        text = handle.read()
    begin, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{readme_path} has no '{TABLE_BEGIN}' ... '{TABLE_END}' block")
    source = newest_results(results_folder)
    text = text[:begin + len(TABLE_BEGIN)] + "\n" + performance_table(source) + "\n" + text[end:]
    with open(readme_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return source


def write_charts(records, stem):
    """``<stem>-speedups.png`` (geomean speedup per op vs eager and torch.compile) and
    ``<stem>-roofline.png`` (each case's fraction of peak, per op). Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_op = summary(records)
    ops = list(per_op)
    paths = []
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(ops) + 2), 4))
    positions = range(len(ops))
    for offset, (key, label) in zip((-0.2, 0.2), (("speedup_vs_eager", "vs eager"),
                                                 ("speedup_vs_torch_compile", "vs torch.compile"))):
        axes.bar([p + offset for p in positions], [per_op[op][key] for op in ops], width=0.4, label=label)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set(xticks=list(positions), ylabel="fastcnn speedup (geomean over cases)", title="fastcnn speedup per op")
    axes.set_xticklabels(ops, rotation=30, ha="right")
    axes.legend()
    figure.tight_layout()
    paths.append(f"{stem}-speedups.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(ops) + 2), 4))
    for index, op in enumerate(ops):
        fractions = [r["fraction_of_peak"] for r in records
                     if r["op"] == op and r.get("implementation") == "fastcnn" and "median_ms" in r]
        axes.scatter([index] * len(fractions), fractions, alpha=0.6)
    axes.set(xticks=list(positions), ylabel="fraction of measured peak", ylim=(0, 1.05),
             title="fastcnn: fraction of peak (matmul rate for conv2d, copy bandwidth otherwise)")
    axes.set_xticklabels(ops, rotation=30, ha="right")
    figure.tight_layout()
    paths.append(f"{stem}-roofline.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    return paths


# ----------------------------------------------------------------------------- running
def _relative_error(actual, expected):
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def _smoke_check(case):
    """Run fastcnn's and eager's callables once each (interpreter) and compare what they touched."""
    from .dtypes import tolerance

    callables = case.build("cpu")
    ours, theirs = callables["fastcnn"](), callables["eager"]()
    error = _relative_error(ours, theirs)
    # Both sides round to the dtype; the reductions here are short (tiny shapes).
    passed = error <= 8 * tolerance(DTYPES[case.dtype])
    return {"suite": "profile", "op": case.op, "case": case.case, "dtype": case.dtype, "layout": case.layout,
            "implementation": "fastcnn", "check": "passed" if passed else "FAILED", "relative_error": error}


def _time_case(case, device):
    from .benchmarking import cuda_time_ms

    callables = case.build(device)
    torch.cuda.synchronize()
    began = time.perf_counter()
    callables["fastcnn"]()
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - began
    return {name: cuda_time_ms(callables[name]) for name in IMPLEMENTATIONS}, first_call_s


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
        description="Time every fastcnn op on the shared shape suites against PyTorch eager and torch.compile, "
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
    arguments = parser.parse_args(argv)
    arguments.ops = [op.strip() for op in arguments.ops.split(",") if op.strip()]
    arguments.dtypes = [d.strip() for d in arguments.dtypes.split(",") if d.strip()]
    arguments.layouts = [layout.strip() for layout in arguments.layouts.split(",") if layout.strip()]
    for name, chosen, allowed in (("--ops", arguments.ops, OPS), ("--dtypes", arguments.dtypes, DTYPES),
                                  ("--layouts", arguments.layouts, LAYOUTS)):
        unknown = [value for value in chosen if value not in allowed]
        if unknown or not chosen:
            parser.error(f"{name}: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(allowed)}")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    gpu = torch.cuda.is_available()
    if not gpu:
        # Before anything imports triton: the smoke check runs the kernels through the interpreter.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
    from tqdm.auto import tqdm

    from .benchmarking import environment, measure_peaks, write_results

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
    records = []
    for case in tqdm(selected, desc="profiling", unit="case", file=sys.stderr):
        if gpu:
            times_ms, first_call_s = _time_case(case, "cuda")
            records += figures(case, times_ms, peaks, first_call_s)
            torch._dynamo.reset()  # compiled baselines of finished cases need not stay resident
        else:
            records.append(_smoke_check(case))
    print(table(records))
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
