"""What a kernel launch costs, as ``fastcnn.estimate`` counts it: the bytes it reads and writes in
device memory, the FLOPs it does, and the temporary memory it needs while it runs.

Each op module states the launches of each of its operators next to the operator
(``@launches_of(operator)``): a function of the operator's arguments (tensors with shapes,
strides and dtypes, fake or real, never their values) and its output that returns the
:class:`Launch` es the kernels' launchers make for them, pass by pass (a batch-norm statistics
pass and its apply pass each read the input; a split-K weight gradient writes its fp32 partials
and a second kernel reads them back). ``fastcnn.estimate`` finds them here by operator name;
tests/test_estimate.py checks every operator has one and that each gives as many launches as
the kernels make on the same shapes.
"""
import dataclasses
from typing import Optional

import torch

# operator name ("fastcnn::conv2d") -> (function(output, *args, **kwargs) -> [Launch], op family)
PLANS = {}
# Streaming multiprocessors of an H100 or H200 SXM: the launchers size split reductions by it.
GPU_SMS = 132


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch: ``bytes_read`` and ``bytes_written`` of device memory at the least
    (each element its pass touches, once), ``flops`` and the precision they run in (``math``:
    'bf16', 'fp16', 'tf32', 'fp32' or 'fp64'; None for a memory-bound pass), ``workspace``: bytes
    it allocates for itself and frees when it ends (partials, a layout copy)."""

    kernel: str
    bytes_read: int
    bytes_written: int
    flops: int = 0
    math: Optional[str] = None
    workspace: int = 0


def launches_of(operator, family):
    """Register the decorated function as ``operator``'s launches (``operator``: a
    ``torch.library.custom_op``), listed under ``family`` (fastcnn.coverage's kinds of op:
    "convolution", "norm", ...)."""
    def register(function):
        PLANS[str(operator._qualname)] = (function, family)
        return function

    return register


def target_sms():
    """The SM count the launches are planned for: None (the launchers' own count, which the
    interpreter pretends) when the kernels are interpreted, so that tests compare plans with the
    launches made; an H100's otherwise."""
    from . import _backend

    package = _backend.kernels()
    return None if package is not None and package.INTERPRETED else GPU_SMS


def tensor_bytes(tensor):
    """Bytes of device memory ``tensor`` addresses: its elements, or its storage when that is
    smaller (a broadcast view reads each stored element once); 0 for None."""
    if tensor is None:
        return 0
    elements = tensor.numel() * tensor.element_size()
    try:
        return min(elements, tensor.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # a tensor without storage (a functional wrapper)
        return elements


def tensors_in(values):
    """The tensors among ``values``, lists of tensors opened."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found += tensors_in(value)
    return found


def one_pass(kernel, reads, writes, **costs):
    """A launch that reads each tensor of ``reads`` and writes each of ``writes`` once."""
    return Launch(kernel, sum(map(tensor_bytes, tensors_in(reads))), sum(map(tensor_bytes, tensors_in(writes))),
                  **costs)


def restride(tensor, strides):
    """The copy ``fastcnn._layout.with_strides`` makes of ``tensor``, as launches: none when it
    already has ``strides``."""
    from ._layout import has_strides

    return [] if has_strides(tensor, strides) else [one_pass("aten::copy_ (restride)", [tensor], [tensor])]


def math_of(dtype, tf32=False):
    """The precision FLOPs on ``dtype`` operands run in."""
    if dtype == torch.float32:
        return "tf32" if tf32 else "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(dtype, "fp32")
