"""conv2d's benchmark cases: its three passes, each timed alone against ATen's convolution (cuDNN
on a GPU), on every distinct layer of ResNet-18/50 and MobileNetV2's depthwise conv, and the
speedup summary per layer kind that the README's goals are stated in."""
from typing import NamedTuple

import torch

from ..benchmarking import MEMORY_FORMATS, BenchmarkCase, compiled, geometric_mean, random_input, training_steps
from ..convert import fuse_activation_into
from ..nn import batch_norm_into_conv2d
from ..ops.conv2d import _kernels, conv2d_output_size, dot_precision, flops
from ._static import DTYPES, CHANNELS_LAST, empty, wide_buffer


class ConvLayer(NamedTuple):
    """One conv2d layer of a benchmark suite (square input and kernel); ``size`` is the input's
    height = width."""
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    size: int
    dilation: int = 1

    @property
    def out_size(self):
        return conv2d_output_size((self.size,), (self.kernel,), (2 * self.padding,), (self.dilation,),
                                  (self.stride,))[0]

    def flops(self, batch):
        return flops(batch, self.in_channels, self.out_channels, self.groups, (self.kernel,) * 2,
                     (self.out_size,) * 2)


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

SUITES = {
    "resnet18": lambda: resnet_conv_layers(18),
    "resnet50": lambda: resnet_conv_layers(50),
    "mobilenet_v2_depthwise": lambda: [MOBILENET_V2_DEPTHWISE],
}
BATCHES = (64, 256)
PASSES = ("forward", "input_grad", "weight_grad")
# The profiler's names for the three passes, each timed alone, and for batch norm + ReLU inside the
# convolution (``fastcnn.batch_norm_conv2d``, what convert makes of bn → relu → conv) against
# torch's three layers: forward alone, and forward + backward.
UNIT_OPS = ("batch_norm_relu_conv2d_forward", "batch_norm_relu_conv2d")
PROFILE_OPS = tuple(f"conv2d_{conv_pass}" for conv_pass in PASSES) + UNIT_OPS


def unit_layers():
    """The convolutions convert runs a batch norm inside: ResNet-50's bottleneck 3x3 and 1x1
    convs after bn1 and bn2, and MobileNetV2's depthwise conv after the expansion's BN+ReLU6."""
    return [layer for layer in resnet_conv_layers(50) if layer.name.endswith((".conv2", ".conv3"))] + [
        MOBILENET_V2_DEPTHWISE]


class _UnitOfTorch(torch.nn.Module):
    """bn → relu → conv as eager torch runs it."""

    def __init__(self, layer):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(layer.in_channels)
        self.conv = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding,
                                    layer.dilation, layer.groups, bias=False)

    def forward(self, input):
        return self.conv(torch.relu(self.bn(input)))


class _UnitOfFastcnn(_UnitOfTorch):
    """The same modules converted: the batch norm and its ReLU in the convolution's prologue."""

    def forward(self, input):
        return batch_norm_into_conv2d(input, self.bn, self.conv)


def _unit_case(op, layer, batch, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, layer.in_channels, layer.size, layer.size), dtype, layout, device, generator)
        theirs = _UnitOfTorch(layer).to(device=device, memory_format=MEMORY_FORMATS[layout])
        ours = _UnitOfFastcnn(layer).to(device=device, memory_format=MEMORY_FORMATS[layout])
        ours.load_state_dict(theirs.state_dict())
        fuse_activation_into(ours.bn, "relu", 0.0)
        if dtype != "fp32":  # the network's parameters in the activations' dtype, the norm's kept fp32
            for model in (ours, theirs):
                model.conv.to(DTYPES[dtype])
        if op == "batch_norm_relu_conv2d":
            return training_steps(ours, theirs, input.requires_grad_())
        theirs_compiled = compiled(theirs)
        return {"fastcnn": lambda: ours(input), "eager": lambda: theirs(input),
                "torch_compile": lambda: theirs_compiled(input)}

    return BenchmarkCase(op, f"{layer.name}/n{batch}", dtype, layout,
                         {"flops": layer.flops(batch) * (3 if op == "batch_norm_relu_conv2d" else 1)}, build,
                         labels={"layer_kind": layer_kind(layer), "batch": batch})


def layer_kind(layer):
    """'depthwise', '1x1' or 'spatial': the kinds of conv layer the README sets goals for."""
    return "depthwise" if layer.groups > 1 and layer.groups == layer.in_channels else (
        "1x1" if layer.kernel == 1 else "spatial")


def speedup_summary(records):
    """Geometric-mean speedup of fastcnn over cuDNN (the conv cases' eager baseline) per (pass,
    dtype/layout, layer kind), the figures the README sets goals for; ``records`` in the
    catalogue's schema (fastcnn.reporting.figures), from the profiler or bench/."""
    groups = {}
    for record in records:
        if not record["op"].startswith("conv2d_") or record.get("implementation") != "fastcnn":
            continue
        precision = f"{record['dtype']}_{record['layout']}"
        for key in ((record["op"], precision, "all"), (record["op"], precision, record["layer_kind"])):
            groups.setdefault(key, []).append(record["speedup_vs_eager"])
    return {"/".join(key): geometric_mean(values) for key, values in sorted(groups.items())}


def pass_launcher(conv_pass, layer, input, weight, grad_out):
    """A zero-argument callable that launches fastcnn's kernels for one pass on preallocated
    operands (no checks, no allocation: what the benchmarks time), and the tensor it writes."""
    kernels = _kernels()
    arguments = dict(stride=(layer.stride,) * 2, padding=(layer.padding,) * 2, dilation=(layer.dilation,) * 2,
                     groups=layer.groups, dot_precision=dot_precision(input))
    if conv_pass == "forward":
        out = torch.empty_like(grad_out)
        return (lambda: kernels.forward(input, weight, None, out, **arguments)), out
    if conv_pass == "input_grad":
        grad_input = torch.empty_like(input)
        return (lambda: kernels.input_grad(grad_out, weight, grad_input, **arguments)), grad_input
    grad_weight = torch.empty_like(weight)
    return (lambda: kernels.weight_grad(input, grad_out, grad_weight, **arguments)), grad_weight


def aten_pass(conv_pass, layer, input, weight, grad_out):
    """The same pass through ATen's convolution (cuDNN on a GPU), one output requested."""
    stride, padding, dilation = [layer.stride] * 2, [layer.padding] * 2, [layer.dilation] * 2
    if conv_pass == "forward":
        return lambda: torch.ops.aten.convolution(input, weight, None, stride, padding, dilation, False, [0, 0],
                                                  layer.groups)
    mask = [conv_pass == "input_grad", conv_pass == "weight_grad", False]
    index = 0 if mask[0] else 1
    return lambda: torch.ops.aten.convolution_backward(grad_out, input, weight, None, stride, padding, dilation,
                                                       False, [0, 0], layer.groups, mask)[index]


def operands(layer, batch, dtype, layout, device, generator):
    """(input, weight, grad_out) of ``layer`` at ``batch``, random, in ``layout``."""
    input = random_input((batch, layer.in_channels, layer.size, layer.size), dtype, layout, device, generator)
    weight = random_input((layer.out_channels, layer.in_channels // layer.groups, layer.kernel, layer.kernel),
                          dtype, layout, device, generator)
    grad_out = random_input((batch, layer.out_channels, layer.out_size, layer.out_size), dtype, layout, device,
                            generator)
    return input, weight, grad_out


def _case(conv_pass, layer, batch, dtype, layout):
    def build(device):
        # cuDNN runs the algorithm it finds fastest for the shape, as tuned models have it; its
        # TF32 setting is left as it is, and fastcnn follows it (uses_tf32).
        if torch.device(device).type == "cuda":
            torch.backends.cudnn.benchmark = True
        generator = torch.Generator(device=device).manual_seed(0)
        tensors = operands(layer, batch, dtype, layout, device, generator)
        launch, target = pass_launcher(conv_pass, layer, *tensors)
        theirs = aten_pass(conv_pass, layer, *tensors)

        def ours():
            launch()
            return target
        return {"fastcnn": ours, "eager": theirs, "torch_compile": compiled(theirs)}

    return BenchmarkCase(f"conv2d_{conv_pass}", f"{layer.name}/n{batch}", dtype, layout, {"flops": layer.flops(batch)},
                         build, labels={"layer_kind": layer_kind(layer), "batch": batch})


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The profiler's cases of ``op`` (one of PROFILE_OPS): every distinct layer of SUITES at
    BATCHES (a few layers at batch 64 with ``quick``; two tiny layers for the CPU smoke check);
    the batch-norm units on ``unit_layers``."""
    if op in UNIT_OPS:
        layers = ([ConvLayer("smoke", 5, 6, 3, 2, 1, 1, 9), ConvLayer("smoke_dw", 4, 4, 3, 1, 1, 4, 7)] if smoke
                  else unit_layers()[:3] if quick else unit_layers())
        batches = (2,) if smoke else BATCHES[:1] if quick else BATCHES
        return [_unit_case(op, layer, batch, dtype, layout)
                for layer in layers for batch in batches for dtype in dtypes for layout in layouts]
    if smoke:
        layers = [ConvLayer("smoke", 5, 6, 3, 2, 1, 1, 9), ConvLayer("smoke_dw", 4, 4, 3, 1, 1, 4, 7)]
        batches = (2,)
    else:
        layers = [layer for suite in SUITES.values() for layer in suite()]
        layers = layers[:4] if quick else list({layer[1:]: layer for layer in layers}.values())
        batches = BATCHES[:1] if quick else BATCHES
    return [_case(op[len("conv2d_"):], layer, batch, dtype, layout)
            for layer in layers for batch in batches for dtype in dtypes for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
def static_launches(kernel_module, options):
    """The three passes (and the bias gradient) of a 3x3 conv in each layout and dtype, a 1x1 conv with
    channels_last and NCHW weights, and a depthwise 3x3."""
    out = []

    def conv_case(label, dtype_name, precision, layout, n, c, k, h, w, r, s, stride, pad, groups=1, bias=False,
                  passes=("forward", "input_grad", "weight_grad"), weight_layout=None, activation=False,
                  moments=False):
        def run():
            conv2d = kernel_module("conv2d")
            dtype = DTYPES[dtype_name]
            cl = CHANNELS_LAST[layout]
            p = (h + 2 * pad - r) // stride + 1
            q = (w + 2 * pad - s) // stride + 1
            x = empty((n, c, h, w), dtype, cl)
            weight = empty((k, c // groups, r, s), dtype, CHANNELS_LAST[weight_layout or layout])
            y = empty((n, k, p, q), dtype, cl)
            b = empty((k,), dtype) if bias else None
            geo = dict(stride=(stride, stride), padding=(pad, pad), dilation=(1, 1), groups=groups)
            # A batch norm (batch statistics, affine) and ``activation`` in the input prologue.
            prologue_module = conv2d.conv2d_gemm.input_prologue
            prologue = None if not activation else prologue_module.Prologue(
                empty((prologue_module.STATISTICS_ROWS, c), torch.float32), activation, 0.0)
            # ``moments``: the output's summaries for the batch norm after it (kernels/moments.py)
            summaries = torch.empty((kernel_module("moments").moment_slots(n * p * q), 4, k)) if moments else None
            if "forward" in passes:
                conv2d.forward(x, weight, b, y, dot_precision=precision, prologue=prologue, moments=summaries, **geo)
            if "input_grad" in passes:
                # with a prologue, batch norm's backward sums in the epilogue, as convert runs it
                grad_input = empty((n, c, h, w), dtype, cl)
                epilogue = None if prologue is None else (
                    x, prologue, torch.empty((conv2d.input_grad_sum_slots(grad_input, (stride, stride), groups), 2, c)))
                conv2d.input_grad(y, weight, grad_input, dot_precision=precision,
                                  **({} if epilogue is None else dict(epilogue=epilogue)), **geo)
            if "weight_grad" in passes:
                conv2d.weight_grad(x, y, empty((k, c // groups, r, s), dtype, cl), dot_precision=precision,
                                   prologue=prologue, **geo)
            if bias:
                conv2d.bias_grad(y, empty((k,), dtype))
        wl = f" (weights {weight_layout})" if weight_layout and weight_layout != layout else ""
        return (f"{label} {layout}{wl} {dtype_name}{'/' + precision if dtype_name == 'fp32' else ''}", run)

    conv_dtypes = [(name, precision) for name, precision in (("bf16", "ieee"), ("fp16", "ieee"), ("fp32", "tf32"))
                   if name in options.dtypes]
    if options.fp32_ieee:
        conv_dtypes.append(("fp32", "ieee"))
    for layout in options.layouts:
        for dtype_name, precision in conv_dtypes:
            out.append(conv_case("conv3x3 N32 C128 K128 28x28 s1 p1", dtype_name, precision, layout,
                                 32, 128, 128, 28, 28, 3, 3, 1, 1, bias=True))
    if options.conv1x1:
        # Channels_last model, and channels_last activations with a contiguous (NCHW) weight, whose
        # 1x1 strides are (C, 1, 1, 1): stride 1 in the unit dims turns them into constants.
        out.append(conv_case("conv1x1 N32 C256 K64 56x56 s1", "bf16", "ieee", "channels_last",
                             32, 256, 64, 56, 56, 1, 1, 1, 0))
        out.append(conv_case("conv1x1 N32 C256 K64 56x56 s1", "bf16", "ieee", "channels_last",
                             32, 256, 64, 56, 56, 1, 1, 1, 0, weight_layout="nchw"))
    for layout in options.layouts:
        for dtype_name in options.dtypes:
            out.append(conv_case("depthwise3x3 N32 C128 28x28 s1 p1", dtype_name, "ieee", layout,
                                 32, 128, 128, 28, 28, 3, 3, 1, 1, groups=128, bias=False))
    # The input prologue (batch norm + activation as the input is loaded) and the moments epilogue
    # (the output's summaries for the next batch norm): forward and the recomputing grad-weight of
    # the layers convert fuses them into, beside the plain ones above; as a bottleneck runs them,
    # conv1 (moments), conv2 and conv3 (prologue and moments), and MobileNetV2's depthwise.
    if "bf16" in options.dtypes and "channels_last" in options.layouts:
        prologue_passes = ("forward", "input_grad", "weight_grad")
        out.append(conv_case("conv3x3 N32 C128 K128 28x28 s1 p1 +bn+relu prologue +moments", "bf16", "ieee",
                             "channels_last", 32, 128, 128, 28, 28, 3, 3, 1, 1, passes=prologue_passes,
                             activation="relu", moments=True))
        if options.conv1x1:
            out.append(conv_case("conv1x1 N32 C256 K64 56x56 s1 +moments", "bf16", "ieee", "channels_last",
                                 32, 256, 64, 56, 56, 1, 1, 1, 0, passes=("forward",), moments=True))
            out.append(conv_case("conv1x1 N32 C64 K256 56x56 s1 +bn+relu prologue +moments", "bf16", "ieee",
                                 "channels_last", 32, 64, 256, 56, 56, 1, 1, 1, 0, passes=prologue_passes,
                                 activation="relu", moments=True))
        out.append(conv_case("depthwise3x3 N32 C128 28x28 s1 p1 +bn+relu6 prologue +moments", "bf16", "ieee",
                             "channels_last", 32, 128, 128, 28, 28, 3, 3, 1, 1, groups=128,
                             passes=prologue_passes, activation="relu6", moments=True))
    return out


def compile_variants(kernel_module):
    """The three passes in bf16, fp16 and fp32 (TF32) with int64 indexing (an input whose batch
    stride puts its last element past 2**31: a view into ``_static.wide_buffer``), and at
    batch 1 on a 1x1 layer with unit strides (integers equal to 1 become constants at launch)."""
    def passes(dtype_name, wide):
        conv2d = kernel_module("conv2d")
        dtype = DTYPES[dtype_name]
        precision = "tf32" if dtype_name == "fp32" else "ieee"
        if wide:
            n, c, k, size, kernel = 2, 16, 16, 9, 3
            x = wide_buffer(dtype).as_strided((n, c, size, size), (2**31, 1, size * c, c))
        else:
            n, c, k, size, kernel = 1, 32, 16, 8, 1
            x = empty((n, c, size, size), dtype, True)
        padding = kernel // 2
        weight = empty((k, c, kernel, kernel), dtype, True)
        y = empty((n, k, size, size), dtype, True)
        geometry = dict(stride=(1, 1), padding=(padding, padding), dilation=(1, 1), groups=1, dot_precision=precision)
        conv2d.forward(x, weight, empty((k,), dtype), y, **geometry)
        conv2d.input_grad(y, weight, x, **geometry)
        # with int64 indexing, grad-weight of a dy whose pixels are not one run (a column-sliced view)
        dy = empty((n, k, size, size + 1), dtype, True)[..., :size] if wide else y
        conv2d.weight_grad(x, dy, empty((k, c, kernel, kernel), dtype, True), **geometry)
    def prologue_passes(dtype_name, kind, normalised, groups):
        conv2d = kernel_module("conv2d")
        dtype = DTYPES[dtype_name]
        n, c, k, size = 2, 32, 32, 8
        x = empty((n, c, size, size), dtype, True)
        weight = empty((k, c // groups, 3, 3), dtype, True)
        y = empty((n, k, size, size), dtype, True)
        prologue_module = conv2d.conv2d_gemm.input_prologue
        prologue = None if not normalised else prologue_module.Prologue(
            empty((prologue_module.STATISTICS_ROWS, c), torch.float32), kind, 0.1)
        geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=groups,
                        dot_precision="tf32" if dtype_name == "fp32" else "ieee")
        moments = None if not normalised else torch.empty((kernel_module("moments").moment_slots(n * size * size),
                                                             4, k))
        conv2d.forward(x, weight, None, y, prologue=prologue, moments=moments, **geometry)
        conv2d.weight_grad(x, y, empty((k, c // groups, 3, 3), dtype, True), prologue=prologue, **geometry)
        # grad-input, with batch norm's backward sums when normalised (GEMM and depthwise)
        grad_input = empty((n, c, size, size), dtype, True)
        sums = torch.empty((conv2d.input_grad_sum_slots(grad_input, (1, 1), groups), 2, c))
        conv2d.input_grad(y, weight, grad_input, epilogue=None if prologue is None else (x, prologue, sums), **geometry)
    # not normalised: the depthwise kernels without a prologue or moments (the variants' other
    # launches are GEMMs); the rest with both.
    prologues = [(f"conv2d prologue {kind if normalised else 'off'} {dtype_name}"
                  f"{' depthwise' if groups > 1 else ''}",
                  lambda dtype_name=dtype_name, kind=kind, normalised=normalised, groups=groups:
                  prologue_passes(dtype_name, kind, normalised, groups))
                 for dtype_name, kind, normalised, groups in (
                     ("fp16", None, True, 1), ("fp32", "silu", True, 1), ("bf16", "gelu", True, 1),
                     ("fp16", "hardswish", True, 32), ("bf16", None, False, 32))]
    return [(f"conv2d {'int64 indexing' if wide else 'batch 1 1x1'} {dtype_name}",
             lambda dtype_name=dtype_name, wide=wide: passes(dtype_name, wide))
            for dtype_name in ("bf16", "fp16", "fp32") for wide in (True, False)] + prologues
