"""The static sm_90a check (scripts/static_gpu_check.py) on CI's representative subset: every
kernel in every configuration its launcher or autotuner may use, compiled for an H100 without a
GPU. It fails on what is never acceptable (a compile failure, a config that cannot launch or that
spills, a memory-bound grid smaller than the GPU), and this test also holds the kernels to what
their speed needs: async copies of 128-bit rows in the conv main loops in both layouts, and
128-bit logits rows in cross-entropy. The committed full report is bench/static/.
"""
import pytest
import torch
from test_compile_for_gpu import launched_kernels, run_static_check

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels run for real instead"),
              # One worker runs both compile harnesses, one after the other: the sm_90 compiles they
              # share are then hits in the static check's Triton cache, not compiled twice at once.
              pytest.mark.xdist_group("sm90_compiles")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # No SASS: neither the check's violations nor these tests read it (the committed report has it).
    return run_static_check(tmp_path_factory.mktemp("static"), "--quick", "--check", "--no-sass")


def test_every_kernel_is_compiled_by_some_op_scenario(report):
    """The static check finds its launches in each op's case module (fastcnn/cases): a kernel no
    scenario launches fails here."""
    compiled = {(job["module"], job["kernel"]) for job, _ in report}
    assert len(launched_kernels()) > 40
    assert not launched_kernels() - compiled, sorted(launched_kernels() - compiled)


def _select(report, kernel, scenario):
    found = [(job, result) for job, result in report if job["kernel"] == kernel and scenario in job["scenario"]]
    assert found, f"{kernel} was not compiled for a scenario with {scenario!r}"
    return found


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kernel", ["_conv2d_forward_kernel", "_conv2d_input_grad_kernel",
                                    "_conv2d_weight_grad_kernel"])
def test_conv_main_loops_copy_128_bit_rows_asynchronously(report, kernel, layout):
    for job, result in _select(report, kernel, f"conv3x3 N32 C128 K128 28x28 s1 p1 {layout} bf16"):
        assert result["wgmma"], (job["config"], "no wgmma")
        assert "128" in result["cp_async"] or 128 in result["cp_async"], (job["config"], result["cp_async"])
        assert result["loop_cp_async"], (job["config"], "no cp.async in the main loop")


def test_cross_entropy_fills_the_gpu_with_128_bit_rows(report):
    for job, result in _select(report, "_cross_entropy_kernel", "N256 C1000 bf16"):
        assert job["programs"] >= 132, job["programs"]
        assert max(int(width) for width in result["ld_global"]) == 128, result["ld_global"]
        assert max(int(width) for width in result["st_global"]) == 128, result["st_global"]
