"""Elementwise activations, forward and backward, as torch computes them: ``activate`` and
``activation_grad`` are the epilogues the normalisation kernels fuse in (given the
pre-activation value z in fp32), and the flat kernels below run them on their own.

The kinds (``fastcnn/ops/activation.py``'s ``KINDS``, the one list): relu, relu6 (hardtanh
0..6), leaky_relu (slope = ``parameter``), elu (alpha = ``parameter``), silu, gelu (exact, erf),
gelu_tanh (tanh approximation), hardswish, hardsigmoid, sigmoid, tanh; and prelu, whose
``parameter`` is a tensor of slopes the caller loads per channel (``channel_slopes``; linear's
epilogue: one per output feature; the norms: one per channel), whose gradient the caller sums
from ``prelu_slope_grad``. NaN and ±inf follow torch's formulas, forward and gradient: each
``where`` below is written with torch's comparison (``z <= 0`` or ``z > 0``) so that a NaN takes
the branch torch's kernel takes.

The backward is computed from the input z (``activation_grad``; after a norm, z is recomputed
from the norm's saved input, so no pre-activation tensor is kept), or, for the kinds whose torch
backward takes the result (relu, sigmoid, tanh: ``DERIVATIVE_FROM_OUTPUT`` in
fastcnn/ops/activation.py), from the output y (``activation_grad_from_output``), which is then
what autograd keeps, as torch keeps it.

Bytes: forward reads x and writes y; backward reads the saved x or y and dy and writes dx (the
least: torch's own saves one tensor too). Launch grid: (cdiv(numel, BLOCK),) over the tensors' memory order.
"""
import triton
import triton.language as tl

from .tiles import by_backend

BLOCK = by_backend(interpreter=1024, gpu=2048)
NUM_WARPS = 8
# The constants are literals in the code below (1/sqrt(2) = 0.7071067811865476, 1/sqrt(2 pi) =
# 0.3989422804014327, sqrt(2/pi) = 0.7978845608028654, the tanh approximation's 0.044715): a
# global constexpr does not mix with the interpreter's tensors, a plain global does not compile.


@triton.jit
def _tanh(z):
    """tanh through exp(-2|z|), which never overflows: ±1 at ±inf, NaN for NaN."""
    t = tl.exp(-2.0 * tl.abs(z))
    magnitude = (1.0 - t) / (1.0 + t)
    return tl.where(z < 0.0, -magnitude, magnitude)


@triton.jit
def activate(z, KIND: tl.constexpr, parameter):
    """act(z) for fp32 z; KIND None returns z."""
    if KIND == "relu":  # NaN-propagating max (one instruction); the default max turns NaN into 0
        y = tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif KIND == "relu6":
        y = tl.minimum(tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL), 6.0, propagate_nan=tl.PropagateNan.ALL)
    elif KIND == "leaky_relu":
        y = tl.where(z > 0.0, z, z * parameter)
    elif KIND == "prelu":  # ``parameter``: the slopes, a tensor broadcast against z (one per channel)
        y = tl.where(z > 0.0, z, z * parameter)
    elif KIND == "elu":
        y = tl.where(z > 0.0, z, parameter * (tl.exp(z) - 1.0))
    elif KIND == "silu":
        y = z * tl.sigmoid(z)
    elif KIND == "gelu":
        y = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif KIND == "gelu_tanh":
        y = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    elif KIND == "hardswish":
        # torch's z·min(max(z + 3, 0), 6)/6, which is NaN at -inf (-inf·0)
        y = z * tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    elif KIND == "hardsigmoid":
        y = tl.where(z <= -3.0, 0.0, tl.where(z >= 3.0, 1.0, z / 6.0 + 0.5))
    elif KIND == "sigmoid":
        y = tl.sigmoid(z)
    elif KIND == "tanh":
        y = _tanh(z)
    else:
        y = z
    return y


@triton.jit
def activation_grad(z, g, KIND: tl.constexpr, parameter):
    """d act(z)/dz · g for fp32 z and g, as torch's backward formula (threshold_backward,
    hardtanh_backward, leaky_relu_backward, elu_backward, silu_backward, gelu_backward,
    hardswish_backward, hardsigmoid_backward, sigmoid_backward, tanh_backward)."""
    if KIND == "relu":
        dz = tl.where(z <= 0.0, 0.0, g)
    elif KIND == "relu6":
        dz = tl.where((z <= 0.0) | (z >= 6.0), 0.0, g)
    elif KIND == "leaky_relu":
        dz = tl.where(z > 0.0, g, g * parameter)
    elif KIND == "prelu":
        dz = tl.where(z > 0.0, g, g * parameter)
    elif KIND == "elu":
        dz = tl.where(z <= 0.0, g * parameter * tl.exp(z), g)
    elif KIND == "silu":
        s = tl.sigmoid(z)
        dz = g * s * (1.0 + z * (1.0 - s))
    elif KIND == "gelu":
        cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
        dz = g * (cdf + z * 0.3989422804014327 * tl.exp(-0.5 * z * z))
    elif KIND == "gelu_tanh":
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
        inner_derivative = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
        dz = g * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * inner_derivative)
    elif KIND == "hardswish":
        dz = tl.where(z <= -3.0, 0.0, tl.where(z < 3.0, g * (z / 3.0 + 0.5), g))
    elif KIND == "hardsigmoid":
        dz = tl.where((z > -3.0) & (z < 3.0), g / 6.0, 0.0)
    elif KIND == "sigmoid":
        s = tl.sigmoid(z)
        dz = g * s * (1.0 - s)
    elif KIND == "tanh":
        t = _tanh(z)
        dz = g * (1.0 - t * t)
    else:
        dz = g
    return dz


@triton.jit
def channel_slopes(slope_ptr, c, c_ok, slope_stride):
    """PReLU's slopes of channels ``c`` in fp32 (``slope_stride`` 0: one slope for every channel),
    the tensor ``parameter`` that ``activate`` and ``activation_grad`` take for kind "prelu"."""
    return tl.load(slope_ptr + c * slope_stride, mask=c_ok, other=0.0).to(tl.float32)


@triton.jit
def prelu_slope_grad(z, g):
    """One element's term of PReLU's slope gradient at z for an incoming gradient g: g·z where
    z <= 0, else 0 (torch's _prelu_kernel_backward; a NaN z takes the slope's branch, as torch's
    ``z > 0`` comparison sends it). Summed per channel by the kernel that fuses the PReLU."""
    return tl.where(z > 0.0, 0.0, g * z)


@triton.jit
def activation_grad_from_output(y, g, KIND: tl.constexpr):
    """d act(z)/dz · g from y = act(z) for fp32 y and g, as torch's backward formulas take the
    result: threshold_backward(g, y, 0), sigmoid_backward(g, y), tanh_backward(g, y)."""
    if KIND == "relu":
        dz = tl.where(y <= 0.0, 0.0, g)
    elif KIND == "sigmoid":
        dz = g * y * (1.0 - y)
    else:
        tl.static_assert(KIND == "tanh", "the derivative from the output: relu, sigmoid or tanh")
        dz = g * (1.0 - y * y)
    return dz


@triton.jit
def _forward_kernel(x_ptr, y_ptr, numel, parameter, KIND: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offsets, activate(x, KIND, parameter).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(dy_ptr, saved_ptr, dx_ptr, numel, parameter, KIND: tl.constexpr, FROM_OUTPUT: tl.constexpr,
                     BLOCK: tl.constexpr):
    """dx = act'·dy from the saved input x, or from the saved output y when FROM_OUTPUT."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    saved = tl.load(saved_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if FROM_OUTPUT:
        dx = activation_grad_from_output(saved, g, KIND)
    else:
        dx = activation_grad(saved, g, KIND, parameter)
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def forward(x, y, *, kind, parameter):
    """y = act(x) for x and y laid out alike and dense (walked as flat arrays). One launch."""
    _forward_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, x.numel(), float(parameter), KIND=kind, BLOCK=BLOCK,
                                                      num_warps=NUM_WARPS)
    return 1


def backward(dy, saved, dx, *, kind, parameter, from_output=False):
    """dx = act'(x)·dy for dense tensors laid out alike, ``saved`` the input x, or the output y
    when ``from_output``. One launch."""
    _backward_kernel[(triton.cdiv(saved.numel(), BLOCK),)](dy, saved, dx, saved.numel(), float(parameter), KIND=kind,
                                                           FROM_OUTPUT=from_output, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return 1
