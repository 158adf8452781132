"""max_pool's benchmark cases: ResNet's stem max-pool, forward + backward, alone and with the
stem's batch norm and ReLU in its prologue (the unit ``convert`` runs) against eager bn → relu →
max-pool and its torch.compile."""
import torch

from ..benchmarking import (ACTIVATION_BATCHES, MEMORY_FORMATS, BenchmarkCase, element_size, random_input,
                            training_steps)
from ..convert import fuse_activation_into
from ..nn import batch_norm_into_max_pool2d
from ..ops.max_pool import bytes_moved, max_pool2d, pool_output_size
from ._static import DTYPES, empty, per_layout_and_dtype

# ResNet's stem max-pool: 3x3, stride 2, padding 1 on the 64 x 112² output of conv1.
SUITES = {"resnet_stem": dict(channels=64, size=112, kernel_size=3, stride=2, padding=1)}
UNIT_OPS = ("batch_norm_relu_max_pool2d",)
PROFILE_OPS = ("max_pool2d",) + UNIT_OPS


class _StemOfTorch(torch.nn.Module):
    """bn → relu → max-pool as eager torch runs it (a ResNet stem after conv1)."""

    def __init__(self, channels, pool):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(channels)
        self.maxpool = torch.nn.MaxPool2d(**pool)

    def forward(self, input):
        return self.maxpool(torch.relu(self.bn(input)))


class _StemOfFastcnn(_StemOfTorch):
    """The same modules converted: the batch norm and its ReLU in the max-pool's prologue."""

    def forward(self, input):
        return batch_norm_into_max_pool2d(input, self.bn, self.maxpool)


def _geometry(suite, batch):
    """(the pool's arguments, channels, size, input elements, output elements) of a suite's case."""
    pool = dict(suite)
    channels, size = pool.pop("channels"), pool.pop("size")
    out_size = pool_output_size(size, pool["kernel_size"], pool["padding"], pool["stride"], 1, False)
    return pool, channels, size, batch * channels * size * size, batch * channels * out_size * out_size


def _input(batch, channels, size, dtype, layout, device):
    generator = torch.Generator(device=device).manual_seed(0)
    return random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()


def _unit_case(suite, batch, dtype, layout):
    pool, channels, size, numel_in, numel_out = _geometry(suite, batch)

    def build(device):
        input = _input(batch, channels, size, dtype, layout, device)
        theirs = _StemOfTorch(channels, pool).to(device=device, memory_format=MEMORY_FORMATS[layout])
        ours = _StemOfFastcnn(channels, pool).to(device=device, memory_format=MEMORY_FORMATS[layout])
        ours.load_state_dict(theirs.state_dict())
        fuse_activation_into(ours.bn, "relu", 0.0)
        return training_steps(ours, theirs, input)

    # The least a fused unit moves: forward reads x and writes the output; backward reads the
    # output's gradient and x and writes x's gradient.
    return BenchmarkCase("batch_norm_relu_max_pool2d", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": (3 * numel_in + 2 * numel_out) * element_size(dtype)}, build)


def _case(suite, batch, dtype, layout):
    pool, channels, size, numel_in, numel_out = _geometry(suite, batch)

    def build(device):
        input = _input(batch, channels, size, dtype, layout, device)
        eager = lambda x: torch.nn.functional.max_pool2d(x, **pool)  # noqa: E731
        return training_steps(lambda x: max_pool2d(x, **pool), eager, input)

    return BenchmarkCase("max_pool2d", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(numel_in, numel_out, element_size(dtype), True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: forward + backward of every suite at the activation batches."""
    suites = [dict(channels=3, size=9, kernel_size=3, stride=2, padding=1)] if smoke else list(SUITES.values())
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    case = _unit_case if op in UNIT_OPS else _case
    return [case(suite, batch, dtype, layout) for suite in suites for batch in batches for dtype in dtypes
            for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_max_pool2d_forward_kernel", "_max_pool2d_backward_kernel")


def static_launches(kernel_module, options):
    """ResNet's stem max-pool, forward and backward, alone and with the stem's batch norm and
    ReLU in its prologue (and their backward sums in its backward), as convert runs it."""
    def pool(dtype, channels_last, normalized=False):
        max_pool = kernel_module("max_pool")
        x = empty((32, 64, 112, 112), dtype, channels_last)
        out = empty((32, 64, 56, 56), dtype, channels_last)
        taps = empty((32, 64, 56, 56), torch.uint8, channels_last)
        geometry = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
        prologue_module = kernel_module("prologue")
        prologue = prologue_module.Prologue(torch.empty((prologue_module.STATISTICS_ROWS, 64)), "relu",
                                            0.0) if normalized else None
        max_pool.forward(x, out, taps, None, **geometry, prologue=prologue)
        grad_in = empty((32, 64, 112, 112), dtype, channels_last)
        sums = torch.empty((max_pool.backward_sum_slots(grad_in.shape, grad_in.stride(1)), 2, 64))
        max_pool.backward(out, taps, grad_in, **geometry,
                          epilogue=(x, prologue, sums) if normalized else None)
    return (per_layout_and_dtype(options, "maxpool3x3s2 N32 C64 112x112", pool)
            + per_layout_and_dtype(options, "batchnorm+relu → maxpool3x3s2 N32 C64 112x112",
                                   lambda dtype, channels_last: pool(dtype, channels_last, True)))


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
    def normalized():  # the stem's batch norm and ReLU in the prologue, its sums in the backward
        max_pool = kernel_module("max_pool")
        x, grad_in = (empty((2, 8, 9, 9), DTYPES["bf16"], True) for _ in range(2))
        out = empty((2, 8, 5, 5), DTYPES["bf16"], True)
        taps = empty((2, 8, 5, 5), torch.uint8, True)
        geometry = dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
        prologue_module = kernel_module("prologue")
        prologue = prologue_module.Prologue(torch.empty((prologue_module.STATISTICS_ROWS, 8)), "relu", 0.0)
        max_pool.forward(x, out, taps, None, **geometry, prologue=prologue)
        sums = torch.empty((max_pool.backward_sum_slots(grad_in.shape, grad_in.stride(1)), 2, 8))
        max_pool.backward(out, taps, grad_in, **geometry, epilogue=(x, prologue, sums))
    return [(f"max_pool {str(dtype)[6:]} {'channels_last' if channels_last else 'nchw'}",
             lambda dtype=dtype, channels_last=channels_last: pool(dtype, channels_last))
            for dtype in (torch.float64, torch.int64, torch.uint8) for channels_last in (False, True)] + [
        ("max_pool bf16 channels_last, batch norm + relu in the prologue", normalized)]
