"""group_norm's benchmark cases: GroupNorm(32) + SiLU forward + backward on a U-Net's activations."""
import torch

from ..nn import GroupNorm
from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.group_norm import bytes_moved

# (channels, height = width) of a Stable-Diffusion-style U-Net's GroupNorm(32)+SiLU at 64² latents.
SUITES = {"unet": lambda: [(320, 64), (640, 32), (1280, 16), (1280, 8)]}
PROFILE_OPS = ("group_norm_silu",)
UNET_BATCH = 8


def _case(channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        pair = torch.nn.Sequential(torch.nn.GroupNorm(32, channels), torch.nn.SiLU()).to(device)
        ours = GroupNorm(32, channels, activation="silu").to(device)
        return training_steps(ours, pair, input)

    return BenchmarkCase("group_norm_silu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """GroupNorm(32) + SiLU forward + backward on U-Net activations."""
    shapes = [(64, 7)] if smoke else [shape for suite in SUITES.values() for shape in suite()]
    shapes = shapes[:2] if quick else shapes
    batch = 2 if smoke else UNET_BATCH
    return [_case(channels, size, batch, dtype, layout) for channels, size in shapes for dtype in dtypes
            for layout in layouts]
