"""Dropout and channel-wise (2-d) dropout: y = x · keep / (1 - p), with keep = (u >= p) for u
uniform in [0, 1) from Philox at a seed read from device memory (drawn from torch's generator by
the caller, so ``torch.manual_seed`` repeats a run and no host sync is needed) and a counter that
names the elements (dropout: counter k gives the four uniforms of memory positions 4k .. 4k + 3,
``tl.rand4x``, a quarter of the Philox rounds of one draw per element) or the (sample, channel)
pair (dropout2d: n·C + c). The mask is never stored: the backward is the same kernel applied to dy
with the same seed, which regenerates it. ``x · 0`` keeps NaN and ±inf dropped as NaN, as
torch's ``input * mask`` does.

Bytes: read x, write y (forward); read dy, write dx (backward). Launch grids: dropout
(cdiv(numel, BLOCK),) over memory order; dropout2d (cdiv(N·C, BLOCK_NC), cdiv(S, BLOCK_S)) over
an [N, C, S] view read through its strides.
"""
import triton
import triton.language as tl

from .indexing import needs_wide_index, widen
from .tiles import by_backend, channel_blocks

BLOCK = by_backend(interpreter=4096, gpu=2048)
NUM_WARPS = 8


@triton.jit
def _keep_factor(uniform, p, scale):
    """scale where the uniform draw keeps the element (u >= p: kept with probability 1 - p), 0
    where it drops it."""
    return tl.where(uniform >= p, scale, 0.0)


@triton.jit
def _dropout_kernel(x_ptr, y_ptr, seed_ptr, numel, p, scale, WIDE: tl.constexpr, BLOCK: tl.constexpr):
    """Philox counter k draws four uniforms, for elements 4k .. 4k + 3 (one call per four)."""
    block = widen(tl.program_id(0), WIDE)
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    draws = tl.rand4x(tl.load(seed_ptr), block * (BLOCK // 4) + tl.arange(0, BLOCK // 4))
    uniform = tl.reshape(tl.join(tl.join(draws[0], draws[1]), tl.join(draws[2], draws[3])), (BLOCK,))
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offsets, (x * _keep_factor(uniform, p, scale)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _channel_dropout_kernel(
        x_ptr, y_ptr, seed_ptr, num_rows, channels, spatial, p, scale,
        x_stride_n, x_stride_c, x_stride_s, y_stride_n, y_stride_c, y_stride_s,
        WIDE: tl.constexpr, BLOCK_NC: tl.constexpr, BLOCK_S: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_NC + tl.arange(0, BLOCK_NC)  # n·C + c: fewer than 2**31 (the op checks)
    s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = (rows < num_rows)[:, None] & (s < spatial)[None, :]
    factor = _keep_factor(tl.rand(tl.load(seed_ptr), rows), p, scale)
    n, c = widen(rows // channels, WIDE), widen(rows % channels, WIDE)
    s = widen(s, WIDE)
    x = tl.load(x_ptr + (n * x_stride_n + c * x_stride_c)[:, None] + (s * x_stride_s)[None, :], mask=mask, other=0.0)
    y = x.to(tl.float32) * factor[:, None]
    tl.store(y_ptr + (n * y_stride_n + c * y_stride_c)[:, None] + (s * y_stride_s)[None, :],
             y.to(y_ptr.dtype.element_ty), mask=mask)


def _factors(p):
    """(p, the kept elements' scale): 1/(1-p), and 0 for p = 1 (nothing is kept, nothing divides)."""
    return float(p), (0.0 if p >= 1.0 else 1.0 / (1.0 - p))


def dropout(x, y, seed, *, p):
    """y = dropout(x) for x, y dense and laid out alike (walked as flat arrays), ``seed`` an int64
    device tensor of one element. One launch."""
    numel = x.numel()
    _dropout_kernel[(triton.cdiv(numel, BLOCK),)](x, y, seed, numel, *_factors(p), WIDE=needs_wide_index(x, y),
                                                  BLOCK=BLOCK, num_warps=NUM_WARPS)
    return 1


def channel_dropout(x, y, seed, *, p):
    """y = dropout2d(x) for x, y [N, C, S] (any strides): whole (n, c) planes kept or dropped. One launch."""
    batch, channels, spatial = x.shape
    block_s, block_nc = channel_blocks(x.stride(1), interpreter=(256, 16), channels_last=(32, 64), nchw=(256, 8))
    block_s = max(1, min(block_s, triton.next_power_of_2(spatial)))
    _channel_dropout_kernel[(triton.cdiv(batch * channels, block_nc), triton.cdiv(spatial, block_s))](
        x, y, seed, batch * channels, channels, spatial, *_factors(p), *x.stride(), *y.stride(),
        WIDE=needs_wide_index(x, y), BLOCK_NC=block_nc, BLOCK_S=block_s)
    return 1
