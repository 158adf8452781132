"""fastcnn.optim.Adadelta against torch.optim.Adadelta(foreach=False) run in float64
(tests/optimizer_harness.py). Every test here runs the Triton kernels (the interpreter on CPU)."""
import pytest
import torch

import fastcnn
from fastcnn.testing import gpu_only, make_tensor
from optimizer_harness import (check_constructor_errors, check_grad_scaler, check_no_aten_math, check_no_host_sync,
                               check_state_dict_interchange, opinfo_configs, run_against_torch)

LAUNCHES = {"adadelta_step": 2}


@pytest.mark.every_triton
@pytest.mark.parametrize("name, kwargs", opinfo_configs("Adadelta"))
def test_pytorch_optimizer_inputs(name, kwargs, generator, seed):
    run_against_torch(fastcnn.optim.Adadelta, torch.optim.Adadelta, kwargs, torch.float32, generator, seed,
                      launches=LAUNCHES)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.05, maximize=True),
    dict(rho=0.0),
], ids=["rho-eps-decay-maximize", "zero-rho"])
def test_options_with_skipped_grads(kwargs, generator, seed):
    run_against_torch(fastcnn.optim.Adadelta, torch.optim.Adadelta, kwargs, torch.float32, generator, seed,
                      launches=LAUNCHES, skip_grad=lambda step, index: index in (2, 5) and step % 3 == 1)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params(dtype, generator, seed):
    """A one-unit difference in rounding the stored state (fp32 against float64 at a rounding
    boundary) changes every later update by a unit roundoff of one step's update,
    lr·sqrt(acc_delta + eps)/sqrt(square_avg + eps)·g: at most lr·sqrt(eps/(1 - rho)) on the first
    step, and of that order while acc_delta is fed by such updates (update_scale)."""
    kwargs = dict(lr=1.0, rho=0.9, eps=1e-3, weight_decay=0.1)
    run_against_torch(fastcnn.optim.Adadelta, torch.optim.Adadelta, kwargs, dtype, generator, seed, launches=LAUNCHES,
                      update_scale=kwargs["lr"] * (kwargs["eps"] / (1 - kwargs["rho"])) ** 0.5)


def test_step_issues_no_aten_math(generator):
    params = [make_tensor((n, 3), generator=generator).requires_grad_() for n in (5, 8)]
    check_no_aten_math(fastcnn.optim.Adadelta(params, weight_decay=0.1), "adadelta_step_", LAUNCHES)


@pytest.mark.parametrize("direction", ["torch_to_fastcnn", "fastcnn_to_torch"])
def test_state_dict_interchange(direction, generator, seed):
    check_state_dict_interchange(fastcnn.optim.Adadelta, torch.optim.Adadelta, dict(lr=1.0, rho=0.8, eps=1e-4),
                                 direction, generator, seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-then-step"])
def test_grad_scaler_unscales_and_skips_inf_steps(unscale_first, generator, seed):
    check_grad_scaler(fastcnn.optim.Adadelta, torch.optim.Adadelta, dict(lr=1.0, eps=1e-4), unscale_first,
                      generator, seed)


def test_constructor_errors_match_torch():
    check_constructor_errors("Adadelta", fastcnn.optim.Adadelta)


@gpu_only("host synchronisation exists only with a device")
def test_step_never_synchronizes_with_the_device(generator):
    check_no_host_sync(lambda params: fastcnn.optim.Adadelta(params, weight_decay=0.1), generator)
