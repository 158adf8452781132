"""fastcnn: Triton kernels for training convolutional networks in PyTorch.

See README.md and docs/architecture.md. ``fastcnn.info()`` tells where the kernels run on this
machine. The functionals (``fastcnn.conv2d``, ...) are each op module's public names
(``fastcnn/ops/<op>.py``, its ``__all__``).
"""
from . import nn, ops, optim
from ._backend import FallbackWarning, info
from ._version import __version__
from .convert import ConversionReport, convert
from .coverage import Coverage, coverage
from .estimation import Estimate, estimate

__all__ = ["ConversionReport", "Coverage", "Estimate", "FallbackWarning", "convert", "coverage", "estimate", "info", "nn",
           "ops", "optim", "__version__"]
for _module in ops.MODULES:
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
del _module, _name
