"""The profiler's and the benchmarks' figures, written for people: per-case records with speedups
and fractions of peak, a text table, CSV, a per-op summary, the README's performance table, and
charts. Everything here reads records (dicts) that a run produced; nothing here times anything.
"""
import csv
import json
import os


def figures(case, measured, peaks, suite="profile"):
    """One record per implementation of ``case`` from ``measured`` (``benchmarking.measure_case``,
    or just {"median_ms": {...}}), in the one schema the profiler, bench/ and the README table
    share:

    suite, op, case, dtype, layout, implementation, the case's labels; median_ms;
    speedup_vs_<other> for every other implementation (speedup_vs_eager, speedup_vs_torch_compile,
    and e.g. speedup_vs_torch_foreach), as the other's time over this one's; tflops or gbps and
    fraction_of_peak (of the measured matmul rate for the dtype, or of the copy bandwidth);
    extra_peak_memory_bytes when measured; first_call_s for fastcnn."""
    from .benchmarking import gbps, tflops

    times_ms = measured["median_ms"]
    records = []
    for implementation, milliseconds in times_ms.items():
        record = {"suite": suite, "op": case.op, "case": case.case, "dtype": case.dtype, "layout": case.layout,
                  "implementation": implementation, **case.labels, "median_ms": milliseconds}
        for other, their_ms in times_ms.items():
            if other != implementation:
                record[f"speedup_vs_{other}"] = their_ms / milliseconds
        if "flops" in case.work:
            record["tflops"] = tflops(case.work["flops"], milliseconds)
            peak = peaks["matmul_fp32_tflops" if case.dtype == "fp32" else "matmul_bf16_tflops"]
            record["fraction_of_peak"] = record["tflops"] / peak
        else:
            record["gbps"] = gbps(case.work["bytes"], milliseconds)
            record["fraction_of_peak"] = record["gbps"] / peaks["copy_gbps"]
        if implementation in measured.get("extra_peak_bytes", {}):
            record["extra_peak_memory_bytes"] = measured["extra_peak_bytes"][implementation]
        if implementation == "fastcnn" and measured.get("first_call_s") is not None:
            record["first_call_s"] = measured["first_call_s"]
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
            values = [r[name] for r in rows if r.get(name) is not None]
            row[name] = geometric_mean(values) if values else None
        fractions = sorted(r["fraction_of_peak"] for r in rows if r.get("fraction_of_peak") is not None)
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


def _replace_block(readme_path, begin_marker, end_marker, block):
    """Write ``block`` between the two markers of ``readme_path`` (a file a script renders)."""
    with open(readme_path, encoding="utf-8") as handle:
        text = handle.read()
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        raise ValueError(f"{readme_path} has no '{begin_marker}' ... '{end_marker}' block")
    text = text[:begin + len(begin_marker)] + "\n" + block + "\n" + text[end:]
    with open(readme_path, "w", encoding="utf-8") as handle:
        handle.write(text)


def render_readme_table(readme_path, results_folder):
    """Replace the text between the performance-table markers of ``readme_path`` with the table of
    the newest results file in ``results_folder``. Returns the results file used (or None)."""
    source = newest_results(results_folder)
    _replace_block(readme_path, TABLE_BEGIN, TABLE_END, performance_table(source))
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


# ----------------------------------------------------------------------------- fastcnn.estimate's zoo
ESTIMATES_BEGIN = "<!-- estimate-table:begin (written by scripts/render_perf_table.py) -->"
ESTIMATES_END = "<!-- estimate-table:end -->"
ZOO_FILE = "zoo.json"


def load_estimates(folder):
    """(environment, records) of bench/results/estimates/zoo.json (bench/estimate_zoo.py writes
    it), or (None, []) when there is none."""
    path = os.path.join(folder, ZOO_FILE)
    if not os.path.exists(path):
        return None, []
    with open(path, encoding="utf-8") as handle:
        zoo = json.load(handle)
    return zoo["environment"], zoo["records"]


def _moved(side):
    return side["totals"]["bytes_read"] + side["totals"]["bytes_written"]


def estimates_table(folder, batch=256):
    """The README's table of the zoo's modelled steps at ``batch``, one row per model and
    configuration, or a line saying there is none."""
    environment, records = load_estimates(folder)
    rows = [r for r in records if r["batch"] == batch]
    if not rows:
        return "**No estimate recorded**: run `python bench/estimate_zoo.py` (needs torchvision)."
    lines = [f"Modelled by `fastcnn.estimate` (fake tensors, no GPU; torch {environment['torch']}, torchvision "
             f"{environment['torchvision']}, {environment['date'][:10]}): one training step with SGD at batch {batch}, "
             f"224x224, fastcnn-converted beside eager. Eager's ATen ops count one read of each input and one "
             f"write of each output where their passes are not known: a lower bound that favours eager. Step "
             f"times are roofline lower bounds on an H100 ({records[0]['machines']['H100']['source']} peaks), "
             f"not measurements.",
             "",
             "| model | dtype, layout | peak memory GiB, fastcnn / eager | GB moved, fastcnn / eager | launches, "
             "fastcnn / eager | H100 step lower bound ms, fastcnn / eager |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ours, theirs = r["fastcnn"], r["eager"]
        times = ours["modelled_step_time_s"]["H100"], theirs["modelled_step_time_s"]["H100"]
        lines.append(
            f"| {r['model']} | {r['dtype']} {r['layout']} "
            f"| {ours['peak_bytes'] / 2**30:.2f} / {theirs['peak_bytes'] / 2**30:.2f} "
            f"(**{ours['peak_bytes'] / theirs['peak_bytes']:.2f}**) "
            f"| {_moved(ours) / 1e9:.1f} / {_moved(theirs) / 1e9:.1f} (**{_moved(ours) / _moved(theirs):.2f}**) "
            f"| {ours['totals']['launches']} / {theirs['totals']['launches']} "
            f"| {1e3 * times[0]:.1f} / {1e3 * times[1]:.1f} (**{times[1] / times[0]:.2f}x**) |")
    return "\n".join(lines)


def render_readme_estimates(readme_path, folder):
    """Replace the text between the estimate-table markers of ``readme_path`` with
    ``estimates_table(folder)``. Returns whether estimates were found."""
    _replace_block(readme_path, ESTIMATES_BEGIN, ESTIMATES_END, estimates_table(folder))
    return bool(load_estimates(folder)[1])


def write_estimate_charts(records, folder):
    """One PNG per (dtype and layout, batch): per model, the peak memory and the bytes moved per
    op family, fastcnn beside eager. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    configurations = sorted({(r["dtype"], r["layout"], r["batch"]) for r in records})
    for dtype, layout, batch in configurations:
        rows = [r for r in records if (r["dtype"], r["layout"], r["batch"]) == (dtype, layout, batch)]
        models = [r["model"] for r in rows]
        families = sorted({family for r in rows for side in ("fastcnn", "eager") for family in r[side]["by_family"]},
                          key=lambda f: -sum(_family_bytes(r[side], f) for r in rows for side in ("fastcnn", "eager")))
        figure, (memory_axes, bytes_axes) = plt.subplots(1, 2, figsize=(15, 5), width_ratios=(2, 3))
        positions = range(len(models))
        for offset, side in ((-0.2, "fastcnn"), (0.2, "eager")):
            memory_axes.bar([p + offset for p in positions], [r[side]["peak_bytes"] / 2**30 for r in rows], width=0.4,
                            label=side)
            bottoms = [0.0] * len(rows)
            for index, family in enumerate(families):
                heights = [_family_bytes(r[side], family) / 1e9 for r in rows]
                bytes_axes.bar([p + offset for p in positions], heights, width=0.4, bottom=bottoms,
                               color=plt.cm.tab20(index % 20), edgecolor="black" if side == "fastcnn" else "white",
                               linewidth=0.3, label=family if side == "fastcnn" else None)
                bottoms = [b + h for b, h in zip(bottoms, heights)]
        memory_axes.set(xticks=list(positions), ylabel="GiB", title="peak memory (left bar fastcnn, right eager)")
        bytes_axes.set(xticks=list(positions), ylabel="GB read + written",
                       title="bytes moved per op family (left bar fastcnn, right eager)")
        for axes in (memory_axes, bytes_axes):
            axes.set_xticklabels(models, rotation=30, ha="right")
        memory_axes.legend()
        bytes_axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="op family")
        figure.suptitle(f"fastcnn.estimate, MODELLED (fake tensors, no GPU): one training step, batch {batch}, "
                        f"{dtype} {layout}")
        figure.tight_layout()
        paths.append(os.path.join(folder, f"zoo-{dtype}-{layout}-batch{batch}.png"))
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths


def _family_bytes(side, family):
    totals = side["by_family"].get(family)
    return totals["bytes_read"] + totals["bytes_written"] if totals else 0
