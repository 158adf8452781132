"""fastcnn.optim.SGD against torch.optim.SGD(foreach=False) run in float64 (tests/optimizer_harness.py).

Every test here runs the Triton kernels: compiled on a GPU, through Triton's interpreter on CPU.
"""
import warnings

import pytest
import torch

import fastcnn
from fastcnn.testing import gpu_only, make_tensor
from optimizer_harness import (check_constructor_errors, check_grad_scaler, check_launches_per_bucket,
                               check_no_aten_math, check_no_host_sync, check_sparse_grads_refused,
                               check_state_dict_interchange, opinfo_configs, run_against_torch)

ONE_LAUNCH = {"sgd_step": 1}


@pytest.mark.every_triton
@pytest.mark.parametrize("name, kwargs", opinfo_configs("SGD"))
def test_pytorch_optimizer_inputs(name, kwargs, generator, seed):
    """Every configuration of PyTorch's own optimizer test inputs (common_optimizers)."""
    run_against_torch(fastcnn.optim.SGD, torch.optim.SGD, kwargs, torch.float32, generator, seed, launches=ONE_LAUNCH)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True),
    dict(lr=0.02, momentum=0.9, dampening=1.0),
    dict(lr=0.1),
], ids=["dampening", "nesterov-maximize", "full-dampening", "plain"])
def test_options_with_skipped_grads(kwargs, generator, seed):
    """Params whose grad is None are skipped; a momentum buffer appears on a param's first step
    with a grad, holding that gradient (torch's rule), whenever that step comes."""
    run_against_torch(fastcnn.optim.SGD, torch.optim.SGD, kwargs, torch.float32, generator, seed,
                      launches=ONE_LAUNCH, skip_grad=lambda step, index: index in (2, 5) and step < 3)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params(dtype, generator, seed):
    """The stored momentum buffer (up to 1 / (1 - momentum) = 10 gradients) rounds each step, and
    a rounding difference moves the param by lr times it: update_scale = lr / (1 - momentum)."""
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)
    run_against_torch(fastcnn.optim.SGD, torch.optim.SGD, kwargs, dtype, generator, seed, launches=ONE_LAUNCH,
                      update_scale=kwargs["lr"] / (1 - kwargs["momentum"]))


def test_param_groups_and_mixed_dtypes_launch_per_bucket(generator):
    """One launch per (group, dtype) whatever the number of tensors."""
    check_launches_per_bucket(fastcnn.optim.SGD, {"lr": 0.1, "nesterov": True}, {"sgd_step": 3}, generator,
                              lr=0.01, momentum=0.9)


def test_step_issues_no_aten_math(generator):
    params = [make_tensor((n, 3), generator=generator).requires_grad_() for n in (5, 8)]
    check_no_aten_math(fastcnn.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4), "sgd_step_", ONE_LAUNCH)


@pytest.mark.parametrize("direction", ["torch_to_fastcnn", "fastcnn_to_torch"])
def test_state_dict_interchange(direction, generator, seed):
    check_state_dict_interchange(fastcnn.optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2,
                                                                         weight_decay=0.1), direction, generator, seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("kwargs", [dict(lr=0.05, momentum=0.9, dampening=0.5), dict(lr=0.05)],
                         ids=["momentum-dampening", "plain"])
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-then-step"])
def test_grad_scaler_unscales_and_skips_inf_steps(kwargs, unscale_first, generator, seed):
    """Including an inf on the very first step: the momentum buffer created then must still take
    the gradient of the first step that really runs (its flag stays set on the device)."""
    check_grad_scaler(fastcnn.optim.SGD, torch.optim.SGD, kwargs, unscale_first, generator, seed)


def test_constructor_errors_match_torch():
    check_constructor_errors("SGD", fastcnn.optim.SGD)


def test_nesterov_without_momentum_is_refused_as_torch():
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        fastcnn.optim.SGD([torch.ones(2, requires_grad=True)], nesterov=True)
    with pytest.raises(ValueError, match="differentiable=True is not supported"):
        fastcnn.optim.SGD([torch.ones(2, requires_grad=True)], differentiable=True)


def test_sparse_grads_are_refused_before_launch():
    check_sparse_grads_refused(lambda params: fastcnn.optim.SGD(params, momentum=0.9))


def test_is_a_drop_in_subclass_with_schedulers():
    param = torch.ones(2, requires_grad=True)
    optimizer = fastcnn.optim.SGD([param], lr=0.1, momentum=0.9)
    assert isinstance(optimizer, torch.optim.SGD)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1], gamma=0.1)
    param.grad = torch.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


@gpu_only("host synchronisation exists only with a device")
def test_step_never_synchronizes_with_the_device(generator):
    check_no_host_sync(lambda params: fastcnn.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True), generator)
