"""Plain-PyTorch replicas of torchvision's block types, so that CI covers each without
torchvision: a ConvNeXt with torchvision's block and LayerNorm2d, a U-Net-style residual block
with GroupNorm + SiLU, a MobileNetV2 (inverted residuals, ReLU6), a RegNet (bottleneck blocks
with squeeze-excitation, ``proj(x) + f(x)``) and an EfficientNet (MBConv: SiLU,
squeeze-excitation, stochastic depth before the residual add). They hold only ``torch.nn``
modules; ``fastcnn.convert`` is what swaps fastcnn in."""
import torch
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d, line for line: LayerNorm over the channels of NCHW
    input by permuting to NHWC and back (``fastcnn.convert`` knows this class and torchvision's)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7x7 conv, LayerNorm over C of the NHWC view, an
    inverted-bottleneck MLP with GELU, layer scale, residual add."""

    def __init__(self, dim, layer_scale=1e-1):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]), nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x):
        return x + self.layer_scale * self.block(x)


class TinyConvNeXt(nn.Module):
    """ConvNeXt with torchvision's structure at toy size: a patchify stem with LayerNorm2d, a
    block, a LayerNorm2d + strided-conv downsample, a block, global average pool and a
    LayerNorm2d → flatten → linear head."""

    def __init__(self, classes=5, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, width, 2, stride=2), LayerNorm2d(width, eps=1e-6)), CNBlock(width),
            nn.Sequential(LayerNorm2d(width, eps=1e-6), nn.Conv2d(width, 2 * width, 2, stride=2)), CNBlock(2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(2 * width, eps=1e-6), nn.Flatten(1), nn.Linear(2 * width, classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


class GroupNormBlock(nn.Module):
    """A diffusion U-Net's residual block: GroupNorm → SiLU → conv, twice (the second after a
    dropout), plus the input; the first SiLU is a module, the second a function call."""

    def __init__(self, channels, groups=4, dropout=0.1):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.act = nn.SiLU()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.dropout(nn.functional.silu(self.norm2(h))))
        return x + h


def conv_norm_act(in_channels, out_channels, kernel_size=3, stride=1, groups=1, activation=nn.ReLU):
    """torchvision's Conv2dNormActivation: a plain Sequential of conv, BN and (unless None) the
    activation."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, *([activation()] if activation is not None else []))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand (1x1, ReLU6), depthwise 3x3 (ReLU6), project (1x1, BN and no
    activation) in one Sequential, plus the input when the shape allows (``x + self.conv(x)``)."""

    def __init__(self, in_channels, out_channels, stride=1, expand=4):
        super().__init__()
        hidden = in_channels * expand
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(conv_norm_act(in_channels, hidden, 1, activation=nn.ReLU6),
                                  conv_norm_act(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
                                  nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class TinyMobileNetV2(nn.Module):
    """MobileNetV2's structure at toy size: ReLU6 stem, inverted residuals with and without the
    residual, the head's functional ``F.adaptive_avg_pool2d``, dropout and a linear classifier."""

    def __init__(self, classes=5, width=8):
        super().__init__()
        self.features = nn.Sequential(conv_norm_act(3, width, 3, 2, activation=nn.ReLU6),
                                      InvertedResidual(width, width), InvertedResidual(width, 2 * width, 2),
                                      InvertedResidual(2 * width, 2 * width),
                                      conv_norm_act(2 * width, 4 * width, 1, activation=nn.ReLU6))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * width, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision's squeeze-excitation: global average pool, 1x1 conv, ReLU, 1x1 conv, sigmoid,
    and the broadcast multiply of the input by that per-channel scale."""

    def __init__(self, channels, squeezed):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class ResBottleneckBlock(nn.Module):
    """RegNet's block: ``activation(proj(x) + f(x))``, f = 1x1, grouped 3x3, squeeze-excitation,
    1x1 with BN and no activation (a Sequential), proj a 1x1 conv + BN when the shape changes."""

    def __init__(self, in_channels, out_channels, stride=1, group_width=4):
        super().__init__()
        self.proj = (conv_norm_act(in_channels, out_channels, 1, stride, activation=None)
                     if stride != 1 or in_channels != out_channels else None)
        self.f = nn.Sequential(conv_norm_act(in_channels, out_channels, 1),
                               conv_norm_act(out_channels, out_channels, 3, stride, out_channels // group_width),
                               SqueezeExcitation(out_channels, max(1, in_channels // 4)),
                               conv_norm_act(out_channels, out_channels, 1, activation=None))
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class TinyRegNet(nn.Module):
    """RegNet's structure at toy size: stem, a block with a projection, one without, average
    pool module, linear head."""

    def __init__(self, classes=5, width=8):
        super().__init__()
        self.stem = conv_norm_act(3, width, 3, 2)
        self.trunk = nn.Sequential(ResBottleneckBlock(width, 2 * width, 2), ResBottleneckBlock(2 * width, 2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk(self.stem(x))), 1))


class StochasticDepth(nn.Module):
    """torchvision's StochasticDepth: in training, each sample's residual branch ("row") or the
    whole batch's ("batch") is zeroed with probability ``p``, the rest scaled by 1/(1 - p)."""

    def __init__(self, p, mode="row"):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        shape = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * (noise / (1.0 - self.p) if self.p < 1.0 else noise)


class MBConv(nn.Module):
    """EfficientNet's block: expand (1x1, SiLU), depthwise (SiLU), squeeze-excitation (SiLU,
    sigmoid), project (1x1, BN, no activation), then, with the residual, stochastic depth and
    ``result += input``."""

    def __init__(self, in_channels, out_channels, stride=1, expand=4, drop=0.2):
        super().__init__()
        hidden = in_channels * expand
        self.use_res_connect = stride == 1 and in_channels == out_channels
        se = SqueezeExcitation(hidden, max(1, in_channels // 4))
        se.activation = nn.SiLU()
        self.block = nn.Sequential(conv_norm_act(in_channels, hidden, 1, activation=nn.SiLU),
                                   conv_norm_act(hidden, hidden, 3, stride, groups=hidden, activation=nn.SiLU), se,
                                   conv_norm_act(hidden, out_channels, 1, activation=None))
        self.stochastic_depth = StochasticDepth(drop, "row")

    def forward(self, input):
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += input
        return result


class TinyEfficientNet(nn.Module):
    """EfficientNet's structure at toy size: SiLU stem, MBConv blocks with and without the
    residual, an average-pool module, dropout and a linear classifier."""

    def __init__(self, classes=5, width=8):
        super().__init__()
        self.features = nn.Sequential(conv_norm_act(3, width, 3, 2, activation=nn.SiLU), MBConv(width, width),
                                      MBConv(width, 2 * width, 2), MBConv(2 * width, 2 * width))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * width, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
