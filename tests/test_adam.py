"""fastcnn.optim.Adam / AdamW against torch.optim.Adam / AdamW(foreach=False) run in float64
(tests/optimizer_harness.py: parameter sets, trajectories, checkpoints, GradScaler).

Every test here runs the Triton kernels: compiled on a GPU, through Triton's interpreter on CPU
(tests/conftest.py).
"""
import warnings

import pytest
import torch

import fastcnn
from fastcnn.testing import assert_close, count_launches, gpu_only, make_tensor, strided_copy
from optimizer_harness import (PARAM_SPECS, check_constructor_errors, check_grad_scaler, check_no_aten_math,
                               check_launches_per_bucket, check_no_host_sync, check_sparse_grads_refused,
                               check_state_dict_interchange, make_params, opinfo_configs)
from optimizer_harness import run_against_torch as run_optimizers

PAIRS = {"Adam": (fastcnn.optim.Adam, torch.optim.Adam), "AdamW": (fastcnn.optim.AdamW, torch.optim.AdamW)}


def run_against_torch(name, kwargs, dtype, generator, seed, **options):
    return run_optimizers(*PAIRS[name], kwargs, dtype, generator, seed, launches={"adam_step": 2}, **options)


@pytest.mark.every_triton
@pytest.mark.parametrize("name, kwargs", opinfo_configs("Adam") + opinfo_configs("AdamW"))
def test_pytorch_optimizer_inputs(name, kwargs, generator, seed):
    """Every configuration of PyTorch's own optimizer test inputs (common_optimizers)."""
    run_against_torch(name, kwargs, torch.float32, generator, seed)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("kwargs", [
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.3, amsgrad=True, maximize=True),
    dict(lr=0.01, betas=(0.0, 0.0)),
    dict(lr=0.005, betas=(0.95, 0.99999), weight_decay=0.05, amsgrad=True),
], ids=["betas-eps", "amsgrad-maximize-decay", "zero-betas", "beta2-near-one"])
def test_options_with_skipped_grads(name, kwargs, generator, seed):
    """Params whose grad is None are skipped, so step counters differ between tensors."""
    run_against_torch(name, kwargs, torch.float32, generator, seed,
                      skip_grad=lambda step, index: index in (2, 5) and step % 3 == 1)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_low_precision_params(name, dtype, generator, seed):
    """The stored moments round each step, and a one-unit difference in that rounding (fp32
    against float64 arithmetic at a rounding boundary) changes every later update of the param
    by a unit roundoff of one step's update, which Adam bounds by lr·(1 - beta1)/sqrt(1 - beta2)
    (betas (0.9, 0.999)): update_scale."""
    kwargs = dict(lr=0.01, weight_decay=0.1, amsgrad=True)
    run_against_torch(name, kwargs, dtype, generator, seed, update_scale=kwargs["lr"] * 0.1 / 0.001 ** 0.5)


def test_complex_params_update_as_real_pairs(generator, seed):
    real = make_tensor((7, 6), generator=generator, low=0.01, high=0.1)
    param = torch.view_as_complex(real.view(7, 3, 2)).clone().requires_grad_()
    reference = param.detach().to(torch.complex128).clone().requires_grad_()
    ours, theirs = fastcnn.optim.Adam([param], lr=0.01), torch.optim.Adam([reference], lr=0.01, foreach=False)
    for _ in range(5):
        grad = torch.view_as_complex(make_tensor((7, 3, 2), generator=generator))
        param.grad, reference.grad = grad, grad.to(torch.complex128)
        ours.step()
        theirs.step()
    assert_close(torch.view_as_real(param), torch.view_as_real(reference), torch.float32, what="complex", seed=seed)


def test_param_groups_and_mixed_dtypes_launch_per_bucket(generator):
    """One pair of launches per (group, dtype) whatever the number of tensors."""
    check_launches_per_bucket(fastcnn.optim.Adam, {"lr": 0.1, "amsgrad": True}, {"adam_step": 2 * 3}, generator)


def test_step_issues_no_aten_math(generator):
    """The update itself is the Triton kernel: no ATen op of torch's Adam runs during a step."""
    params = [make_tensor((n, 3), generator=generator).requires_grad_() for n in (5, 8)]
    check_no_aten_math(fastcnn.optim.AdamW(params, amsgrad=True), "adam_step_", {"adam_step": 2})


def test_tables_follow_reallocated_tensors(generator, seed):
    """Swapping a param's storage or its grad tensor between steps must not update stale memory."""
    params = make_params(torch.float32, generator, PARAM_SPECS[2:4])
    reference = [p.detach().double().clone().requires_grad_() for p in params]
    ours, theirs = fastcnn.optim.Adam(params, lr=0.01), torch.optim.Adam(reference, lr=0.01, foreach=False)
    for step in range(4):
        if step == 2:
            with torch.no_grad():
                params[0].data = params[0].detach().clone()  # new storage, same values
                ours.state[params[0]]["exp_avg"] = ours.state[params[0]]["exp_avg"].clone()
        for p, r in zip(params, reference):
            p.grad = make_tensor(p.shape, generator=generator)
            r.grad = p.grad.double()
        ours.step()
        theirs.step()
    for index, (p, r) in enumerate(zip(params, reference)):
        assert_close(p, r, torch.float32, what=f"param {index}", seed=seed)


def test_no_grads_is_a_no_op(generator):
    params = [make_tensor((3,), generator=generator).requires_grad_()]
    before = params[0].detach().clone()
    optimizer = fastcnn.optim.Adam(params)
    with count_launches() as launched:
        optimizer.step()
    assert not launched and len(optimizer.state) == 0
    assert torch.equal(params[0].detach(), before)


def test_closure_is_evaluated_with_grad(generator):
    param = make_tensor((4,), generator=generator).requires_grad_()
    optimizer = fastcnn.optim.Adam([param])
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = (param * param).sum()
        loss.backward()
        losses.append(loss.detach())
        return loss

    returned = optimizer.step(closure)
    assert len(losses) == 1 and torch.equal(returned.detach(), losses[0])
    assert optimizer.state[param]["step"].item() == 1


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("direction", ["torch_to_fastcnn", "fastcnn_to_torch"])
def test_state_dict_interchange(name, direction, generator, seed):
    check_state_dict_interchange(*PAIRS[name], dict(lr=0.01, weight_decay=0.1, amsgrad=True), direction, generator,
                                 seed)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_strided_optimizer_state_is_read_and_written_through_its_strides(name, generator, seed):
    """Optimizer state that is a non-dense view (a checkpoint's tensors can be anything): the
    step reads and updates it in place, and continues exactly as torch's optimizer."""
    ours_cls, torch_cls = PAIRS[name]
    kwargs = dict(lr=0.01, weight_decay=0.1, amsgrad=True)
    shapes = [(5, 3), (7,)]
    grads = [[make_tensor(shape, generator=generator) for shape in shapes] for _ in range(6)]
    start = [make_tensor(shape, generator=generator, low=0.01, high=0.1) for shape in shapes]
    params, expected_params = [[p.clone().requires_grad_() for p in start] for _ in range(2)]
    ours, theirs = ours_cls(params, **kwargs), torch_cls(expected_params, foreach=False, **kwargs)
    for step, step_grads in enumerate(grads):
        for p, r, g in zip(params, expected_params, step_grads):
            p.grad, r.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        if step == 2:
            for p in params:
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    ours.state[p][key] = strided_copy(ours.state[p][key])
                    assert not ours.state[p][key].is_contiguous()
    for index, (p, r) in enumerate(zip(params, expected_params)):
        assert_close(p, r, torch.float32, what=f"param {index}", seed=seed)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            state = ours.state[p][key]
            assert not state.is_contiguous()  # updated in place, not replaced
            assert_close(state, theirs.state[r][key], torch.float32, what=f"param {index} {key}", seed=seed)
            assert torch.isnan(state._base[..., 1:]).all()  # the elements between were never touched


@pytest.mark.every_triton
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-then-step"])
def test_grad_scaler_unscales_and_skips_inf_steps(unscale_first, generator, seed):
    """torch.amp.GradScaler: the kernel unscales the grads and skips the step on inf/NaN."""
    check_grad_scaler(fastcnn.optim.Adam, torch.optim.Adam, dict(lr=0.01), unscale_first, generator, seed)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_constructor_errors_match_torch(name):
    """PyTorch's own error inputs for Adam/AdamW raise the same exception types and messages."""
    check_constructor_errors(name, PAIRS[name][0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-0.1), "Invalid learning rate: -0.1"),
    (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    (dict(betas=(-0.1, 0.9)), "Invalid beta parameter at index 0: -0.1"),
    (dict(weight_decay=-0.5), "Invalid weight_decay value: -0.5"),
    (dict(differentiable=True), "differentiable=True is not supported"),
])
def test_bad_hyperparameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastcnn.optim.Adam([torch.ones(2, requires_grad=True)], **kwargs)


def test_sparse_and_integer_grads_are_refused_before_launch():
    check_sparse_grads_refused(fastcnn.optim.Adam)
    with pytest.raises(TypeError, match="float64 are not supported"):
        param = torch.ones(3, dtype=torch.float64, requires_grad=True)
        param.grad = torch.ones(3, dtype=torch.float64)
        fastcnn.optim.Adam([param]).step()


def test_is_a_drop_in_subclass():
    param = torch.ones(2, requires_grad=True)
    assert isinstance(fastcnn.optim.Adam([param]), torch.optim.Adam)
    adamw = fastcnn.optim.AdamW([param])
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 1e-2
    assert adamw.param_groups[0]["decoupled_weight_decay"] is True
    scheduler = torch.optim.lr_scheduler.StepLR(adamw, step_size=1, gamma=0.5)
    param.grad = torch.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adamw.step()
        scheduler.step()
    assert adamw.param_groups[0]["lr"] == 5e-4


@gpu_only("host synchronisation exists only with a device")
def test_step_never_synchronizes_with_the_device(generator):
    check_no_host_sync(lambda params: fastcnn.optim.Adam(params, amsgrad=True), generator)


@gpu_only("~20 GB of device memory")
def test_tensor_of_more_than_2_to_the_31_elements(seed):
    """Offsets past 2**31 must index in int64: check elements on both sides of the boundary."""
    numel = 2**31 + 4099
    param = torch.full((numel,), 0.5, dtype=torch.float16, device="cuda", requires_grad=True)
    param.grad = torch.full_like(param, 0.25)
    optimizer = fastcnn.optim.Adam([param], lr=0.01)
    optimizer.step()
    reference = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    reference.grad = torch.tensor([0.25], dtype=torch.float64)
    torch.optim.Adam([reference], lr=0.01, foreach=False).step()
    for index in (0, 2**31 - 1, 2**31, numel - 1):
        assert_close(param.detach()[index:index + 1], reference.detach(), torch.float16, what=f"element {index}",
                     seed=seed)
