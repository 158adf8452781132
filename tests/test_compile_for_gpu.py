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

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(),
                                 reason="on a GPU every test compiles and runs the kernels for real"),
              pytest.mark.every_triton]

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_kernels.py")

# How many variants compile_kernels.py compiles per family, so that one silently dropped (a
# loop that stopped producing a key) fails here. Each count is the product of the script's loops.
EXPECTED_VARIANTS = {
    # sm90/sm80 x fp32/bf16/fp16 x aligned or not
    "adam_step/": 2 * 3 * 2,
    # {sgd, rmsprop, adagrad, adadelta} x {fp32, bf16} x aligned or not
    "optimizer_step/": 4 * 2 * 2,
    # partial norms: 8 (norm type, dtype, alignment) cases; the merge for the 6 fp32 ones;
    # {scale, clamp} x {fp32, bf16} x aligned or not
    "clip_grad/": 8 + 6 + 2 * 2 * 2,
    # {forward, input_grad, weight_grad} x {bf16, fp16, fp32/tf32} x {int32, int64 indexing}, the same
    # three with unit sizes specialised to constants, three depthwise kernels, bias grad, the split sum
    "conv2d_": 3 * 3 * 2 + 3 + 3 + 2,
    # {bf16, fp32} logits x {class indices, probabilities} x {10, 128000 classes}, the row sum, the scaling
    "cross_entropy": 2 * 2 * 2 + 2,
    # forward: {bf16, fp32, fp64, int64, uint8} x {channels_last, nchw};
    # backward: the three float dtypes x both layouts
    "max_pool": 5 * 2 + 3 * 2,
    # {statistics, apply, backward sums, backward apply} x {bf16, fp32} x {channels_last, nchw},
    # and the two finalize kernels
    "batch_norm": 4 * 2 * 2 + 2,
    # every kind x {forward, backward}
    "activation/": 11 * 2,
    # {partial statistics, their merge, apply, partial backward sums, their merge, backward apply}
    # x {bf16, fp32} x {channels_last, nchw}, and the running statistics
    "group_norm": 6 * 2 * 2 + 1,
    # {forward, backward} x {one-tile, chunked rows} x {bf16, fp32}
    "layer_norm": 2 * 2 * 2,
    # flat x {bf16, fp32}; channel-wise x {bf16, fp32} x {channels_last, nchw}
    "dropout/": 2 + 2 * 2,
    # {avg_pool2d, adaptive} x {forward, backward}, and the global pool, x {bf16, fp32} x {channels_last, nchw}
    "avg_pool/": 5 * 2 * 2,
    # the residual add x {bf16, fp32}
    "add/": 2,
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path_factory.mktemp("compile"))
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_every_adam_variant_compiles(compiled):
    variants = [key for key in compiled if key.startswith("adam_step/")]
    assert len(variants) == EXPECTED_VARIANTS["adam_step/"]
    for key in variants:
        accesses = compiled[key]
        assert accesses, key
        vector = sum(count for access, count in accesses.items() if ".v" in access)
        if key.endswith("/aligned"):
            assert vector > 0, f"{key}: no 128-bit accesses: {accesses}"
        else:
            assert vector == 0, f"{key}: assumes alignment it was not promised: {accesses}"


def test_counter_kernel_compiles(compiled):
    assert compiled["advance_counters/sm90/COUNT"] and compiled["advance_counters/sm90/CLEAR"]


@pytest.mark.parametrize("family", ["optimizer_step/", "clip_grad/"])
def test_every_multi_tensor_variant_compiles_and_vectorises_when_aligned(family, compiled):
    """The other optimizers and gradient clipping: 128-bit accesses with the alignment promise
    (multi_tensor.block_pointers), none assumed without it."""
    variants = [key for key in compiled if key.startswith(family)]
    assert len(variants) == EXPECTED_VARIANTS[family]
    for key in variants:
        accesses = compiled[key]
        assert any(access.startswith("st.global") for access in accesses), f"{key}: {accesses}"
        vector = sum(count for access, count in accesses.items() if ".v" in access)
        if key.endswith("/aligned"):
            assert vector > 0, f"{key}: no 128-bit accesses: {accesses}"
        elif key.endswith("/unaligned"):
            assert vector == 0, f"{key}: assumes alignment it was not promised: {accesses}"


def test_every_conv2d_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("conv2d_")]
    assert len(variants) == EXPECTED_VARIANTS["conv2d_"]
    for key in variants:
        accesses = compiled[key]
        # Pipelined loops load through cp.async (global -> shared) instead of ld.global.
        assert any(access.startswith(("ld.global", "cp.async")) for access in accesses), f"{key}: {accesses}"
        assert any(access.startswith("st.global") for access in accesses), f"{key}: {accesses}"


def test_every_cross_entropy_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("cross_entropy")]
    assert len(variants) == EXPECTED_VARIANTS["cross_entropy"]
    for key in variants:
        assert any(access.startswith("st.global") for access in compiled[key]), f"{key}: {compiled[key]}"


def test_every_max_pool_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("max_pool")]
    assert len(variants) == EXPECTED_VARIANTS["max_pool"]
    for key in variants:
        assert any(access.startswith("st.global") for access in compiled[key]), f"{key}: {compiled[key]}"


def test_every_batch_norm_kernel_compiles(compiled):
    variants = [key for key in compiled if key.startswith("batch_norm")]
    assert len(variants) == EXPECTED_VARIANTS["batch_norm"]
    for key in variants:
        assert any(access.startswith("st.global") for access in compiled[key]), f"{key}: {compiled[key]}"


@pytest.mark.parametrize("family", ["activation/", "group_norm", "layer_norm", "dropout/", "avg_pool/", "add/"])
def test_every_normalization_activation_and_dropout_kernel_compiles(family, compiled):
    """Each kernel lowers for sm_90 (the interpreter does not check that erf, Philox or a 3-d tile
    do) and stores. (Load widths depend on the divisibility Triton specialises at launch: the
    static check, which launches, reads those.)"""
    variants = [key for key in compiled if key.startswith(family)]
    assert len(variants) == EXPECTED_VARIANTS[family], variants
    for key in variants:
        accesses = compiled[key]
        assert any(access.startswith("st.global") for access in accesses), f"{key}: {accesses}"
