"""Compile the kernels for NVIDIA GPUs ahead of time, without a GPU.

The interpreter accepts code the compiler rejects (non-constexpr globals, type changes across
branches), so CI also runs Triton's real compiler down to PTX for Hopper (sm_90) and Ampere
(sm_80). It is the static check's harness (scripts/static_gpu_check.py --ptx-only): the launches
each op's case module makes (its ``static_launches`` and ``compile_variants``: int64 indexing,
unaligned tensors, every activation kind, integer max-pool, ...), recorded through the kernels'
own launchers, so no kernel signature is written twice. Checked here: every kernel compiles and
stores; the multi-tensor kernels use 128-bit accesses exactly when their tensors are aligned;
each variant family is there.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(),
                                 reason="on a GPU every test compiles and runs the kernels for real"),
              pytest.mark.every_triton,
              pytest.mark.xdist_group("sm90_compiles")]  # with test_static_gpu_check.py: one Triton cache

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "static_gpu_check.py"


def launched_kernels():
    """(kernel file, name) of every kernel in kernels/: each ``*_kernel`` function under a Triton
    decorator (the ``@triton.jit`` helpers they call are compiled inside them)."""
    found = set()
    for path in (REPO_ROOT / "kernels").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel") and any(
                    "triton" in ast.unparse(decorator) for decorator in node.decorator_list):
                found.add((path.stem, node.name))
    return found


def run_static_check(folder, *options):
    """scripts/static_gpu_check.py on this checkout with ``options`` (2 parallel compiles, without
    the interpreter): its (job, result) pairs; fails with its violations or the end of its log."""
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    finished = subprocess.run([sys.executable, str(SCRIPT), str(REPO_ROOT), *options, "--jobs", "2",
                               "--json", str(folder / "report.json"), "--output", str(folder / "report.md")],
                              capture_output=True, text=True, timeout=1800, env=environment)
    violations = [line for line in finished.stderr.splitlines() if line.startswith("VIOLATION")]
    assert finished.returncode == 0, "\n".join(violations) or finished.stderr[-4000:]
    (run,) = json.loads((folder / "report.json").read_text())
    assert not run["scenario_errors"], run["scenario_errors"]
    return list(zip(run["jobs"], run["results"]))


def compile_ptx(folder, arch, *selection):
    return run_static_check(folder, "--quick", "--variants", "--ptx-only", "--arch", str(arch), *selection)


@pytest.fixture(scope="module")
def hopper(tmp_path_factory):
    """sm_90: every op's launches and compile variants. Under the second Triton
    (scripts/triton_version_check.sh sets FASTCNN_LEAN_COMPILE_CHECK) the variants and each
    kernel's first launch where no variant launches it: every kernel and variant family once, the
    representative shapes' other launches being the main Triton's (and the static check's) to compile."""
    lean = ["--lean"] if os.environ.get("FASTCNN_LEAN_COMPILE_CHECK") else []
    return compile_ptx(tmp_path_factory.mktemp("sm90"), 90, *lean)


@pytest.fixture(scope="module")
def ampere(tmp_path_factory):
    """sm_80: the compile variants (the representative launches compile for sm_90a in the static check)."""
    return compile_ptx(tmp_path_factory.mktemp("sm80"), 80, "--only", "^variant ")


@pytest.fixture(params=["hopper", "ampere"])
def compiled(request):
    return request.getfixturevalue(request.param)


def test_every_kernel_compiles_for_hopper(hopper):
    found = {(job["module"], job["kernel"]) for job, _ in hopper}
    assert len(launched_kernels()) > 40
    assert not launched_kernels() - found, f"no launch compiles {sorted(launched_kernels() - found)}"


def test_every_compile_succeeds_and_stores(compiled):
    for job, result in compiled:
        where = f"{job['module']}.{job['kernel']} {job['dtype']} ({job['scenario'][:80]})"
        assert "error" not in result, f"{where}: {result['error']}"
        assert result["st_global"] or result["atomics"], f"{where}: stores nothing"


def test_multi_tensor_kernels_vectorise_exactly_when_aligned(compiled):
    """128-bit accesses with the alignment promise (multi_tensor.block_pointers), none assumed
    without it; both variants of every kernel that takes the promise (64-bit loads are the
    pointer table's)."""
    variants = {}
    for job, result in compiled:
        if "ALIGNED" in job["constexprs"]:
            aligned = job["constexprs"]["ALIGNED"]
            variants.setdefault(job["kernel"], set()).add(aligned)
            widths = {int(width) for width in result["ld_global"]} | {int(width) for width in result["st_global"]}
            assert (128 in widths) == aligned, (job["kernel"], job["dtype"], aligned, widths)
    assert {"_adam_step_kernel", "_sgd_step_kernel", "_rmsprop_step_kernel", "_adagrad_step_kernel",
            "_adadelta_step_kernel", "_partial_norms_kernel", "_scale_kernel", "_penalty_partials_kernel",
            "_penalty_grad_kernel"} <= set(variants)
    assert all(found == {True, False} for found in variants.values()), variants


def test_each_variant_family_compiles(compiled):
    """What the compile variants exist for, so that one silently dropped fails here."""
    seen = {}
    for job, _ in compiled:
        for name, value in job["constexprs"].items():
            seen.setdefault((job["module"], job["kernel"], name), set()).add(value)
    for kernel in ("_conv2d_forward_kernel", "_conv2d_input_grad_kernel", "_conv2d_weight_grad_kernel"):
        assert seen[("conv2d_gemm", kernel, "WIDE_INDEX")] == {True, False}, kernel
    for kernel in ("_conv2d_forward_kernel", "_conv2d_input_grad_kernel"):  # 1x1 kernels: no tap counters
        assert seen[("conv2d_gemm", kernel, "ONE_TAP")] == {True, False}, kernel
    # the input prologue (kernels/prologue.py) in the kernels that load x, with and without the shift
    for module, kernel in (("conv2d_gemm", "_conv2d_forward_kernel"), ("conv2d_gemm", "_conv2d_weight_grad_kernel"),
                           ("conv2d_depthwise", "_depthwise_forward_kernel"),
                           ("conv2d_depthwise", "_depthwise_weight_grad_kernel")):
        assert seen[(module, kernel, "PROLOGUE")] == {True, False}, kernel
    # grad-weight with dy's pixels one run (dense) and not (a view)
    assert seen[("conv2d_gemm", "_conv2d_weight_grad_kernel", "DENSE_DY")] == {True, False}
    for module, kernel in (("conv2d_gemm", "_conv2d_input_grad_kernel"),
                           ("conv2d_depthwise", "_depthwise_input_grad_kernel")):
        assert seen[(module, kernel, "EPILOGUE")] == {True, False}, kernel
    # the moments epilogue (kernels/moments.py) of the forward kernels
    for module, kernel in (("conv2d_gemm", "_conv2d_forward_kernel"), ("conv2d_depthwise", "_depthwise_forward_kernel")):
        assert seen[(module, kernel, "MOMENTS")] == {True, False}, kernel
    # linear: the activation's derivative from z, from the output and none; z stored or not; with
    # and without a bias, an output scale and their gradients; int64 indexing
    for kernel in ("_linear_input_grad_kernel", "_linear_weight_grad_kernel"):
        assert seen[("linear", kernel, "FROM_OUTPUT")] == {True, False}, kernel
    for kernel in ("_linear_forward_kernel", "_linear_input_grad_kernel", "_linear_weight_grad_kernel"):
        assert seen[("linear", kernel, "SCALED")] == {True, False}, kernel
    assert seen[("linear", "_linear_forward_kernel", "STORE_Z")] == {True, False}
    assert seen[("linear", "_linear_forward_kernel", "HAS_BIAS")] == {True, False}
    assert seen[("linear", "_linear_weight_grad_kernel", "BIAS_GRAD")] == {True, False}
    assert seen[("linear", "_linear_weight_grad_kernel", "SCALE_GRAD")] == {True, False}
    assert len(seen[("linear", "_linear_forward_kernel", "KIND")]) == 13  # every kind, PReLU and None
    assert seen[("linear", "_linear_weight_grad_kernel", "SLOPE_GRAD")] == {True, False}
    for kernel in ("_linear_forward_kernel", "_linear_input_grad_kernel", "_linear_weight_grad_kernel"):
        assert seen[("linear", kernel, "WIDE_INDEX")] == {True, False}, kernel
    # squeeze-excitation's gate: tiles across images on small planes, the backward in one pass or in slices
    assert seen[("squeeze_excitation", "_gate_forward_kernel", "SPAN_IMAGES")] == {True, False}
    assert seen[("squeeze_excitation", "_gate_backward_kernel", "FINISH")] == {True, False}
    assert seen[("prelu", "_prelu_forward_kernel", "SPAN_IMAGES")] == {True, False}
    # the pointwise losses: every kind, the flat and the strided walk, each reduction's path
    for kernel in ("_pointwise_loss_forward_kernel", "_pointwise_loss_backward_kernel"):
        assert len(seen[("pointwise_loss", kernel, "KIND")]) == 8, kernel
        assert seen[("pointwise_loss", kernel, "FLAT")] == {True, False}, kernel
        assert seen[("pointwise_loss", kernel, "REDUCE")] == {True, False}, kernel
        assert seen[("pointwise_loss", kernel, "WEIGHT_TOTAL")] == {True, False}, kernel
    for kernel in ("_nll_loss_forward_kernel", "_nll_loss_backward_kernel"):
        assert seen[("nll_loss", kernel, "REDUCE")] == {True, False}, kernel
        assert seen[("nll_loss", kernel, "HAS_WEIGHT")] == {True, False}, kernel
    for kernel in ("_softmax_forward_kernel", "_softmax_backward_kernel"):
        assert seen[("softmax", kernel, "ONE_BLOCK")] == {True, False}, kernel
        assert seen[("softmax", kernel, "LOG")] == {True, False}, kernel
        assert seen[("softmax", kernel, "PER_IMAGE")] == {True, False}, kernel
    assert seen[("multi_tensor", "_advance_counters_kernel", "MODE")] == {0, 1}
    assert seen[("cross_entropy", "_cross_entropy_kernel", "PROBABILITIES")] == {True, False}
    kinds = seen[("activation", "_forward_kernel", "KIND")] & seen[("activation", "_backward_kernel", "KIND")]
    assert len(kinds) == 11, kinds
    assert seen[("activation", "_backward_kernel", "FROM_OUTPUT")] == {True, False}
    # batch norm's apply backward: the input's gradient, and the residual's from the output or the residual
    assert seen[("batch_norm", "_backward_apply_kernel", "FROM_OUTPUT")] == {True, False}
    assert seen[("batch_norm", "_backward_apply_kernel", "HAS_RESIDUAL")] == {True, False}
    # and the residual's gradient written with the sums (training) or not (the plain backward)
    assert seen[("batch_norm", "_backward_sums_kernel", "WRITE_G")] == {True, False}
    assert seen[("batch_norm", "_backward_sums_kernel", "FROM_OUTPUT")] == {True, False}
    # and with the residual a second batch norm's input (a ResNet downsample's), forward and sums
    assert seen[("batch_norm", "_apply_kernel", "RESIDUAL_NORMALIZED")] == {True, False}
    assert seen[("batch_norm", "_backward_sums_kernel", "RESIDUAL_SUMS")] == {True, False}
    # PReLU fused into the norms: its slopes in the applies, their gradient a third sum
    for module, kernels in (("batch_norm", ("_apply_kernel", "_backward_sums_kernel", "_backward_apply_kernel")),
                            ("group_norm", ("_apply_kernel", "_partial_grad_sums_kernel", "_backward_apply_kernel")),
                            ("layer_norm", ("_forward_kernel", "_backward_kernel"))):
        for kernel in kernels:
            assert "prelu" in seen[(module, kernel, "KIND")], (module, kernel)
    assert seen[("batch_norm", "_backward_finalize_kernel", "SLOPE_SUMS")] == {True, False}
    assert True in seen[("group_norm", "_finalize_grad_sums_kernel", "SLOPE_SUMS")]
    # the stem's batch norm in the max-pool's prologue, its backward sums in the pool's backward
    assert seen[("max_pool", "_max_pool2d_forward_kernel", "PROLOGUE")] == {True, False}
    assert seen[("max_pool", "_max_pool2d_backward_kernel", "EPILOGUE")] == {True, False}
    pooled = {job["dtype"] for job, _ in compiled if job["kernel"] == "_max_pool2d_forward_kernel"}
    assert {"fp64", "i64", "u8"} <= pooled, pooled


def test_conv_main_loops_load(hopper):
    for job, result in hopper:
        if job["module"] == "conv2d_gemm":
            # Pipelined loops load through cp.async (global -> shared) instead of ld.global.
            assert result["ld_global"] or result["cp_async"], (job["kernel"], job["config"])
