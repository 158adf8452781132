"""Compile jobs: each recorded launch and each configuration the GPU path would try, specialised
as Triton specialises at launch, compiled for the target in a forked child and analysed."""
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback

from .analysis import analyse_ptx, analyse_sass, analyse_ttgir, occupancy, run_ptxas


def _jsonable(value):
    if type(value).__name__ == "constexpr":  # a module-level tl.constexpr passed as an argument
        value = value.value
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


@dataclasses.dataclass
class Job:
    key: str
    kernel: str
    scenario: str
    config: str
    fn: object
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    num_warps: int
    programs: int
    dtype: str
    autotuned: bool
    named: dict  # the constexprs by parameter name (ALIGNED, WIDE_INDEX, ...)


def _dtype_label(signature, constexprs_named):
    """The element type of the first pointer argument, plus the dot precision when there is one."""
    dtype = next((v[1:] for v in signature.values() if isinstance(v, str) and v.startswith("*")), "?")
    for name in ("ELEMENT_TYPE",):
        if name in constexprs_named:
            dtype = str(constexprs_named[name]).replace("float32", "fp32").replace("bfloat16", "bf16").replace(
                "float16", "fp16")
    precision = constexprs_named.get("DOT_PRECISION")
    if precision is not None and dtype == "fp32":
        dtype += f"/{precision}"
    return dtype


def _config_label(fn, config, named, num_warps, num_stages):
    blocks = {k: v for k, v in named.items() if re.fullmatch(r"(BLOCK|ROWS|CHUNK)\w*|GROUP_M|\w*BLOCK", k)}
    if all(k in blocks for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")):
        text = f"{blocks['BLOCK_M']}x{blocks['BLOCK_N']}x{blocks['BLOCK_K']}"
    else:
        text = " ".join(f"{k}={v}" for k, v in blocks.items() if k != "GROUP_M")
    return f"{text} w{num_warps} s{num_stages}"


def make_jobs(launches, arch, one_config=False):
    """Distinct compiles of ``launches`` for ``arch``: every configuration each launch may take
    (autotune configs after pruning), or its first only with ``one_config``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    jobs, seen = [], {}
    for launch in launches:
        fn = launch.fn
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        for config in launch.configs[:1] if one_config else launch.configs:
            kwargs = dict(launch.kwargs, **config)
            kwargs.setdefault("debug", False)
            try:
                from triton import knobs
                kwargs.setdefault("instrumentation_mode", knobs.compilation.instrumentation_mode)
            except Exception:
                pass
            bound, specialization, rest = binder(*launch.args, **kwargs)
            options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, rest)
            names = [p.name for p in fn.params]
            named = {names[path[0]]: value for path, value in constexprs.items() if len(path) == 1}
            num_warps, num_stages = options.num_warps, options.num_stages
            grid = launch.grid
            if callable(grid):
                grid = grid(dict(bound))
            programs = math.prod(int(g) for g in grid)
            key = json.dumps([fn.__name__, signature, sorted((str(k), _jsonable(v)) for k, v in constexprs.items()),
                              sorted((str(k), str(v)) for k, v in attrs.items()),
                              sorted((k, _jsonable(v)) for k, v in options.__dict__.items())])
            label = _config_label(fn, config, named, num_warps, num_stages)
            if key in seen:
                seen[key].scenario += f"; {launch.scenario}"
                continue
            job = Job(key, fn.__name__, launch.scenario, label, fn, signature, constexprs, attrs, options.__dict__,
                      num_warps, programs, _dtype_label(signature, named), launch.autotuned,
                      {name: _jsonable(value) for name, value in named.items()})
            seen[key] = job
            jobs.append(job)
    return jobs, target




def compile_and_analyse(job, target, workdir, ptx_only=False, sass=True):
    """Compile ``job`` and read what the compiler emitted; with ``ptx_only`` the PTX alone (no
    ptxas -v, no SASS): what the compile harness checks; without ``sass`` all but the SASS."""
    import triton
    from triton.compiler import ASTSource
    t0 = time.time()
    compiled = triton.compile(ASTSource(job.fn, job.signature, job.constexprs, job.attrs), target=target,
                              options=dict(job.options))
    res = dict(compile_s=round(time.time() - t0, 1))
    asm = compiled.asm
    md = compiled.metadata
    res["shared"] = getattr(md, "shared", None)
    res["num_warps"] = getattr(md, "num_warps", job.num_warps)
    res["num_stages"] = getattr(md, "num_stages", None)
    res.update(analyse_ptx(asm["ptx"]))
    if ptx_only:
        return res
    res.update(analyse_ttgir(asm["ttgir"]))
    res.update(run_ptxas(asm["ptx"], target.arch, workdir))
    if sass and "cubin" in asm:
        res.update(analyse_sass(asm["cubin"], workdir))
    res["occupancy"] = occupancy(res.get("regs"), res.get("shared"), res["num_warps"])
    return res


def run_jobs(jobs, target, parallel, timeout, ptx_only=False, sass=True):
    """Each compile in a forked child: a crash (MLIR abort, ptxas SIGSEGV) becomes a reported failure."""
    results = [None] * len(jobs)
    pending = list(range(len(jobs)))
    running = {}
    root = tempfile.mkdtemp(prefix="static_gpu_report_")
    while pending or running:
        while pending and len(running) < parallel:
            index = pending.pop(0)
            workdir = os.path.join(root, str(index))
            os.makedirs(workdir)
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                try:
                    log = os.open(os.path.join(workdir, "log.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    sys.stdout = os.fdopen(1, "w", buffering=1)
                    sys.stderr = os.fdopen(2, "w", buffering=1)
                    res = compile_and_analyse(jobs[index], target, workdir, ptx_only, sass)
                    with open(os.path.join(workdir, "result.json"), "w") as f:
                        json.dump(res, f, default=str)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            running[pid] = (index, workdir, time.time())
        done_pid, status = os.waitpid(-1, os.WNOHANG)
        if done_pid == 0:
            time.sleep(0.05)
            for pid, (index, workdir, started) in list(running.items()):
                if time.time() - started > timeout:
                    os.kill(pid, 9)
            continue
        index, workdir, started = running.pop(done_pid)
        result_path = os.path.join(workdir, "result.json")
        if os.path.exists(result_path):
            with open(result_path) as f:
                results[index] = json.load(f)
        else:
            with open(os.path.join(workdir, "log.txt"), errors="replace") as f:
                log = f.read()
            results[index] = dict(error=_error_summary(log, status), error_log=log[-6000:])
        print(f"[{sum(r is not None for r in results)}/{len(jobs)}] {jobs[index].kernel} {jobs[index].config} "
              f"{jobs[index].dtype}: {'FAILED' if 'error' in results[index] else 'ok'} "
              f"({time.time() - started:.1f}s)", file=sys.stderr)
    return results


def _error_summary(log, status):
    lines = [l for l in log.strip().splitlines() if l.strip()]
    interesting = [l for l in lines if re.search(r"error|Error|assert|Assertion|fatal|Exception", l)]
    tail = interesting[-3:] if interesting else lines[-3:]
    signal_note = f" (killed by signal {os.WTERMSIG(status)})" if os.WIFSIGNALED(status) else ""
    return (" | ".join(l.strip() for l in tail) + signal_note)[:1500]
