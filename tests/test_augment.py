"""fastcnn.transforms: each transform against a float64 reference written here from
torchvision.transforms.v2's formulas (PyTorch's pad, interpolate and grid_sample for the
geometry; torchvision's colour maths, with its uint8 truncations), per sample with the
parameters each drew; the draws' statistics; Compose as one launch equal to its transforms one
by one; MixUp/CutMix. Where torchvision imports, the last tests also compare with it directly.

Bounds (stated in docs/reference.md): crops, pads, flips, nearest sampling, brightness, hue,
grayscale, normalize, erasing and dtype conversion are exact (a nearest sample may differ where
its source coordinate is within fp32 rounding of a tie); bilinear resize within 2e-6, bicubic within 5e-6, rotation and
affine within 1e-5 (float) or 1 level (uint8, one rounding apart); contrast and saturation within 1e-6
or 1 level (a floor on either side of an fp32 rounding).
"""
import math

import pytest
import torch
import torch.nn.functional as torch_f

import fastcnn
from fastcnn import transforms as T
from fastcnn.testing import DEVICE, ON_GPU, count_launches, record_aten_ops
from fastcnn.ops.augment import SQUARE, resize_window
from fastcnn.transforms import functional as F
from fastcnn.transforms._plan import BICUBIC, BILINEAR, Plan

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# A bilinear affine sample is its fp32 source coordinate's rounding (a few ulps of a coordinate
# up to ~30 pixels from the centre, ~1e-6 pixel) times the image's slope (up to 1 per pixel).
AFFINE_BOUND = 1e-5
# A bicubic resize's taps have both signs, so their fp32 sums cancel: torch's own fp32 resize is
# up to ~2e-6 from float64 on these images, ours (3xTF32 products) up to ~2.3e-6.
BICUBIC_BOUND = 5e-6


def _batch(dtype, generator, shape=(3, 3, 19, 23)):
    """Random images, never constant: uint8 over 1..254, float over (0.004, 0.996)."""
    values = torch.randint(1, 255, shape, generator=generator, dtype=torch.uint8)
    return values.to(DEVICE) if dtype == torch.uint8 else (values.to(dtype) / 255).to(DEVICE)


def _close(ours, ref, dtype, *, float_bound=2e-6, levels=1, fraction=1.0):
    """ours vs a float64 reference: within ``float_bound`` (floats) or ``levels`` (uint8) for at
    least ``fraction`` of the elements, and never more than one bound beyond it."""
    difference = (ours.double().cpu() - ref.double().cpu()).abs()
    bound = levels if dtype == torch.uint8 else float_bound
    within = (difference <= bound + 1e-9).double().mean().item()
    assert within >= fraction, f"{within:.4f} of the elements within {bound}; largest difference {difference.max()}"
    assert difference.max() <= 2 * bound + 1e-9 or fraction < 1.0, difference.max()


# ----------------------------------------------------------------------------- float64 references
def _to_image_range(x, dtype):
    """torchvision's result dtype rules: uint8 values truncated to integers (a float written
    into uint8), floats as they are."""
    return x.clamp(0, 255).floor() if dtype == torch.uint8 else x


def ref_pad(x, left, top, right, bottom, fill, mode):
    x = x.double()
    if mode == "symmetric":
        rows = torch.arange(-top, x.shape[2] + bottom)
        cols = torch.arange(-left, x.shape[3] + right)
        rows = torch.where(rows < 0, -rows - 1, torch.where(rows >= x.shape[2], 2 * x.shape[2] - 1 - rows, rows))
        cols = torch.where(cols < 0, -cols - 1, torch.where(cols >= x.shape[3], 2 * x.shape[3] - 1 - cols, cols))
        return x[:, :, rows][:, :, :, cols]
    torch_mode = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}[mode]
    return torch_f.pad(x, (left, right, top, bottom), mode=torch_mode, value=float(fill)) if mode == "constant" \
        else torch_f.pad(x, (left, right, top, bottom), mode=torch_mode)


def ref_resize(x, size, antialias=True, mode="bilinear"):
    """F.resize: interpolate in float64 (torchvision's GPU path for uint8: float, then rounded
    and clamped)."""
    out = torch_f.interpolate(x.double(), size=size, mode=mode, antialias=antialias and mode != "nearest",
                              align_corners=False if mode != "nearest" else None)
    return out.round().clamp(0, 255) if x.dtype == torch.uint8 and mode != "nearest" else out


def ref_affine(x, angle, translate, scale, shear, center, fill, mode):
    """torchvision's affine/rotate (rotate: angle negated, no translate/scale/shear) in float64:
    the inverse matrix, its grid, grid_sample (zeros outside), and the mask blend of ``fill``."""
    height, width = x.shape[-2:]
    cx, cy = (0.0, 0.0) if center is None else (center[0] - width * 0.5, center[1] - height * 0.5)
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    m[2] += m[0] * (-cx - translate[0]) + m[1] * (-cy - translate[1]) + cx
    m[5] += m[3] * (-cx - translate[0]) + m[4] * (-cy - translate[1]) + cy
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) - height * 0.5 + 0.5,
                            torch.arange(width, dtype=torch.float64) - width * 0.5 + 0.5, indexing="ij")
    grid = torch.stack([(m[0] * xs + m[1] * ys + m[2]) / (0.5 * width),
                        (m[3] * xs + m[4] * ys + m[5]) / (0.5 * height)], dim=-1)
    image = torch.cat([x.double()[None], torch.ones(1, 1, height, width, dtype=torch.float64)], dim=1)
    sampled = torch_f.grid_sample(image, grid[None], mode=mode, padding_mode="zeros", align_corners=False)[0]
    value, mask = sampled[:-1], sampled[-1:]
    if fill is not None:
        fill = torch.tensor(fill if isinstance(fill, (list, tuple)) else [fill] * x.shape[0], dtype=torch.float64)
        fill = fill.view(-1, 1, 1)
        value = torch.where(mask < 0.5, fill, value) if mode == "nearest" else (value - fill) * mask + fill
    return value.round() if x.dtype == torch.uint8 else value


def ref_gray(x, integer):
    gray = GRAY_WEIGHTS[0] * x[0] + GRAY_WEIGHTS[1] * x[1] + GRAY_WEIGHTS[2] * x[2]
    return gray.floor() if integer else gray


def ref_blend(a, b, ratio, integer):
    out = (ratio * a + (1.0 - ratio) * b).clamp(0, 255.0 if integer else 1.0)
    return out.floor() if integer else out


def ref_brightness(x, factor, integer):
    return ref_blend(x, torch.zeros_like(x), factor, integer)


def ref_contrast(x, factor, integer):
    return ref_blend(x, ref_gray(x, integer).mean(), factor, integer)


def ref_saturation(x, factor, integer):
    return ref_blend(x, ref_gray(x, integer)[None], factor, integer)


def ref_hue(x, factor, integer):
    """torchvision's _rgb_to_hsv, hue shift mod 1, _hsv_to_rgb (uint8: ×1/255 in and ×255.999 out)."""
    image = x / 255.0 if integer else x
    r, g, b = image
    maxc, minc = image.max(0).values, image.min(0).values
    equal = maxc == minc
    spread = maxc - minc
    s = spread / torch.where(equal, torch.ones_like(maxc), maxc)
    divisor = torch.where(equal, torch.ones_like(spread), spread)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = ((h / 6.0 + 1.0) % 1.0 + factor) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p = ((1.0 - s) * maxc).clamp(0, 1)
    q = ((1.0 - s * f) * maxc).clamp(0, 1)
    t = ((1.0 - s + s * f) * maxc).clamp(0, 1)
    table = torch.stack([maxc, p, q, t])
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])
    out = torch.stack([table.gather(0, select[k][i][None])[0] for k in range(3)])
    return (out * 255.999).floor() if integer else out


REF_JITTER = (ref_brightness, ref_contrast, ref_saturation, ref_hue)


# ----------------------------------------------------------------------------- geometry
@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_pad_and_crop_are_exact(dtype, mode, generator):
    x = _batch(dtype, generator)
    fill = 7 if dtype == torch.uint8 else 0.25
    out = F.pad(x, [2, 3, 4, 1], fill=fill, padding_mode=mode)
    assert torch.equal(out.cpu().double(), ref_pad(x.cpu(), 2, 3, 4, 1, fill, mode))
    tops, lefts = torch.tensor([0, 3, 9]), torch.tensor([5, 0, 14])
    out = F.crop(x, tops, lefts, 10, 9)
    for n in range(3):
        assert torch.equal(out[n], x[n, :, tops[n]:tops[n] + 10, lefts[n]:lefts[n] + 9])
    assert torch.equal(F.center_crop(x, [25, 9]).cpu().double(),
                       ref_pad(x.cpu(), 0, 3, 0, 3, 0, "constant")[:, :, :, 7:16])  # torchvision pads, then crops


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_flips_per_sample(dtype, generator):
    x = _batch(dtype, generator)
    flags = torch.tensor([True, False, True])
    out = F.horizontal_flip(x, flags)
    assert torch.equal(out, torch.where(flags[:, None, None, None].to(DEVICE), x.flip(-1), x))
    assert torch.equal(F.vertical_flip(x), x.flip(-2))


def test_the_plans_numbers_are_the_kernels():
    """The record fields, configuration slots, choices and square size that fastcnn/transforms
    and ops/augment.py mirror as plain ints (no triton import to build a plan) are the kernel's."""
    from fastcnn.kernels import augment as kernel
    from fastcnn.ops import augment as ops
    from fastcnn.transforms import _plan
    shared = [name for name in dir(_plan) if name.isupper() and hasattr(kernel, name)]
    assert len(shared) > 60, shared
    for module, names in ((_plan, shared), (ops, ("RECORD", "CONFIG", "SQUARE"))):
        for name in names:
            assert getattr(module, name) == getattr(getattr(kernel, name), "value", getattr(kernel, name)), name


def _resize_windows(height, width, size, antialias=True, mode="bilinear"):
    """The plan's source windows for a bilinear or bicubic resize: (0, 0) when it gathers each
    pixel's taps."""
    plan = Plan(3, height, width, torch.uint8)
    plan.resize(size, BICUBIC if mode == "bicubic" else BILINEAR, antialias)
    return plan.options["WINDOW_H"], plan.options["WINDOW_W"]


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_windows_hold_every_tap_of_their_squares(antialias, mode):
    """The windowed resize drops any tap outside its square's window, so the window the host
    sizes must hold, for every run of SQUARE outputs, the first tap of the first to the last of
    the last, as the kernel computes them in fp32 (torch's bounds); any crop up to the plan's."""
    checked = 0
    for size in (1, 7, 16, 17, 33, 100, 224):
        for crop in range(1, 400):
            window = resize_window(crop, size, antialias, mode == "bicubic")
            if not window:
                assert crop / size > 3.0  # up to 3x down every window fits
                continue
            scale = torch.tensor(crop, dtype=torch.float32) / torch.tensor(size, dtype=torch.float32)
            center = scale * (torch.arange(size, dtype=torch.float32) + 0.5)
            if antialias:
                support = torch.clamp(scale, min=1.0) * (2 if mode == "bicubic" else 1)
                first = torch.clamp((center - support + 0.5).trunc(), min=0)
                last = torch.clamp((center + support + 0.5).trunc(), max=crop)
            elif mode == "bicubic":  # the four around the source, clamped only when read
                first = torch.floor(center - 0.5) - 1
                last = first + 4
            else:
                first = torch.clamp(torch.clamp(center - 0.5, min=0.0).trunc(), max=crop - 1)
                last = torch.clamp(first + 2, max=crop)
            run_last = last[torch.clamp(torch.arange(size) + SQUARE - 1, max=size - 1)]
            assert (run_last - first).max() <= window, (crop, size, window)
            checked += 1
    assert checked > 900


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("size, antialias, mode", [((11, 13), True, "bilinear"), ((11, 13), False, "bilinear"),
                                                   ((31, 26), True, "bilinear"), ((4, 3), True, "bilinear"),
                                                   ((11, 13), True, "bicubic"), ((31, 26), False, "bicubic"),
                                                   ((9, 7), False, "bicubic"), ((4, 3), True, "bicubic"),
                                                   ((8, 30), True, "nearest")])
def test_resize_matches_interpolate(dtype, size, antialias, mode, generator):
    """Bilinear and bicubic: by windows over output squares (tensor-core products), or, past 3x
    down, by each pixel's taps; nearest: each pixel's source."""
    if mode != "nearest":
        assert all(_resize_windows(19, 23, size, antialias, mode)) == (size != (4, 3))
    x = _batch(dtype, generator)
    out = F.resize(x, list(size), interpolation=mode, antialias=antialias)
    ref = ref_resize(x.cpu(), size, antialias, mode)
    if mode == "nearest":
        assert torch.equal(out.cpu().double(), ref.double())
    else:  # bicubic's negative lobes cancel: torch's own fp32 resize is up to ~2e-6 from float64
        _close(out, ref, dtype, float_bound=BICUBIC_BOUND if mode == "bicubic" else 2e-6)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resized_crop_per_sample(dtype, generator):
    x = _batch(dtype, generator)
    top, left, height, width = [1, 0, 5], [2, 7, 0], [15, 9, 14], [20, 11, 23]
    out = F.resized_crop(x, torch.tensor(top), torch.tensor(left), torch.tensor(height), torch.tensor(width), [8, 9])
    for n in range(3):
        window = x.cpu()[n:n + 1, :, top[n]:top[n] + height[n], left[n]:left[n] + width[n]]
        _close(out[n:n + 1], ref_resize(window, (8, 9)), dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_rotate_and_affine_match_grid_sample(dtype, mode, generator):
    x = _batch(dtype, generator)
    angles = [12.5, -33.3, 95.0]
    fill = [9, 20, 30] if dtype == torch.uint8 else [0.1, 0.5, 0.9]
    out = F.rotate(x, torch.tensor(angles), interpolation=mode, fill=fill)
    for n in range(3):
        ref = ref_affine(x[n].cpu(), -angles[n], (0, 0), 1.0, (0.0, 0.0), None, fill, mode)
        _close(out[n], ref, dtype, float_bound=AFFINE_BOUND, fraction=0.995 if mode == "nearest" else 1.0)
    translate, scale, shear = [[1, -2], [0, 3], [-4, 0]], [0.9, 1.1, 1.3], [[5, 0], [0, 10], [-7, 3]]
    out = F.affine(x, torch.tensor(angles), torch.tensor(translate, dtype=torch.float32), torch.tensor(scale),
                   torch.tensor(shear, dtype=torch.float32), interpolation=mode, center=[5, 7])
    for n in range(3):
        ref = ref_affine(x[n].cpu(), angles[n], translate[n], scale[n], shear[n], [5, 7], None, mode)
        _close(out[n], ref, dtype, float_bound=AFFINE_BOUND, fraction=0.995 if mode == "nearest" else 1.0)


# ----------------------------------------------------------------------------- colour
@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_colour_adjustments(dtype, generator):
    x = _batch(dtype, generator)
    integer = dtype == torch.uint8
    factors = {"adjust_brightness": [0.5, 1.3, 2.0], "adjust_contrast": [0.0, 0.7, 1.6],
               "adjust_saturation": [0.2, 1.0, 1.9], "adjust_hue": [0.1, -0.3, 0.5]}
    for name, reference in zip(factors, REF_JITTER):
        out = getattr(F, name)(x, torch.tensor(factors[name]))
        for n in range(3):
            ref = reference(x[n].cpu().double(), factors[name][n], integer)
            _close(out[n], ref, dtype, float_bound=1e-6 if name != "adjust_hue" else 2e-6,
                   fraction=0.98 if integer and name != "adjust_brightness" else 1.0)


def test_color_jitter_runs_each_samples_order(generator):
    x = _batch(torch.float32, generator)
    order = [[3, 1, 0, 2], [0, 2, 1, 3], [2, 3, 1, 0]]
    factors = [[0.7, 1.2, 1.4], [1.3, 0.6, 1.0], [0.5, 1.5, 0.0], [0.05, -0.1, 0.2]]
    out = F.color_jitter(x, torch.tensor(order), *(torch.tensor(values) for values in factors))
    for n in range(3):
        ref = x[n].cpu().double()
        for k in order[n]:
            ref = REF_JITTER[k](ref, factors[k][n], False)
        _close(out[n], ref, torch.float32, float_bound=5e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_grayscale_normalize_erase_and_dtype_are_exact(dtype, generator):
    x = _batch(dtype, generator)
    gray = F.rgb_to_grayscale(x)
    for n in range(3):
        ref = ref_gray(x[n].cpu().double(), dtype == torch.uint8).expand(3, -1, -1)
        _close(gray[n], ref, dtype, float_bound=1.2e-7, levels=0, fraction=0.98)
    floats = F.to_dtype(x, torch.float32, scale=True)
    expected = x.float() * (1.0 / 255.0) if dtype == torch.uint8 else x.float()
    assert torch.equal(floats, expected)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalized = F.normalize(floats, mean, std)
    assert torch.equal(normalized, (floats - torch.tensor(mean, device=DEVICE)[:, None, None])
                       / torch.tensor(std, device=DEVICE)[:, None, None])
    erased = F.erase(normalized, torch.tensor([1, 0, 3]), torch.tensor([2, 5, 0]), torch.tensor([4, 6, 0]),
                     torch.tensor([3, 5, 9]), [0.5, -1.0, 2.0])
    expected = normalized.clone()
    expected[0, :, 1:5, 2:5] = torch.tensor([0.5, -1.0, 2.0], device=DEVICE)[:, None, None]
    expected[1, :, 0:6, 5:10] = torch.tensor([0.5, -1.0, 2.0], device=DEVICE)[:, None, None]
    assert torch.equal(erased, expected)


def test_gaussian_noise_statistics_and_seeding(generator):
    x = torch.full((4, 3, 40, 50), 0.5, device=DEVICE)
    torch.manual_seed(3)
    first = F.gaussian_noise(x, mean=0.01, sigma=0.05, clip=False)
    torch.manual_seed(3)
    again = F.gaussian_noise(x, mean=0.01, sigma=0.05, clip=False)
    assert torch.equal(first, again)
    assert not torch.equal(first, F.gaussian_noise(x, mean=0.01, sigma=0.05, clip=False))
    noise = (first - x).double()
    count = noise.numel()
    assert abs(noise.mean().item() - 0.01) < 6 * 0.05 / math.sqrt(count)
    assert abs(noise.std().item() - 0.05) < 6 * 0.05 / math.sqrt(2 * count)
    clipped = F.gaussian_noise(x, sigma=1.0)
    assert clipped.min() >= 0 and clipped.max() <= 1 and (clipped == 1).any()


# ----------------------------------------------------------------------------- Compose
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _imagenet(size=9, erasing=True):
    chain = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.1),
             T.RandomGrayscale(0.3), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(chain + ([T.RandomErasing(0.7)] if erasing else []))


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_compose_is_one_pass_equal_to_its_transforms_one_by_one(dtype, generator):
    """The fused pipeline equals the functional ops applied in turn with the parameters it drew
    (each its own launch), bit for bit; one launch with no contrast jitter, two with."""
    x = _batch(dtype, generator, (4, 3, 21, 26))
    pipeline = _imagenet()
    pipeline(x)  # its configuration is copied to the device once
    with count_launches() as launched, record_aten_ops() as ops:
        pipeline(x)
    # Besides the kernel: the seed drawn on the host from torch's CPU generator, and views.
    host_and_views = {"aten::randint.low_generator", "aten::_local_scalar_dense", "aten::expand", "aten::view"}
    assert launched["augment"] == 2 and ops.count("fastcnn::augment") == 1, (launched, ops)
    assert set(ops) - {"fastcnn::augment"} <= host_and_views, ops
    out, params = pipeline(x, return_params=True)
    crop, flip, jitter, gray, _, _, erase = params
    step = F.resized_crop(x, crop["top"], crop["left"], crop["height"], crop["width"], [9, 9])
    step = F.horizontal_flip(step, flip["flip"])
    step = F.color_jitter(step, jitter["fn_idx"], jitter["brightness"], jitter["contrast"], jitter["saturation"],
                          jitter["hue"])
    step = torch.where(gray["grayscale"][:, None, None, None], F.rgb_to_grayscale(step), step)
    step = F.normalize(F.to_dtype(step, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
    step = F.erase(step, erase["top"], erase["left"], erase["height"], erase["width"], 0.0)
    assert torch.equal(out, step), (out - step).abs().max()
    no_contrast = T.Compose([T.RandomResizedCrop(9), T.ColorJitter(0.4, 0.0, 0.4, 0.1), T.RandomHorizontalFlip()])
    with count_launches() as launched:
        no_contrast(x)
    assert launched["augment"] == 1


def test_compose_splits_where_one_pass_cannot_follow_the_chain(generator):
    """A second resize starts a second launch, and so does a map whose fill is not the zeros a
    crop past the image reads; the result is the chain's."""
    x = _batch(torch.float32, generator)
    chain = T.Compose([T.RandomHorizontalFlip(1.0), T.CenterCrop(15), T.Resize([11, 12]), T.Resize([7, 8]),
                       T.RandomVerticalFlip(1.0), T.CenterCrop(5)])
    with count_launches() as launched:
        out = chain(x)
    assert launched["augment"] == 2
    expected = F.resize(F.resize(F.center_crop(x.flip(-1), 15), [11, 12]), [7, 8])
    assert torch.equal(out, F.center_crop(expected.flip(-2), 5))
    chain = T.Compose([T.CenterCrop(25), T.RandomRotation(20, fill=0.5)])
    with count_launches() as launched:
        out, (_, rotation) = chain(x, return_params=True)
    assert launched["augment"] == 2
    assert torch.equal(out, F.rotate(F.center_crop(x, 25), rotation["angle"], fill=0.5))


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_flips_anywhere_in_the_geometry_are_one_launch_equal_to_the_chain(dtype, generator):
    """Flips after a pad, after a crop, before a crop of a resize's output and after erasing:
    each chain one launch, equal to its functionals in turn with the parameters drawn (a flip
    before the resample flips the input, with the pad and crop before it mirrored; one after it
    mirrors the crop and the erased box on either side of it)."""
    x = _batch(dtype, generator, (12, 3, 17, 20))
    fill = 9 if dtype == torch.uint8 else 0.25
    before = T.Compose([T.Pad((1, 2, 4, 0), fill=fill), T.RandomHorizontalFlip(), T.RandomCrop((15, 19)),
                        T.RandomVerticalFlip(), T.Resize((9, 11))])
    after = T.Compose([T.RandomResizedCrop((13, 14)), T.RandomHorizontalFlip(), T.RandomCrop((9, 11)),
                       T.ToDtype(torch.float32, scale=True), T.RandomErasing(1.0, value=0.5),
                       T.RandomVerticalFlip()])
    for chain in (before, after):
        with count_launches() as launched:
            out, params = chain(x, return_params=True)
        assert launched["augment"] == 1
        flips = [p["flip"] for p in params if p and "flip" in p]
        assert all(0 < int(flags.sum()) < 12 for flags in flips), "some samples flipped, not all"
        if chain is before:
            _, hflip, crop, vflip, _ = params
            step = F.horizontal_flip(F.pad(x, [1, 2, 4, 0], fill=fill), hflip["flip"])
            step = F.vertical_flip(F.crop(step, crop["top"], crop["left"], 15, 19), vflip["flip"])
            step = F.resize(step, [9, 11])
        else:
            resized, hflip, crop, _, erase, vflip = params
            step = F.resized_crop(x, resized["top"], resized["left"], resized["height"], resized["width"], [13, 14])
            step = F.crop(F.horizontal_flip(step, hflip["flip"]), crop["top"], crop["left"], 9, 11)
            step = F.erase(F.to_dtype(step, torch.float32, scale=True), erase["top"], erase["left"], erase["height"],
                           erase["width"], 0.5)
            step = F.vertical_flip(step, vflip["flip"])
        assert torch.equal(out, step), (out.double() - step.double()).abs().max()


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_two_resamples_are_one_launch_equal_to_both_in_turn(dtype, mode, generator):
    """An affine map then a resize (RandomRotation then RandomResizedCrop, RandomAffine then a
    bicubic Resize): one launch whose resize windows sample the map's output pixel by pixel; a
    resize then an affine map (RandomResizedCrop then RandomRotation, a bicubic Resize then
    RandomAffine): one launch whose map gathers each of its taps from the resize. Rounded where
    the image between them is uint8, equal to the two functionals applied in turn with the
    parameters drawn: bit for bit, but for a resize whose taps are gathered (fp32 sums in another
    order than the windows' products), within the resize's bound, one level where uint8."""
    x = _batch(dtype, generator, (4, 3, 19, 23))
    fill = 7 if dtype == torch.uint8 else 0.3
    affine = dict(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=(-5, 5, -3, 3), interpolation=mode)
    chains = [[T.RandomRotation(20, interpolation=mode, fill=fill), T.RandomResizedCrop((9, 11))],
              [T.RandomAffine(**affine), T.Resize((12, 10), interpolation="bicubic")],
              [T.RandomResizedCrop((13, 15)), T.RandomRotation(25, interpolation=mode, fill=fill)],
              [T.Resize((12, 10), interpolation="bicubic", antialias=False), T.RandomAffine(**affine)]]
    for chain in chains:
        with count_launches() as launched:
            out, params = T.Compose(chain)(x, return_params=True)
        assert launched["augment"] == 1, chain
        step = x
        for transform, drawn in zip(chain, params):
            if isinstance(transform, T.RandomResizedCrop):  # its box in the image it is given
                step = F.resized_crop(step, drawn["top"], drawn["left"], drawn["height"], drawn["width"],
                                      list(transform.size))
            elif isinstance(transform, T.Resize):
                step = F.resize(step, list(transform.size), interpolation="bicubic", antialias=transform.antialias)
            elif isinstance(transform, T.RandomAffine):
                step = F.affine(step, drawn["angle"], drawn["translate"], drawn["scale"], drawn["shear"],
                                interpolation=mode, fill=0)
            else:
                step = F.rotate(step, drawn["angle"], interpolation=mode, fill=fill)
        if isinstance(chain[0], (T.Resize, T.RandomResizedCrop)):  # nearly all uint8 levels the same
            _close(out, step, dtype, float_bound=BICUBIC_BOUND, levels=0, fraction=0.97)
            _close(out, step, dtype, float_bound=BICUBIC_BOUND)
        else:
            assert torch.equal(out, step), (chain, (out.double() - step.double()).abs().max())


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_colour_steps_in_any_order_are_one_pass_equal_to_the_chain(dtype, generator):
    """Grayscale before ColorJitter (whose contrast then sees the grey image, in the statistics
    pass too), erasing before them (uint8: its value truncated), ToDtype and Normalize after, a
    flip after it all: one pass (two launches with contrast), equal to the functionals in turn."""
    x = _batch(dtype, generator, (6, 3, 17, 19))
    value = 7 if dtype == torch.uint8 else 0.5
    chain = [T.RandomResizedCrop((9, 11)), T.RandomErasing(1.0, value=value), T.RandomGrayscale(0.5),
             T.ColorJitter(0.3, 0.3, 0.3, 0.05), T.ToDtype(torch.float32, scale=True),
             T.Normalize(IMAGENET_MEAN, IMAGENET_STD), T.RandomHorizontalFlip()]
    with count_launches() as launched:
        out, (crop, erase, gray, jitter, _, _, flip) = T.Compose(chain)(x, return_params=True)
    assert launched["augment"] == 2
    assert 0 < int(gray["grayscale"].sum()) < 6 or 0 < int(flip["flip"].sum()) < 6, "some samples grey, not all"
    step = F.resized_crop(x, crop["top"], crop["left"], crop["height"], crop["width"], [9, 11])
    step = F.erase(step, erase["top"], erase["left"], erase["height"], erase["width"], value)
    step = torch.where(gray["grayscale"][:, None, None, None], F.rgb_to_grayscale(step), step)
    step = F.color_jitter(step, jitter["fn_idx"], jitter["brightness"], jitter["contrast"], jitter["saturation"],
                          jitter["hue"])
    step = F.normalize(F.to_dtype(step, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(out, F.horizontal_flip(step, flip["flip"]))


@pytest.mark.every_triton
def test_to_dtype_first_runs_the_geometry_on_the_float_image_in_the_same_launch(generator):
    """ToDtype first in a uint8 chain (torchvision.transforms.v2's usual order after ToImage):
    each source pixel is scaled as it is read, so the pad's fill, the resize and the rotation are
    the float image's, in the same launch as the rest, equal to the functionals in turn."""
    x = _batch(torch.uint8, generator, (5, 3, 19, 23))
    chains = [T.Compose([T.ToDtype(torch.float32, scale=True), T.Pad([2, 1, 3, 0], fill=0.25),
                         T.RandomResizedCrop((9, 11)), T.RandomHorizontalFlip(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]),
              T.Compose([T.ToDtype(torch.float32, scale=True), T.RandomRotation(20, "bilinear", fill=0.3),
                         T.CenterCrop(15)])]
    for chain in chains:
        with count_launches() as launched:
            out, params = chain(x, return_params=True)
        assert launched["augment"] == 1
        step = F.to_dtype(x, torch.float32, scale=True)
        if len(params) == 5:
            _, _, crop, flip, _ = params
            step = F.pad(step, [2, 1, 3, 0], fill=0.25)
            step = F.resized_crop(step, crop["top"], crop["left"], crop["height"], crop["width"], [9, 11])
            step = F.normalize(F.horizontal_flip(step, flip["flip"]), IMAGENET_MEAN, IMAGENET_STD)
        else:
            step = F.center_crop(F.rotate(step, params[1]["angle"], "bilinear", fill=0.3), 15)
        assert torch.equal(out, step), (out - step).abs().max()


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_flips_first_in_the_chain_flip_the_input_in_the_same_launch(dtype, generator):
    """Random flips before a pad and a resized crop: one launch that reads each flipped sample
    mirrored, equal to the flips, the pad and the crop applied in turn with the parameters drawn
    (the crop's relative to the flipped image, as torchvision's)."""
    x = _batch(dtype, generator, (10, 3, 17, 20))
    chain = T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.Pad(2, padding_mode="reflect"),
                       T.RandomResizedCrop((9, 11))])
    with count_launches() as launched:
        out, (hflip, vflip, _, crop) = chain(x, return_params=True)
    assert launched["augment"] == 1
    assert 0 < int(hflip["flip"].sum()) < 10 or 0 < int(vflip["flip"].sum()) < 10, "some samples flipped, not all"
    step = F.vertical_flip(F.horizontal_flip(x, hflip["flip"]), vflip["flip"])
    step = F.resized_crop(F.pad(step, 2, padding_mode="reflect"), crop["top"], crop["left"], crop["height"],
                          crop["width"], [9, 11])
    assert torch.equal(out, step)


def test_cifar_pipeline_in_every_layout_to_bfloat16_channels_last(generator):
    x = _batch(torch.uint8, generator, (5, 3, 13, 11))
    pipeline = T.Compose([T.RandomCrop(9, padding=2, padding_mode="reflect"), T.RandomHorizontalFlip(),
                          T.ToDtype(torch.bfloat16, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)],
                         memory_format=torch.channels_last)
    views = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
             "nhwc": x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), "sliced": torch.stack([x, x + 1], -1)[..., 0]}
    outputs = []
    for name, view in views.items():
        torch.manual_seed(11)
        out, params = pipeline(view, return_params=True)
        assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last), name
        outputs.append(out)
    assert all(torch.equal(out, outputs[0]) for out in outputs)
    crop, flip = params[0], params[1]["flip"]
    for n in range(5):
        padded = ref_pad(x[n:n + 1].cpu(), 2, 2, 2, 2, 0, "reflect")[0]
        window = padded[:, crop["top"][n]:crop["top"][n] + 9, crop["left"][n]:crop["left"][n] + 9]
        window = window.flip(-1) if flip[n] else window
        ref = ((window.float() * (1.0 / 255.0) - torch.tensor(IMAGENET_MEAN)[:, None, None])
               / torch.tensor(IMAGENET_STD)[:, None, None])
        assert torch.equal(outputs[0][n].cpu(), ref.to(torch.bfloat16))


def test_seeding_repeats_a_batch_and_generators_are_honoured(generator):
    x = _batch(torch.uint8, generator)
    pipeline = T.Compose([T.RandomResizedCrop(7), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True),
                          T.GaussianNoise()])
    torch.manual_seed(5)
    first = pipeline(x)
    torch.manual_seed(5)
    assert torch.equal(pipeline(x), first)
    assert not torch.equal(pipeline(x), first)
    a = pipeline(x, generator=torch.Generator().manual_seed(9))
    assert torch.equal(pipeline(x, generator=torch.Generator().manual_seed(9)), a)


def test_drawn_parameters_follow_torchvisions_distributions():
    """Over many samples: RandomResizedCrop's boxes in its scale and ratio ranges, flips and
    grayscale at their rate, ColorJitter's factors uniform in range and each order equally
    likely, rotation angles uniform, erasing at most at its rate: each statistic within five
    standard deviations (a false alarm about once in 10**6 runs per statistic)."""
    samples = 20000 if ON_GPU else 150  # the interpreter draws ~10 samples a second
    x = torch.randint(0, 256, (samples, 3, 5, 6), dtype=torch.uint8, device=DEVICE)
    rotation = [T.RandomRotation((-10, 30), interpolation="bilinear")] if ON_GPU else []  # a second launch
    pipeline = T.Compose([T.RandomResizedCrop(2, scale=(0.3, 1.0)), *rotation, T.RandomHorizontalFlip(0.3),
                          T.ColorJitter(0.4, None, (0.5, 0.9), 0.2), T.RandomGrayscale(0.25),
                          T.ToDtype(torch.float32, scale=True), T.RandomErasing(0.6)])
    params = pipeline(x, return_params=True)[1]
    crop, flip, jitter, gray, _, erase = params[:1] + params[1 + len(rotation):]

    def near(values, mean, std):
        values = values.double()
        assert abs(values.mean().item() - mean) < 5 * std / math.sqrt(values.numel()), (values.mean(), mean)

    area = (crop["height"] * crop["width"]).double() / 30
    assert (crop["height"] >= 1).all() and (crop["height"] <= 5).all() and (crop["width"] <= 6).all()
    assert (crop["top"] + crop["height"] <= 5).all() and (crop["left"] + crop["width"] <= 6).all()
    assert 0.2 < area.mean().item() < 1.0
    if rotation:
        angles = params[1]["angle"]
        near(angles, 10.0, 40 / math.sqrt(12))
        assert angles.min() >= -10 and angles.max() <= 30
    near(flip["flip"], 0.3, math.sqrt(0.3 * 0.7))
    near(gray["grayscale"], 0.25, math.sqrt(0.25 * 0.75))
    near(jitter["brightness"], 1.0, 0.8 / math.sqrt(12))
    near(jitter["saturation"], 0.7, 0.4 / math.sqrt(12))
    near(jitter["hue"], 0.0, 0.4 / math.sqrt(12))
    order = jitter["fn_idx"]
    assert torch.equal(order.sort(1).values, torch.arange(4).expand(samples, 4))
    for op in range(4):
        near(order[:, 0] == op, 0.25, math.sqrt(0.25 * 0.75))
    erased = erase["height"] > 0
    assert erased.double().mean().item() < 0.6 + 5 * math.sqrt(0.24 / samples)
    assert ((erase["top"] + erase["height"] <= 2) & (erase["left"] + erase["width"] <= 2))[erased].all()


def test_bad_input_is_refused_as_torchvision_refuses_it(generator):
    x = _batch(torch.uint8, generator)
    with pytest.raises(ValueError, match="shape"):
        T.RandomHorizontalFlip()(x[0])
    with pytest.raises(TypeError, match="Input tensor should be a float tensor"):
        T.Compose([T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(x)
    with pytest.raises(ValueError, match="non negative"):
        T.ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match="between"):
        T.ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="expand"):
        T.RandomRotation(10, expand=True)
    with pytest.raises(ValueError, match="nearest or bilinear"):
        T.RandomRotation(10, interpolation="bicubic")
    with pytest.raises(ValueError, match="not supported"):
        T.Resize(5, interpolation="lanczos")
    with pytest.raises(TypeError, match="1 or 3"):
        F.adjust_hue(x[:, :2], 0.1)
    with pytest.raises(TypeError, match="1 or 3"):
        T.Compose([T.ColorJitter(0.4)])(torch.cat([x, x], 1))
    with pytest.raises(ValueError, match="larger than input image size"):
        T.RandomCrop(40)(x)
    with count_launches() as launched:
        empty = T.Compose([T.RandomResizedCrop(5), T.ToDtype(torch.float32, scale=True)])(x[:0])
    assert empty.shape == (0, 3, 5, 5) and not launched


# ----------------------------------------------------------------------------- MixUp / CutMix
@pytest.mark.every_triton
@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_mixup_and_cutmix_give_soft_targets_cross_entropy_takes(kind, memory_format, generator):
    images = _batch(torch.float32, generator, (6, 3, 9, 11)).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 5, (6,), generator=generator).to(DEVICE)
    transform = T.MixUp(alpha=0.8, num_classes=5) if kind == "mixup" else T.CutMix(alpha=0.8, num_classes=5)
    torch.manual_seed(21)
    with count_launches() as launched:
        mixed, targets = transform(images, labels)
    assert launched["augment"] == 1
    torch.manual_seed(21)  # the same draws, as torchvision makes them
    lam = float(torch.distributions.Beta(torch.tensor([0.8]), torch.tensor([0.8])).sample(()))
    rolled = images.roll(1, 0)
    if kind == "mixup":
        expected = rolled * (1.0 - lam) + images * lam
    else:
        r_x, r_y = torch.randint(11, size=(1,)), torch.randint(9, size=(1,))
        r = 0.5 * math.sqrt(1.0 - lam)
        x1, y1 = int(torch.clamp(r_x - int(r * 11), min=0)), int(torch.clamp(r_y - int(r * 9), min=0))
        x2, y2 = int(torch.clamp(r_x + int(r * 11), max=11)), int(torch.clamp(r_y + int(r * 9), max=9))
        expected = images.clone()
        expected[..., y1:y2, x1:x2] = rolled[..., y1:y2, x1:x2]
        lam = 1.0 - (x2 - x1) * (y2 - y1) / 99
    one_hot = torch_f.one_hot(labels, 5).float()
    assert torch.equal(mixed, expected) and mixed.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(targets, one_hot.roll(1, 0) * (1.0 - lam) + one_hot * lam, rtol=0, atol=1e-7)
    logits = torch.randn(6, 5, generator=generator).to(DEVICE)
    torch.testing.assert_close(fastcnn.cross_entropy(logits, targets), torch_f.cross_entropy(logits, targets))


# ----------------------------------------------------------------------------- torchvision itself
def _torchvision():
    try:
        import torchvision.transforms.v2.functional as tvf
    except Exception:  # not installed, or built for another torch
        pytest.skip("torchvision.transforms.v2 is not importable here")
    return tvf


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_imagenet_pipeline_equals_torchvision_sample_by_sample(dtype, generator):
    """torchvision.transforms.v2.functional with the parameters each sample drew (its resize of a
    uint8 image in float, as it runs on a GPU)."""
    tvf = _torchvision()
    x = _batch(dtype, generator, (4, 3, 21, 26))
    out, params = _imagenet()(x, return_params=True)
    for n in range(4):
        p = [{name: value[n].tolist() for name, value in (entry or {}).items()} for entry in params]
        image = tvf.resized_crop(x[n].float(), p[0]["top"], p[0]["left"], p[0]["height"], p[0]["width"], [9, 9])
        image = image.round().to(dtype) if dtype == torch.uint8 else image
        image = tvf.horizontal_flip(image) if p[1]["flip"] else image
        for k in p[2]["fn_idx"]:
            function = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue)[k]
            image = function(image, [p[2]["brightness"], p[2]["contrast"], p[2]["saturation"], p[2]["hue"]][k])
        image = tvf.rgb_to_grayscale(image, 3) if p[3]["grayscale"] else image
        image = tvf.normalize(tvf.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
        if p[6]["height"]:
            image = tvf.erase(image, p[6]["top"], p[6]["left"], p[6]["height"], p[6]["width"], torch.tensor(0.0))
        _close(out[n], image, torch.float32, float_bound=1e-5, fraction=0.99)


@pytest.mark.parametrize("geometry", ["crop", "resized crop"])
def test_channels_last_output_is_the_same_batch_over_several_tiles(geometry, generator):
    """A dense channels-last output is stored as flat runs of pixels·C (the last tile partial),
    or, for a windowed resize, as one run per row of each output square (the last squares
    partial both ways): the same values as the NCHW output of the same draws."""
    x = _batch(torch.uint8, generator, (2, 3, 40, 37))
    first = (T.RandomCrop(35, padding=1, padding_mode="edge") if geometry == "crop"
             else T.RandomResizedCrop((35, 33), scale=(0.5, 1.0)))
    chain = [first, T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True),
             T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    outputs = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(4)
        outputs.append(T.Compose(chain, memory_format=memory_format)(x))
    assert outputs[1].is_contiguous(memory_format=torch.channels_last) and outputs[0].is_contiguous()
    assert torch.equal(outputs[0], outputs[1])
