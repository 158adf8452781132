"""``fastcnn.transforms``: torchvision.transforms.v2's image transforms for a whole batch on the
device, each sample with its own random parameters, and ``Compose`` running a chain as one
kernel launch (two with a contrast jitter, whose mean grey level needs a pass first).

A batch is [N, C, H, W], uint8 (0..255) or floating (0..1), in any memory format; a decoder's
[N, H, W, C] batch is passed as ``batch.permute(0, 3, 1, 2)`` (a channels-last view, no copy).
Each transform mirrors torchvision.transforms.v2's class of the same name and arguments; calling
one runs it alone. ``Compose(transforms, memory_format=...)`` fuses the chain: the geometry (a
pad, a crop, one resample: resize or an affine map, a crop of its output, flips) computes each
output pixel's source position per sample and samples once; then the colour maths (ColorJitter's
ops in the sample's own order, grayscale, noise, ToDtype, Normalize) and erasing run on that
pixel, and the batch is written once, in the dtype the chain ends with and the memory format
asked for. A transform the pass cannot take at its place in the chain (a second resample, a crop
after a flip, ...) starts a second launch; the result is the same as applying the transforms in
turn, except that consecutive geometric transforms sample once (fused) where torchvision
resamples at each.

Randomness: the parameters are drawn in the kernel (Philox, at a seed from torch's default CPU
generator or ``generator=``), so ``torch.manual_seed`` repeats a batch and nothing syncs.
``forward(batch, return_params=True)`` also returns what each random transform drew, as a list
with one dict of [N] tensors per transform (``None`` for the deterministic ones), and
``fastcnn.transforms.functional`` takes such parameters explicitly.

``MixUp`` and ``CutMix`` take (images, labels) after the pipeline, as torchvision's do, and give
float soft targets that ``fastcnn.cross_entropy`` takes directly.
"""
import math
import numbers

import torch

from . import functional
from ._plan import Plan, check_padding_mode, interpolation_kind, pad_widths, size_pair
from ..ops import augment as op
from ..ops.augment import check_batch

__all__ = ["CenterCrop", "ColorJitter", "Compose", "CutMix", "GaussianNoise", "MixUp", "Normalize", "Pad",
           "RandomAffine", "RandomCrop", "RandomErasing", "RandomGrayscale", "RandomHorizontalFlip",
           "RandomResizedCrop", "RandomRotation", "RandomVerticalFlip", "Resize", "ToDtype", "functional"]


def _range(value, name, center=1.0, bound=(0.0, math.inf)):
    """torchvision's ColorJitter._check_input: a number v gives [center - v, center + v] (clipped
    at 0 for the factors), a pair is taken as is, within ``bound``; no jitter gives None."""
    if value is None:
        return None
    if isinstance(value, numbers.Number):
        if value < 0:
            raise ValueError(f"If {name} is a single number, it must be non negative.")
        value = [center - float(value), center + float(value)]
        if center == 1.0:
            value[0] = max(value[0], 0.0)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        value = [float(v) for v in value]
    else:
        raise TypeError(f"{name}={value} should be a single number or a sequence with length 2.")
    if not bound[0] <= value[0] <= value[1] <= bound[1]:
        raise ValueError(f"{name} values should be between {bound}, but got {value}.")
    return None if value[0] == value[1] == center else tuple(value)


class Transform(torch.nn.Module):
    """A fastcnn transform: called alone, it is a Compose of itself."""

    def forward(self, batch, return_params=False, generator=None):
        return Compose([self])(batch, return_params=return_params, generator=generator)

    def add_to(self, plan):
        """Add this transform to ``plan`` (a _plan.Plan); False when it cannot be in its launch."""
        raise NotImplementedError(type(self).__name__)


class Compose(torch.nn.Module):
    """torchvision's Compose of fastcnn transforms, fused into as few launches as the chain
    allows (one for the usual training pipelines). ``memory_format``: the output's
    (torch.preserve_format: the input's; torch.channels_last for a channels-last model)."""

    def __init__(self, transforms, memory_format=torch.preserve_format):
        super().__init__()
        if not isinstance(transforms, (list, tuple)):
            raise TypeError("Argument transforms should be a sequence of callables")
        for transform in transforms:
            if not isinstance(transform, Transform):
                raise TypeError(f"fastcnn.transforms.Compose takes fastcnn transforms, got {type(transform).__name__}")
        self.transforms = list(transforms)
        self.memory_format = memory_format
        self._plans = {}

    def plans(self, channels, height, width, dtype):
        """The launches of this chain for [*, channels, height, width] batches of ``dtype``:
        (plans, the plan index of each transform)."""
        key = (channels, height, width, dtype)
        if key not in self._plans:
            plans, where = [Plan(channels, height, width, dtype)], []
            for transform in self.transforms:
                if not transform.add_to(plans[-1]):
                    previous = plans[-1]
                    plans.append(Plan(channels, *previous.extent, previous.out_dtype))
                    if not transform.add_to(plans[-1]):
                        raise ValueError(f"fastcnn.transforms: {type(transform).__name__} cannot run on a "
                                         f"{previous.out_dtype} batch")
                where.append(len(plans) - 1)
            self._plans[key] = ([(plan, {}) for plan in plans], where)
        return self._plans[key]

    def forward(self, batch, return_params=False, generator=None):
        check_batch("fastcnn.transforms", batch)
        batch_size, channels, height, width = batch.shape
        plans, where = self.plans(channels, height, width, batch.dtype)
        if self.memory_format == torch.preserve_format:
            channels_last = batch.dim() == 4 and batch.stride(1) == 1 and channels > 1
        else:
            channels_last = self.memory_format == torch.channels_last
        records = []
        for plan, pipelines in plans:
            key = (batch.device, channels_last, batch_size if plan.given else None)
            if key not in pipelines:
                pipelines[key] = plan.pipeline(batch_size, batch.device, channels_last)
            batch, record = op.run(pipelines[key], batch, generator)
            records.append(record)
        if not return_params:
            return batch
        params = [None] * len(self.transforms)
        for (plan, _), record in zip(plans, records):
            for transform, fields in plan.fields:
                params[self.transforms.index(transform)] = _decode(record, fields)
        return batch, params


def _decode(record, fields):
    """A transform's drawn parameters from the launch's record: [N] tensors (pairs as [N, 2]);
    flips and grayscale as bools, ColorJitter's order as [N, 4] (the op indices, torchvision's
    ``fn_idx``)."""
    params = {}
    for name, field in fields.items():
        if isinstance(field, tuple):
            params[name] = record[:, list(field)]
        elif name in ("flip", "grayscale"):
            params[name] = record[:, field] != 0
        elif name == "order":
            code = record[:, field].to(torch.int64)
            params["fn_idx"] = torch.stack([(code >> (2 * k)) & 3 for k in range(4)], dim=1)
        elif name in ("top", "left", "height", "width"):
            params[name] = record[:, field].to(torch.int64)
        else:
            params[name] = record[:, field]
    return params


# ----------------------------------------------------------------------------- geometry
class Pad(Transform):
    def __init__(self, padding, fill=0, padding_mode="constant"):
        super().__init__()
        check_padding_mode(padding_mode)
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode
        self._widths = pad_widths(padding)

    def add_to(self, plan):
        left, right, top, bottom = self._widths
        return plan.pad(left, top, right, bottom, self.fill, self.padding_mode)


class RandomCrop(Transform):
    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        super().__init__()
        check_padding_mode(padding_mode)
        self.size = size_pair(size)
        self.padding, self.pad_if_needed, self.fill, self.padding_mode = padding, pad_if_needed, fill, padding_mode
        self._widths = pad_widths(padding) if padding else (0, 0, 0, 0)

    def add_to(self, plan):
        left, right, top, bottom = self._widths
        height, width = plan.extent
        padded_h, padded_w = height + top + bottom, width + left + right
        crop_h, crop_w = self.size
        if self.pad_if_needed:
            if padded_h < crop_h:
                diff = crop_h - padded_h
                top, bottom, padded_h = top + diff, bottom + diff, padded_h + 2 * diff
            if padded_w < crop_w:
                diff = crop_w - padded_w
                left, right, padded_w = left + diff, right + diff, padded_w + 2 * diff
        if padded_h < crop_h or padded_w < crop_w:
            raise ValueError(f"Required crop size {(crop_h, crop_w)} is larger than input image size "
                             f"{(padded_h, padded_w)}.")
        if any((left, right, top, bottom)) and not plan.pad(left, top, right, bottom, self.fill, self.padding_mode):
            return False
        return plan.random_crop(self, crop_h, crop_w)


class CenterCrop(Transform):
    def __init__(self, size):
        super().__init__()
        self.size = size_pair(size)

    def add_to(self, plan):
        return plan.center_crop(*self.size)


class Resize(Transform):
    def __init__(self, size, interpolation="bilinear", max_size=None, antialias=True):
        super().__init__()
        self.size, self.interpolation, self.max_size, self.antialias = size, interpolation, max_size, antialias
        self._kind = interpolation_kind(interpolation)

    def add_to(self, plan):
        return plan.resize_to(self.size, self.max_size, self._kind, self.antialias)


class RandomResizedCrop(Transform):
    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation="bilinear",
                 antialias=True):
        super().__init__()
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError("Scale and ratio should be of kind (min, max)")
        self.size = size_pair(size)
        self.scale, self.ratio, self.interpolation, self.antialias = scale, ratio, interpolation, antialias
        self._kind = interpolation_kind(interpolation)

    def add_to(self, plan):
        return plan.random_resized_crop(self, self.size, self.scale, self.ratio, self._kind, self.antialias)


class RandomHorizontalFlip(Transform):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError("`p` should be a floating point value in the interval [0.0, 1.0].")
        self.p = p

    def add_to(self, plan):
        return plan.flip(self, True, self.p)


class RandomVerticalFlip(RandomHorizontalFlip):
    def add_to(self, plan):
        return plan.flip(self, False, self.p)


def _degrees(degrees):
    if isinstance(degrees, numbers.Number):
        if degrees < 0:
            raise ValueError("If degrees is a single number, it must be positive.")
        return -float(degrees), float(degrees)
    if len(degrees) != 2:
        raise ValueError("If degrees is a sequence, it must be of len 2.")
    return float(degrees[0]), float(degrees[1])


class RandomRotation(Transform):
    def __init__(self, degrees, interpolation="nearest", expand=False, center=None, fill=0):
        super().__init__()
        if expand:
            raise ValueError("fastcnn.transforms.RandomRotation: expand=True changes the size per sample; "
                             "a batch keeps one size")
        self.degrees = _degrees(degrees)
        self.interpolation, self.expand, self.center, self.fill = interpolation, expand, center, fill
        self._kind = interpolation_kind(interpolation, resize=False)

    def add_to(self, plan):
        return plan.affine(self, angle_sign=-1, degrees=self.degrees, translate=None, scale=None, shear=None,
                           interpolation=self._kind, fill=self.fill, center=self.center)


class RandomAffine(Transform):
    def __init__(self, degrees, translate=None, scale=None, shear=None, interpolation="nearest", fill=0,
                 center=None):
        super().__init__()
        self.degrees = _degrees(degrees)
        if translate is not None and not all(0.0 <= t <= 1.0 for t in translate):
            raise ValueError("translation values should be between 0 and 1")
        if scale is not None and (len(scale) != 2 or any(s <= 0 for s in scale)):
            raise ValueError("scale values should be positive")
        if shear is not None:
            shear = ([-float(shear), float(shear)] if isinstance(shear, numbers.Number)
                     else [float(s) for s in shear] * (2 if len(shear) == 1 else 1))
            if len(shear) == 2 and shear[0] == shear[1] == 0:
                shear = None
        self.translate, self.scale, self.shear, self.fill, self.center = translate, scale, shear, fill, center
        self.interpolation = interpolation
        self._kind = interpolation_kind(interpolation, resize=False)

    def add_to(self, plan):
        return plan.affine(self, angle_sign=1, degrees=self.degrees, translate=self.translate, scale=self.scale,
                           shear=self.shear, interpolation=self._kind, fill=self.fill, center=self.center)


# ----------------------------------------------------------------------------- colour
class ColorJitter(Transform):
    def __init__(self, brightness=None, contrast=None, saturation=None, hue=None):
        super().__init__()
        self.brightness = _range(brightness, "brightness")
        self.contrast = _range(contrast, "contrast")
        self.saturation = _range(saturation, "saturation")
        self.hue = _range(hue, "hue", center=0.0, bound=(-0.5, 0.5))

    def add_to(self, plan):
        return plan.jitter(self, (self.brightness, self.contrast, self.saturation, self.hue))


class RandomGrayscale(Transform):
    def __init__(self, p=0.1):
        super().__init__()
        self.p = p

    def add_to(self, plan):
        return plan.grayscale(self, self.p)


class GaussianNoise(Transform):
    def __init__(self, mean=0.0, sigma=0.1, clip=True):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma shouldn't be negative. Got {sigma}")
        self.mean, self.sigma, self.clip = mean, sigma, clip

    def add_to(self, plan):
        return plan.noise(self.mean, self.sigma, self.clip)


class ToDtype(Transform):
    def __init__(self, dtype, scale=False):
        super().__init__()
        self.dtype, self.scale = dtype, scale

    def add_to(self, plan):
        return plan.to_dtype(self.dtype, self.scale)


class Normalize(Transform):
    def __init__(self, mean, std, inplace=False):
        super().__init__()
        self.mean, self.std, self.inplace = list(mean), list(std), inplace
        if not all(self.std):
            raise ValueError("std evaluated to zero, leading to division by zero.")

    def add_to(self, plan):
        return plan.normalize(self.mean, self.std)


class RandomErasing(Transform):
    def __init__(self, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, inplace=False):
        super().__init__()
        if not isinstance(value, (numbers.Number, str, tuple, list)):
            raise TypeError("Argument value should be either a number or str or a sequence")
        if isinstance(value, str) and value != "random":
            raise ValueError("If value is str, it should be 'random'")
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError("Scale and ratio should be of kind (min, max)")
        if scale[0] < 0 or scale[1] > 1:
            raise ValueError("Scale should be between 0 and 1")
        if p < 0 or p > 1:
            raise ValueError("Random erasing probability should be between 0 and 1")
        self.p, self.scale, self.ratio, self.value, self.inplace = p, scale, ratio, value, inplace

    def add_to(self, plan):
        return plan.erase(self, self.p, self.scale, self.ratio, self.value)


# ----------------------------------------------------------------------------- batch mixing
class _MixUpCutMix(torch.nn.Module):
    def __init__(self, *, alpha=1.0, num_classes=None):
        super().__init__()
        self.alpha = float(alpha)
        if self.alpha <= 0:
            raise ValueError("alpha must be positive")
        self.num_classes = num_classes
        self._dist = torch.distributions.Beta(torch.tensor([self.alpha]), torch.tensor([self.alpha]))

    def _check(self, images, labels):
        check_batch(f"fastcnn.transforms.{type(self).__name__}", images)
        if not images.is_floating_point():
            raise TypeError(f"fastcnn.transforms.{type(self).__name__}: expected a floating batch (after ToDtype), "
                            f"got {images.dtype}")
        if labels.dim() != 1 or labels.dtype != torch.int64:
            raise ValueError(f"labels should be an int64 tensor of shape (batch_size,) but got shape "
                             f"{tuple(labels.shape)} and dtype {labels.dtype}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"The batch size of the image ({images.shape[0]}) and of the labels "
                             f"({labels.shape[0]}) must match")
        if self.num_classes is None:
            raise ValueError("fastcnn.transforms: num_classes is needed to make one-hot targets")

    def _lam(self, images):
        """lam ~ Beta(alpha, alpha) from torch's generator, as torchvision draws it; on fake
        tensors (fastcnn.estimate's dry run, where no value exists) a fixed 0.5."""
        if isinstance(images, torch._subclasses.FakeTensor):
            return 0.5
        return float(self._dist.sample(()))


class MixUp(_MixUpCutMix):
    """torchvision.transforms.v2.MixUp: lam ~ Beta(alpha, alpha) (one per batch, from torch's
    generator as torchvision draws it), images lam·x + (1 - lam)·roll(x, 1, 0) and the one-hot
    labels likewise, in one launch. Returns (images, float32 soft targets [N, num_classes])."""

    def forward(self, images, labels):
        self._check(images, labels)
        return op.mix(images, labels, self._lam(images), (0, 0, 0, 0), self.num_classes, cutmix=False)


class CutMix(_MixUpCutMix):
    """torchvision.transforms.v2.CutMix: a box of area (1 - lam)·H·W (clipped at the border)
    pasted from roll(x, 1, 0), the labels mixed by the box's actual area."""

    def forward(self, images, labels):
        self._check(images, labels)
        lam = self._lam(images)
        height, width = images.shape[-2:]
        fake = isinstance(images, torch._subclasses.FakeTensor)
        r_x = torch.randint(width, size=(1,), device="cpu") if not fake else width // 2
        r_y = torch.randint(height, size=(1,), device="cpu") if not fake else height // 2
        r = 0.5 * math.sqrt(1.0 - lam)
        r_w_half, r_h_half = int(r * width), int(r * height)
        x1, y1 = max(int(r_x) - r_w_half, 0), max(int(r_y) - r_h_half, 0)
        x2, y2 = min(int(r_x) + r_w_half, width), min(int(r_y) + r_h_half, height)
        lam_adjusted = float(1.0 - (x2 - x1) * (y2 - y1) / (width * height))
        return op.mix(images, labels, lam_adjusted, (y1, y2, x1, x2), self.num_classes, cutmix=True)
