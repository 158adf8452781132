"""How a chain of transforms becomes launches of ``fastcnn::augment``: ``Plan`` takes the
transforms in order while they fit the kernel's one pass (the geometry first: a pad, a crop, a
resample or two (an affine map and a resize, either way round), a crop of its output, flips
anywhere among them; then the colour steps in the chain's order, each once: ColorJitter,
grayscale, noise, the integer-to-float step, Normalize, erasing; the output dtype) and says no to
one that does not fit, which then starts the next launch. Each transform's fields of the
per-sample record are noted, so that ``return_params`` can name what each drew."""
import math
import numbers

import torch

from ..ops import augment as op

# The kernel's record and configuration slots (kernels/augment.py), here as plain ints so that
# building a plan imports no triton.
CROP_TOP, CROP_LEFT, CROP_HEIGHT, CROP_WIDTH, OUT_TOP, OUT_LEFT, HFLIP, VFLIP = range(8)
ANGLE, TRANSLATE_X, TRANSLATE_Y, SCALE, SHEAR_X, SHEAR_Y = range(8, 14)
BRIGHTNESS, CONTRAST, SATURATION, HUE, JITTER_ORDER, GRAYSCALE = range(14, 20)
ERASE_TOP, ERASE_LEFT, ERASE_HEIGHT, ERASE_WIDTH = range(20, 24)
SOURCE_HFLIP, SOURCE_VFLIP = 24, 25
MID_TOP, MID_LEFT, MID_HEIGHT, MID_WIDTH = range(26, 30)

PAD_TOP, PAD_LEFT, PADDED_HEIGHT, PADDED_WIDTH = range(4)
CROP_SCALE_LO, CROP_SCALE_HI, CROP_LOG_RATIO_LO, CROP_LOG_RATIO_HI, RESIZED_HEIGHT, RESIZED_WIDTH = range(4, 10)
HFLIP_P, VFLIP_P, DEGREES_LO, DEGREES_HI, TRANSLATE_X_MAX, TRANSLATE_Y_MAX = range(10, 16)
SCALE_LO, SCALE_HI, SHEAR_X_LO, SHEAR_X_HI, SHEAR_Y_LO, SHEAR_Y_HI, CENTER_X, CENTER_Y, ANGLE_SIGN = range(16, 25)
BRIGHTNESS_LO = 25  # (lo, hi) of brightness, contrast, saturation, hue: 25 .. 32
GRAYSCALE_P, NOISE_MEAN, NOISE_SIGMA = 33, 34, 35
ERASE_P, ERASE_SCALE_LO, ERASE_SCALE_HI, ERASE_LOG_RATIO_LO, ERASE_LOG_RATIO_HI = range(36, 41)
TO_FLOAT_SCALE, FILL_MASKED = 41, 42
FILL, NORM_MEAN, NORM_STD, ERASE_VALUE = 44, 48, 52, 56
SOURCE_HFLIP_P, SOURCE_VFLIP_P = 60, 61
SOURCE_HFLIP_MIRRORS, SOURCE_VFLIP_MIRRORS, OUT_HFLIP_MIRRORS, OUT_VFLIP_MIRRORS = range(62, 66)
ERASE_HFLIPPED, ERASE_VFLIPPED = 66, 67

CROP_GIVEN, CROP_RANDOM, CROP_RESIZED = range(3)
RESAMPLE_NONE, RESAMPLE_RESIZE, RESAMPLE_AFFINE, RESAMPLE_AFFINE_RESIZE, RESAMPLE_RESIZE_AFFINE = range(5)
NEAREST, BILINEAR, BICUBIC = range(3)
BORDERS = {"constant": 0, "edge": 1, "reflect": 2, "symmetric": 3}
BORDER_INSIDE = 4
ERASE_NONE, ERASE_VALUE_GIVEN, ERASE_RANDOM_VALUE = range(3)
TO_FLOAT_NEVER, TO_FLOAT_IN_ORDER, TO_FLOAT_SOURCE = range(3)
COLOUR_JITTER, COLOUR_GRAY, COLOUR_NOISE, COLOUR_TO_FLOAT, COLOUR_NORMALIZE, COLOUR_ERASE = range(1, 7)
COLOUR_STEPS = 6
IDENTITY_ORDER = 0 + (1 << 2) + (2 << 4) + (3 << 6)  # brightness, contrast, saturation, hue

# The geometric stages of one launch, in the kernel's order; the colour steps follow (COLOURED),
# in the chain's order.
START, PADDED, CROPPED, RESAMPLED, OUT_CROPPED, FLIPPED, COLOURED = range(7)


class Plan:
    """One launch being built for a batch of ``channels`` x ``height`` x ``width`` images of
    ``dtype`` (what the previous launch writes, for the second launch of a chain)."""

    def __init__(self, channels, height, width, dtype):
        self.channels, self.dtype = channels, dtype
        self.input_size = (height, width)
        self.extent = (height, width)          # the image's size at this point of the chain
        self.stage = START
        self.options = dict(DRAW=False, CROP=CROP_GIVEN, OUT_CROP=False, FLIPS=False, AFFINE=False,
                            RESAMPLE=RESAMPLE_NONE, INTERPOLATION=BILINEAR, ANTIALIAS=True, BORDER=0, TAPS_H=2,
                            TAPS_W=2, INPUT_INTEGER=not dtype.is_floating_point, QUANTISE=False, JITTER=0,
                            GRAY=False, NOISE_CLIP=False, TO_FLOAT=TO_FLOAT_NEVER, ERASE=ERASE_NONE,
                            OUTPUT_SCALE=False, WINDOW_H=0, WINDOW_W=0, SOURCE_FLIPS=False, MID_CROP=False,
                            MID_INTERPOLATION=NEAREST, QUANTISE_MID=False)
        self.config = [0.0] * op.CONFIG
        self.config[PADDED_HEIGHT], self.config[PADDED_WIDTH] = float(height), float(width)
        self.config[SCALE_LO] = self.config[SCALE_HI] = 1.0
        self.config[ANGLE_SIGN] = 1.0
        self.config[CENTER_X] = self.config[CENTER_Y] = math.nan
        self.config[TO_FLOAT_SCALE] = 1.0 / 255.0
        self.config[NORM_STD:NORM_STD + 4] = [1.0] * 4
        self.record = [0.0] * op.RECORD
        self.record[CROP_HEIGHT], self.record[CROP_WIDTH] = float(height), float(width)
        self.record[SCALE] = 1.0
        self.record[BRIGHTNESS:HUE] = [1.0, 1.0, 1.0]
        self.record[JITTER_ORDER] = float(IDENTITY_ORDER)
        self.given = {}                         # record field -> an [N] tensor of given parameters
        self.fields = []                        # (transform, {name: field}) drawn or given here
        self.max_crop = (height, width)         # the largest crop a resample may read (its taps)
        self.out_dtype = dtype
        self.fill_set = False
        self.flips = set()
        self.source_flips = set()
        self.colour = []                        # the colour steps, in the chain's order

    @property
    def integer(self):
        """Whether the image is still integer (uint8) at this point of the chain."""
        return not self.out_dtype.is_floating_point

    @property
    def empty(self):
        return self.stage == START and not self.fields and self.out_dtype == self.dtype

    def note(self, transform, **fields):
        self.fields.append((transform, fields))

    def set_given(self, field, value):
        """A per-sample parameter (an [N] tensor) or one for every sample (a number)."""
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            self.given[field] = value
        else:
            self.record[field] = float(value)

    def set_fill(self, fill):
        """The fill of a constant pad or of the affine map (one per launch)."""
        values = _channel_values(fill, self.channels, "fill")
        if self.fill_set and values != self.config[FILL:FILL + len(values)]:
            return False
        self.config[FILL:FILL + len(values)] = values
        self.fill_set = True
        return True

    # ------------------------------------------------------------------ geometry
    def pad(self, left, top, right, bottom, fill, mode):
        if self.stage != START:
            return False
        height, width = self.extent
        if mode == "reflect" and (max(top, bottom) >= height or max(left, right) >= width):
            raise ValueError("fastcnn.transforms: reflect padding must be smaller than the image "
                             f"({height}x{width}), got (left, top, right, bottom) = {(left, top, right, bottom)}")
        if mode == "symmetric" and (max(top, bottom) > height or max(left, right) > width):
            raise ValueError("fastcnn.transforms: symmetric padding must be at most the image size")
        if mode == "constant" and not self.set_fill(fill):
            return False
        self.config[PAD_TOP], self.config[PAD_LEFT] = float(top), float(left)
        self.extent = (height + top + bottom, width + left + right)
        self.config[PADDED_HEIGHT], self.config[PADDED_WIDTH] = map(float, self.extent)
        self.record[CROP_HEIGHT], self.record[CROP_WIDTH] = map(float, self.extent)
        self.options["BORDER"] = BORDERS[mode]
        self.max_crop = self.extent
        self.stage = PADDED
        return True

    def center_crop(self, crop_h, crop_w):
        """torchvision's center_crop: the middle (rounded), or zeros padded around a smaller image."""
        height, width = self.extent
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        if crop_h > height or crop_w > width:
            top = -((crop_h - height) // 2) if crop_h > height else top
            left = -((crop_w - width) // 2) if crop_w > width else left
            if self.stage != START:
                return False
        return self.crop(top, left, crop_h, crop_w)

    def resize_to(self, size, max_size, interpolation, antialias):
        """Resize: ``size`` as torchvision reads it (the shorter edge, or (h, w))."""
        new_size = resized_output_size(*self.extent, size, max_size)
        if new_size == self.extent:
            return True  # torchvision returns the image itself
        return self.resize(new_size, interpolation, antialias)

    def crop(self, top, left, height, width):
        """A crop of the (padded) image at a given or per-sample position; outside the image
        reads as zeros (torchvision's crop pads). After a crop or a resample: a crop of its output."""
        if self.stage <= PADDED:
            outside = any(isinstance(value, torch.Tensor) for value in (top, left)) or top < 0 or left < 0 \
                or top + height > self.extent[0] or left + width > self.extent[1]
            if self.stage == START and outside and not self.set_fill(0):  # a later map's fill is not the crop's
                return False
            self.set_given(CROP_TOP, top + self.config[PAD_TOP] if not isinstance(top, torch.Tensor) else top)
            self.set_given(CROP_LEFT, left + self.config[PAD_LEFT] if not isinstance(left, torch.Tensor) else left)
            self.record[CROP_HEIGHT], self.record[CROP_WIDTH] = float(height), float(width)
            self.max_crop = (height, width)
            self.stage = CROPPED
        elif self.stage in (CROPPED, RESAMPLED, FLIPPED) and not self.options["OUT_CROP"]:
            self._resampled_extent()
            self.set_given(OUT_TOP, top)
            self.set_given(OUT_LEFT, left)
            self.stage = OUT_CROPPED
        else:
            return False
        self.extent = (height, width)
        return True

    def random_crop(self, transform, height, width):
        """RandomCrop's position, uniform over the (padded) image, or over a resample's output."""
        if self.stage <= PADDED:
            self.options.update(DRAW=True, CROP=CROP_RANDOM)
            self.record[CROP_HEIGHT], self.record[CROP_WIDTH] = float(height), float(width)
            self.max_crop = (height, width)
            self.stage = CROPPED
            self.note(transform, top=CROP_TOP, left=CROP_LEFT)
        elif self.stage in (CROPPED, RESAMPLED, FLIPPED) and not self.options["OUT_CROP"]:
            self._resampled_extent()
            self.options.update(DRAW=True, OUT_CROP=True)
            self.stage = OUT_CROPPED
            self.note(transform, top=OUT_TOP, left=OUT_LEFT)
        else:
            return False
        self.extent = (height, width)
        return True

    def _crop_distribution(self, scale, ratio):
        """RandomResizedCrop's area scale and log-uniform aspect ratio ranges (one per launch)."""
        self.config[CROP_SCALE_LO], self.config[CROP_SCALE_HI] = map(float, scale)
        self.config[CROP_LOG_RATIO_LO], self.config[CROP_LOG_RATIO_HI] = math.log(ratio[0]), math.log(ratio[1])

    def _resampled_extent(self):
        """The crop of the resample's output starts here: its extent, and the flips of the output
        before it, which mirror its position."""
        self.config[RESIZED_HEIGHT], self.config[RESIZED_WIDTH] = map(float, self.extent)
        self.config[OUT_HFLIP_MIRRORS] = float(HFLIP in self.flips)
        self.config[OUT_VFLIP_MIRRORS] = float(VFLIP in self.flips)

    def random_resized_crop(self, transform, size, scale, ratio, interpolation, antialias):
        if self.stage > PADDED:
            return self._after_affine(transform, size, interpolation, antialias, scale, ratio)
        self.options.update(DRAW=True, CROP=CROP_RESIZED)
        self._crop_distribution(scale, ratio)
        self.note(transform, top=CROP_TOP, left=CROP_LEFT, height=CROP_HEIGHT, width=CROP_WIDTH)
        self.max_crop = self.extent
        self.stage = CROPPED
        return self._resize(size, interpolation, antialias)

    def resize(self, size, interpolation, antialias):
        if self.stage > CROPPED:
            return self._after_affine(None, size, interpolation, antialias)
        self.stage = CROPPED
        return self._resize(size, interpolation, antialias)

    def _resize(self, size, interpolation, antialias):
        antialias = bool(antialias) and interpolation != NEAREST
        self.options.update(RESAMPLE=RESAMPLE_RESIZE, INTERPOLATION=interpolation, ANTIALIAS=antialias,
                            QUANTISE=self.integer and interpolation != NEAREST)
        self.config[RESIZED_HEIGHT], self.config[RESIZED_WIDTH] = map(float, size)
        shape = op.resize_shape(self.max_crop, size, antialias, interpolation == BICUBIC,
                                windowed=interpolation != NEAREST and self.channels <= 4)
        self.options.update(zip(("TAPS_H", "TAPS_W", "WINDOW_H", "WINDOW_W"), shape))
        self.extent = tuple(size)
        self.stage = RESAMPLED
        return True

    def _after_affine(self, transform, size, interpolation, antialias, scale=None, ratio=None):
        """A resize (Resize, or RandomResizedCrop with ``scale``) of an affine map's output in
        the same launch: the resize's source windows are sampled from the map's output pixel by
        pixel, so both resamples are torchvision's, in one pass. Only by windows (bilinear or
        bicubic, at most 3x down, at most four channels), and right after the map."""
        if (self.stage != RESAMPLED or self.options["RESAMPLE"] != RESAMPLE_AFFINE or self.options["OUT_CROP"]
                or interpolation == NEAREST or self.channels > 4):
            return False
        antialias = bool(antialias)
        shape = op.resize_shape(self.extent, size, antialias, interpolation == BICUBIC, windowed=True)
        if not shape[2]:
            return False
        self.options.update(RESAMPLE=RESAMPLE_AFFINE_RESIZE, MID_INTERPOLATION=self.options["INTERPOLATION"],
                            QUANTISE_MID=self.options["QUANTISE"], INTERPOLATION=interpolation, ANTIALIAS=antialias,
                            QUANTISE=self.integer)
        self.options.update(zip(("TAPS_H", "TAPS_W", "WINDOW_H", "WINDOW_W"), shape))
        self.config[RESIZED_HEIGHT], self.config[RESIZED_WIDTH] = map(float, size)
        if scale is not None:  # RandomResizedCrop: its box drawn in the map's output
            self.options.update(DRAW=True, MID_CROP=True)
            self._crop_distribution(scale, ratio)
            self.note(transform, top=MID_TOP, left=MID_LEFT, height=MID_HEIGHT, width=MID_WIDTH)
        else:  # Resize: the whole of it
            self.record[MID_HEIGHT], self.record[MID_WIDTH] = map(float, self.extent)
        self.extent = tuple(size)
        return True

    def affine(self, transform, *, angle_sign, degrees, translate, scale, shear, interpolation, fill, center,
               given=None):
        """RandomRotation / RandomAffine (``given``: the functional's per-sample parameters). Right
        after a resize (Resize, RandomResizedCrop), the map's taps are pixels of the resize, each
        gathered from the input (and rounded where torchvision's is uint8): both resamples are
        torchvision's, in one pass."""
        after_resize = (self.stage == RESAMPLED and self.options["RESAMPLE"] == RESAMPLE_RESIZE
                        and not self.options["OUT_CROP"])
        if (self.stage > CROPPED and not after_resize) or not self.set_fill(0 if fill is None else fill):
            return False
        self.config[FILL_MASKED] = 0.0 if fill is None else 1.0  # torchvision's functional default: no mask
        height, width = self.extent
        if after_resize:  # the resize's taps are gathered per pixel: no windows
            self.options.update(RESAMPLE=RESAMPLE_RESIZE_AFFINE, MID_INTERPOLATION=self.options["INTERPOLATION"],
                                QUANTISE_MID=self.options["QUANTISE"], WINDOW_H=0, WINDOW_W=0)
        else:
            self.options["RESAMPLE"] = RESAMPLE_AFFINE
        self.options.update(INTERPOLATION=interpolation, QUANTISE=self.integer and interpolation == BILINEAR)
        self.config[ANGLE_SIGN] = float(angle_sign)
        if center is not None:
            self.config[CENTER_X], self.config[CENTER_Y] = map(float, center)
        if given is not None:
            for field, value in given.items():
                self.set_given(field, value)
        else:
            self.options.update(DRAW=True, AFFINE=True)
            self.config[DEGREES_LO], self.config[DEGREES_HI] = map(float, degrees)
            if translate is not None:
                self.config[TRANSLATE_X_MAX] = float(translate[0] * width)
                self.config[TRANSLATE_Y_MAX] = float(translate[1] * height)
            if scale is not None:
                self.config[SCALE_LO], self.config[SCALE_HI] = map(float, scale)
            if shear is not None:
                self.config[SHEAR_X_LO], self.config[SHEAR_X_HI] = map(float, shear[:2])
                if len(shear) == 4:
                    self.config[SHEAR_Y_LO], self.config[SHEAR_Y_HI] = map(float, shear[2:])
            if angle_sign < 0:
                self.note(transform, angle=ANGLE)
            else:
                self.note(transform, angle=ANGLE, translate=(TRANSLATE_X, TRANSLATE_Y), scale=SCALE,
                          shear=(SHEAR_X, SHEAR_Y))
        self.stage = RESAMPLED
        return True

    def flip(self, transform, horizontal, p=None, given=None):
        """A flip, one per direction, wherever it stands in the chain's geometry:
        - before the resample, it flips the input (the kernel reads it mirrored), with the pad and
          the crop before it mirrored to match (a flip of a crop is the crop, mirrored, of the
          flipped image), so that a crop or a resample may follow;
        - after the resample, it flips the output (after every other geometric step), with a
          crop of the resample's output after it mirrored to match, and with the box of an
          erasing before it. The colour maths is per pixel (contrast's mean is the whole
          image's), so a flip may follow it."""
        if self.stage <= CROPPED:
            if horizontal in self.source_flips:
                return False
            self.source_flips.add(horizontal)
            field = SOURCE_HFLIP if horizontal else SOURCE_VFLIP
            self.options["SOURCE_FLIPS"] = True
            self.config[SOURCE_HFLIP_MIRRORS if horizontal else SOURCE_VFLIP_MIRRORS] = \
                {START: 0.0, PADDED: 1.0, CROPPED: 2.0}[self.stage]
            if given is not None:
                self.set_given(field, given)
            else:
                self.options["DRAW"] = True
                self.config[SOURCE_HFLIP_P if horizontal else SOURCE_VFLIP_P] = float(p)
                self.note(transform, flip=field)
            return True
        field = HFLIP if horizontal else VFLIP
        if field in self.flips:
            return False
        self.flips.add(field)
        if COLOUR_ERASE in self.colour:
            self.config[ERASE_HFLIPPED if horizontal else ERASE_VFLIPPED] = 1.0
        if given is not None:
            self.set_given(field, given)
        else:
            self.options.update(DRAW=True, FLIPS=True)
            self.config[HFLIP_P if horizontal else VFLIP_P] = float(p)
            self.note(transform, flip=field)
        self.stage = max(self.stage, FLIPPED)
        return True

    # ------------------------------------------------------------------ colour
    def _colour_step(self, step):
        """Colour steps run per pixel after the geometry, in the chain's order, each once and
        none after a ToDtype back to uint8: False when ``step`` cannot join them."""
        if step in self.colour or self.options["OUTPUT_SCALE"]:
            return False
        self.colour.append(step)
        self.stage = max(self.stage, COLOURED)
        return True

    def jitter(self, transform, ranges, given=None):
        """ColorJitter: ``ranges`` (lo, hi) or None for brightness, contrast, saturation, hue;
        ``given``: the functional's per-sample factors and order."""
        op.check_colour_channels("fastcnn.transforms.ColorJitter", self.channels)
        if not self._colour_step(COLOUR_JITTER):
            return False
        bits = 0
        for k, value in enumerate(ranges):
            if value is not None:
                bits |= 1 << k
        self.options["JITTER"] = bits
        if given is not None:
            for field, value in given.items():
                self.set_given(field, value)
        else:
            self.options["DRAW"] = True
            self.config[BRIGHTNESS_LO:BRIGHTNESS_LO + 8] = [
                float(v) for k, value in enumerate(ranges)
                for v in (value if value is not None else (1.0 if k < 3 else 0.0,) * 2)]
            self.note(transform, order=JITTER_ORDER, brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION,
                      hue=HUE)
        return True

    def grayscale(self, transform, p=None, given=None):
        op.check_colour_channels("fastcnn.transforms.RandomGrayscale", self.channels)
        if not self._colour_step(COLOUR_GRAY):
            return False
        self.options["GRAY"] = True
        if given is not None:
            self.set_given(GRAYSCALE, given)
        else:
            self.options["DRAW"] = True
            self.config[GRAYSCALE_P] = float(p)
            self.note(transform, grayscale=GRAYSCALE)
        return True

    def noise(self, mean, sigma, clip):
        if not self._colour_step(COLOUR_NOISE):
            return False
        self.options.update(NOISE_CLIP=bool(clip), DRAW=True)
        self.config[NOISE_MEAN], self.config[NOISE_SIGMA] = float(mean), float(sigma)
        return True

    def to_dtype(self, dtype, scale):
        if self.integer and dtype.is_floating_point:
            if self.stage == START:  # first in the chain: each source pixel scaled as it is read, so
                self.options["TO_FLOAT"] = TO_FLOAT_SOURCE  # that the geometry after it runs on the float image
            elif self._colour_step(COLOUR_TO_FLOAT):
                self.options["TO_FLOAT"] = TO_FLOAT_IN_ORDER
            else:
                return False
            self.config[TO_FLOAT_SCALE] = 1.0 / 255.0 if scale else 1.0
        elif not self.integer and dtype == torch.uint8:
            if self.options["OUTPUT_SCALE"] or not scale:
                return False
            self.options["OUTPUT_SCALE"] = True
            self.stage = max(self.stage, COLOURED)
        elif not dtype.is_floating_point and dtype != torch.uint8:
            raise TypeError(f"fastcnn.transforms.ToDtype: the kernels write uint8 or floating batches, not {dtype}")
        if dtype == torch.float64:
            raise TypeError("fastcnn.transforms.ToDtype: float64 output is not supported; use float32")
        self.out_dtype = dtype
        return True

    def normalize(self, mean, std):
        if self.integer:
            raise TypeError(f"Input tensor should be a float tensor. Got {self.out_dtype}.")
        if not self._colour_step(COLOUR_NORMALIZE):
            return False
        self.config[NORM_MEAN:NORM_MEAN + 4] = _channel_values(mean, self.channels, "mean")
        self.config[NORM_STD:NORM_STD + 4] = _channel_values(std, self.channels, "std", default=1.0)
        return True

    def erase(self, transform, p, scale, ratio, value, given=None):
        if not self._colour_step(COLOUR_ERASE):
            return False
        if isinstance(value, str):
            self.options["ERASE"] = ERASE_RANDOM_VALUE
        else:
            self.options["ERASE"] = ERASE_VALUE_GIVEN
            self.config[ERASE_VALUE:ERASE_VALUE + 4] = _channel_values(value, self.channels, "value")
        if given is not None:
            for field, tensor in given.items():
                self.set_given(field, tensor)
        else:
            self.options["DRAW"] = True
            self.config[ERASE_P], self.config[ERASE_SCALE_LO], self.config[ERASE_SCALE_HI] = float(p), *map(float, scale)
            self.config[ERASE_LOG_RATIO_LO], self.config[ERASE_LOG_RATIO_HI] = math.log(ratio[0]), math.log(ratio[1])
            self.note(transform, top=ERASE_TOP, left=ERASE_LEFT, height=ERASE_HEIGHT, width=ERASE_WIDTH)
        return True

    # ------------------------------------------------------------------ the launch
    def _reads_inside(self):
        """Whether every source read is inside the image: no pad, and a crop drawn inside it or
        given inside it for every sample (an affine map's taps outside the crop are masked by the
        map itself)."""
        if self.stage == START or self.config[PAD_TOP] or self.config[PAD_LEFT] or CROP_TOP in self.given \
                or CROP_LEFT in self.given or CROP_HEIGHT in self.given or CROP_WIDTH in self.given:
            return False
        if self.options["BORDER"] != BORDERS["constant"] or self.config[PADDED_HEIGHT] != self.input_size[0] \
                or self.config[PADDED_WIDTH] != self.input_size[1]:
            return False
        if self.options["CROP"] != CROP_GIVEN:
            return True
        top, left, height, width = (self.record[field] for field in (CROP_TOP, CROP_LEFT, CROP_HEIGHT, CROP_WIDTH))
        return top >= 0 and left >= 0 and top + height <= self.input_size[0] and left + width <= self.input_size[1]

    def _colour_options(self):
        """The kernel's COLOUR_ORDER (the steps, four bits each, the first lowest), INTEGER_STEPS
        (bit k: step k sees a uint8 image) and JITTER_AT (ColorJitter's step, for the contrast
        statistics pass)."""
        integer_before = self.options["INPUT_INTEGER"] and self.options["TO_FLOAT"] != TO_FLOAT_SOURCE
        order = integer_steps = 0
        for k, step in enumerate(self.colour):
            order |= step << (4 * k)
            if integer_before and COLOUR_TO_FLOAT not in self.colour[:k]:
                integer_steps |= 1 << k
        jitter_at = self.colour.index(COLOUR_JITTER) if COLOUR_JITTER in self.colour else COLOUR_STEPS
        return dict(COLOUR_ORDER=order, INTEGER_STEPS=integer_steps, JITTER_AT=jitter_at)

    def pipeline(self, batch_size, device, channels_last):
        """The ``op.Pipeline`` of this launch (given per-sample parameters stacked as an
        [N, RECORD] record on ``device``)."""
        record = self.record
        if self.given:
            record = torch.tensor(self.record, dtype=torch.float32, device=device).repeat(batch_size, 1)
            for field, value in self.given.items():
                if value.shape[0] != batch_size:
                    raise ValueError(f"fastcnn.transforms.functional: {value.shape[0]} per-sample parameters for a "
                                     f"batch of {batch_size}")
                record[:, field] = value.to(device=device, dtype=torch.float32)
        options = dict(self.options, CHANNELS_LAST=channels_last, **self._colour_options())
        if self._reads_inside():
            options["BORDER"] = BORDER_INSIDE
        return op.Pipeline(options, list(self.config), record, self.extent, self.out_dtype)


def _channel_values(value, channels, name, default=0.0):
    """A number or one value per channel, as the 4 per-channel slots of the configuration."""
    if isinstance(value, (int, float)):
        values = [float(value)] * channels
    else:
        values = [float(v) for v in value]
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ValueError(f"fastcnn.transforms: {name} has {len(values)} values for {channels} channels")
    if channels > 4 and len(set(values)) > 1:
        raise ValueError(f"fastcnn.transforms: per-channel {name} takes at most 4 channels, got {channels}")
    return (values + [default] * 4)[:4]


def interpolation_kind(interpolation, resize=True):
    """torchvision's InterpolationMode (or its value, a string) as the kernel's NEAREST/BILINEAR/BICUBIC
    (bicubic for a resize, not for the rotation and affine maps)."""
    value = getattr(interpolation, "value", interpolation)
    kinds = {"nearest": NEAREST, "bilinear": BILINEAR, "bicubic": BICUBIC} if resize else \
        {"nearest": NEAREST, "bilinear": BILINEAR}
    if value in kinds:
        return kinds[value]
    raise ValueError(f"fastcnn.transforms: interpolation {interpolation} is not supported; use "
                     + ("nearest, bilinear or bicubic" if resize else "nearest or bilinear (rotation and affine)"))


def size_pair(size, name="size"):
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    size = list(size)
    if len(size) == 1:
        return int(size[0]), int(size[0])
    if len(size) != 2:
        raise ValueError(f"Please provide only two dimensions (h, w) for {name}.")
    return int(size[0]), int(size[1])


def pad_widths(padding):
    """torchvision's _parse_pad_padding: (left, right, top, bottom)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1:
            return (padding[0],) * 4
        if len(padding) == 2:
            return padding[0], padding[0], padding[1], padding[1]
        if len(padding) == 4:
            return padding[0], padding[2], padding[1], padding[3]
        raise ValueError(f"Padding must be an int or a 1, 2, or 4 element tuple or list. Found {len(padding)}")
    raise TypeError(f"`padding` should be an integer or tuple or list of integers, but got {padding}")


def check_padding_mode(mode):
    if mode not in ("constant", "edge", "reflect", "symmetric"):
        raise ValueError("Padding mode should be either constant, edge, reflect or symmetric")


def resized_output_size(height, width, size, max_size=None):
    """torchvision's _compute_resized_output_size: one number matches the shorter edge (the
    longer one scaled, truncated; capped at ``max_size``), two are (h, w)."""
    if isinstance(size, numbers.Number) or len(size) == 1:
        requested = int(size if isinstance(size, numbers.Number) else size[0])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = requested, int(requested * long / short)
        if max_size is not None:
            if max_size <= requested:
                raise ValueError(f"max_size = {max_size} must be strictly greater than the requested size for the "
                                 f"smaller edge size = {size}")
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), max_size
        return (new_long, new_short) if width <= height else (new_short, new_long)
    if max_size is not None:
        raise ValueError("max_size should only be passed if size specifies the length of the smaller edge")
    return int(size[0]), int(size[1])
