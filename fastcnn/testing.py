"""Test helpers shared by every fastcnn op's tests (and usable by anyone checking a kernel).

* ``use_interpreter_without_gpu()``: route kernels through Triton's interpreter when there is no
  GPU; must run before triton is imported (tests/conftest.py calls it first thing).
* ``fresh_seed()``: a new random seed per test run, overridable with ``FASTCNN_TEST_SEED``; tests
  print it and put it in every failure message so a failure can be replayed.
* ``make_tensor``: random data that is never zero, in contiguous, channels_last or sliced
  (non-contiguous) layouts; ``poisoned_like``: NaN-filled outputs so unwritten elements show;
  ``strided_copy``: given values (integer targets, optimizer state) in a poisoned strided view.
* ``relative_error`` / ``assert_close``: ||out - ref|| / ||ref|| against a float64 reference with
  the per-dtype tolerances of ``fastcnn.dtypes``; a failure names the first element out of
  tolerance, its index and both values. ``flat_parameters``: a model's parameters as one vector,
  to compare whole models with ``relative_error``.
* ``record_aten_ops`` and ``count_launches``: prove the Triton kernel ran and the ATen op it
  replaces did not.
* ``assert_raises_like_torch``: bad input raises torch's exception type, in torch's words,
  before any launch; ``check_opinfo_error_inputs``: every error input of PyTorch's OpInfo for
  the op, through fastcnn. ``same_layout``: two tensors laid out alike.
* ``ON_GPU`` and ``gpu_only(why)``: the marker of tests that need a CUDA device.
"""
import contextlib
import os
import secrets
import sys

import torch

from .dtypes import tolerance

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
SEED_VARIABLE = "FASTCNN_TEST_SEED"

# Layouts every op is tested in. "sliced" is a view with a step of 2 along the last dimension.
LAYOUTS = ("contiguous", "channels_last", "sliced")


def gpu_only(why):
    """pytest marker: skip the test unless a CUDA device is present (``why`` it needs one, e.g.
    "fp16/bf16": the interpreter cannot run them, or a case too large for it)."""
    import pytest

    return pytest.mark.skipif(not ON_GPU, reason=f"needs a CUDA device ({why})")


def use_interpreter_without_gpu():
    """Set ``TRITON_INTERPRET=1`` when no CUDA device is present, before fastcnn.kernels is imported
    (Triton reads it when each kernel is decorated)."""
    if torch.cuda.is_available():
        return False
    os.environ["TRITON_INTERPRET"] = "1"
    kernels = sys.modules.get("fastcnn.kernels")
    if kernels is not None and not kernels.INTERPRETED:  # decided when the package was imported
        raise RuntimeError("fastcnn.kernels was imported before TRITON_INTERPRET=1 could be set: the kernels "
                           "would not run through the interpreter")
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
    magnitude = torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low
    sign = torch.randint(0, 2, shape, generator=generator, dtype=torch.int8) * 2 - 1
    return in_layout((magnitude * sign).to(device=device, dtype=dtype), layout)


def in_layout(values, layout):
    """A copy of ``values`` laid out as ``layout`` (one of LAYOUTS): "contiguous"; "channels_last"
    (4-d only); "sliced", a view with a step of 2 along the last dimension whose skipped elements
    are poisoned (``poisoned_like``), so a kernel that reads the gaps shows."""
    if layout == "channels_last":
        if values.dim() != 4:
            raise ValueError(f"channels_last needs a 4-d shape, got {tuple(values.shape)}")
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        if values.dim() == 0:
            return values.clone()
        wide = poisoned_like(values.new_empty(values.shape[:-1] + (2 * values.shape[-1],)))
        view = wide[..., ::2]
        view.copy_(values)
        return view
    if layout != "contiguous":
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return values.contiguous()


def poisoned_like(tensor, dtype=None):
    """An output buffer shaped like ``tensor`` filled with NaN (or the dtype's max for integers)."""
    out = torch.empty_like(tensor, dtype=dtype or tensor.dtype)
    if out.is_floating_point() or out.is_complex():
        return out.fill_(float("nan"))
    return out.fill_(torch.iinfo(out.dtype).max)


def _float64_pairs(tensor):
    """``tensor`` in float64 on the CPU, a complex one as its (real, imaginary) pairs (a plain
    cast to float64 would drop the imaginary parts)."""
    tensor = tensor.detach()
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor.resolve_conj())
    return tensor.to(torch.float64).cpu()


# Strided views an in-place or elementwise op must handle as torch does: a channel slice, a step,
# a sliced channels_last tensor, a sliced permutation (of a base from ``strided_view_base``).
STRIDED_VIEWS = {"channels": lambda t: t[:, 1:3], "step": lambda t: t[:, ::2], "channels_last": lambda t: t[..., ::2],
                 "permuted": lambda t: t.permute(2, 0, 3, 1)[:, :, ::2]}


def strided_view_base(values, view):
    """A copy of the 4-d ``values`` to take ``STRIDED_VIEWS[view]`` of: channels_last for the
    channels_last view (so that the view is of a channels_last tensor), contiguous otherwise."""
    return values.clone(memory_format=torch.channels_last if view == "channels_last" else torch.contiguous_format)


@torch.no_grad()
def start_from(model, optimizer, reference, reference_optimizer):
    """``model`` and ``optimizer`` set to ``reference``'s and ``reference_optimizer``'s state
    (parameters, buffers, optimizer state), rounded to their dtypes (``load_state_dict`` casts
    the optimizer's state to the parameters' dtype): a compared step then starts from the same
    state as the reference's, so rounding differences of earlier steps do not compound."""
    for mine, theirs in zip(model.state_dict().values(), reference.state_dict().values()):
        mine.copy_(theirs)
    optimizer.load_state_dict(reference_optimizer.state_dict())


def relative_error(actual, expected):
    """||actual - expected|| / ||expected|| in float64 (absolute error when expected is all zero);
    NaN anywhere in ``actual`` where ``expected`` is finite counts as infinite error. Complex
    tensors are compared as their (real, imaginary) pairs."""
    actual, expected = _float64_pairs(actual), _float64_pairs(expected)
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


def flat_parameters(model):
    """Every parameter of ``model``, flattened and concatenated in ``model.parameters()`` order."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def assert_close(actual, expected, dtype, *, what, seed, reduction_length=1, error_floor=0.0):
    """Assert the relative error of ``actual`` is within the tolerance for ``dtype``.

    ``error_floor`` is an absolute norm of error the caller can prove unavoidable (e.g. rounding
    of a stored value much larger than the quantity compared); it is added to the allowance."""
    error = relative_error(actual, expected)
    scale = _float64_pairs(expected).norm().item()
    limit = tolerance(dtype, reduction_length) + (error_floor / scale if scale > 0 else error_floor)
    if not error <= limit:
        raise AssertionError(f"{what}: relative error {error:.3e} > {limit:.1e} for {dtype}; "
                             f"{first_mismatch(actual, expected, limit)} (replay with {SEED_VARIABLE}={seed})")
    return error


def first_mismatch(actual, expected, limit):
    """Where ``actual`` first (in index order) leaves ``expected``, in words for a message: a NaN or
    infinity that does not match, or a difference over ``limit`` times the reference's
    root-mean-square value (each element's share of a relative-error budget of ``limit``; when the
    relative error is over ``limit``, some element is), and where the largest difference is."""
    actual, expected = _float64_pairs(actual), _float64_pairs(expected)
    if actual.numel() == 0:
        return "no elements"
    finite = torch.isfinite(expected)
    rms = expected[finite].norm().item() / max(1, finite.sum().item()) ** 0.5
    wrong = (torch.isnan(actual) != torch.isnan(expected)) | (torch.isinf(expected) & (actual != expected))
    wrong |= finite & ((actual - expected).abs() > limit * rms)
    difference = torch.where(finite, (actual - expected).abs(), torch.zeros_like(actual))
    largest = tuple(int(i) for i in torch.unravel_index(difference.argmax(), actual.shape))
    described = (f"largest difference at index {largest}: {actual[largest].item()!r} vs expected "
                 f"{expected[largest].item()!r}")
    if not wrong.any():
        return described
    first = tuple(int(i) for i in torch.unravel_index(wrong.flatten().nonzero()[0, 0], actual.shape))
    return (f"first mismatch at index {first}: {actual[first].item()!r} vs expected {expected[first].item()!r} "
            f"({int(wrong.sum())} of {actual.numel()} elements off); {described}")


def record_aten_ops():
    """``fastcnn.coverage.record_ops``: yield a list that fills with the names of the ops
    dispatched inside the block (fastcnn's operators by name, nothing of what runs inside them),
    so pair this with ``count_launches``."""
    from .coverage import record_ops

    return record_ops()


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


def assert_raises_like_torch(torch_call, fastcnn_call, *, op, fragment, error=None):
    """``torch_call()`` and ``fastcnn_call()`` raise the same exception type (``error`` when given);
    fastcnn's message starts with ``fastcnn.<op>:`` and contains ``fragment``, which must also be
    in torch's message (the words a user searches for); no kernel launches. Returns fastcnn's
    exception."""
    try:
        torch_call()
    except Exception as raised:  # noqa: BLE001  (any exception: its type is what we compare)
        torch_error = raised
    else:
        raise AssertionError("torch raised nothing: the case does not test torch's contract")
    assert fragment in str(torch_error), f"{fragment!r} is not in torch's message {str(torch_error)!r}"
    with count_launches() as launched:
        try:
            fastcnn_call()
        except Exception as raised:  # noqa: BLE001
            ours = raised
        else:
            raise AssertionError(f"fastcnn.{op} raised nothing where torch raised {torch_error!r}")
    assert type(ours) is type(torch_error), f"fastcnn raised {ours!r}, torch raised {torch_error!r}"
    assert str(ours).startswith(f"fastcnn.{op}: "), str(ours)
    assert fragment in str(ours), f"{fragment!r} is not in fastcnn's message {str(ours)!r}"
    assert not launched, dict(launched)
    assert error is None or type(ours) is error, f"expected {error.__name__}, both raised {ours!r}"
    return ours


def check_opinfo_error_inputs(name, function, *, op, minimum=1):
    """Every error input of PyTorch's OpInfo ``name`` through ``function`` (fastcnn's op): torch's
    exception type, a message matching the OpInfo's regex and starting ``fastcnn.<op>:``, no
    launch. At least ``minimum`` inputs must exist, so a renamed OpInfo cannot pass by testing
    nothing. Returns how many ran."""
    import pytest

    errors = list(opinfo(name).error_inputs(DEVICE))
    assert len(errors) >= minimum, len(errors)
    for error in errors:
        sample = error.sample_input
        with count_launches() as launched, pytest.raises(error.error_type, match=error.error_regex) as raised:
            function(sample.input, *sample.args, **sample.kwargs)
        assert str(raised.value).startswith(f"fastcnn.{op}: "), str(raised.value)
        assert not launched, dict(launched)
    return len(errors)


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


def torch_test_helpers(module):
    """(``torch.testing._internal.<module>``, None), or (None, why) when it cannot be imported:
    PyTorch's test helpers import ``expecttest``, which a bare GPU machine may lack (carry its
    wheel: scripts/gpu_check.sh installs the wheels it finds in .whl/)."""
    import importlib

    try:
        return importlib.import_module(f"torch.testing._internal.{module}"), None
    except ModuleNotFoundError as error:
        return None, f"PyTorch's test helpers need the '{error.name}' package, which is not installed"


def opinfo(name):
    """PyTorch's own OpInfo entry for ``name`` (e.g. "nn.functional.conv2d"): its sample and
    error inputs are the reference test cases of the op fastcnn replaces. Skips the calling test
    when PyTorch's test helpers cannot be imported (``torch_test_helpers``)."""
    import pytest

    helpers, missing = torch_test_helpers("common_methods_invocations")
    if helpers is None:
        pytest.skip(missing)
    return next(op for op in helpers.op_db if op.name == name)


def case_random(seed, case):
    """A ``random.Random`` for case ``case`` of a randomized test run with ``seed``."""
    import random

    return random.Random(seed * 100 + case)
