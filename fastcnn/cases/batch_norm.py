"""batch_norm's benchmark cases: BN+ReLU forward + backward in training on ResNet-50's activations, and BN + identity → ReLU on its block outputs."""
import torch

from ..nn import BatchNorm2dReLU
from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..ops.batch_norm import bytes_moved
from .conv2d import resnet_conv_layers

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
PROFILE_OPS = ("batch_norm_relu", "batch_norm_add_relu")


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


class _BatchNormAddReLU(torch.nn.Module):
    """torchvision's block end as eager torch runs it: bn3, += identity, ReLU."""

    def __init__(self, channels):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(channels)

    def forward(self, input, residual):
        return torch.relu(self.bn(input) + residual)


def _residual_case(channels, size, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        shape = (batch, channels, size, size)
        input = random_input(shape, dtype, layout, device, generator).requires_grad_()
        residual = random_input(shape, dtype, layout, device, generator).requires_grad_()
        return training_steps(BatchNorm2dReLU(channels).to(device), _BatchNormAddReLU(channels).to(device), input,
                              (residual,))

    return BenchmarkCase("batch_norm_add_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True,
                                               residual=True)}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases: BN+ReLU forward + backward in training on ResNet-50's activations
    (batch_norm_relu), and BN + identity → ReLU on its block outputs (batch_norm_add_relu)."""
    residual = op == "batch_norm_add_relu"
    activations = [(5, 7)] if smoke else resnet50_block_outputs() if residual else benchmark_shapes()
    activations = activations[:3] if quick else activations
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1] if quick else ACTIVATION_BATCHES
    case = _residual_case if residual else _case
    return [case(channels, size, batch, dtype, layout) for channels, size in activations for batch in batches
            for dtype in dtypes for layout in layouts]
