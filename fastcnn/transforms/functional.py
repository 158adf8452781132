"""``fastcnn.transforms.functional``: torchvision.transforms.v2.functional's image ops on a batch,
each with explicit parameters: a number for every sample, or an [N] tensor (pairs [N, 2]) with
one per sample, as ``return_params=True`` reports them. Each call is one launch of the fused
kernel (two for a contrast adjustment). The per-sample crop sizes of ``crop``/``resized_crop``
are read on the host (the resize's filter width); nothing else is.
"""
import numbers

import torch

from ._plan import (ANGLE, BRIGHTNESS, CONTRAST, CROP_HEIGHT, CROP_WIDTH, ERASE_HEIGHT, ERASE_LEFT,
                    ERASE_TOP, ERASE_WIDTH, HUE, JITTER_ORDER, SATURATION, SCALE, SHEAR_X, SHEAR_Y, TRANSLATE_X,
                    TRANSLATE_Y, Plan, check_padding_mode, interpolation_kind, pad_widths, size_pair)
from ..ops import augment as op
from ..ops.augment import check_batch, check_colour_channels

__all__ = ["adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation", "affine", "center_crop",
           "color_jitter", "crop", "erase", "gaussian_noise", "horizontal_flip", "normalize", "pad",
           "resize", "resized_crop", "rgb_to_grayscale", "rotate", "to_dtype", "vertical_flip"]


def _run(name, batch, build, generator=None):
    check_batch(f"fastcnn.transforms.functional.{name}", batch)
    batch_size, channels, height, width = batch.shape
    plan = Plan(channels, height, width, batch.dtype)
    build(plan)
    channels_last = batch.stride(1) == 1 and channels > 1
    out, _ = op.run(plan.pipeline(batch_size, batch.device, channels_last), batch, generator)
    return out


def _per_sample(value):
    """A number stays a number; a sequence becomes a float tensor."""
    if isinstance(value, numbers.Number):
        return value
    return torch.as_tensor(value, dtype=torch.float32)


def _largest(value):
    return int(value.max()) if isinstance(value, torch.Tensor) else int(value)


# ----------------------------------------------------------------------------- geometry
def crop(batch, top, left, height, width):
    """F.crop per sample; outside the image reads as zeros, as torchvision's crop pads."""
    def build(plan):
        plan.crop(_per_sample(top), _per_sample(left), height, width)
    return _run("crop", batch, build)


def center_crop(batch, output_size):
    return _run("center_crop", batch, lambda plan: plan.center_crop(*size_pair(output_size)))


def resize(batch, size, interpolation="bilinear", max_size=None, antialias=True):
    kind = interpolation_kind(interpolation)
    return _run("resize", batch, lambda plan: plan.resize_to(size, max_size, kind, antialias))


def resized_crop(batch, top, left, height, width, size, interpolation="bilinear", antialias=True):
    """F.resized_crop per sample: the crop (top, left, height, width) of each, resized to ``size``."""
    def build(plan):
        plan.crop(_per_sample(top), _per_sample(left), 1, 1)
        plan.set_given(CROP_HEIGHT, _per_sample(height))
        plan.set_given(CROP_WIDTH, _per_sample(width))
        plan.max_crop = (_largest(_per_sample(height)), _largest(_per_sample(width)))
        plan.resize(size_pair(size), interpolation_kind(interpolation), antialias)
    return _run("resized_crop", batch, build)


def pad(batch, padding, fill=0, padding_mode="constant"):
    """F.pad: ``padding`` as torchvision reads it (one, two or four widths: left, top, right, bottom)."""
    check_padding_mode(padding_mode)
    left, right, top, bottom = pad_widths(padding)
    return _run("pad", batch, lambda plan: plan.pad(left, top, right, bottom, fill, padding_mode))


def horizontal_flip(batch, flip=True):
    """F.horizontal_flip of the samples whose ``flip`` is true (every sample by default)."""
    return _run("horizontal_flip", batch, lambda plan: plan.flip(None, True, given=_flags(flip)))


def vertical_flip(batch, flip=True):
    return _run("vertical_flip", batch, lambda plan: plan.flip(None, False, given=_flags(flip)))


def _flags(flags):
    return float(flags) if isinstance(flags, (bool, int)) else torch.as_tensor(flags).to(torch.float32)


def rotate(batch, angle, interpolation="nearest", expand=False, center=None, fill=None):
    """F.rotate per sample (``angle`` in degrees, counter-clockwise), expand=False."""
    if expand:
        raise ValueError("fastcnn.transforms.functional.rotate: expand=True changes the size per sample")
    return _run("rotate", batch, lambda plan: plan.affine(
        None, angle_sign=-1, degrees=None, translate=None, scale=None, shear=None,
        interpolation=interpolation_kind(interpolation, resize=False), fill=fill, center=center, given={ANGLE: _per_sample(angle)}))


def affine(batch, angle, translate, scale, shear, interpolation="nearest", fill=None, center=None):
    """F.affine per sample: ``translate`` and ``shear`` pairs ([N, 2] per sample, or two numbers)."""
    translate = _per_sample(translate)
    shear = _per_sample(shear if not isinstance(shear, numbers.Number) else (shear, 0.0))
    given = {ANGLE: _per_sample(angle), SCALE: _per_sample(scale)}
    for fields, value in (((TRANSLATE_X, TRANSLATE_Y), translate), ((SHEAR_X, SHEAR_Y), shear)):
        for k, field in enumerate(fields):
            given[field] = value[..., k] if value.dim() == 2 else float(value[k])
    return _run("affine", batch, lambda plan: plan.affine(
        None, angle_sign=1, degrees=None, translate=None, scale=None, shear=None,
        interpolation=interpolation_kind(interpolation, resize=False), fill=fill, center=center, given=given))


# ----------------------------------------------------------------------------- colour
def _jitter(name, batch, slot, factor):
    check_batch(f"fastcnn.transforms.functional.{name}", batch)
    check_colour_channels(f"fastcnn.transforms.functional.{name}", batch.shape[1])
    ranges = [None] * 4
    ranges[slot - BRIGHTNESS] = (0.0, 0.0)
    return _run(name, batch, lambda plan: plan.jitter(None, ranges, given={slot: _per_sample(factor)}))


def adjust_brightness(batch, brightness_factor):
    return _jitter("adjust_brightness", batch, BRIGHTNESS, brightness_factor)


def adjust_contrast(batch, contrast_factor):
    return _jitter("adjust_contrast", batch, CONTRAST, contrast_factor)


def adjust_saturation(batch, saturation_factor):
    return _jitter("adjust_saturation", batch, SATURATION, saturation_factor)


def adjust_hue(batch, hue_factor):
    return _jitter("adjust_hue", batch, HUE, hue_factor)


def color_jitter(batch, fn_idx, brightness_factor=None, contrast_factor=None, saturation_factor=None,
                 hue_factor=None):
    """ColorJitter with given parameters: ``fn_idx`` [N, 4] (or 4 ints) the order of the ops,
    each factor per sample or None (that op skipped)."""
    check_colour_channels("fastcnn.transforms.functional.color_jitter", batch.shape[1])
    order = torch.as_tensor(fn_idx, dtype=torch.int64)
    code = (order << (2 * torch.arange(4))).sum(-1)
    factors = (brightness_factor, contrast_factor, saturation_factor, hue_factor)
    given = {JITTER_ORDER: code.to(torch.float32) if code.dim() else float(code)}
    given.update({BRIGHTNESS + k: _per_sample(value) for k, value in enumerate(factors) if value is not None})
    ranges = [None if value is None else (0.0, 0.0) for value in factors]
    return _run("color_jitter", batch, lambda plan: plan.jitter(None, ranges, given=given))


def rgb_to_grayscale(batch, num_output_channels=3):
    """F.rgb_to_grayscale keeping the channel count (num_output_channels = C)."""
    if num_output_channels != batch.shape[1]:
        raise ValueError(f"fastcnn.transforms.functional.rgb_to_grayscale keeps the channel count "
                         f"({batch.shape[1]}), got num_output_channels={num_output_channels}")
    return _run("rgb_to_grayscale", batch, lambda plan: plan.grayscale(None, given=1.0))


def gaussian_noise(batch, mean=0.0, sigma=0.1, clip=True, generator=None):
    if sigma < 0:
        raise ValueError(f"sigma shouldn't be negative. Got {sigma}")
    return _run("gaussian_noise", batch, lambda plan: plan.noise(mean, sigma, clip), generator)


def to_dtype(batch, dtype=torch.float32, scale=False):
    return _run("to_dtype", batch, lambda plan: plan.to_dtype(dtype, scale))


def normalize(batch, mean, std):
    if not all(std):
        raise ValueError("std evaluated to zero, leading to division by zero.")
    return _run("normalize", batch, lambda plan: plan.normalize(mean, std))


def erase(batch, i, j, h, w, v):
    """F.erase per sample: the box (i, j, h, w) set to ``v`` (a number, one per channel, or
    'random' for standard normal values); h = 0 leaves a sample as it is."""
    given = {ERASE_TOP: _per_sample(i), ERASE_LEFT: _per_sample(j), ERASE_HEIGHT: _per_sample(h),
             ERASE_WIDTH: _per_sample(w)}
    return _run("erase", batch, lambda plan: plan.erase(None, 1.0, (0.0, 0.0), (1.0, 1.0), v, given=given))
