"""fastcnn's ops, one module each, named as its kernel module in ``kernels/`` (``ops/conv2d.py``
runs ``kernels/conv2d.py``). An op module holds everything the op is on the PyTorch side, in this
order: a ``_kernels()`` handle that imports its kernel module on the first launch; its argument
checks, geometry and output-size math; its cost formula (FLOPs or the least bytes it must move);
its ``torch.library`` operators and autograd; and its functional (public names in ``__all__``,
which ``fastcnn`` re-exports). Its benchmark cases and static launches are in
``fastcnn/cases/<op>.py``, outside what ``import fastcnn`` loads.

``MODULES`` lists them, found in this folder: adding a file here adds the op to ``fastcnn``'s
namespace. docs/architecture.md walks through adding one.
"""
import importlib
import pkgutil

MODULES = tuple(importlib.import_module(f"{__name__}.{info.name}")
                for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
                if not info.name.startswith("_"))
