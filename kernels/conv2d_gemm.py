"""conv2d as implicit GEMM: forward, grad-input (dgrad) and grad-weight (wgrad) of every
convolution with more than one input channel per group (kernels/conv2d.py routes depthwise layers
to kernels/conv2d_depthwise.py). Notation as in kernels/conv2d.py.

Each pass is a GEMM whose operands are gathered on the fly from the 4-d tensors through their
strides (no im2col buffer); taps that fall in the padding are masked loads of zero. The gathered
operands must have contiguous channels (channels_last, or any view with channel stride 1): an
operand without them is first copied to channels_last (``channels_contiguous`` says why and what
it costs); outputs are written through their own strides, whatever the layout. Per group (c < C/G, k < K/G):

    forward  rows = N·P·Q output pixels, columns = K/G output channels, reduction over (C/G)·R·S
    dgrad    rows = N·H·W input pixels, columns = C/G input channels, reduction over (K/G)·R·S
    wgrad    rows = K/G output channels, columns = (C/G)·R·S, reduction over N·P·Q

FLOPs of each: 2·N·P·Q·K·(C/G)·R·S. Minimum bytes: forward reads x and w and writes y; dgrad
reads dy and w, writes dx; wgrad reads x and dy, writes dw; plus, for each operand without
contiguous channels (NCHW), a read and a write of it for its channels_last copy.

Launch grids (fp32 accumulation; programs of one group share the GEMM's B operand):
  forward  (cdiv(N·P·Q, BLOCK_M) · cdiv(K/G, BLOCK_N), G)
  dgrad    (cdiv(N·H·W / (sh·sw), BLOCK_M) · cdiv(C/G, BLOCK_N), G) per stride phase (sh·sw
           launches): rows = the input pixels of one phase, which all take the same taps, so
           no program multiplies the zeros of a zero-inserted dy
  wgrad    (cdiv(K/G, BLOCK_M) · R·S·cdiv(C/G, BLOCK_N), G, slices): the reduction over N·P·Q is
           cut into slices (split-K, kernels/slicing.py) when the output alone has too few tiles
           to fill the GPU; slices write fp32 partials added in a fixed order (deterministic).
Programs along the first axis are ordered in groups of ``GROUP_M`` rows so that tiles running at
the same time share operand blocks in L2 (the Triton matmul tutorial's grouped ordering).
The autotuner tries only the configs that launch on an H100 without spilling for the launch's
dtype, output layout and dot precision (``fits``, read from ptxas by scripts/static_gpu_check.py,
which CI runs); without autotuning a launch takes DEFAULT_CONFIG where it fits.
"""
import torch
import triton
import triton.language as tl

from . import INTERPRETED
from . import prologue as input_prologue
from .indexing import (advance_pixels, block_indices, dense_pixels, needs_wide_index, next_tap_step, pixel_coordinates,
                       pixel_step, widen)
from .moments import MOMENT_ROWS, moment_slots, store_tile_moments, store_tile_sums
from .prologue import through_activation, transform, transform_vectors
from .slicing import partials, reduction_slices, slice_range, sum_partials
from .tiles import autotune_enabled, by_backend, fit_to_extents

# Shortest slice of an N·P·Q reduction worth its own fp32 partial, and the most slices (see
# slicing.py); the depthwise and bias-grad reductions slice the same way.
MIN_PIXELS_PER_SLICE = by_backend(interpreter=32, gpu=1024)
MAX_SLICES = 64

# One configuration in the interpreter, with large blocks (the launch shrinks each block to the
# GEMM's extent there; the tests shrink it further to reach the multi-block paths).
_INTERPRETER_CONFIG = dict(BLOCK_M=1024, BLOCK_N=64, BLOCK_K=1024, GROUP_M=4)
_GPU_CONFIGS = [  # BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages
    (128, 128, 64, 8, 3), (128, 128, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
    (256, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 64, 64, 4, 4), (128, 32, 32, 4, 4),
    (64, 16, 32, 4, 4),
]


def gemm_configs():
    return by_backend(
        interpreter=[triton.Config(dict(_INTERPRETER_CONFIG), num_warps=4, num_stages=1)],
        gpu=[triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8), num_warps=w, num_stages=s)
             for m, n, k, w, s in _GPU_CONFIGS])


# An H100 gives one program at most 227 KB of shared memory; the pipelined loop keeps num_stages
# copies of both operand blocks there.
MAX_SHARED_BYTES = 232448
# fp32 accumulator registers per thread beyond which a config spills (read from ptxas on sm_90a,
# scripts/static_gpu_check.py): 16-bit operands leave room for 128 (a 128x256 tile on 8 warps);
# fp32 (TF32) operands, which wgmma also reads from registers, for 64.
MAX_ACCUMULATOR_REGISTERS = {2: 128, 4: 64}


def shared_bytes(config, element_size):
    """Shared memory of a config's operand pipeline: stages x (BLOCK_M x BLOCK_K + BLOCK_K x BLOCK_N)."""
    blocks = config.kwargs
    return config.num_stages * (blocks["BLOCK_M"] + blocks["BLOCK_N"]) * blocks["BLOCK_K"] * element_size


# An output whose channels are not contiguous (NCHW) is stored one element at a time, with an
# address register per element of the tile in the epilogue: tiles beyond this spill.
MAX_SCATTERED_TILE = 8192


# fp32 without TF32 (DOT_PRECISION 'ieee') multiplies on the FMA units from register fragments of
# both operand blocks beside the accumulator: beyond this many registers per thread for the three
# together, a config spills; and ptxas spills the 64x16 tile's grad-input (12 B, bench/static/),
# so FMA tiles are at least this wide.
MAX_FMA_FRAGMENT_REGISTERS = 96
MIN_FMA_BLOCK_N = 32


# With the input prologue (kernels/prologue.py) the transformed operand block passes through
# registers on its way to the tensor cores. Beside 128 accumulator registers per thread (16-bit
# operands) that fits on 8 warps with at most 32 of its elements per thread: the 128x256 forward
# (A: 128x64) and the 256x128 grad-weight (B: 64x128) do not spill, the 256x128 forward (64 per
# thread) spills 56 B and the 128x128x32 forward on 4 warps 4 B (bench/static/). Other prologue
# launches keep at most 64. With the grad-input's epilogue x's tile joins the accumulator: ptxas
# spills every 16-bit tile that keeps 128 (256x128 and 128x256 on 8 warps), so it keeps 64.
MAX_PROLOGUE_ACCUMULATOR_REGISTERS = 64
MAX_PROLOGUE_ELEMENTS_AT_128_REGISTERS = 32
PROLOGUE_MIN_WARPS_AT_128_REGISTERS = 8
# The moments epilogue (kernels/moments.py) spills only beside 128 accumulator registers per
# thread on 4 warps (128x128x32: 4 B, bench/static/); 8-warp tiles of that size do not.
MOMENTS_MIN_WARPS_AT_128_REGISTERS = 8


def fits(config, element_size, output_channels_contiguous=True, fma=False, prologue=None, moments=False,
         epilogue=False):
    """Whether a config can launch on an H100 without spilling, for operands of ``element_size``
    bytes, an output with or without contiguous channels, on tensor cores or (``fma``) not, with
    or without the input prologue (``prologue``: the operand it transforms, "A" in the forward,
    "B" in grad-weight), the moments epilogue and the grad-input's batch-norm epilogue (which
    loads the prologue's vectors and, like the moments, sums whole MOMENT_ROWS rows)."""
    blocks = config.kwargs
    threads = 32 * config.num_warps
    tile = blocks["BLOCK_M"] * blocks["BLOCK_N"]
    fragments = (blocks["BLOCK_M"] + blocks["BLOCK_N"]) * blocks["BLOCK_K"] + tile
    accumulator_limit = MAX_ACCUMULATOR_REGISTERS.get(element_size, 64)
    if prologue:
        transformed = blocks["BLOCK_K"] * (blocks["BLOCK_M"] if prologue == "A" else blocks["BLOCK_N"])
        if (transformed // threads > MAX_PROLOGUE_ELEMENTS_AT_128_REGISTERS
                or config.num_warps < PROLOGUE_MIN_WARPS_AT_128_REGISTERS):
            accumulator_limit = min(accumulator_limit, MAX_PROLOGUE_ACCUMULATOR_REGISTERS)
    if epilogue:
        accumulator_limit = min(accumulator_limit, MAX_PROLOGUE_ACCUMULATOR_REGISTERS)
    if moments and tile // threads >= 128 and config.num_warps < MOMENTS_MIN_WARPS_AT_128_REGISTERS:
        return False
    if (moments or epilogue) and blocks["BLOCK_M"] < MOMENT_ROWS:
        return False  # a tile must cover whole summaries (kernels/moments.py)
    return (shared_bytes(config, element_size) <= MAX_SHARED_BYTES
            and tile // threads <= accumulator_limit
            and (output_channels_contiguous or tile <= MAX_SCATTERED_TILE)
            and (not fma or (fragments // threads <= MAX_FMA_FRAGMENT_REGISTERS
                             and blocks["BLOCK_N"] >= MIN_FMA_BLOCK_N)))


def prune_configs(operand, output_channel_stride=None, prologue_operand=None):
    """The autotuner's early pruning: only the configs that ``fits`` for the dtype of the kernel
    argument named ``operand``, the output channel stride named ``output_channel_stride``
    (grad-weight's [K x C·R·S] tiles store without spilling in either layout) and, with the
    prologue, the GEMM operand it transforms; never none (the smallest config always fits)."""
    def prune(configs, named_args, **kwargs):
        element_size = named_args[operand].element_size()
        contiguous = output_channel_stride is None or named_args[output_channel_stride] == 1
        fma = element_size == 4 and kwargs.get("DOT_PRECISION") == "ieee"
        flags = dict(prologue=prologue_operand if kwargs.get("PROLOGUE") else None, moments=bool(kwargs.get("MOMENTS")),
                     epilogue=bool(kwargs.get("EPILOGUE")))
        return [config for config in configs
                if fits(config, element_size, contiguous, fma, **flags)] or configs[-1:]
    return prune


# Used instead of autotuning when FASTCNN_AUTOTUNE=0 (and always in the interpreter), where it
# fits (``fixed_config``): (constexprs, num_warps, num_stages).
DEFAULT_CONFIG = by_backend(interpreter=(_INTERPRETER_CONFIG, 4, 1),
                            gpu=(dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8), 4, 4))

# The autotuner also keys on every tensor argument's dtype; strides of the gathered operand are in
# the key because NCHW and channels_last favour different tiles, the output's channel stride and
# the dot precision (TF32 or FMA) because they decide which tiles fit (``fits``).
_GEOMETRY_KEY = ["batch", "in_height", "in_width", "out_height", "out_width", "in_per_group", "out_per_group",
                 "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "DOT_PRECISION"]


@triton.jit
def tile_coordinates(pid, num_row_tiles, num_col_tiles, GROUP_M: tl.constexpr):
    """(row tile, column tile) of program ``pid``, walking GROUP_M row tiles per column tile."""
    tiles_per_group = GROUP_M * num_col_tiles
    first_row = (pid // tiles_per_group) * GROUP_M
    rows_in_group = tl.minimum(num_row_tiles - first_row, GROUP_M)
    row = first_row + (pid % tiles_per_group) % rows_in_group
    col = (pid % tiles_per_group) // rows_in_group
    return row, col


@triton.jit
def multiply_accumulate(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:  # Triton's interpreter multiplies bf16 blocks wrongly; fp32 is exact for any input
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return acc



@triton.jit
def _conv2d_forward_kernel(
        x_ptr, w_ptr, bias_ptr, y_ptr,
        batch, in_height, in_width, out_height, out_width, in_per_group, out_per_group,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        w_stride_k, w_stride_c, w_stride_h, w_stride_w,
        y_stride_n, y_stride_k, y_stride_h, y_stride_w, bias_stride,
        stats_ptr, norm_parameter, stats_stride,
        moments_ptr, moment_slots, moment_channels,
        PROLOGUE: tl.constexpr,
        KIND: tl.constexpr, MOMENTS: tl.constexpr, ONE_TAP: tl.constexpr,
        HAS_BIAS: tl.constexpr, WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    group = tl.program_id(1)
    num_pixels = widen(batch, WIDE_INDEX) * out_height * out_width
    tile_m, tile_n = tile_coordinates(tl.program_id(0), tl.cdiv(num_pixels, BLOCK_M),
                                       tl.cdiv(out_per_group, BLOCK_N), GROUP_M)
    pixels = block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n, oh, ow = pixel_coordinates(pixels, out_height, out_width)
    out_channels = group * out_per_group + block_indices(tile_n, BLOCK_N, WIDE_INDEX)
    out_ok = out_channels < (group + 1) * out_per_group
    channel_offsets = widen(tl.arange(0, BLOCK_K), WIDE_INDEX)

    x_rows = x_ptr + n * x_stride_n + (group * in_per_group) * x_stride_c  # [BLOCK_M] pointers
    w_cols = w_ptr + out_channels * w_stride_k  # [BLOCK_N] pointers
    top = oh * stride_h - pad_h
    left = ow * stride_w - pad_w

    # One loop over (tap, channel block) rather than nested loops, so the compiler pipelines the
    # loads of the next step across taps even when C/G fits in one block.
    channel_blocks = tl.cdiv(in_per_group, BLOCK_K)
    block = 0
    r = 0
    s = 0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(kernel_h * kernel_w * channel_blocks):
        channels = block * BLOCK_K + channel_offsets
        ih = top + r * dilation_h
        iw = left + s * dilation_w
        row_ok = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        channel_ok = channels < in_per_group
        a_ok = row_ok[:, None] & channel_ok[None, :]
        a = tl.load(x_rows[:, None] + (ih * x_stride_h + iw * x_stride_w)[:, None] + channels[None, :] * x_stride_c,
                    mask=a_ok, other=0.0)
        if PROLOGUE:  # kernels/prologue.py: act(bn(x)) of the tile, zero in the padding
            centre, scale, shift = transform_vectors(stats_ptr, stats_stride, group * in_per_group + channels,
                                                     channel_ok, x_ptr)
            a = transform(a, a_ok, centre, scale, shift, KIND, norm_parameter)
        b = tl.load(w_cols[None, :] + channels[:, None] * w_stride_c + (r * w_stride_h + s * w_stride_w),
                    mask=channel_ok[:, None] & out_ok[None, :], other=0.0)
        acc = multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)
        if ONE_TAP:  # a 1x1 kernel: r and s stay 0, so the rows' masks and addresses leave the loop
            block += 1
        else:
            block, s, r = next_tap_step(block, s, r, channel_blocks, kernel_w)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + out_channels * bias_stride, mask=out_ok, other=0.0).to(tl.float32)[None, :]
    y = acc.to(y_ptr.dtype.element_ty)
    y_offsets = (n * y_stride_n + oh * y_stride_h + ow * y_stride_w)[:, None] + out_channels[None, :] * y_stride_k
    tl.store(y_ptr + y_offsets, y, mask=pixel_ok[:, None] & out_ok[None, :])
    if MOMENTS:  # kernels/moments.py: y's per-channel summaries, for the batch norm that reads y next
        store_tile_moments(y.to(tl.float32), pixel_ok, out_ok, out_channels, tile_m, moments_ptr, moment_slots,
                           moment_channels, BLOCK_M)


@triton.jit
def _conv2d_input_grad_kernel(
        dy_ptr, w_ptr, dx_ptr,
        batch, in_height, in_width, out_height, out_width, in_per_group, out_per_group,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        w_stride_k, w_stride_c, w_stride_h, w_stride_w,
        dx_stride_n, dx_stride_c, dx_stride_h, dx_stride_w,
        phase_row, phase_col, phase_rows, phase_cols,
        first_tap_h, first_tap_w, tap_step_h, tap_step_w, taps_h, taps_w,
        x_ptr, x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        stats_ptr, norm_parameter, stats_stride,
        sums_ptr, first_slot, last_slot, num_in_channels,
        EPILOGUE: tl.constexpr,
        KIND: tl.constexpr, ONE_TAP: tl.constexpr,
        WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """grad-input for the input pixels of one stride phase: rows phase_row + i*sh, columns
    phase_col + j*sw. Input row h receives output row p from tap r when p*sh = h + ph - r*dh,
    which holds for every row of a phase or for none, so the phase visits only its ``taps_h`` x
    ``taps_w`` contributing taps (every tap at stride 1; about R/sh x S/sw of them otherwise)
    and never multiplies the zeros a zero-inserted dy would hold."""
    group = tl.program_id(1)
    num_pixels = widen(batch, WIDE_INDEX) * phase_rows * phase_cols
    tile_m, tile_n = tile_coordinates(tl.program_id(0), tl.cdiv(num_pixels, BLOCK_M),
                                       tl.cdiv(in_per_group, BLOCK_N), GROUP_M)
    pixels = block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    pixel_ok = pixels < num_pixels
    n = pixels // (phase_rows * phase_cols)
    ih = phase_row + ((pixels // phase_cols) % phase_rows) * stride_h
    iw = phase_col + (pixels % phase_cols) * stride_w
    in_channels = group * in_per_group + block_indices(tile_n, BLOCK_N, WIDE_INDEX)
    in_ok = in_channels < (group + 1) * in_per_group
    channel_offsets = widen(tl.arange(0, BLOCK_K), WIDE_INDEX)

    dy_rows = dy_ptr + n * dy_stride_n + (group * out_per_group) * dy_stride_k
    w_cols = w_ptr + (group * out_per_group) * w_stride_k + (in_channels - group * in_per_group) * w_stride_c
    padded_top = ih + pad_h
    padded_left = iw + pad_w

    channel_blocks = tl.cdiv(out_per_group, BLOCK_K)
    # The output pixel each input pixel takes from the phase's first tap, and the step to the next
    # tap's: exact divisions (the phase's taps are those for which they are), made once here
    # rather than per row and step.
    first_oh = (padded_top - first_tap_h * dilation_h) // stride_h
    first_ow = (padded_left - first_tap_w * dilation_w) // stride_w
    oh_step = (tap_step_h * dilation_h) // stride_h
    ow_step = (tap_step_w * dilation_w) // stride_w
    block = 0
    tap_col = 0
    tap_row = 0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(taps_h * taps_w * channel_blocks):
        channels = block * BLOCK_K + channel_offsets
        r = first_tap_h + tap_row * tap_step_h
        s = first_tap_w + tap_col * tap_step_w
        oh = first_oh - tap_row * oh_step
        ow = first_ow - tap_col * ow_step
        row_ok = pixel_ok & (oh >= 0) & (ow >= 0) & (oh < out_height) & (ow < out_width)
        channel_ok = channels < out_per_group
        a = tl.load(dy_rows[:, None] + (oh * dy_stride_h + ow * dy_stride_w)[:, None] + channels[None, :] * dy_stride_k,
                    mask=row_ok[:, None] & channel_ok[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + channels[:, None] * w_stride_k + (r * w_stride_h + s * w_stride_w),
                    mask=channel_ok[:, None] & in_ok[None, :], other=0.0)
        acc = multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)
        if ONE_TAP:  # one tap reaches the phase (1x1 kernels): the rows' masks and addresses leave the loop
            block += 1
        else:
            block, tap_col, tap_row = next_tap_step(block, tap_col, tap_row, channel_blocks, taps_w)

    if EPILOGUE:
        # This is the gradient of act(bn(x)), the input of a convolution with the input prologue:
        # take it through the activation's derivative at u = bn(x) recomputed from x where it is
        # in registers, and sum g and g·x̂ per channel for batch norm's backward (kernels/moments.py),
        # so that the backward reads neither this gradient nor x once more for those sums.
        valid = pixel_ok[:, None] & in_ok[None, :]
        x = tl.load(x_ptr + (n * x_stride_n + ih * x_stride_h + iw * x_stride_w)[:, None]
                    + in_channels[None, :] * x_stride_c, mask=valid, other=0.0).to(tl.float32)
        acc, acc_x_hat = through_activation(acc, x, valid, stats_ptr, stats_stride, in_channels, in_ok, norm_parameter,
                                            KIND)
        store_tile_sums(acc, acc_x_hat, in_ok, in_channels, tile_m, sums_ptr, first_slot, last_slot, num_in_channels,
                        BLOCK_M)
    dx_offsets = (n * dx_stride_n + ih * dx_stride_h + iw * dx_stride_w)[:, None] + in_channels[None, :] * dx_stride_c
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & in_ok[None, :])


@triton.jit
def _conv2d_weight_grad_kernel(
        x_ptr, dy_ptr, dw_ptr,
        batch, in_height, in_width, out_height, out_width, in_per_group, out_per_group,
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        dy_stride_n, dy_stride_k, dy_stride_h, dy_stride_w,
        dw_stride_k, dw_stride_c, dw_stride_h, dw_stride_w,
        pixels_per_split, split_stride,
        stats_ptr, norm_parameter, stats_stride,
        PROLOGUE: tl.constexpr,
        KIND: tl.constexpr, DENSE_DY: tl.constexpr,
        WIDE_INDEX: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """grad-weight of one (output-channel block, tap, input-channel block) tile over one slice of
    the N·P·Q pixels. With DENSE_DY (dy's pixels one run: indexing.dense_pixels) dy's block is
    addressed from the flat pixel index alone; only x's, shifted by the tap and masked by the
    padding, needs the pixels' coordinates."""
    group = tl.program_id(1)
    split = tl.program_id(2)
    channel_tiles = tl.cdiv(in_per_group, BLOCK_N)
    tile_m, tile_n = tile_coordinates(tl.program_id(0), tl.cdiv(out_per_group, BLOCK_M),
                                       kernel_h * kernel_w * channel_tiles, GROUP_M)
    tap = tile_n // channel_tiles
    r = tap // kernel_w
    s = tap - r * kernel_w
    out_channels = group * out_per_group + block_indices(tile_m, BLOCK_M, WIDE_INDEX)
    out_ok = out_channels < (group + 1) * out_per_group
    in_channels = block_indices(tile_n - tap * channel_tiles, BLOCK_N, WIDE_INDEX)
    in_ok = in_channels < in_per_group

    dy_rows = dy_ptr + out_channels * dy_stride_k  # [BLOCK_M] pointers
    x_cols = x_ptr + (group * in_per_group + in_channels) * x_stride_c  # [BLOCK_N] pointers
    row_offset = r * dilation_h - pad_h
    col_offset = s * dilation_w - pad_w

    if PROLOGUE:  # the program's input channels are fixed: their vectors are loaded once
        centre, scale, shift = transform_vectors(stats_ptr, stats_stride, group * in_per_group + in_channels, in_ok,
                                                 x_ptr)

    num_pixels = widen(batch, WIDE_INDEX) * out_height * out_width
    start, end = slice_range(split, pixels_per_split, num_pixels, WIDE_INDEX)
    # The block's pixel coordinates, advanced by BLOCK_K pixels a step without dividing (indexing.py).
    pixel_offsets = widen(tl.arange(0, BLOCK_K), WIDE_INDEX)
    n, oh, ow = pixel_coordinates(start + pixel_offsets, out_height, out_width)
    step_n, step_h, step_w = pixel_step(BLOCK_K, out_height, out_width)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for first in range(start, end, BLOCK_K):
        pixel_ok = first + pixel_offsets < end
        ih = oh * stride_h + row_offset
        iw = ow * stride_w + col_offset
        x_ok = pixel_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        if DENSE_DY:
            dy_pixels = (first + pixel_offsets) * dy_stride_w
        else:
            dy_pixels = n * dy_stride_n + oh * dy_stride_h + ow * dy_stride_w
        a = tl.load(dy_rows[:, None] + dy_pixels[None, :], mask=out_ok[:, None] & pixel_ok[None, :], other=0.0)
        b_ok = x_ok[:, None] & in_ok[None, :]
        b = tl.load(x_cols[None, :] + (n * x_stride_n + ih * x_stride_h + iw * x_stride_w)[:, None],
                    mask=b_ok, other=0.0)
        if PROLOGUE:  # recompute act(bn(x)) rather than keep it from the forward
            b = transform(b, b_ok, centre, scale, shift, KIND, norm_parameter)
        acc = multiply_accumulate(a, b, acc, DOT_PRECISION, UPCAST)
        n, oh, ow = advance_pixels(n, oh, ow, step_n, step_h, step_w, out_height, out_width)

    dw_offsets = ((out_channels * dw_stride_k)[:, None] + (in_channels * dw_stride_c)[None, :]
                  + (r * dw_stride_h + s * dw_stride_w))
    tl.store(dw_ptr + split * split_stride + dw_offsets, acc.to(dw_ptr.dtype.element_ty),
             mask=out_ok[:, None] & in_ok[None, :])



_forward_autotuned = triton.autotune(
    gemm_configs(), key=_GEOMETRY_KEY + ["x_stride_c", "x_stride_w", "y_stride_k", "PROLOGUE", "KIND", "MOMENTS"],
    prune_configs_by=dict(early_config_prune=prune_configs("x_ptr", "y_stride_k", prologue_operand="A")))(
        _conv2d_forward_kernel)
_input_grad_autotuned = triton.autotune(
    gemm_configs(), key=_GEOMETRY_KEY + ["dy_stride_k", "dy_stride_w", "dx_stride_c", "phase_rows", "phase_cols", "taps_h",
                          "taps_w", "EPILOGUE", "KIND"],
    prune_configs_by=dict(early_config_prune=prune_configs("dy_ptr", "dx_stride_c")))(_conv2d_input_grad_kernel)
_weight_grad_autotuned = triton.autotune(
    gemm_configs(), key=_GEOMETRY_KEY + ["x_stride_c", "x_stride_w", "pixels_per_split", "PROLOGUE", "KIND", "DENSE_DY"],
    prune_configs_by=dict(early_config_prune=prune_configs("x_ptr", prologue_operand="B")))(_conv2d_weight_grad_kernel)


# ----------------------------------------------------------------------------------------------
# Launchers. They trust their caller (fastcnn.conv) to have validated shapes, dtypes and devices


# ----------------------------------------------------------------------------------------------
# Launchers; each returns the number of kernels it launched.

def fixed_config(autotuned, kernel, args, constexprs):
    """The config a launch uses without autotuning: DEFAULT_CONFIG when it fits the launch (the
    autotuner's own pruning, ``fits``), else the first config that does."""
    blocks, num_warps, num_stages = DEFAULT_CONFIG
    default = triton.Config(dict(blocks), num_warps=num_warps, num_stages=num_stages)
    return autotuned.early_config_prune([default] + gemm_configs(), dict(zip(kernel.arg_names, args)), **constexprs)[0]


def launch(autotuned, kernel, grid, args, constexprs, extents, min_block_m=1):
    """Launch with the autotuner, or with ``fixed_config``. ``extents`` are the GEMM's sizes along
    BLOCK_M, BLOCK_N and BLOCK_K, to which the interpreter shrinks the blocks (tiles.fit_to_extents),
    never below ``min_block_m`` rows unless one tile holds them all (the moments epilogue's
    granule; the autotuner's pruning, ``fits``, keeps BLOCK_M >= MOMENT_ROWS for it)."""
    if autotune_enabled():
        autotuned[grid](*args, **constexprs)
        return
    config = fixed_config(autotuned, kernel, args, constexprs)
    blocks = fit_to_extents(config.kwargs, extents, minimum=16)  # tl.dot needs blocks of at least 16
    if blocks["BLOCK_M"] < min_block_m:
        blocks["BLOCK_M"] = min(min_block_m, max(16, triton.next_power_of_2(extents["BLOCK_M"])))
    kernel[grid(blocks)](*args, **constexprs, **blocks, num_warps=config.num_warps, num_stages=config.num_stages)


def _geometry(x, w, y, stride, padding, dilation, groups):
    """The scalar arguments shared by the three GEMM kernels, in their parameter order."""
    return (x.shape[0], x.shape[2], x.shape[3], y.shape[2], y.shape[3], x.shape[1] // groups, w.shape[0] // groups,
            w.shape[2], w.shape[3], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


def channels_contiguous(tensor):
    """``tensor`` with contiguous channels: itself (as a view with channels_last's own strides
    when torch calls it channels_last, so that size-1 dims compile alike), or a channels_last copy.

    The GEMMs' reduction runs over channels, so a tile of an operand is a block of consecutive
    channels at each of BLOCK_M pixels: with channel stride 1 every row of it is one 16-byte
    aligned run that cp.async copies to shared memory 128 bits at a time, and ptxas keeps the
    tile's addresses in few registers. With NCHW strides the same tile is BLOCK_M x BLOCK_K
    scattered elements (the taps' pixel shifts defeat any vector width along W), which compiles
    to scalar loads, no async copy and register spills (bench/static/). So an NCHW activation or
    weight is copied once per pass: 2 x its bytes (read + write) more traffic, against compute
    of 2·N·P·Q·K·(C/G)·R·S FLOPs that the contiguous kernel can feed the tensor cores. Outputs
    are written through their own strides (a store per element, once, outside the loop)."""
    if tensor.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = tensor.shape
        return tensor.as_strided(tensor.shape, (h * w * c, 1, w * c, c))
    if not needs_channels_last_copy(tensor):
        return tensor
    return tensor.contiguous(memory_format=torch.channels_last)


def needs_channels_last_copy(tensor):
    """Whether ``channels_contiguous`` copies ``tensor``: its channels are not contiguous."""
    return not (tensor.is_contiguous(memory_format=torch.channels_last) or tensor.stride(1) == 1)


def forward(x, w, bias, y, *, stride, padding, dilation, groups, dot_precision, prologue=None, moments=None):
    """y = conv2d(x, w, bias) into the preallocated ``y``; ``padding`` is (top, left); with a
    ``prologue`` (kernels/prologue.py) of x, conv2d(act(bn(x)), w, bias); with ``moments`` (fp32
    [moment_slots(N·P·Q), 4, K], kernels/moments.py), y's per-channel summaries into it too."""
    x, w = channels_contiguous(x), channels_contiguous(w)
    geometry = _geometry(x, w, y, stride, padding, dilation, groups)
    pixels = x.shape[0] * y.shape[2] * y.shape[3]
    out_per_group = w.shape[0] // groups

    def grid(meta):
        return (triton.cdiv(pixels, meta["BLOCK_M"]) * triton.cdiv(out_per_group, meta["BLOCK_N"]), groups)

    normalise, prologue_flags = input_prologue.arguments(prologue, x)
    args = (x, w, bias if bias is not None else y, y, *geometry, *x.stride(), *w.stride(), *y.stride(),
            bias.stride(0) if bias is not None else 0, *normalise,
            y if moments is None else moments, 0 if moments is None else moments.shape[0], y.shape[1])
    launch(_forward_autotuned, _conv2d_forward_kernel, grid, args,
            dict(HAS_BIAS=bias is not None, **prologue_flags, MOMENTS=moments is not None,
                 ONE_TAP=w.shape[2] * w.shape[3] == 1,
                 WIDE_INDEX=needs_wide_index(x, w, y), DOT_PRECISION=dot_precision, UPCAST=INTERPRETED),
            dict(BLOCK_M=pixels, BLOCK_N=out_per_group, BLOCK_K=x.shape[1] // groups),
            min_block_m=MOMENT_ROWS if moments is not None else 1)
    return 1


def phase_size(size, stride, phase):
    """How many of the rows 0..size-1 are phase, phase + stride, ...: one stride phase's extent."""
    return triton.cdiv(size - phase, stride) if phase < size else 0


def stride_phase(size, stride, padding, dilation, kernel, phase):
    """For the input rows h = phase, phase + stride, ... (< size): how many there are and the taps
    that reach them, as (rows, first tap, tap step, taps). Tap r reaches row h when
    h + padding - r*dilation is a multiple of the stride; those r form an arithmetic progression."""
    rows = phase_size(size, stride, phase)
    taps = [r for r in range(kernel) if (phase + padding - r * dilation) % stride == 0]
    step = taps[1] - taps[0] if len(taps) > 1 else 1
    return rows, (taps[0] if taps else 0), step, len(taps)


def input_grad_sum_slots(input_shape, stride):
    """Rows of the [slots, 2, C] sums buffer the grad-input epilogue fills: per stride phase, one
    per MOMENT_ROWS of its input pixels (``stride_phase``'s rows x cols x N), in phase order."""
    height, width = input_shape[2], input_shape[3]
    rows = [phase_size(height, stride[0], phase) for phase in range(stride[0])]
    cols = [phase_size(width, stride[1], phase) for phase in range(stride[1])]
    return sum(moment_slots(input_shape[0] * r * c) for r in rows for c in cols)


def input_grad(dy, w, dx, *, stride, padding, dilation, groups, dot_precision, epilogue=None):
    """dx = grad of conv2d w.r.t. its input, into the preallocated ``dx``: one launch per stride
    phase (stride_h x stride_w of them) that holds input pixels. With ``epilogue`` = (x, prologue,
    sums): the convolution's input was act(bn(x)) (``prologue``, kernels/prologue.py); dx receives
    g = act'(bn(x))·(that gradient) instead, and ``sums`` (fp32 [input_grad_sum_slots, 2, C]) the
    per-channel sums of g and g·x̂ over each MOMENT_ROWS of a phase's pixels."""
    dy, w = channels_contiguous(dy), channels_contiguous(w)
    geometry = _geometry(dx, w, dy, stride, padding, dilation, groups)
    in_per_group = dx.shape[1] // groups
    epilogue_args, epilogue_flags, x, sums = input_prologue.epilogue_arguments(epilogue, dx)
    constexprs = dict(WIDE_INDEX=needs_wide_index(dy, w, dx, x), DOT_PRECISION=dot_precision, UPCAST=INTERPRETED,
                      **epilogue_flags)
    first_slot = 0
    launches = 0
    for phase_row in range(stride[0]):
        rows, first_tap_h, tap_step_h, taps_h = stride_phase(
            dx.shape[2], stride[0], padding[0], dilation[0], w.shape[2], phase_row)
        for phase_col in range(stride[1]):
            cols, first_tap_w, tap_step_w, taps_w = stride_phase(
                dx.shape[3], stride[1], padding[1], dilation[1], w.shape[3], phase_col)
            pixels = dx.shape[0] * rows * cols
            if pixels == 0:
                continue

            def grid(meta, pixels=pixels):
                return (triton.cdiv(pixels, meta["BLOCK_M"]) * triton.cdiv(in_per_group, meta["BLOCK_N"]), groups)

            args = (dy, w, dx, *geometry, *dy.stride(), *w.stride(), *dx.stride(), phase_row, phase_col, rows, cols,
                    first_tap_h, first_tap_w, tap_step_h, tap_step_w, taps_h, taps_w, *epilogue_args, first_slot,
                    first_slot + moment_slots(pixels), dx.shape[1])
            launch(_input_grad_autotuned, _conv2d_input_grad_kernel, grid, args,
                    dict(constexprs, ONE_TAP=taps_h * taps_w == 1),
                    dict(BLOCK_M=pixels, BLOCK_N=in_per_group, BLOCK_K=w.shape[0] // groups),
                    min_block_m=MOMENT_ROWS if epilogue is not None else 1)
            first_slot += moment_slots(pixels)
            launches += 1
    return launches


def weight_grad_slices(weight_shape, groups, pixels, device, sms=None):
    """(pixels per slice, slices) of the weight gradient's reduction over ``pixels`` output pixels."""
    out_per_group, in_per_group, taps = weight_shape[0] // groups, weight_shape[1], weight_shape[2] * weight_shape[3]
    nominal_tiles = triton.cdiv(out_per_group, 64) * triton.cdiv(in_per_group, 64) * taps * groups
    return reduction_slices(nominal_tiles, pixels, device, min_length=MIN_PIXELS_PER_SLICE, max_slices=MAX_SLICES,
                            sms=sms)


def weight_grad(x, dy, dw, *, stride, padding, dilation, groups, dot_precision, prologue=None):
    """dw = grad of conv2d w.r.t. its weight, into the preallocated dense ``dw``; with a
    ``prologue`` of x, that of conv2d(act(bn(x)), w), act(bn(x)) recomputed as x is loaded."""
    x, dy = channels_contiguous(x), channels_contiguous(dy)
    geometry = _geometry(x, dw, dy, stride, padding, dilation, groups)
    pixels = dy.shape[0] * dy.shape[2] * dy.shape[3]
    out_per_group, in_per_group, taps = dw.shape[0] // groups, dw.shape[1], dw.shape[2] * dw.shape[3]
    pixels_per_split, splits = weight_grad_slices(dw.shape, groups, pixels, dy.device)
    target = partials(dw, splits)

    def grid(meta):
        return (triton.cdiv(out_per_group, meta["BLOCK_M"]) * taps * triton.cdiv(in_per_group, meta["BLOCK_N"]),
                groups, splits)

    normalise, prologue_flags = input_prologue.arguments(prologue, x)
    args = (x, dy, target, *geometry, *x.stride(), *dy.stride(), *dw.stride(), pixels_per_split, dw.numel(),
            *normalise)
    launch(_weight_grad_autotuned, _conv2d_weight_grad_kernel, grid, args,
            dict(**prologue_flags, DENSE_DY=dense_pixels(dy),
                 WIDE_INDEX=needs_wide_index(x, dy, dw, extra_span=splits * dw.numel()),
                 DOT_PRECISION=dot_precision,
                 UPCAST=INTERPRETED), dict(BLOCK_M=out_per_group, BLOCK_N=in_per_group, BLOCK_K=pixels_per_split))
    return 1 + sum_partials(target, dw, splits)
