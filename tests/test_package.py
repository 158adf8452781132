"""The installed package: layout, where kernels run, and the PyTorch fallback path."""
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

import fastcnn
from fastcnn.testing import DEVICE

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, tmp_path, **environment):
    """Run ``code`` in a fresh interpreter from ``tmp_path`` (so the repository is not on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_info_says_where_kernels_run():
    where = fastcnn.info()
    assert where["torch"] == torch.__version__ and where["triton"]
    expected = "compiled" if DEVICE == "cuda" else "interpreted"
    assert where[f"kernels_on_{DEVICE}_tensors"] == expected


def test_kernels_live_inside_the_fastcnn_namespace(tmp_path):
    result = run_python("""
        import importlib.util, fastcnn.kernels.adam
        print(importlib.util.find_spec("kernels"))
        print(fastcnn.kernels.__name__)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "fastcnn.kernels"]


def test_wheel_installs_no_top_level_kernels_package(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), REPO_ROOT], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("fastcnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastcnn/kernels/adam.py" in names and "fastcnn/kernels/__init__.py" in names
    assert "fastcnn/ops/adam.py" in names and "fastcnn/ops/__init__.py" in names  # a wheel without it cannot import
    assert "fastcnn/cases/adam.py" in names  # nor profile
    top_level = {name.split("/")[0] for name in names}
    assert "kernels" not in top_level, top_level


def test_cpu_without_interpreter_uses_the_reference_path_and_warns_once(tmp_path):
    result = run_python("""
        import warnings, torch, fastcnn
        torch.manual_seed(0)
        start = [torch.randn(5, 3), torch.randn(7)]
        ours = [p.clone().requires_grad_() for p in start]
        theirs = [p.double().clone().requires_grad_() for p in start]
        a = fastcnn.optim.AdamW(ours, lr=0.01, amsgrad=True)
        b = torch.optim.AdamW(theirs, lr=0.01, amsgrad=True, foreach=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(5):
                for p, r in zip(ours, theirs):
                    p.grad = torch.randn_like(p)
                    r.grad = p.grad.double()
                a.step()
                b.step()
        fallback = [w for w in caught if issubclass(w.category, fastcnn.FallbackWarning)]
        error = max(((p.double() - r).norm() / r.norm()).item() for p, r in zip(ours, theirs))
        print(len(fallback), fastcnn.info()["kernels_on_cpu_tensors"], error < 1e-6)
        print(fallback[0].message)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 fallback True", result.stdout
    assert "TRITON_INTERPRET=1" in lines[1]


def test_conv2d_without_interpreter_on_cpu_falls_back_to_torch_with_a_warning(tmp_path):
    result = run_python("""
        import warnings
        import torch, torch.nn.functional as F
        import fastcnn
        x, w, b = torch.randn(2, 4, 7, 6), torch.randn(6, 2, 3, 3), torch.randn(6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fastcnn.conv2d(x, w, b, padding="same", groups=2)
            again = fastcnn.nn.Conv2d(4, 6, 3)(x)
        fallback = [w for w in caught if issubclass(w.category, fastcnn.FallbackWarning)]
        print(len(fallback), torch.equal(out, F.conv2d(x, w, b, padding="same", groups=2)), again.shape)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "1 True torch.Size([2, 6, 5, 4])", result.stdout


def test_fallback_warning_points_at_the_callers_line(tmp_path):
    """The FallbackWarning names the user's line (the functional call, the module call, the
    optimizer step), not a line inside fastcnn or torch."""
    result = run_python("""
        import warnings, torch, fastcnn
        x = torch.randn(2, 3, 8, 8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastcnn.max_pool2d(x, 2)  # line 6
            fastcnn.nn.Conv2d(3, 4, 3)(x)  # line 7
            fastcnn.nn.BatchNorm2d(3)(x)  # line 8
            p = torch.nn.Parameter(torch.randn(3)); p.grad = torch.randn(3)
            fastcnn.optim.Adam([p]).step()  # line 10
            fastcnn.cross_entropy(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))  # line 11
        for w in caught:
            if issubclass(w.category, fastcnn.FallbackWarning):
                print(w.filename, w.lineno)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [f"<string> {line}" for line in (6, 7, 8, 10, 11)], result.stdout


def test_python_m_fastcnn_help_and_hint(tmp_path):
    """``python -m fastcnn --help`` is a real help text; without a GPU and without the interpreter
    the report says how to run the kernels (TRITON_INTERPRET=1 before importing triton)."""
    help_text = subprocess.run([sys.executable, "-m", "fastcnn", "--help"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=300)
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: python -m fastcnn"), help_text.stdout
    assert "TRITON_INTERPRET=1" in help_text.stdout and "kernels_on_cpu_tensors" not in help_text.stdout
    report = run_python("import sys, fastcnn.__main__ as m; sys.exit(m.main([]))", tmp_path)
    assert report.returncode == 0, report.stderr
    lines = dict(line.split(":", 1) for line in report.stdout.splitlines())
    lines = {key.strip(): value.strip() for key, value in lines.items()}
    if not torch.cuda.is_available():
        assert lines["kernels_on_cpu_tensors"] == "fallback"
        assert "set TRITON_INTERPRET=1 before importing triton" in lines["hint"], report.stdout
    interpreted = run_python("import sys, fastcnn.__main__ as m; sys.exit(m.main([]))", tmp_path, TRITON_INTERPRET="1")
    assert "kernels_on_cpu_tensors: interpreted" in interpreted.stdout, interpreted.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the benchmarks run instead of skipping")
def test_skipped_benchmarks_say_why_once(tmp_path):
    bench = os.path.join(REPO_ROOT, "bench")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_ops_bench.py"],
                            cwd=bench, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.count("benchmarks need a CUDA GPU") == 1, result.stdout


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augment"])
def test_demo_trains_the_same_with_fastcnn_kernels(augment, tmp_path):
    """The README's demo, shortened to two steps: fastcnn's converted model, cross-entropy and Adam
    follow torch's losses on the digits data, and the plot is written; with --augment both runs
    train on the same batches augmented by fastcnn.transforms."""
    environment = {} if torch.cuda.is_available() else {"TRITON_INTERPRET": "1"}
    plot = tmp_path / "demo.png"
    extra = ", '--augment'" if augment else ""
    result = run_python(f"import sys, fastcnn.demo; sys.exit(fastcnn.demo.main(['--epochs', '1', '--max-steps', '2', "
                        f"'--min-accuracy', '0', '--plot', {str(plot)!r}{extra}]))", tmp_path, **environment)
    assert result.returncode == 0, result.stderr[-3000:]
    largest = [line for line in result.stdout.splitlines() if line.startswith("largest difference")]
    assert largest and float(largest[0].split()[-1]) < 1e-5, result.stdout
    assert "1437 training and 360 test images" in result.stdout and "2 BatchNorm2d+ReLU fused" in result.stdout
    assert ("augmentation: fastcnn.transforms.RandomCrop" in result.stdout) == augment
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_scripts_are_installed():
    from importlib.metadata import entry_points

    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("fastcnn-profile") == "fastcnn.profile:_console"
    assert scripts.get("fastcnn-info") == "fastcnn.__main__:main"


def test_demo_offers_every_fused_optimizer():
    """``python -m fastcnn.demo --optimizer X`` builds fastcnn.optim.X and torch.optim.X alike."""
    from fastcnn import demo

    assert set(demo.OPTIMIZERS) == set(demo.DEFAULT_LR) == {"adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta"}
    for name, (class_name, options) in demo.OPTIMIZERS.items():
        ours, theirs = getattr(fastcnn.optim, class_name), getattr(torch.optim, class_name)
        assert issubclass(ours, theirs)
        ours([torch.zeros(2, requires_grad=True)], lr=demo.DEFAULT_LR[name], **options)
