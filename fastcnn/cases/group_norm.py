"""group_norm's benchmark cases: GroupNorm(32) + SiLU forward + backward on a U-Net's activations."""
import torch

from ..nn import GroupNorm
from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops.group_norm import bytes_moved
from ._static import empty, per_layout_and_dtype

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


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_partial_stats_kernel", "_partial_grad_sums_kernel",
                        "_apply_kernel", "_backward_apply_kernel")


def static_launches(kernel_module, options):
    """GroupNorm(32) + SiLU on a U-Net's first level, forward and backward, and instance norm's
    running statistics."""
    def group_norm_silu(dtype, channels_last):
        group_norm = kernel_module("group_norm")
        c, groups = 320, 32
        x, y, dx = (empty((8, c, 64, 64), dtype, channels_last).view(8, c, -1) for _ in range(3))
        stats = torch.empty((4, 8 * groups), dtype=torch.float32)
        weight, bias = torch.ones(c), torch.zeros(c)
        group_norm.statistics(x, stats, None, None, groups=groups, eps=1e-5, use_running=False)
        group_norm.apply(x, y, stats, weight, bias, groups=groups, kind="silu", parameter=0.0)
        group_norm.backward(y, x, dx, stats, weight, bias, torch.empty((2, c)), groups=groups,
                            batch_statistics=True, kind="silu", parameter=0.0)
        # InstanceNorm2d(track_running_stats=True) in training: its statistics are per (sample,
        # channel), averaged over the batch into the running ones.
        instance_stats = torch.empty((4, 8 * c), dtype=torch.float32)
        group_norm.update_running(instance_stats, torch.zeros(c), torch.ones(c), batch=8, momentum=0.1,
                                  reduction_length=64 * 64)
    return (per_layout_and_dtype(options, "groupnorm32+silu N8 C320 64x64", group_norm_silu)
            + per_layout_and_dtype(options, PRELU_SCENARIO, lambda dtype, channels_last: _group_norm_prelu(
                kernel_module, dtype, channels_last)))


PRELU_SCENARIO = "groupnorm32+prelu N8 C320 64x64"


def _group_norm_prelu(kernel_module, dtype, channels_last):
    """GroupNorm(32) → PReLU(C) fused: the slopes read in the apply and the backward's apply, their
    gradient a third per-(sample, channel) sum of the sums pass."""
    group_norm = kernel_module("group_norm")
    c, groups = 320, 32
    x, y, dx = (empty((8, c, 64, 64), dtype, channels_last).view(8, c, -1) for _ in range(3))
    stats = torch.empty((4, 8 * groups), dtype=torch.float32)
    weight, bias, slope = torch.ones(c), torch.zeros(c), torch.empty(c, dtype=dtype)
    group_norm.apply(x, y, stats, weight, bias, groups=groups, kind="prelu", parameter=0.0, slope=slope)
    group_norm.backward(y, x, dx, stats, weight, bias, torch.empty((3, c)), groups=groups, batch_statistics=True,
                        kind="prelu", parameter=0.0, slope=slope)


def compile_variants(kernel_module):
    """GroupNorm + PReLU in bf16 channels_last (the slopes' sums, which no representative launch has)."""
    return [(f"{PRELU_SCENARIO} bf16 channels_last", lambda: _group_norm_prelu(kernel_module, torch.bfloat16, True))]
