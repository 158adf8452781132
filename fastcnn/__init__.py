"""fastcnn: Triton kernels for training convolutional networks in PyTorch.

See README.md. ``fastcnn.info()`` tells where the kernels run on this machine.
"""
__version__ = "0.1.0"

from . import nn, optim  # noqa: E402
from ._backend import FallbackWarning, info  # noqa: E402
from .conv import conv2d  # noqa: E402
from .convert import ConversionReport, convert  # noqa: E402
from .loss import cross_entropy  # noqa: E402
from .norm import batch_norm, batch_norm_relu  # noqa: E402
from .pool import max_pool2d  # noqa: E402

__all__ = ["ConversionReport", "FallbackWarning", "convert", "batch_norm", "batch_norm_relu", "conv2d", "cross_entropy", "max_pool2d", "info", "nn", "optim", "__version__"]
