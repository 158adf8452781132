"""Benchmark helpers shared by ``bench/``, the profiler and every op's benchmark cases: device
peaks, CUDA-event timing, the case record, random inputs, TFLOP/s and GB/s, and machine-written
result files. Each op's FLOP or byte formula lives in its op module (``fastcnn/ops``), its cases in
``fastcnn/cases``.

Timing: medians of CUDA-event intervals after warm-up, with L2 flushed (a 256 MiB write) before
each timed call so that small working sets are not flattered by cache residency.
Peaks: copy bandwidth is ``2 * bytes / time`` of a 1 GiB device-to-device ``copy_`` (read + write);
the matmul rate is ``2 * n**3 / time`` of an ``n = 8192`` matmul, in bf16 and in fp32 (TF32 as
the current ``torch.backends.cuda.matmul.allow_tf32`` says).
"""
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field

import torch

L2_FLUSH_BYTES = 256 * 2**20
# FASTCNN_BENCH_DRY_RUN=1: the benchmarks run on the CPU through Triton's interpreter, on tiny
# shapes, to prove they still run (scripts/gpu_check.sh --dry-run); their figures mean nothing.
DRY_RUN = os.environ.get("FASTCNN_BENCH_DRY_RUN") == "1"

# The profiler's and the op cases' names for dtypes and layouts.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
IMPLEMENTATIONS = ("fastcnn", "eager", "torch_compile")  # every case has these; some add baselines
# Batch sizes of the activation-sized ops' suites (batch norm, pooling).
ACTIVATION_BATCHES = (64, 256)


@dataclass
class BenchmarkCase:
    """One entry of the benchmark catalogue: every case module's ``profile_cases`` returns these,
    and both ``fastcnn-profile`` and ``bench/test_ops_bench.py`` run them (``measure_case``) and
    record them (``fastcnn.reporting.figures``), so the two tools time the same things alike.

    ``build(device)`` returns {implementation: zero-argument callable}: ``fastcnn`` and the
    baselines, at least IMPLEMENTATIONS' ``eager`` and ``torch_compile`` (an op may add more,
    such as Adam's ``torch_foreach``); each callable returns the tensor it computed (the output
    or a gradient), which the profiler's smoke check compares. ``work`` is {"flops": n} for a
    compute-bound op, {"bytes": n} (the least it must move) for a memory-bound one. ``labels``
    are copied into every record (conv2d's layer kind, say), for summaries that group by them.
    ``smoke_view``, when given, maps each result to what the smoke check compares (dropout: the
    kept elements' scale, as its masks are random on both sides)."""

    op: str
    case: str
    dtype: str
    layout: str
    work: dict
    build: object = field(repr=False)
    labels: dict = field(default_factory=dict)
    smoke_view: object = field(default=None, repr=False)


def random_input(shape, dtype, layout, device, generator):
    """Standard-normal values of dtype name ``dtype`` ('bf16', ...), 4-d tensors in ``layout``."""
    tensor = torch.randn(shape, device=device, generator=generator).to(DTYPES[dtype])
    return tensor.contiguous(memory_format=MEMORY_FORMATS[layout]) if tensor.dim() == 4 else tensor


def element_size(dtype):
    """Bytes per element of dtype name ``dtype``."""
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


def compiled(function):
    """``function`` under torch.compile, the baseline every case times beside eager."""
    return torch.compile(function, dynamic=False)


def training_step(function, input, extra=(), output_grad=torch.ones_like):
    """forward + backward of ``function(input, *extra)`` with the output gradient
    ``output_grad(out)`` (made once; ones by default); returns a callable that runs it and returns
    ``input.grad``."""
    grad = []

    def step():
        input.grad = None
        out = function(input, *extra)
        if not grad:
            grad.append(output_grad(out))
        out.backward(grad[0])
        return input.grad
    return step


def training_steps(fastcnn_function, torch_function, input, extra=(), output_grad=torch.ones_like):
    """{implementation: callable} of a case whose baselines are ``torch_function`` eager and under
    torch.compile: the forward + backward ``training_step`` of each, with the same output gradient."""
    return {"fastcnn": training_step(fastcnn_function, input, extra, output_grad),
            "eager": training_step(torch_function, input, extra, output_grad),
            "torch_compile": training_step(compiled(torch_function), input, extra, output_grad)}


def cuda_time_ms(fn, *, warmup=5, repeats=30, flush_l2=True):
    """Median milliseconds of ``fn()`` on the current CUDA stream."""
    for _ in range(warmup):
        fn()
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda") if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, end in zip(starts, ends):
        if flush is not None:
            flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in zip(starts, ends))


def measure_case(case, device="cuda"):
    """Time every implementation of ``case`` side by side on ``device``: {"median_ms": {name: ms},
    "first_call_s": fastcnn's first call (compile and autotune) in seconds, "extra_peak_bytes":
    {name: peak memory one call allocates beyond what was allocated before it}}."""
    callables = case.build(device)
    torch.cuda.synchronize()
    began = time.perf_counter()
    callables["fastcnn"]()
    torch.cuda.synchronize()
    first_call_s = time.perf_counter() - began
    extra_peak_bytes = {}
    for name, call in callables.items():
        call()  # warm (compiles torch.compile's graph) before the memory is read
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        extra_peak_bytes[name] = torch.cuda.max_memory_allocated() - before
    return {"median_ms": {name: cuda_time_ms(call) for name, call in callables.items()},
            "first_call_s": first_call_s, "extra_peak_bytes": extra_peak_bytes}


def measure_peaks(device="cuda"):
    """Measured copy bandwidth (GB/s) and matmul rates (TFLOP/s) of ``device``."""
    source = torch.empty(2**30 // 4, dtype=torch.float32, device=device)
    destination = torch.empty_like(source)
    copy_ms = cuda_time_ms(lambda: destination.copy_(source), flush_l2=False)
    source = destination = None  # free 2 GiB before the matmuls
    peaks = {"copy_gbps": 2 * 2**30 / (copy_ms * 1e-3) / 1e9}
    n = 8192
    for name, dtype in (("matmul_bf16_tflops", torch.bfloat16), ("matmul_fp32_tflops", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        ms = cuda_time_ms(lambda: torch.mm(a, b), warmup=3, repeats=10, flush_l2=False)
        peaks[name] = 2 * n**3 / (ms * 1e-3) / 1e12
    peaks["fp32_matmul_uses_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return peaks


def gbps(bytes_moved, milliseconds):
    return bytes_moved / (milliseconds * 1e-3) / 1e9


def environment():
    """Where a result was measured."""
    from ._version import __version__

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fastcnn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def results_path(folder, environment_info):
    gpu = environment_info.get("gpu", "cpu").replace(" ", "-").replace("/", "-")
    return os.path.join(folder, f"{gpu}-{environment_info['date'][:10]}.json")


def write_results(folder, records, peaks, environment_info=None):
    """Write ``records`` with the peaks and the environment to ``<folder>/<gpu>-<date>.json``,
    merging with records already in that file (one file per GPU and day)."""
    environment_info = environment_info or environment()
    path = results_path(folder, environment_info)
    existing = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            existing = json.load(handle).get("records", [])
    keys = {(r["suite"], r["op"], r["case"], r["implementation"]) for r in records}
    merged = [r for r in existing if (r["suite"], r["op"], r["case"], r["implementation"]) not in keys] + records
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"environment": environment_info, "peaks": peaks, "records": merged}, handle, indent=2)
        handle.write("\n")
    return path


def tflops(flops, milliseconds):
    return flops / (milliseconds * 1e-3) / 1e12


def geometric_mean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def saved_tensor_bytes(run):
    """Bytes of the tensors autograd saves for backward while ``run()`` builds its graph."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return total[0], result
