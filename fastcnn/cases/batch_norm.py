"""batch_norm's benchmark cases: BN+ReLU forward + backward in training on ResNet-50's activations,
and BN + identity → ReLU on its block outputs."""
import torch

from ..convert import fuse_activation_into
from ..nn import BatchNorm2dAct, BatchNorm2dReLU
from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.batch_norm import bytes_moved
from .conv2d import resnet_conv_layers
from ._static import DTYPES, empty, per_layout_and_dtype

def resnet50_activation_shapes():
    """Distinct (channels, height = width) of the activations that ResNet-50's batch norms see
    (each conv's output), from 64 x 112² to 2048 x 7²."""
    return sorted({(layer.out_channels, layer.out_size) for layer in resnet_conv_layers(50)},
                  key=lambda shape: (-shape[1], shape[0]))


def resnet50_block_outputs():
    """(channels, height = width) of ResNet-50's bottleneck outputs, where bn3 + identity → ReLU
    ends each block: 256 x 56² to 2048 x 7²."""
    return [(256, 56), (512, 28), (1024, 14), (2048, 7)]


# Activation shapes (channels, height = width) of a network's batch norms; "resnet50_blocks" are
# the residual cases.
SUITES = {"resnet50": resnet50_activation_shapes, "resnet50_blocks": resnet50_block_outputs}
PROFILE_OPS = ("batch_norm_relu", "batch_norm_add_relu", "batch_norm_add_batch_norm_relu", "batch_norm_prelu")


def benchmark_shapes():
    """The BN+ReLU cases' (channels, size), in order: what the profiler and bench/ time."""
    return SUITES["resnet50"]()


def _case(channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        pair = torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU()).to(device)
        return training_steps(BatchNorm2dReLU(channels).to(device), pair, input)

    return BenchmarkCase("batch_norm_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


def _prelu_case(channels, size, batch, dtype, layout):
    """BN → PReLU(C) (an IResNet's), the slopes fused (``BatchNorm2dAct(activation=nn.PReLU(C))``)
    against torch's two modules; the slopes in the input's dtype, as torch's prelu wants them."""
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        pair = torch.nn.Sequential(torch.nn.BatchNorm2d(channels).to(device),
                                   torch.nn.PReLU(channels).to(device, input.dtype))
        ours = BatchNorm2dAct(channels, activation=torch.nn.PReLU(channels).to(device, input.dtype)).to(device)
        return training_steps(ours, pair, input)

    return BenchmarkCase("batch_norm_prelu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build)


class _BatchNormAddReLU(torch.nn.Module):
    """torchvision's block end as eager torch runs it: bn3, += identity, ReLU."""

    def __init__(self, channels):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(channels)

    def forward(self, input, residual):
        return torch.relu(self.bn(input) + residual)


def _input_and_residual(channels, size, batch, dtype, layout, device):
    """Two inputs of a block's end, requiring their gradients."""
    generator = torch.Generator(device=device).manual_seed(0)
    return [random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
            for _ in range(2)]


def _residual_case(channels, size, batch, dtype, layout):
    def build(device):
        input, residual = _input_and_residual(channels, size, batch, dtype, layout, device)
        return training_steps(BatchNorm2dReLU(channels).to(device), _BatchNormAddReLU(channels).to(device), input,
                              (residual,))

    return BenchmarkCase("batch_norm_add_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True,
                                               residual=True)}, build)


class _BatchNormAddBatchNormReLU(torch.nn.Module):
    """A ResNet downsample block's end: relu(bn3(x) + downsample's bn(r)), eager torch's modules."""

    def __init__(self, channels):
        super().__init__()
        self.bn, self.residual_bn = torch.nn.BatchNorm2d(channels), torch.nn.BatchNorm2d(channels)

    def forward(self, input, residual):
        return torch.relu(self.bn(input) + self.residual_bn(residual))


class _FastcnnBatchNormAddBatchNormReLU(_BatchNormAddBatchNormReLU):
    """The same converted: the downsample's batch norm inside bn3's pass (``residual_norm``)."""

    def __init__(self, channels):
        super().__init__(channels)
        fuse_activation_into(self.bn, "relu", 0.0)
        fuse_activation_into(self.residual_bn, None, 0.0)

    def forward(self, input, residual):
        return self.bn(input, residual, residual_norm=self.residual_bn)


def _residual_norm_case(channels, size, batch, dtype, layout):
    def build(device):
        input, residual = _input_and_residual(channels, size, batch, dtype, layout, device)
        return training_steps(_FastcnnBatchNormAddBatchNormReLU(channels).to(device),
                              _BatchNormAddBatchNormReLU(channels).to(device), input, (residual,))

    # The least it moves: forward reads x and r and writes y; backward reads dy, y, x and r and
    # writes both inputs' gradients.
    numel = batch * channels * size * size
    return BenchmarkCase("batch_norm_add_batch_norm_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": 9 * numel * element_size(dtype)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: BN+ReLU forward + backward in training on ResNet-50's activations
    (batch_norm_relu), and BN + identity → ReLU on its block outputs (batch_norm_add_relu), or
    with the identity a downsample's batch norm (batch_norm_add_batch_norm_relu); BN → PReLU with
    its learnable slopes fused (batch_norm_prelu) on ResNet-50's activations."""
    residual = op in ("batch_norm_add_relu", "batch_norm_add_batch_norm_relu")
    activations = [(5, 7)] if smoke else resnet50_block_outputs() if residual else benchmark_shapes()
    activations = activations[:3] if quick else activations
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    case = {"batch_norm_add_relu": _residual_case, "batch_norm_add_batch_norm_relu": _residual_norm_case,
            "batch_norm_prelu": _prelu_case}.get(op, _case)
    return [case(channels, size, batch, dtype, layout) for channels, size in activations for batch in batches
            for dtype in dtypes for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_partial_stats_kernel", "_backward_sums_kernel",
                        "_apply_kernel", "_backward_apply_kernel")


def _statistics(kernel_module, channels):
    """A statistics buffer as kernels/batch_norm.py's ``statistics`` fills it (kernels/prologue.py's rows)."""
    return torch.empty((kernel_module("prologue").STATISTICS_ROWS, channels))


def static_launches(kernel_module, options):
    """BN+ReLU (C128 28x28) and a ResNet-50 block end, BN + identity → ReLU (C256 56x56, its
    statistics from a convolution's moments), forward and backward in training, as
    fastcnn/ops/batch_norm.py launches them."""
    def bn_relu(dtype, channels_last):
        batch_norm = kernel_module("batch_norm")
        c = 128
        x, y, dx = (empty((32, c, 28, 28), dtype, channels_last).view(32, c, -1) for _ in range(3))
        stats, weight, bias = _statistics(kernel_module, c), torch.ones(c), torch.zeros(c)
        batch_norm.statistics(x, stats, torch.zeros(c), torch.ones(c), weight, bias, training=True, momentum=0.1,
                              eps=1e-5)
        batch_norm.apply(x, None, y, stats, weight, bias, training=True, kind="relu", parameter=0.0)
        batch_norm.backward(y, x, None, dx, None, stats, weight, bias, torch.empty(c), torch.empty(c), training=True,
                            kind="relu", parameter=0.0)

    def bn_add_bn_relu(dtype, channels_last):
        batch_norm = kernel_module("batch_norm")
        c = 256  # the end of ResNet-50's first bottleneck: bn3 + the downsample's batch norm, ReLU
        x, r, y, dx, dr = (empty((32, c, 56, 56), dtype, channels_last).view(32, c, -1) for _ in range(5))
        stats, residual_stats = _statistics(kernel_module, c), _statistics(kernel_module, c)
        weight, bias = torch.ones(c), torch.zeros(c)
        batch_norm.apply(x, r, y, stats, weight, bias, training=True, kind="relu", parameter=0.0,
                         residual_norm=(residual_stats, weight, bias))
        partial, residual_partial = (torch.empty((batch_norm.backward_sum_slices(x), 2, c)) for _ in range(2))
        batch_norm.grad_with_sums(dr, x, r, dx, partial, stats, weight, bias, kind="relu", parameter=0.0, output=y,
                                  residual_norm=(residual_stats, residual_partial))

    def bn_add_relu(dtype, channels_last):
        batch_norm = kernel_module("batch_norm")
        c = 256  # the end of a ResNet-50 bottleneck in stage 1: bn3 + identity, ReLU
        x, r, y, dx, dr = (empty((32, c, 56, 56), dtype, channels_last).view(32, c, -1) for _ in range(5))
        stats, weight, bias = _statistics(kernel_module, c), torch.ones(c), torch.zeros(c)
        # the statistics from the moments conv3's epilogue emitted (kernels/moments.py), as convert runs it
        moments = torch.empty((kernel_module("moments").moment_slots(32 * 56 * 56), 4, c))
        batch_norm.statistics_from_moments(x, moments, stats, torch.zeros(c), torch.ones(c), weight, bias, momentum=0.1,
                                           eps=1e-5)
        batch_norm.apply(x, r, y, stats, weight, bias, training=True, kind="relu", parameter=0.0)
        # g = relu'·dy from the saved output with its per-channel sums, then batch norm's backward of g
        partial = torch.empty((batch_norm.backward_sum_slices(x), 2, c))
        batch_norm.grad_with_sums(dr, x, None, dr, partial, stats, weight, bias, kind="relu", parameter=0.0, output=y)
        batch_norm.backward_from_sums(dr, x, dx, partial, stats, weight, bias, torch.empty(c), torch.empty(c),
                                      training=True)
    return (per_layout_and_dtype(options, "batchnorm+relu N32 C128 28x28", bn_relu)
            + per_layout_and_dtype(options, "batchnorm+add+relu N32 C256 56x56", bn_add_relu)
            + per_layout_and_dtype(options, "batchnorm+add+batchnorm+relu N32 C256 56x56", bn_add_bn_relu)
            + per_layout_and_dtype(options, PRELU_SCENARIO, lambda dtype, channels_last: _bn_prelu(
                kernel_module, dtype, channels_last)))


PRELU_SCENARIO = "batchnorm+prelu IResNet N32 C128 28x28"


def _bn_prelu(kernel_module, dtype, channels_last):
    """BN → PReLU(C), as face-recognition ResNets (IResNet) run it, fused: the slopes read in the
    apply, their gradient summed in the backward's sums pass; and with a residual (its pass that
    writes g and the sums, the slopes' third, in eval too)."""
    batch_norm = kernel_module("batch_norm")
    c = 128
    x, r, y, dy, dx = (empty((32, c, 28, 28), dtype, channels_last).view(32, c, -1) for _ in range(5))
    stats, weight, bias = _statistics(kernel_module, c), torch.ones(c), torch.zeros(c)
    slope, grad_slope = torch.empty(c, dtype=dtype), torch.empty(c, dtype=dtype)  # PReLU's, in the input's dtype
    batch_norm.apply(x, None, y, stats, weight, bias, training=True, kind="prelu", parameter=0.0, slope=slope)
    batch_norm.backward(dy, x, None, dx, None, stats, weight, bias, torch.empty(c), torch.empty(c), training=True,
                        kind="prelu", parameter=0.0, slope=slope, grad_slope=grad_slope)
    partial = torch.empty((batch_norm.backward_sum_slices(x), 3, c))
    batch_norm.grad_with_sums(dy, x, r, y, partial, stats, weight, bias, kind="prelu", parameter=0.0, slope=slope,
                              training=False)
    batch_norm.backward_from_sums(y, x, dx, partial, stats, weight, bias, torch.empty(c), torch.empty(c),
                                  training=False, grad_slope=grad_slope)


def compile_variants(kernel_module):
    """bf16 channels_last: the residual's gradient g = act'(z)·dy taken from the saved output
    (ReLU: the static launches compile it for sm_90 only) and recomputed from the saved input and
    residual (SiLU), with its sums in training and alone in eval, and (ReLU) with the residual a
    second batch norm's input; eval (the running statistics, no shift) without weight or bias."""
    def residual_grad(kind):
        batch_norm = kernel_module("batch_norm")
        c = 64
        x, r, y, dy, g = (empty((4, c, 7, 7), DTYPES["bf16"], True).view(4, c, -1) for _ in range(5))
        stats, weight, bias = _statistics(kernel_module, c), torch.ones(c), torch.zeros(c)
        batch_norm.apply(x, r, y, stats, weight, bias, training=True, kind=kind, parameter=0.0)
        from_output = kind == "relu"
        partial = torch.empty((batch_norm.backward_sum_slices(x), 2, c))
        batch_norm.grad_with_sums(dy, x, None if from_output else r, g, partial, stats, weight, bias, kind=kind,
                                  parameter=0.0, output=y if from_output else None)
        batch_norm.backward(dy, y if from_output else x, None if from_output else r, None, g, stats, weight, bias,
                            None, None, training=False, kind=kind, parameter=0.0, output=y if from_output else None)
        if from_output:  # the residual a downsample's batch norm input: bn(x) + bn_r(r), and both norms' sums
            batch_norm.apply(x, r, y, stats, weight, bias, training=True, kind=kind, parameter=0.0,
                             residual_norm=(stats, weight, bias))
            batch_norm.grad_with_sums(dy, x, r, g, partial, stats, weight, bias, kind=kind, parameter=0.0, output=y,
                                      residual_norm=(stats, torch.empty_like(partial)))

    def evaluation():
        batch_norm = kernel_module("batch_norm")
        c = 64
        x, y, dy, dx = (empty((4, c, 7, 7), DTYPES["bf16"], True).view(4, c, -1) for _ in range(4))
        stats = _statistics(kernel_module, c)
        batch_norm.statistics(x, stats, torch.zeros(c), torch.ones(c), None, None, training=False, momentum=0.1,
                              eps=1e-5)
        batch_norm.apply(x, None, y, stats, None, None, training=False, kind="relu", parameter=0.0)
        batch_norm.backward(dy, x, None, dx, None, stats, None, None, None, None, training=False, kind="relu",
                            parameter=0.0)

    def bf16_parameters():  # a model cast to bf16: the parameters' gradients written in bf16
        batch_norm = kernel_module("batch_norm")
        c = 64
        x, y, dy, dx = (empty((4, c, 7, 7), DTYPES["bf16"], True).view(4, c, -1) for _ in range(4))
        stats = _statistics(kernel_module, c)
        weight, bias, grad_weight, grad_bias = (torch.empty(c, dtype=DTYPES["bf16"]) for _ in range(4))
        batch_norm.statistics(x, stats, None, None, weight, bias, training=True, momentum=0.1, eps=1e-5)
        batch_norm.apply(x, None, y, stats, weight, bias, training=True, kind=None, parameter=0.0)
        batch_norm.backward(dy, x, None, dx, None, stats, weight, bias, grad_weight, grad_bias, training=True,
                            kind=None, parameter=0.0)
    return [(f"batchnorm+add+{kind} residual grad bf16 channels_last", lambda kind=kind: residual_grad(kind))
            for kind in ("relu", "silu")] + [("batchnorm+relu eval, no affine, bf16 channels_last", evaluation),
                                             ("batchnorm bf16 parameters channels_last", bf16_parameters),
                                             (f"{PRELU_SCENARIO} bf16 channels_last",
                                              lambda: _bn_prelu(kernel_module, DTYPES["bf16"], True))]
