"""Benchmark helpers shared by ``bench/`` and the profiler: device peaks, CUDA-event timing,
bytes/FLOP formulas, and machine-written result files.

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

import torch

L2_FLUSH_BYTES = 256 * 2**20


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


def adam_bytes(numel, element_size, amsgrad=False):
    """Bytes an Adam step must move: read param, grad, exp_avg, exp_avg_sq and write param,
    exp_avg, exp_avg_sq (7 accesses; 9 with amsgrad's max_exp_avg_sq read and write)."""
    return numel * element_size * (9 if amsgrad else 7)


def gbps(bytes_moved, milliseconds):
    return bytes_moved / (milliseconds * 1e-3) / 1e9


def environment():
    """Where a result was measured."""
    from . import __version__

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


def conv2d_flops(batch, layer):
    """FLOPs of one conv2d pass (forward, grad-input or grad-weight: the same GEMM size) on a
    ``fastcnn.shapes.ConvLayer``: 2 * N * OH * OW * K * (C / groups) * R * S."""
    return (2 * batch * layer.out_size**2 * layer.out_channels * (layer.in_channels // layer.groups)
            * layer.kernel**2)


def tflops(flops, milliseconds):
    return flops / (milliseconds * 1e-3) / 1e12


def geometric_mean(values):
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def conv2d_speedup_summary(records):
    """Geometric-mean speedup of fastcnn over cuDNN per (pass, precision, layer kind), the
    figures the conv2d issue sets goals for; ``records`` as the conv2d benchmark writes them."""
    groups = {}
    for record in records:
        if record.get("suite") != "conv2d" or record.get("implementation") != "fastcnn":
            continue
        kind = "depthwise" if record["depthwise"] else "1x1" if record["kernel"] == 1 else "spatial"
        for key in ((record["op"], record["precision"], "all"), (record["op"], record["precision"], kind)):
            groups.setdefault(key, []).append(record["speedup_vs_cudnn"])
    return {"/".join(key): geometric_mean(values) for key, values in sorted(groups.items())}


def cross_entropy_bytes(rows, classes, element_size, target_size=8):
    """Bytes a fused cross-entropy forward + backward must move at the least: read the logits
    once, write their gradient once, read the class-index targets."""
    return 2 * rows * classes * element_size + rows * target_size


def batch_norm_relu_bytes(numel, element_size, backward):
    """Bytes BN+ReLU must move at the least: forward reads x and writes y; backward reads x and
    dy and writes dx (per-channel vectors are negligible)."""
    return numel * element_size * (5 if backward else 2)


def max_pool_bytes(input_numel, output_numel, element_size, backward):
    """Bytes max-pool must move at the least: forward reads x and writes the output; backward
    reads the output gradient and writes the input gradient (saved indices not counted)."""
    return (input_numel + output_numel) * element_size * (2 if backward else 1)


def saved_tensor_bytes(run):
    """Bytes of the tensors autograd saves for backward while ``run()`` builds its graph."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    return total[0], result
