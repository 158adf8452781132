"""fastcnn.optim.RMSprop against torch.optim.RMSprop(foreach=False) run in float64
(tests/optimizer_harness.py). Every test here runs the Triton kernels (the interpreter on CPU)."""
import pytest
import torch

import fastcnn
from fastcnn.testing import gpu_only, make_tensor
from optimizer_harness import (check_constructor_errors, check_grad_scaler, check_no_aten_math, check_no_host_sync,
                               check_state_dict_interchange, opinfo_configs, run_against_torch)

LAUNCHES = {"rmsprop_step": 2}


@pytest.mark.every_triton
@pytest.mark.parametrize("name, kwargs", opinfo_configs("RMSprop"))
def test_pytorch_optimizer_inputs(name, kwargs, generator, seed):
    run_against_torch(fastcnn.optim.RMSprop, torch.optim.RMSprop, kwargs, torch.float32, generator, seed,
                      launches=LAUNCHES)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.01, alpha=0.9, eps=1e-3, momentum=0.9),
    dict(lr=0.005, centered=True, momentum=0.5, weight_decay=0.01, maximize=True),
    dict(lr=0.01, alpha=0.0),
], ids=["efficientnet-recipe", "centered-momentum-maximize", "zero-alpha"])
def test_options_with_skipped_grads(kwargs, generator, seed):
    run_against_torch(fastcnn.optim.RMSprop, torch.optim.RMSprop, kwargs, torch.float32, generator, seed,
                      launches=LAUNCHES, skip_grad=lambda step, index: index in (2, 5) and step % 3 == 1)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params(dtype, generator, seed):
    """The stored momentum buffer rounds each step, and a one-unit difference in that rounding
    (fp32 against float64 arithmetic at a rounding boundary) moves the param by lr times the
    buffer from then on. The buffer sums up to 1 / (1 - momentum) normalised gradients, each at
    most 1 / sqrt(alpha·(1 - alpha)) in size (the centred first step, g / sqrt(avg)):
    update_scale = lr / ((1 - momentum)·sqrt(alpha·(1 - alpha)))."""
    kwargs = dict(lr=0.01, alpha=0.99, centered=True, momentum=0.9, weight_decay=0.1)
    update_scale = kwargs["lr"] / ((1 - kwargs["momentum"]) * (kwargs["alpha"] * (1 - kwargs["alpha"])) ** 0.5)
    run_against_torch(fastcnn.optim.RMSprop, torch.optim.RMSprop, kwargs, dtype, generator, seed,
                      launches=LAUNCHES, update_scale=update_scale)


def test_step_issues_no_aten_math(generator):
    params = [make_tensor((n, 3), generator=generator).requires_grad_() for n in (5, 8)]
    check_no_aten_math(fastcnn.optim.RMSprop(params, centered=True, momentum=0.9), "rmsprop_step_", LAUNCHES)


@pytest.mark.parametrize("direction", ["torch_to_fastcnn", "fastcnn_to_torch"])
def test_state_dict_interchange(direction, generator, seed):
    check_state_dict_interchange(fastcnn.optim.RMSprop, torch.optim.RMSprop,
                                 dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1), direction, generator,
                                 seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-then-step"])
def test_grad_scaler_unscales_and_skips_inf_steps(unscale_first, generator, seed):
    check_grad_scaler(fastcnn.optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01, momentum=0.9), unscale_first,
                      generator, seed)


def test_constructor_errors_match_torch():
    check_constructor_errors("RMSprop", fastcnn.optim.RMSprop)
    with pytest.raises(ValueError, match="Invalid alpha value: -0.5"):
        fastcnn.optim.RMSprop([torch.ones(2, requires_grad=True)], alpha=-0.5)


@gpu_only("host synchronisation exists only with a device")
def test_step_never_synchronizes_with_the_device(generator):
    check_no_host_sync(lambda params: fastcnn.optim.RMSprop(params, centered=True, momentum=0.9), generator)
