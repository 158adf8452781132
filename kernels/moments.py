"""What the normalisation kernels (batch, group, instance and layer norm) share: Chan et al.'s
merge of (count, mean, sum of squared deviations) summaries, so that tiles and slices reduced
separately combine into the statistics of their union without the cancellation of a
sum-of-squares formula (an input of mean 3000 and std 0.5 keeps fp32 accuracy); the optional
affine parameters' load; and the moments epilogue of conv2d's forward kernels
(``store_tile_moments``): the summaries of each output channel, written as the output tile is
stored, from which batch norm takes its training statistics (kernels/batch_norm.py,
``statistics_from_moments``) instead of reading the convolution's output once more. They cost
16 bytes per channel per 128 output pixels, written and read once: 1/16 of the bf16 output's
bytes each way, against the whole output that a statistics pass reads (a smaller granule costs
proportionally more: fastcnn.estimate shows it)."""
import triton
import triton.language as tl


@triton.jit
def chan_merge(count, mean, m2, other_count, other_mean, other_m2):
    """Chan et al.'s parallel merge of two (count, mean, sum of squared deviations) summaries."""
    total = count + other_count
    delta = other_mean - mean
    fraction = other_count / tl.maximum(total, 1.0)
    return total, mean + delta * fraction, m2 + other_m2 + delta * delta * count * fraction


@triton.jit
def affine_parameters(weight_ptr, bias_ptr, index, mask, weight_stride, bias_stride,
                      HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(w, b) in fp32 at ``index`` (through the parameters' strides), 1 and 0 when absent."""
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + index * weight_stride, mask=mask, other=1.0).to(tl.float32)
    else:
        w = tl.full(index.shape, 1.0, tl.float32)
    if HAS_BIAS:
        b = tl.load(bias_ptr + index * bias_stride, mask=mask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros(index.shape, tl.float32)
    return w, b


# The moments a convolution's epilogue emits for the batch norm after it (``store_tile_moments``):
# one summary of each output channel per MOMENT_ROWS output pixels, four fp32 rows each
# (count, the chunk's first value, the mean of the values less it, their sum of squared
# deviations), in a [cdiv(pixels, MOMENT_ROWS), 4, channels] buffer. A tile of BLOCK_M >
# MOMENT_ROWS pixels writes its summary in its first slot and empty ones (count 0) in the rest,
# so the buffer's shape does not depend on the tile size the autotuner picks (which is at least
# MOMENT_ROWS for these launches: ``conv2d_gemm.fits``).
MOMENT_ROWS = 128
MOMENT_FIELDS = 4
MOMENT_ROWS_CONSTEXPR = tl.constexpr(MOMENT_ROWS)  # the same, as the kernels may read a global
MOMENT_FIELDS_CONSTEXPR = tl.constexpr(MOMENT_FIELDS)


def moment_slots(pixels):
    """Rows of the moments buffer of an output with ``pixels`` pixels (N·P·Q)."""
    return triton.cdiv(pixels, MOMENT_ROWS)


@triton.jit
def store_tile_moments(values, row_ok, col_ok, columns, tile, moments_ptr, num_slots, channels,
                       BLOCK_ROWS: tl.constexpr):
    """Summarise each column of the fp32 [BLOCK_ROWS x columns] tile ``values`` (rows where
    ``row_ok``, its first row always among them) into the moments buffer at the slots of tile
    number ``tile``. The deviations are taken from the column's first value d = v - v[0] (for
    data far from 0 relative to their spread, mean 3000 and std 0.5, the subtraction is exact),
    then from their mean, two passes in registers: no cancellation. The masks are per row (the
    same rows are valid in every column) so that the epilogue holds few tile-sized temporaries
    beside the accumulator."""
    count = tl.sum(row_ok.to(tl.float32), axis=0)  # the same for every column of the tile
    first = tl.sum(tl.where((tl.arange(0, BLOCK_ROWS) == 0)[:, None], values, 0.0), axis=0)
    deviation = tl.where(row_ok[:, None], values - first[None, :], 0.0)
    mean = tl.sum(deviation, axis=0) / count
    spread = tl.where(row_ok[:, None], deviation - mean[None, :], 0.0)
    m2 = tl.sum(spread * spread, axis=0)
    SLOTS: tl.constexpr = BLOCK_ROWS // MOMENT_ROWS_CONSTEXPR if BLOCK_ROWS > MOMENT_ROWS_CONSTEXPR else 1
    slots = tile.to(tl.int64) * SLOTS + tl.arange(0, SLOTS)
    first_slot = (tl.arange(0, SLOTS) == 0)[:, None]
    mask = (slots < num_slots)[:, None] & col_ok[None, :]
    base = moments_ptr + (slots * (MOMENT_FIELDS_CONSTEXPR * channels))[:, None] + columns[None, :]
    tl.store(base, tl.where(first_slot, count, 0.0), mask=mask)
    tl.store(base + channels, tl.where(first_slot, first[None, :], 0.0), mask=mask)
    tl.store(base + 2 * channels, tl.where(first_slot, mean[None, :], 0.0), mask=mask)
    tl.store(base + 3 * channels, tl.where(first_slot, m2[None, :], 0.0), mask=mask)


@triton.jit
def store_tile_sums(first, second, col_ok, columns, tile, sums_ptr, slot_begin, slot_end, channels,
                    BLOCK_ROWS: tl.constexpr):
    """The column sums of two fp32 [BLOCK_ROWS x columns] tiles (zero where not valid) into a
    [slots, 2, channels] buffer at the slots of tile number ``tile`` of the range [slot_begin,
    slot_end) (one stride phase's), as ``store_tile_moments`` places its summaries (the first slot
    holds the tile's, the rest zeros): batch norm's backward sums, sum g and sum g·x̂, from the
    grad-input epilogue (kernels/conv2d_gemm.py)."""
    sum_first = tl.sum(first, axis=0)
    sum_second = tl.sum(second, axis=0)
    SLOTS: tl.constexpr = BLOCK_ROWS // MOMENT_ROWS_CONSTEXPR if BLOCK_ROWS > MOMENT_ROWS_CONSTEXPR else 1
    slots = slot_begin + tile.to(tl.int64) * SLOTS + tl.arange(0, SLOTS)
    first_slot = (tl.arange(0, SLOTS) == 0)[:, None]
    mask = (slots < slot_end)[:, None] & col_ok[None, :]
    base = sums_ptr + (slots * (2 * channels))[:, None] + columns[None, :]
    tl.store(base, tl.where(first_slot, sum_first[None, :], 0.0), mask=mask)
    tl.store(base + channels, tl.where(first_slot, sum_second[None, :], 0.0), mask=mask)
