"""fastcnn.estimate: one training step counted on fake tensors.

The launches each operator declares (fastcnn/_cost.py, ``@launches_of`` beside every operator)
are checked against the launches its kernels really make on the same shapes through the
interpreter, call by call; the accounting against figures computed here by hand (a conv's bytes
and FLOPs, batch norm's two reads of its input, max-pool's one-byte taps against torch's int64
indices, the peak of a one-layer step); the command line and the peaks it models with.
"""
import functools
import json
import math
import pathlib

import pytest
import torch
from torch._library.custom_ops import CustomOpDef
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import fastcnn
import fastcnn.profile
from fastcnn import _backend, _cost, estimation, reporting
from fastcnn.models import TinyResNet
from fastcnn.testing import DEVICE, gpu_only, make_tensor


def _round(size):
    return -(-size // estimation.ALLOCATION_GRANULE) * estimation.ALLOCATION_GRANULE


def test_every_operator_declares_its_launches():
    operators = {str(value._qualname) for module in fastcnn.ops.MODULES for value in vars(module).values()
                 if isinstance(value, CustomOpDef)}
    assert len(operators) >= 30 and operators == set(_cost.PLANS), operators ^ set(_cost.PLANS)
    families = {family for _, family in _cost.PLANS.values()}
    assert families <= {"convolution", "norm", "activation", "pooling", "residual add", "loss", "dropout",
                        "linear", "elementwise", "optimizer", "augmentation"}, families


# ----------------------------------------------------------------------------- declared = launched
class _LaunchesPerCall(TorchDispatchMode):
    """(operator, Triton launches it made) for each fastcnn operator dispatched."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = sum(_backend.launch_counts.values())
        output = func(*args, **(kwargs or {}))
        if func._schema.name.startswith("fastcnn::"):
            self.calls.append((func._schema.name, sum(_backend.launch_counts.values()) - before))
        return output


def _declared_per_call(run, tensors):
    """(operator, Triton launches its plan declares) per fastcnn operator, ``run`` on fake copies."""
    memory = estimation._Memory()
    with FakeTensorMode() as mode, estimation._kernel_path():
        fakes = [mode.from_tensor(t).requires_grad_(t.requires_grad) if t.is_leaf else mode.from_tensor(t)
                 for t in tensors]
        recorder = estimation._Recorder(memory)
        with recorder:
            run(*fakes)
    return [(call.name, sum(not launch.kernel.startswith("aten::") for launch in call.launches))
            for call in recorder.calls if call.name.startswith("fastcnn::")]


def _launched_per_call(run, tensors):
    recorder = _LaunchesPerCall()
    with recorder:
        run(*tensors)
    return recorder.calls


def _compare(run, make_tensors):
    launched = _launched_per_call(run, make_tensors())
    declared = _declared_per_call(run, make_tensors())
    assert launched == declared
    return {name for name, _ in launched}


def test_declared_launches_are_the_kernels_launches_on_a_resnet_step(seed):
    model = fastcnn.convert(TinyResNet(classes=7, width=8)).to(memory_format=torch.channels_last)
    names, parameters = zip(*model.named_parameters())
    buffer_names, buffers = zip(*model.named_buffers())

    def step(images, labels, *tensors):
        weights, state = tensors[:len(names)], tensors[len(names):]
        output = torch.func.functional_call(model, {**dict(zip(names, weights)), **dict(zip(buffer_names, state))},
                                            (images,))
        fastcnn.cross_entropy(output, labels).backward()
        fastcnn.optim.SGD(weights, lr=0.1, momentum=0.9).step()

    def tensors():
        images = make_tensor((3, 3, 17, 15), layout="channels_last", generator=torch.Generator().manual_seed(seed))
        labels = torch.randint(0, 7, (3,), generator=torch.Generator().manual_seed(seed))
        return ([images, labels] + [p.detach().clone().requires_grad_() for p in parameters]
                + [b.clone() for b in buffers])

    seen = _compare(step, tensors)
    # every convolution emits moments for its batch norm; bn → relu → conv runs in the conv's prologue,
    # the stem's bn → relu → max-pool in the pool's
    assert {"fastcnn::conv2d_moments", "fastcnn::conv2d_normalized_moments", "fastcnn::conv2d_input_grad",
            "fastcnn::conv2d_weight_grad", "fastcnn::conv2d_normalized_weight_grad",
            "fastcnn::batch_norm_statistics_from_moments", "fastcnn::batch_norm_backward_from_sums",
            "fastcnn::batch_norm_residual_apply", "fastcnn::batch_norm_residual_grad_with_sums",
            "fastcnn::max_pool2d_normalized", "fastcnn::max_pool2d_normalized_backward", "fastcnn::avg_pool2d",
            "fastcnn::avg_pool2d_backward", "fastcnn::cross_entropy_forward", "fastcnn::cross_entropy_backward_", "fastcnn::sgd_step_"} <= seen


def test_declared_launches_are_the_kernels_launches_on_the_other_ops(seed):
    """Every other operator, in odd shapes: depthwise and biased convs, group, instance and layer
    norm, a residual batch norm with SiLU, without activation and in eval, the activations (from the
    output and from the input, in place), dropout, pools, the residual add, the optimizers and
    clipping."""
    generator = torch.Generator().manual_seed(seed)

    def step(x, depthwise, pointwise, bias, norm_weight, norm_bias, residual, *rest):
        y = fastcnn.conv2d(x, depthwise, padding=1, groups=6, stride=2)
        y = fastcnn.conv2d(y, pointwise, bias)
        # the input prologue alone, batch norm in the prologue after a convolution's moments, in eval
        y = fastcnn.conv2d(y, pointwise, input_scale=norm_weight, input_shift=norm_bias, input_activation="relu6")
        y, moments = fastcnn.conv2d_with_moments(y, depthwise, padding=1, groups=6)
        y = fastcnn.batch_norm_conv2d(y, None, None, norm_weight, norm_bias, True, 0.1, 1e-5, pointwise,
                                      activation="silu", moments=moments)
        y = fastcnn.batch_norm_conv2d(y, torch.zeros(6), torch.ones(6), norm_weight, None, False, 0.1, 1e-5,
                                      depthwise, padding=1, groups=6)
        y = fastcnn.group_norm(y, 3, norm_weight, norm_bias, activation="silu")
        y = fastcnn.instance_norm(y, weight=norm_weight, bias=norm_bias)
        y = fastcnn.layer_norm2d(y, norm_weight, norm_bias, activation="gelu")
        y = fastcnn.batch_norm(y, None, None, norm_weight, norm_bias, True, activation="silu",
                               residual=residual[:, :, :y.shape[2], :y.shape[3]])
        y = fastcnn.batch_norm(y, None, None, None, None, True, residual=y * 0.5)
        y = fastcnn.batch_norm(y, None, None, norm_weight, norm_bias, True, activation="relu")
        y = fastcnn.batch_norm(y, torch.zeros(6), torch.ones(6), norm_weight, None, False, activation="relu",
                               residual=y * 0.25)  # eval: the residual's gradient alone, then batch norm's
        y = fastcnn.add(fastcnn.sigmoid(y), fastcnn.gelu(y))
        y = fastcnn.dropout2d(fastcnn.dropout(y, 0.3), 0.2)
        y = fastcnn.avg_pool2d(fastcnn.max_pool2d(y, 2, 1), 3, 1, 1)
        y = fastcnn.layer_norm(y, (y.shape[-1],), activation="relu")
        loss = (y * y).sum()
        parameters = [depthwise, pointwise, bias, norm_weight, norm_bias]
        loss.backward()
        fastcnn.clip_grad_norm_(parameters, 1.0)
        fastcnn.clip_grad_value_(parameters, 0.5)
        for optimizer_class in (fastcnn.optim.Adam, fastcnn.optim.AdamW, fastcnn.optim.RMSprop,
                                fastcnn.optim.Adagrad, fastcnn.optim.Adadelta):
            optimizer_class(parameters, lr=1e-3).step()
        with torch.no_grad():
            fastcnn.relu(y.detach().clone(), inplace=True)
            fastcnn.dropout(y.detach().clone(), 0.5, inplace=True)

    def tensors():
        make = lambda shape, layout="contiguous": make_tensor(shape, layout=layout, generator=generator)  # noqa: E731
        return [make((2, 6, 11, 9), "channels_last"), make((6, 1, 3, 3)).requires_grad_(),
                make((6, 6, 1, 1)).requires_grad_(), make((6,)).requires_grad_(), make((6,)).requires_grad_(),
                make((6,)).requires_grad_(), make((2, 6, 7, 5), "channels_last").requires_grad_()]

    seen = _compare(step, tensors)
    assert {"fastcnn::conv2d", "fastcnn::conv2d_normalized", "fastcnn::conv2d_moments",
            "fastcnn::batch_norm_statistics", "fastcnn::batch_norm_statistics_from_moments",
            "fastcnn::group_norm_stats", "fastcnn::group_norm_apply", "fastcnn::group_norm_backward",
            "fastcnn::layer_norm", "fastcnn::layer_norm_backward", "fastcnn::activation",
            "fastcnn::activation_backward", "fastcnn::activation_", "fastcnn::dropout", "fastcnn::dropout_",
            "fastcnn::add", "fastcnn::conv2d_bias_grad", "fastcnn::grad_norm", "fastcnn::scale_grads_",
            "fastcnn::clamp_grads_", "fastcnn::adam_step_", "fastcnn::rmsprop_step_", "fastcnn::adagrad_step_",
            "fastcnn::adadelta_step_"} <= seen, seen


def test_declared_launches_are_the_kernels_launches_of_linear(seed):
    """linear with each way of keeping the activation's input (none, the output, z), a frozen
    weight beside a trainable bias, PReLU's learnable slopes, and enough rows that grad-weight
    sums partials."""
    generator = torch.Generator().manual_seed(seed)

    def step(x, rows, weight, bias, second, frozen, third, slopes):
        y = fastcnn.linear(x, weight, bias, activation="gelu")
        y = fastcnn.linear(y, second, activation="relu")
        z = fastcnn.linear(rows, weight, bias)
        z = fastcnn.linear(z, frozen.detach(), activation="silu")
        prelu = torch.nn.PReLU(5)
        prelu.weight = torch.nn.Parameter(slopes)
        z = fastcnn.linear(z, third, activation=prelu)
        (y.sum() + z.sum()).backward()

    def tensors():
        make = lambda shape: make_tensor(shape, generator=generator)  # noqa: E731
        return [make((3, 5, 9)), make((300, 9)).requires_grad_(), make((7, 9)).requires_grad_(),
                make((7,)).requires_grad_(), make((4, 7)).requires_grad_(), make((6, 7)),
                make((5, 6)).requires_grad_(), make((5,)).requires_grad_()]

    seen = _compare(step, tensors)
    assert {"fastcnn::linear", "fastcnn::linear_input_grad", "fastcnn::linear_weight_grad"} <= seen, seen


def test_declared_launches_are_the_kernels_launches_of_the_squeeze_excitation_gate_and_prelu(seed):
    """The gate and PReLU on large planes (the backward's sums in slices) and on small ones (one pass)."""
    generator = torch.Generator().manual_seed(seed)

    def step(large, small, large_scale, small_scale):
        y = fastcnn.squeeze_excitation_gate(large, large_scale, activation="sigmoid")
        z = fastcnn.squeeze_excitation_gate(small, small_scale, activation="hardsigmoid")
        y = fastcnn.prelu(y, large_scale.reshape(-1))
        z = fastcnn.prelu(z, small_scale[:1, :1].reshape(1))
        (y.sum() + z.sum()).backward()

    def tensors():
        make = lambda shape, layout="contiguous": make_tensor(shape, layout=layout, generator=generator)  # noqa: E731
        return [make((1, 6, 40, 33), "channels_last").requires_grad_(), make((3, 8, 5, 3)).requires_grad_(),
                make((1, 6, 1, 1)).requires_grad_(), make((3, 8, 1, 1)).requires_grad_()]

    seen = _compare(step, tensors)
    assert {"fastcnn::squeeze_excitation_gate", "fastcnn::squeeze_excitation_gate_backward", "fastcnn::prelu",
            "fastcnn::prelu_backward"} <= seen, seen


def test_declared_launches_are_the_kernels_launches_of_the_pointwise_losses(seed):
    """Reduced (many partials), weighted (Σw), 'none' with a broadcast target (the strided walk);
    nll_loss reduced and not; log_softmax, and softmax of a transposed view (a contiguous copy);
    the elastic-net penalty of three tensors."""
    generator = torch.Generator().manual_seed(seed)

    def step(x, target, weight, logits, labels):
        loss = fastcnn.mse_loss(x, target, weight=weight) + fastcnn.huber_loss(x, target, reduction="sum")
        loss = loss + fastcnn.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum()
        loss = loss + fastcnn.nll_loss(fastcnn.log_softmax(logits, 1), labels.argmax(1))
        loss = loss + fastcnn.nll_loss(x, x.detach().argmax(1), reduction="none").sum()
        loss = loss + (fastcnn.softmax(x.t(), 0) * target.t()).sum()
        loss = loss + fastcnn.penalty([x, target, logits], 1e-3, 1e-2)
        loss.backward()

    def tensors():
        make = lambda shape: make_tensor(shape, generator=generator)  # noqa: E731
        return [make((9, 1000)).requires_grad_(), make((9, 1000)).requires_grad_(), make((9, 1000)).abs(),
                make((4, 7)).requires_grad_(), torch.rand(4, 7, generator=generator)]

    seen = _compare(step, tensors)
    assert {"fastcnn::pointwise_loss", "fastcnn::pointwise_loss_backward", "fastcnn::nll_loss",
            "fastcnn::nll_loss_backward", "fastcnn::softmax", "fastcnn::softmax_backward", "fastcnn::penalty",
            "fastcnn::penalty_backward"} <= seen, seen


# ----------------------------------------------------------------------------- by hand
def _only(calls, name):
    found = [call for call in calls if call.name == name]
    assert len(found) == 1, [call.name for call in calls]
    return found[0]


def test_a_convolution_costs_its_operands_once_and_its_flops():
    model = torch.nn.Conv2d(5, 7, 3, padding=1, bias=False)  # an NCHW weight: copied for the GEMM
    images = torch.empty((2, 5, 9, 11), device="meta").to(memory_format=torch.channels_last)
    result = fastcnn.estimate(model, images, baseline=True)
    forward = _only(result.fastcnn.calls, "fastcnn::conv2d")
    weight_bytes, image_bytes, out_bytes = 7 * 5 * 3 * 3 * 4, 2 * 5 * 9 * 11 * 4, 2 * 7 * 9 * 11 * 4
    flops = 2 * 2 * 9 * 11 * 7 * 5 * 3 * 3
    copy, gemm = forward.launches
    assert (copy.kernel, copy.bytes_read, copy.bytes_written) == ("aten::copy_ (to channels_last)", weight_bytes,
                                                                  weight_bytes)
    assert gemm == _cost.Launch("_conv2d_forward_kernel", image_bytes + weight_bytes, out_bytes, flops, "tf32",
                                weight_bytes)
    eager = _only(result.eager.calls, "aten::convolution").launches
    assert eager == [_cost.Launch("aten::convolution", image_bytes + weight_bytes, out_bytes, flops, "tf32")]
    # the input does not need a gradient: the backward is the weight's alone, the same FLOPs
    weight_grad = _only(result.fastcnn.calls, "fastcnn::conv2d_weight_grad")
    assert sum(launch.flops for launch in weight_grad.launches) == flops
    assert not [call for call in result.fastcnn.calls if call.name == "fastcnn::conv2d_input_grad"]


def test_batch_norm_reads_its_input_twice_each_way_and_saves_six_floats_per_channel():
    model = torch.nn.BatchNorm2d(5)
    images = torch.empty((4, 5, 6, 7), device="meta", requires_grad=True)
    result = fastcnn.estimate(model, images, baseline=False)
    x_bytes = 4 * 5 * 6 * 7 * 4
    statistics = _only(result.fastcnn.calls, "fastcnn::batch_norm_statistics")
    apply = _only(result.fastcnn.calls, "fastcnn::batch_norm_apply")
    assert [launch.kernel for launch in statistics.launches] == ["_partial_stats_kernel", "_finalize_kernel"]
    assert statistics.launches[0].bytes_read == x_bytes and apply.launches[0].bytes_read == x_bytes
    assert apply.launches[0].bytes_written == x_bytes
    backward = _only(result.fastcnn.calls, "fastcnn::batch_norm_backward")
    assert [(launch.kernel, launch.bytes_read) for launch in backward.launches if launch.bytes_read >= x_bytes] == [
        ("_backward_sums_kernel", 2 * x_bytes), ("_backward_apply_kernel", 2 * x_bytes)]
    # (mean, invstd) per channel, as torch saves, and the input prologue's four (kernels/prologue.py)
    assert statistics.saved_bytes == _round(6 * 5 * 4)


def test_max_pool_saves_one_byte_per_window_where_torch_saves_eight():
    model = torch.nn.MaxPool2d(2)
    images = torch.empty((2, 3, 16, 16), device="meta", requires_grad=True)
    result = fastcnn.estimate(model, images)
    windows = 2 * 3 * 8 * 8
    ours = _only(result.fastcnn.calls, "fastcnn::max_pool2d")
    theirs = _only(result.eager.calls, "aten::max_pool2d_with_indices")
    assert ours.launches[0].bytes_written == windows * 4 + windows  # the output and its one-byte taps
    assert theirs.launches[0].bytes_written == windows * 4 + windows * 8  # the output and int64 indices
    assert (ours.saved_bytes, theirs.saved_bytes) == (_round(windows), _round(8 * windows))
    # the backward gathers through the taps: it reads the gradient and the taps, writes the input's
    backward = _only(result.fastcnn.calls, "fastcnn::max_pool2d_backward").launches[0]
    assert (backward.bytes_read, backward.bytes_written) == (windows * 4 + windows, 2 * 3 * 16 * 16 * 4)


def test_the_peak_of_a_one_layer_step_by_hand():
    """x, the weight, the output, its ones gradient and the weight's gradient are all alive when
    the weight's gradient is made; nothing else is."""
    model = torch.nn.Conv2d(5, 7, 1, bias=False).to(memory_format=torch.channels_last)  # no copy: 1x1
    images = torch.empty((2, 5, 9, 11), device="meta").to(memory_format=torch.channels_last)
    result = fastcnn.estimate(model, images, baseline=False).fastcnn
    x, weight, out = 2 * 5 * 9 * 11 * 4, 7 * 5 * 4, 2 * 7 * 9 * 11 * 4
    # and while the weight's gradient is made, its split reduction's fp32 partials, if any
    workspace = max(launch.workspace for launch in _only(result.calls, "fastcnn::conv2d_weight_grad").launches)
    assert workspace % weight == 0
    assert result.peak_bytes == _round(x) + 2 * _round(weight) + 2 * _round(out) + _round(workspace)
    assert result.peak_by_kind == {"parameters": _round(weight), "gradients": _round(weight), "optimizer state": 0,
                                   "input batch": _round(x), "saved activations": 0,
                                   "temporaries": 2 * _round(out) + _round(workspace)}
    assert result.peak_at.startswith("backward fastcnn::conv2d_weight_grad")


def test_optimizer_state_is_there_before_the_step_and_counted():
    model = torch.nn.Conv2d(3, 4, 3, bias=True)
    images = torch.empty((2, 3, 8, 8), device="meta")
    result = fastcnn.estimate(model, images, optimizer=torch.optim.Adam)
    state = 2 * (_round(4 * 3 * 3 * 3 * 4) + _round(4 * 4)) + 2 * 512  # exp_avg, exp_avg_sq; the step counters
    assert result.fastcnn.peak_by_kind["optimizer state"] == state
    assert [call.name for call in result.fastcnn.calls if call.phase == "optimizer"] == ["fastcnn::adam_step_"]
    # torch's multi-tensor Adam, as it runs on CUDA tensors: several _foreach launches
    eager_steps = [call.name for call in result.eager.calls if call.phase == "optimizer"]
    assert sum(name.startswith("aten::_foreach_") for name in eager_steps) >= 5, eager_steps


def test_a_full_size_step_costs_no_memory_and_little_time():
    """Fake tensors: batch 4096 at 224x224 would need tens of GB; counting it takes seconds."""
    model = TinyResNet(classes=1000, width=16)
    images = torch.empty((4096, 3, 224, 224), device="meta").to(memory_format=torch.channels_last)
    labels = torch.empty((4096,), dtype=torch.int64, device="meta")
    result = fastcnn.estimate(model, images, labels, optimizer=torch.optim.SGD)
    assert result.fastcnn.peak_bytes > 4096 * 3 * 224 * 224 * 4 and result.eager.peak_bytes > 0
    text = str(result)
    assert "MODELLED" in text and "peak memory, fastcnn / eager" in text and "H100" in text


def test_the_roofline_is_bytes_or_flops_over_the_peak_plus_a_gap(tmp_path):
    peaks = estimation.machine_peaks(str(tmp_path))
    assert peaks["H100"]["source"] == peaks["H200"]["source"] == "data-sheet"
    memory_bound = _cost.Launch("k", 3 * 10**9, 10**9)
    compute_bound = _cost.Launch("k", 10, 10, flops=10**15, math="bf16")
    h100 = peaks["H100"]
    assert estimation.launch_time_s(memory_bound, h100) == pytest.approx(4e9 / 3.35e12 + estimation.LAUNCH_GAP_S)
    assert estimation.launch_time_s(compute_bound, h100) == pytest.approx(1e15 / 989.4e12 + estimation.LAUNCH_GAP_S)
    results = {"environment": {"gpu": "NVIDIA H100 80GB HBM3"},
               "peaks": {"copy_gbps": 3000.0, "matmul_bf16_tflops": 700.0, "matmul_fp32_tflops": 400.0,
                         "fp32_matmul_uses_tf32": True}}
    (tmp_path / "NVIDIA-H100-2026-12-01.json").write_text(json.dumps(results))
    measured = estimation.machine_peaks(str(tmp_path))
    assert measured["H100"]["source"].startswith("measured") and measured["H200"]["source"] == "data-sheet"
    assert (measured["H100"]["bandwidth"], measured["H100"]["bf16"], measured["H100"]["tf32"]) == (3e12, 7e14, 4e14)


def test_foreach_launches_follow_multi_tensor_apply():
    def lists(*numels):
        return [[torch.empty(n, device="meta") for n in numels]] * 2
    assert estimation._foreach_launches(lists(*[10] * 64)) == 1
    assert estimation._foreach_launches(lists(*[10] * 65)) == 2  # 64 tensors a launch at depth 2
    assert estimation._foreach_launches(lists(65536 * 320)) == 1
    assert estimation._foreach_launches(lists(65536 * 321)) == 2  # 320 chunks a launch


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="argument 'model' must be a torch.nn.Module"):
        fastcnn.estimate(lambda x: x, torch.empty(1))
    with pytest.raises(TypeError, match="argument 'example_input' must be a Tensor"):
        fastcnn.estimate(torch.nn.ReLU(), [1.0])
    with pytest.raises(TypeError, match="argument 'optimizer' must be a torch.optim.Optimizer class"):
        fastcnn.estimate(torch.nn.Conv2d(1, 1, 1), torch.empty((1, 1, 2, 2)), optimizer=object())
    with pytest.raises(ValueError, match="argument 'device' must be a CUDA device"):
        fastcnn.estimate(torch.nn.ReLU(), torch.empty(2), device="cpu")
    with pytest.raises(ValueError, match="no model 'NoSuchNet'"):
        estimation.load_model("fastcnn:NoSuchNet")


def test_the_command_line_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "estimate.json"
    code = fastcnn.profile.main(["--estimate", "--model", "fastcnn:TinyResNet", "--batch", "512", "--image-size", "64",
                                 "--channels-last", "--dtype", "fp32", "--optimizer", "adamw", "--json", str(path)])
    printed = capsys.readouterr().out
    assert code == 0 and "MODELLED" in printed and "fastcnn:TinyResNet" in printed and "AdamW step" in printed
    written = json.loads(path.read_text())
    assert written["modelled"] and written["fastcnn"]["peak_bytes"] > 0 and written["eager"]["operators"]
    assert math.isclose(sum(written["fastcnn"]["peak_by_kind"].values()), written["fastcnn"]["peak_bytes"])


@gpu_only("the peak a real CUDA step allocates")
def test_the_peak_is_what_cuda_allocates():
    """fastcnn's kernels allocate what the estimate models (cuDNN's workspaces are not modelled, so
    only fastcnn's side is held to it)."""
    torch.manual_seed(0)
    model = fastcnn.convert(TinyResNet(classes=10, width=32)).to(DEVICE, memory_format=torch.channels_last)
    optimizer = fastcnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(64, 3, 96, 96, device=DEVICE).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (64,), device=DEVICE)
    for _ in range(2):  # the second step is the steady one the estimate models
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fastcnn.cross_entropy(model(images), labels).backward()
        optimizer.step()
        torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated()
    estimated = fastcnn.estimate(model, images, labels, fastcnn.nn.CrossEntropyLoss(),
                                 optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), baseline=False,
                                 convert=False).fastcnn.peak_bytes
    assert abs(estimated - measured) <= 0.1 * measured, (estimated, measured)


def test_the_zoo_table_and_charts_are_written_from_the_records(tmp_path):
    result = estimation.estimate_model("fastcnn:TinyResNet", batch=256, dtype="fp32", channels_last=True,
                                       image_size=32)
    summary = result.summary()
    record = {"model": "TinyResNet", "batch": 256, "dtype": "fp32", "layout": "channels_last",
              "machines": result.machines, "fastcnn": summary["fastcnn"], "eager": summary["eager"]}
    environment = {"date": "2026-12-05T00:00:00+00:00", "torch": torch.__version__, "torchvision": "none"}
    (tmp_path / reporting.ZOO_FILE).write_text(json.dumps({"environment": environment, "records": [record]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{reporting.ESTIMATES_BEGIN}\nold\n{reporting.ESTIMATES_END}\nafter\n")
    assert reporting.render_readme_estimates(str(readme), str(tmp_path))
    text = readme.read_text()
    ratio = summary["fastcnn"]["peak_bytes"] / summary["eager"]["peak_bytes"]
    assert "old" not in text and "| TinyResNet | fp32 channels_last |" in text and f"(**{ratio:.2f}**)" in text
    assert "lower bound" in text and text.startswith("before") and text.endswith("after\n")
    charts = reporting.write_estimate_charts([record], str(tmp_path))
    assert [path.rsplit("/", 1)[-1] for path in charts] == ["zoo-fp32-channels_last-batch256.png"]


def test_the_readme_shows_the_committed_estimates(tmp_path):
    """The README's modelled table is what scripts/render_perf_table.py makes of the committed
    bench/results/estimates/zoo.json, not a figure typed by hand."""
    root = pathlib.Path(__file__).resolve().parent.parent
    readme = tmp_path / "README.md"
    readme.write_text((root / "README.md").read_text())
    assert reporting.render_readme_estimates(str(readme), str(root / "bench" / "results" / "estimates"))
    assert readme.read_text() == (root / "README.md").read_text()


def test_declared_launches_are_the_kernels_launches_of_augmentation(seed):
    """A fused pipeline with a contrast jitter (its statistics pass first), one without, and MixUp."""
    from fastcnn import transforms as T

    generator = torch.Generator().manual_seed(seed)
    with_contrast = T.Compose([T.RandomResizedCrop(5), T.ColorJitter(0.4, 0.4), T.ToDtype(torch.float32, scale=True)])
    plain = T.Compose([T.RandomCrop(6, padding=1), T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True)])
    mixup = T.MixUp(num_classes=4)

    def step(images, labels):
        mixup(with_contrast(images) + plain(images)[..., :5, :5], labels)

    def tensors():
        return [torch.randint(0, 256, (3, 3, 7, 9), generator=generator, dtype=torch.uint8),
                torch.randint(0, 4, (3,), generator=generator)]

    assert {"fastcnn::augment", "fastcnn::mix"} <= _compare(step, tensors)
