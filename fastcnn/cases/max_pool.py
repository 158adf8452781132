"""max_pool's benchmark cases: ResNet's stem max-pool, forward + backward."""
import torch

from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.max_pool import bytes_moved, max_pool2d, pool_output_size
from ._static import empty, per_layout_and_dtype

# ResNet's stem max-pool: 3x3, stride 2, padding 1 on the 64 x 112² output of conv1.
SUITES = {"resnet_stem": dict(channels=64, size=112, kernel_size=3, stride=2, padding=1)}
PROFILE_OPS = ("max_pool2d",)


def _case(suite, batch, dtype, layout):
    pool = dict(suite)
    channels, size = pool.pop("channels"), pool.pop("size")
    out_size = pool_output_size(size, pool["kernel_size"], pool["padding"], pool["stride"], 1, False)
    numel_in, numel_out = batch * channels * size * size, batch * channels * out_size * out_size

    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        eager = lambda x: torch.nn.functional.max_pool2d(x, **pool)  # noqa: E731
        return training_steps(lambda x: max_pool2d(x, **pool), eager, input)

    return BenchmarkCase("max_pool2d", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(numel_in, numel_out, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: forward + backward of every suite at the activation batches."""
    suites = [dict(channels=3, size=9, kernel_size=3, stride=2, padding=1)] if smoke else list(SUITES.values())
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    return [_case(suite, batch, dtype, layout) for suite in suites for batch in batches for dtype in dtypes
            for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel")


def static_launches(kernel_module, options):
    """ResNet's stem max-pool, forward and backward."""
    def pool(dtype, channels_last):
        max_pool = kernel_module("max_pool")
        x = empty((32, 64, 112, 112), dtype, channels_last)
        out = empty((32, 64, 56, 56), dtype, channels_last)
        taps = empty((32, 64, 56, 56), torch.uint8, channels_last)
        geometry = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
        max_pool.forward(x, out, taps, None, **geometry)
        max_pool.backward(out, taps, empty((32, 64, 112, 112), dtype, channels_last), **geometry)
    return per_layout_and_dtype(options, "maxpool3x3s2 N32 C64 112x112", pool)


def compile_variants(kernel_module):
    """max_pool2d compares in the input's own dtype: floats from -inf, integers from their minimum
    (uint8 0, int64 -2**63), so float64, int64 and uint8 forwards (with torch's indices) are
    compiled too, and float64's backward (summed in fp64), in both layouts."""
    def pool(dtype, channels_last):
        max_pool = kernel_module("max_pool")
        x = empty((2, 8, 9, 9), dtype, channels_last)
        out = empty((2, 8, 5, 5), dtype, channels_last)
        taps = empty((2, 8, 5, 5), torch.uint8, channels_last)
        indices = empty((2, 8, 5, 5), torch.int64, channels_last)
        geometry = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
        max_pool.forward(x, out, taps, indices, **geometry)
        if dtype.is_floating_point:
            max_pool.backward(out, taps, empty((2, 8, 9, 9), dtype, channels_last), **geometry)
    return [(f"max_pool {str(dtype)[6:]} {'channels_last' if channels_last else 'nchw'}",
             lambda dtype=dtype, channels_last=channels_last: pool(dtype, channels_last))
            for dtype in (torch.float64, torch.int64, torch.uint8) for channels_last in (False, True)]
