"""Batch augmentation: a whole image pipeline, each sample with its own random parameters, in one
pass that reads the input batch once and writes the training-ready batch once.

For each output pixel of sample n the kernel (1) draws sample n's parameters from Philox at the
caller's seed (counter n·128 + slot: every program of a sample draws the same numbers and writes
them to the sample's record, then reads its fields back as scalars) or reads them from a
per-sample record; (2) maps the pixel back to the source image: flips and a crop of the output
(the crop mirrored when a flip came before it), then a resize (bilinear or bicubic with torch's
antialiasing taps, or nearest) or an inverse affine map (rotation, affine: grid_sample's bilinear
or nearest with torchvision's fill mask) or both (a resize of an affine map's output, or an affine
map of a resize's), then the crop window of the padded input, the pad's border rule (constant,
edge, reflect, symmetric) and flips of the input (a flip before the resample: the image read
mirrored, with the pad and crop before it mirrored to match); a ToDtype first in the chain
scales each source pixel as it is read; (3) runs the colour steps on the sampled pixel in the
chain's order (COLOUR_ORDER): ColorJitter's four ops in the sample's drawn order (brightness,
contrast, saturation, hue), grayscale, Gaussian noise, the integer-to-float scale, Normalize and
Random Erasing (its box moved by the flips after it); (4) writes it in the output's dtype through
its strides. While the image is still uint8 in torchvision's pipeline (before ToDtype), each
step rounds or truncates as torchvision's does.

Contrast blends with the mean grey level of the whole image at that point of the chain: a first
launch of the same kernel (STATS: the colour steps up to ColorJitter's contrast) writes each
tile's sum of grey levels, and the main launch adds its sample's sums in a fixed order
(deterministic).

A bilinear or bicubic resize of at most 3x down (WINDOW_H, WINDOW_W > 0) works on SQUARE x SQUARE
squares of output pixels instead: the square's source window is read once (or, after an affine
map, sampled from the map's output) and filtered as two tensor-core products per channel
(``_resize_square``); a larger downscale gathers each pixel's taps.

Bytes: read the source pixels each output pixel samples (the crop; a windowed resize reads each
square's window once, a gathered one each tap from L2), write N·C·OH·OW output elements; a
contrast pass reads the source again (and writes the drawn records the main pass then reads).
FLOPs (windowed resize, per square and channel, 3xTF32): 2·(2 or 3)·WINDOW_H·WINDOW_W·SQUARE +
2·3·SQUARE·WINDOW_H·SQUARE on the tensor cores.
Launch grid: (N · tiles,): a program is one sample's BLOCK_P output pixels (a row-major run, or
a square), every channel (BLOCK_C = the channel count's power of two).

MixUp and CutMix (``mix``) blend each sample with the one before it (torch.roll(x, 1, 0)), the
images and the one-hot labels, in one launch over both.
"""
import triton
import triton.language as tl

from .tiles import by_backend

BLOCK_P = by_backend(interpreter=1024, gpu=256)
SQUARE = 16  # the windowed resize's output squares (fastcnn/ops/augment.py sizes their windows)
NUM_WARPS = 4

# The per-sample record (float32; integers are exact): what each random transform drew, which
# `return_params` gives back and fastcnn.transforms.functional passes in.
RECORD = tl.constexpr(32)
CROP_TOP, CROP_LEFT, CROP_HEIGHT, CROP_WIDTH = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)  # window of the padded input
OUT_TOP, OUT_LEFT = tl.constexpr(4), tl.constexpr(5)  # crop after the resample
HFLIP, VFLIP = tl.constexpr(6), tl.constexpr(7)  # of the output
ANGLE, TRANSLATE_X, TRANSLATE_Y, SCALE, SHEAR_X, SHEAR_Y = tl.constexpr(8), tl.constexpr(9), tl.constexpr(10), tl.constexpr(11), tl.constexpr(12), tl.constexpr(13)
BRIGHTNESS, CONTRAST, SATURATION, HUE, JITTER_ORDER = tl.constexpr(14), tl.constexpr(15), tl.constexpr(16), tl.constexpr(17), tl.constexpr(18)  # order: 4 base-4 digits
GRAYSCALE = tl.constexpr(19)
ERASE_TOP, ERASE_LEFT, ERASE_HEIGHT, ERASE_WIDTH = tl.constexpr(20), tl.constexpr(21), tl.constexpr(22), tl.constexpr(23)  # height 0: nothing erased
SOURCE_HFLIP, SOURCE_VFLIP = tl.constexpr(24), tl.constexpr(25)  # of the input, before everything else
MID_TOP, MID_LEFT, MID_HEIGHT, MID_WIDTH = tl.constexpr(26), tl.constexpr(27), tl.constexpr(28), tl.constexpr(29)  # the resize's crop of an affine map's output

# The static configuration (float32, on the device, cached per pipeline): the distributions the
# parameters are drawn from and the constants of the colour maths.
CONFIG = tl.constexpr(72)
PAD_TOP, PAD_LEFT, PADDED_HEIGHT, PADDED_WIDTH = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
CROP_SCALE_LO, CROP_SCALE_HI, CROP_LOG_RATIO_LO, CROP_LOG_RATIO_HI = tl.constexpr(4), tl.constexpr(5), tl.constexpr(6), tl.constexpr(7)
RESIZED_HEIGHT, RESIZED_WIDTH = tl.constexpr(8), tl.constexpr(9)
HFLIP_P, VFLIP_P = tl.constexpr(10), tl.constexpr(11)
DEGREES_LO, DEGREES_HI, TRANSLATE_X_MAX, TRANSLATE_Y_MAX = tl.constexpr(12), tl.constexpr(13), tl.constexpr(14), tl.constexpr(15)
SCALE_LO, SCALE_HI, SHEAR_X_LO, SHEAR_X_HI, SHEAR_Y_LO, SHEAR_Y_HI = tl.constexpr(16), tl.constexpr(17), tl.constexpr(18), tl.constexpr(19), tl.constexpr(20), tl.constexpr(21)
CENTER_X, CENTER_Y, ANGLE_SIGN = tl.constexpr(22), tl.constexpr(23), tl.constexpr(24)  # center: NaN for the middle
BRIGHTNESS_LO, BRIGHTNESS_HI, CONTRAST_LO, CONTRAST_HI = tl.constexpr(25), tl.constexpr(26), tl.constexpr(27), tl.constexpr(28)
SATURATION_LO, SATURATION_HI, HUE_LO, HUE_HI = tl.constexpr(29), tl.constexpr(30), tl.constexpr(31), tl.constexpr(32)
GRAYSCALE_P, NOISE_MEAN, NOISE_SIGMA = tl.constexpr(33), tl.constexpr(34), tl.constexpr(35)
ERASE_P, ERASE_SCALE_LO, ERASE_SCALE_HI, ERASE_LOG_RATIO_LO, ERASE_LOG_RATIO_HI = tl.constexpr(36), tl.constexpr(37), tl.constexpr(38), tl.constexpr(39), tl.constexpr(40)
TO_FLOAT_SCALE = tl.constexpr(41)  # 1/255 (ToDtype's scale=True) or 1
FILL_MASKED = tl.constexpr(42)  # 1: an affine fill blended by the sampled mask; 0: fill=None, zeros outside
FILL = tl.constexpr(44)  # 4 channels: the pad's or the affine map's fill
NORM_MEAN = tl.constexpr(48)  # 4 channels
NORM_STD = tl.constexpr(52)  # 4 channels
ERASE_VALUE = tl.constexpr(56)  # 4 channels
SOURCE_HFLIP_P, SOURCE_VFLIP_P = tl.constexpr(60), tl.constexpr(61)
# Where a flip stands in the chain, per direction (h, v), so that one pass follows it:
# a flip of the input comes first (0), or after the pad (1: the pad mirrored with it), or after
# the pad and the crop (2: both mirrored); a flip of the output before the crop of the
# resample's output mirrors that crop (1); a flip after erasing moves its box (1).
SOURCE_HFLIP_MIRRORS, SOURCE_VFLIP_MIRRORS = tl.constexpr(62), tl.constexpr(63)
OUT_HFLIP_MIRRORS, OUT_VFLIP_MIRRORS = tl.constexpr(64), tl.constexpr(65)
ERASE_HFLIPPED, ERASE_VFLIPPED = tl.constexpr(66), tl.constexpr(67)

# Philox counters of one sample: n·SAMPLE_COUNTERS + slot.
SLOT_CROP_AREA, SLOT_CROP_RATIO, SLOT_CROP_POSITION = tl.constexpr(0), tl.constexpr(16), tl.constexpr(32)  # 10 attempts each; i, j
SLOT_OUT_POSITION, SLOT_FLIP, SLOT_AFFINE, SLOT_JITTER = tl.constexpr(34), tl.constexpr(36), tl.constexpr(38), tl.constexpr(44)  # 2, 2, 6, 4 + 3 (order)
SLOT_GRAYSCALE, SLOT_ERASE = tl.constexpr(51), tl.constexpr(52)  # 1; p, area, ratio, i, j (per attempt below)
SLOT_SOURCE_FLIP, SLOT_MID_POSITION = tl.constexpr(56), tl.constexpr(58)  # 2, 2
SLOT_MID_AREA, SLOT_MID_RATIO = tl.constexpr(96), tl.constexpr(112)  # 10 attempts each (16 drawn)
SLOT_ERASE_AREA, SLOT_ERASE_RATIO = tl.constexpr(64), tl.constexpr(80)  # 10 attempts each, in a second block
SAMPLE_COUNTERS = tl.constexpr(128)

# Constexpr choices.
CROP_GIVEN, CROP_RANDOM, CROP_RESIZED = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)  # the crop window: record, RandomCrop, RandomResizedCrop
RESAMPLE_NONE, RESAMPLE_RESIZE, RESAMPLE_AFFINE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
RESAMPLE_AFFINE_RESIZE = tl.constexpr(3)  # an affine map, then a resize of a crop of its output (by windows)
RESAMPLE_RESIZE_AFFINE = tl.constexpr(4)  # a resize, then an affine map of its output (each pixel's taps gathered)
NEAREST, BILINEAR, BICUBIC = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
BORDER_CONSTANT, BORDER_EDGE, BORDER_REFLECT, BORDER_SYMMETRIC = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
BORDER_INSIDE = tl.constexpr(4)  # no pad, and every crop inside the image: no border rule to apply
ERASE_NONE, ERASE_VALUE_GIVEN, ERASE_RANDOM_VALUE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
TO_FLOAT_NEVER, TO_FLOAT_IN_ORDER, TO_FLOAT_SOURCE = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)  # where uint8 becomes float (÷255):
# never, at its place among the colour steps, or before the geometry (ToDtype first in the chain: each source pixel as it is read)
# The colour steps, four bits each in COLOUR_ORDER (the first in the lowest bits; 0 ends it).
COLOUR_JITTER, COLOUR_GRAY, COLOUR_NOISE, COLOUR_TO_FLOAT = tl.constexpr(1), tl.constexpr(2), tl.constexpr(3), tl.constexpr(4)
COLOUR_NORMALIZE, COLOUR_ERASE = tl.constexpr(5), tl.constexpr(6)
COLOUR_STEPS = tl.constexpr(6)

# Philox keys of the per-element draws (the parameters use the seed itself).
_NOISE_KEY = tl.constexpr(0x5BD1E995)
_ERASE_KEY = tl.constexpr(0x27D4EB2F)


@triton.jit
def _get(vector, lanes, index):
    """vector[index] of a small vector held by every thread (a record or a draw)."""
    return tl.sum(tl.where(lanes == index, vector, 0.0), axis=0)


@triton.jit
def _field(fields, index):
    """Field ``index`` of a sample's record in memory (a scalar load, the same address in every
    thread: cheaper than picking a lane of the record vector, a reduction across threads)."""
    return tl.load(fields + index)


@triton.jit
def _put(vector, lanes, index, value):
    return tl.where(lanes == index, value, vector)


@triton.jit
def _round_half_even(value):
    """Python's round() and torch's nearbyint: halves go to the even neighbour."""
    rounded = tl.floor(value + 0.5)
    tie = (rounded - value) == 0.5
    odd = (rounded - 2.0 * tl.floor(rounded * 0.5)) != 0.0
    return tl.where(tie & odd, rounded - 1.0, rounded)


@triton.jit
def _round_to_uint8(value):
    """A resampled value as torchvision's uint8 image holds it: rounded half to even, clamped."""
    return tl.minimum(tl.maximum(_round_half_even(value), 0.0), 255.0)


@triton.jit
def _uniform(seed, sample, slot):
    """One uniform in [0, 1) of sample ``sample``'s counter ``slot``."""
    return tl.rand(seed, sample * SAMPLE_COUNTERS + slot)


@triton.jit
def _uniforms(seed, sample, slot, lanes):
    return tl.rand(seed, sample * SAMPLE_COUNTERS + slot + lanes)


@triton.jit
def _random_index(uniform, count):
    """torch.randint(0, count): floor(u·count), kept below count."""
    return tl.minimum(tl.floor(uniform * count), count - 1.0)


@triton.jit
def _random_area_box(seed, sample, area_slot, ratio_slot, height, width, scale_lo, scale_hi, log_lo, log_hi,
                     WIDTH_FIRST: tl.constexpr):
    """torchvision's ten tries of (area in scale·H·W, log-uniform aspect ratio): the first whose
    box fits, as (found, box height, box width). RandomResizedCrop sets w = round(√(area·ratio))
    and keeps 0 < w ≤ W, 0 < h ≤ H (WIDTH_FIRST); RandomErasing sets h = round(√(area·ratio)) and
    keeps h < H, w < W."""
    tries = tl.arange(0, 16)
    area = height * width * (scale_lo + (scale_hi - scale_lo) * _uniforms(seed, sample, area_slot, tries))
    ratio = tl.exp(log_lo + (log_hi - log_lo) * _uniforms(seed, sample, ratio_slot, tries))
    long_side = _round_half_even(tl.sqrt(area * ratio))
    short_side = _round_half_even(tl.sqrt(area / ratio))
    if WIDTH_FIRST:
        box_w, box_h = long_side, short_side
        fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    else:
        box_h, box_w = long_side, short_side
        fits = (box_h < height) & (box_w < width)
    first = tl.min(tl.where(fits & (tries < 10), tries, 16), axis=0)
    return first < 10, _get(box_h, tries, first), _get(box_w, tries, first)


@triton.jit
def _resized_crop_box(config_ptr, seed, sample, area_slot, ratio_slot, position_slot, height, width):
    """RandomResizedCrop's box (top, left, height, width) of a height x width image: scale and
    log-ratio tries, else the central crop."""
    found, box_h, box_w = _random_area_box(
        seed, sample, area_slot, ratio_slot, height, width,
        tl.load(config_ptr + CROP_SCALE_LO), tl.load(config_ptr + CROP_SCALE_HI),
        tl.load(config_ptr + CROP_LOG_RATIO_LO), tl.load(config_ptr + CROP_LOG_RATIO_HI), True)
    ratio_lo = tl.exp(tl.load(config_ptr + CROP_LOG_RATIO_LO))
    ratio_hi = tl.exp(tl.load(config_ptr + CROP_LOG_RATIO_HI))
    in_ratio = width / height
    central_w = tl.where(in_ratio > ratio_hi, _round_half_even(height * ratio_hi), width)
    central_h = tl.where(in_ratio < ratio_lo, _round_half_even(width / ratio_lo), height)
    box_h = tl.where(found, box_h, central_h)
    box_w = tl.where(found, box_w, central_w)
    top = tl.where(found, _random_index(_uniform(seed, sample, position_slot), height - box_h + 1),
                   tl.floor((height - box_h) * 0.5))
    left = tl.where(found, _random_index(_uniform(seed, sample, position_slot + 1), width - box_w + 1),
                    tl.floor((width - box_w) * 0.5))
    return top, left, box_h, box_w


@triton.jit
def _draw(record, lanes, config_ptr, seed, sample,
          CROP: tl.constexpr, OUT_CROP: tl.constexpr, FLIPS: tl.constexpr, AFFINE: tl.constexpr,
          JITTER: tl.constexpr, GRAY: tl.constexpr, ERASE: tl.constexpr, SOURCE_FLIPS: tl.constexpr,
          MID_CROP: tl.constexpr, out_height, out_width):
    """Sample ``sample``'s random parameters into its record, as each torchvision transform's
    ``make_params`` draws them (one uniform per Philox counter)."""
    padded_h = tl.load(config_ptr + PADDED_HEIGHT)
    padded_w = tl.load(config_ptr + PADDED_WIDTH)
    if CROP == CROP_RANDOM:  # RandomCrop: a window of the record's size anywhere in the padded image
        crop_h = _get(record, lanes, CROP_HEIGHT)
        crop_w = _get(record, lanes, CROP_WIDTH)
        record = _put(record, lanes, CROP_TOP, _random_index(_uniform(seed, sample, SLOT_CROP_POSITION), padded_h - crop_h + 1))
        record = _put(record, lanes, CROP_LEFT, _random_index(_uniform(seed, sample, SLOT_CROP_POSITION + 1), padded_w - crop_w + 1))
    if CROP == CROP_RESIZED:  # RandomResizedCrop of the padded input
        top, left, box_h, box_w = _resized_crop_box(config_ptr, seed, sample, SLOT_CROP_AREA, SLOT_CROP_RATIO,
                                                    SLOT_CROP_POSITION, padded_h, padded_w)
        record = _put(_put(record, lanes, CROP_TOP, top), lanes, CROP_LEFT, left)
        record = _put(_put(record, lanes, CROP_HEIGHT, box_h), lanes, CROP_WIDTH, box_w)
    if MID_CROP:  # RandomResizedCrop of an affine map's output (the size of the crop it maps)
        top, left, box_h, box_w = _resized_crop_box(config_ptr, seed, sample, SLOT_MID_AREA, SLOT_MID_RATIO,
                                                    SLOT_MID_POSITION, _get(record, lanes, CROP_HEIGHT),
                                                    _get(record, lanes, CROP_WIDTH))
        record = _put(_put(record, lanes, MID_TOP, top), lanes, MID_LEFT, left)
        record = _put(_put(record, lanes, MID_HEIGHT, box_h), lanes, MID_WIDTH, box_w)
    if OUT_CROP:  # RandomCrop after a resample (no padding): a window of the resampled image
        resized_h = tl.load(config_ptr + RESIZED_HEIGHT)
        resized_w = tl.load(config_ptr + RESIZED_WIDTH)
        record = _put(record, lanes, OUT_TOP, _random_index(_uniform(seed, sample, SLOT_OUT_POSITION), resized_h - out_height + 1))
        record = _put(record, lanes, OUT_LEFT, _random_index(_uniform(seed, sample, SLOT_OUT_POSITION + 1), resized_w - out_width + 1))
    if SOURCE_FLIPS:  # flips first in the chain, of the input
        record = _put(record, lanes, SOURCE_HFLIP,
                      (_uniform(seed, sample, SLOT_SOURCE_FLIP) < tl.load(config_ptr + SOURCE_HFLIP_P)).to(tl.float32))
        record = _put(record, lanes, SOURCE_VFLIP,
                      (_uniform(seed, sample, SLOT_SOURCE_FLIP + 1) < tl.load(config_ptr + SOURCE_VFLIP_P)).to(tl.float32))
    if FLIPS:  # torch.rand(1) >= p keeps the image: flipped with probability p
        record = _put(record, lanes, HFLIP, (_uniform(seed, sample, SLOT_FLIP) < tl.load(config_ptr + HFLIP_P)).to(tl.float32))
        record = _put(record, lanes, VFLIP, (_uniform(seed, sample, SLOT_FLIP + 1) < tl.load(config_ptr + VFLIP_P)).to(tl.float32))
    if AFFINE:  # RandomRotation / RandomAffine: angle, integer translation, scale, shears
        angle_lo = tl.load(config_ptr + DEGREES_LO)
        record = _put(record, lanes, ANGLE, angle_lo + (tl.load(config_ptr + DEGREES_HI) - angle_lo) * _uniform(seed, sample, SLOT_AFFINE))
        max_dx = tl.load(config_ptr + TRANSLATE_X_MAX)
        max_dy = tl.load(config_ptr + TRANSLATE_Y_MAX)
        record = _put(record, lanes, TRANSLATE_X, _round_half_even(-max_dx + 2.0 * max_dx * _uniform(seed, sample, SLOT_AFFINE + 1)))
        record = _put(record, lanes, TRANSLATE_Y, _round_half_even(-max_dy + 2.0 * max_dy * _uniform(seed, sample, SLOT_AFFINE + 2)))
        scale_lo = tl.load(config_ptr + SCALE_LO)
        record = _put(record, lanes, SCALE, scale_lo + (tl.load(config_ptr + SCALE_HI) - scale_lo) * _uniform(seed, sample, SLOT_AFFINE + 3))
        shear_lo = tl.load(config_ptr + SHEAR_X_LO)
        record = _put(record, lanes, SHEAR_X, shear_lo + (tl.load(config_ptr + SHEAR_X_HI) - shear_lo) * _uniform(seed, sample, SLOT_AFFINE + 4))
        shear_lo = tl.load(config_ptr + SHEAR_Y_LO)
        record = _put(record, lanes, SHEAR_Y, shear_lo + (tl.load(config_ptr + SHEAR_Y_HI) - shear_lo) * _uniform(seed, sample, SLOT_AFFINE + 5))
    if JITTER:  # four factors, then torch.randperm(4) as three draws of a Fisher-Yates shuffle
        for k in tl.static_range(4):
            lo = tl.load(config_ptr + BRIGHTNESS_LO + 2 * k)
            record = _put(record, lanes, BRIGHTNESS + k, lo + (tl.load(config_ptr + BRIGHTNESS_LO + 2 * k + 1) - lo) * _uniform(seed, sample, SLOT_JITTER + k))
        positions = tl.arange(0, 4)
        order = positions
        for k in tl.static_range(3):
            swap = k + _random_index(_uniform(seed, sample, SLOT_JITTER + 4 + k), 4.0 - k).to(tl.int32)
            at_k = tl.sum(tl.where(positions == k, order, 0), axis=0)
            at_swap = tl.sum(tl.where(positions == swap, order, 0), axis=0)
            order = tl.where(positions == k, at_swap, tl.where(positions == swap, at_k, order))
        code = tl.sum(order << (2 * positions), axis=0)
        record = _put(record, lanes, JITTER_ORDER, code.to(tl.float32))
    if GRAY:
        record = _put(record, lanes, GRAYSCALE, (_uniform(seed, sample, SLOT_GRAYSCALE) < tl.load(config_ptr + GRAYSCALE_P)).to(tl.float32))
    if ERASE != ERASE_NONE:  # RandomErasing: p, then ten tries of area and ratio, else nothing
        erase = _uniform(seed, sample, SLOT_ERASE) < tl.load(config_ptr + ERASE_P)
        found, box_h, box_w = _random_area_box(
            seed, sample, SLOT_ERASE_AREA, SLOT_ERASE_RATIO, out_height * 1.0, out_width * 1.0,
            tl.load(config_ptr + ERASE_SCALE_LO), tl.load(config_ptr + ERASE_SCALE_HI),
            tl.load(config_ptr + ERASE_LOG_RATIO_LO), tl.load(config_ptr + ERASE_LOG_RATIO_HI), False)
        erase = erase & found
        top = _random_index(_uniform(seed, sample, SLOT_ERASE + 1), out_height - box_h + 1)
        left = _random_index(_uniform(seed, sample, SLOT_ERASE + 2), out_width - box_w + 1)
        record = _put(_put(record, lanes, ERASE_TOP, tl.where(erase, top, 0.0)), lanes, ERASE_LEFT, tl.where(erase, left, 0.0))
        record = _put(_put(record, lanes, ERASE_HEIGHT, tl.where(erase, box_h, 0.0)), lanes, ERASE_WIDTH,
                      tl.where(erase, box_w, 0.0))
    return record


@triton.jit
def _border(coordinate, extent, BORDER: tl.constexpr):
    """An integer coordinate of the padded image as one of the image (its pad's rule) and
    whether it is inside (always, but for a constant pad)."""
    if BORDER == BORDER_INSIDE:  # the plan knows every read is inside the image
        return coordinate, tl.full(coordinate.shape, 1, tl.int1)
    if BORDER == BORDER_EDGE:
        coordinate = tl.minimum(tl.maximum(coordinate, 0), extent - 1)
    if BORDER == BORDER_REFLECT:  # numpy's reflect: the edge is not repeated (pad < extent)
        coordinate = tl.where(coordinate < 0, -coordinate, coordinate)
        coordinate = tl.where(coordinate >= extent, 2 * (extent - 1) - coordinate, coordinate)
    if BORDER == BORDER_SYMMETRIC:  # the edge is repeated (pad ≤ extent)
        coordinate = tl.where(coordinate < 0, -coordinate - 1, coordinate)
        coordinate = tl.where(coordinate >= extent, 2 * extent - 1 - coordinate, coordinate)
    inside = (coordinate >= 0) & (coordinate < extent)
    return tl.minimum(tl.maximum(coordinate, 0), extent - 1), inside


@triton.jit
def _source(image_ptr, rows, cols, channel_offsets, channel_mask, pixel_mask, in_height, in_width,
            stride_h, stride_w, fill, source_scale, BORDER: tl.constexpr):
    """[pixels, channels] of the padded source at integer (rows, cols) of the padded image
    (already offset by the pad): the image's pixel under the pad's rule, the fill outside a
    constant pad. Returned in fp32. Offsets within one image are int32 (the op checks)."""
    row, row_in = _border(rows, in_height, BORDER)
    col, col_in = _border(cols, in_width, BORDER)
    inside = row_in & col_in
    offsets = (row * stride_h + col * stride_w)[:, None] + channel_offsets[None, :]
    value = tl.load(image_ptr + offsets, mask=pixel_mask[:, None] & channel_mask[None, :], other=0.0).to(tl.float32)
    return tl.where(inside[:, None], value * source_scale, fill[None, :])


@triton.jit
def _cubic(distance, A: tl.constexpr):
    """Keys' cubic convolution kernel at |distance| (torch's cubic_convolution1/2): A = -0.5 for
    the antialiased filter, -0.75 for upsample_bicubic2d."""
    x = tl.abs(distance)
    near = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    far = ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    return tl.where(x < 1.0, near, tl.where(x < 2.0, far, 0.0))


@triton.jit
def _resize_taps(position, scale, extent, ANTIALIAS: tl.constexpr, INTERPOLATION: tl.constexpr):
    """torch's interpolate(align_corners=False) along one axis: (first tap, end of the taps,
    centre, 1/filter scale) for the output positions. Antialiased (torch's _upsample_*_aa), the
    filter (triangle, or Keys' cubic with A = -0.5) widens to the downscale factor and its taps
    are cut at the image's edges; without, bilinear reads the two neighbours of a source clamped
    at 0, and bicubic the four around it, indices clamped when read (the edge repeated)."""
    center = scale * (position + 0.5)
    if ANTIALIAS:
        stretch = tl.maximum(scale, 1.0)
        if INTERPOLATION == BICUBIC:
            support = 2.0 * stretch
        else:
            support = stretch
        first = tl.maximum((center - support + 0.5).to(tl.int32), 0)
        last = tl.minimum((center + support + 0.5).to(tl.int32), extent)
        inverse = tl.full(center.shape, 1.0, tl.float32) / stretch
    elif INTERPOLATION == BICUBIC:
        first = tl.floor(center - 0.5).to(tl.int32) - 1
        last = first + 4
        inverse = tl.full(center.shape, 1.0, tl.float32)
    else:
        source = tl.maximum(center - 0.5, 0.0)
        first = tl.minimum(source.to(tl.int32), extent - 1)
        last = tl.minimum(first + 2, extent)
        inverse = tl.full(center.shape, 1.0, tl.float32)
    return first, last, center, inverse


@triton.jit
def _tap_weight(tap, first, last, center, inverse, extent, ANTIALIAS: tl.constexpr, INTERPOLATION: tl.constexpr):
    """The filter's weight of source index ``tap`` (before the antialiased filter's normalisation)."""
    if ANTIALIAS:
        if INTERPOLATION == BICUBIC:
            weight = _cubic((tap - center + 0.5) * inverse, -0.5)
        else:
            weight = tl.maximum(0.0, 1.0 - tl.abs((tap - center + 0.5) * inverse))
    elif INTERPOLATION == BICUBIC:  # distance to the source position, as torch's t + 1, t, 1 - t, 2 - t
        weight = tl.where(tap >= first, _cubic(tap - (center - 0.5), -0.75), 0.0)
    else:  # torch clamps the source below at 0 and the upper neighbour at the last pixel
        source = tl.maximum(center - 0.5, 0.0)
        lam = source - first.to(tl.float32)
        upper = tl.minimum(first + 1, extent - 1)
        weight = tl.where(tap == first, 1.0 - lam, 0.0) + tl.where(tap == upper, lam, 0.0)
    return tl.where(tap < last, weight, 0.0)


@triton.jit
def _tf32_parts(value):
    """value as hi + lo, each exact in tf32 (sign, 8-bit exponent, 10-bit mantissa: the low 13
    bits cleared): a tensor-core dot of such operands multiplies exactly and adds in fp32, on the
    GPU as in the interpreter. hi + lo keeps 22 of fp32's 24 significant bits."""
    hi = (value.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
    lo = ((value - hi).to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
    return hi, lo


@triton.jit
def _window_weights(positions, valid, scale, extent, WINDOW: tl.constexpr, TAPS: tl.constexpr,
                    ANTIALIAS: tl.constexpr, INTERPOLATION: tl.constexpr):
    """One axis of the resize for a run of output positions: (the first source index of their
    common window, [positions, WINDOW] normalised tap weights over the window). The host sizes
    WINDOW to hold every valid position's taps at the largest scale the plan allows. Each
    position's total adds its TAPS taps in order, as torch does (not a tree over the window,
    whose shape would change the rounding with the window's size)."""
    first, last, center, inverse = _resize_taps(positions.to(tl.float32), scale, extent, ANTIALIAS, INTERPOLATION)
    start = tl.min(tl.where(valid, first, 2147483647), axis=0)
    taps = start + tl.arange(0, WINDOW)[None, :]
    weight = _tap_weight(taps, first[:, None], last[:, None], center[:, None], inverse[:, None], extent, ANTIALIAS,
                         INTERPOLATION)
    if ANTIALIAS:
        total = tl.zeros(center.shape, tl.float32)
        for i in range(TAPS):
            total += _tap_weight(first + i, first, last, center, inverse, extent, ANTIALIAS, INTERPOLATION)
        weight = weight / tl.where(total > 0.0, total, 1.0)[:, None]
    return start, weight


@triton.jit
def _mirrored(offset, flipped, mirrors, extent, length):
    """A window's ``offset`` in an ``extent`` of which it takes ``length``, as it falls once the
    image is flipped (where ``flipped`` and ``mirrors``)."""
    return tl.where(flipped & mirrors, extent - length - offset, offset)


@triton.jit
def _resampled_position(fields, config_ptr, rows, cols, in_height, in_width, out_height, out_width):
    """Output rows and columns as positions in the resample's output (the output flips undone, the
    crop after the resample added, mirrored when a flip came before it), with the crop window of
    the padded input the resample reads (top, left relative to the unpadded image, mirrored with
    the pad where a flip of the input came after them; its height and width)."""
    vflip = _field(fields, VFLIP) != 0.0
    hflip = _field(fields, HFLIP) != 0.0
    rows = tl.where(vflip, out_height - 1 - rows, rows)
    cols = tl.where(hflip, out_width - 1 - cols, cols)
    resized_h = tl.load(config_ptr + RESIZED_HEIGHT)
    resized_w = tl.load(config_ptr + RESIZED_WIDTH)
    rows = rows + _mirrored(_field(fields, OUT_TOP), vflip, tl.load(config_ptr + OUT_VFLIP_MIRRORS) != 0.0,
                            resized_h, out_height * 1.0).to(tl.int32)
    cols = cols + _mirrored(_field(fields, OUT_LEFT), hflip, tl.load(config_ptr + OUT_HFLIP_MIRRORS) != 0.0,
                            resized_w, out_width * 1.0).to(tl.int32)
    crop_h = _field(fields, CROP_HEIGHT)
    crop_w = _field(fields, CROP_WIDTH)
    padded_h = tl.load(config_ptr + PADDED_HEIGHT)
    padded_w = tl.load(config_ptr + PADDED_WIDTH)
    source_vflip = _field(fields, SOURCE_VFLIP) != 0.0
    source_hflip = _field(fields, SOURCE_HFLIP) != 0.0
    v_mirrors = tl.load(config_ptr + SOURCE_VFLIP_MIRRORS)
    h_mirrors = tl.load(config_ptr + SOURCE_HFLIP_MIRRORS)
    # A flipped padded image is the flipped image padded the other way round (its bottom and
    # right pads first).
    pad_top = _mirrored(tl.load(config_ptr + PAD_TOP), source_vflip, v_mirrors >= 1.0, padded_h, in_height * 1.0)
    pad_left = _mirrored(tl.load(config_ptr + PAD_LEFT), source_hflip, h_mirrors >= 1.0, padded_w, in_width * 1.0)
    top = _mirrored(_field(fields, CROP_TOP), source_vflip, v_mirrors >= 2.0, padded_h, crop_h)
    left = _mirrored(_field(fields, CROP_LEFT), source_hflip, h_mirrors >= 2.0, padded_w, crop_w)
    return rows, cols, (top - pad_top).to(tl.int32), (left - pad_left).to(tl.int32), crop_h, crop_w


@triton.jit
def _resize_square(image_ptr, config_ptr, fields, tile_row, tile_col, in_height, in_width, out_height,
                   out_width, stride_c, stride_h, stride_w, source_scale, ANTIALIAS: tl.constexpr,
                   BORDER: tl.constexpr, INTERPOLATION: tl.constexpr, TILE: tl.constexpr, WINDOW_H: tl.constexpr,
                   WINDOW_W: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr, SPLIT_SOURCE: tl.constexpr, AFFINE_FIRST: tl.constexpr,
                   MID_INTERPOLATION: tl.constexpr, QUANTISE_MID: tl.constexpr, CHANNELS: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """The bilinear or bicubic resize of a TILE x TILE square of output pixels, [TILE·TILE, channels] (fp32),
    as two matrix products per channel: the square's source window [WINDOW_H, WINDOW_W] (read once,
    coalesced) times the column weights [WINDOW_W, TILE], then the row weights [TILE, WINDOW_H]
    times that. Each row of a weight matrix holds one output position's taps (torch's, flips and
    the crop after the resample applied to the position), zero elsewhere, so the products are the
    separable filter of _upsample_bilinear2d_aa (or bicubic): columns first, then rows. The products run on the
    tensor cores in tf32 with every operand split in two exact parts (3xTF32: 22 significant bits).
    AFFINE_FIRST: the window is of a crop (MID_*) of an affine map's output, each of its pixels
    sampled from the input as torchvision's rotate/affine would (and rounded where its output is
    uint8), so the two resamples are the chain's, in one pass."""
    channels = tl.arange(0, BLOCK_C)
    out_rows = tile_row * TILE + tl.arange(0, TILE)
    out_cols = tile_col * TILE + tl.arange(0, TILE)
    rows, cols, top, left, crop_h, crop_w = _resampled_position(fields, config_ptr, out_rows, out_cols,
                                                                in_height, in_width, out_height, out_width)
    if AFFINE_FIRST:  # the resize reads a crop of the affine map's output (crop_h x crop_w)
        mid_h = _field(fields, MID_HEIGHT)
        mid_w = _field(fields, MID_WIDTH)
    else:
        mid_h = crop_h
        mid_w = crop_w
    extent_h = mid_h.to(tl.int32)
    extent_w = mid_w.to(tl.int32)
    start_r, weight_r = _window_weights(rows, out_rows < out_height, mid_h / tl.load(config_ptr + RESIZED_HEIGHT),
                                        extent_h, WINDOW_H, TAPS_H, ANTIALIAS, INTERPOLATION)
    start_c, weight_c = _window_weights(cols, out_cols < out_width, mid_w / tl.load(config_ptr + RESIZED_WIDTH),
                                        extent_w, WINDOW_W, TAPS_W, ANTIALIAS, INTERPOLATION)
    # The window's rows and columns of the padded input, under the pad's rule (taps past the
    # crop's edge weigh nothing: any pixel inside the image will do).
    window_rows = tl.minimum(tl.maximum(start_r + tl.arange(0, WINDOW_H), 0), extent_h - 1)
    window_cols = tl.minimum(tl.maximum(start_c + tl.arange(0, WINDOW_W), 0), extent_w - 1)
    if AFFINE_FIRST:  # the window's pixels of the map's output, as a flat run
        mid_rows = tl.broadcast_to((window_rows + _field(fields, MID_TOP).to(tl.int32))[:, None],
                                   [WINDOW_H, WINDOW_W])
        mid_cols = tl.broadcast_to((window_cols + _field(fields, MID_LEFT).to(tl.int32))[None, :],
                                   [WINDOW_H, WINDOW_W])
        mid_rows = tl.reshape(mid_rows, [WINDOW_H * WINDOW_W])
        mid_cols = tl.reshape(mid_cols, [WINDOW_H * WINDOW_W])
    else:
        src_row, row_inside = _border(top + window_rows, in_height, BORDER)
        src_col, col_inside = _border(left + window_cols, in_width, BORDER)
        offsets = (src_row * stride_h)[:, None] + (src_col * stride_w)[None, :]
        inside = row_inside[:, None] & col_inside[None, :]
    weight_r_hi, weight_r_lo = _tf32_parts(weight_r)
    weight_c_hi, weight_c_lo = _tf32_parts(tl.trans(weight_c))
    tile = tl.zeros((TILE * TILE, BLOCK_C), tl.float32)
    for c in tl.static_range(CHANNELS):
        if AFFINE_FIRST:  # one channel at a time: a window of all of them would not fit the registers
            channel = c + tl.arange(0, 1)
            source = _affine_sample(image_ptr, config_ptr, fields, mid_rows, mid_cols, channel * stride_c,
                                    channel < CHANNELS, tl.full([WINDOW_H * WINDOW_W], 1, tl.int1), top, left,
                                    crop_h, crop_w, tl.load(config_ptr + FILL + channel), source_scale, in_height,
                                    in_width, stride_h, stride_w, MID_INTERPOLATION, BORDER, 1, False, NEAREST, False,
                                    False, 1, 1)
            if QUANTISE_MID:  # torchvision rounds the rotated uint8 image back to uint8
                source = _round_to_uint8(source)
            source = tl.reshape(source, [WINDOW_H, WINDOW_W])
        else:
            source = tl.load(image_ptr + c * stride_c + offsets).to(tl.float32) * source_scale
            source = tl.where(inside, source, tl.load(config_ptr + FILL + c))  # CHANNELS <= 4 here
        if SPLIT_SOURCE:
            source_hi, source_lo = _tf32_parts(source)
            across = tl.dot(source_hi, weight_c_hi, input_precision="tf32")
            across = tl.dot(source_hi, weight_c_lo, across, input_precision="tf32")
            across = tl.dot(source_lo, weight_c_hi, across, input_precision="tf32")
        else:  # integers below 2048 are exact in tf32
            across = tl.dot(source, weight_c_hi, input_precision="tf32")
            across = tl.dot(source, weight_c_lo, across, input_precision="tf32")
        across_hi, across_lo = _tf32_parts(across)
        value = tl.dot(weight_r_hi, across_hi, input_precision="tf32")
        value = tl.dot(weight_r_hi, across_lo, value, input_precision="tf32")
        value = tl.dot(weight_r_lo, across_hi, value, input_precision="tf32")
        tile = tl.where(channels[None, :] == c, tl.reshape(value, [TILE * TILE])[:, None], tile)
    return tile


@triton.jit
def _gray(tile, channels, CHANNELS: tl.constexpr, FLOOR: tl.constexpr):
    """torchvision's grey level 0.2989 r + 0.587 g + 0.114 b (each add an fma, as ATen's add
    with alpha), floored for an integer image (the channel itself for one channel)."""
    if CHANNELS == 3:
        r = tl.sum(tl.where(channels[None, :] == 0, tile, 0.0), axis=1)
        g = tl.sum(tl.where(channels[None, :] == 1, tile, 0.0), axis=1)
        b = tl.sum(tl.where(channels[None, :] == 2, tile, 0.0), axis=1)
        gray = tl.fma(b, 0.114, tl.fma(g, 0.587, r * 0.2989))
        if FLOOR:
            gray = tl.floor(gray)
    else:
        gray = tl.sum(tl.where(channels[None, :] == 0, tile, 0.0), axis=1)
    return gray


@triton.jit
def _blend(tile, other, ratio, bound, INTEGER: tl.constexpr):
    """torchvision's _blend: ratio·a + (1 - ratio)·b clamped to [0, bound], truncated when integer."""
    out = tl.minimum(tl.maximum(tl.fma(other, 1.0 - ratio, tile * ratio), 0.0), bound)
    if INTEGER:
        out = tl.floor(out)
    return out


@triton.jit
def _hue(tile, channels, factor, INTEGER: tl.constexpr):
    """torchvision's adjust_hue on three channels: to float (×1/255 when integer), to HSV, shift
    the hue mod 1, back to RGB (back to uint8 as ×(255 + 1 - 1e-3), truncated)."""
    if INTEGER:
        tile = tile * (1.0 / 255.0)
    r = tl.sum(tl.where(channels[None, :] == 0, tile, 0.0), axis=1)
    g = tl.sum(tl.where(channels[None, :] == 1, tile, 0.0), axis=1)
    b = tl.sum(tl.where(channels[None, :] == 2, tile, 0.0), axis=1)
    maxc = tl.maximum(tl.maximum(r, g), b)
    minc = tl.minimum(tl.minimum(r, g), b)
    equal = maxc == minc
    spread = maxc - minc
    s = spread / tl.where(equal, 1.0, maxc)
    divisor = tl.where(equal, 1.0, spread)
    rc = (maxc - r) / divisor
    gc = (maxc - g) / divisor
    bc = (maxc - b) / divisor
    h = tl.where(maxc == r, bc - gc, tl.where(maxc == g, rc + 2.0 - bc, gc + 4.0 - rc))
    h = h * (1.0 / 6.0) + 1.0
    h = h - tl.floor(h)  # fmod(·, 1) of a positive value
    h = h + factor
    h = h - tl.floor(h)  # remainder(·, 1)
    v = maxc
    h6 = h * 6.0
    i = tl.floor(h6)
    f = h6 - i
    sector = i.to(tl.int32) % 6
    q = tl.minimum(tl.maximum((1.0 - s * f) * v, 0.0), 1.0)
    t = tl.minimum(tl.maximum((s * f + (1.0 - s)) * v, 0.0), 1.0)
    p = tl.minimum(tl.maximum((1.0 - s) * v, 0.0), 1.0)
    r = tl.where(sector == 0, v, tl.where(sector == 1, q, tl.where(sector == 2, p, tl.where(sector == 3, p, tl.where(sector == 4, t, v)))))
    g = tl.where(sector == 0, t, tl.where(sector == 1, v, tl.where(sector == 2, v, tl.where(sector == 3, q, tl.where(sector == 4, p, p)))))
    b = tl.where(sector == 0, p, tl.where(sector == 1, p, tl.where(sector == 2, t, tl.where(sector == 3, v, tl.where(sector == 4, v, q)))))
    tile = tl.where(channels[None, :] == 0, r[:, None], tl.where(channels[None, :] == 1, g[:, None], b[:, None]))
    if INTEGER:
        tile = tl.floor(tile * (255.0 + 1.0 - 1e-3))
    return tile


@triton.jit
def _map_tap(image_ptr, config_ptr, rows, cols, extent_h, extent_w, top, left, resize_h, resize_w, channel_offsets,
             channel_mask, pixel_mask, fill, source_scale, in_height, in_width, stride_h, stride_w,
             BORDER: tl.constexpr, BLOCK_C: tl.constexpr, RESIZED: tl.constexpr, RESIZE_INTERPOLATION: tl.constexpr,
             ANTIALIAS: tl.constexpr, QUANTISE_RESIZED: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr):
    """[pixels, channels] of an affine map's input at integer (rows, cols) (masked outside its
    extent_h x extent_w): the padded input's crop window, or its resize."""
    if RESIZED:
        rows = tl.minimum(tl.maximum(rows, 0), extent_h - 1)
        cols = tl.minimum(tl.maximum(cols, 0), extent_w - 1)
        value = _resize_sample(image_ptr, config_ptr, rows, cols, top, left, resize_h, resize_w, channel_offsets,
                               channel_mask, pixel_mask, fill, source_scale, in_height, in_width, stride_h, stride_w,
                               RESIZE_INTERPOLATION, ANTIALIAS, BORDER, TAPS_H, TAPS_W, BLOCK_C)
        if QUANTISE_RESIZED:  # torchvision rounds the resized uint8 image back to uint8
            value = _round_to_uint8(value)
    else:
        value = _source(image_ptr, top + rows, left + cols, channel_offsets, channel_mask, pixel_mask, in_height,
                        in_width, stride_h, stride_w, fill, source_scale, BORDER)
    return value


@triton.jit
def _map_corner(image_ptr, config_ptr, i, j, row0, col0, frac_r, frac_c, extent_h, extent_w, top, left, resize_h,
                resize_w, channel_offsets, channel_mask, pixel_mask, fill, source_scale, in_height, in_width, stride_h,
                stride_w, BORDER: tl.constexpr, BLOCK_C: tl.constexpr, RESIZED: tl.constexpr,
                RESIZE_INTERPOLATION: tl.constexpr, ANTIALIAS: tl.constexpr, QUANTISE_RESIZED: tl.constexpr,
                TAPS_H: tl.constexpr, TAPS_W: tl.constexpr):
    """Corner (row0 + i, col0 + j) of a bilinear affine sample: its weighted [pixels, channels]
    (zero outside the map's input) and its weight (grid_sample's, zeros outside)."""
    r = row0 + i
    cc = col0 + j
    inside = (r >= 0) & (r < extent_h) & (cc >= 0) & (cc < extent_w)
    weight = (frac_r * i + (1.0 - frac_r) * (1 - i)) * (frac_c * j + (1.0 - frac_c) * (1 - j))
    weight = tl.where(inside, weight, 0.0)
    tap = _map_tap(image_ptr, config_ptr, r, cc, extent_h, extent_w, top, left, resize_h, resize_w,
                   channel_offsets, channel_mask, pixel_mask & inside, fill, source_scale, in_height, in_width,
                   stride_h, stride_w, BORDER, BLOCK_C, RESIZED, RESIZE_INTERPOLATION, ANTIALIAS, QUANTISE_RESIZED,
                   TAPS_H, TAPS_W)
    return weight[:, None] * tl.where(inside[:, None], tap, 0.0), weight


@triton.jit
def _affine_sample(image_ptr, config_ptr, fields, rows, cols, channel_offsets, channel_mask, pixel_mask,
                   top, left, crop_h, crop_w, fill, source_scale, in_height, in_width, stride_h, stride_w,
                   INTERPOLATION: tl.constexpr, BORDER: tl.constexpr, BLOCK_C: tl.constexpr,
                   RESIZED: tl.constexpr, RESIZE_INTERPOLATION: tl.constexpr, ANTIALIAS: tl.constexpr,
                   QUANTISE_RESIZED: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr):
    """[pixels, channels] (fp32) of the rotated/affine-mapped image at integer (rows, cols): the
    inverse map to the crop window (``top``, ``left``, ``crop_h`` x ``crop_w``) of the padded
    input, sampled nearest or bilinear with torchvision's fill. RESIZED: the map's input is the
    resize of that crop window instead (RESIZED_HEIGHT x RESIZED_WIDTH), each of its taps a
    pixel of the resize (``_resize_sample``, rounded where torchvision's resized image is uint8),
    so that the two resamples are the chain's, in one pass."""
    resize_h = crop_h  # the crop the resize reads (RESIZED)
    resize_w = crop_w
    if RESIZED:  # crop_h, crop_w below: the extent of the map's input
        crop_h = tl.load(config_ptr + RESIZED_HEIGHT)
        crop_w = tl.load(config_ptr + RESIZED_WIDTH)
    # torchvision's _get_inverse_affine_matrix (rotate: the angle negated), composed with
    # _affine_grid and grid_sample's unnormalisation (align_corners=False): source =
    # M · (x - w/2 + 0.5, y - h/2 + 0.5, 1) + ((w - 1)/2, (h - 1)/2).
    angle = _field(fields, ANGLE) * tl.load(config_ptr + ANGLE_SIGN) * 0.017453292519943295
    shear_x = _field(fields, SHEAR_X) * 0.017453292519943295
    shear_y = _field(fields, SHEAR_Y) * 0.017453292519943295
    scale = _field(fields, SCALE)
    a = tl.cos(angle - shear_y) / tl.cos(shear_y)
    b = -tl.cos(angle - shear_y) * (tl.sin(shear_x) / tl.cos(shear_x)) / tl.cos(shear_y) - tl.sin(angle)
    c = tl.sin(angle - shear_y) / tl.cos(shear_y)
    d = -tl.sin(angle - shear_y) * (tl.sin(shear_x) / tl.cos(shear_x)) / tl.cos(shear_y) + tl.cos(angle)
    m0 = d / scale
    m1 = -b / scale
    m3 = -c / scale
    m4 = a / scale
    center_x = tl.load(config_ptr + CENTER_X)
    center_y = tl.load(config_ptr + CENTER_Y)
    cx = tl.where(center_x == center_x, center_x - crop_w * 0.5, 0.0)  # NaN: the image's middle
    cy = tl.where(center_y == center_y, center_y - crop_h * 0.5, 0.0)
    tx = _field(fields, TRANSLATE_X)
    ty = _field(fields, TRANSLATE_Y)
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    base_x = cols.to(tl.float32) - crop_w * 0.5 + 0.5
    base_y = rows.to(tl.float32) - crop_h * 0.5 + 0.5
    src_x = m0 * base_x + m1 * base_y + m2 + (crop_w - 1.0) * 0.5
    src_y = m3 * base_x + m4 * base_y + m5 + (crop_h - 1.0) * 0.5
    extent_h = crop_h.to(tl.int32)
    extent_w = crop_w.to(tl.int32)
    if INTERPOLATION == NEAREST:
        near_r = _round_half_even(src_y).to(tl.int32)
        near_c = _round_half_even(src_x).to(tl.int32)
        inside = (near_r >= 0) & (near_r < extent_h) & (near_c >= 0) & (near_c < extent_w)
        value = _map_tap(image_ptr, config_ptr, near_r, near_c, extent_h, extent_w, top, left, resize_h, resize_w,
                         channel_offsets, channel_mask, pixel_mask & inside, fill, source_scale, in_height,
                         in_width, stride_h, stride_w, BORDER, BLOCK_C, RESIZED, RESIZE_INTERPOLATION, ANTIALIAS,
                         QUANTISE_RESIZED, TAPS_H, TAPS_W)
        value = tl.where(inside[:, None], value, fill[None, :])
    else:  # grid_sample with zeros outside, then (value - fill)·mask + fill, mask the same sample of ones
        row0 = tl.floor(src_y)
        col0 = tl.floor(src_x)
        frac_r = src_y - row0
        frac_c = src_x - col0
        row0 = row0.to(tl.int32)
        col0 = col0.to(tl.int32)
        value = tl.zeros((rows.shape[0], BLOCK_C), tl.float32)
        mask = tl.zeros(rows.shape, tl.float32)
        if RESIZED:  # a loop, not four copies: each corner's gathered taps hold many registers
            for corner in range(4):
                tap, weight = _map_corner(image_ptr, config_ptr, corner // 2, corner % 2, row0, col0, frac_r, frac_c,
                                          extent_h, extent_w, top, left, resize_h, resize_w, channel_offsets,
                                          channel_mask, pixel_mask, fill, source_scale, in_height, in_width,
                                          stride_h, stride_w, BORDER, BLOCK_C, RESIZED, RESIZE_INTERPOLATION, ANTIALIAS,
                                          QUANTISE_RESIZED, TAPS_H, TAPS_W)
                value += tap
                mask += weight
        else:
            for i in tl.static_range(2):
                for j in tl.static_range(2):
                    tap, weight = _map_corner(image_ptr, config_ptr, i, j, row0, col0, frac_r, frac_c, extent_h,
                                              extent_w, top, left, resize_h, resize_w, channel_offsets, channel_mask,
                                              pixel_mask, fill, source_scale, in_height, in_width, stride_h,
                                              stride_w, BORDER, BLOCK_C, RESIZED, RESIZE_INTERPOLATION, ANTIALIAS,
                                              QUANTISE_RESIZED, TAPS_H, TAPS_W)
                    value += tap
                    mask += weight
        if tl.load(config_ptr + FILL_MASKED) != 0.0:
            value = (value - fill[None, :]) * mask[:, None] + fill[None, :]
    return value


@triton.jit
def _resize_sample(image_ptr, config_ptr, rows, cols, top, left, crop_h, crop_w, channel_offsets, channel_mask,
                   pixel_mask, fill, source_scale, in_height, in_width, stride_h, stride_w, INTERPOLATION: tl.constexpr,
                   ANTIALIAS: tl.constexpr, BORDER: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """[pixels, channels] (fp32) of the resize (to RESIZED_HEIGHT x RESIZED_WIDTH) of the crop
    window (``top``, ``left``, ``crop_h`` x ``crop_w``) of the padded input at integer output
    (rows, cols): torch's nearest, or each pixel's bilinear or bicubic taps gathered."""
    scale_h = crop_h / tl.load(config_ptr + RESIZED_HEIGHT)
    scale_w = crop_w / tl.load(config_ptr + RESIZED_WIDTH)
    extent_h = crop_h.to(tl.int32)
    extent_w = crop_w.to(tl.int32)
    if INTERPOLATION == NEAREST:  # torch's nearest: floor(dst · scale)
        src_r = tl.minimum(tl.floor(rows.to(tl.float32) * scale_h).to(tl.int32), extent_h - 1)
        src_c = tl.minimum(tl.floor(cols.to(tl.float32) * scale_w).to(tl.int32), extent_w - 1)
        value = _source(image_ptr, top + src_r, left + src_c, channel_offsets, channel_mask, pixel_mask,
                        in_height, in_width, stride_h, stride_w, fill, source_scale, BORDER)
    else:
        # The column taps as a [pixels, TAPS_W] tile (one gather per row tap), the row taps in a loop.
        first_r, last_r, center_r, inverse_r = _resize_taps(rows.to(tl.float32), scale_h, extent_h, ANTIALIAS,
                                                            INTERPOLATION)
        first_c, last_c, center_c, inverse_c = _resize_taps(cols.to(tl.float32), scale_w, extent_w, ANTIALIAS,
                                                            INTERPOLATION)
        col_taps = first_c[:, None] + tl.arange(0, TAPS_W)[None, :]
        weight_c = _tap_weight(col_taps, first_c[:, None], last_c[:, None], center_c[:, None], inverse_c[:, None],
                               extent_w, ANTIALIAS, INTERPOLATION)
        total_r = tl.full(rows.shape, 1.0, tl.float32)
        if ANTIALIAS:  # the filter normalised over its taps inside the image
            total_c = tl.sum(weight_c, axis=1)
            weight_c = weight_c / tl.where(total_c > 0.0, total_c, 1.0)[:, None]  # pixels past the output: no taps
            total_r = tl.zeros(rows.shape, tl.float32)
            for i in range(TAPS_H):
                total_r += _tap_weight(first_r + i, first_r, last_r, center_r, inverse_r, extent_h, ANTIALIAS,
                                       INTERPOLATION)
            total_r = tl.where(total_r > 0.0, total_r, 1.0)
        col, col_inside = _border(left + tl.minimum(tl.maximum(col_taps, 0), extent_w - 1), in_width, BORDER)
        col_offsets = col * stride_w
        value = tl.zeros((rows.shape[0], BLOCK_C), tl.float32)
        load_mask = pixel_mask[:, None, None] & channel_mask[None, None, :]
        for i in range(TAPS_H):
            weight_r = _tap_weight(first_r + i, first_r, last_r, center_r, inverse_r, extent_h, ANTIALIAS,
                                   INTERPOLATION) / total_r
            row, row_inside = _border(top + tl.minimum(tl.maximum(first_r + i, 0), extent_h - 1), in_height,
                                      BORDER)
            offsets = (row * stride_h)[:, None, None] + col_offsets[:, :, None] + channel_offsets[None, None, :]
            taps = tl.load(image_ptr + offsets, mask=load_mask, other=0.0).to(tl.float32) * source_scale
            taps = tl.where((row_inside[:, None] & col_inside)[:, :, None], taps, fill[None, None, :])
            value += weight_r[:, None] * tl.sum(weight_c[:, :, None] * taps, axis=1)
    return value


@triton.jit
def _geometry(image_ptr, config_ptr, fields, rows, cols, channel_offsets, channel_mask, pixel_mask,
              in_height, in_width, out_height, out_width, stride_h, stride_w, source_scale,
              RESAMPLE: tl.constexpr, INTERPOLATION: tl.constexpr, ANTIALIAS: tl.constexpr, BORDER: tl.constexpr,
              TAPS_H: tl.constexpr, TAPS_W: tl.constexpr, CHANNELS: tl.constexpr, BLOCK_C: tl.constexpr,
              MID_INTERPOLATION: tl.constexpr, QUANTISE_MID: tl.constexpr):
    """The sampled [pixels, channels] (fp32) of output (rows, cols): flips, the crop after the
    resample, the resample, the crop window, the pad."""
    channels = tl.arange(0, BLOCK_C)
    fill = tl.load(config_ptr + FILL + tl.minimum(channels, 3))
    rows, cols, top, left, crop_h, crop_w = _resampled_position(fields, config_ptr, rows, cols, in_height,
                                                                in_width, out_height, out_width)
    if RESAMPLE == RESAMPLE_NONE:
        value = _source(image_ptr, top + rows, left + cols, channel_offsets, channel_mask, pixel_mask,
                        in_height, in_width, stride_h, stride_w, fill, source_scale, BORDER)
    elif RESAMPLE == RESAMPLE_RESIZE:
        value = _resize_sample(image_ptr, config_ptr, rows, cols, top, left, crop_h, crop_w, channel_offsets,
                               channel_mask, pixel_mask, fill, source_scale, in_height, in_width, stride_h, stride_w,
                               INTERPOLATION, ANTIALIAS, BORDER, TAPS_H, TAPS_W, BLOCK_C)
    elif RESAMPLE == RESAMPLE_RESIZE_AFFINE:  # the map's taps are pixels of the resize's output
        value = _affine_sample(image_ptr, config_ptr, fields, rows, cols, channel_offsets, channel_mask,
                               pixel_mask, top, left, crop_h, crop_w, fill, source_scale, in_height, in_width, stride_h,
                               stride_w, INTERPOLATION, BORDER, BLOCK_C, True, MID_INTERPOLATION, ANTIALIAS,
                               QUANTISE_MID, TAPS_H, TAPS_W)
    else:  # RESAMPLE_AFFINE
        value = _affine_sample(image_ptr, config_ptr, fields, rows, cols, channel_offsets, channel_mask,
                               pixel_mask, top, left, crop_h, crop_w, fill, source_scale, in_height, in_width, stride_h,
                               stride_w, INTERPOLATION, BORDER, BLOCK_C, False, NEAREST, False, False, 1, 1)
    return value


@triton.jit
def _colour(tile, channels, fields, mean_gray, bound, STOP_AT_CONTRAST: tl.constexpr,
            JITTER: tl.constexpr, CHANNELS: tl.constexpr, INTEGER: tl.constexpr):
    """ColorJitter's ops in the sample's order (JITTER: bit k set when op k was asked for:
    brightness, contrast, saturation, hue). With STOP_AT_CONTRAST, the image the contrast op
    sees (the statistics pass)."""
    order = _field(fields, JITTER_ORDER).to(tl.int32)
    running = order >= 0  # a true scalar: cleared at the contrast op when STOP_AT_CONTRAST
    for k in tl.static_range(4):
        op = (order >> (2 * k)) & 3
        if STOP_AT_CONTRAST:
            running = running & (op != 1)
        if ((JITTER & 1) != 0) & running & (op == 0):
            tile = _blend(tile, 0.0 * tile, _field(fields, BRIGHTNESS), bound, INTEGER)
        if ((JITTER & 2) != 0) & running & (op == 1):
            tile = _blend(tile, mean_gray + 0.0 * tile, _field(fields, CONTRAST), bound, INTEGER)
        if ((JITTER & 4) != 0) & (CHANNELS == 3) & running & (op == 2):
            gray = _gray(tile, channels, CHANNELS, INTEGER)
            tile = _blend(tile, gray[:, None] + 0.0 * tile, _field(fields, SATURATION), bound, INTEGER)
        if ((JITTER & 8) != 0) & (CHANNELS == 3) & running & (op == 3):
            tile = _hue(tile, channels, _field(fields, HUE), INTEGER)
    return tile


@triton.jit
def _colour_step(tile, STEP: tl.constexpr, INTEGER: tl.constexpr, channels, fields, config_ptr, mean_gray,
                 seed, element, rows, cols, out_height, out_width, JITTER: tl.constexpr, CHANNELS: tl.constexpr,
                 ERASE: tl.constexpr, NOISE_CLIP: tl.constexpr):
    """One step of the colour maths (STEP: COLOUR_JITTER .. COLOUR_ERASE, or none) on the
    sampled [pixels, channels], on a uint8 image (INTEGER: torchvision's roundings and
    truncations) or a float one."""
    if INTEGER:  # the largest value of the image
        bound = 255.0
    else:
        bound = 1.0
    if STEP == COLOUR_JITTER:
        tile = _colour(tile, channels, fields, mean_gray, bound, False, JITTER, CHANNELS, INTEGER)
    if STEP == COLOUR_GRAY:
        gray = _gray(tile, channels, CHANNELS, False)
        if INTEGER:
            gray = tl.floor(gray)
        tile = tl.where(_field(fields, GRAYSCALE) != 0.0, gray[:, None] + 0.0 * tile, tile)
    if STEP == COLOUR_NOISE:
        normal = tl.randn(seed ^ _NOISE_KEY, element)
        mean = tl.load(config_ptr + NOISE_MEAN)
        sigma = tl.load(config_ptr + NOISE_SIGMA)
        if INTEGER:  # uint8: the noise (mean·255 + z·σ·255) truncated to int16, added
            noise = mean * 255.0 + normal * (sigma * 255.0)
            tile = tile + tl.where(noise < 0, tl.ceil(noise), tl.floor(noise))
        else:
            tile = tile + (mean + normal * sigma)
        if NOISE_CLIP:
            tile = tl.minimum(tl.maximum(tile, 0.0), bound)
    if STEP == COLOUR_TO_FLOAT:
        tile = tile * tl.load(config_ptr + TO_FLOAT_SCALE)
    if STEP == COLOUR_NORMALIZE:
        mean = tl.load(config_ptr + NORM_MEAN + tl.minimum(channels, 3))
        std = tl.load(config_ptr + NORM_STD + tl.minimum(channels, 3))
        tile = (tile - mean[None, :]) / std[None, :]
    if STEP == COLOUR_ERASE:
        top = _field(fields, ERASE_TOP).to(tl.int32)
        left = _field(fields, ERASE_LEFT).to(tl.int32)
        # The box where the image stood when it was erased (flips after erasing undone).
        erased_rows = tl.where((_field(fields, VFLIP) != 0.0) & (tl.load(config_ptr + ERASE_VFLIPPED) != 0.0),
                               out_height - 1 - rows, rows)
        erased_cols = tl.where((_field(fields, HFLIP) != 0.0) & (tl.load(config_ptr + ERASE_HFLIPPED) != 0.0),
                               out_width - 1 - cols, cols)
        inside = ((erased_rows >= top) & (erased_rows < top + _field(fields, ERASE_HEIGHT).to(tl.int32))
                  & (erased_cols >= left) & (erased_cols < left + _field(fields, ERASE_WIDTH).to(tl.int32)))
        if ERASE == ERASE_RANDOM_VALUE:
            value = tl.randn(seed ^ _ERASE_KEY, element)
        else:
            value = tl.load(config_ptr + ERASE_VALUE + tl.minimum(channels, 3))[None, :] + 0.0 * tile
        if INTEGER:  # a float written into uint8 truncates
            value = tl.minimum(tl.maximum(tl.where(value < 0, tl.ceil(value), tl.floor(value)), 0.0), 255.0)
        tile = tl.where(inside[:, None], value, tile)
    return tile


@triton.jit(do_not_specialize=["seed"])
def _augment_kernel(
        x_ptr, out_ptr, record_ptr, record_out_ptr, config_ptr, partial_ptr, seed,
        in_height, in_width, out_height, out_width, tiles, record_stride,
        x_stride_n, x_stride_c, x_stride_h, x_stride_w, out_stride_n, out_stride_c, out_stride_h, out_stride_w,
        CHANNELS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
        DRAW: tl.constexpr, WRITE_RECORD: tl.constexpr, STATS: tl.constexpr,
        CROP: tl.constexpr, OUT_CROP: tl.constexpr, FLIPS: tl.constexpr, AFFINE: tl.constexpr,
        RESAMPLE: tl.constexpr, INTERPOLATION: tl.constexpr, ANTIALIAS: tl.constexpr, BORDER: tl.constexpr,
        TAPS_H: tl.constexpr, TAPS_W: tl.constexpr, INPUT_INTEGER: tl.constexpr, QUANTISE: tl.constexpr,
        JITTER: tl.constexpr, GRAY: tl.constexpr, NOISE_CLIP: tl.constexpr,
        TO_FLOAT: tl.constexpr, ERASE: tl.constexpr, OUTPUT_SCALE: tl.constexpr,
        FLAT_STORE: tl.constexpr, TILE: tl.constexpr, WINDOW_H: tl.constexpr, WINDOW_W: tl.constexpr,
        SOURCE_FLIPS: tl.constexpr, MID_CROP: tl.constexpr, MID_INTERPOLATION: tl.constexpr,
        QUANTISE_MID: tl.constexpr, COLOUR_ORDER: tl.constexpr, INTEGER_STEPS: tl.constexpr, JITTER_AT: tl.constexpr):
    program = tl.program_id(0)
    sample = program // tiles
    tile_index = program % tiles
    lanes = tl.arange(0, RECORD)
    record = tl.load(record_ptr + sample.to(tl.int64) * record_stride + lanes)
    fields = record_ptr + sample.to(tl.int64) * record_stride
    if DRAW:
        tl.static_assert(WRITE_RECORD, "the drawn record is read back from the records written")
        record = _draw(record, lanes, config_ptr, seed, sample.to(tl.int64), CROP, OUT_CROP, FLIPS,
                       AFFINE, JITTER, GRAY, ERASE, SOURCE_FLIPS, MID_CROP, out_height, out_width)
        # Every program of the sample writes the same numbers; each then reads its fields back
        # as scalars (the barrier makes its threads' stores visible to one another).
        tl.store(record_out_ptr + sample.to(tl.int64) * RECORD + lanes, record)
        tl.debug_barrier()
        fields = record_out_ptr + sample.to(tl.int64) * RECORD
    elif WRITE_RECORD:
        if tile_index == 0:
            tl.store(record_out_ptr + sample.to(tl.int64) * RECORD + lanes, record)

    channels = tl.arange(0, BLOCK_C)
    channel_mask = channels < CHANNELS
    image_ptr = x_ptr + sample.to(tl.int64) * x_stride_n
    stride_h = x_stride_h
    stride_w = x_stride_w
    if SOURCE_FLIPS:  # a flip first in the chain: the image read mirrored, from its last column or row
        source_hflip = _field(fields, SOURCE_HFLIP) != 0.0
        source_vflip = _field(fields, SOURCE_VFLIP) != 0.0
        image_ptr += tl.where(source_hflip, (in_width - 1) * x_stride_w, 0)
        image_ptr += tl.where(source_vflip, (in_height - 1) * x_stride_h, 0)
        stride_w = tl.where(source_hflip, -x_stride_w, x_stride_w)
        stride_h = tl.where(source_vflip, -x_stride_h, x_stride_h)
    if INPUT_INTEGER and TO_FLOAT == TO_FLOAT_SOURCE:  # the image is float from its first read
        source_scale = tl.load(config_ptr + TO_FLOAT_SCALE)
    else:
        source_scale = 1.0
    if TILE != 0:  # a TILE x TILE square of the output (BLOCK_P = TILE·TILE), for the windowed resize
        tile_row = tile_index // tl.cdiv(out_width, TILE)
        tile_col = tile_index % tl.cdiv(out_width, TILE)
        within = tl.arange(0, BLOCK_P)
        rows = tile_row * TILE + within // TILE
        cols = tile_col * TILE + within % TILE
        pixel_mask = (rows < out_height) & (cols < out_width)
        tile = _resize_square(image_ptr, config_ptr, fields, tile_row, tile_col, in_height, in_width,
                              out_height, out_width, x_stride_c, stride_h, stride_w, source_scale, ANTIALIAS, BORDER,
                              INTERPOLATION, TILE,
                              WINDOW_H, WINDOW_W, TAPS_H, TAPS_W,
                              (not INPUT_INTEGER) or (BORDER == BORDER_CONSTANT) or (TO_FLOAT == TO_FLOAT_SOURCE) or
                              (RESAMPLE == RESAMPLE_AFFINE_RESIZE and not QUANTISE_MID),
                              RESAMPLE == RESAMPLE_AFFINE_RESIZE, MID_INTERPOLATION, QUANTISE_MID, CHANNELS, BLOCK_C)
    else:  # a run of BLOCK_P output pixels in row-major order
        tl.static_assert(RESAMPLE != RESAMPLE_AFFINE_RESIZE, "an affine map, then a resize: by windows only")
        pixels = tile_index * BLOCK_P + tl.arange(0, BLOCK_P)
        pixel_mask = pixels < out_height * out_width
        rows = pixels // out_width
        cols = pixels % out_width
        tile = _geometry(image_ptr, config_ptr, fields, rows, cols, channels * x_stride_c, channel_mask,
                         pixel_mask, in_height, in_width, out_height, out_width, stride_h, stride_w, source_scale,
                         RESAMPLE, INTERPOLATION, ANTIALIAS, BORDER, TAPS_H, TAPS_W, CHANNELS, BLOCK_C,
                         MID_INTERPOLATION, QUANTISE_MID)
    if QUANTISE:  # torchvision rounds a resampled uint8 image back to uint8
        tile = _round_to_uint8(tile)
    element = ((sample.to(tl.int64) * CHANNELS + channels[None, :]) * out_height * out_width
               + (rows * out_width + cols)[:, None])  # the per-element Philox counters (noise, erasing)

    if STATS:  # the grey level the contrast op sees, summed over this tile
        for k in tl.static_range(COLOUR_STEPS):
            if k < JITTER_AT:
                tile = _colour_step(tile, (COLOUR_ORDER >> (4 * k)) & 15, (INTEGER_STEPS >> k) & 1, channels, fields,
                                    config_ptr, 0.0, seed, element, rows, cols, out_height, out_width,
                                    JITTER, CHANNELS, ERASE, NOISE_CLIP)
        integer = (INTEGER_STEPS >> JITTER_AT) & 1
        if integer:
            bound = 255.0
        else:
            bound = 1.0
        tile = _colour(tile, channels, fields, 0.0, bound, True, JITTER, CHANNELS, integer)
        gray = tl.where(pixel_mask, _gray(tile, channels, CHANNELS, integer), 0.0)
        # In fp64: the sums of a uint8 image's grey levels are exact, a float image's nearly so,
        # so the mean does not depend on how the image is cut into tiles (the fused pipeline's
        # squares or a functional's runs).
        tl.store(partial_ptr + program, tl.sum(gray.to(tl.float64), axis=0))
    else:
        mean_gray = 0.0
        if (JITTER & 2) != 0:
            sums = tl.zeros((1024,), tl.float64)
            for start in range(0, tiles, 1024):
                index = start + tl.arange(0, 1024)
                sums += tl.load(partial_ptr + sample * tiles + index, mask=index < tiles, other=0.0)
            mean_gray = (tl.sum(sums, axis=0) / (out_height * out_width)).to(tl.float32)
        # The colour steps in the chain's order, each on a uint8 or a float image as it is there.
        for k in tl.static_range(COLOUR_STEPS):
            tile = _colour_step(tile, (COLOUR_ORDER >> (4 * k)) & 15, (INTEGER_STEPS >> k) & 1, channels, fields,
                                config_ptr, mean_gray, seed, element, rows, cols, out_height, out_width,
                                JITTER, CHANNELS, ERASE, NOISE_CLIP)
        if OUTPUT_SCALE:  # ToDtype(uint8, scale=True) of a float image: ×(255 + 1 - 1e-3), truncated
            tile = tl.minimum(tl.maximum(tl.floor(tile * (255.0 + 1.0 - 1e-3)), 0.0), 255.0)
        out_image = out_ptr + sample.to(tl.int64) * out_stride_n
        if FLAT_STORE and TILE != 0:
            # A dense channels-last output: each row of the square is a run of TILE·C elements,
            # stored as a flat vector (128-bit stores); three channels in a tile of four drop the
            # fourth on the way (a gather within each row).
            run = tl.arange(0, TILE * BLOCK_C)
            flat = tl.reshape(tile, [TILE, TILE * BLOCK_C])
            if CHANNELS != BLOCK_C:
                source = tl.minimum((run // CHANNELS) * BLOCK_C + run % CHANNELS, TILE * BLOCK_C - 1)
                flat = tl.gather(flat, tl.broadcast_to(source[None, :], [TILE, TILE * BLOCK_C]), 1)
            square_rows = tile_row * TILE + tl.arange(0, TILE)
            row_run = tl.minimum((out_width - tile_col * TILE) * CHANNELS, TILE * CHANNELS)
            offsets = square_rows[:, None] * (out_width * CHANNELS) + tile_col * (TILE * CHANNELS) + run[None, :]
            tl.store(out_image + offsets, flat.to(out_ptr.dtype.element_ty),
                     mask=(square_rows < out_height)[:, None] & (run < row_run)[None, :])
        elif FLAT_STORE:
            # A dense channels-last output: the tile's pixels are one run of pixels·C elements,
            # stored as a flat vector (128-bit stores); three channels in a tile of four drop the
            # fourth on the way (a gather within the tile).
            elements = tl.arange(0, BLOCK_P * BLOCK_C)
            flat = tl.reshape(tile, [BLOCK_P * BLOCK_C])
            if CHANNELS != BLOCK_C:
                source = (elements // CHANNELS) * BLOCK_C + elements % CHANNELS
                flat = tl.gather(flat, tl.minimum(source, BLOCK_P * BLOCK_C - 1), 0)
            remaining = (out_height * out_width - tile_index * BLOCK_P) * CHANNELS
            tl.store(out_image + tile_index * (BLOCK_P * CHANNELS) + elements, flat.to(out_ptr.dtype.element_ty),
                     mask=elements < tl.minimum(remaining, BLOCK_P * CHANNELS))
        else:
            out_offsets = (rows * out_stride_h + cols * out_stride_w)[:, None] + channels[None, :] * out_stride_c
            tl.store(out_image + out_offsets, tile.to(out_ptr.dtype.element_ty),
                     mask=pixel_mask[:, None] & channel_mask[None, :])


def augment(x, out, record, record_out, config, seed, options, *, partial=None):
    """Run the pipeline ``options`` (the kernel's constexprs, a dict) on x [N, C, H, W] into out
    [N, C, OH, OW] (any strides both): ``record`` [N or 1, RECORD] fp32 (row stride 0 for one
    record shared by every sample), ``config`` [CONFIG] fp32, ``seed`` a Python int, ``partial``
    [N · tiles] fp64 when the pipeline has a contrast jitter. One launch, two with contrast."""
    batch, channels, in_height, in_width = x.shape
    out_height, out_width = out.shape[2:]
    square = SQUARE if options["WINDOW_H"] else 0
    block = square * square if square else pixel_block(out_height, out_width)
    tiles = tiles_of(out_height, out_width, options["WINDOW_H"])
    grid = (batch * tiles,)
    if record_out is None:  # a drawing pass writes its records (and reads its fields back from them)
        record_out = x.new_empty((batch, RECORD), dtype=config.dtype) if options["DRAW"] else record
    partial = config if partial is None else partial
    arguments = (x, out, record, record_out, config, partial, seed, in_height, in_width, out_height, out_width, tiles,
                 record.stride(0), *x.stride(), *out.stride())
    block_c = triton.next_power_of_2(channels)
    height_stride, width_stride = out.stride(2), out.stride(3)
    flat_store = (out.stride(1) == 1 and width_stride == channels and height_stride == out_width * channels
                  and block_c <= 4)  # dense channels_last, at most four channels
    constants = dict(CHANNELS=channels, BLOCK_C=block_c, BLOCK_P=block, FLAT_STORE=flat_store, TILE=square, **options)
    constants["WRITE_RECORD"] = bool(constants.get("WRITE_RECORD")) or bool(options["DRAW"])
    # Two resamples (a rotation sampled into each resize window, or each tap of a rotation a
    # gathered resize): eight warps, for the registers of the four taps.
    two_resamples = options["RESAMPLE"] in (RESAMPLE_AFFINE_RESIZE.value, RESAMPLE_RESIZE_AFFINE.value)
    warps = 2 * NUM_WARPS if two_resamples else NUM_WARPS
    if not options["JITTER"] & 2:
        _augment_kernel[grid](*arguments, STATS=False, **constants, num_warps=warps)
        return 1
    if not constants["DRAW"]:
        _augment_kernel[grid](*arguments, STATS=True, **dict(constants, WRITE_RECORD=False), num_warps=warps)
        _augment_kernel[grid](*arguments, STATS=False, **constants, num_warps=warps)
        return 2
    # The statistics pass draws each sample's parameters and writes them; the main pass reads
    # them back rather than drawing them again in every program.
    _augment_kernel[grid](*arguments, STATS=True, **dict(constants, WRITE_RECORD=True), num_warps=warps)
    arguments = (x, out, record_out) + arguments[3:12] + (RECORD.value,) + arguments[13:]
    _augment_kernel[grid](*arguments, STATS=False, **dict(constants, DRAW=False, WRITE_RECORD=False),
                          num_warps=warps)
    return 2


def pixel_block(out_height, out_width):
    """Output pixels per program: BLOCK_P, or the image's pixels (a power of two) when fewer."""
    return min(BLOCK_P, max(16, triton.next_power_of_2(out_height * out_width)))


def tiles_of(out_height, out_width, window):
    """Programs per sample (the contrast statistics' partial sums per sample): SQUARE x SQUARE
    squares for the windowed resize (``window`` > 0), runs of pixels otherwise."""
    if window:
        return triton.cdiv(out_height, SQUARE) * triton.cdiv(out_width, SQUARE)
    return triton.cdiv(out_height * out_width, pixel_block(out_height, out_width))


@triton.jit
def _mix_kernel(x_ptr, out_ptr, labels_ptr, targets_ptr, lam, per_sample, num_classes, samples, image_programs,
                box_top, box_bottom, box_left, box_right, channels, height, width, CUTMIX: tl.constexpr,
                CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    """out = lam·x + (1 - lam)·roll(x, 1, 0) (MixUp) or x with roll(x, 1, 0) pasted in the box
    (CutMix), over dense batches (NCHW or channels_last, out laid out alike) walked in memory
    order as [N, per_sample]; the programs past ``image_programs`` write the targets:
    lam·one_hot(y) + (1 - lam)·one_hot(roll(y, 1))."""
    program = tl.program_id(0)
    if program < image_programs:
        offsets = program.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < samples * per_sample
        sample = offsets // per_sample
        previous = tl.where(sample == 0, samples - 1, sample - 1)
        within = offsets - sample * per_sample
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        rolled = tl.load(x_ptr + previous * per_sample + within, mask=mask, other=0.0)
        if CUTMIX:
            if CHANNELS_LAST:
                pixel = within // channels
            else:
                pixel = within % (height * width)
            row = pixel // width
            col = pixel % width
            inside = (row >= box_top) & (row < box_bottom) & (col >= box_left) & (col < box_right)
            y = tl.where(inside, rolled, x)
        else:  # as torchvision: roll(x)·(1 - lam) + x·lam, in the images' dtype
            y = rolled.to(tl.float32) * (1.0 - lam) + x.to(tl.float32) * lam
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        offsets = (program - image_programs).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < samples * num_classes
        sample = offsets // num_classes
        klass = offsets - sample * num_classes
        previous = tl.where(sample == 0, samples - 1, sample - 1)
        own = tl.load(labels_ptr + sample, mask=mask, other=-1)
        other = tl.load(labels_ptr + previous, mask=mask, other=-1)
        target = tl.where(other == klass, 1.0 - lam, 0.0) + tl.where(own == klass, lam, 0.0)
        tl.store(targets_ptr + offsets, target.to(targets_ptr.dtype.element_ty), mask=mask)


MIX_BLOCK = by_backend(interpreter=4096, gpu=1024)


def mix(x, out, labels, targets, lam, box, *, cutmix, channels_last):
    """MixUp/CutMix of x [N, C, H, W] (dense, NCHW or ``channels_last``; out laid out alike) and
    of int64 labels [N] into float targets [N, classes]; ``box`` (top, bottom, left, right) for
    CutMix. One launch."""
    samples, channels, height, width = x.shape
    per_sample = x.numel() // max(samples, 1)
    image_programs = triton.cdiv(x.numel(), MIX_BLOCK)
    label_programs = triton.cdiv(targets.numel(), MIX_BLOCK)
    _mix_kernel[(image_programs + label_programs,)](
        x, out, labels, targets, float(lam), per_sample, targets.shape[1], samples, image_programs, *box, channels,
        height, width, CUTMIX=cutmix, CHANNELS_LAST=channels_last, BLOCK=MIX_BLOCK,
        num_warps=max(1, MIX_BLOCK * x.element_size() // (16 * 32)))  # 16 bytes a thread: 128-bit accesses
    return 1
