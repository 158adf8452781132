"""The layout docs/architecture.md describes, checked: every op module in fastcnn/ops runs the
kernel module of the same name, states its cost and benchmark cases, and puts its public names
into fastcnn's namespace; and the shared test helpers report what they promise."""
import importlib

import pytest
import torch

import fastcnn
from fastcnn import ops
from fastcnn.testing import assert_close, in_layout


@pytest.mark.parametrize("module", ops.MODULES, ids=lambda module: module.__name__.rsplit(".", 1)[1])
def test_op_module_follows_the_layout(module):
    name = module.__name__.rsplit(".", 1)[1]
    kernels = importlib.import_module(f"fastcnn.kernels.{name}")
    handle = module._kernels()
    assert kernels in (handle if isinstance(handle, tuple) else (handle,)), "the op runs another op's kernels"
    assert callable(getattr(module, "bytes_moved", None)) or callable(getattr(module, "flops", None))
    assert module.SUITES and module.PROFILE_OPS
    for public in module.__all__:
        assert getattr(fastcnn, public) is getattr(module, public) and public in fastcnn.__all__
    for op in module.PROFILE_OPS:
        cases = module.profile_cases(op, ("fp32",), ("nchw",), smoke=True)
        assert cases and all(case.op == op for case in cases), op


def test_every_op_module_is_found():
    names = {module.__name__.rsplit(".", 1)[1] for module in ops.MODULES}
    assert names == {"activation", "adadelta", "adagrad", "adam", "add", "avg_pool", "batch_norm", "clip_grad",
                     "conv2d", "cross_entropy", "dropout", "group_norm", "layer_norm", "max_pool", "rmsprop", "sgd"}


def test_assert_close_names_the_first_mismatch():
    expected = torch.arange(1.0, 13.0).view(3, 4)
    actual = expected.clone()
    actual[1, 2] += 1.0
    actual[2, 3] += 1.0
    with pytest.raises(AssertionError, match=r"first mismatch at index \(1, 2\): 8\.0 vs expected 7\.0 \(2 of 12"):
        assert_close(actual, expected, torch.float32, what="x", seed=0)
    actual = expected.clone()
    actual[0, 1] = float("nan")
    with pytest.raises(AssertionError, match=r"first mismatch at index \(0, 1\): nan vs expected 2\.0"):
        assert_close(actual, expected, torch.float32, what="x", seed=0)


def test_assert_close_also_names_the_largest_difference():
    expected = torch.ones(1000, dtype=torch.float64)
    actual = expected + 2e-5
    actual[7] += 5e-5
    with pytest.raises(AssertionError, match=r"first mismatch at index \(0,\): .*largest difference at index \(7,\): "
                                             r"1\.00007"):
        assert_close(actual, expected, torch.float32, what="x", seed=0)


def test_in_layout_poisons_the_gaps_of_a_sliced_view():
    values = torch.arange(6.0).view(2, 3)
    view = in_layout(values, "sliced")
    assert torch.equal(view, values) and view.stride() == (6, 2)
    assert torch.isnan(view._base[..., 1::2]).all()
    assert in_layout(values.view(1, 2, 3, 1), "channels_last").is_contiguous(memory_format=torch.channels_last)
