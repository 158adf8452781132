#!/usr/bin/env python3
"""Static (no-GPU) performance check of fastcnn's Triton kernels for an NVIDIA target (default sm_90a, H100).

Usage, from the repository root
-------------------------------
    # the committed report (every scenario, every config; about 10 minutes on 2 cores):
    python scripts/static_gpu_check.py . --check --json bench/static/sm90a.json --output bench/static/sm90a.md

    # CI's representative subset (bf16 and fp32; a few minutes), failing on what is never acceptable:
    python scripts/static_gpu_check.py . --quick --check

    # several Triton installations, one combined report (each runs in its own process):
    python scripts/static_gpu_check.py . --python /tmp/tri36/bin/python --python .venv/bin/python

``--check`` exits with status 1 when any compile fails, any configuration the autotuner may pick
(after the kernels' own pruning) or any fixed launch cannot launch on an H100 (shared memory or
registers beyond an SM's) or spills registers, or when a memory-bound kernel (each case module's
``MEMORY_BOUND_KERNELS``) launches fewer programs than the H100 has SMs on a scenario large enough
to fill it. Everything else is reported, not failed.

How it works
------------
1. Loads ``<project>/kernels`` as a stand-alone package (nothing needs to be installed; the
   kernels only import torch, triton, numpy and each other) with TRITON_INTERPRET unset, and the
   project's ``fastcnn.cases`` from its source.
2. Calls the project's own launch helpers (``conv2d.forward``, ``batch_norm.fold``, ...) on CPU
   tensors of representative shapes and layouts (each op's scenarios, in fastcnn/cases), with ``JITFunction.run`` and
   ``Autotuner.run`` patched to *record* each launch instead of running it (and the SM count
   pinned to an H100's 132). So the kernels, arguments, constexprs, grids and autotune config lists
   are exactly what the code would launch on a GPU.
3. For each recorded launch and each config the GPU path would try (every autotune Config, or the
   launch's own num_warps / num_stages), computes Triton's launch-time specialization with
   Triton's own binder (integers equal to 1 become constants, 16-divisible integers and 16-byte
   aligned pointers get tt.divisibility=16) and compiles with ``triton.compile`` for
   ``GPUTarget("cuda", <arch>, 32)``, each compile in a forked child (crash isolation).
4. Reads the TTGIR (MMA kind, shared-memory multi-buffering), the PTX (wgmma / mma.sync / FMA,
   cp.async / TMA, global load/store widths, 64-bit mul/div/rem inside loops), ``ptxas -v`` (run
   on the PTX with the ptxas that Triton itself picks for the arch: registers, spills) and the
   SASS of Triton's cubin via cuobjdump (HGMMA/HMMA/FFMA, instructions in the main loop).
5. Derives the theoretical occupancy (H100: 65536 regs, 228 KB smem, 64 warps, 32 CTAs per SM;
   1 KB smem reserved per CTA) and, for the GEMM kernels, the ratio of the main loop's issue
   cycles (SASS instructions x warps per scheduler) to its tensor-core cycles at peak
   (dense FLOP/clk/SM: 4096 bf16/fp16, 2048 tf32, 256 fp32 FFMA). A ratio above ~1 means the
   loop cannot keep the tensor cores busy whatever the memory system does.

The scenarios are each op's ``static_launches(kernel_module, options)`` in
``fastcnn/cases/<op>.py`` (found by op, as the profiler finds its cases): the one place that knows
the launch helpers' signatures. If a later version of the project changes one, that scenario is
reported as failed and the rest still run.
"""
import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the static_check package beside this file

from static_check.analysis import H100  # noqa: E402
from static_check.jobs import make_jobs, run_jobs  # noqa: E402
from static_check.recording import load_kernels, memory_bound_kernels, pin_sm_count, recording, scenarios  # noqa: E402
from static_check.report import compare, render, violations  # noqa: E402


def lean(jobs):
    """The compile variants, and the first launch of each kernel that no variant launches."""
    is_variant = lambda job: any(name.startswith("variant ") for name in job.scenario.split("; "))  # noqa: E731
    kernel = lambda job: (job.fn.__module__, job.kernel)  # noqa: E731  (names repeat across kernel files)
    covered = {kernel(job) for job in jobs if is_variant(job)}
    kept, first = [], set()
    for job in jobs:
        if is_variant(job) or (kernel(job) not in covered and kernel(job) not in first):
            kept.append(job)
            first.add(kernel(job))
    return kept


def collect(options):
    """Run in the interpreter that has the Triton to audit; returns the JSON-able run record."""
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning
    if options.cache_dir:
        os.environ["TRITON_CACHE_DIR"] = options.cache_dir
    import torch
    import triton
    load_kernels(options.project)
    pin_sm_count(H100["sms"])
    launches, scenario_errors = [], []
    for name, run in scenarios(options):
        if options.only and not re.search(options.only, name):
            continue
        try:
            with recording(launches, name):
                run()
        except Exception as error:  # a launch helper whose signature changed, say
            scenario_errors.append(f"{name}: {type(error).__name__}: {error}")
    jobs, target = make_jobs(launches, options.arch, options.ptx_only)
    if options.kernel:
        jobs = [j for j in jobs if re.search(options.kernel, j.kernel)]
    if options.lean:
        jobs = lean(jobs)
    print(f"Triton {triton.__version__}: {len(launches)} launches recorded, {len(jobs)} distinct compiles",
          file=sys.stderr)
    results = run_jobs(jobs, target, options.jobs, options.timeout, options.ptx_only, sass=options.sass)
    commit = subprocess.run(["git", "-C", options.project, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    ptxas = next((r.get("ptxas") for r in results if r and r.get("ptxas")), "?")
    return dict(triton=triton.__version__, torch=torch.__version__, python=sys.executable, arch=options.arch,
                project=os.path.abspath(options.project), commit=commit, ptxas=ptxas,
                scenario_errors=scenario_errors,
                jobs=[dict(kernel=j.kernel, module=j.fn.__module__.rsplit(".", 1)[-1], scenario=j.scenario,
                           config=j.config, dtype=j.dtype, constexprs=j.named,
                           num_warps=j.num_warps, programs=j.programs, autotuned=j.autotuned,
                           signature=j.signature) for j in jobs],
                results=results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project", help="path of the fastcnn checkout (the folder holding kernels/)")
    parser.add_argument("--python", action="append", default=[],
                        help="run the collection under this interpreter (repeatable: one report section per "
                             "Triton); default: the current interpreter")
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90 -> sm_90a)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compiles")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per compile")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32", help="element dtypes of the memory-bound scenarios")
    parser.add_argument("--layouts", default="nchw,channels_last")
    parser.add_argument("--no-conv1x1", dest="conv1x1", action="store_false", help="skip the 1x1 conv scenario")
    parser.add_argument("--no-fp32-ieee", dest="fp32_ieee", action="store_false",
                        help="skip conv in fp32 with TF32 disabled (DOT_PRECISION='ieee')")
    parser.add_argument("--only", help="regex on scenario names")
    parser.add_argument("--kernel", help="regex on kernel names")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/static_gpu_report/triton"),
                        help="TRITON_CACHE_DIR for the compiles ('' for Triton's default)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--output", help="write the markdown report here instead of standard output")
    parser.add_argument("--quick", action="store_true",
                        help="CI's representative subset: bf16 and fp32 only, no fp32 with TF32 disabled")
    parser.add_argument("--variants", action="store_true",
                        help="also each op's compile_variants (int64 indexing, unaligned tensors, every kind and dtype)")
    parser.add_argument("--ptx-only", action="store_true",
                        help="the compile check (tests/test_compile_for_gpu.py): each launch's first configuration, "
                             "compiled and its PTX read; no ptxas -v, no SASS")
    parser.add_argument("--no-sass", dest="sass", action="store_false",
                        help="skip each compile's SASS (cuobjdump: main-loop instructions, issue:MMA, instr/16B); "
                             "--check needs none of it (CI's quick check)")
    parser.add_argument("--lean", action="store_true",
                        help="with --variants: only the compile variants and the first launch of each kernel no "
                             "variant launches (the second Triton's compile check, scripts/triton_version_check.sh)")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 on what is never acceptable (see the module's docstring)")
    parser.add_argument("--render", metavar="JSON", help="only render a report from a --json file written earlier")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="only print a before/after table of two --json files (their first runs)")
    parser.add_argument("--collect-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.quick:
        options.dtypes, options.fp32_ieee = "bf16,fp32", False
    options.dtypes = options.dtypes.split(",")
    options.layouts = options.layouts.split(",")

    if options.compare:
        runs = []
        for path in options.compare:
            with open(path) as f:
                loaded = json.load(f)
            runs.append(loaded[0] if isinstance(loaded, list) else loaded)
        compare(*runs, sys.stdout)
        return
    if options.render:
        with open(options.render) as f:
            runs = json.load(f)
        runs = runs if isinstance(runs, list) else [runs]
    elif options.python:
        runs = []
        for python in options.python:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                path = tmp.name
            argv = [python, os.path.abspath(__file__), options.project, "--collect-only", "--json", path,
                    "--arch", str(options.arch), "--jobs", str(options.jobs), "--timeout", str(options.timeout),
                    "--dtypes", ",".join(options.dtypes), "--layouts", ",".join(options.layouts),
                    "--cache-dir", options.cache_dir]
            argv += [] if options.conv1x1 else ["--no-conv1x1"]
            argv += [] if options.fp32_ieee else ["--no-fp32-ieee"]
            argv += [] if options.sass else ["--no-sass"]
            argv += ["--lean"] if options.lean else []
            argv += ["--only", options.only] if options.only else []
            argv += ["--kernel", options.kernel] if options.kernel else []
            proc = subprocess.run(argv)
            if proc.returncode != 0:
                raise SystemExit(f"collection under {python} failed (exit {proc.returncode})")
            with open(path) as f:
                runs.append(json.load(f))
            os.unlink(path)
    else:
        runs = [collect(options)]
        if options.collect_only:
            with open(options.json, "w") as f:
                json.dump(runs[0], f, default=str)
            return
    if options.json and not options.render:
        with open(options.json, "w") as f:
            json.dump(runs, f, default=str)
    for run in runs:
        for error in run.get("scenario_errors", []):
            print(f"scenario failed under Triton {run['triton']}: {error}", file=sys.stderr)
    memory_bound = memory_bound_kernels(options.project)
    found = [line for run in runs for line in violations(run, memory_bound)]
    with (open(options.output, "w", encoding="utf-8") if options.output else contextlib.nullcontext(sys.stdout)) as out:
        render(runs, out)
        for run in runs:
            if run.get("scenario_errors"):
                print(f"\n### Scenarios that could not be recorded (Triton {run['triton']})\n", file=out)
                for error in run["scenario_errors"]:
                    print(f"- {error}", file=out)
        print(f"\n## Check: {len(found)} violation(s)\n", file=out)
        for line in found:
            print(f"- {line}", file=out)
    for line in found:
        print(f"VIOLATION {line}", file=sys.stderr)
    print(f"static check: {sum(len(run['jobs']) for run in runs)} compiles, {len(found)} violation(s)", file=sys.stderr)
    if options.check and found:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
