"""Batch augmentation on the device: the operators behind ``fastcnn.transforms`` over
``kernels/augment.py``: the checks, the byte count, the operators (no autograd: an augmented
input is data) and their launches.

``fastcnn::augment`` runs one fused pipeline (``Pipeline``: the kernel's constexpr choices, the
static configuration and the per-sample record the random draws start from) on a batch
[N, C, H, W] (any strides: a channels-last batch, or an [N, H, W, C] one permuted), writing
[N, C, OH, OW] in the dtype and memory format asked for, and returns with it the per-sample
record of what was drawn. The random parameters are drawn in the kernel from Philox at a seed
taken from torch's default (CPU) generator: ``torch.manual_seed`` repeats a batch exactly and
nothing waits for the device. ``fastcnn::mix`` is MixUp/CutMix.
"""
import dataclasses
import math
from typing import List, Tuple

import torch
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass

__all__ = []

OP = "augment"
RECORD = 32
CONFIG = 72
SQUARE = 16  # kernels/augment.py's output squares for the windowed resize
LARGEST_WINDOW = 64


def _support(scale, antialias, bicubic):
    """Half the width of torch's resize filter at downscale ``scale``: antialiased, 1 (bilinear)
    or 2 (bicubic) times max(scale, 1); without antialiasing 1 or 2 pixels."""
    return (2.0 if bicubic else 1.0) * (max(scale, 1.0) if antialias else 1.0)


def resize_taps(largest_crop, size, antialias, bicubic):
    """Taps one output pixel of a resize reads along one axis, at most."""
    if not antialias:
        return 4 if bicubic else 2
    return math.ceil(2 * _support(largest_crop / size, antialias, bicubic)) + 1


def resize_shape(largest_crop, size, antialias, bicubic, windowed):
    """(TAPS_H, TAPS_W, WINDOW_H, WINDOW_W) of a resize of crops up to ``largest_crop`` (h, w)
    to ``size``: the taps one output pixel reads along each axis (the column taps a power of
    two, a tile), and the windows of its output squares, (0, 0) unless ``windowed`` and both fit."""
    taps = [resize_taps(crop, out, antialias, bicubic) for crop, out in zip(largest_crop, size)]
    windows = [resize_window(crop, out, antialias, bicubic) for crop, out in zip(largest_crop, size)]
    windows = windows if windowed and all(windows) else [0, 0]
    return taps[0], 1 << (taps[1] - 1).bit_length(), windows[0], windows[1]


def resize_window(largest_crop, size, antialias, bicubic=False):
    """The source window of one SQUARE-wide run of a bilinear or bicubic resize's outputs along
    one axis (a power of two, 16 to 64), or 0 when a run's taps can span more (a large
    downscale: the kernel then gathers each pixel's taps). A run of SQUARE outputs at scale
    s = crop / size reads from the first tap of its first output to the last of its last: at
    most s·(SQUARE - 1) + 2·support + 1 source pixels (one more for the rounding of the taps'
    bounds)."""
    scale = largest_crop / size
    span = math.ceil(scale * (SQUARE - 1) + 2 * _support(scale, antialias, bicubic) + 2)
    window = max(16, 1 << (span - 1).bit_length())
    return window if window <= LARGEST_WINDOW else 0


def _kernels():
    """kernels/augment.py, imported on the first launch (see ops/conv2d.py's ``_kernels``)."""
    from ..kernels import augment

    return augment


# ----------------------------------------------------------------------------- checks
def check_batch(op, batch):
    """A batch of images as fastcnn.transforms take it: a 4-d uint8 or floating tensor."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{op}: expected a batch tensor (N, C, H, W), got {type(batch).__name__}")
    if batch.dim() != 4:
        raise ValueError(f"{op}: expected a batch of images of shape (N, C, H, W), got shape {tuple(batch.shape)}; "
                         "an (N, H, W, C) batch is passed as batch.permute(0, 3, 1, 2)")
    if not (batch.dtype == torch.uint8 or batch.is_floating_point()):
        raise TypeError(f"{op}: expected a uint8 or floating batch, got {batch.dtype}")
    if batch.dtype == torch.float64:
        raise TypeError(f"{op}: float64 batches are not supported by the kernels; use float32, float16 or bfloat16")


def check_image_span(op, batch, size):
    """The kernel indexes within one image in int32 (each sample's base in int64): one image of
    the input (through its strides) and of the output must span fewer than 2**31 elements."""
    span = sum((extent - 1) * abs(stride) for extent, stride in zip(batch.shape[1:], batch.stride()[1:]))
    if span >= 2**31 or batch.shape[1] * size[0] * size[1] >= 2**31:
        raise ValueError(f"{op}: one image spans 2**31 elements or more (input {tuple(batch.shape[1:])}, output "
                         f"{tuple(size)}); the kernels index within an image in int32")


def check_kernels_run(batch):
    """The transforms have no PyTorch path: where no kernel can run on ``batch``'s device, say so."""
    if _backend.backend_for(batch.device) == _backend.FALLBACK:
        raise RuntimeError(f"fastcnn.transforms: the augmentation kernels cannot run on {batch.device.type} tensors "
                           "here (no CUDA device, and TRITON_INTERPRET=1 was not set before importing fastcnn); "
                           "use torchvision.transforms.v2 on this device")


def check_colour_channels(op, channels):
    """torchvision's colour ops take 1 or 3 channels."""
    if channels not in (1, 3):
        raise TypeError(f"{op}: Input image tensor permitted channel values are 1 or 3, but found {channels}")


# ----------------------------------------------------------------------------- cost
def bytes_moved(batch, channels, in_pixels, out_pixels, in_element, out_element, contrast=False):
    """The least a pipeline moves: each source pixel it samples read once (at most the crop; at
    most the whole input), the output written once; a contrast jitter reads its source twice."""
    reads = batch * channels * in_pixels * in_element
    return reads * (2 if contrast else 1) + batch * channels * out_pixels * out_element


@dataclasses.dataclass
class Pipeline:
    """One launch's worth of a transform chain: ``options`` (the kernel's constexpr choices, by
    name), ``config`` (CONFIG floats: the distributions and colour constants), ``record`` (the
    RECORD floats every sample starts from, or an [N, RECORD] tensor of given parameters),
    ``size`` (OH, OW), ``dtype`` of the output."""

    options: dict
    config: list
    record: object
    size: Tuple[int, int]
    dtype: torch.dtype
    _device_tensors: dict = dataclasses.field(default_factory=dict, repr=False)

    def tensors(self, device, cache=True):
        """(config, record) on ``device``, made once per device (no copy per batch); made anew
        when not ``cache`` (under FakeTensorMode, whose tensors must not outlive it)."""
        if device in self._device_tensors and cache:
            return self._device_tensors[device]
        config = torch.tensor(self.config, dtype=torch.float32, device=device)
        record = self.record
        if not isinstance(record, torch.Tensor):
            record = torch.tensor(record, dtype=torch.float32, device=device).reshape(1, RECORD)
        elif not cache:
            record = torch.empty_like(record)  # a fake tensor of the given parameters' shape
        if cache:
            self._device_tensors[device] = (config, record)
        return config, record


OPTION_NAMES = ("DRAW", "CROP", "OUT_CROP", "FLIPS", "AFFINE", "RESAMPLE", "INTERPOLATION", "ANTIALIAS", "BORDER",
                "TAPS_H", "TAPS_W", "INPUT_INTEGER", "QUANTISE", "JITTER", "GRAY", "NOISE_CLIP", "TO_FLOAT",
                "ERASE", "OUTPUT_SCALE", "WINDOW_H", "WINDOW_W", "SOURCE_FLIPS", "MID_CROP",
                "MID_INTERPOLATION", "QUANTISE_MID", "COLOUR_ORDER", "INTEGER_STEPS", "JITTER_AT")


def draw_seed(generator=None):
    """A Philox key from torch's CPU generator (the default one unless given): no device work,
    no sync, and ``torch.manual_seed`` repeats it. Above 2**32, so that Triton always passes it
    as an int64 (one compiled kernel whatever its value)."""
    return int(torch.randint(2**32, 2**62, (1,), generator=generator).item())


# ----------------------------------------------------------------------------- operators
def _output(batch, size, dtype, channels_last):
    shape = (batch.shape[0], batch.shape[1], *size)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=batch.device, memory_format=memory_format)


@torch.library.custom_op("fastcnn::augment", mutates_args=())
def _augment_op(batch: Tensor, record: Tensor, config: Tensor, seed: int, options: List[int], size: List[int],
                dtype: torch.dtype, channels_last: bool) -> Tuple[Tensor, Tensor]:
    """The pipeline ``options`` (values in OPTION_NAMES' order) of ``batch``: (output, records)."""
    out = _output(batch, size, dtype, channels_last)
    records = torch.empty((batch.shape[0], RECORD), dtype=torch.float32, device=batch.device)
    if out.numel():
        kernels = _kernels()
        constants = dict(zip(OPTION_NAMES, options), WRITE_RECORD=True)
        partial = None
        if constants["JITTER"] & 2:
            partial = torch.empty(batch.shape[0] * kernels.tiles_of(*size, constants["WINDOW_H"]), dtype=torch.float64,
                                  device=batch.device)
        with torch.profiler.record_function("fastcnn::augment"):
            _backend.record_launch(OP, kernels.augment(batch, out, record, records, config, seed, constants,
                                                       partial=partial))
    return out, records


@_augment_op.register_fake
def _(batch, record, config, seed, options, size, dtype, channels_last):
    return _output(batch, size, dtype, channels_last), batch.new_empty((batch.shape[0], RECORD), dtype=torch.float32)


@launches_of(_augment_op, "augmentation")
def _augment_launches(outputs, batch, record, config, seed, options, size, dtype, channels_last):
    """The main pass reads what it samples (at most the input) and writes the output; a
    contrast jitter's statistics pass reads it once more and writes one float per tile."""
    out, records = outputs
    if not out.numel():
        return []
    constants = dict(zip(OPTION_NAMES, options))
    main = one_pass("_augment_kernel", [batch], [out, records])
    if constants["JITTER"] & 2:
        return [one_pass("_augment_kernel (contrast statistics)", [batch], []), main]
    return [main]


def run(pipeline, batch, generator=None):
    """``pipeline`` on ``batch``: (output, per-sample records [N, RECORD])."""
    check_kernels_run(batch)
    fake = isinstance(batch, torch._subclasses.FakeTensor)  # fastcnn.estimate's dry run
    config, record = pipeline.tensors(batch.device, cache=not fake)
    check_image_span("fastcnn.transforms", batch, pipeline.size)
    if record.shape[0] not in (1, batch.shape[0]):
        raise ValueError(f"fastcnn.transforms: {record.shape[0]} per-sample parameters for a batch of {batch.shape[0]}")
    if record.shape[0] == 1:
        record = record.expand(batch.shape[0], RECORD)
    seed = draw_seed(generator) if pipeline.options["DRAW"] and not fake else 0
    channels_last = pipeline.options.get("CHANNELS_LAST", False)
    options = [int(pipeline.options[name]) for name in OPTION_NAMES]
    return _augment_op(batch, record, config, seed, options, list(pipeline.size), pipeline.dtype, channels_last)


# ----------------------------------------------------------------------------- MixUp / CutMix
def _mix_layout(batch):
    """The dense layout the mix kernel walks ``batch`` in: (tensor, channels_last); a batch in
    neither layout is copied to NCHW."""
    if batch.is_contiguous():
        return batch, False
    if batch.is_contiguous(memory_format=torch.channels_last):
        return batch, True
    return batch.contiguous(), False


@torch.library.custom_op("fastcnn::mix", mutates_args=())
def _mix_op(batch: Tensor, labels: Tensor, lam: float, box: List[int], num_classes: int,
            cutmix: bool) -> Tuple[Tensor, Tensor]:
    """(images laid out as the batch, float32 soft targets): each sample mixed with the one before
    it (torch.roll(·, 1, 0))."""
    dense, channels_last = _mix_layout(batch)
    out = torch.empty_like(dense)
    targets = torch.empty((batch.shape[0], num_classes), dtype=torch.float32, device=batch.device)
    if batch.shape[0]:
        with torch.profiler.record_function("fastcnn::mix"):
            _backend.record_launch(OP, _kernels().mix(dense, out, labels.contiguous(), targets, lam, box,
                                                      cutmix=cutmix, channels_last=channels_last))
    return out, targets


@_mix_op.register_fake
def _(batch, labels, lam, box, num_classes, cutmix):
    targets = batch.new_empty((batch.shape[0], num_classes), dtype=torch.float32)
    return torch.empty_like(_mix_layout(batch)[0]), targets


@launches_of(_mix_op, "augmentation")
def _mix_launches(outputs, batch, labels, lam, box, num_classes, cutmix):
    out, targets = outputs
    copy = [] if _mix_layout(batch)[0] is batch else [one_pass("aten::copy_ (contiguous)", [batch], [batch])]
    return copy + [one_pass("_mix_kernel", [batch, labels], [out, targets])] if batch.shape[0] else []


def mix(batch, labels, lam, box, num_classes, *, cutmix):
    check_kernels_run(batch)
    return _mix_op(batch, labels, float(lam), [int(v) for v in box], int(num_classes), bool(cutmix))
