"""Benchmark shape suites, defined once: ``bench/`` and the profiler both read them from here."""
from typing import NamedTuple


def resnet50_parameter_shapes():
    """Shapes of torchvision's ResNet-50 parameters (conv, BN weight/bias, fc): 161 tensors,
    25,557,032 elements. Written out from the architecture so that no torchvision is needed."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    in_channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        out_channels = 4 * width
        for block in range(blocks):
            shapes += [(width, in_channels, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (out_channels, width, 1, 1), (out_channels,), (out_channels,)]
            if block == 0:  # projection shortcut
                shapes += [(out_channels, in_channels, 1, 1), (out_channels,), (out_channels,)]
            in_channels = out_channels
    shapes += [(1000, 2048), (1000,)]
    return shapes


def many_small_parameter_shapes(count=2000):
    """Many small tensors (BN vectors, depthwise and narrow convs): launch overhead dominates."""
    sizes = [(64,), (96,), (128, 9), (256,), (32, 3, 3, 3), (144,), (24, 144, 1, 1), (1000,)]
    return [sizes[index % len(sizes)] for index in range(count)]


ADAM_SUITES = {
    "resnet50": resnet50_parameter_shapes,
    "many_small": many_small_parameter_shapes,
}


class ConvLayer(NamedTuple):
    """One conv2d layer of a benchmark suite; ``size`` is the input's height = width."""
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    size: int

    @property
    def out_size(self):
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1


def resnet_conv_layers(depth):
    """Every distinct conv layer shape of torchvision's ResNet-18 (``depth=18``) or ResNet-50
    (``depth=50``, stride in the 3x3 conv as torchvision does), from the architecture."""
    layers = [ConvLayer("conv1", 3, 64, 7, 2, 3, 1, 224)]
    bottleneck = depth == 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    in_channels, size = 64, 56
    for stage, (width, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        out_channels = 4 * width if bottleneck else width
        for block in range(count):
            stride = 2 if block == 0 and stage > 1 else 1
            prefix = f"layer{stage}.{block}"
            if bottleneck:
                layers += [ConvLayer(f"{prefix}.conv1", in_channels, width, 1, 1, 0, 1, size),
                           ConvLayer(f"{prefix}.conv2", width, width, 3, stride, 1, 1, size),
                           ConvLayer(f"{prefix}.conv3", width, out_channels, 1, 1, 0, 1, size // stride)]
            else:
                layers += [ConvLayer(f"{prefix}.conv1", in_channels, width, 3, stride, 1, 1, size),
                           ConvLayer(f"{prefix}.conv2", width, width, 3, 1, 1, 1, size // stride)]
            if block == 0 and (stride != 1 or in_channels != out_channels):
                layers.append(ConvLayer(f"{prefix}.downsample", in_channels, out_channels, 1, stride, 0, 1, size))
            in_channels, size = out_channels, size // stride
    distinct = {}
    for layer in layers:
        distinct.setdefault(layer[1:], layer)
    return list(distinct.values())


# The 3x3 depthwise conv of MobileNetV2's second inverted-residual stage (144 channels, 56x56).
MOBILENET_V2_DEPTHWISE = ConvLayer("mobilenet_v2.features.4.conv.1", 144, 144, 3, 1, 1, 144, 56)

CONV_SUITES = {
    "resnet18": lambda: resnet_conv_layers(18),
    "resnet50": lambda: resnet_conv_layers(50),
    "mobilenet_v2_depthwise": lambda: [MOBILENET_V2_DEPTHWISE],
}
CONV_BATCHES = (64, 256)


# Softmax cross-entropy: (rows N, classes C). N is 64k where the logits stay under 2**28
# elements, fewer rows for the largest vocabularies.
CROSS_ENTROPY_SUITES = {f"C{classes}": (min(65536, 2**28 // classes), classes)
                        for classes in (10, 100, 1000, 32000, 128000)}


def resnet50_activation_shapes():
    """Distinct (channels, height = width) of the activations that ResNet-50's batch norms see
    (each conv's output), from 64 x 112² to 2048 x 7²."""
    return sorted({(layer.out_channels, layer.out_size) for layer in resnet_conv_layers(50)},
                  key=lambda shape: (-shape[1], shape[0]))


# ResNet's stem max-pool: 3x3, stride 2, padding 1 on the 64 x 112² output of conv1.
MAX_POOL_SUITES = {"resnet_stem": dict(channels=64, size=112, kernel_size=3, stride=2, padding=1)}
ACTIVATION_BATCHES = (64, 256)


# Whole-model training throughput (bench/test_resnet_bench.py): torchvision models on synthetic
# 224x224 batches, bf16 autocast, channels_last.
TRAINING_MODELS = {"resnet18": 128, "resnet50": 64}  # model name -> batch size
TRAINING_IMAGE_SIZE = 224
