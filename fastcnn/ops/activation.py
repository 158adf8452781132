"""Standalone activations (``fastcnn.relu``, ``silu``, ``gelu``, ...) over ``kernels/activation.py``,
mirroring ``torch.nn.functional``'s, and ``resolve_activation``: the one place that turns what a
user passes as ``activation=`` (a name, or a torch activation module) into the kernel's
(kind, parameter) pair, for these and for every norm that fuses an activation epilogue.

One operator, ``fastcnn::activation``, with an autograd formula whose backward is
``fastcnn::activation_backward``; both walk dense tensors (any dimension order) as flat arrays,
so the output is laid out as the input. Saved for backward: one tensor, the one torch keeps: the
output for relu, sigmoid and tanh (``DERIVATIVE_FROM_OUTPUT``), the input for the others. ``inplace=True`` writes into the input when autograd does not
need it; when it does, the result is computed out of place (torch would save the output and
write the input; fastcnn never writes into a tensor autograd may have saved).
"""
import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass, restride
from .._layout import dense_copy, with_strides
from ..dtypes import aten_type_name
from ..validation import check_kernel_dtype

__all__ = ["relu", "relu6", "leaky_relu", "elu", "silu", "gelu", "hardswish", "hardsigmoid", "sigmoid", "tanh"]

OP = "activation"

# Every activation the kernels compute (kernels/activation.py's ``activate`` branches on these
# names), each norm's fused epilogue included: the one list.
KINDS = ("relu", "relu6", "leaky_relu", "elu", "silu", "gelu", "gelu_tanh", "hardswish", "hardsigmoid", "sigmoid",
         "tanh")
# The kinds whose backward torch computes from the result (threshold_backward, sigmoid_backward,
# tanh_backward): for these autograd keeps the output, as torch keeps it, and every other kind
# keeps the input; a norm fused with a residual add and one of these keeps its output too.
DERIVATIVE_FROM_OUTPUT = ("relu", "sigmoid", "tanh")
# kind -> (torch module class, the module attribute holding the kernel's parameter, its default);
# gelu_tanh is GELU(approximate="tanh").
TORCH_MODULES = {
    "relu": (torch.nn.ReLU, None, 0.0),
    "relu6": (torch.nn.ReLU6, None, 0.0),
    "leaky_relu": (torch.nn.LeakyReLU, "negative_slope", 0.01),
    "elu": (torch.nn.ELU, "alpha", 1.0),
    "silu": (torch.nn.SiLU, None, 0.0),
    "gelu": (torch.nn.GELU, None, 0.0),
    "hardswish": (torch.nn.Hardswish, None, 0.0),
    "hardsigmoid": (torch.nn.Hardsigmoid, None, 0.0),
    "sigmoid": (torch.nn.Sigmoid, None, 0.0),
    "tanh": (torch.nn.Tanh, None, 0.0),
}
ACTIVATION_FORMS = ('the valid forms are a name ("relu", "gelu_tanh", ...), a 1-tuple of one, ("leaky_relu", '
                    'negative_slope), ("elu", alpha), ("gelu", "none" or "tanh"), or a torch activation module')


def _kernels():
    """kernels/activation.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import activation

    return activation


# ----------------------------------------------------------------------------- checks
def resolve_activation(op, activation):
    """(kind, parameter) for ``activation=``: None; a name of ``KINDS`` ("leaky_relu" and "elu"
    with torch's default slope / alpha; "gelu_tanh" is GELU(approximate="tanh")); a (name,
    parameter) pair; or an instance of one of torch's activation modules (nn.LeakyReLU(0.2),
    nn.GELU(approximate="tanh"), ...). Anything else is a ValueError naming the supported list."""
    if activation is None:
        return None, 0.0
    if isinstance(activation, torch.nn.Module):
        given = type(activation)
        if "fastcnn_kind" in given.__dict__:  # fastcnn.nn's drop-in: the torch module it subclasses
            given = given.__mro__[1]
        for kind, (module_type, attribute, _) in TORCH_MODULES.items():
            if given is module_type:
                if kind == "gelu":
                    return ("gelu_tanh" if activation.approximate == "tanh" else "gelu"), 0.0
                return kind, float(getattr(activation, attribute)) if attribute else 0.0
        raise ValueError(f"{op}: activation module {type(activation).__name__} is not supported; fastcnn fuses "
                         f"{', '.join(module.__name__ for module, _, _ in TORCH_MODULES.values())} here "
                         f"(and PReLU, whose slopes are learned, into the norms and linear)")
    name, parameter = activation, None
    if isinstance(activation, (tuple, list)) and len(activation) in (1, 2):
        name, parameter = (*activation, None)[:2]
    if not isinstance(name, str) or name not in KINDS:
        raise ValueError(f"{op}: activation must be None or one of {', '.join(KINDS)}, got {activation!r}; "
                         f"{ACTIVATION_FORMS}")
    if name == "gelu" and parameter in ("none", "tanh"):  # F.gelu's approximate argument
        return ("gelu_tanh" if parameter == "tanh" else "gelu"), 0.0
    attribute = TORCH_MODULES.get(name, (None, None, 0.0))[1]
    if parameter is None:
        return name, TORCH_MODULES.get(name, (None, None, 0.0))[2]
    if attribute is None and parameter == 0.0 and not isinstance(parameter, (bool, str)):
        return name, 0.0  # the (kind, 0.0) pairs fastcnn itself stores, e.g. a fused norm's ``activation``
    if attribute is None or isinstance(parameter, bool) or not isinstance(parameter, (int, float)):
        raise ValueError(f"{op}: activation {activation!r} is not supported: "
                         + (f"{name} takes no parameter" if attribute is None else f"{name}'s {attribute} must be a "
                            f"number") + f"; {ACTIVATION_FORMS}")
    return name, float(parameter)


def resolve_fused_activation(op, activation):
    """(kind, parameter, slope) for the ``activation=`` of an op whose kernels fuse PReLU (the
    norms, linear): ``resolve_activation``'s pair and None, or for an ``nn.PReLU`` module (or a
    ("prelu", weight) pair, F.prelu's weight tensor) ("prelu", 0.0, its weight): the learnable
    slopes the kernel reads per channel and whose gradient its backward sums."""
    if isinstance(activation, torch.nn.PReLU):
        return "prelu", 0.0, activation.weight
    if (isinstance(activation, (tuple, list)) and len(activation) == 2 and activation[0] == "prelu"
            and isinstance(activation[1], torch.Tensor)):
        return "prelu", 0.0, activation[1]
    return (*resolve_activation(op, activation), None)


def prelu_channel_slopes(op, slope, output):
    """PReLU's slopes as the vector of ``output``'s C channels (dim 1) that a fusing kernel reads:
    after F.prelu's checks against ``output`` (its count, dtype and device, in torch's words), one
    slope expanded with stride 0 (autograd sums its C gradients back to it)."""
    from .prelu import check_prelu

    return slope.reshape(-1).expand(check_prelu(op, output, slope))


def apply_activation(out, kind, parameter, slope=None, *, fallback=True):
    """act(out) computed on its own, after an op that did not fuse it: torch's module (or
    F.prelu) on the fallback path, fastcnn's kernels otherwise."""
    if kind is None:
        return out
    if kind == "prelu":
        from .prelu import prelu

        return torch.nn.functional.prelu(out, slope) if fallback else prelu(out, slope)
    return module_for(kind, parameter)(out) if fallback else activation(out, kind, parameter)


def module_for(kind, parameter):
    """The torch module computing (kind, parameter): what the fallback and the references run."""
    if kind == "gelu_tanh":
        return torch.nn.GELU(approximate="tanh")
    module_type, attribute, _ = TORCH_MODULES[kind]
    return module_type(**({attribute: parameter} if attribute else {}))


# What torch does with integer and bool input, by kind: relu and relu6 (hardtanh) compute
# integers (fastcnn refuses them: its kernels take floats) and refuse bools in these words;
# sigmoid and tanh promote to the default float dtype; the rest have no integer kernel.
BOOL_REFUSALS = {"relu": "Boolean inputs not supported for relu", "relu6": "Bool inputs not supported for hardtanh"}
PROMOTES_INTEGERS = ("sigmoid", "tanh")
ATEN_KERNEL_NAMES = {"gelu": "GeluKernelImpl", "gelu_tanh": "GeluKernelImpl"}


def check_activation_input(op, input, kind):
    """Validate ``input`` for activation ``kind`` as torch does; return it, promoted to the default
    float dtype where torch promotes (sigmoid and tanh of integers)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: argument 'input' must be a Tensor, not {type(input).__name__}")
    if not (input.is_floating_point() or input.is_complex()):
        if kind in PROMOTES_INTEGERS:
            input = input.to(torch.get_default_dtype())
        elif input.dtype == torch.bool and kind in BOOL_REFUSALS:
            raise RuntimeError(f"{op}: {BOOL_REFUSALS[kind]}")
        elif kind in BOOL_REFUSALS:  # the one deliberate difference: torch computes these integers
            raise TypeError(f"{op}: input of dtype {input.dtype} is not supported by fastcnn's kernels")
        else:
            kernel = ATEN_KERNEL_NAMES.get(kind, f"{kind}_{input.device.type}")
            raise NotImplementedError(f'{op}: "{kernel}" not implemented for \'{aten_type_name(input.dtype)}\'')
    check_kernel_dtype(op, input)
    return input


# ----------------------------------------------------------------------------- cost
def bytes_moved(numel, element_size, backward):
    """Forward reads x and writes y; backward reads x and dy and writes dx."""
    return numel * element_size * (5 if backward else 2)


# ----------------------------------------------------------------------------- operators and autograd
@torch.library.custom_op("fastcnn::activation", mutates_args=())
def _activation_op(input: Tensor, kind: str, parameter: float) -> Tensor:
    """act(input) for a dense input; the output has the input's strides."""
    out = torch.empty_like(input)
    if input.numel():
        with torch.profiler.record_function(f"fastcnn::{kind}"):
            _backend.record_launch(OP, _kernels().forward(input, out, kind=kind, parameter=parameter))
    return out


@_activation_op.register_fake
def _(input, kind, parameter):
    return torch.empty_like(input)


@torch.library.custom_op("fastcnn::activation_", mutates_args=("input",))
def _activation_inplace_op(input: Tensor, kind: str, parameter: float) -> None:
    """input = act(input), for a dense input autograd does not need."""
    if input.numel():
        with torch.profiler.record_function(f"fastcnn::{kind}_"):
            _backend.record_launch(OP, _kernels().forward(input, input, kind=kind, parameter=parameter))


@_activation_inplace_op.register_fake
def _(input, kind, parameter):
    return None


@torch.library.custom_op("fastcnn::activation_backward", mutates_args=())
def _activation_backward_op(grad_out: Tensor, saved: Tensor, kind: str, parameter: float,
                            from_output: bool) -> Tensor:
    """The input's gradient from the saved input, or (``from_output``) the saved output."""
    grad_out = with_strides(grad_out, saved.stride())
    grad_input = torch.empty_like(saved)
    if saved.numel():
        with torch.profiler.record_function(f"fastcnn::{kind} backward"):
            _backend.record_launch(OP, _kernels().backward(grad_out, saved, grad_input, kind=kind,
                                                           parameter=parameter, from_output=from_output))
    return grad_input


@_activation_backward_op.register_fake
def _(grad_out, saved, kind, parameter, from_output):
    return torch.empty_like(saved)


def _setup_context(ctx, inputs, output):
    input, kind, parameter = inputs
    from_output = kind in DERIVATIVE_FROM_OUTPUT
    ctx.save_for_backward(output if from_output else input)
    ctx.options = (kind, parameter, from_output)


def _backward(ctx, grad_out):
    (saved,) = ctx.saved_tensors
    return _activation_backward_op(grad_out, saved, *ctx.options), None, None


_activation_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_activation_op, "activation")
def _activation_launches(out, input, kind, parameter):
    return [one_pass("_forward_kernel", [input], [out])] if input.numel() else []


@launches_of(_activation_inplace_op, "activation")
def _activation_inplace_launches(_, input, kind, parameter):
    return [one_pass("_forward_kernel", [input], [input])] if input.numel() else []


@launches_of(_activation_backward_op, "activation")
def _activation_backward_launches(grad_input, grad_out, saved, kind, parameter, from_output):
    if not saved.numel():
        return []
    return restride(grad_out, saved.stride()) + [one_pass("_backward_kernel", [grad_out, saved], [grad_input])]


# ----------------------------------------------------------------------------- functional
def activation(input, kind, parameter=0.0, inplace=False, *, op=None):
    """act(input) for (kind, parameter) of ``resolve_activation``."""
    op = f"fastcnn.{op or kind}"
    input = check_activation_input(op, input, kind)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(kind, input.device)
        return module_for(kind, parameter)(input)
    if inplace and not (torch.is_grad_enabled() and input.requires_grad):
        # A strided view is computed in a dense copy and written back, so that the values land
        # where torch's in-place op writes them: in the view, and so in the tensor it views.
        dense = dense_copy(input)
        _activation_inplace_op(dense, kind, float(parameter))
        return input if dense is input else input.copy_(dense)
    # A strided view: one copy in the dimension order torch's output would have, then the flat kernel.
    return _activation_op(dense_copy(input), kind, float(parameter))


def relu(input, inplace=False):
    """``F.relu``: NaN stays NaN, the gradient at 0 is 0 (torch's threshold_backward)."""
    return activation(input, "relu", inplace=inplace)


def relu6(input, inplace=False):
    """``F.relu6`` (hardtanh between 0 and 6)."""
    return activation(input, "relu6", inplace=inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return activation(input, "leaky_relu", negative_slope, inplace)


def elu(input, alpha=1.0, inplace=False):
    return activation(input, "elu", alpha, inplace)


def silu(input, inplace=False):
    return activation(input, "silu", inplace=inplace)


def gelu(input, approximate="none"):
    """``F.gelu``: exact (erf) or, with ``approximate="tanh"``, the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"fastcnn.gelu: approximate argument must be either none or tanh, got {approximate!r}")
    return activation(input, "gelu_tanh" if approximate == "tanh" else "gelu", op="gelu")


def hardswish(input, inplace=False):
    return activation(input, "hardswish", inplace=inplace)


def hardsigmoid(input, inplace=False):
    return activation(input, "hardsigmoid", inplace=inplace)


def sigmoid(input):
    return activation(input, "sigmoid")


def tanh(input):
    return activation(input, "tanh")
