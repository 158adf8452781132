"""linear: y = s · act(x @ w^T + b), its grad-input, and its grad-weight with the bias's and the
scale's gradients in the same pass.

Notation: x [M, K] (M: every leading dimension of the input, flattened; a view, not a copy, when
they flatten), w [N, K], y [M, N]; z = x @ w^T + b the pre-activation; s [N] an optional
per-feature output scale (ConvNeXt's layer scale), 1 without it; g = act'(z) · s · dy.

    forward      y[m, n] = s[n] · act(z[m, n]),  z[m, n] = sum_k x[m, k] · w[n, k] + b[n]
    grad-input   dx[m, k] = sum_n g[m, n] · w[n, k]
    grad-weight  dw[n, k] = sum_m g[m, n] · x[m, k],   db[n] = sum_m g[m, n],
                 ds[n] = sum_m dy[m, n] · act(z[m, n])

act may be PReLU with a learnable slope a[n] per output feature: act(z) = z where z > 0, a[n]·z
elsewhere; its gradient da[n] = sum_m s[n]·dy[m, n]·z[m, n] where z <= 0 is summed in the
grad-weight pass beside db and ds (torch's prelu backward, NaN z included).

g is never stored: both backward GEMMs compute it as they load dy, from what the forward kept:
y itself for the activations whose torch backward takes the result (relu, sigmoid, tanh), else z,
which the forward's epilogue writes beside y (the tensor eager keeps between its addmm and its
activation, or its multiply by the scale, so memory is eager's). FLOPs: 2·M·N·K per pass. Least bytes: forward reads x, w, b
and writes y (and z); grad-input reads dy (and the saved y or z) and w, writes dx; grad-weight
reads x and dy (and y or z), writes dw and db.

Launch grids (fp32 accumulation; conv2d_gemm's configs, ``fits`` and grouped program order):
  forward      (cdiv(M, BLOCK_M) · cdiv(N, BLOCK_N),)
  grad-input   (cdiv(M, BLOCK_M) · cdiv(K, BLOCK_N),)
  grad-weight  (cdiv(N, BLOCK_M) · cdiv(K, BLOCK_N), slices): the reduction over M is cut into
               slices (kernels/slicing.py) when N·K alone has too few tiles to fill the GPU (a
               classifier head: N·K small, M the batch; ConvNeXt's MLPs: M = N·H·W pixels). The
               programs of the first column block also sum g over their rows into db's partial
               (and dy·act(z) into ds's), so grad-bias and grad-scale cost no pass of their own.
               Partials are added in a fixed order.
"""
import triton
import triton.language as tl

from . import INTERPRETED
from .activation import activate, activation_grad, activation_grad_from_output, channel_slopes, prelu_slope_grad
from .conv2d_gemm import (MAX_PROLOGUE_ACCUMULATOR_REGISTERS, MAX_SHARED_BYTES, gemm_configs, launch,
                          multiply_accumulate, prune_configs, shared_bytes, tile_coordinates)
from .indexing import block_indices, needs_wide_index, widen
from .slicing import partials, reduction_slices, slice_range, sum_partials
from .tiles import by_backend

# Shortest slice of the grad-weight's reduction over M worth its own fp32 partial, and the most
# slices (as conv2d's grad-weight).
MIN_ROWS_PER_SLICE = by_backend(interpreter=32, gpu=1024)
MAX_SLICES = 64

_KEY = ["rows", "out_features", "in_features", "KIND", "DOT_PRECISION"]


@triton.jit
def _gradient_of_preactivation(dy, saved, KIND: tl.constexpr, FROM_OUTPUT: tl.constexpr, parameter):
    """g = act'(z) · dy in fp32 (dy already scaled), from the saved z, or from y = act(z) when
    FROM_OUTPUT; dy itself without an activation."""
    if KIND is None:
        g = dy
    elif FROM_OUTPUT:
        g = activation_grad_from_output(saved.to(tl.float32), dy, KIND)
    else:
        g = activation_grad(saved.to(tl.float32), dy, KIND, parameter)
    return g


@triton.jit
def _linear_forward_kernel(
        x_ptr, w_ptr, bias_ptr, scale_ptr, y_ptr, z_ptr, rows, out_features, in_features,
        x_stride_m, x_stride_k, w_stride_n, w_stride_k, y_stride_m, y_stride_n, z_stride_m, z_stride_n, bias_stride,
        scale_stride, slope_ptr, slope_stride, parameter,
        HAS_BIAS: tl.constexpr, SCALED: tl.constexpr, KIND: tl.constexpr, STORE_Z: tl.constexpr,
        WIDE_INDEX: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    tile_m, tile_n = tile_coordinates(tl.program_id(0), tl.cdiv(rows, BLOCK_M), tl.cdiv(out_features, BLOCK_N),
                                      GROUP_M)
    m = block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    m_ok = m < rows
    n = block_indices(tile_n, BLOCK_N, WIDE_INDEX)
    n_ok = n < out_features
    k_offsets = widen(tl.arange(0, BLOCK_K), WIDE_INDEX)
    x_rows = x_ptr + m * x_stride_m  # [BLOCK_M] pointers
    w_cols = w_ptr + n * w_stride_n  # [BLOCK_N] pointers
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for first in range(0, in_features, BLOCK_K):
        k = first + k_offsets
        k_ok = k < in_features
        a = tl.load(x_rows[:, None] + k[None, :] * x_stride_k, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + k[:, None] * w_stride_k, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + n * bias_stride, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if STORE_Z:  # what the backward takes act'(z) from
        tl.store(z_ptr + (m * z_stride_m)[:, None] + (n * z_stride_n)[None, :], acc.to(z_ptr.dtype.element_ty),
                 mask=mask)
    if KIND == "prelu":  # PReLU's slopes, one per output feature (stride 0: one for all)
        parameter = channel_slopes(slope_ptr, n, n_ok, slope_stride)[None, :]
    y = activate(acc, KIND, parameter)
    if SCALED:
        y = y * tl.load(scale_ptr + n * scale_stride, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + (m * y_stride_m)[:, None] + (n * y_stride_n)[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _linear_input_grad_kernel(
        dy_ptr, saved_ptr, scale_ptr, w_ptr, dx_ptr, rows, out_features, in_features,
        dy_stride_m, dy_stride_n, saved_stride_m, saved_stride_n, scale_stride, w_stride_n, w_stride_k, dx_stride_m,
        dx_stride_k, slope_ptr, slope_stride, parameter,
        KIND: tl.constexpr, SCALED: tl.constexpr, FROM_OUTPUT: tl.constexpr, WIDE_INDEX: tl.constexpr,
        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """dx tile [BLOCK_M rows x BLOCK_N input features], reducing over the N output features."""
    tile_m, tile_k = tile_coordinates(tl.program_id(0), tl.cdiv(rows, BLOCK_M), tl.cdiv(in_features, BLOCK_N),
                                      GROUP_M)
    m = block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    m_ok = m < rows
    k = block_indices(tile_k, BLOCK_N, WIDE_INDEX)
    k_ok = k < in_features
    n_offsets = widen(tl.arange(0, BLOCK_K), WIDE_INDEX)
    dy_rows = dy_ptr + m * dy_stride_m
    saved_rows = saved_ptr + m * saved_stride_m
    w_cols = w_ptr + k * w_stride_k
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for first in range(0, out_features, BLOCK_K):
        n = first + n_offsets
        n_ok = n < out_features
        a_ok = m_ok[:, None] & n_ok[None, :]
        a = tl.load(dy_rows[:, None] + (n * dy_stride_n)[None, :], mask=a_ok, other=0.0)
        if SCALED or KIND is not None:  # g = act'(z)·s·dy as the tile is loaded, rounded as eager's g
            d = a.to(tl.float32)
            if SCALED:
                d = d * tl.load(scale_ptr + n * scale_stride, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            saved = d
            if KIND is not None:
                saved = tl.load(saved_rows[:, None] + (n * saved_stride_n)[None, :], mask=a_ok, other=0.0)
            alpha = parameter
            if KIND == "prelu":
                alpha = channel_slopes(slope_ptr, n, n_ok, slope_stride)[None, :]
            a = _gradient_of_preactivation(d, saved, KIND, FROM_OUTPUT, alpha).to(dy_ptr.dtype.element_ty)
        b = tl.load(w_cols[None, :] + (n * w_stride_n)[:, None], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc = multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)
    tl.store(dx_ptr + (m * dx_stride_m)[:, None] + (k * dx_stride_k)[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=m_ok[:, None] & k_ok[None, :])


@triton.jit
def _linear_weight_grad_kernel(
        dy_ptr, saved_ptr, scale_ptr, x_ptr, dw_ptr, db_ptr, ds_ptr, rows, out_features, in_features,
        dy_stride_m, dy_stride_n, saved_stride_m, saved_stride_n, scale_stride, x_stride_m, x_stride_k, dw_stride_n,
        dw_stride_k, rows_per_slice, dw_slice_stride, slope_ptr, slope_stride, dslope_ptr, parameter,
        KIND: tl.constexpr, SCALED: tl.constexpr, FROM_OUTPUT: tl.constexpr, BIAS_GRAD: tl.constexpr,
        SCALE_GRAD: tl.constexpr, SLOPE_GRAD: tl.constexpr,
        WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """dw tile [BLOCK_M output features x BLOCK_N input features] over one slice of the M rows;
    the first column block's programs also sum g over the slice into db's partial (BIAS_GRAD),
    dy·act(z) into ds's (SCALE_GRAD) and PReLU's s·dy·z where z <= 0 into its slopes' (SLOPE_GRAD)."""
    split = tl.program_id(1)
    # at least one column block (the launch's grid has one when there are no input features: it sums db and ds)
    tile_n, tile_k = tile_coordinates(tl.program_id(0), tl.cdiv(out_features, BLOCK_M),
                                      tl.maximum(tl.cdiv(in_features, BLOCK_N), 1), GROUP_M)
    n = block_indices(tile_n, BLOCK_M, WIDE_INDEX)
    n_ok = n < out_features
    k = block_indices(tile_k, BLOCK_N, WIDE_INDEX)
    k_ok = k < in_features
    sums = tile_k == 0  # the first column block's programs take the per-feature sums
    start, end = slice_range(split, rows_per_slice, rows, WIDE_INDEX)
    m_offsets = widen(tl.arange(0, BLOCK_K), WIDE_INDEX)
    dy_cols = dy_ptr + n * dy_stride_n  # [BLOCK_M] pointers: the tile is g transposed
    saved_cols = saved_ptr + n * saved_stride_n
    x_cols = x_ptr + k * x_stride_k
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    bias_sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    scale_sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    slope_sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if SCALED:  # the program's output features are fixed: their scales are loaded once
        scale = tl.load(scale_ptr + n * scale_stride, mask=n_ok, other=0.0).to(tl.float32)[:, None]
    if KIND == "prelu":  # and so are their PReLU slopes
        parameter = channel_slopes(slope_ptr, n, n_ok, slope_stride)[:, None]
    for first in range(start, end, BLOCK_K):
        m = first + m_offsets
        m_ok = m < end
        a_ok = n_ok[:, None] & m_ok[None, :]
        a = tl.load(dy_cols[:, None] + (m * dy_stride_m)[None, :], mask=a_ok, other=0.0)
        if SCALED or KIND is not None:
            d = a.to(tl.float32)
            saved = d
            if SCALE_GRAD or KIND is not None:
                saved = tl.load(saved_cols[:, None] + (m * saved_stride_m)[None, :], mask=a_ok, other=0.0)
            if SCALE_GRAD:  # ds from dy and act(z), before dy is scaled
                if sums:
                    scale_sums += tl.sum(d * activate(saved.to(tl.float32), KIND, parameter), axis=1)
            if SCALED:
                d = d * scale
            if SLOPE_GRAD:  # torch's prelu: the slope's gradient is g·z where z <= 0 (NaN z included)
                if sums:
                    slope_sums += tl.sum(prelu_slope_grad(saved.to(tl.float32), d), axis=1)
            a = _gradient_of_preactivation(d, saved, KIND, FROM_OUTPUT, parameter).to(dy_ptr.dtype.element_ty)
        if BIAS_GRAD:  # db from the same g the GEMM multiplies (eager's sum of its stored g)
            if sums:
                bias_sums += tl.sum(a.to(tl.float32), axis=1)
        b = tl.load(x_cols[None, :] + (m * x_stride_m)[:, None], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        acc = multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)
    tl.store(dw_ptr + split * dw_slice_stride + (n * dw_stride_n)[:, None] + (k * dw_stride_k)[None, :],
             acc.to(dw_ptr.dtype.element_ty), mask=n_ok[:, None] & k_ok[None, :])
    if BIAS_GRAD:
        if sums:
            tl.store(db_ptr + split * out_features + n, bias_sums.to(db_ptr.dtype.element_ty), mask=n_ok)
    if SCALE_GRAD:
        if sums:
            tl.store(ds_ptr + split * out_features + n, scale_sums.to(ds_ptr.dtype.element_ty), mask=n_ok)
    if SLOPE_GRAD:
        if sums:
            tl.store(dslope_ptr + split * out_features + n, slope_sums.to(dslope_ptr.dtype.element_ty), mask=n_ok)


# Beyond conv2d_gemm's ``fits``, read from ptxas on sm_90a (scripts/static_gpu_check.py, bench/static/):
# - the activation in the forward's epilogue, and act'(z) computed on the loaded dy in both
#   backward GEMMs, spill beside 128 accumulator registers per thread (184 to 1872 B on the 128x256,
#   256x128 and 4-warp 128x128 tiles): those launches keep 64, as conv2d's prologue does;
# - without them the backward GEMMs' 256-row tiles still spill (416 B grad-input, 160 B
#   grad-weight): at 128 registers they keep BLOCK_M <= 128;
# - grad-weight's dy block is loaded transposed and needs shared memory beside the pipeline's
#   stages: room for two more of its blocks is kept, which leaves out the fp32 128x128x64
#   three-stage tile ptxas refuses (228 KB).
MAX_BACKWARD_BLOCK_M_AT_128_REGISTERS = 128


def _prune(operand, output_stride, gemm_pass):
    """conv2d_gemm's pruning, then linear's own limits above for ``gemm_pass`` ("forward",
    "input_grad" or "weight_grad"); never none (the smallest config always fits)."""
    conv_prune = prune_configs(operand, output_stride)

    def prune(configs, named_args, **kwargs):
        element_size = named_args[operand].element_size()
        transformed = kwargs.get("KIND") is not None or bool(kwargs.get("SCALED"))

        def keeps(config):
            blocks = config.kwargs
            per_thread = blocks["BLOCK_M"] * blocks["BLOCK_N"] // (32 * config.num_warps)
            if transformed and per_thread > MAX_PROLOGUE_ACCUMULATOR_REGISTERS:
                return False
            if (gemm_pass != "forward" and blocks["BLOCK_M"] > MAX_BACKWARD_BLOCK_M_AT_128_REGISTERS
                    and per_thread > MAX_PROLOGUE_ACCUMULATOR_REGISTERS):
                return False
            transposed = 2 * blocks["BLOCK_M"] * blocks["BLOCK_K"] * element_size if gemm_pass == "weight_grad" else 0
            return shared_bytes(config, element_size) + transposed <= MAX_SHARED_BYTES
        return [config for config in conv_prune(configs, named_args, **kwargs) if keeps(config)] or configs[-1:]
    return prune


_forward_autotuned = triton.autotune(
    gemm_configs(), key=_KEY + ["x_stride_k", "w_stride_k", "y_stride_n", "STORE_Z", "SCALED"],
    prune_configs_by=dict(early_config_prune=_prune("x_ptr", "y_stride_n", "forward")))(_linear_forward_kernel)
_input_grad_autotuned = triton.autotune(
    gemm_configs(), key=_KEY + ["dy_stride_n", "w_stride_k", "dx_stride_k", "SCALED"],
    prune_configs_by=dict(early_config_prune=_prune("dy_ptr", "dx_stride_k", "input_grad")))(
        _linear_input_grad_kernel)
_weight_grad_autotuned = triton.autotune(
    gemm_configs(), key=_KEY + ["dy_stride_n", "x_stride_k", "rows_per_slice", "SCALED", "BIAS_GRAD", "SCALE_GRAD",
                                "SLOPE_GRAD"],
    prune_configs_by=dict(early_config_prune=_prune("x_ptr", "dw_stride_k", "weight_grad")))(
        _linear_weight_grad_kernel)


# ----------------------------------------------------------------------------------------------
# Launchers. They trust their caller (fastcnn/ops/linear.py) to have validated shapes, dtypes and
# devices; every tensor is 2-d ([M, K], [N, K], [M, N]) with any strides. Each returns the number
# of kernels it launched.

def _vector_arguments(vector, like):
    """(tensor, stride) of an optional per-feature vector, or ``like``'s place and stride 0 (never read)."""
    return (like, 0) if vector is None else (vector, vector.stride(0))


def _saved_arguments(saved, like):
    """(tensor, row stride, column stride) of what the backward takes act' from, or ``like``'s
    place and zero strides without an activation (never read)."""
    return (like, 0, 0) if saved is None else (saved, saved.stride(0), saved.stride(1))


def forward(x, w, bias, y, z, *, kind, parameter, dot_precision, scale=None, slope=None):
    """y = scale · act(x @ w^T + b) into the preallocated ``y``; z = x @ w^T + b into ``z`` too
    unless it is None. ``slope``: PReLU's out_features slopes (kind "prelu")."""
    rows, in_features = x.shape
    out_features = w.shape[0]

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(out_features, meta["BLOCK_N"]),)

    z_target = y if z is None else z
    (bias_target, bias_stride), (scale_target, scale_stride) = _vector_arguments(bias, y), _vector_arguments(scale, y)
    args = (x, w, bias_target, scale_target, y, z_target, rows, out_features, in_features, *x.stride(), *w.stride(),
            *y.stride(), *z_target.stride(), bias_stride, scale_stride, *_vector_arguments(slope, y), float(parameter))
    launch(_forward_autotuned, _linear_forward_kernel, grid, args,
           dict(HAS_BIAS=bias is not None, SCALED=scale is not None, KIND=kind, STORE_Z=z is not None,
                WIDE_INDEX=needs_wide_index(x, w, y), DOT_PRECISION=dot_precision, UPCAST=INTERPRETED),
           dict(BLOCK_M=rows, BLOCK_N=out_features, BLOCK_K=in_features))
    return 1


def input_grad(dy, saved, w, dx, *, kind, parameter, from_output, dot_precision, scale=None, slope=None):
    """dx = g @ w into the preallocated ``dx``, g = act'·scale·dy, act' from ``saved`` (z, or y
    when ``from_output``; None without an activation)."""
    rows, in_features = dx.shape
    out_features = w.shape[0]

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(in_features, meta["BLOCK_N"]),)

    saved_target, *saved_strides = _saved_arguments(saved, dy)
    scale_target, scale_stride = _vector_arguments(scale, dy)
    args = (dy, saved_target, scale_target, w, dx, rows, out_features, in_features, *dy.stride(), *saved_strides,
            scale_stride, *w.stride(), *dx.stride(), *_vector_arguments(slope, dy), float(parameter))
    launch(_input_grad_autotuned, _linear_input_grad_kernel, grid, args,
           dict(KIND=kind, SCALED=scale is not None, FROM_OUTPUT=from_output,
                WIDE_INDEX=needs_wide_index(dy, w, dx), DOT_PRECISION=dot_precision, UPCAST=INTERPRETED),
           dict(BLOCK_M=rows, BLOCK_N=in_features, BLOCK_K=out_features))
    return 1


def weight_grad_slices(out_features, in_features, rows, device, sms=None):
    """(rows per slice, slices) of the weight gradient's reduction over ``rows``."""
    nominal_tiles = triton.cdiv(out_features, 64) * max(1, triton.cdiv(in_features, 64))  # db's column without K
    return reduction_slices(nominal_tiles, rows, device, min_length=MIN_ROWS_PER_SLICE, max_slices=MAX_SLICES, sms=sms)


def weight_grad(dy, saved, x, dw, db, *, kind, parameter, from_output, dot_precision, scale=None, ds=None,
                slope=None, dslope=None):
    """dw = g^T @ x into the preallocated dense ``dw`` and, unless None, db = the sum of g over the
    rows into the dense ``db``, ds = the sum of dy·act(z) into ``ds`` (``saved`` then z) and the
    PReLU slopes' gradient (the sum of scale·dy·z where z <= 0) into the dense ``dslope``, in one
    pass (plus the sums of the slices' partials)."""
    rows, in_features = x.shape
    out_features = dw.shape[0]
    rows_per_slice, slices = weight_grad_slices(out_features, in_features, rows, dw.device)
    dw_target = partials(dw, slices)
    db_target = dw_target if db is None else partials(db, slices)
    ds_target = dw_target if ds is None else partials(ds, slices)
    dslope_target = dw_target if dslope is None else partials(dslope, slices)

    def grid(meta):
        # at least one column block: with no input features the first still sums db and ds
        return (triton.cdiv(out_features, meta["BLOCK_M"]) * max(1, triton.cdiv(in_features, meta["BLOCK_N"])),
                slices)

    saved_target, *saved_strides = _saved_arguments(saved, dy)
    scale_target, scale_stride = _vector_arguments(scale, dy)
    args = (dy, saved_target, scale_target, x, dw_target, db_target, ds_target, rows, out_features, in_features,
            *dy.stride(), *saved_strides, scale_stride, *x.stride(), *dw.stride(), rows_per_slice, dw.numel(),
            *_vector_arguments(slope, dy), dslope_target, float(parameter))
    launch(_weight_grad_autotuned, _linear_weight_grad_kernel, grid, args,
           dict(KIND=kind, SCALED=scale is not None, FROM_OUTPUT=from_output, BIAS_GRAD=db is not None,
                SCALE_GRAD=ds is not None, SLOPE_GRAD=dslope is not None, WIDE_INDEX=needs_wide_index(dy, x, dw, extra_span=slices * dw.numel()),
                DOT_PRECISION=dot_precision, UPCAST=INTERPRETED),
           dict(BLOCK_M=out_features, BLOCK_N=in_features, BLOCK_K=rows_per_slice))
    launches = 1 + sum_partials(dw_target, dw, slices)
    for vector, target in ((db, db_target), (ds, ds_target), (dslope, dslope_target)):
        if vector is not None:
            launches += sum_partials(target, vector, slices)
    return launches
