"""The shared benchmark helpers (fastcnn.benchmarking), checked by hand without a GPU. Each op's
own cost formula and suites are tested in its test file."""
import pytest
import torch

from fastcnn.benchmarking import geometric_mean, saved_tensor_bytes, tflops


def test_rates_and_means_by_hand():
    assert tflops(2e12, 1000.0) == pytest.approx(2.0)
    assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    assert geometric_mean([]) != geometric_mean([])  # NaN for no data


def test_saved_tensor_bytes():
    x = torch.randn(3, 4, requires_grad=True)
    saved, _ = saved_tensor_bytes(lambda: (x * x).sum())  # mul saves both operands
    assert saved == 2 * 12 * 4
