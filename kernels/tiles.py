"""Tile sizes and autotuning switches that depend on where the kernels run, decided here once.

Compiled, a tile is sized for the GPU: enough warps of work to hide memory latency, registers and
shared memory that fit. Triton's interpreter runs each program as NumPy operations on whole
blocks, so it pays per program and per operation, not per element: there larger tiles (fewer
programs) make the test suite fast, and the tests shrink them where they need the multi-block
paths. Every kernel file states its two choices through ``by_backend``/``channel_blocks``, so a
reader sees both next to each other and no file tests ``INTERPRETED`` for a tile size itself.
"""
import os

import triton

from . import INTERPRETED


def by_backend(*, interpreter, gpu):
    """``interpreter`` when the kernels run in Triton's interpreter, ``gpu`` when compiled."""
    return interpreter if INTERPRETED else gpu


def channel_blocks(channel_stride, *, interpreter, channels_last, nchw):
    """(pixel block, channel block) of a [pixels x channels] tile: wide channel blocks when channels
    are contiguous (``channel_stride == 1``, channels_last), wide pixel blocks otherwise (NCHW), so
    that each load instruction reads consecutive addresses; ``interpreter`` in the interpreter."""
    if INTERPRETED:
        return interpreter
    return channels_last if channel_stride == 1 else nchw


def autotune_enabled():
    """Whether autotuned kernels search their configurations: never in the interpreter (one
    configuration), and not when ``FASTCNN_AUTOTUNE=0`` asks for the fixed default ones."""
    return not INTERPRETED and os.environ.get("FASTCNN_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def fit_to_extents(blocks, extents, *, minimum):
    """``blocks`` (constexpr name -> size) with each block named in ``extents`` shrunk to its extent
    (a power of two, at least ``minimum``) in the interpreter, which pays for every element of a
    tile, masked or not; unchanged when compiled, where tiles are sized for the GPU."""
    if not INTERPRETED:
        return blocks
    return {name: min(size, max(minimum, triton.next_power_of_2(extents[name]))) if name in extents else size
            for name, size in blocks.items()}
