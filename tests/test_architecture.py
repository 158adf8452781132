"""The layout docs/architecture.md describes, checked: every op module in fastcnn/ops runs the
kernel module of the same name, states its cost, has its benchmark cases in fastcnn/cases and puts
its public names into fastcnn's namespace; fastcnn's imports go one way (no circle, the ops below
the modules, the benchmark catalogue outside what ``import fastcnn`` loads); and the shared test
helpers report what they promise."""
import ast
import importlib
import pathlib
import subprocess
import sys

import pytest
import torch

import fastcnn
from fastcnn import cases, ops
from fastcnn.testing import assert_close, in_layout

pytestmark = pytest.mark.every_triton  # also run under the second Triton (scripts/triton_version_check.sh)


@pytest.mark.parametrize("module", ops.MODULES, ids=lambda module: module.__name__.rsplit(".", 1)[1])
def test_op_module_follows_the_layout(module):
    name = module.__name__.rsplit(".", 1)[1]
    kernels = importlib.import_module(f"fastcnn.kernels.{name}")
    handle = module._kernels()
    assert kernels in (handle if isinstance(handle, tuple) else (handle,)), "the op runs another op's kernels"
    assert callable(getattr(module, "bytes_moved", None)) or callable(getattr(module, "flops", None))
    for public in module.__all__:
        assert getattr(fastcnn, public) is getattr(module, public) and public in fastcnn.__all__
    case_module = cases.for_op(module)
    assert case_module.SUITES and case_module.PROFILE_OPS
    for op in case_module.PROFILE_OPS:
        made = case_module.profile_cases(op, ("fp32",), ("nchw",), smoke=True)
        assert made and all(case.op == op for case in made), op


PACKAGE = pathlib.Path(fastcnn.__file__).parent


def test_every_op_module_and_case_module_is_found():
    """Each file of fastcnn/ops is an op module (nothing to register) and has a case module of
    its name in fastcnn/cases; no case module without an op."""
    def names(folder):
        return {path.stem for path in (PACKAGE / folder).glob("*.py") if not path.stem.startswith("_")}

    assert {module.__name__.rsplit(".", 1)[1] for module in ops.MODULES} == names("ops") == names("cases")
    assert [module.__name__ for module in cases.modules()] == [
        f"fastcnn.cases.{module.__name__.rsplit('.', 1)[1]}" for module in ops.MODULES]


def test_every_op_runs_under_the_second_triton():
    """scripts/triton_version_check.sh runs the tests marked every_triton: each op's test file has
    some, as do the compile and architecture checks."""
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                                "-m", "every_triton"], capture_output=True, text=True,
                               cwd=pathlib.Path(__file__).parent).stdout
    files = {pathlib.Path(line.split("::")[0]).name for line in collected.splitlines() if "::" in line}
    expected = {f"test_{module.__name__.rsplit('.', 1)[1]}.py" for module in ops.MODULES}
    assert not expected - files, f"no test marked every_triton in {sorted(expected - files)}"
    assert {"test_compile_for_gpu.py", "test_architecture.py"} <= files


def import_graph():
    """fastcnn's modules (fastcnn.kernels aside) -> the fastcnn modules each imports anywhere in
    its text (function-level imports included), read from the source."""
    def module_name(path):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                base = ".".join(part for part in (base, node.module) if part)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            edges.update(target for target in targets if target in files and target != name)
        graph[name] = edges
    graph["fastcnn.ops"] |= {module.__name__ for module in ops.MODULES}  # found, not named, by ops/__init__
    return graph


def test_no_import_circle_in_fastcnn():
    graph = import_graph()

    def reaches(start, goal, seen):
        for target in graph[start]:
            if target == goal or (target not in seen and not seen.add(target) and reaches(target, goal, seen)):
                return True
        return False

    # A package's __init__ runs before its submodules, so "X imports the package" is no circle
    # unless the package's own imports lead back to X.
    circles = sorted(name for name in graph if reaches(name, name, set()))
    assert not circles, f"modules on an import circle: {circles}"


def test_the_ops_import_nothing_above_them():
    """docs/architecture.md's layers: an op module imports the shared helpers, other ops and
    (on its first launch) its kernels; never the modules, optimizers, conversion or the
    benchmark catalogue built over it."""
    above = ("fastcnn.nn", "fastcnn.optim", "fastcnn.transforms", "fastcnn.convert", "fastcnn.coverage", "fastcnn.cases",
             "fastcnn.benchmarking", "fastcnn.reporting", "fastcnn.profile", "fastcnn.demo", "fastcnn.models")
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith("fastcnn.ops.") or name in ("fastcnn.multi_tensor", "fastcnn.validation", "fastcnn._backend"):
            assert not [edge for edge in edges if edge.startswith(above)], (name, edges)


def test_import_fastcnn_loads_no_benchmark_code():
    """The benchmark catalogue and its helpers are found by op name when a harness asks for them,
    never loaded by ``import fastcnn`` (nor is triton, whose mode TRITON_INTERPRET must set first)."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, fastcnn; print(sorted(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout
    for module in ("fastcnn.cases", "fastcnn.benchmarking", "fastcnn.reporting", "fastcnn.profile", "'triton'"):
        assert module not in loaded, module


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
