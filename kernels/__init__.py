"""Raw Triton kernels of fastcnn, one file per op, installed as ``fastcnn.kernels``.

Nothing here does autograd or argument checking: the launch helpers trust their callers in
``fastcnn.ops`` to have validated devices, dtypes and shapes. Each op module of ``fastcnn.ops``
imports the kernel module of the same name (``fastcnn/ops/conv2d.py`` -> ``kernels/conv2d.py``);
the shared pieces are ``indexing`` (index arithmetic), ``slicing`` (split reductions and their
fp32 partials), ``tiles`` (tile sizes that depend on where the kernels run) and
``multi_tensor`` (one launch for many tensors), and ``interpreter`` (where Triton's interpreter
computes differently from a GPU, and the correction installed when the kernels are interpreted).

``INTERPRETED`` records how the kernels in this package were built. Triton decides at
decoration time (``@triton.jit``) whether a kernel is compiled or interpreted, from its
``TRITON_INTERPRET`` knob, so the value is read from that knob, once, when this package is
first imported. This package imports triton, and fastcnn imports it lazily (on the first
launch): a platform without a usable triton then gets the PyTorch fallback instead of an error.
Interpreted, the interpreter's bfloat16 casts are first made to round as a GPU's do
(``interpreter.install``), so that the CPU tests check the GPU's arithmetic.
"""
from triton import knobs

INTERPRETED = bool(knobs.runtime.interpret)

if INTERPRETED:
    from . import interpreter

    interpreter.install()
