"""Test setup: without a GPU, every kernel runs through Triton's interpreter.

The variable must be set before triton is imported anywhere (torch.testing._internal imports
it), so this happens at the top of the first conftest pytest loads.
"""
from fastcnn.testing import fresh_seed, use_interpreter_without_gpu

INTERPRETING = use_interpreter_without_gpu()

import os  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import fastcnn  # noqa: E402

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # pytest-xdist workers (scripts/test.sh) share the cores: one worker's torch takes its share
    # of them, not all of them each.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_addoption(parser):
    parser.addoption("--first-per-file", type=int, default=None, metavar="N",
                     help="run only the first N selected tests of each file (scripts/gpu_check.py --dry-run's sample)")


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config, items):
    limit = config.getoption("--first-per-file")
    if limit is None:
        return
    kept, dropped, per_file = [], [], {}
    for item in items:
        count = per_file[item.path] = per_file.get(item.path, 0) + 1
        (kept if count <= limit else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_configure(config):
    config.addinivalue_line("markers", "every_triton: also run under the second Triton version that "
                                       "scripts/triton_version_check.sh installs (the lent GPU machines' 3.6)")
    config.addinivalue_line("markers", "xdist_group(name): run on one pytest-xdist worker with the other tests "
                                       "of that group (scripts/test.sh runs with --dist loadgroup)")


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
