"""fastcnn's kernels as PyTorch operators: ``torch.library.opcheck`` on every operator (schema,
autograd registration, fake tensors, AOT dispatch with dynamic shapes), ``torch.compile`` with
``fullgraph=True`` (no graph break) giving eager's results, and the operators' names in
``torch.profiler`` traces."""
import pytest
import torch

import fastcnn
from fastcnn.ops.activation import DERIVATIVE_FROM_OUTPUT
from fastcnn.testing import DEVICE, assert_close, make_tensor

OPS = torch.ops.fastcnn


def _opcheck(op, args, kwargs=None):
    results = torch.library.opcheck(op, args, kwargs)
    assert set(results.values()) == {"SUCCESS"}, results


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck_conv2d(layout, generator):
    input = make_tensor((2, 6, 9, 7), layout=layout, generator=generator).requires_grad_()
    weight = make_tensor((4, 3, 3, 2), generator=generator).requires_grad_()
    bias = make_tensor((4,), generator=generator).requires_grad_()
    geometry = ([2, 1], [1, 0], [2, 1], [1, 2], 2)
    _opcheck(OPS.conv2d.default, (input, weight, bias, *geometry))
    _opcheck(OPS.conv2d.default, (input, weight, None, *geometry))
    grad_out = fastcnn.conv2d(input, weight, bias, (2, 1), (1, 0), (1, 2), 2).detach()
    channels_last = layout == "channels_last"
    _opcheck(OPS.conv2d_input_grad.default, (grad_out, weight.detach(), list(input.shape), channels_last,
                                             [2, 1], [1, 0], [1, 2], 2))
    _opcheck(OPS.conv2d_weight_grad.default, (input.detach(), grad_out, list(weight.shape), channels_last,
                                              [2, 1], [1, 0], [1, 2], 2))
    _opcheck(OPS.conv2d_bias_grad.default, (grad_out,))


@pytest.mark.parametrize("return_indices", [False, True])
def test_opcheck_max_pool2d(return_indices, generator):
    input = make_tensor((2, 3, 9, 8), layout="channels_last", generator=generator).requires_grad_()
    arguments = ([3, 2], [2, 2], [1, 1], [1, 1], True)
    _opcheck(OPS.max_pool2d.default, (input, *arguments, return_indices))
    out, taps, _ = OPS.max_pool2d(input.detach(), *arguments, False)
    _opcheck(OPS.max_pool2d_backward.default, (torch.randn_like(out), taps, list(input.shape), *arguments[:4]))


@pytest.mark.parametrize("training", [True, False])
def test_opcheck_batch_norm(training, generator):
    input = make_tensor((4, 5, 3, 7), layout="channels_last", generator=generator)
    weight, bias = make_tensor((5,), generator=generator), make_tensor((5,), generator=generator)
    running_mean = make_tensor((5,), generator=generator)
    running_var = make_tensor((5,), generator=generator).abs() + 0.5
    _opcheck(OPS.batch_norm_statistics.default, (input, running_mean, running_var, weight, bias, training, 0.1, 1e-5))
    _opcheck(OPS.batch_norm_statistics.default, (input, None, None, None, None, True, 0.1, 1e-5))
    stats = OPS.batch_norm_statistics(input, running_mean.clone(), running_var.clone(), weight, bias, training, 0.1,
                                      1e-5)
    residual = make_tensor((4, 5, 3, 7), generator=generator)
    slopes = make_tensor((5,), generator=generator)  # PReLU's, fused (kind "prelu")
    for kind, slope in ((None, None), ("relu", None), ("prelu", slopes), ("prelu", slopes[:1].expand(5))):
        _opcheck(OPS.batch_norm_apply.default, (input.clone().requires_grad_(), stats, weight.clone().requires_grad_(),
                                                bias.clone().requires_grad_(), training, kind, 0.1,
                                                None if slope is None else slope.clone().requires_grad_()))
    for kind in (None, "relu", "silu", "leaky_relu", "prelu"):
        _opcheck(OPS.batch_norm_residual_apply.default, (input.clone().requires_grad_(), stats, weight, bias,
                                                         residual.clone().requires_grad_(), None, None, None,
                                                         training, kind, 0.1,
                                                         slopes.clone().requires_grad_() if kind == "prelu" else None))
    for kind in (None, "relu"):  # the residual a second batch norm's input (a ResNet downsample's)
        _opcheck(OPS.batch_norm_residual_apply.default, (input.clone().requires_grad_(), stats,
                                                         weight.clone().requires_grad_(), bias,
                                                         residual.clone().requires_grad_(), stats,
                                                         bias.clone().requires_grad_(), weight, training, kind, 0.1,
                                                         None))
    _opcheck(OPS.batch_norm_backward.default, (torch.randn_like(input), input, stats, weight, bias, training, "relu",
                                               0.0, None, [True, True, False]))
    _opcheck(OPS.batch_norm_backward.default, (torch.randn_like(input), input, stats, None, None, training, None, 0.0,
                                               None, [True, True, True]))
    _opcheck(OPS.batch_norm_backward.default, (torch.randn_like(input), input, stats, weight, bias, training, "prelu",
                                               0.0, slopes, [True, False, True, True]))
    output = OPS.batch_norm_residual_apply(input, stats, weight, bias, residual, None, None, None, training, "relu",
                                           0.0, None)
    _opcheck(OPS.batch_norm_residual_grad.default, (torch.randn_like(input), None, None, output, stats, None, None,
                                                    training, "relu", 0.0))
    _opcheck(OPS.batch_norm_residual_grad.default, (torch.randn_like(input), input, residual, None, stats, weight,
                                                    bias, training, "gelu", 0.0))
    _opcheck(OPS.batch_norm_residual_grad_with_sums.default, (torch.randn_like(input), input, residual, None, stats,
                                                              weight, bias, "prelu", 0.0, None, slopes, training))
    if training:
        _opcheck(OPS.batch_norm_residual_grad_with_sums.default, (torch.randn_like(input), input, None, output, stats,
                                                                  None, None, "relu", 0.0, None, None, True))
        _opcheck(OPS.batch_norm_residual_grad_with_sums.default, (torch.randn_like(input), input, residual, None,
                                                                  stats, weight, bias, "gelu", 0.0, None, None, True))
        _opcheck(OPS.batch_norm_residual_grad_with_sums.default, (torch.randn_like(input), input, residual, output,
                                                                  stats, weight, bias, "relu", 0.0, stats, None, True))


def test_opcheck_avg_pool(generator):
    input = make_tensor((2, 3, 7, 6), layout="channels_last", generator=generator).requires_grad_()
    for out_size, window in (([4, 3], ([3, 3], [2, 2], [1, 1], False, None)),
                             ([6, 3], ([2, 3], [1, 2], [0, 1], True, 5))):
        _opcheck(OPS.avg_pool2d.default, (input, out_size, *window))
    _opcheck(OPS.avg_pool2d.default, (input, [3, 4], [], [], [], True, None))  # adaptive
    _opcheck(OPS.avg_pool2d_backward.default, (torch.randn(2, 3, 3, 4), [2, 3, 7, 6], [], [], [], True, None))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_opcheck_cross_entropy(reduction, generator):
    input = make_tensor((6, 5, 3), generator=generator)  # the autograd Function owns the gradient
    target = torch.randint(0, 5, (6, 3), generator=generator).to(DEVICE)
    weight = make_tensor((5,), generator=generator).abs()
    grad = torch.empty_like(input)
    _opcheck(OPS.cross_entropy_forward.default, (input, target, weight, 2, reduction, 0.1, False, grad, torch.float32))
    probabilities = torch.softmax(make_tensor((6, 5, 3), generator=generator), 1)
    _opcheck(OPS.cross_entropy_forward.default, (input, probabilities, None, -100, reduction, 0.0, True, None,
                                                  torch.float32))
    # float64 probabilities for fp32 logits: the loss takes torch's promoted dtype.
    _opcheck(OPS.cross_entropy_forward.default, (input, probabilities.double(), weight, -100, reduction, 0.0, True,
                                                  grad, torch.float64))
    _, denominator = OPS.cross_entropy_forward(input, target, weight, 2, reduction, 0.1, False, grad, torch.float32)
    grad_out = make_tensor((6, 3) if reduction == "none" else (), generator=generator)
    _opcheck(OPS.cross_entropy_backward_.default, (grad, grad_out, denominator, reduction))


@pytest.mark.parametrize("kind", [None, "relu", "gelu", "prelu"])
@pytest.mark.parametrize("scaled", [False, True])
def test_opcheck_linear(kind, scaled, generator):
    input = make_tensor((2, 7, 9), generator=generator).permute(1, 0, 2).reshape(14, 9).requires_grad_()
    weight = make_tensor((5, 9), generator=generator).requires_grad_()
    bias = make_tensor((5,), generator=generator).requires_grad_()
    scale = make_tensor((5,), generator=generator).requires_grad_() if scaled else None
    slope = make_tensor((5,), generator=generator).requires_grad_() if kind == "prelu" else None
    _opcheck(OPS.linear.default, (input, weight, bias, scale, kind, 0.0, slope))
    _opcheck(OPS.linear.default, (input, weight, None, scale, kind, 0.0, slope))
    detached_scale = None if scale is None else scale.detach()
    detached_slope = None if slope is None else slope.detach()
    out, preactivation = OPS.linear(input.detach(), weight.detach(), bias.detach(), detached_scale, kind, 0.0,
                                    detached_slope)
    saved = preactivation if preactivation.numel() else (out if kind is not None else None)
    grad_out = make_tensor(out.shape, generator=generator)
    _opcheck(OPS.linear_input_grad.default, (grad_out, saved, weight.detach(), detached_scale, kind, 0.0,
                                             detached_slope))
    for bias_grad in (True, False):
        _opcheck(OPS.linear_weight_grad.default, (grad_out, saved, input.detach(), detached_scale, kind, 0.0,
                                                  detached_slope, bias_grad, scaled, slope is not None))


@pytest.mark.parametrize("kind", [None, "sigmoid"])
def test_opcheck_squeeze_excitation_gate(kind, generator):
    input = make_tensor((3, 5, 4, 6), layout="channels_last", generator=generator).requires_grad_()
    gate = make_tensor((3, 5), generator=generator).requires_grad_()
    _opcheck(OPS.squeeze_excitation_gate.default, (input, gate, kind, 0.0))
    grad_out = make_tensor((3, 5, 4, 6), generator=generator)
    _opcheck(OPS.squeeze_excitation_gate_backward.default, (grad_out, input.detach(), gate.detach(), kind, 0.0))


def test_opcheck_pointwise_loss(generator):
    """A reduced loss with a broadcast target and weights (the strided walk), and 'none' (flat)."""
    input = make_tensor((3, 5, 4), generator=generator).requires_grad_()
    target = make_tensor((5, 1), generator=generator).expand(3, 5, 4).requires_grad_()
    weight = make_tensor((3, 5, 4), generator=generator).abs().requires_grad_()
    _opcheck(OPS.pointwise_loss.default, (input, target, weight, None, "mse", "weight_mean", 1.0, 0.0, torch.float32))
    logits, labels = make_tensor((4, 6), generator=generator).requires_grad_(), torch.rand(4, 6)
    _opcheck(OPS.pointwise_loss.default, (logits, labels, None, torch.rand(4, 6), "bce_with_logits", "none", 1.0,
                                          0.0, torch.float32))
    loss, denominator = OPS.pointwise_loss(input, target, weight, None, "mse", "weight_mean", 1.0, 0.0, torch.float32)
    _opcheck(OPS.pointwise_loss_backward.default, (torch.ones(()), input.detach(), target.detach(), weight.detach(),
                                                   None, loss.detach(), denominator, "mse", "weight_mean", 0.0,
                                                   [True, True, True]))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_opcheck_nll_loss(reduction, generator):
    input = make_tensor((3, 6, 4), layout="contiguous", generator=generator).requires_grad_()
    target = torch.tensor([[0, 5, -100, 2], [1, 1, 3, 4], [5, 0, 0, 2]])
    weight = make_tensor((6,), generator=generator).abs()
    _opcheck(OPS.nll_loss.default, (input, target, weight, -100, reduction))
    loss, denominator = OPS.nll_loss(input.detach(), target, weight, -100, reduction)
    _opcheck(OPS.nll_loss_backward.default, (torch.ones_like(loss), input.detach(), target, weight, denominator, -100,
                                             reduction))


def test_opcheck_softmax(generator):
    input = make_tensor((3, 6, 4), layout="contiguous", generator=generator).requires_grad_()
    for dim, log in ((1, False), (2, True)):
        _opcheck(OPS.softmax.default, (input, dim, log, torch.float32))
        output = OPS.softmax(input.detach(), dim, log, torch.float32)
        _opcheck(OPS.softmax_backward.default, (make_tensor((3, 6, 4), generator=generator), output, dim, log,
                                                torch.float32))


def test_opcheck_penalty(generator):
    tensors = [make_tensor((3, 5), generator=generator).requires_grad_(), make_tensor((7,), generator=generator)]
    _opcheck(OPS.penalty.default, (tensors, 0.1, 0.2))
    _opcheck(OPS.penalty_backward.default, (torch.ones(()), [t.detach() for t in tensors], 0.1, 0.2))


def test_opcheck_prelu(generator):
    input = make_tensor((3, 5, 8), generator=generator).requires_grad_()
    slope = make_tensor((5,), generator=generator).requires_grad_()
    _opcheck(OPS.prelu.default, (input, slope))
    _opcheck(OPS.prelu_backward.default, (make_tensor((3, 5, 8), generator=generator), input.detach(),
                                          slope.detach()))


class _Tiny(torch.nn.Module):
    """conv → BN+ReLU → max-pool → squeeze-excitation → conv (channels_last) → BN → PReLU →
    linear+GELU with a scale: every fastcnn op."""

    def __init__(self):
        super().__init__()
        self.conv1 = fastcnn.nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = fastcnn.nn.BatchNorm2dReLU(6)
        self.pool = fastcnn.nn.MaxPool2d(2, ceil_mode=True)
        self.se = fastcnn.nn.SqueezeExcitation(6, 2)
        self.conv2 = fastcnn.nn.Conv2d(6, 4, 3, stride=2, bias=False)
        self.bn2 = fastcnn.nn.BatchNorm2d(4)
        self.prelu = fastcnn.nn.PReLU(4)
        self.head = fastcnn.nn.Linear(4, 5, activation="gelu")
        self.scale = torch.nn.Parameter(torch.full((5,), 0.5))

    def forward(self, x):
        x = self.se(self.pool(self.bn1(self.conv1(x))))
        x = self.prelu(self.bn2(self.conv2(x.to(memory_format=torch.channels_last))))
        return self.head(x.mean((2, 3)), output_scale=self.scale)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend, seed, generator):
    torch._dynamo.reset()
    eager = _Tiny().to(DEVICE)
    compiled_model = _Tiny().to(DEVICE)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)
    for step in range(2):
        input = make_tensor((4, 3, 11, 9), generator=generator)
        target = torch.randint(0, 5, (4,), generator=generator).to(DEVICE)
        losses, grads = [], []
        for model, run in ((eager, eager), (compiled_model, compiled)):
            model.zero_grad()
            loss = fastcnn.cross_entropy(run(input), target, label_smoothing=0.1)
            loss.backward()
            losses.append(loss.detach())
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        # The same kernels in another order: fp32's tolerance; the gradients sum over the batch
        # and the network (widened as for 100 terms).
        assert_close(losses[1], losses[0], torch.float32, what="loss", seed=seed)
        assert_close(grads[1], grads[0], torch.float32, what="gradients", seed=seed, reduction_length=100)
    for name, buffer in eager.named_buffers():  # running statistics updated the same way
        assert_close(compiled_model.get_buffer(name), buffer, torch.float32, what=name, seed=seed)


def test_cross_entropy_compiles_without_graph_break(seed, generator):
    torch._dynamo.reset()
    input = make_tensor((7, 10), generator=generator).requires_grad_()
    target = torch.randint(0, 10, (7,), generator=generator).to(DEVICE)
    compiled = torch.compile(lambda x, t: fastcnn.cross_entropy(x, t, reduction="sum"), fullgraph=True,
                             backend="aot_eager")
    loss = compiled(input, target)
    loss.backward()
    expected = torch.nn.functional.cross_entropy(input.detach().double(), target, reduction="sum")
    assert_close(loss, expected, torch.float32, what="compiled loss", seed=seed)


def test_profiler_shows_each_op_by_name(generator):
    model = _Tiny().to(DEVICE)
    input = make_tensor((2, 3, 8, 8), generator=generator)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        loss = fastcnn.cross_entropy(model(input), torch.tensor([1, 3], device=DEVICE))
        loss.backward()
    names = {event.key for event in profile.key_averages()}
    for name in ("fastcnn::conv2d", "fastcnn::conv2d_input_grad", "fastcnn::conv2d_weight_grad",
                 "fastcnn::batch_norm_statistics", "fastcnn::batch_norm_apply", "fastcnn::batch_norm_backward",
                 "fastcnn::max_pool2d", "fastcnn::max_pool2d_backward", "fastcnn::cross_entropy_forward",
                 "fastcnn::cross_entropy_backward_", "fastcnn::conv2d forward", "fastcnn::batch_norm backward"):
        assert name in names, sorted(n for n in names if "fastcnn" in n)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_opcheck_adam_step(amsgrad, generator):
    shapes = [(5, 3), (7,), (2, 3, 2)]
    tensors = {name: [make_tensor(shape, generator=generator) for shape in shapes]
               for name in ("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")}
    for name in ("exp_avg_sqs", "max_exp_avg_sqs"):
        tensors[name] = [t.abs() for t in tensors[name]]
    steps = [torch.full((), 3.0, device=DEVICE) for _ in shapes]
    hyperparameters = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, decoupled_weight_decay=True,
                           amsgrad=amsgrad, maximize=False)
    arguments = (tensors["params"], tensors["grads"], tensors["exp_avgs"], tensors["exp_avg_sqs"],
                 tensors["max_exp_avg_sqs"] if amsgrad else [], steps)
    _opcheck(OPS.adam_step_.default, arguments + (None, None), hyperparameters)
    grad_scale, found_inf = torch.full((), 4.0, device=DEVICE), torch.zeros((), device=DEVICE)
    _opcheck(OPS.adam_step_.default, arguments + (grad_scale, found_inf), hyperparameters)


def _optimizer_tensors(generator, names):
    shapes = [(5, 3), (7,), (2, 3, 2)]
    return {name: [make_tensor(shape, generator=generator).abs() if "sq" in name or "avg" in name
                   else make_tensor(shape, generator=generator) for shape in shapes] for name in names}


def test_opcheck_sgd_step(generator):
    tensors = _optimizer_tensors(generator, ("params", "grads", "buffers"))
    flags = [torch.full((), value, device=DEVICE) for value in (1.0, 0.0, 1.0)]
    hyperparameters = dict(lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.1, nesterov=False, maximize=False)
    _opcheck(OPS.sgd_step_.default, (tensors["params"], tensors["grads"], tensors["buffers"], flags, [0, 2],
                                     None, torch.zeros((), device=DEVICE)), hyperparameters)


def test_opcheck_rmsprop_adagrad_adadelta_steps(generator):
    steps = [torch.full((), 3.0, device=DEVICE) for _ in range(3)]
    grad_scale, found_inf = torch.full((), 4.0, device=DEVICE), torch.zeros((), device=DEVICE)
    t = _optimizer_tensors(generator, ("params", "grads", "square_avgs", "grad_avgs", "buffers"))
    t["grad_avgs"] = [average * 0.1 for average in t["grad_avgs"]]  # centered: v - a*a stays > 0
    _opcheck(OPS.rmsprop_step_.default, (t["params"], t["grads"], t["square_avgs"], t["grad_avgs"], t["buffers"],
                                         steps, grad_scale, found_inf),
             dict(lr=1e-2, alpha=0.9, eps=1e-3, weight_decay=0.1, momentum=0.9, centered=True, maximize=False))
    t = _optimizer_tensors(generator, ("params", "grads", "square_avgs"))
    _opcheck(OPS.adagrad_step_.default, (t["params"], t["grads"], t["square_avgs"], steps, None, None),
             dict(lr=1e-2, lr_decay=0.1, eps=1e-10, weight_decay=0.1, maximize=True))
    t = _optimizer_tensors(generator, ("params", "grads", "square_avgs", "acc_deltas"))
    _opcheck(OPS.adadelta_step_.default, (t["params"], t["grads"], t["square_avgs"], t["acc_deltas"], steps,
                                          grad_scale, found_inf),
             dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False))


def test_opcheck_clip_grad_ops(generator):
    grads = [make_tensor(shape, generator=generator) for shape in ((5, 3), (7,), (2, 3, 2))]
    _opcheck(OPS.grad_norm.default, (grads, 2.0, 1.0), {})
    _opcheck(OPS.scale_grads_.default, (grads, torch.full((), 0.5, device=DEVICE)), {})
    _opcheck(OPS.clamp_grads_.default, (grads, 0.3), {})


@pytest.mark.parametrize("kind", ["silu", "leaky_relu"])
def test_opcheck_activation(kind, generator):
    input = make_tensor((3, 4, 5, 2), layout="channels_last", generator=generator)
    _opcheck(OPS.activation.default, (input.clone().requires_grad_(), kind, 0.2))
    _opcheck(OPS.activation_.default, (input.clone(), kind, 0.2))
    _opcheck(OPS.activation_backward.default, (torch.randn_like(input), input, kind, 0.2, False))
    if kind in DERIVATIVE_FROM_OUTPUT:
        output = OPS.activation(input, kind, 0.2)
        _opcheck(OPS.activation_backward.default, (torch.randn_like(input), output, kind, 0.2, True))


@pytest.mark.parametrize("use_running", [False, True])
def test_opcheck_group_norm(use_running, generator):
    input = make_tensor((3, 6, 4, 5), layout="channels_last", generator=generator)
    weight, bias = make_tensor((6,), generator=generator), make_tensor((6,), generator=generator)
    running_mean, running_var = make_tensor((6,), generator=generator), make_tensor((6,), generator=generator).abs()
    groups = 6 if use_running else 3
    _opcheck(OPS.group_norm_stats.default, (input, running_mean, running_var, groups, 1e-5, use_running, 0.1))
    stats = OPS.group_norm_stats(input, None, None, 3, 1e-5, False, 0.1)
    _opcheck(OPS.group_norm_apply.default, (input.clone().requires_grad_(), stats, weight.clone().requires_grad_(),
                                            bias.clone().requires_grad_(), 3, True, "silu", 0.0, None))
    _opcheck(OPS.group_norm_apply.default, (input.clone().requires_grad_(), stats, None, None, 3, True, None, 0.0,
                                            None))
    slopes = make_tensor((6,), generator=generator)  # PReLU's, fused (kind "prelu")
    _opcheck(OPS.group_norm_apply.default, (input.clone().requires_grad_(), stats, weight, None, 3, True, "prelu", 0.0,
                                            slopes.clone().requires_grad_()))
    _opcheck(OPS.group_norm_backward.default, (torch.randn_like(input), input, stats, weight, bias, 3, True, "gelu",
                                               0.0, None, [True, True, True]))
    _opcheck(OPS.group_norm_backward.default, (torch.randn_like(input), input, stats, weight, bias, 3, True, "prelu",
                                               0.0, slopes, [True, True, True, True]))


@pytest.mark.parametrize("channels_first", [False, True])
def test_opcheck_layer_norm(channels_first, generator):
    input = make_tensor((3, 6, 4, 5), generator=generator)
    size = 6 if channels_first else 5
    weight, bias = make_tensor((size,), generator=generator), make_tensor((size,), generator=generator)
    _opcheck(OPS.layer_norm.default, (input.clone().requires_grad_(), weight.clone().requires_grad_(),
                                      bias.clone().requires_grad_(), 1, channels_first, 1e-5, "gelu_tanh", 0.0, None))
    slopes = make_tensor((size,), generator=generator)  # PReLU's, fused (kind "prelu"), one per normalised element
    _opcheck(OPS.layer_norm.default, (input.clone().requires_grad_(), weight, None, 1, channels_first, 1e-5, "prelu",
                                      0.0, slopes.clone().requires_grad_()))
    _, stats = OPS.layer_norm(input, weight, bias, 1, channels_first, 1e-5, None, 0.0, None)
    _opcheck(OPS.layer_norm_backward.default, (torch.randn_like(input), input, stats, weight, None, 1, channels_first,
                                               None, 0.0, None, [True, True, False]))
    _opcheck(OPS.layer_norm_backward.default, (torch.randn_like(input), input, stats, weight, bias, 1, channels_first,
                                               "prelu", 0.0, slopes, [True, True, True, True]))


def test_opcheck_dropout(generator):
    input = make_tensor((3, 6, 4, 5), layout="channels_last", generator=generator)
    seed = torch.tensor([123], device=DEVICE)
    for channelwise in (False, True):
        _opcheck(OPS.dropout.default, (input.clone().requires_grad_(), seed, 0.3, channelwise))
        _opcheck(OPS.dropout_.default, (input.clone(), seed, 0.3, channelwise))


class _NormBlock(torch.nn.Module):
    """The new ops end to end: GroupNorm+SiLU, a LayerNorm2d, dropout2d, GELU, InstanceNorm."""

    def __init__(self):
        super().__init__()
        self.norm = fastcnn.nn.GroupNorm(2, 6, activation="silu")
        self.norm2d = fastcnn.nn.LayerNorm2d(6)
        self.dropout = fastcnn.nn.Dropout2d(0.0)
        self.gelu = fastcnn.nn.GELU()
        self.instance = fastcnn.nn.InstanceNorm2d(6, affine=True, track_running_stats=True)

    def forward(self, x):
        return self.instance(self.gelu(self.dropout(self.norm2d(self.norm(x)))))


def test_norms_activations_and_dropout_compile_fullgraph(seed, generator):
    torch._dynamo.reset()
    eager, compiled_model = _NormBlock().to(DEVICE), _NormBlock().to(DEVICE)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    input = make_tensor((2, 6, 5, 4), layout="channels_last", generator=generator)
    outputs = [run(input) for run in (eager, compiled)]
    assert_close(outputs[1], outputs[0], torch.float32, what="compiled output", seed=seed)
    for name, buffer in eager.named_buffers():
        assert_close(compiled_model.get_buffer(name), buffer, torch.float32, what=name, seed=seed)
    torch._dynamo.reset()
    dropout = torch.compile(lambda x: fastcnn.dropout(x, 0.5), fullgraph=True, backend="aot_eager")
    torch.manual_seed(seed)
    first = dropout(input)
    torch.manual_seed(seed)
    assert torch.equal(first, dropout(input)) and (first == 0).any()


@pytest.mark.parametrize("activation", ["relu", "silu", None])
def test_batch_norm_with_a_residual_compiles_fullgraph(activation, seed, generator):
    """act(bn(x) + r): one kernel forward, two autograd nodes backward (a torch.autograd.Function
    view and an operator), the same values and gradients compiled."""
    torch._dynamo.reset()
    input, residual = (make_tensor((4, 6, 5, 3), layout="channels_last", generator=generator).requires_grad_()
                       for _ in range(2))
    weight, bias = (make_tensor((6,), generator=generator).requires_grad_() for _ in range(2))

    def block(x, r):
        return fastcnn.batch_norm(x, None, None, weight, bias, True, activation=activation, residual=r)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    grad = make_tensor((4, 6, 5, 3), generator=generator)
    expected, actual = (torch.autograd.grad(run(input, residual), (input, residual, weight, bias), grad)
                        for run in (block, compiled))
    for name, mine, theirs in zip(("input", "residual", "weight", "bias"), actual, expected):
        assert_close(mine, theirs, torch.float32, what=f"compiled grad {name}", seed=seed)
    torch._dynamo.reset()
