"""augment's benchmark cases: a training input pipeline on a batch of uint8 images, fused, beside
the same pipeline applied sample by sample (each sample its own random parameters) in PyTorch
eager, under torch.compile, with torchvision.transforms.v2 and with Kornia where installed.

ImageNet: RandomResizedCrop 224, horizontal flip, ColorJitter(0.4, 0.4, 0.4), ToDtype,
Normalize, bf16 channels_last out (two launches: contrast's mean grey level first). CIFAR: pad-4
random crop 32, flip, ToDtype, Normalize, bf16 channels_last (one launch). Rotated:
RandomResizedCrop 224, RandomRotation(15), flip, ToDtype, Normalize: one launch whose rotation
gathers each of its taps from the resize, timed also as two launches (``fastcnn_two_launches``:
the resize, then the rest), which the fused pass must beat to be worth its extra arithmetic.
"""
import math

import torch
import torch.nn.functional as torch_f

from ..benchmarking import BenchmarkCase
from ..ops.augment import bytes_moved
from ._static import empty

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# (name, batch, input height, width, output size): decoded batches as a loader hands them over.
SUITES = {"imagenet": lambda: [("imagenet", 256, 320, 320, 224)], "cifar": lambda: [("cifar", 512, 32, 32, 32)],
          "rotated": lambda: [("rotated", 256, 320, 320, 224)]}
DEGREES = 15.0  # the rotated pipeline's RandomRotation
PROFILE_OPS = ("augment",)


def fastcnn_pipeline(name, size, two_launches=False):
    """The suite's fastcnn.transforms chain; ``two_launches``: the rotated one's resize as a
    Compose of its own, then the rest."""
    from .. import transforms as T

    if name == "imagenet":
        chain = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4)]
    elif name == "rotated":
        chain = [T.RandomResizedCrop(size), T.RandomRotation(DEGREES, interpolation="bilinear"),
                 T.RandomHorizontalFlip()]
    else:
        chain = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    chain += [T.ToDtype(torch.bfloat16, scale=True), T.Normalize(MEAN, STD)]
    if two_launches:
        first, rest = T.Compose(chain[:1]), T.Compose(chain[1:], memory_format=torch.channels_last)
        return lambda batch: rest(first(batch))
    return T.Compose(chain, memory_format=torch.channels_last)


def _rotate(image, degrees):
    """torchvision's rotate (bilinear, zeros outside) of one [C, H, W] float image by a random
    angle in [-degrees, degrees]: the inverse rotation as an affine grid."""
    angle = math.radians(float(torch.empty(1).uniform_(-degrees, degrees)))
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=image.device)
    theta[0, 1] *= image.shape[-2] / image.shape[-1]  # the grid's normalised units differ per axis
    theta[1, 0] *= image.shape[-1] / image.shape[-2]
    grid = torch_f.affine_grid(theta[None], [1, *image.shape], align_corners=False)
    return torch_f.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _torch_sample(image, name, size):
    """One sample the way a PyTorch user augments on the device without a batch kernel: the
    parameters drawn on the host as torchvision draws them, then torch ops."""
    height, width = image.shape[-2:]
    if name in ("imagenet", "rotated"):
        area = height * width
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(0.08, 1.0))
            ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3))))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                break
        else:
            h, w = height, width
        top, left = int(torch.randint(0, height - h + 1, ())), int(torch.randint(0, width - w + 1, ()))
        x = torch_f.interpolate(image[None, :, top:top + h, left:left + w].float(), size=(size, size),
                                mode="bilinear", antialias=True, align_corners=False)[0] / 255
        if name == "rotated":
            x = _rotate(x, DEGREES)
        else:
            factors = torch.empty(3).uniform_(0.6, 1.4).tolist()
            x = (x * factors[0]).clamp(0, 1)
            gray = (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2])
            x = (factors[1] * x + (1 - factors[1]) * gray.mean()).clamp(0, 1)
            x = (factors[2] * x + (1 - factors[2]) * gray[None]).clamp(0, 1)
    else:
        padded = torch_f.pad(image[None].float(), (4, 4, 4, 4))[0]
        top, left = int(torch.randint(0, 9, ())), int(torch.randint(0, 9, ()))
        x = padded[:, top:top + size, left:left + size] / 255
    if float(torch.rand(())) < 0.5:
        x = x.flip(-1)
    mean = torch.tensor(MEAN, device=x.device)[:, None, None]
    std = torch.tensor(STD, device=x.device)[:, None, None]
    return ((x - mean) / std).to(torch.bfloat16)


def _per_sample(function):
    def run(batch):
        return torch.stack([function(image) for image in batch]).contiguous(memory_format=torch.channels_last)
    return run


def _torchvision_pipeline(name, size):
    try:
        import torchvision.transforms.v2 as tv
    except Exception:  # not installed, or built for another torch
        return None
    if name == "imagenet":
        chain = [tv.RandomResizedCrop(size), tv.RandomHorizontalFlip(), tv.ColorJitter(0.4, 0.4, 0.4)]
    elif name == "rotated":
        chain = [tv.RandomResizedCrop(size), tv.RandomRotation(DEGREES, tv.InterpolationMode.BILINEAR),
                 tv.RandomHorizontalFlip()]
    else:
        chain = [tv.RandomCrop(size, padding=4), tv.RandomHorizontalFlip()]
    return tv.Compose(chain + [tv.ToDtype(torch.bfloat16, scale=True), tv.Normalize(MEAN, STD)])


def _kornia_pipeline(name, size):
    try:
        import kornia.augmentation as K
    except Exception:
        return None
    if name == "imagenet":
        chain = [K.RandomResizedCrop((size, size)), K.RandomHorizontalFlip(), K.ColorJitter(0.4, 0.4, 0.4, p=1.0)]
    elif name == "rotated":
        chain = [K.RandomResizedCrop((size, size)), K.RandomRotation(DEGREES, p=1.0), K.RandomHorizontalFlip()]
    else:
        chain = [K.RandomCrop((size, size), padding=4), K.RandomHorizontalFlip()]
    pipeline = K.AugmentationSequential(*chain, K.Normalize(torch.tensor(MEAN), torch.tensor(STD)))
    return lambda batch: pipeline(batch.float() / 255).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def _case(name, batch, height, width, size, smoke):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)  # a decoder's [N, H, W, C]
        ours = fastcnn_pipeline(name, size)
        eager = _per_sample(lambda image: _torch_sample(image, name, size))
        compiled_sample = torch.compile(lambda image: _torch_sample(image, name, size), dynamic=True)
        callables = {"fastcnn": lambda: ours(images), "eager": lambda: eager(images),
                     "torch_compile": lambda: _per_sample(compiled_sample)(images)}
        if name == "rotated":
            split = fastcnn_pipeline(name, size, two_launches=True)
            callables["fastcnn_two_launches"] = lambda: split(images)
        torchvision = _torchvision_pipeline(name, size)
        if torchvision is not None and not smoke:
            callables["torchvision"] = lambda: _per_sample(torchvision)(images)
        kornia = _kornia_pipeline(name, size)
        if kornia is not None and not smoke:
            callables["kornia"] = lambda: kornia(images)
        return callables

    # The least bytes: the output written once (bf16), the crop read once (RandomResizedCrop's
    # mean area, (0.08 + 1)/2 of the image; the whole image for the padded crop), twice with the
    # contrast jitter's statistics pass.
    in_pixels = height * width * (0.54 if name != "cifar" else 1.0)
    work = {"bytes": int(bytes_moved(batch, 3, in_pixels, size * size, 1, 2, contrast=name == "imagenet"))}
    return BenchmarkCase("augment", f"{name} {height}x{width}->{size}/n{batch}", "bf16", "channels_last", work, build,
                         smoke_view=_shape)


def _shape(out):
    """What two pipelines with their own random draws share: the batch's shape (and dtype)."""
    return torch.tensor([*out.shape, out.element_size()], dtype=torch.float64)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The ImageNet and CIFAR pipelines (uint8 in, bf16 channels_last out, whatever the dtypes and
    layouts asked for: a pipeline's input is a loader's)."""
    if smoke:
        return [_case("imagenet", 2, 11, 13, 7, True), _case("cifar", 2, 8, 8, 8, True),
                _case("rotated", 2, 11, 13, 7, True)]
    suites = [suite for suite in SUITES.values() for suite in suite()]
    return [_case(*suite, False) for suite in (suites[:1] if quick else suites)]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_augment_kernel", "_mix_kernel")


def _launch(kernel_module, name, batch, height, width, size, pipeline=None, in_dtype=torch.uint8, channels_last=True):
    """The launches of a pipeline's plans on CPU tensors of the case's shape."""
    augment = kernel_module("augment")
    pipeline = pipeline or fastcnn_pipeline(name, size)
    plans, _ = pipeline.plans(3, height, width, in_dtype)
    x = empty((batch, 3, height, width), in_dtype, channels_last)
    for plan, _ in plans:
        built = plan.pipeline(batch, torch.device("cpu"), channels_last)
        config, record = built.tensors(torch.device("cpu"))
        out = empty((batch, 3, *built.size), built.dtype, channels_last)
        records = torch.empty((batch, record.shape[1]), dtype=torch.float32)
        partial = torch.empty(batch * augment.tiles_of(*built.size, built.options["WINDOW_H"]), dtype=torch.float64)
        options = {key: built.options[key] for key in built.options if key != "CHANNELS_LAST"}
        augment.augment(x, out, record.expand(batch, -1), records, config, 2**40 + 1,
                        dict(options, WRITE_RECORD=True), partial=partial)
        x = out


def _mixup(kernel_module, cutmix):
    """MixUp/CutMix of the ImageNet pipeline's output (batch 64, bf16 channels_last, 1000 classes)."""
    x, out = (empty((64, 3, 224, 224), torch.bfloat16, True) for _ in range(2))
    labels, targets = torch.empty(64, dtype=torch.int64), torch.empty((64, 1000))
    kernel_module("augment").mix(x, out, labels, targets, 0.3, (40, 150, 60, 170), cutmix=cutmix, channels_last=True)


def static_launches(kernel_module, options):
    """The pipelines on their suites' shapes (batch 64; the rotated one fused): uint8
    channels_last in, bf16 channels_last out; MixUp and CutMix of the ImageNet batch."""
    return [(f"augment {name} {height}x{width}->{size} uint8->bf16 channels_last",
             lambda name=name, height=height, width=width, size=size: _launch(
                 kernel_module, name, 64, height, width, size))
            for name, _, height, width, size in (suite for suites in SUITES.values() for suite in suites())] + [
        (f"{'cutmix' if cutmix else 'mixup'} 224x224 bf16 channels_last", lambda cutmix=cutmix: _mixup(kernel_module, cutmix))
        for cutmix in (False, True)]


def compile_variants(kernel_module):
    """Every stage the pipelines above leave out: rotation and affine (nearest, bilinear), a
    reflect pad, hue, grayscale, noise, erasing with random values, float input, uint8 output;
    bicubic resizes by windows (antialiased, float input: 3xTF32 source) and by gathered taps
    (6x down); a flip first, a rotation and RandomResizedCrop in one pass, and RandomResizedCrop
    then a rotation (the resize's taps gathered per tap of the map) with flips before a crop and
    after erasing; MixUp and CutMix."""
    from .. import transforms as T

    def geometry_and_colour():
        pipeline = T.Compose([T.RandomCrop(28, padding=2, padding_mode="reflect"), T.RandomRotation(10),
                              T.ColorJitter(0.2, None, 0.3, 0.1), T.RandomGrayscale(), T.GaussianNoise(),
                              T.RandomErasing(value="random")])
        _launch(kernel_module, "variant", 4, 32, 32, 28, pipeline, torch.float32, False)
        affine = T.Compose([T.RandomAffine(10, (0.1, 0.1), (0.9, 1.1), 5, interpolation="bilinear"),
                            T.ColorJitter(contrast=0.3)])
        _launch(kernel_module, "variant", 4, 32, 32, 32, affine, torch.uint8, True)
        bicubic = T.Compose([T.RandomResizedCrop(24, interpolation="bicubic"), T.RandomHorizontalFlip()])
        _launch(kernel_module, "variant", 4, 40, 40, 24, bicubic, torch.float32, True)
        gathered = T.Compose([T.Resize(8, interpolation="bicubic", antialias=False)])
        _launch(kernel_module, "variant", 4, 48, 48, 8, gathered, torch.uint8, False)
        rotated = T.Compose([T.RandomHorizontalFlip(), T.RandomRotation(15, interpolation="bilinear"),
                             T.RandomResizedCrop(224), T.ToDtype(torch.bfloat16, scale=True)])
        _launch(kernel_module, "variant", 4, 320, 320, 224, rotated, torch.uint8, True)
        resized_first = T.Compose([T.RandomResizedCrop(240), T.RandomRotation(15, interpolation="bilinear"),
                                   T.RandomHorizontalFlip(), T.CenterCrop(224), T.ToDtype(torch.bfloat16, scale=True),
                                   T.RandomErasing(), T.RandomVerticalFlip()])
        _launch(kernel_module, "variant", 4, 320, 320, 224, resized_first, torch.uint8, True)

    def mixing():
        augment = kernel_module("augment")
        x, out = torch.empty((8, 3, 32, 32)), torch.empty((8, 3, 32, 32))
        labels, targets = torch.empty(8, dtype=torch.int64), torch.empty((8, 10))
        augment.mix(x, out, labels, targets, 0.3, (0, 0, 0, 0), cutmix=False, channels_last=False)
        augment.mix(x, out, labels, targets, 0.3, (2, 9, 3, 17), cutmix=True, channels_last=False)

    return [("augment variants fp32 nchw", geometry_and_colour), ("augment mixup cutmix fp32", mixing)]
