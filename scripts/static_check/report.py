"""The report (per-run tables, per-kernel summaries, cross-version and before/after comparisons)
and the check: what is never acceptable."""
import math
import re

from .analysis import H100, HBM_BYTES_PER_CLK_PER_SM, PEAK_FLOP_PER_CLK


def hot_load_widths(r):
    """Widths of the global loads in loops (the streamed data) when there are any, else of all loads."""
    loop = {int(w): n for w, n in (r.get("loop_ld_global") or {}).items()}
    if not loop and not r.get("loop_cp_async"):
        loop = {int(w): n for w, n in (r.get("ld_global") or {}).items()}
    for w, n in (r.get("cp_async") or {}).items():
        loop[int(w)] = loop.get(int(w), 0) + n
    return loop


def vectorized(r):
    widths = hot_load_widths(r)
    if not widths:
        return "-"
    top = max(widths)
    return "yes (128b)" if top >= 128 else ("partly (64b)" if top >= 64 else f"no ({top}b)")


def family(kernel):
    if kernel in ("_conv2d_forward_kernel", "_conv2d_input_grad_kernel", "_conv2d_weight_grad_kernel",
                  "_linear_forward_kernel", "_linear_input_grad_kernel", "_linear_weight_grad_kernel"):
        return "gemm"
    return "memory"


def _hist(h):
    if not h:
        return "-"
    return " ".join(f"{w}b×{n}" for w, n in sorted(((int(w), n) for w, n in h.items()), reverse=True))


def mma_kind(r):
    if r.get("wgmma"):
        return "wgmma " + ",".join(s.split(".")[0] for s in r["wgmma_shapes"])
    if r.get("mma_sync"):
        return "mma.sync " + ",".join(s.split(".")[0] for s in r["mma_shapes"])
    if r.get("dot"):
        return "FMA (no tensor cores)"
    return "-"


def issue_ratio(r, job):
    loop = r.get("sass_loop")
    if not loop:
        return None
    warps = r.get("num_warps") or job["num_warps"]
    if loop["hgmma"]:
        flops = 0
        for shape in loop["mma_shapes"]:
            m = re.match(r"HGMMA\.(\d+)x(\d+)x(\d+)", shape)
            if m:
                per = 2 * int(m.group(1)) * int(m.group(2)) * int(m.group(3))
                flops = per * loop["hgmma"] * (warps // 4)
                break
    elif loop["hmma"]:
        # SASS names mma.sync shapes m16n8k16 "HMMA.16816", m16n8k8 "HMMA.1688".
        dims = next((re.match(r"HMMA\.168(\d+)", s) for s in loop["mma_shapes"] if s.startswith("HMMA.168")), None)
        if not dims:
            return None
        flops = 2 * 16 * 8 * int(dims.group(1)) * loop["hmma"] * warps
    elif loop["ffma"]:
        flops = 2 * 32 * loop["ffma"] * warps
    else:
        return None
    if not flops:
        return None
    dtype = job["dtype"]
    if loop["ffma"] and not (loop["hgmma"] or loop["hmma"]):
        peak = PEAK_FLOP_PER_CLK["fp32"]
    elif dtype.startswith("fp32"):
        peak = PEAK_FLOP_PER_CLK["tf32"]
    else:
        peak = PEAK_FLOP_PER_CLK.get(dtype, 4096)
    mma_cycles = flops / peak
    issue_cycles = loop["instructions"] * math.ceil(warps / 4)
    return issue_cycles / mma_cycles


def flags_for(job, r):
    flags = []
    if "error" in r:
        return ["COMPILE FAILED"]
    if (r.get("spill_st") or 0) + (r.get("spill_ld") or 0):
        flags.append(f"spills {r['spill_st']}B/{r['spill_ld']}B")
    occ = r.get("occupancy")
    if occ and occ["ctas"] == 0:
        flags.append(f"does not fit on an SM (smem {r.get('shared', 0) / 1024:.0f} KB)")
    elif occ and occ["fraction"] < 0.125:
        flags.append(f"occupancy {occ['warps']} warps")
    if family(job["kernel"]) == "gemm":
        if not r.get("wgmma"):
            flags.append("no wgmma" + (" (mma.sync)" if r.get("mma_sync") else " (FMA)"))
        if not r.get("cp_async") and not r.get("tma"):
            flags.append("no async copy")
        ratio = issue_ratio(r, job)
        if ratio is not None and ratio > 1.0:
            flags.append(f"issue-bound x{ratio:.1f}")
    big_grid = job["programs"] >= H100["sms"]
    widths = set(hot_load_widths(r))
    if big_grid and widths and max(widths) < 64:
        flags.append("scalar global loads")
    stw = {int(w) for w in r.get("st_global", {})}
    if big_grid and stw and max(stw) < 64:
        flags.append("scalar global stores")
    if r.get("loop_i64_muldiv") and family(job["kernel"]) == "gemm":
        flags.append(f"i64 mul in loop ({r['loop_i64_muldiv']})")
    if r.get("loop_i64_divrem"):
        fast = " with 32-bit fast path" if r.get("i64_div_fast_path") else ""
        flags.append(f"i64 div/rem in loop ({r['loop_i64_divrem']}{fast})")
    loop = r.get("sass_loop") or {}
    if loop.get("calls"):
        sizes = loop.get("called_instructions") or []
        size = f" to {'/'.join(str(n) for n in sorted(set(sizes)))}-instr subroutine" if sizes else ""
        flags.append(f"CALL in loop ({loop['calls']}x{size})")
    if job["programs"] < H100["sms"]:
        flags.append(f"{job['programs']} programs < {H100['sms']} SMs")
    return flags


GEMM_COLUMNS = ("kernel", "scenario", "dtype", "config", "tensor-core instr", "operand staging", "regs",
                "spills st/ld B", "smem KB", "CTAs/SM (limit)", "occupancy", "global ld/st widths",
                "main loop SASS instr", "issue:MMA", "programs", "flags")
OTHER_COLUMNS = ("kernel", "scenario", "dtype", "config", "tensor-core instr", "regs", "spills st/ld B", "smem KB",
                 "CTAs/SM (limit)", "occupancy", "global ld widths", "global st widths", "vectorized ld",
                 "loop: i64 mul / div", "instr/16B (issue ceiling, % HBM)", "programs", "flags")


def _table(title, columns, rows, gemm, out):
    """A markdown table of ``rows`` (job, result) under ``title``; nothing when there are none."""
    if not rows:
        return
    print(title, file=out)
    print("| " + " | ".join(columns) + " |", file=out)
    print("|" + "---|" * len(columns), file=out)
    for j, r in rows:
        print(_row(j, r, gemm=gemm), file=out)


def render(runs, out):
    """``runs``: list of dicts {triton, torch, arch, jobs: [...], results: [...]}."""
    print("# Static GPU report: fastcnn Triton kernels\n", file=out)
    for run in runs:
        print(f"- Triton {run['triton']} / torch {run['torch']} ({run['python']}), target "
              f"sm_{run['arch']}a, ptxas: {run.get('ptxas', '?')}; {len(run['jobs'])} compiles, "
              f"{sum('error' in r for r in run['results'])} failed, project {run['project']}"
              f" @ {run.get('commit', '?')}", file=out)
    print("\nOccupancy: H100 SXM limits (65536 regs, 228 KB smem incl. 1 KB/CTA reserved, 64 warps, "
          "32 CTAs per SM). issue:MMA = main-loop SASS instructions x ceil(warps/4) / tensor-core cycles at "
          "dense peak (>1: the loop cannot feed the tensor cores). instr/16B = SASS instructions per 16 bytes "
          "of global traffic in the main loop (or whole kernel when loop-free). 'programs' = grid size for the "
          "scenario shape.\n", file=out)
    for run in runs:
        print(f"\n## Triton {run['triton']}\n", file=out)
        rows = list(zip(run["jobs"], run["results"]))
        summarise_run(rows, out)
        gemm = [(j, r) for j, r in rows if family(j["kernel"]) == "gemm"]
        other = [(j, r) for j, r in rows if family(j["kernel"]) != "gemm"]
        _table("### Implicit-GEMM conv kernels (every autotune config)\n", GEMM_COLUMNS, gemm, True, out)
        _table("\n### Memory-bound / direct kernels\n", OTHER_COLUMNS, other, False, out)
        failures = [(j, r) for j, r in rows if "error" in r]
        if failures:
            print(f"\n### Compile failures under Triton {run['triton']}\n", file=out)
            for j, r in failures:
                print(f"- `{j['kernel']}` {j['dtype']} {j['config']} ({j['scenario']}): `{r['error']}`", file=out)
    if len(runs) > 1:
        print("\n## Cross-version comparison (same kernel + specialisation)\n", file=out)
        print("| kernel | dtype | config | scenario | " + " | ".join(
            f"{run['triton']}: instr / regs / spills / smem KB / occ" for run in runs) + " |", file=out)
        print("|" + "---|" * (4 + len(runs)), file=out)
        index = [{_compare_key(j): r for j, r in zip(run["jobs"], run["results"])} for run in runs]
        keys = []
        for run in runs:
            for j in run["jobs"]:
                k = _compare_key(j)
                if k not in keys:
                    keys.append(k)
        for k in keys:
            cells = []
            for idx in index:
                r = idx.get(k)
                if r is None:
                    cells.append("not compiled")
                elif "error" in r:
                    cells.append("**FAILED**")
                else:
                    occ = r.get("occupancy") or {}
                    cells.append(f"{mma_kind(r)} / {r.get('regs')} / {r.get('spill_st')}/{r.get('spill_ld')} / "
                                 f"{(r.get('shared') or 0) / 1024:.0f} / {occ.get('fraction', 0):.0%}")
            print(f"| {k[0].strip('_')} | {k[1]} | {k[2]} | {k[3][:60]} | " + " | ".join(cells) + " |", file=out)


def _range(values, fmt="{}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def summarise_run(rows, out):
    """One line per (kernel, scenario): ranges over the configs the GPU path would try."""
    groups = {}
    for j, r in rows:
        groups.setdefault((j["kernel"], j["scenario"].split(";")[0]), []).append((j, r))
    print("### Summary per kernel and scenario (ranges over the configs tried)\n", file=out)
    print("| kernel | scenario | dtype | configs | tensor-core instr | staging | regs | max spills st/ld B | smem KB "
          "| occupancy | widest hot-loop ld / any st | issue:MMA or instr/16B | flags (configs) |", file=out)
    print("|" + "---|" * 13, file=out)
    for (kernel, scenario), items in groups.items():
        ok = [(j, r) for j, r in items if "error" not in r]
        failed = len(items) - len(ok)
        j0 = items[0][0]
        name = kernel.strip("_").replace("_kernel", "")
        if not ok:
            print(f"| {name} | {scenario} | {j0['dtype']} | {len(items)} | **all failed** |" + " |" * 8, file=out)
            continue
        kinds = sorted({mma_kind(r) for _, r in ok})
        staging = sorted({("cp.async " + "/".join(f"{w}b" for w in sorted({int(w) for w in r["cp_async"]}, reverse=True))
                           + (f" x{max(r['buffers'])} buf" if r.get("buffers") else "")) if r.get("cp_async") else
                          ("TMA" if r.get("tma") else "regs") for _, r in ok})
        regs = _range([r.get("regs") for _, r in ok])
        spill = max(((r.get("spill_st") or 0, r.get("spill_ld") or 0) for _, r in ok), key=sum)
        smem = _range([(r.get("shared") or 0) / 1024 for _, r in ok], "{:.0f}")
        occ = _range([(r.get("occupancy") or {}).get("fraction") for _, r in ok], "{:.0%}")
        ld = max([w for _, r in ok for w in hot_load_widths(r)] or [0])
        st = max([int(w) for _, r in ok for w in r.get("st_global", {})] or [0])
        if family(kernel) == "gemm":
            metric = _range([issue_ratio(r, j) for j, r in ok], "{:.2f}")
        else:
            vals = []
            for _, r in ok:
                region = r.get("sass_loop") or r.get("sass_total") or {}
                if region.get("global_bytes"):
                    vals.append(region["instructions"] / (region["global_bytes"] / 16))
            metric = _range(vals, "{:.0f}") + " instr/16B" if vals else "-"
        counts = {}
        for j, r in ok:
            for flag in flags_for(j, r):
                flag = re.sub(r"\d+(\.\d+)?", "N", flag) if flag.startswith(("issue-bound", "spills", "occupancy")) else flag
                counts[flag] = counts.get(flag, 0) + 1
        flags = "; ".join(f"{k} ({v}/{len(ok)})" for k, v in counts.items()) or "-"
        if failed:
            flags = f"**{failed} FAILED**; " + flags
        print(f"| {name} | {scenario} | {j0['dtype']} | {len(items)} | {', '.join(kinds)} | {', '.join(staging)} "
              f"| {regs} | {spill[0]}/{spill[1]} | {smem} | {occ} | {ld}b / {st}b | {metric} | {flags} |", file=out)
    print("", file=out)


def _brief(items):
    """One cell of the before/after table for a (kernel, scenario, dtype) group of compiles."""
    ok = [(j, r) for j, r in items if "error" not in r]
    if not ok:
        return "all failed"
    spill = max((r.get("spill_st") or 0) + (r.get("spill_ld") or 0) for _, r in ok)
    spilling = sum(1 for _, r in ok if (r.get("spill_st") or 0) + (r.get("spill_ld") or 0))
    no_fit = sum(1 for _, r in ok if (r.get("occupancy") or {}).get("ctas") == 0)
    ld = max([w for _, r in ok for w in hot_load_widths(r)] or [0])
    st = max([int(w) for _, r in ok for w in r.get("st_global", {})] or [0])
    async_copy = "cp.async" if all(r.get("cp_async") or r.get("tma") for _, r in ok) else (
        "some cp.async" if any(r.get("cp_async") for _, r in ok) else "no cp.async")
    programs = _range([j["programs"] for j, _ in ok])
    if family(ok[0][0]["kernel"]) == "gemm":
        metric = "issue:MMA " + _range([issue_ratio(r, j) for j, r in ok], "{:.2f}")
        extra = f"; {async_copy}"
    else:
        values = []
        for _, r in ok:
            region = r.get("sass_loop") or r.get("sass_total") or {}
            if region.get("global_bytes"):
                values.append(region["instructions"] / (region["global_bytes"] / 16))
        metric = _range(values, "{:.0f}") + " instr/16B"
        extra = ""
    return (f"{len(ok)} cfg; regs {_range([r.get('regs') for _, r in ok])}; spills {spilling} cfg (max {spill} B); "
            f"no fit {no_fit}; ld/st {ld}b/{st}b{extra}; {programs} programs; {metric}")


def compare(before, after, out):
    """A before/after table over the (kernel, scenario, dtype) groups of two runs."""
    def groups(run):
        found = {}
        for j, r in zip(run["jobs"], run["results"]):
            found.setdefault((j["kernel"].strip("_").replace("_kernel", ""), j["scenario"].split(";")[0], j["dtype"]),
                             []).append((j, r))
        return found
    old, new = groups(before), groups(after)
    print(f"## Before ({before.get('commit')}) and after ({after.get('commit')}), Triton {after['triton']}\n",
          file=out)
    print("| kernel | scenario | dtype | before | after |", file=out)
    print("|---|---|---|---|---|", file=out)
    for key in list(old) + [k for k in new if k not in old]:
        print(f"| {key[0]} | {key[1]} | {key[2]} | {_brief(old[key]) if key in old else 'not compiled'} | "
              f"{_brief(new[key]) if key in new else 'not compiled'} |", file=out)


def _compare_key(job):
    return (job["kernel"], job["dtype"], job["config"], job["scenario"].split(";")[0])


def _row(j, r, gemm):
    name = j["kernel"].strip("_").replace("_kernel", "")
    scen = j["scenario"].split(";")[0]
    more = j["scenario"].count(";")
    if more:
        scen += f" (+{more})"
    if "error" in r:
        cols = 16 if gemm else 17
        return f"| {name} | {scen} | {j['dtype']} | {j['config']} | **COMPILE FAILED** |" + " |" * (cols - 5) + \
            f" {r['error'][:200].replace('|', '/')} |"
    occ = r.get("occupancy") or {}
    occ_ctas = f"{occ.get('ctas')} ({occ.get('limiter')})" if occ else "?"
    occ_frac = f"{occ.get('fraction', 0):.0%}" if occ else "?"
    spills = f"{r.get('spill_st')}/{r.get('spill_ld')}"
    smem = f"{(r.get('shared') or 0) / 1024:.1f}"
    flags = "; ".join(flags_for(j, r)) or "-"
    loop = r.get("sass_loop") or {}
    if gemm:
        staging = []
        if r.get("cp_async"):
            staging.append("cp.async " + _hist(r["cp_async"]))
        if r.get("tma"):
            staging.append(f"TMA×{r['tma']}")
        if r.get("buffers"):
            staging.append("smem buffers " + "/".join(str(b) for b in r["buffers"]))
        if r.get("ldmatrix"):
            staging.append(f"ldmatrix×{r['ldmatrix']}")
        ratio = issue_ratio(r, j)
        return (f"| {name} | {scen} | {j['dtype']} | {j['config']} | {mma_kind(r)} | {'; '.join(staging) or 'none'} "
                f"| {r.get('regs')} | {spills} | {smem} | {occ_ctas} | {occ_frac} | ld {_hist(r.get('ld_global'))}; "
                f"st {_hist(r.get('st_global'))} | {loop.get('instructions', '-')} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} | {j['programs']} | {flags} |")
    vec = vectorized(r)
    region = loop if loop else (r.get("sass_total") or {})
    per16 = "-"
    if region.get("global_bytes"):
        x = region["instructions"] / (region["global_bytes"] / 16)
        # 4 schedulers x 1 warp-instruction/clk; a warp moves 32 x 16 B per x instructions.
        ceiling = min(1.0, (4 * 32 * 16 / x) / HBM_BYTES_PER_CLK_PER_SM)
        per16 = f"{x:.1f} ({ceiling:.0%})"
    return (f"| {name} | {scen} | {j['dtype']} | {j['config']} | {mma_kind(r)} | {r.get('regs')} | {spills} | {smem} "
            f"| {occ_ctas} | {occ_frac} | {_hist(r.get('ld_global'))} | {_hist(r.get('st_global'))} | {vec} | "
            f"{r.get('loop_i64_muldiv')} / {r.get('loop_i64_divrem')} | {per16} | {j['programs']} | {flags} |")




def violations(run, memory_bound):
    """What ``--check`` fails on, one line each: failed compiles and scenarios, configurations that
    cannot launch on an H100 or spill, and too-small grids of the memory-bound kernels the case
    modules name."""
    found = [f"Triton {run['triton']}: scenario not recorded: {error}" for error in run.get("scenario_errors", [])]
    for job, result in zip(run["jobs"], run["results"]):
        where = f"{job['kernel']} {job['dtype']} {job['config']} ({job['scenario'].split(';')[0]})"
        if "error" in result:
            found.append(f"compile failed: {where}: {result['error'][:300]}")
            continue
        occupancy_ = result.get("occupancy") or {}
        if occupancy_.get("ctas") == 0:
            found.append(f"cannot launch on an H100 ({(result.get('shared') or 0) / 1024:.0f} KB shared memory, "
                         f"{result.get('regs')} registers x {result.get('num_warps')} warps): {where}")
        spilled = (result.get("spill_st") or 0) + (result.get("spill_ld") or 0)
        if spilled:
            found.append(f"spills {result.get('spill_st')} B stored / {result.get('spill_ld')} B loaded: {where}")
        memory_bound_kernel = (job.get("module"), job["kernel"]) in memory_bound
        if memory_bound_kernel and not job["scenario"].startswith("variant ") and job["programs"] < H100["sms"]:
            found.append(f"{job['programs']} programs on {H100['sms']} SMs: {where}")
    return found
