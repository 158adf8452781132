"""fastcnn.convert: module swaps, BN→activation and BN→add→activation fusion found by fx tracing
(torchvision's double-ReLU block, MobileNetV2's and RegNet's blocks included), functional swaps,
the fallback for models that cannot be traced, checkpoints both ways, the same outputs and
training trajectory as the torch model, and fastcnn.coverage."""
import copy
import importlib.util
import sys

import pytest
import torch
from torch import nn

import fastcnn
from fastcnn.convert import REPLACEMENTS
from fastcnn.dtypes import tolerance
from fastcnn.models import BasicBlock, SmallCNN, TinyResNet
from fastcnn.testing import (DEVICE, count_launches, flat_parameters, make_tensor, record_aten_ops, relative_error,
                             start_from)
from replicas import GroupNormBlock, TinyConvNeXt, TinyEfficientNet, TinyMobileNetV2, TinyRegNet

# fp32 against fp32 torch: the same math summed in different orders. The shared fp32 tolerance,
# widened as for 4 terms for outputs and as for 100 for gradients and trajectories, which sum
# over the batch and every layer.
TOLERANCE = tolerance(torch.float32, 4)
SUM_TOLERANCE = tolerance(torch.float32, 100)


def _models(generator):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    original = TinyResNet().to(DEVICE)
    return original, fastcnn.convert(original, report=True)


def test_resnet_style_model_is_converted_and_fused_where_expected(generator):
    original, (converted, report) = _models(generator)
    assert type(converted.conv1) is fastcnn.nn.Conv2d and type(converted.maxpool) is fastcnn.nn.MaxPool2d
    # The stem: bn1 → self.relu → maxpool: fused, the stem's ReLU call removed.
    assert type(converted.bn1) is fastcnn.nn.BatchNorm2dReLU
    # torchvision's pattern: layer1.relu is called after bn1 and after the add: each call fuses
    # into its norm, bn2 with the residual (layer2: its downsample's BN takes bn2's output as the
    # residual, as it comes later in the forward).
    for block in (converted.layer1, converted.layer2):
        assert type(block.bn1) is fastcnn.nn.BatchNorm2dReLU and isinstance(block, BasicBlock)
        assert type(block.relu) is fastcnn.nn.ReLU
    assert type(converted.layer1.bn2) is fastcnn.nn.BatchNorm2dReLU
    assert type(converted.layer2.downsample[1]) is fastcnn.nn.BatchNorm2dReLU
    # Bottleneck: torch.relu and F.relu(inplace=True) after bn1/bn2 fuse; bn3 takes the add and
    # the torch.relu after it, the downsample's BN output as its residual.
    assert type(converted.layer3.bn1) is type(converted.layer3.bn2) is fastcnn.nn.BatchNorm2dReLU
    assert type(converted.layer3.bn3) is fastcnn.nn.BatchNorm2dReLU
    assert type(converted.layer3.downsample[1]) is fastcnn.nn.BatchNorm2d
    fused = {name for name, detail in report.fused if "statistics from" not in detail}
    assert fused == {"bn1", "layer1.bn1", "layer1.bn2", "layer2.bn1", "layer2.bn2", "layer2.downsample.1",
                     "layer3.bn1", "layer3.bn2", "layer3.bn3", "layer3.downsample.1"}, report
    # Every batch norm here reads a convolution's output: it takes its statistics from the moments
    # that convolution's epilogue emits, with no pass of its own.
    from_moments = {name: detail for name, detail in report.fused if "statistics from" in detail}
    assert from_moments.keys() == {name for name, module in converted.named_modules()
                                   if isinstance(module, nn.BatchNorm2d)}, report
    assert "'layer3.conv2'" in from_moments["layer3.bn2"] and "'conv1'" in from_moments["bn1"], report
    left = dict(report.left)
    # The norm whose output is the other one's residual runs inside that one's pass: bn(x) + bn(r).
    inside = {name: detail for name, detail in report.fused if "residual it adds" in detail}
    assert inside.keys() == {"layer2.bn2", "layer3.downsample.1"} and not inside.keys() & left.keys(), report
    assert "'layer3.bn3'" in inside["layer3.downsample.1"] and "'layer2.downsample.1'" in inside["layer2.bn2"], report
    # conv → bn → relu → conv: the interior of each block runs its batch norm in the next
    # convolution's prologue, the stem's in the max-pool's; the residual ones keep theirs.
    into = {name: detail for name, detail in report.fused if "into module" in detail}
    assert into.keys() == {"bn1", "layer1.bn1", "layer2.bn1", "layer3.bn1", "layer3.bn2"}, report
    assert "'layer3.conv3'" in into["layer3.bn2"] and "convolution's prologue" in into["layer3.bn2"], report
    assert "'maxpool'" in into["bn1"] and "max-pool's prologue" in into["bn1"], report
    assert "bn1" not in left and "residual block" in left["layer1.bn2"], report
    # The functional head pool is swapped in the traced top-level forward.
    assert "fastcnn.adaptive_avg_pool2d()" in dict(report.replaced)["adaptive_avg_pool2d"], report
    assert len(report.replaced) == sum(1 for m in original.modules() if type(m) in REPLACEMENTS) + 1
    assert "fused" in str(report) and "layer1.bn2" in str(report)
    # The original is untouched (inplace=False) and has the same state_dict keys as the copy.
    assert not [m for m in original.modules() if type(m).__module__.startswith("fastcnn.nn")]
    assert "forward" not in vars(original.layer1)
    assert list(original.state_dict()) == list(converted.state_dict())


def _input_with_clear_maxima(model, shape, generator):
    """Random input on which every window of ``model``'s stem max-pool has a clear maximum, as
    computed in float64: its largest pre-ReLU value is more than 1e-4 away from 0 and, when
    positive, more than 1e-4 (relative) above the next. Otherwise fastcnn's and torch's fp32
    roundings of the batch norm may choose different elements of a near-tie (both correct) and
    route the gradient differently, which happened in about one run in twenty. Redraws until so;
    the comparisons stay as strict as they are."""
    probe = copy.deepcopy(model).double()
    for _ in range(100):
        input = make_tensor(shape, generator=generator)
        with torch.no_grad():
            values = probe.bn1(probe.conv1(input.double()))
        pool = probe.maxpool
        padded = nn.functional.pad(values, (pool.padding,) * 4, value=float("-inf"))
        windows = nn.functional.unfold(padded, pool.kernel_size, stride=pool.stride)
        top = windows.view(values.shape[0], values.shape[1], -1, windows.shape[-1]).topk(2, dim=2).values
        largest, second = top[:, :, 0], top[:, :, 1]
        clear = (largest.abs() > 1e-4) & ((largest < 0) | (largest - second > 1e-4 * largest))
        if clear.all():
            return input
    raise AssertionError("no input with clear max-pool maxima in 100 draws")


def _assert_same_buffers(converted, original, seed):
    """Batch counts equal; running statistics within fp32's tolerance of torch's, a running mean
    also within fp32's rounding of the spread it was computed over: a batch mean near zero
    (a convolution of zero-mean input) is the difference of values of the data's size, so both
    sides round it at about 1e-7 of the running variance's square root, which is much of the
    mean itself (torch's fp32 mean carries the same error against float64)."""
    buffers = dict(original.named_buffers())
    for name, ours in converted.named_buffers():
        theirs = buffers[name]
        if ours.dtype == torch.int64:
            assert torch.equal(ours, theirs), (name, seed)
        elif name.endswith("running_mean"):
            spread = buffers[name[:-len("mean")] + "var"].sqrt()
            assert ((ours - theirs).abs() <= TOLERANCE * (theirs.abs() + spread)).all(), (name, seed)
        else:
            assert relative_error(ours, theirs) < TOLERANCE, (name, seed)


@pytest.mark.parametrize("training", [True, False])
def test_same_outputs_and_gradients_in_train_and_eval(training, seed, generator):
    original, (converted, _) = _models(generator)
    original.train(training)
    converted.train(training)
    input = _input_with_clear_maxima(original, (3, 3, 17, 15), generator)
    with count_launches() as launched:
        out = converted(input)
        out.square().sum().backward()
    expected = original(input)
    expected.square().sum().backward()
    assert relative_error(out, expected) < TOLERANCE, seed
    for (name, p), q in zip(converted.named_parameters(), original.parameters()):
        assert relative_error(p.grad, q.grad) < SUM_TOLERANCE, (name, seed)
    _assert_same_buffers(converted, original, seed)
    assert launched["conv2d"] and launched["batch_norm"] and launched["max_pool2d"]


def test_one_nan_pixel_gives_nan_exactly_where_torch_does(generator):
    """A converted model fed one NaN pixel in training: the logits, the loss, every gradient and
    the running statistics are NaN exactly where torch's are (the fused BN+ReLU must not turn the
    NaN into 0 and hand on finite values)."""
    original, (converted, _) = _models(generator)
    input = make_tensor((3, 3, 17, 15), generator=generator)
    input[1, 0, 8, 7] = float("nan")
    target = torch.tensor([0, 3, 1], device=DEVICE)
    results = []
    for model, loss_function in ((converted, fastcnn.cross_entropy), (original, torch.nn.functional.cross_entropy)):
        model.train()
        logits = model(input)
        loss = loss_function(logits, target)
        loss.backward()
        results.append([logits, loss] + [p.grad for p in model.parameters()] + list(model.buffers()))
    names = ["logits", "loss"] + [f"{n}.grad" for n, _ in converted.named_parameters()] + [
        n for n, _ in converted.named_buffers()]
    for name, ours, theirs in zip(names, *results):
        if ours.is_floating_point():
            assert torch.equal(ours.isnan(), theirs.isnan()), (name, int(ours.isnan().sum()), int(theirs.isnan().sum()))
    assert results[1][1].isnan() and results[0][1].isnan()


def test_same_training_trajectory_with_fastcnn_adam_and_cross_entropy(seed, generator):
    """Adam takes steps of about lr in every parameter whatever the gradient's size, so a
    parameter whose gradient is near a sign change can step either way in fp32: fp32 torch
    itself strayed 0.19 % from float64 at step 2 (seed 1121807607) while fastcnn stayed within
    4e-8; both are held to the float64 trajectory."""
    original, (converted, _) = _models(generator)
    target = torch.randint(0, 5, (4,), generator=generator).to(DEVICE)
    _check_trajectory(original, converted, (4, 3, 13, 11), target, generator, lr=1e-2,
                      optimizer=torch.optim.Adam, fastcnn_optimizer=fastcnn.optim.Adam,
                      fastcnn_loss=fastcnn.cross_entropy)


def test_checkpoints_load_both_ways(generator):
    original, (converted, _) = _models(generator)
    input = make_tensor((2, 3, 9, 9), generator=generator)
    converted.train()
    converted(input)  # moves running statistics and num_batches_tracked away from the original's
    fresh_torch = TinyResNet().to(DEVICE)
    fresh_torch.load_state_dict(converted.state_dict())  # strict: identical keys
    for key, value in converted.state_dict().items():
        assert torch.equal(fresh_torch.state_dict()[key], value), key
    fresh_fastcnn = fastcnn.convert(TinyResNet().to(DEVICE))
    fresh_fastcnn.load_state_dict(original.state_dict())
    original.eval()
    fresh_fastcnn.eval()
    assert relative_error(fresh_fastcnn(input), original(input)) < TOLERANCE


def test_inplace_keeps_parameter_objects_and_deepcopy_and_compile_work(generator):
    model = TinyResNet().to(DEVICE)
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    converted = fastcnn.convert(model, inplace=True)
    assert converted is model and all(p is q for p, q in zip(parameters, model.parameters()))
    assert type(model.layer1.bn1) is fastcnn.nn.BatchNorm2dReLU
    input = make_tensor((2, 3, 9, 9), generator=generator)
    model(input).sum().backward()
    optimizer.step()  # the optimizer built before the conversion still updates the model
    twin = copy.deepcopy(model)
    model.eval()
    twin.eval()
    assert torch.equal(twin(input), model(input))
    assert twin.layer1.forward.__self__ is twin.layer1  # the generated forward is rebound to the copy
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert relative_error(compiled(input), model(input)) < TOLERANCE


class _DataDependent(nn.Module):
    """Control flow on tensor values: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x):
        x = self.bn(self.conv(x))
        if x.sum() > 0:
            x = torch.relu(x)
        return self.pool(x)


class _MyConv(nn.Conv2d):
    def forward(self, input):
        return super().forward(input) * 2


def test_untraceable_model_gets_module_replacement_and_a_report(generator):
    model = nn.Sequential(_DataDependent(), _MyConv(4, 4, 1), nn.SyncBatchNorm(4)).to(DEVICE)
    converted, report = fastcnn.convert(model, report=True)
    inner = converted[0]
    assert type(inner.conv) is fastcnn.nn.Conv2d and type(inner.pool) is fastcnn.nn.MaxPool2d
    assert type(inner.bn) is fastcnn.nn.BatchNorm2d and type(inner.loss) is fastcnn.nn.CrossEntropyLoss
    left = dict(report.left)
    assert "could not be traced" in left["0.bn"]
    assert type(converted[1]) is _MyConv and "code of its own" in left["1"]
    assert type(converted[2]) is fastcnn.nn.SyncBatchNorm and "SyncBatchNorm" in dict(report.replaced)["2"]
    model.eval()
    converted.eval()
    input = make_tensor((2, 3, 8, 8), generator=generator)
    assert relative_error(converted(input), model(input)) < TOLERANCE


def test_sequential_fusion_and_report_logging(caplog, generator):
    model = SmallCNN().to(DEVICE)
    with caplog.at_level("INFO", logger="fastcnn.convert"):
        converted = fastcnn.convert(model)
    features = converted.features
    assert [type(m).__name__ for m in features] == ["Conv2d", "BatchNorm2dReLU", "Identity", "MaxPool2d"] * 2
    assert "2 norms fused with what precedes or follows them" in caplog.text
    model.train()
    converted.train()
    input = make_tensor((5, 1, 8, 8), generator=generator)
    assert relative_error(converted(input), model(input)) < TOLERANCE


def test_float64_modules_are_left_as_they_are(generator):
    model = SmallCNN().double()
    converted, report = fastcnn.convert(model, report=True)
    assert not report.replaced and not report.fused and type(converted.features[1]) is nn.BatchNorm2d
    assert "float64" in dict(report.left)["features.0"]
    input = make_tensor((3, 1, 8, 8), generator=generator).double()
    assert torch.equal(converted(input), model(input))


def test_bad_argument():
    with pytest.raises(TypeError, match="'model' must be a torch.nn.Module"):
        fastcnn.convert("resnet18")


def _torchvision_or_skip_reason():
    """(torchvision, None), or (None, why it cannot be used): not installed, or installed but not
    importable (a CUDA build of torchvision beside a CPU torch fails with "operator
    torchvision::nms does not exist")."""
    if importlib.util.find_spec("torchvision") is None:
        return None, "torchvision is not installed"
    try:
        import torchvision
    except Exception as error:  # noqa: BLE001  (any import failure means: cannot test with it here)
        return None, f"torchvision is installed but cannot be imported: {type(error).__name__}: {error}"
    return torchvision, None


def test_a_torchvision_that_cannot_import_skips_the_torchvision_tests(tmp_path, monkeypatch):
    """A CPU torch beside a CUDA build of torchvision: installed, but its import raises
    RuntimeError ('operator torchvision::nms does not exist'). The torchvision tests must skip,
    saying why, instead of failing."""
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    module, why_not = _torchvision_or_skip_reason()
    assert module is None
    assert why_not.startswith("torchvision is installed but cannot be imported: RuntimeError") and "nms" in why_not


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_torchvision_models(name, generator):
    torchvision, why_not = _torchvision_or_skip_reason()
    if torchvision is None:
        pytest.skip(why_not)

    if DEVICE == "cpu" and name != "resnet18":
        pytest.skip("through the interpreter only resnet18 is small enough")
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    original = getattr(torchvision.models, name)(num_classes=10).to(DEVICE)
    reference = copy.deepcopy(original).double()
    converted, report = fastcnn.convert(original, report=True)
    # The stem; every basic block's bn1 (ReLU) and bn2 (+ identity, ReLU), every bottleneck's bn1,
    # bn2 and bn3 (+ identity), each downsample's batch norm inside the pass of the norm whose
    # residual it is; mobilenet_v2's 35 BN → ReLU6 and its 10 residual blocks.
    expected_fused = {"resnet18": 1 + 8 * 2 + 3, "resnet50": 1 + 16 * 3 + 4, "mobilenet_v2": 35 + 10}[name]
    into_conv = [entry for entry in report.fused if "into module" in entry[1]]
    from_moments = [entry for entry in report.fused if "statistics from" in entry[1]]
    assert len(report.fused) - len(into_conv) - len(from_moments) == expected_fused, report
    # Each batch norm after a convolution (all of them here) takes its statistics from its moments.
    assert len(from_moments) == sum(isinstance(m, nn.BatchNorm2d) for m in converted.modules()), report
    # Batch norms run in the next convolution's prologue: each basic block's bn1, each
    # bottleneck's bn1 and bn2, mobilenet_v2's expand and depthwise BNs (16 blocks, and the
    # first block's depthwise one); a ResNet's stem batch norm in the max-pool's.
    assert len(into_conv) == {"resnet18": 8 + 1, "resnet50": 32 + 1, "mobilenet_v2": 33}[name], report
    assert sum("residual" in detail for _, detail in report.fused) == {"resnet18": 8 + 3, "resnet50": 16 + 4,
                                                                        "mobilenet_v2": 10}[name], report
    # Small late feature maps make batch norm ill-conditioned (few values per channel), so both
    # fp32 models are compared with float64: fastcnn within twice torch's own error.
    size = 64 if DEVICE == "cpu" else 96
    input = make_tensor((4, 3, size, size), generator=generator)
    with count_launches() as launched:
        for training in (True, False):
            for model in (original, converted, reference):
                model.train(training)
            expected = reference(input.double())
            _assert_as_near_float64_as_torch(converted(input), original(input), expected, tolerance(torch.float32),
                                             ("output", training))
    assert launched["conv2d"] and launched["batch_norm"]
    converted.load_state_dict(original.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    converted.eval()
    assert relative_error(compiled(input), converted(input)) < tolerance(torch.float32)


class _SharedBN(nn.Module):
    """One BN module used in two places: fusing it for one would change the other."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class _ReversedSequential(nn.Sequential):
    def forward(self, x):
        for module in reversed(self):
            x = module(x)
        return x


def test_shared_bn_and_sequential_subclasses_are_not_fused_by_position(generator):
    shared = _SharedBN()
    # By position BN → ReLU, but the subclass runs the ReLU first: the BN's output is the result.
    model = nn.Sequential(shared, nn.Conv2d(4, 4, 1), _ReversedSequential(nn.BatchNorm2d(4), nn.ReLU()))
    model.extra = nn.Sequential(shared.bn, nn.ReLU())  # the same BN object held twice
    converted, report = fastcnn.convert(model.to(DEVICE), report=True)
    assert not report.fused, report
    left = dict(report.left)
    assert "shared" in left["0.bn"] and "shared" in left["extra.0"]
    assert "the forward's result" in left["2.0"] and type(converted[2][0]) is fastcnn.nn.BatchNorm2d
    converted.eval()
    model.eval()
    input = make_tensor((2, 3, 6, 5), generator=generator)
    assert relative_error(converted[:3](input), model[:3](input)) < TOLERANCE


def _training_step_ops(model, input):
    """The ATen ops (and fastcnn operators) of one forward + backward of ``model`` on ``input``."""
    with record_aten_ops() as names:
        model(input).square().mean().backward()
    return names


def test_convnext_style_model_runs_its_norms_and_gelu_in_fastcnn(seed, generator):
    torch.manual_seed(seed)
    original = TinyConvNeXt().to(DEVICE)
    converted, report = fastcnn.convert(original, report=True)
    assert type(converted.features[0][1]) is fastcnn.nn.LayerNorm2d
    assert type(converted.features[1].block[2]) is fastcnn.nn.LayerNorm
    # the MLP's Linear → GELU: one GEMM with GELU in its epilogue, the GELU's slot an Identity
    mlp = converted.features[1].block
    assert type(mlp[3]) is fastcnn.nn.Linear and mlp[3].activation == ("gelu", 0.0)
    assert type(mlp[4]) is torch.nn.Identity and type(mlp[5]) is fastcnn.nn.Linear and mlp[5].activation is None
    assert "replicas.LayerNorm2d -> fastcnn.nn.LayerNorm2d" in str(report)
    input = make_tensor((2, 3, 12, 12), generator=generator)
    with record_aten_ops() as names:  # a loss of no multiply of its own
        converted(input).sum().backward()
    # the layer scale rides in the second Linear's epilogue: no multiply left
    assert [entry for entry, how in report.fused if "layer_scale" in how] == ["features.1.block.5", "features.3.block.5"]
    assert not [name for name in names if ("layer_norm" in name or "linear" in name) and not name.startswith("fastcnn::")
                or "gelu" in name or "addmm" in name or "aten::mm" in name or "aten::mul" in name], names
    assert "fastcnn::layer_norm" in names and "fastcnn::linear" in names
    # Outputs, gradients and a 3-step SGD trajectory match the torch model.
    reference = copy.deepcopy(original)
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.1) for model in (converted, reference)]
    for step in range(3):
        batch = make_tensor((2, 3, 12, 12), generator=generator)
        losses = []
        for model, optimizer in zip((converted, reference), optimizers):
            optimizer.zero_grad()
            loss = model(batch).square().mean()
            loss.backward()
            optimizer.step()
            losses.append(loss)
        assert relative_error(losses[0], losses[1]) < SUM_TOLERANCE, step
    for (name, ours), theirs in zip(converted.named_parameters(), reference.parameters()):
        assert relative_error(ours, theirs) < SUM_TOLERANCE, name
    original.load_state_dict(converted.state_dict())
    converted.load_state_dict(reference.state_dict())


def test_group_norm_activation_fusion_in_sequential_and_traced_forward(seed, generator):
    torch.manual_seed(seed)
    model = nn.Sequential(GroupNormBlock(8), nn.GroupNorm(2, 8), nn.LeakyReLU(0.2), nn.GroupNorm(2, 8),
                          nn.Softplus(), nn.BatchNorm2d(8), nn.ReLU6(), nn.Dropout2d(0.1)).to(DEVICE)
    converted, report = fastcnn.convert(model, report=True)
    block = converted[0]
    assert type(block.norm1) is fastcnn.nn.GroupNorm and block.norm1.activation == ("silu", 0.0)
    assert block.norm2.activation == ("silu", 0.0)  # F.silu in the forward, removed from the graph
    assert type(block.act) is fastcnn.nn.SiLU and type(block.dropout) is fastcnn.nn.Dropout
    assert converted[1].activation == ("leaky_relu", 0.2) and type(converted[2]) is nn.Identity
    assert converted[3].activation is None and type(converted[4]) is nn.Softplus
    left = dict(report.left)
    assert "activation kind not supported: Softplus after GroupNorm" in left["3"], report
    assert type(converted[5]) is fastcnn.nn.BatchNorm2dAct and converted[5].activation == ("relu6", 0.0)
    assert type(converted[6]) is nn.Identity and type(converted[7]) is fastcnn.nn.Dropout2d
    model.eval(), converted.eval()
    input = make_tensor((2, 8, 6, 6), generator=generator)
    assert relative_error(converted(input), model(input)) < TOLERANCE
    assert list(converted.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("name", ["convnext_tiny"])
def test_torchvision_convnext(name, generator):
    torchvision, why_not = _torchvision_or_skip_reason()
    if torchvision is None:
        pytest.skip(why_not)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    original = getattr(torchvision.models, name)(num_classes=10).to(DEVICE)
    _randomness_off(original)
    converted, report = fastcnn.convert(original, report=True)
    # the stem, three downsamples and the classifier
    assert sum("LayerNorm2d -> fastcnn.nn.LayerNorm2d" in detail for _, detail in report.replaced) == 5, report
    input = make_tensor((2, 3, 32, 32), generator=generator)
    names = _training_step_ops(converted, input)
    assert not [name for name in names if "layer_norm" in name and not name.startswith("fastcnn::")
                or "gelu" in name], names
    _check_against_float64(original, converted, input, floor=tolerance(torch.float32))


def _randomness_off(*models):
    """Dropout's masks and stochastic depth's draws are fastcnn's Philox numbers, not torch's:
    off, so that the models compute the same thing."""
    for model in models:
        for module in model.modules():
            if isinstance(module, nn.Dropout) or type(module).__name__ == "StochasticDepth":
                module.p = 0.0


def _check_against_float64(original, converted, input, floor=SUM_TOLERANCE):
    """Outputs and every parameter's gradient (of the output's mean square): fastcnn within twice
    fp32 torch's own distance from the float64 model, plus ``floor``."""
    reference = copy.deepcopy(original).double()
    results = []
    for model, dtype in ((reference, torch.float64), (original, torch.float32), (converted, torch.float32)):
        model.zero_grad()
        out = model(input.to(dtype))
        out.square().mean().backward()
        results.append((out, torch.cat([p.grad.flatten() for p in model.parameters()])))
    for index, what in enumerate(("output", "gradients")):
        _assert_as_near_float64_as_torch(results[2][index], results[1][index], results[0][index], floor, what)


def _assert_as_near_float64_as_torch(ours, fp32_torch, float64, floor, what):
    """fastcnn's result within twice fp32 torch's own distance from float64, plus ``floor``."""
    torch_error = relative_error(fp32_torch, float64)
    assert relative_error(ours, float64) <= 2 * torch_error + floor, (what, torch_error)


# Where the activations' derivatives jump (ReLU/ReLU6/leaky 0, ReLU6 6, hard-sigmoid/-swish ±3).
ACTIVATION_KINKS = (0.0, 3.0, -3.0, 6.0)


def _batch_clear_of_kinks(model, shape, generator, margin=1e-5):
    """A random batch on which no batch norm output of a float64 copy of ``model`` (in its mode)
    lies within ``margin`` of a kink of the activations: there fastcnn's and torch's fp32
    roundings may put a value on either side, so the activation's derivative (0 or 1) routes
    that element's gradient differently, both correctly, and the comparison with float64 fails
    by one element's gradient (a ReLU6 of TinyMobileNetV2, one seed in a few hundred). Redraws
    until so, without touching ``model``'s state or the random streams it uses."""
    probe = copy.deepcopy(model).double()
    outputs = []
    for module in probe.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # a copy: an in-place activation after the norm overwrites its output
            module.register_forward_hook(lambda module, inputs, output: outputs.append(output.clone()))
    for _ in range(100):
        batch = make_tensor(shape, generator=generator)
        outputs.clear()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            probe(batch.double())
        if all((output - kink).abs().min() > margin for output in outputs for kink in ACTIVATION_KINKS):
            return batch
    raise AssertionError("no batch clear of the activations' kinks in 100 draws")


def _check_trajectory(original, converted, shape, target, generator, steps=3, lr=0.05,
                      optimizer=torch.optim.SGD, fastcnn_optimizer=None, fastcnn_loss=None):
    """``steps`` steps of ``optimizer`` along the trajectory of a float64 copy of the original, on
    fresh batches. Each step, the converted model (with ``fastcnn_optimizer`` and ``fastcnn_loss``
    when given) and an fp32 copy of the original start from the float64 model's state (weights,
    buffers, optimizer state, rounded to fp32) and take the same step: the loss and the
    parameter update of each must be within twice fp32 torch's distance from float64's (plus the
    summed-fp32 tolerance; tiny late feature maps make batch norm ill-conditioned in either).
    Starting each step from the same state compares one step's rounding, which does not compound
    (after a few steps of their own two fp32 runs differ by chance, and a bound on that failed
    CI). Then checkpoints load both ways."""
    trained, reference = copy.deepcopy(original), copy.deepcopy(original).double()
    models = (reference, trained, converted)
    optimizer_types = (optimizer, optimizer, fastcnn_optimizer or optimizer)
    loss_fns = (nn.functional.cross_entropy,) * 2 + (fastcnn_loss or nn.functional.cross_entropy,)
    optimizers = [kind(model.parameters(), lr=lr) for kind, model in zip(optimizer_types, models)]
    for step in range(steps):
        batch = _batch_clear_of_kinks(reference, shape, generator)
        for model, model_optimizer in zip(models[1:], optimizers[1:]):
            start_from(model, model_optimizer, reference, optimizers[0])
        before = flat_parameters(reference)
        losses, updates = [], []
        for model, model_optimizer, loss_fn in zip(models, optimizers, loss_fns):
            model_optimizer.zero_grad()
            dtype = next(model.parameters()).dtype
            loss = loss_fn(model(batch.to(dtype)), target)
            loss.backward()
            model_optimizer.step()
            losses.append(loss.detach())
            updates.append(flat_parameters(model) - before)
        _assert_as_near_float64_as_torch(losses[2], losses[1], losses[0], SUM_TOLERANCE,
                                         ("loss", step, [value.item() for value in losses]))
        if optimizer is torch.optim.Adam:
            # Adam turns a gradient of any size above eps into a step of about lr, so a parameter
            # whose gradient is within fp32 rounding of zero steps either way (float64 -0.52·lr,
            # fastcnn +0.82·lr: seed 1994649110). Such strays are counted against fp32 torch's,
            # and the other parameters held to float64 as the loss is.
            ours_strays = (updates[2] - updates[0]).abs() > 0.5 * lr
            torch_strays = (updates[1] - updates[0]).abs() > 0.5 * lr
            assert int(ours_strays.sum()) <= 2 * int(torch_strays.sum()) + 2, ("update strays", step)
            steady = ~(ours_strays | torch_strays)
            updates = [update[steady] for update in updates]
        _assert_as_near_float64_as_torch(updates[2], updates[1], updates[0], SUM_TOLERANCE, ("update", step))
    original.load_state_dict(converted.state_dict())
    converted.load_state_dict(trained.state_dict())


# What must not be left in ATen in a converted model's training step: linear
# layers, squeeze-excitation's broadcast multiply and the reductions of their gradients may stay.
MOVED_KINDS = ("convolution", "norm", "activation", "pooling", "residual add", "loss", "dropout")


@pytest.mark.parametrize("model_type", [TinyResNet, TinyMobileNetV2, TinyRegNet, TinyEfficientNet, SmallCNN],
                         ids=lambda t: t.__name__)
def test_block_replicas_train_in_fastcnn(model_type, seed, generator):
    """torchvision's block types in plain PyTorch (tests/replicas.py): converted, one training step
    runs no convolution, norm, activation, pool, residual add or loss in ATen; outputs and
    gradients match float64 torch as closely as fp32 torch does; a 3-step SGD trajectory matches
    the torch model's; checkpoints load both ways."""
    torch.manual_seed(seed)
    original = model_type().to(DEVICE)
    shape = (3, 1, 8, 8) if model_type is SmallCNN else (3, 3, 16, 16)  # SmallCNN (VGG-BN style): digits
    input = _batch_clear_of_kinks(original, shape, generator)
    target = torch.randint(0, 5, (3,), generator=generator).to(DEVICE)
    converted = fastcnn.convert(original)
    coverage = fastcnn.coverage(converted, input, target, loss_fn=fastcnn.cross_entropy)
    assert not coverage.left_in(*MOVED_KINDS), coverage
    assert any(op.startswith("fastcnn::conv2d") for op in coverage.fastcnn), coverage
    assert any("cross_entropy" in op for op in coverage.fastcnn), coverage
    _randomness_off(original, converted)
    _check_against_float64(original, converted, input)
    _check_trajectory(original, converted, shape, target, generator)


def test_coverage_lists_what_is_left_by_kind(generator):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Softplus(), nn.AdaptiveAvgPool2d(1)).to(DEVICE)
    input = make_tensor((2, 3, 7, 7), generator=generator)
    before = fastcnn.coverage(model, input)
    assert before.left_in("convolution") and before.left_in("norm") and not before.fastcnn, before
    converted = fastcnn.convert(model)
    after = fastcnn.coverage(converted, input)
    assert not after.left_in("convolution", "norm", "pooling"), after
    assert set(after.left_in("other")) == {"aten::softplus", "aten::softplus_backward"}, after
    assert after.fastcnn["fastcnn::batch_norm_apply"] == 1 and "softplus" in str(after)
    with pytest.raises(TypeError, match="'model' must be a torch.nn.Module"):
        fastcnn.coverage("resnet18", input)


class _TrainingBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        x = torch.relu(self.bn(x))
        return x * 2 if self.training else x


def test_forward_that_reads_the_mode_is_not_rewritten(generator):
    """A generated forward would freeze ``self.training`` at its value when traced."""
    model = _TrainingBranch().to(DEVICE)
    converted, report = fastcnn.convert(model, report=True)
    assert "differs between training and eval" in dict(report.left)["bn"], report
    input = make_tensor((2, 3, 4, 4), generator=generator)
    for training in (True, False):
        model.train(training), converted.train(training)
        assert relative_error(converted(input), model(input)) < TOLERANCE, training


TORCHVISION_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf", "vgg11_bn"]


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_training_step_runs_in_fastcnn(name, generator):
    """Converted torchvision models: one training step (dropout and stochastic depth on) leaves no
    convolution, norm, activation, pool, residual add, dropout or loss in ATen (fastcnn.coverage
    reports what is left); outputs and gradients match float64 torch as closely as fp32 torch's;
    a 3-step SGD trajectory matches the torch model's where the last norms are well-conditioned
    (VGG through the interpreter, every model on a GPU); checkpoints load both ways."""
    torchvision, why_not = _torchvision_or_skip_reason()
    if torchvision is None:
        pytest.skip(why_not)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    original = getattr(torchvision.models, name)(num_classes=10).to(DEVICE)
    converted = fastcnn.convert(original)
    # Through the interpreter: small images, 2 of them (VGG's head needs 64²); on a GPU 96².
    size, batch = (32 if name != "vgg11_bn" else 64, 2) if DEVICE == "cpu" else (96, 4)
    input = make_tensor((batch, 3, size, size), generator=generator)
    target = torch.randint(0, 10, (batch,), generator=generator).to(DEVICE)
    coverage = fastcnn.coverage(converted, input, target, loss_fn=fastcnn.cross_entropy)
    print(coverage)
    assert not coverage.left_in(*MOVED_KINDS), coverage
    _randomness_off(original, converted)
    # The last batch norms see batch x (size / 32)² values per channel. With 2 of them x̂ is ±1,
    # flipping with any rounding of a near tie, so that one draw of fp32 torch's distance from
    # float64 does not bound fastcnn's (a statistic summed in other tiles flips such a tie), and
    # a few SGD steps later the fp32 runs (torch's too) may leave the float64 one: outputs,
    # gradients and the trajectory are compared in training mode from 8 values, below that the
    # outputs and gradients in eval mode (running statistics: well-conditioned).
    well_conditioned = batch * (size // 32) ** 2 >= 8
    # converted's checkpoint into the original: the running statistics coverage's step moved (and
    # one direction of "checkpoints load both ways")
    original.load_state_dict(converted.state_dict())
    for model in (original, converted):
        model.train(well_conditioned)
    _check_against_float64(original, converted, input)
    for model in (original, converted):
        model.train()
    if well_conditioned:
        _check_trajectory(original, converted, input.shape, target, generator, lr=0.002)
    else:
        converted.load_state_dict(original.state_dict())  # the other direction


class _ConvNormConv(nn.Module):
    """conv → bn → relu → conv, the batch norm built with ``norm_options``: the fused unit."""

    def __init__(self, **norm_options):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(5, **norm_options)
        self.conv2 = nn.Conv2d(5, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


@pytest.mark.parametrize("norm_options", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}],
                         ids=["default", "momentum_none", "no_affine", "no_running_stats"])
def test_batch_norm_in_the_convolution_keeps_every_batch_norm_option(norm_options, seed, generator):
    """The fused unit behaves as nn.BatchNorm2d does with each option, in training, in eval and
    switching between them: outputs, gradients and buffers (num_batches_tracked included) as
    torch's, the same state_dict keys, and torch.compile(fullgraph=True) runs it."""
    original = _ConvNormConv(**norm_options).to(DEVICE)
    converted, report = fastcnn.convert(original, report=True)
    assert [name for name, detail in report.fused if "into module 'conv2'" in detail] == ["bn"], report
    assert list(converted.state_dict()) == list(original.state_dict())
    for training in (True, False, True):
        for model in (original, converted):
            model.train(training)
        input = make_tensor((3, 3, 7, 9), generator=generator)
        with record_aten_ops() as names:
            out = converted(input)
            out.square().sum().backward()
        assert "fastcnn::conv2d_normalized" in names and "fastcnn::batch_norm_apply" not in names, names
        expected = original(input)
        expected.square().sum().backward()
        assert relative_error(out, expected) < TOLERANCE, (training, seed)
        for (name, p), q in zip(converted.named_parameters(), original.parameters()):
            assert relative_error(p.grad, q.grad) < SUM_TOLERANCE, (name, training, seed)
        _assert_same_buffers(converted, original, seed)
    torch._dynamo.reset()
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    converted.eval()
    compiled.eval()
    assert relative_error(compiled(input), original.eval()(input)) < TOLERANCE


def test_batch_norm_in_conv_off_keeps_every_batch_norm_in_its_own_pass(generator):
    original = _ConvNormConv().to(DEVICE)
    converted, report = fastcnn.convert(original, batch_norm_in_conv=False, report=True)
    assert not [entry for entry in report.fused if "into module" in entry[1]], report
    assert type(converted.bn) is fastcnn.nn.BatchNorm2dReLU
    input = make_tensor((2, 3, 7, 9), generator=generator)
    with record_aten_ops() as names:
        out = converted(input)
    assert "fastcnn::batch_norm_apply" in names and "fastcnn::conv2d_normalized" not in names, names
    assert relative_error(out, original(input)) < TOLERANCE


def test_a_convolution_with_another_padding_mode_or_hooks_keeps_the_batch_norm_apart(generator):
    reflect = _ConvNormConv().to(DEVICE)
    reflect.conv2.padding_mode = "reflect"
    hooked = _ConvNormConv().to(DEVICE)
    hooked.conv2.register_forward_hook(lambda module, args, out: None)
    for model, why in ((reflect, "'reflect'"), (hooked, "hooks")):
        converted, report = fastcnn.convert(model, report=True)
        assert not [entry for entry in report.fused if "into module" in entry[1]], report
        assert why in dict(report.left)["bn"], report
        input = make_tensor((2, 3, 7, 9), generator=generator)
        assert relative_error(converted(input), model(input)) < TOLERANCE
