"""Compile the kernels for NVIDIA GPUs ahead of time, without a GPU.

The interpreter accepts code the compiler rejects (non-constexpr globals, type changes across
branches), so CI also runs Triton's real compiler down to PTX for Hopper (sm_90) and Ampere
(sm_80), in a separate process (tests/compile_kernels.py), and checks that the aligned variant of
the Adam kernel emits 128-bit memory accesses and the unaligned one does not assume alignment.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="on a GPU every test compiles and runs the kernels for real")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_kernels.py")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path_factory.mktemp("compile"))
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_every_adam_variant_compiles(compiled):
    variants = [key for key in compiled if key.startswith("adam_step/")]
    assert len(variants) == 12
    for key in variants:
        accesses = compiled[key]
        assert accesses, key
        vector = sum(count for access, count in accesses.items() if ".v" in access)
        if key.endswith("/aligned"):
            assert vector > 0, f"{key}: no 128-bit accesses: {accesses}"
        else:
            assert vector == 0, f"{key}: assumes alignment it was not promised: {accesses}"


def test_count_steps_kernel_compiles(compiled):
    assert compiled["count_steps/sm90"]


def test_every_conv2d_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("conv2d_")]
    assert len(variants) == 3 * 3 * 2 + 3 + 3 + 2
    for key in variants:
        accesses = compiled[key]
        # Pipelined loops load through cp.async (global -> shared) instead of ld.global.
        assert any(access.startswith(("ld.global", "cp.async")) for access in accesses), f"{key}: {accesses}"
        assert any(access.startswith("st.global") for access in accesses), f"{key}: {accesses}"


def test_every_cross_entropy_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("cross_entropy")]
    assert len(variants) == 2 * 2 * 2 + 2
    for key in variants:
        assert any(access.startswith("st.global") for access in compiled[key]), f"{key}: {compiled[key]}"


def test_every_max_pool_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("max_pool")]
    assert len(variants) == 2 * 2 * 2
    for key in variants:
        assert any(access.startswith("st.global") for access in compiled[key]), f"{key}: {compiled[key]}"


def test_every_batch_norm_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("batch_norm")]
    assert len(variants) == 4 * 2 * 2 + 2
    for key in variants:
        assert any(access.startswith("st.global") for access in compiled[key]), f"{key}: {compiled[key]}"
