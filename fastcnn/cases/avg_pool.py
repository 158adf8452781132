"""avg_pool's benchmark cases: avg_pool2d and adaptive_avg_pool2d, forward + backward: ResNet-50's
global pool and an Inception-style 3x3 pool."""
import torch

from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.avg_pool import adaptive_avg_pool2d, avg_pool2d, bytes_moved
from ..ops.max_pool import pool_output_size
from ._static import empty, per_layout_and_dtype

# ResNet-50's global pool (2048 x 7² to 1x1) and an Inception-style 3x3 stride-1 average pool.
SUITES = {"resnet50_head": dict(channels=2048, size=7, output_size=1),
          "inception_3x3": dict(channels=192, size=35, kernel_size=3, stride=1, padding=1)}
PROFILE_OPS = ("avg_pool2d", "adaptive_avg_pool2d")


def _case(op, suite, batch, dtype, layout):
    pool = dict(suite)
    channels, size = pool.pop("channels"), pool.pop("size")
    if op == "adaptive_avg_pool2d":
        out_size = pool["output_size"]
        ours = lambda x: adaptive_avg_pool2d(x, **pool)  # noqa: E731
        eager = lambda x: torch.nn.functional.adaptive_avg_pool2d(x, **pool)  # noqa: E731
    else:
        out_size = pool_output_size(size, pool["kernel_size"], pool["padding"], pool["stride"], 1, False)
        ours = lambda x: avg_pool2d(x, **pool)  # noqa: E731
        eager = lambda x: torch.nn.functional.avg_pool2d(x, **pool)  # noqa: E731
    numel_in, numel_out = batch * channels * size * size, batch * channels * out_size * out_size

    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        return training_steps(ours, eager, input)

    return BenchmarkCase(op, f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(numel_in, numel_out, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: forward + backward of the op's suites at the activation batches."""
    adaptive = op == "adaptive_avg_pool2d"
    if smoke:
        suites = [dict(channels=3, size=9, output_size=1) if adaptive
                  else dict(channels=3, size=9, kernel_size=3, stride=2, padding=1)]
    else:
        suites = [suite for suite in SUITES.values() if ("output_size" in suite) == adaptive]
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    return [_case(op, suite, batch, dtype, layout) for suite in suites for batch in batches for dtype in dtypes
            for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_avg_pool_forward_kernel", "_avg_pool_backward_kernel",
                        "_global_avg_pool_kernel")


def static_launches(kernel_module, options):
    """ResNet-50's global pool, Inception's 3x3 stride-1 pool and an adaptive 35 -> 7 pool, forward and
    backward."""
    def avg_pools(dtype, channels_last):
        avg_pool = kernel_module("avg_pool")
        head = empty((64, 2048, 7, 7), dtype, channels_last)  # ResNet-50's global pool
        pooled = empty((64, 2048, 1, 1), dtype, channels_last)
        avg_pool.forward(head, pooled)
        avg_pool.backward(pooled, head)
        x = empty((32, 192, 35, 35), dtype, channels_last)  # Inception's 3x3 stride-1 average pool
        y = empty((32, 192, 35, 35), dtype, channels_last)
        window = dict(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), count_include_pad=False)
        avg_pool.forward(x, y, **window)
        avg_pool.backward(y, x, **window)
        small = empty((32, 192, 7, 7), dtype, channels_last)  # an adaptive 35 -> 7
        avg_pool.forward(x, small)
        avg_pool.backward(small, x)
    return per_layout_and_dtype(options, "avgpool global 7x7 N64 C2048, 3x3s1 and adaptive 35->7 N32 C192", avg_pools)
