"""Test helpers shared by every fastcnn op's tests (and usable by anyone checking a kernel).

* ``use_interpreter_without_gpu()``: route kernels through Triton's interpreter when there is no
  GPU; must run before triton is imported (tests/conftest.py calls it first thing).
* ``fresh_seed()``: a new random seed per test run, overridable with ``FASTCNN_TEST_SEED``; tests
  print it and put it in every failure message so a failure can be replayed.
* ``make_tensor``: random data that is never zero, in contiguous, channels_last or sliced
  (non-contiguous) layouts; ``poisoned_like``: NaN-filled outputs so unwritten elements show;
  ``strided_copy``: given values (integer targets, optimizer state) in a poisoned strided view.
* ``relative_error`` / ``assert_close``: ||out - ref|| / ||ref|| against a float64 reference with
  the per-dtype tolerances of ``fastcnn.dtypes``.
* ``record_aten_ops`` and ``count_launches``: prove the Triton kernel ran and the ATen op it
  replaces did not.
* ``assert_raises_like_torch``: bad input raises torch's exception type, in torch's words,
  before any launch. ``same_layout``: two tensors laid out alike.
"""
import contextlib
import os
import secrets
import sys

import torch

from .dtypes import tolerance

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEED_VARIABLE = "FASTCNN_TEST_SEED"

# Layouts every op is tested in. "sliced" is a view with a step of 2 along the last dimension.
LAYOUTS = ("contiguous", "channels_last", "sliced")


def use_interpreter_without_gpu():
    """Set ``TRITON_INTERPRET=1`` when no CUDA device is present, before triton is imported."""
    if torch.cuda.is_available():
        return False
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("triton was imported before TRITON_INTERPRET=1 could be set: the kernels "
                           "would not run through the interpreter")
    os.environ["TRITON_INTERPRET"] = "1"
    return True


def fresh_seed():
    """A seed for this run: ``$FASTCNN_TEST_SEED`` when set (to replay a failure), else random."""
    configured = os.environ.get(SEED_VARIABLE)
    return int(configured) if configured else secrets.randbits(31)


def make_tensor(shape, dtype=torch.float32, device=DEVICE, *, layout="contiguous", generator=None,
                low=0.1, high=1.0):
    """Random values with magnitude in [low, high) and random sign: never zero, so a kernel that
    skips an element or multiplies by a missing term cannot pass by accident."""
    shape = tuple(shape)
    base_shape = shape[:-1] + (2 * shape[-1],) if layout == "sliced" and shape else shape
    magnitude = torch.rand(base_shape, generator=generator, dtype=torch.float64) * (high - low) + low
    sign = torch.randint(0, 2, base_shape, generator=generator, dtype=torch.int8) * 2 - 1
    values = (magnitude * sign).to(device=device, dtype=dtype)
    if layout == "channels_last":
        if values.dim() != 4:
            raise ValueError(f"channels_last needs a 4-d shape, got {shape}")
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        return values[..., ::2]
    if layout != "contiguous":
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return values


def poisoned_like(tensor, dtype=None):
    """An output buffer shaped like ``tensor`` filled with NaN (or the dtype's max for integers)."""
    out = torch.empty_like(tensor, dtype=dtype or tensor.dtype)
    if out.is_floating_point() or out.is_complex():
        return out.fill_(float("nan"))
    return out.fill_(torch.iinfo(out.dtype).max)


def relative_error(actual, expected):
    """||actual - expected|| / ||expected|| in float64 (absolute error when expected is all zero);
    NaN anywhere in ``actual`` where ``expected`` is finite counts as infinite error."""
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.detach().to(torch.float64).cpu()
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if torch.isnan(actual).ne(torch.isnan(expected)).any():
        return float("inf")
    finite = torch.isfinite(expected)
    infinite = torch.isinf(expected)  # NaN positions were matched above
    if torch.ne(actual[infinite], expected[infinite]).any():
        return float("inf")
    difference = (actual[finite] - expected[finite]).norm().item()
    scale = expected[finite].norm().item()
    return difference / scale if scale > 0 else difference


def assert_close(actual, expected, dtype, *, what, seed, reduction_length=1, error_floor=0.0):
    """Assert the relative error of ``actual`` is within the tolerance for ``dtype``.

    ``error_floor`` is an absolute norm of error the caller can prove unavoidable (e.g. rounding
    of a stored value much larger than the quantity compared); it is added to the allowance."""
    error = relative_error(actual, expected)
    scale = expected.detach().to(torch.float64).norm().item()
    limit = tolerance(dtype, reduction_length) + (error_floor / scale if scale > 0 else error_floor)
    assert error <= limit, (f"{what}: relative error {error:.3e} > {limit:.1e} for {dtype} "
                            f"(replay with {SEED_VARIABLE}={seed})")
    return error


@contextlib.contextmanager
def record_aten_ops():
    """Yield a list that fills with the names (``aten::add_`` style) of the ops dispatched inside
    the block. fastcnn's own operators are listed by name (``fastcnn::conv2d``); what runs inside
    them is not seen (the mode is off while an op runs), so pair this with ``count_launches``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    names = []

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            names.append(func._schema.name + (("." + func._overloadname) if func._overloadname != "default" else ""))
            return func(*args, **(kwargs or {}))

    with _Recorder():
        yield names


@contextlib.contextmanager
def count_launches():
    """Yield a Counter that holds, after the block, the Triton launches made in it per op."""
    from collections import Counter

    from . import _backend

    before = Counter(_backend.launch_counts)
    launched = Counter()
    try:
        yield launched
    finally:
        launched.update(_backend.launch_counts)
        launched.subtract(before)
        for op in [op for op, count in launched.items() if count == 0]:
            del launched[op]


def assert_raises_like_torch(torch_call, fastcnn_call, *, op, fragment):
    """``torch_call()`` and ``fastcnn_call()`` raise the same exception type; fastcnn's message
    starts with ``fastcnn.<op>:`` and contains ``fragment``, which must also be in torch's
    message (the words a user searches for); no kernel launches. Returns fastcnn's exception."""
    try:
        torch_call()
    except Exception as error:  # noqa: BLE001  (any exception: its type is what we compare)
        torch_error = error
    else:
        raise AssertionError("torch raised nothing: the case does not test torch's contract")
    assert fragment in str(torch_error), f"{fragment!r} is not in torch's message {str(torch_error)!r}"
    with count_launches() as launched:
        try:
            fastcnn_call()
        except Exception as error:  # noqa: BLE001
            ours = error
        else:
            raise AssertionError(f"fastcnn.{op} raised nothing where torch raised {torch_error!r}")
    assert type(ours) is type(torch_error), f"fastcnn raised {ours!r}, torch raised {torch_error!r}"
    assert str(ours).startswith(f"fastcnn.{op}: "), str(ours)
    assert fragment in str(ours), f"{fragment!r} is not in fastcnn's message {str(ours)!r}"
    assert not launched, dict(launched)
    return ours


def strided_copy(tensor, step=2):
    """``tensor``'s values in a non-contiguous view: every stride ``step`` times the dense one,
    the elements between poisoned (``poisoned_like``), so a kernel that reads or writes the view
    as if it were contiguous shows. Those gap elements are ``view._base[..., 1:]``."""
    buffer = poisoned_like(torch.empty(tuple(tensor.shape) + (step,), dtype=tensor.dtype, device=tensor.device))
    view = buffer[..., 0]
    view.copy_(tensor)
    return view


def same_layout(actual, expected):
    """True when both tensors have one shape and the same strides wherever a dimension has more
    than one element (strides of size-1 dimensions address nothing)."""
    return actual.shape == expected.shape and all(
        a == b for size, a, b in zip(actual.shape, actual.stride(), expected.stride()) if size > 1)


def opinfo(name):
    """PyTorch's own OpInfo entry for ``name`` (e.g. "nn.functional.conv2d"): its sample and
    error inputs are the reference test cases of the op fastcnn replaces."""
    from torch.testing._internal.common_methods_invocations import op_db

    return next(op for op in op_db if op.name == name)


def case_random(seed, case):
    """A ``random.Random`` for case ``case`` of a randomized test run with ``seed``."""
    import random

    return random.Random(seed * 100 + case)
