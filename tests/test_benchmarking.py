"""The benchmark formulas and shape suites, checked against hand-counted cases (no GPU needed)."""
import pytest

from fastcnn.benchmarking import conv2d_flops, conv2d_speedup_summary, geometric_mean, tflops
from fastcnn.shapes import CONV_SUITES, ConvLayer, resnet_conv_layers


def test_conv2d_flops_hand_counted():
    # 4x4 output, 3 output channels, 2 input channels, 3x3 taps: 16 * 3 * 2 * 9 multiply-adds.
    assert conv2d_flops(1, ConvLayer("t", 2, 3, 3, 1, 1, 1, 4)) == 2 * 16 * 3 * 2 * 9
    # depthwise: each output channel reads one input channel; stride 2 halves the output side.
    assert conv2d_flops(2, ConvLayer("dw", 8, 8, 3, 2, 1, 8, 8)) == 2 * 2 * 4 * 4 * 8 * 1 * 9
    assert tflops(2e12, 1000.0) == pytest.approx(2.0)


def test_resnet_suites_match_the_architectures():
    resnet18, resnet50 = resnet_conv_layers(18), resnet_conv_layers(50)
    assert resnet18[0] == ConvLayer("conv1", 3, 64, 7, 2, 3, 1, 224) and resnet18[0].out_size == 112
    assert len(resnet18) == 11 and len(resnet50) == 23  # distinct shapes
    assert {layer.out_size for layer in resnet50} == {112, 56, 28, 14, 7}
    # ResNet-50 multiply-adds over its distinct layers can't exceed the whole network's 4.1 GMACs.
    assert sum(conv2d_flops(1, layer) for layer in resnet50) / 2 < 4.1e9
    assert CONV_SUITES["mobilenet_v2_depthwise"]()[0].groups == 144


def test_speedup_summary_is_a_geometric_mean():
    records = [dict(suite="conv2d", implementation="fastcnn", depthwise=False, kernel=k, op="conv2d_forward",
                    precision="bf16_channels_last", speedup_vs_cudnn=s) for k, s in ((1, 2.0), (3, 0.5))]
    summary = conv2d_speedup_summary(records + [dict(records[0], implementation="cudnn")])
    assert summary["conv2d_forward/bf16_channels_last/all"] == pytest.approx(1.0)
    assert summary["conv2d_forward/bf16_channels_last/1x1"] == pytest.approx(2.0)
    assert geometric_mean([]) != geometric_mean([])  # NaN for no data


def test_cross_entropy_bytes_hand_counted():
    from fastcnn.benchmarking import cross_entropy_bytes
    from fastcnn.shapes import CROSS_ENTROPY_SUITES

    # 3 rows of 5 fp32 logits: read 60 bytes, write 60 bytes of gradient, read 3 int64 targets.
    assert cross_entropy_bytes(3, 5, 4) == 60 + 60 + 24
    assert CROSS_ENTROPY_SUITES["C1000"] == (65536, 1000) and CROSS_ENTROPY_SUITES["C128000"][0] == 2097


def test_memory_bound_byte_counts_and_saved_tensors():
    import torch

    from fastcnn.benchmarking import batch_norm_relu_bytes, max_pool_bytes, saved_tensor_bytes
    from fastcnn.shapes import resnet50_activation_shapes

    assert batch_norm_relu_bytes(10, 4, backward=False) == 80  # read x, write y
    assert batch_norm_relu_bytes(10, 2, backward=True) == 100  # + read x, dy; write dx
    assert max_pool_bytes(16, 4, 4, backward=True) == 160
    shapes = resnet50_activation_shapes()
    assert shapes[0] == (64, 112) and (2048, 7) in shapes
    x = torch.randn(3, 4, requires_grad=True)
    saved, _ = saved_tensor_bytes(lambda: (x * x).sum())  # mul saves both operands
    assert saved == 2 * 12 * 4
