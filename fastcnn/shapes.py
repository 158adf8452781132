"""Benchmark shape suites, defined once: ``bench/`` and the profiler both read them from here."""


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
