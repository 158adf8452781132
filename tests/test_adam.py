"""fastcnn.optim.Adam / AdamW against torch.optim.Adam / AdamW(foreach=False) run in float64.

Every test here runs the Triton kernels: compiled on a GPU, through Triton's interpreter on CPU
(tests/conftest.py). Parameter sets mix odd sizes, a channels_last tensor, a sliced (strided)
tensor, an empty tensor and one longer than a kernel chunk.
"""
import io
import warnings

import pytest
import torch

import fastcnn
from fastcnn.dtypes import UNIT_ROUNDOFF
from fastcnn.kernels import adam as adam_kernels
from fastcnn.testing import (DEVICE, assert_close, count_launches, gpu_only, make_tensor, record_aten_ops,
                             strided_copy, torch_test_helpers)

# PyTorch's own optimizer test inputs; None (with the reason) where its test helpers are missing.
common_optimizers, COMMON_OPTIMIZERS_MISSING = torch_test_helpers("common_optimizers")

STEPS = 20
PAIRS = {"Adam": (fastcnn.optim.Adam, torch.optim.Adam), "AdamW": (fastcnn.optim.AdamW, torch.optim.AdamW)}

# (shape, param layout, grad layout)
PARAM_SPECS = [
    ((3, 5, 7, 7), "channels_last", "contiguous"),  # grad laid out unlike its param: staged
    ((4, 3, 3, 5), "channels_last", "channels_last"),
    ((13,), "contiguous", "contiguous"),
    ((1,), "contiguous", "contiguous"),
    ((0, 4), "contiguous", "contiguous"),
    ((33, 17), "sliced", "contiguous"),  # a strided param: staged and written back
    ((adam_kernels.CHUNK_SIZE + 907,), "contiguous", "sliced"),  # two chunks
]


def make_params(dtype, generator, specs=PARAM_SPECS):
    # Small parameters so that fp32 rounding of the values stays far below the size of the updates.
    return [make_tensor(shape, dtype, layout=layout, generator=generator, low=0.01, high=0.1).requires_grad_()
            for shape, layout, _ in specs]


def reference_kwargs(kwargs):
    """The options that change the math (capturable/foreach/fused only pick torch's implementation)."""
    return {k: v for k, v in kwargs.items() if k not in ("capturable", "foreach", "fused")}


def run_against_torch(name, kwargs, dtype, generator, seed, *, specs=PARAM_SPECS, steps=STEPS,
                      skip_grad=lambda step, index: False):
    ours_cls, torch_cls = PAIRS[name]
    params = make_params(dtype, generator, specs)
    initial = [p.detach().to(torch.float64).clone() for p in params]
    reference = [p.clone().requires_grad_() for p in initial]
    ours = ours_cls(params, **kwargs)
    theirs = torch_cls(reference, foreach=False, **reference_kwargs(kwargs))
    for step in range(steps):
        for index, ((shape, _, grad_layout), p, r) in enumerate(zip(specs, params, reference)):
            if skip_grad(step, index):
                p.grad = r.grad = None
                continue
            p.grad = make_tensor(shape, dtype, layout=grad_layout, generator=generator)
            r.grad = p.grad.to(torch.float64)
        with count_launches() as launched:
            ours.step()
        theirs.step()
        if dtype != torch.float32:
            round_to_storage(theirs, dtype)
        assert launched == {"adam_step": 2}, f"expected one fused pair of launches, got {dict(launched)}"
    compare_states(ours, theirs, params, reference, initial, dtype, seed, steps)
    return ours, params


@torch.no_grad()
def round_to_storage(reference_optimizer, dtype):
    """Round the float64 reference's params and moments to the storage dtype after each step, as
    the kernel must: what remains to compare is the arithmetic, not the storage precision (an EMA of
    random-sign gradients loses most of its bf16 digits to cancellation in either implementation)."""
    for group in reference_optimizer.param_groups:
        for param in group["params"]:
            for tensor in [param] + [v for k, v in reference_optimizer.state[param].items() if k != "step"]:
                tensor.copy_(tensor.to(dtype))


def compare_states(ours, theirs, params, reference, initial, dtype, seed, steps=STEPS):
    for index, (p, r, start) in enumerate(zip(params, reference, initial)):
        what = f"param {index} {tuple(p.shape)}"
        # Each step rounds the stored param (one unit roundoff of |p|), and Adam's sign-like update
        # does not damp a difference once made, so up to one rounding per step is unavoidable.
        rounding = UNIT_ROUNDOFF[dtype] * max(r.detach().norm().item(), start.norm().item()) * steps
        assert_close(p, r, dtype, what=what, seed=seed, reduction_length=steps, error_floor=rounding)
        if dtype == torch.float32:
            assert_close(p.detach().double() - start, r.detach() - start, dtype, what=what + " update",
                         seed=seed, reduction_length=steps, error_floor=rounding)
        if r not in theirs.state:
            assert p not in ours.state
            continue
        state, expected = ours.state[p], theirs.state[r]
        assert state.keys() == expected.keys()
        assert state["step"].item() == expected["step"].item(), what + " step"
        # The moments average terms of magnitude <= 1 (|g| < 1, g*g < 1) that may cancel to near
        # zero: a rounding of each term each step is unavoidable, relative to the terms, not the sum.
        term_rounding = UNIT_ROUNDOFF[dtype] * steps * p.numel() ** 0.5
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in expected:
                assert state[key].dtype == p.dtype
                assert_close(state[key], expected[key], dtype, what=f"{what} {key}", seed=seed,
                             reduction_length=steps, error_floor=term_rounding)


def opinfo_configs(name):
    if common_optimizers is None:
        return [pytest.param(name, {}, id=name, marks=pytest.mark.skip(reason=COMMON_OPTIMIZERS_MISSING))]
    function = getattr(common_optimizers, f"optim_inputs_func_{name.lower()}")
    return [pytest.param(name, config.kwargs, id=f"{name}-{config.desc}") for config in function(DEVICE)]


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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_low_precision_params(name, dtype, generator, seed):
    run_against_torch(name, dict(lr=0.01, weight_decay=0.1, amsgrad=True), dtype, generator, seed)


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


def test_param_groups_and_mixed_dtypes_launch_per_bucket(generator, seed):
    """One pair of launches per (group, dtype) whatever the number of tensors."""
    many = [make_tensor((n,), generator=generator).requires_grad_() for n in range(1, 60)]
    halves = [make_tensor((n,), torch.float16, generator=generator).requires_grad_() for n in (5, 9)]
    other = [make_tensor((11, 3), generator=generator).requires_grad_()]
    optimizer = fastcnn.optim.Adam([{"params": many + halves}, {"params": other, "lr": 0.1, "amsgrad": True}])
    for p in many + halves + other:
        p.grad = torch.ones_like(p)
    with count_launches() as launched:
        optimizer.step()
    assert launched == {"adam_step": 2 * 3}


def test_step_issues_no_aten_math(generator):
    """The update itself is the Triton kernel: no ATen op of torch's Adam runs during a step."""
    params = [make_tensor((n, 3), generator=generator).requires_grad_() for n in (5, 8)]
    optimizer = fastcnn.optim.AdamW(params, amsgrad=True)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()  # lazy state creation happens here
    with record_aten_ops() as ops, count_launches() as launched:
        optimizer.step()
    math = [op for op in ops if op.startswith("aten::") and any(
        word in op for word in ("adam", "lerp", "addc", "sqrt", "mul", "div", "add", "maximum", "foreach"))]
    assert not math, f"ATen math ran during step(): {math}"
    assert ops.count("fastcnn::adam_step_") == 1, ops
    assert launched == {"adam_step": 2}


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


def _save_and_load(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("direction", ["torch_to_fastcnn", "fastcnn_to_torch"])
def test_state_dict_interchange(name, direction, generator, seed):
    """Five steps with one optimizer, checkpoint (loaded with map_location='cpu'), five more with
    the other: identical to ten steps of torch alone."""
    ours_cls, torch_cls = PAIRS[name]
    kwargs = dict(lr=0.01, weight_decay=0.1, amsgrad=True)
    specs = PARAM_SPECS[1:4]
    shapes = [shape for shape, _, _ in specs]
    grads = [[make_tensor(shape, generator=generator) for shape in shapes] for _ in range(10)]
    start = make_params(torch.float32, generator, specs)

    def fresh():
        return [p.detach().clone().requires_grad_() for p in start]

    def run(optimizer, params, steps):
        for step in steps:
            for p, g in zip(params, grads[step]):
                p.grad = g.clone()
            optimizer.step()

    expected_params = fresh()
    expected = torch_cls(expected_params, **kwargs)
    run(expected, expected_params, range(10))

    first_cls, second_cls = (torch_cls, ours_cls) if direction == "torch_to_fastcnn" else (ours_cls, torch_cls)
    params = fresh()
    first = first_cls(params, **kwargs)
    run(first, params, range(5))
    checkpoint = _save_and_load(first.state_dict())
    second = second_cls(params, **kwargs)
    second.load_state_dict(checkpoint)
    run(second, params, range(5, 10))
    assert second.state_dict()["param_groups"] == expected.state_dict()["param_groups"]
    for index, (p, r) in enumerate(zip(params, expected_params)):
        assert_close(p, r, torch.float32, what=f"param {index}", seed=seed)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert_close(second.state[p][key], expected.state[r][key], torch.float32, what=key, seed=seed)
        assert float(second.state[p]["step"]) == 10.0


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


def _scaler_run(optimizer_cls, params, grads_per_step, scaler, unscale_first):
    optimizer = optimizer_cls(params, lr=0.01)
    for grads in grads_per_step:
        optimizer.zero_grad()
        loss = sum((p * g).sum() for p, g in zip(params, grads))  # d loss / d p = g
        scaler.scale(loss).backward()
        if unscale_first:
            scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
    return optimizer


@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler-step", "unscale-then-step"])
def test_grad_scaler_unscales_and_skips_inf_steps(unscale_first, generator, seed):
    """torch.amp.GradScaler: the kernel unscales the grads and skips the step on inf/NaN."""
    shapes = [(5, 3), (7,)]
    grads = [[make_tensor(s, generator=generator) for s in shapes] for _ in range(6)]
    grads[2][1][3] = float("inf")
    grads[4][0][1, 1] = float("nan")
    start = [make_tensor(s, generator=generator, low=0.01, high=0.1) for s in shapes]
    results = []
    for cls in (fastcnn.optim.Adam, torch.optim.Adam):
        params = [p.clone().requires_grad_() for p in start]
        scaler = torch.amp.GradScaler(DEVICE, init_scale=1024.0, growth_interval=2)
        optimizer = _scaler_run(cls, params, grads, scaler, unscale_first)
        results.append((params, optimizer, scaler.get_scale()))
    (ours, ours_opt, ours_scale), (theirs, theirs_opt, theirs_scale) = results
    assert ours_scale == theirs_scale
    for p, r in zip(ours, theirs):
        assert_close(p, r, torch.float32, what="param", seed=seed)
        assert float(ours_opt.state[p]["step"]) == float(theirs_opt.state[r]["step"]) == 4.0


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_constructor_errors_match_torch(name):
    """PyTorch's own error inputs for Adam/AdamW raise the same exception types and messages."""
    if common_optimizers is None:
        pytest.skip(COMMON_OPTIMIZERS_MISSING)
    ours_cls = PAIRS[name][0]
    function = getattr(common_optimizers, f"optim_error_inputs_func_{name.lower()}")
    error_inputs = function("cpu", torch.float32)
    assert error_inputs
    for error_input in error_inputs:
        config = error_input.optimizer_error_input
        params = config.params if config.params is not None else [torch.ones(2, requires_grad=True)]
        assert error_input.error_on == common_optimizers.OptimizerErrorEnum.CONSTRUCTION_ERROR
        if issubclass(error_input.error_type, Warning):
            with pytest.warns(error_input.error_type, match=error_input.error_regex):
                ours_cls(params, **config.kwargs)
        else:
            with pytest.raises(error_input.error_type, match=error_input.error_regex):
                ours_cls(params, **config.kwargs)


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
    param = torch.ones(4, 3, requires_grad=True)
    param.grad = torch.ones(4, 3).to_sparse()
    optimizer = fastcnn.optim.Adam([param])
    with count_launches() as launched, pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()
    assert not launched
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
    params = [make_tensor((n, 7), device="cuda", generator=generator).requires_grad_() for n in (3, 300)]
    optimizer = fastcnn.optim.Adam(params, amsgrad=True)
    scaler = torch.amp.GradScaler("cuda")
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        optimizer.step()
        optimizer.grad_scale = scaler._scale if scaler._scale is not None else torch.ones((), device="cuda")
        optimizer.found_inf = torch.zeros((), device="cuda")
        optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        for attribute in ("grad_scale", "found_inf"):
            if hasattr(optimizer, attribute):
                delattr(optimizer, attribute)


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
