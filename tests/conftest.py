"""Test setup: without a GPU, every kernel runs through Triton's interpreter.

The variable must be set before triton is imported anywhere (torch.testing._internal imports
it), so this happens at the top of the first conftest pytest loads.
"""
from fastcnn.testing import fresh_seed, use_interpreter_without_gpu

INTERPRETING = use_interpreter_without_gpu()

import pytest  # noqa: E402
import torch  # noqa: E402

import fastcnn  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "every_triton: also run under the second Triton version that "
                                       "scripts/triton_version_check.sh installs (the lent GPU machines' 3.6)")


def pytest_report_header(config):
    where = fastcnn.info()
    return (f"fastcnn {where['fastcnn']}: torch {where['torch']}, triton {where['triton']}, "
            f"device {where['device']}, kernels on cpu tensors: {where['kernels_on_cpu_tensors']}, "
            f"on cuda tensors: {where['kernels_on_cuda_tensors']}")


@pytest.fixture
def seed(request):
    """A fresh seed per test, printed, seeded into torch, and shown again when the test fails."""
    value = fresh_seed()
    torch.manual_seed(value)
    request.node.fastcnn_seed = value
    print(f"seed: FASTCNN_TEST_SEED={value}")
    return value


@pytest.fixture
def generator(seed):
    return torch.Generator().manual_seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    value = getattr(item, "fastcnn_seed", None)
    if report.failed and value is not None:
        report.sections.append(("seed", f"replay with FASTCNN_TEST_SEED={value}"))
