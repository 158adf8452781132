"""fastcnn.optim.Adagrad against torch.optim.Adagrad(foreach=False) run in float64
(tests/optimizer_harness.py). Every test here runs the Triton kernels (the interpreter on CPU)."""
import pytest
import torch

import fastcnn
from fastcnn.testing import gpu_only, make_tensor
from optimizer_harness import (check_constructor_errors, check_grad_scaler, check_no_aten_math, check_no_host_sync,
                               check_sparse_grads_refused, check_state_dict_interchange, opinfo_configs,
                               run_against_torch)

LAUNCHES = {"adagrad_step": 2}


@pytest.mark.every_triton
@pytest.mark.parametrize("name, kwargs", opinfo_configs("Adagrad"))
def test_pytorch_optimizer_inputs(name, kwargs, generator, seed):
    run_against_torch(fastcnn.optim.Adagrad, torch.optim.Adagrad, kwargs, torch.float32, generator, seed,
                      launches=LAUNCHES)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1, lr_decay=0.3, initial_accumulator_value=0.5, eps=1e-6),
    dict(lr=0.05, weight_decay=0.2, maximize=True),
], ids=["decay-accumulator-eps", "weight-decay-maximize"])
def test_options_with_skipped_grads(kwargs, generator, seed):
    """Skipped params keep their own step counters, so the decayed lr differs between tensors."""
    run_against_torch(fastcnn.optim.Adagrad, torch.optim.Adagrad, kwargs, torch.float32, generator, seed,
                      launches=LAUNCHES, skip_grad=lambda step, index: index in (2, 5) and step % 3 == 1)


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params(dtype, generator, seed):
    """A one-unit difference in rounding the stored sum (fp32 against float64 at a rounding
    boundary) changes every later update by a unit roundoff of one step's update, at most lr
    (lr·g/sqrt(sum of g²)): update_scale."""
    kwargs = dict(lr=0.05, lr_decay=0.1, weight_decay=0.1)
    run_against_torch(fastcnn.optim.Adagrad, torch.optim.Adagrad, kwargs, dtype, generator, seed, launches=LAUNCHES,
                      update_scale=kwargs["lr"])


def test_step_issues_no_aten_math(generator):
    params = [make_tensor((n, 3), generator=generator).requires_grad_() for n in (5, 8)]
    check_no_aten_math(fastcnn.optim.Adagrad(params, lr_decay=0.1), "adagrad_step_", LAUNCHES)


@pytest.mark.parametrize("direction", ["torch_to_fastcnn", "fastcnn_to_torch"])
def test_state_dict_interchange(direction, generator, seed):
    check_state_dict_interchange(fastcnn.optim.Adagrad, torch.optim.Adagrad,
                                 dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.2), direction, generator, seed)


@pytest.mark.every_triton
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-then-step"])
def test_grad_scaler_unscales_and_skips_inf_steps(unscale_first, generator, seed):
    check_grad_scaler(fastcnn.optim.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.2), unscale_first,
                      generator, seed)


def test_constructor_errors_match_torch():
    check_constructor_errors("Adagrad", fastcnn.optim.Adagrad)


def test_sparse_grads_are_refused_before_launch():
    """torch's Adagrad takes sparse gradients; the fused kernel does not, and says so."""
    check_sparse_grads_refused(fastcnn.optim.Adagrad)


@gpu_only("host synchronisation exists only with a device")
def test_step_never_synchronizes_with_the_device(generator):
    check_no_host_sync(lambda params: fastcnn.optim.Adagrad(params, lr_decay=0.1), generator)
