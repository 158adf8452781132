"""The README and docs/ cannot go stale: every ``fastcnn.<name>`` they mention exists, every file
path they name exists, the README's op table names every public function, module and optimizer,
and docs/architecture.md's table names every op module and kernel file."""
import importlib
import pathlib
import re

import pytest
import torch

import fastcnn
from fastcnn import ops

pytestmark = pytest.mark.every_triton

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def text(page):
    return page.read_text(encoding="utf-8")


def resolves(dotted):
    """Whether ``fastcnn.a.b`` names something: attributes first, then modules (``fastcnn.convert``
    is both the function and its module)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                found = getattr(found, part)
            return True
        except AttributeError:
            continue
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_fastcnn_name_mentioned_exists(page):
    names = set(re.findall(r"\bfastcnn(?:\.[A-Za-z_]\w*)+", text(page)))
    missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"{page.name} mentions names fastcnn does not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_file_mentioned_exists(page):
    """Paths in backticks: repository-relative, or relative to fastcnn/ (``ops/conv2d.py``) or to
    the folder they sit in (``conv2d_gemm.py`` beside ``kernels/conv2d.py``); files a command
    writes are marked "(written ...)"."""
    folders = [ROOT, ROOT / "fastcnn", ROOT / "kernels", ROOT / "tests", ROOT / "scripts", ROOT / "docs"]
    paths = set(re.findall(r"`([\w./-]+\.(?:py|sh|md|json))`(?! \(written)", text(page)))
    missing = sorted(path for path in paths if not any((folder / path).exists() for folder in folders))
    assert not missing, f"{page.name} names files that do not exist: {missing}"


def test_the_readme_op_table_names_every_public_op_module_and_optimizer():
    table = "\n".join(line for line in text(ROOT / "README.md").splitlines() if line.startswith("|"))
    public = [f"fastcnn.{name}" for module in ops.MODULES for name in module.__all__]
    public += [f"fastcnn.optim.{name}" for name, value in vars(fastcnn.optim).items()
               if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) and not name.startswith("_")
               and value.__module__ == "fastcnn.optim"]
    missing = [name for name in public if not re.search(rf"`{re.escape(name)}`", table)]
    missing += [f"fastcnn.nn.{name}" for name, value in vars(fastcnn.nn).items()
                if isinstance(value, type) and issubclass(value, torch.nn.Module) and value.__module__ == "fastcnn.nn"
                and not name.startswith("_") and name not in table]
    assert not missing, f"README.md's op table does not name {missing}"


def test_the_architecture_table_names_every_op_module_and_kernel_file():
    architecture = text(ROOT / "docs" / "architecture.md")
    for module in ops.MODULES:
        name = module.__name__.rsplit(".", 1)[1]
        assert f"`ops/{name}.py`" in architecture, name
    for path in (ROOT / "kernels").glob("*.py"):
        if path.stem != "__init__":
            assert f"{path.name}`" in architecture, path.name


def test_the_reference_names_every_module_convert_replaces():
    """docs/reference.md's list of what ``fastcnn.convert`` swaps (its first paragraph on it)."""
    from fastcnn.convert import REPLACEMENTS

    reference = text(ROOT / "docs" / "reference.md")
    section = reference[reference.index("`fastcnn.convert.REPLACEMENTS`"):]
    section = section[:section.index("\n\n")]
    missing = [torch_type.__name__ for torch_type in REPLACEMENTS if not re.search(
        rf"`(nn\.)?{torch_type.__name__}`|`nn\.{torch_type.__name__[:-2]}1d/2d/3d`", section)]
    assert not missing, f"docs/reference.md does not say convert replaces {missing}"
