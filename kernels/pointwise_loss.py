"""The pointwise losses: each element's loss e(x, t) of an input x and a target t, weighted by w
(1 when none), then kept ('none') or summed and divided ('sum', 'mean', KL's 'batchmean', and the
weighted mean Σ w·e / Σ w of F.mse_loss and F.l1_loss with ``weight``). With d = x - t:

    KIND  loss                     e(x, t)                                      de/dx                     de/dt
    0     mse_loss                 d²                                           2d                        -2d
    1     l1_loss                  |d|                                          sign(d) (0 for NaN)       -sign(d)
    2     smooth_l1_loss (beta b)  d²/2b where |d| < b, else |d| - b/2          d/b, or ±1 past ±b        -de/dx
    3     huber_loss (delta δ)     d²/2 where |d| < δ, else δ(|d| - δ/2)         d, or ±δ past ±δ          -de/dx
    4     binary_cross_entropy     (t-1)·max(log1p(-x), -100) - t·max(log x, -100)
                                                                                (x-t)/max(x(1-x), 1e-12)  log1p(-x) - log x
    5     ..._with_logits (pos p)  (1-t)·x - L·logsigmoid(x), L = (p-1)·t + 1   L·sigmoid(x) - p·t        (1-p)·logsigmoid(x) - x
    6     kl_div                   xlogy(t, t) - t·x                            -t                        log t + t/t - x
    7     kl_div (log_target)      exp(t)·(t - x)                               -exp(t)                   exp(t)·(t - x + 1)

as torch computes them (its clamps and its NaN: sign(NaN) is 0 in l1's gradient, smooth L1's
comparisons send NaN to d/b; BCE's log of 0 is clamped in the loss, not in the target's
gradient). The weight's own gradient is e (over Σw: (e - loss)/Σw, for the weighted mean).

Every operand is read in its own dtype and strides (a broadcast target has stride 0, an integer
target is widened in registers: no copies), the arithmetic is fp32, rounded once. Operands that
share one dense layout are walked as flat arrays in memory order (FLAT); otherwise the shape is
collapsed to at most four dims and each program turns its flat indices into per-operand offsets.
Outputs (the 'none' loss, the gradients) are then contiguous, so their offset is the flat index.

Forward: the 'none' loss is written per element; a reduced loss is summed by each program into an
fp32 partial (and Σw into a second one) over a grid-stride walk of the blocks, and one more
program adds the partials in a fixed order (deterministic, no atomics) and divides. Backward is
one pass: it reads grad_output, x, t (w, p) and writes whichever of dx, dt, dw are needed.

The gradient is computed in backward rather than written by the forward as cross_entropy's is:
for an elementwise loss that moves the same bytes (forward 2 reads, backward 3 accesses; against
forward 3 and an in-place scaling by grad_output of 2), and keeps a second backward through the
graph working.

Bytes: forward reads x and t (w, p): 2·numel·element size for the common case; backward reads
x, t and writes dx: 3·numel·element size. Launch grids: (min(cdiv(numel, BLOCK), MAX_PARTIALS),)
for a reduced forward, (cdiv(numel, BLOCK),) for the 'none' forward and backward; (1,) to finish.
"""
import torch
import triton
import triton.language as tl

from .indexing import block_indices, needs_wide_index
from .tiles import by_backend

BLOCK = by_backend(interpreter=1024, gpu=2048)
NUM_WARPS = 8
# Partials of a reduced forward: a fixed count (not the device's SM count), so that the sum's
# order, and so its rounding, is the same on every GPU; 1024 programs of 2048 elements fill an
# H100 several times over.
MAX_PARTIALS = by_backend(interpreter=4, gpu=1024)
FINISH_BLOCK = 1024

KINDS = {"mse": 0, "l1": 1, "smooth_l1": 2, "huber": 3, "bce": 4, "bce_with_logits": 5, "kl_div": 6,
         "kl_div_log_target": 7}
BCE_EPSILON = 1e-12


@triton.jit
def _log1p(y):
    """log(1 + y) accurate for small |y| (Goldberg's correction of log(u), u = 1 + y rounded)."""
    u = 1.0 + y
    return tl.where(u == 1.0, y, tl.log(u) * (y / (u - 1.0)))


@triton.jit
def _log_sigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), finite for every finite x."""
    return tl.minimum(x, 0.0) - _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _element_loss(x, t, pos_weight, parameter, KIND: tl.constexpr):
    if KIND == 0:
        d = x - t
        loss = d * d
    elif KIND == 1:
        loss = tl.abs(x - t)
    elif KIND == 2:
        a = tl.abs(x - t)
        loss = tl.where(a < parameter, 0.5 * a * a / parameter, a - 0.5 * parameter)
    elif KIND == 3:
        a = tl.abs(x - t)
        loss = tl.where(a < parameter, 0.5 * a * a, parameter * (a - 0.5 * parameter))
    elif KIND == 4:
        loss = ((t - 1.0) * tl.maximum(_log1p(-x), -100.0) - t * tl.maximum(tl.log(x), -100.0))
    elif KIND == 5:
        log_weight = (pos_weight - 1.0) * t + 1.0
        loss = (1.0 - t) * x - log_weight * _log_sigmoid(x)
    elif KIND == 6:
        xlogy = tl.where(t == 0.0, 0.0, t * tl.log(t))  # torch's xlogy: 0 where t is 0, NaN stays NaN
        loss = tl.where(t != t, t, xlogy) - t * x
    else:
        loss = tl.exp(t) * (t - x)
    return loss


@triton.jit
def _element_derivatives(x, t, pos_weight, parameter, KIND: tl.constexpr, HAS_POS_WEIGHT: tl.constexpr):
    """(de/dx, de/dt) of ``_element_loss``, as torch's backward formulas compute them."""
    if KIND == 0:
        dx = 2.0 * (x - t)
        dt = -dx
    elif KIND == 1:
        d = x - t
        dx = tl.where(d > 0.0, 1.0, 0.0) - tl.where(d < 0.0, 1.0, 0.0)
        dt = -dx
    elif KIND == 2:
        d = x - t
        inside = tl.where(parameter == 0.0, 0.0, d / parameter)  # beta = 0 is l1: no inside
        dx = tl.where(d < -parameter, -1.0, tl.where(d > parameter, 1.0, inside))
        dt = -dx
    elif KIND == 3:
        d = x - t
        dx = tl.where(d < -parameter, -parameter, tl.where(d > parameter, parameter, d))
        dt = -dx
    elif KIND == 4:
        dx = (x - t) / tl.maximum((1.0 - x) * x, 1e-12)
        dt = _log1p(-x) - tl.log(x)
    elif KIND == 5:
        if HAS_POS_WEIGHT:
            log_weight = (pos_weight - 1.0) * t + 1.0
            dx = log_weight * tl.sigmoid(x) - pos_weight * t
            dt = (1.0 - pos_weight) * _log_sigmoid(x) - x
        else:  # torch's formulas without pos_weight: no 0 * inf where x is infinite
            dx = tl.sigmoid(x) - t
            dt = -x
    elif KIND == 6:
        dx = -t
        dt = tl.log(t) + t / t - x
    else:
        e = tl.exp(t)
        dx = -e
        dt = e * (t - x + 1.0)
    return dx, dt


@triton.jit
def _offsets(index, size1, size2, size3, stride0, stride1, stride2, stride3, FLAT: tl.constexpr):
    """An operand's offsets of flat indices: the index itself when every operand shares one dense
    layout (FLAT), else its strides over the (at most four) collapsed dims."""
    if FLAT:
        offsets = index
    else:
        i3 = index % size3
        rest = index // size3
        i2 = rest % size2
        rest = rest // size2
        offsets = (rest // size1) * stride0 + (rest % size1) * stride1 + i2 * stride2 + i3 * stride3
    return offsets


@triton.jit
def _load(ptr, index, mask, size1, size2, size3, stride0, stride1, stride2, stride3, FLAT: tl.constexpr):
    offsets = _offsets(index, size1, size2, size3, stride0, stride1, stride2, stride3, FLAT)
    return tl.load(ptr + offsets, mask=mask, other=0.5).to(tl.float32)  # 0.5: inside every loss's domain


@triton.jit
def _pointwise_loss_forward_kernel(
        x_ptr, t_ptr, w_ptr, p_ptr, out_ptr, partial_ptr, invalid_ptr, numel, size1, size2, size3,
        xs0, xs1, xs2, xs3, ts0, ts1, ts2, ts3, ws0, ws1, ws2, ws3, ps0, ps1, ps2, ps3, parameter,
        KIND: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_POS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr,
        WEIGHT_TOTAL: tl.constexpr, CHECK_RANGE: tl.constexpr, FLAT: tl.constexpr, WIDE_INDEX: tl.constexpr,
        BLOCK: tl.constexpr):
    loss_sum = tl.zeros((BLOCK,), tl.float32)
    weight_sum = tl.zeros((BLOCK,), tl.float32)
    # A grid-stride walk: a reduced loss has at most MAX_PARTIALS programs, 'none' one per block.
    for block in range(tl.program_id(0), tl.cdiv(numel, BLOCK), tl.num_programs(0)):
        index = block_indices(block, BLOCK, WIDE_INDEX)
        mask = index < numel
        x = _load(x_ptr, index, mask, size1, size2, size3, xs0, xs1, xs2, xs3, FLAT)
        t = _load(t_ptr, index, mask, size1, size2, size3, ts0, ts1, ts2, ts3, FLAT)
        if CHECK_RANGE:  # BCE's probabilities must lie in [0, 1] (NaN does not), as torch checks
            bad = mask & ~((x >= 0.0) & (x <= 1.0))
            tl.store(invalid_ptr + tl.zeros_like(index), 1, mask=bad)
        pos_weight = 1.0
        if HAS_POS_WEIGHT:
            pos_weight = _load(p_ptr, index, mask, size1, size2, size3, ps0, ps1, ps2, ps3, FLAT)
        loss = _element_loss(x, t, pos_weight, parameter, KIND)
        if HAS_WEIGHT:
            weight = _load(w_ptr, index, mask, size1, size2, size3, ws0, ws1, ws2, ws3, FLAT)
            loss = loss * weight
            if WEIGHT_TOTAL:
                weight_sum += tl.where(mask, weight, 0.0)
        if REDUCE:
            loss_sum += tl.where(mask, loss, 0.0)
        else:
            tl.store(out_ptr + index, loss.to(out_ptr.dtype.element_ty), mask=mask)
    if REDUCE:
        tl.store(partial_ptr + tl.program_id(0), tl.sum(loss_sum, axis=0))
        if WEIGHT_TOTAL:
            tl.store(partial_ptr + tl.num_programs(0) + tl.program_id(0), tl.sum(weight_sum, axis=0))


@triton.jit
def _finish_kernel(partial_ptr, out_ptr, denominator_ptr, num_partials, divisor, WEIGHT_TOTAL: tl.constexpr,
                   BLOCK: tl.constexpr):
    """One program: the partials' total, in a fixed order, over ``divisor`` (or over Σw)."""
    loss = tl.zeros((BLOCK,), tl.float32)
    weight = tl.zeros((BLOCK,), tl.float32)
    for first in range(0, num_partials, BLOCK):
        offsets = first + tl.arange(0, BLOCK)
        loss += tl.load(partial_ptr + offsets, mask=offsets < num_partials, other=0.0)
        if WEIGHT_TOTAL:
            weight += tl.load(partial_ptr + num_partials + offsets, mask=offsets < num_partials, other=0.0)
    denominator = tl.sum(weight, axis=0) if WEIGHT_TOTAL else divisor
    tl.store(out_ptr, (tl.sum(loss, axis=0) / denominator).to(out_ptr.dtype.element_ty))  # 0/0: NaN, as torch
    tl.store(denominator_ptr, denominator)


@triton.jit
def _pointwise_loss_backward_kernel(
        g_ptr, x_ptr, t_ptr, w_ptr, p_ptr, loss_ptr, denominator_ptr, dx_ptr, dt_ptr, dw_ptr, numel, size1, size2,
        size3, xs0, xs1, xs2, xs3, ts0, ts1, ts2, ts3, ws0, ws1, ws2, ws3, ps0, ps1, ps2, ps3, parameter,
        KIND: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_POS_WEIGHT: tl.constexpr, REDUCE: tl.constexpr,
        WEIGHT_TOTAL: tl.constexpr, INPUT_GRAD: tl.constexpr, TARGET_GRAD: tl.constexpr, WEIGHT_GRAD: tl.constexpr,
        FLAT: tl.constexpr, WIDE_INDEX: tl.constexpr, BLOCK: tl.constexpr):
    index = block_indices(tl.program_id(0), BLOCK, WIDE_INDEX)
    mask = index < numel
    if REDUCE:  # d(loss)/d(element) = grad_output / denominator, one scalar
        scale = (tl.load(g_ptr + tl.zeros_like(index)).to(tl.float32)
                 / tl.load(denominator_ptr + tl.zeros_like(index)))
    else:  # grad_output laid out as the output: its offset is the index too
        scale = tl.load(g_ptr + index, mask=mask, other=0.0).to(tl.float32)
    x = _load(x_ptr, index, mask, size1, size2, size3, xs0, xs1, xs2, xs3, FLAT)
    t = _load(t_ptr, index, mask, size1, size2, size3, ts0, ts1, ts2, ts3, FLAT)
    pos_weight = 1.0
    if HAS_POS_WEIGHT:
        pos_weight = _load(p_ptr, index, mask, size1, size2, size3, ps0, ps1, ps2, ps3, FLAT)
    weighted = scale
    if HAS_WEIGHT:
        weight = _load(w_ptr, index, mask, size1, size2, size3, ws0, ws1, ws2, ws3, FLAT)
        weighted = scale * weight
    if INPUT_GRAD or TARGET_GRAD:
        dx, dt = _element_derivatives(x, t, pos_weight, parameter, KIND, HAS_POS_WEIGHT)
        if INPUT_GRAD:
            tl.store(dx_ptr + index, (weighted * dx).to(dx_ptr.dtype.element_ty), mask=mask)
        if TARGET_GRAD:
            tl.store(dt_ptr + index, (weighted * dt).to(dt_ptr.dtype.element_ty), mask=mask)
    if WEIGHT_GRAD:
        loss = _element_loss(x, t, pos_weight, parameter, KIND)
        if WEIGHT_TOTAL:  # d(Σwe/Σw)/dw = (e - mean)/Σw
            loss = loss - tl.load(loss_ptr + tl.zeros_like(index)).to(tl.float32)
        tl.store(dw_ptr + index, (scale * loss).to(dw_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers
def _walk_arguments(walk):
    """numel, the inner three sizes and the four operands' strides of ``walk`` (``_layout.
    elementwise_walk`` over x, t, w, p; an absent operand's strides are zeros, never read)."""
    return (walk.numel, *walk.sizes[1:], *(stride for strides in walk.strides for stride in strides))


def _wide(walk, *operands):
    """Whether flat indices or an operand's offsets can pass 2**31 - 1 (indices in int64)."""
    return needs_wide_index(*(o for o in operands if o is not None), extra_span=walk.numel)


def forward(walk, kind, x, t, w, p, parameter, out, partial, invalid, *, reduce, weight_total, check_range):
    """The 'none' loss into ``out`` (its offsets the flat indices), or a reduced one through
    ``partial`` (``forward_partials`` fp32 values) into the 0-d ``out`` and ``denominator`` (the
    fp32 ``out`` slot of ``finish``). Returns the launches."""
    grid = forward_partials(walk.numel) if reduce else triton.cdiv(walk.numel, BLOCK)
    _pointwise_loss_forward_kernel[(grid,)](
        x, t, w if w is not None else x, p if p is not None else x, out, partial if partial is not None else out,
        invalid if invalid is not None else out, *_walk_arguments(walk), float(parameter),
        KIND=KINDS[kind], HAS_WEIGHT=w is not None, HAS_POS_WEIGHT=p is not None, REDUCE=reduce,
        WEIGHT_TOTAL=weight_total, CHECK_RANGE=check_range, FLAT=walk.flat, WIDE_INDEX=_wide(walk, x, t, w, p), BLOCK=BLOCK,
        num_warps=NUM_WARPS)
    return 1


def forward_partials(numel):
    """Programs, and so partials, of a reduced forward over ``numel`` elements (at least one)."""
    return max(1, min(triton.cdiv(numel, BLOCK), MAX_PARTIALS))


def finish(partial, num_partials, out, denominator, divisor, *, weight_total):
    _finish_kernel[(1,)](partial, out, denominator, num_partials, float(divisor), WEIGHT_TOTAL=weight_total,
                         BLOCK=FINISH_BLOCK)
    return 1


def backward(walk, kind, grad_out, x, t, w, p, parameter, loss, denominator, dx, dt, dw, *, reduce, weight_total):
    """Whichever of ``dx``, ``dt``, ``dw`` are given (laid out so that their offsets are the flat
    indices), from ``grad_out`` (0-d when ``reduce``, else laid out like them). One launch."""
    some = next(g for g in (dx, dt, dw) if g is not None)
    _pointwise_loss_backward_kernel[(triton.cdiv(walk.numel, BLOCK),)](
        grad_out, x, t, w if w is not None else x, p if p is not None else x, loss if loss is not None else some,
        denominator if denominator is not None else some, dx if dx is not None else some,
        dt if dt is not None else some, dw if dw is not None else some, *_walk_arguments(walk),
        float(parameter), KIND=KINDS[kind], HAS_WEIGHT=w is not None, HAS_POS_WEIGHT=p is not None, REDUCE=reduce,
        WEIGHT_TOTAL=weight_total, INPUT_GRAD=dx is not None, TARGET_GRAD=dt is not None, WEIGHT_GRAD=dw is not None,
        FLAT=walk.flat, WIDE_INDEX=_wide(walk, x, t, w, p), BLOCK=BLOCK, num_warps=NUM_WARPS)
    return 1


def invalid_buffer(device):
    return torch.zeros(1, dtype=torch.int32, device=device)
