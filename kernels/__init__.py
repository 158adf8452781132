"""Raw Triton kernels of fastcnn, one file per op, installed as ``fastcnn.kernels``.

Nothing here does autograd or argument checking: the launch helpers trust their callers in
``fastcnn`` to have validated devices, dtypes and shapes.

``INTERPRETED`` records how the kernels in this package were built. Triton decides at
decoration time (``@triton.jit``) whether a kernel is compiled or interpreted, from the
``TRITON_INTERPRET`` environment variable, so the value is fixed once this package is imported.
"""
import os

# Same spelling rules as triton's own env_bool knob.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")
