"""Where fastcnn's kernels run, and a record of what they launched.

* CUDA tensors: the compiled Triton kernels.
* CPU tensors with ``TRITON_INTERPRET=1`` set before the kernels are first used: the same Triton
  kernels through Triton's interpreter (this is how the test suite runs without a GPU).
* Anything else (CPU without the interpreter, CUDA tensors while the interpreter is on, other
  devices, or no importable triton): the PyTorch reference path of each op, announced by a
  one-time ``FallbackWarning`` so that a converted model still runs, slowly.

The kernels package is imported lazily, on the first launch, so the environment variable may be
set any time before that. Each op imports its own kernel module through its ``_kernels()`` handle
(fastcnn/ops), after ``backend_for`` has found the package importable.
"""
import collections
import importlib
import os
import sys
import warnings

import torch

COMPILED = "compiled"
INTERPRETED = "interpreted"
FALLBACK = "fallback"


class FallbackWarning(UserWarning):
    """A fastcnn op ran its PyTorch reference path instead of a Triton kernel."""


_kernels_module = None
_kernels_import_error = None
_warned_fallback = set()

# op name -> number of Triton launches made so far; read by fastcnn.testing.count_launches.
launch_counts = collections.Counter()


def kernels():
    """The ``fastcnn.kernels`` package, imported on first use; None when triton is unusable."""
    global _kernels_module, _kernels_import_error
    if _kernels_module is None and _kernels_import_error is None:
        try:
            _kernels_module = importlib.import_module("fastcnn.kernels")
        except ImportError as error:  # e.g. a platform without a triton wheel
            _kernels_import_error = error
    return _kernels_module


def _constant_under_compile(function):
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo`` here: that
    import pulls in triton, and triton must not be imported before ``TRITON_INTERPRET`` is set
    (kernels would come out half interpreted). Dynamo reads the same marker the public
    decorator sets; tests/test_library.py's torch.compile(fullgraph=True) tests fail (a graph
    break) if that ever changes."""
    function._dynamo_marked_constant = True
    return function


@_constant_under_compile
def backend_for(device):
    """``COMPILED``, ``INTERPRETED`` or ``FALLBACK`` for tensors on ``device``. torch.compile
    evaluates this once while tracing and keeps the answer (it depends only on the process)."""
    device = torch.device(device)
    package = kernels()
    if package is None:
        return FALLBACK
    if package.INTERPRETED:
        # The interpreter runs on host memory; the multi-tensor kernels dereference raw
        # addresses, so only CPU tensors can go through it.
        return INTERPRETED if device.type == "cpu" else FALLBACK
    return COMPILED if device.type == "cuda" and torch.cuda.is_available() else FALLBACK


def warn_fallback(op, device):
    """Warn once per (op, device type) that ``op`` runs its PyTorch reference path."""
    device_type = torch.device(device).type
    if (op, device_type) in _warned_fallback:
        return
    _warned_fallback.add((op, device_type))
    if kernels() is None:
        why = f"triton could not be imported ({_kernels_import_error})"
    elif kernels().INTERPRETED:
        why = "the kernels were built for Triton's interpreter, which runs on CPU tensors only"
    else:
        why = ("Triton kernels need a CUDA device; set TRITON_INTERPRET=1 before using fastcnn "
               "to run them on CPU through Triton's interpreter")
    warnings.warn(
        f"fastcnn.{op}: running the PyTorch reference path on {device_type} tensors: {why}.",
        FallbackWarning,
        stacklevel=_user_stacklevel(),
    )


# Frames in these folders are library code, not the line a warning should point at: fastcnn's
# own modules, and torch's (Module.__call__ and the optimizer's step hooks sit between a user's
# ``model(x)`` or ``optimizer.step()`` and fastcnn).
_LIBRARY_FOLDERS = tuple(os.path.dirname(os.path.abspath(path)) + os.sep for path in (__file__, torch.__file__))


def _user_stacklevel():
    """The ``stacklevel`` that makes a warning raised by warn_fallback point at the first frame
    outside fastcnn and torch: the user's call."""
    frame = sys._getframe(2)  # warn_fallback's caller; level 1 is warn_fallback itself
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_LIBRARY_FOLDERS):
        frame = frame.f_back
        level += 1
    return level


def record_launch(op, count=1):
    launch_counts[op] += count


def info():
    """Versions, the device, and where kernels run, as a dict (``python -m fastcnn`` prints it)."""
    import platform

    from ._version import __version__

    package = kernels()
    triton_version = None
    if package is not None:
        import triton

        triton_version = triton.__version__
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})"
    return {
        "fastcnn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "triton_import_error": None if _kernels_import_error is None else str(_kernels_import_error),
        "cuda_available": cuda,
        "device": device,
        "kernels_on_cuda_tensors": backend_for("cuda") if cuda else None,
        "kernels_on_cpu_tensors": backend_for("cpu"),
    }
