"""linear: ``fastcnn.linear`` (functional, as ``torch.nn.functional.linear``, plus a fused
``activation=``) over the Triton GEMMs of ``kernels/linear.py``.

Everything linear is on the PyTorch side lives here, in this order: its argument checks (torch's
contract, in torch's order), its cost formula, its operators (``torch.ops.fastcnn.linear`` and
its two gradient ops, with fake implementations and an autograd formula) and the functional.

The input's leading dimensions are flattened into the GEMM's rows as a view whenever they can be
(``reshape``): ConvNeXt's ``(N, H, W, C)`` permutation of a channels_last tensor is one, so its
MLPs read the convolution's output in place. The output is dense, ``(*leading, out_features)``,
as torch's; so are both gradients.

With ``activation=`` the bias and the activation run in the forward's epilogue. Autograd keeps
the output (relu, sigmoid, tanh: torch's backward formulas take the result) or the pre-activation
z that the epilogue also writes (every other kind: the tensor eager keeps between its addmm and
its activation), and both backward GEMMs compute act'(z)·dy as they load dy: the gradient of z is
never stored. The bias's gradient is summed in the weight gradient's pass.
"""
import math
from typing import Optional

import torch
from torch import Tensor

from .. import _backend, _cost
from .._cost import Launch, launches_of, one_pass, tensor_bytes
from ..dtypes import TORCH_FLOAT_DTYPES, TORCH_INTEGER_DTYPES, aten_type_name
from ..validation import autocast_dtype, check_kernel_dtype, check_torch_implements
from .activation import DERIVATIVE_FROM_OUTPUT, module_for, resolve_fused_activation
from .prelu import autocast_operand, prelu

__all__ = ["linear"]

OP = "linear"
# What torch's own addmm computes in (it raises NotImplementedError for bool).
TORCH_DTYPES = TORCH_FLOAT_DTYPES + TORCH_INTEGER_DTYPES + (torch.complex64, torch.complex128)
# c10's names of the dtypes, as torch's "expected m1 and m2 to have the same dtype" spells them.
_C10_NAMES = {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
              torch.bfloat16: "c10::BFloat16"}


def _kernels():
    """kernels/linear.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import linear

    return linear


# ----------------------------------------------------------------------------- checks
def _c10_name(dtype):
    return _C10_NAMES.get(dtype, aten_type_name(dtype))


def check_linear(op, input, weight, bias):
    """Validate F.linear's arguments the way torch does (its type, rank, shape, dtype and device
    checks, in its order); returns the output's shape."""
    for position, (name, tensor) in enumerate((("input", input), ("weight", weight)), start=1):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{op}: linear(): argument '{name}' (position {position}) must be Tensor, not "
                            f"{type(tensor).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"{op}: linear(): argument 'bias' (position 3) must be Tensor, not {type(bias).__name__}")
    if input.dim() == 0 or weight.dim() == 0:
        raise RuntimeError(f"{op}: both arguments to linear need to be at least 1D, but they are {input.dim()}D and "
                           f"{weight.dim()}D")
    if weight.dim() > 2:
        raise RuntimeError(f"{op}: t() expects a tensor with <= 2 dimensions, but self is {weight.dim()}D")
    if weight.dim() == 1 and input.dim() == 1:
        raise RuntimeError(f"{op}: mat2 must be a matrix, got 1-D tensor")
    in_features = input.shape[-1]
    rows = math.prod(input.shape[:-1])
    out_features = weight.shape[0] if weight.dim() == 2 else 1
    if (weight.shape[-1] if weight.dim() == 2 else weight.shape[0]) != in_features:
        columns = weight.shape[1] if weight.dim() == 2 else weight.shape[0]
        raise RuntimeError(f"{op}: mat1 and mat2 shapes cannot be multiplied ({rows}x{in_features} and "
                           f"{columns}x{out_features})")
    if weight.dtype != input.dtype:
        raise RuntimeError(f"{op}: expected m1 and m2 to have the same dtype, but got: {_c10_name(input.dtype)} != "
                           f"{_c10_name(weight.dtype)}")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(f"{op}: Expected all tensors to be on the same device, but found at least two devices, "
                               f"{input.device} and {tensor.device}! ({name})")
    out_shape = (*input.shape[:-1], out_features) if weight.dim() == 2 else tuple(input.shape[:-1])
    if bias is not None:
        if bias.dtype != input.dtype:
            raise RuntimeError(f"{op}: self and mat2 must have the same dtype, but got {aten_type_name(bias.dtype)} "
                               f"and {aten_type_name(input.dtype)}")
        try:
            torch.broadcast_shapes(bias.shape, out_shape)
        except RuntimeError:
            raise RuntimeError(f"{op}: The expanded size of the tensor ({out_shape[-1] if out_shape else 1}) must "
                               f"match the existing size ({bias.shape[-1]}) at non-singleton dimension "
                               f"{len(out_shape) - 1}.  Target sizes: {list(out_shape)}.  Tensor sizes: "
                               f"{list(bias.shape)}") from None
    if input.dtype == torch.bool:
        raise NotImplementedError(f"{op}: \"addmm\" not implemented for 'Bool'")
    check_torch_implements(op, "addmm", input.dtype, TORCH_DTYPES)
    check_kernel_dtype(op, input)
    return out_shape


def _bias_vector(bias, out_features):
    """The bias as a vector of ``out_features`` values the epilogue adds to every row (a view,
    with stride 0 for a broadcast scalar), or None when it varies along the rows (added by torch
    after the GEMM)."""
    if bias.dim() and (math.prod(bias.shape[:-1]) != 1):
        return None
    return bias.reshape(-1).expand(out_features)


# ----------------------------------------------------------------------------- cost
def flops(rows, in_features, out_features):
    """FLOPs of one pass (forward, grad-input or grad-weight: the same GEMM size): 2·M·N·K."""
    return 2 * rows * in_features * out_features


# ----------------------------------------------------------------------------- operators and autograd
def uses_tf32(dtype, device):
    """Whether torch's own matmul would run this fp32 GEMM in TF32 on ``device``:
    ``torch.backends.cuda.matmul.fp32_precision`` where it says, else ``allow_tf32`` (off by
    default; ``torch.set_float32_matmul_precision("high")`` turns it on)."""
    if dtype != torch.float32 or torch.device(device).type != "cuda":
        return False
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if precision in ("tf32", "ieee"):
        return precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def dot_precision(tensor):
    """The kernels' ``dot_precision`` for operands like ``tensor``: 'tf32' or 'ieee'."""
    return "tf32" if uses_tf32(tensor.dtype, tensor.device) else "ieee"


def stores_preactivation(kind, scaled=False):
    """Whether the forward writes z for the backward: an activation whose derivative torch takes
    from its input, or an output scale (whose gradient sums dy·act(z))."""
    return scaled or (kind is not None and kind not in DERIVATIVE_FROM_OUTPUT)


def from_output(kind, scaled):
    """Whether the backward takes act' from the output (relu, sigmoid, tanh, unscaled)."""
    return kind in DERIVATIVE_FROM_OUTPUT and not scaled


def _empty_outputs(input, weight, scale, kind):
    out = input.new_empty((input.shape[0], weight.shape[0]))
    return out, (torch.empty_like(out) if stores_preactivation(kind, scale is not None) else input.new_empty(0))


@torch.library.custom_op("fastcnn::linear", mutates_args=())
def _linear_op(input: Tensor, weight: Tensor, bias: Optional[Tensor], scale: Optional[Tensor], kind: Optional[str],
               parameter: float, slope: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(scale · act(input @ weight^T + bias), the pre-activation when the backward needs it, else
    an empty tensor) for a 2-d input; ``slope``: PReLU's out_features slopes (kind "prelu")."""
    out, preactivation = _empty_outputs(input, weight, scale, kind)
    if out.numel():
        with torch.profiler.record_function("fastcnn::linear forward"):
            _backend.record_launch(OP, _kernels().forward(
                input, weight, bias, out, preactivation if preactivation.numel() else None, kind=kind,
                parameter=parameter, dot_precision=dot_precision(input), scale=scale, slope=slope))
    return out, preactivation


@_linear_op.register_fake
def _(input, weight, bias, scale, kind, parameter, slope):
    return _empty_outputs(input, weight, scale, kind)


@torch.library.custom_op("fastcnn::linear_input_grad", mutates_args=())
def _linear_input_grad_op(grad_out: Tensor, saved: Optional[Tensor], weight: Tensor, scale: Optional[Tensor],
                          kind: Optional[str], parameter: float, slope: Optional[Tensor]) -> Tensor:
    """dx = (act'·scale·dy) @ weight, act' from ``saved`` (z, or the output: ``from_output``)."""
    grad_input = grad_out.new_empty((grad_out.shape[0], weight.shape[1]))
    if grad_input.numel():
        with torch.profiler.record_function("fastcnn::linear grad_input"):
            _backend.record_launch(OP, _kernels().input_grad(
                grad_out, saved if kind is not None else None, weight, grad_input, kind=kind, parameter=parameter,
                from_output=from_output(kind, scale is not None), dot_precision=dot_precision(weight), scale=scale,
                slope=slope))
    return grad_input


@_linear_input_grad_op.register_fake
def _(grad_out, saved, weight, scale, kind, parameter, slope):
    return grad_out.new_empty((grad_out.shape[0], weight.shape[1]))


def _empty_weight_grads(grad_out, input, bias_grad, scale_grad, slope_grad):
    features = grad_out.shape[1]
    return (grad_out.new_empty((features, input.shape[1])), grad_out.new_empty(features if bias_grad else 0),
            grad_out.new_empty(features if scale_grad else 0), grad_out.new_empty(features if slope_grad else 0))


@torch.library.custom_op("fastcnn::linear_weight_grad", mutates_args=())
def _linear_weight_grad_op(grad_out: Tensor, saved: Optional[Tensor], input: Tensor, scale: Optional[Tensor],
                           kind: Optional[str], parameter: float, slope: Optional[Tensor], bias_grad: bool,
                           scale_grad: bool, slope_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dw = (act'·scale·dy)^T @ input, db = the sum of act'·scale·dy over the rows, ds = the sum
    of dy·act(z), PReLU's slopes' gradient = the sum of scale·dy·z where z <= 0, one per output
    feature; db, ds and the slopes' empty tensors unless asked for), in one pass."""
    grads = _empty_weight_grads(grad_out, input, bias_grad, scale_grad, slope_grad)
    if any(grad.numel() for grad in grads):
        grad_weight, grad_bias, grad_scale, grad_slope = grads
        with torch.profiler.record_function("fastcnn::linear grad_weight"):
            _backend.record_launch(OP, _kernels().weight_grad(
                grad_out, saved, input, grad_weight, grad_bias if bias_grad else None, kind=kind,
                parameter=parameter, from_output=from_output(kind, scale is not None),
                dot_precision=dot_precision(input), scale=scale, ds=grad_scale if scale_grad else None, slope=slope,
                dslope=grad_slope if slope_grad else None))
    return grads


@_linear_weight_grad_op.register_fake
def _(grad_out, saved, input, scale, kind, parameter, slope, bias_grad, scale_grad, slope_grad):
    return _empty_weight_grads(grad_out, input, bias_grad, scale_grad, slope_grad)


def _setup_context(ctx, inputs, output):
    input, weight, bias, scale, kind, parameter, slope = inputs
    out, preactivation = output
    ctx.mark_non_differentiable(preactivation)
    saved = preactivation if preactivation.numel() else (out if kind is not None else None)
    ctx.save_for_backward(input, weight, saved, scale, slope)
    ctx.options = (kind, parameter)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out, _grad_preactivation):
    input, weight, saved, scale, slope = ctx.saved_tensors
    grad_input = grad_weight = grad_bias = grad_scale = grad_slope = None
    bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
    scale_grad = scale is not None and ctx.needs_input_grad[3]
    slope_grad = slope is not None and ctx.needs_input_grad[6]
    if ctx.needs_input_grad[1] or bias_grad or scale_grad or slope_grad:
        # The bias's, the scale's and the slopes' gradients ride in the weight gradient's pass (a
        # frozen weight beside a trainable bias, scale or slope still pays that GEMM, whose result
        # is dropped).
        grad_weight, grad_bias, grad_scale, grad_slope = _linear_weight_grad_op(
            grad_out, saved, input, scale, *ctx.options, slope, bias_grad, scale_grad, slope_grad)
        grad_weight = grad_weight if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias if bias_grad else None
        grad_scale = grad_scale if scale_grad else None
        grad_slope = grad_slope if slope_grad else None
    if ctx.needs_input_grad[0]:
        grad_input = _linear_input_grad_op(grad_out, saved, weight, scale, *ctx.options, slope)
    return grad_input, grad_weight, grad_bias, grad_scale, None, None, grad_slope


_linear_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
def _gemm_cost(rows, in_features, out_features, operand):
    return dict(flops=flops(rows, in_features, out_features),
                math=_cost.math_of(operand.dtype, uses_tf32(operand.dtype, "cuda")))


@launches_of(_linear_op, "linear")
def _linear_launches(outputs, input, weight, bias, scale, kind, parameter, slope):
    out, preactivation = outputs
    if not out.numel():
        return []
    return [one_pass("_linear_forward_kernel", [input, weight, bias, scale, slope], [out, preactivation],
                     **_gemm_cost(input.shape[0], input.shape[1], weight.shape[0], input))]


@launches_of(_linear_input_grad_op, "linear")
def _linear_input_grad_launches(grad_input, grad_out, saved, weight, scale, kind, parameter, slope):
    if not grad_input.numel():
        return []
    return [one_pass("_linear_input_grad_kernel", [grad_out, saved if kind is not None else None, weight, scale, slope],
                     [grad_input],
                     **_gemm_cost(grad_out.shape[0], weight.shape[1], weight.shape[0], weight))]


@launches_of(_linear_weight_grad_op, "linear")
def _linear_weight_grad_launches(outputs, grad_out, saved, input, scale, kind, parameter, slope, bias_grad, scale_grad,
                                 slope_grad):
    results = [t for t in outputs if t.numel()]
    if not results:
        return []
    cost = _gemm_cost(input.shape[0], input.shape[1], grad_out.shape[1], input)
    _, slices = _kernels().weight_grad_slices(grad_out.shape[1], input.shape[1], input.shape[0], input.device,
                                              _cost.target_sms())
    reads = [grad_out, saved, input, scale, slope]
    if slices == 1:
        return [one_pass("_linear_weight_grad_kernel", reads, results, **cost)]
    # the weight's partials even when it has no elements (0 bytes), one sum per result with some
    summed = [outputs[0]] + [t for t in outputs[1:] if t.numel()]
    partial_bytes = slices * sum(t.numel() for t in summed) * 4
    read = sum(map(tensor_bytes, [t for t in reads if t is not None]))
    return ([Launch("_linear_weight_grad_kernel", read, partial_bytes, workspace=partial_bytes, **cost)]
            + [Launch("_sum_slices_kernel", slices * t.numel() * 4, tensor_bytes(t)) for t in summed])


# ----------------------------------------------------------------------------- functional
def check_output_scale(op, output_scale, out_shape):
    """``output_scale``: None or a tensor of out_features elements (any shape: ConvNeXt's layer
    scale is ``(C, 1, 1)``) on the output's device."""
    if output_scale is None:
        return
    if not isinstance(output_scale, torch.Tensor):
        raise TypeError(f"{op}: argument 'output_scale' must be a Tensor, not {type(output_scale).__name__}")
    features = out_shape[-1] if out_shape else 1
    if output_scale.numel() != features:
        raise RuntimeError(f"{op}: output_scale should contain {features} elements (one per output feature) not "
                           f"{output_scale.numel()}")


def _unfused(out, kind, parameter, output_scale, slope=None, fallback=False):
    """act(out) · output_scale computed after the GEMM (torch's F.prelu for PReLU on the fallback
    path, fastcnn's prelu otherwise)."""
    if kind == "prelu":
        out = torch.nn.functional.prelu(out, slope) if fallback else prelu(out, slope)
    elif kind is not None:
        out = module_for(kind, parameter)(out)
    return out if output_scale is None else out * output_scale.reshape(-1)


def _fusable_prelu(slope, out_shape, input):
    """Whether PReLU's slopes fit the epilogue: one slope, or one per output feature of a 2-d
    output (torch's prelu takes dim 1 as the channel, which is the features only then), in the
    output's dtype and on its device; otherwise prelu runs after the GEMM with torch's checks."""
    per_feature = len(out_shape) == 2 and slope.numel() == out_shape[1]
    return ((slope.numel() == 1 or per_feature) and slope.dim() <= 1 and slope.dtype == input.dtype
            and slope.device == input.device)


def linear(input, weight, bias=None, *, activation=None, output_scale=None):
    """``torch.nn.functional.linear`` on fastcnn's Triton GEMMs; same arguments, same result:
    ``input @ weight.T + bias`` over any leading dimensions of ``input`` (``(*, in_features)``),
    ``weight`` ``(out_features, in_features)``, ``bias`` ``(out_features,)`` (or anything torch
    broadcasts to the output).

    ``activation``: anything ``fastcnn.batch_norm``'s ``activation=`` takes ("relu", "gelu",
    ``nn.Hardswish()``, ...), applied in the GEMM's epilogue: ``act(F.linear(input, weight,
    bias))`` in one launch, its derivative recomputed in backward from what autograd keeps. Also
    an ``nn.PReLU`` module, whose learnable slopes (one, or one per output feature of a 2-d
    output) ride in the same epilogue, their gradient summed in the weight gradient's pass.
    ``output_scale``: out_features values (any shape holding that many, such as ConvNeXt's
    ``(C, 1, 1)`` layer scale) that multiply the result per feature in the same epilogue,
    ``act(F.linear(...)) * output_scale.reshape(-1)``, differentiable (its gradient is summed
    in the weight gradient's pass); one of another dtype than the output is multiplied by torch
    after the GEMM, so that the result takes torch's promoted dtype.

    fp32, fp16 and bf16, accumulated in fp32; fp32 uses TF32 exactly when torch's matmul would
    (``torch.backends.cuda.matmul.allow_tf32``). Under ``torch.autocast`` the operands are cast
    to the autocast dtype, as F.linear's are (the output scale is not)."""
    op = "fastcnn.linear"
    kind, parameter, slope = resolve_fused_activation(op, activation)  # PReLU's slopes: a tensor of the epilogue
    if isinstance(input, torch.Tensor):
        cast = autocast_dtype(input.device.type, input)
        if cast is not None:  # F.linear and a PReLU after it (torch's prelu) both run in the autocast dtype
            with torch.autocast(input.device.type, enabled=False):
                return linear(*(autocast_operand(t, cast) if isinstance(t, torch.Tensor) else t
                                for t in (input, weight, bias)),
                              activation=activation if slope is None else ("prelu", autocast_operand(slope, cast)),
                              output_scale=output_scale)
    out_shape = check_linear(op, input, weight, bias)
    check_output_scale(op, output_scale, out_shape)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(OP, input.device)
        return _unfused(torch.nn.functional.linear(input, weight, bias), kind, parameter, output_scale, slope,
                        fallback=True)
    if slope is not None and not _fusable_prelu(slope, out_shape, input):
        return _unfused(linear(input, weight, bias), kind, parameter, output_scale, slope)
    matrix = weight if weight.dim() == 2 else weight.unsqueeze(0)
    rows = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])  # a view whenever the leading dims flatten
    vector = None if bias is None else _bias_vector(bias, matrix.shape[0])
    if (bias is not None and vector is None) or (output_scale is not None and output_scale.dtype != input.dtype):
        # a bias that varies along the rows, a scale torch would promote with: after the GEMM, as torch
        out = _linear_op(rows, matrix, vector, None, None, 0.0, None)[0].reshape(out_shape)
        return _unfused(out + bias if vector is None and bias is not None else out, kind, parameter, output_scale,
                        slope)
    scale = None if output_scale is None else output_scale.reshape(-1)
    slopes = None if slope is None else slope.reshape(-1).expand(matrix.shape[0])  # stride 0 for one slope
    out, _ = _linear_op(rows, matrix, vector, scale, kind, float(parameter), slopes)
    return out.reshape(out_shape)
