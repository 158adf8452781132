"""What every fastcnn optimizer's tests share (tests/test_adam.py, test_sgd.py, test_rmsprop.py,
test_adagrad.py, test_adadelta.py): trajectories against torch's ``foreach=False`` optimizer in
float64, state comparison, PyTorch's own optimizer test inputs and error inputs, checkpoints both
ways, GradScaler runs, and the no-ATen-math witness.

Parameter sets mix odd sizes, a channels_last tensor, a sliced (strided) tensor, an empty tensor
and one longer than a kernel chunk (``multi_tensor.CHUNK_SIZE``, every multi-tensor kernel's).
"""
import io

import pytest
import torch

from fastcnn.dtypes import UNIT_ROUNDOFF, tolerance
from fastcnn.kernels.multi_tensor import CHUNK_SIZE
from fastcnn.testing import (DEVICE, assert_close, count_launches, make_tensor, record_aten_ops,
                             torch_test_helpers)

# PyTorch's own optimizer test inputs; None (with the reason) where its test helpers are missing.
common_optimizers, COMMON_OPTIMIZERS_MISSING = torch_test_helpers("common_optimizers")

STEPS = 20

# (shape, param layout, grad layout)
PARAM_SPECS = [
    ((3, 5, 7, 7), "channels_last", "contiguous"),  # grad laid out unlike its param: staged
    ((4, 3, 3, 5), "channels_last", "channels_last"),
    ((13,), "contiguous", "contiguous"),
    ((1,), "contiguous", "contiguous"),
    ((0, 4), "contiguous", "contiguous"),
    ((33, 17), "sliced", "contiguous"),  # a strided param: staged and written back
    ((CHUNK_SIZE + 907,), "contiguous", "sliced"),  # two chunks
]


def make_params(dtype, generator, specs=PARAM_SPECS):
    # Small parameters so that fp32 rounding of the values stays far below the size of the updates.
    return [make_tensor(shape, dtype, layout=layout, generator=generator, low=0.01, high=0.1).requires_grad_()
            for shape, layout, _ in specs]


def reference_kwargs(kwargs):
    """The options that change the math (capturable/foreach/fused only pick torch's implementation)."""
    return {k: v for k, v in kwargs.items() if k not in ("capturable", "foreach", "fused")}


# A step rounds a stored param up to three times (the decoupled weight decay's factor
# 1 - lr·weight_decay, a float32 scalar in the kernel as in torch; the decayed param; then the
# update) and each stored state tensor at most as often: what one step's comparison allows
# (compare_states' ``steps``).
ROUNDINGS_PER_STEP = 3


def run_against_torch(ours_cls, torch_cls, kwargs, dtype, generator, seed, *, launches, specs=PARAM_SPECS,
                      steps=STEPS, skip_grad=lambda step, index: False, update_scale=0.0):
    """``steps`` steps of ours and of torch's optimizer in float64 on the same gradients; every
    step must be exactly ``launches`` ({op: launches}), and params and state must match after
    each step. Each step starts both from the same state (ours, widened to float64), so that what
    is compared is one step's arithmetic: differences in rounding do not compound (a sign-like
    update does not damp them, and a bound on several steps' drift failed CI by chance).
    ``update_scale`` bounds one step's update of an element (see compare_states)."""
    params = make_params(dtype, generator, specs)
    reference = [p.detach().to(torch.float64).clone().requires_grad_() for p in params]
    ours = ours_cls(params, **kwargs)
    theirs = torch_cls(reference, foreach=False, **reference_kwargs(kwargs))
    for step in range(steps):
        initial = [p.detach().to(torch.float64).clone() for p in params]
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
        assert launched == launches, f"expected {launches} launches per step, got {dict(launched)}"
        compare_states(ours, theirs, params, reference, initial, dtype, seed, ROUNDINGS_PER_STEP, update_scale)
        start_from(theirs, reference, ours, params)
    return ours, params


@torch.no_grad()
def start_from(reference_optimizer, reference, optimizer, params):
    """The float64 reference's params and state set to ours, widened: the next step starts both
    from the same state."""
    for r, p in zip(reference, params):
        r.copy_(p)
        if r in reference_optimizer.state and p in optimizer.state:
            for key, value in reference_optimizer.state[r].items():
                if key != "step" and torch.is_tensor(value) and value.numel():
                    value.copy_(optimizer.state[p][key])


@torch.no_grad()
def round_to_storage(reference_optimizer, dtype):
    """Round the float64 reference's params and state to the storage dtype after each step, as the
    kernel must: what remains to compare is the arithmetic, not the storage precision (an average
    of random-sign gradients loses most of its bf16 digits to cancellation in either
    implementation)."""
    for group in reference_optimizer.param_groups:
        for param in group["params"]:
            state = reference_optimizer.state[param]
            for tensor in [param] + [v for k, v in state.items() if k != "step" and torch.is_tensor(v)]:
                tensor.copy_(tensor.to(dtype))


def compare_states(ours, theirs, params, reference, initial, dtype, seed, steps=STEPS, update_scale=0.0):
    for index, (p, r, start) in enumerate(zip(params, reference, initial)):
        what = f"param {index} {tuple(p.shape)}"
        # Each step rounds the stored param (one unit roundoff of |p|), and a sign-like update
        # (Adam, RMSprop) does not damp a difference once made, so up to one rounding per step is
        # unavoidable. In fp16/bf16 the stored state rounds too: a one-unit difference in rounding
        # it moves the param by up to a unit roundoff of one step's update (``update_scale``).
        rounding = UNIT_ROUNDOFF[dtype] * steps * (max(r.detach().norm().item(), start.norm().item())
                                                   + update_scale * p.numel() ** 0.5)
        # The param is the start plus the update, and the update's arithmetic is held to the
        # tolerance relative to the update: a param the update cancels to near zero (an lr-sized
        # step from an lr-sized param) is not held to its own tiny size.
        update_arithmetic = tolerance(dtype, steps) * (r.detach() - start).norm().item()
        assert_close(p, r, dtype, what=what, seed=seed, reduction_length=steps,
                     error_floor=rounding + update_arithmetic)
        if dtype == torch.float32:
            assert_close(p.detach().double() - start, r.detach() - start, dtype, what=what + " update",
                         seed=seed, reduction_length=steps, error_floor=rounding)
        if r not in theirs.state:
            assert p not in ours.state or not any(torch.is_tensor(v) and v.numel() for v in ours.state[p].values())
            continue
        state, expected = ours.state[p], theirs.state[r]
        assert state.keys() == expected.keys(), (sorted(state), sorted(expected))
        if "step" in expected:
            assert float(state["step"]) == float(expected["step"]), what + " step"
        # State averages terms of magnitude about that of its largest element, which may cancel to
        # near zero (an average of random-sign gradients): a rounding of each term each step is
        # unavoidable, relative to the terms, not to the sum.
        for key, value in expected.items():
            if key == "step":
                continue
            term = max(1.0, value.detach().abs().max().item()) if value.numel() else 1.0
            term_rounding = UNIT_ROUNDOFF[dtype] * steps * p.numel() ** 0.5 * term
            assert state[key].dtype == p.dtype
            assert_close(state[key], value, dtype, what=f"{what} {key}", seed=seed, reduction_length=steps,
                         error_floor=term_rounding)


def opinfo_configs(name):
    """pytest params (kwargs) of PyTorch's optimizer test inputs for ``name`` (e.g. "SGD")."""
    if common_optimizers is None:
        return [pytest.param(name, {}, id=name, marks=pytest.mark.skip(reason=COMMON_OPTIMIZERS_MISSING))]
    function = getattr(common_optimizers, f"optim_inputs_func_{name.lower()}")
    return [pytest.param(name, config.kwargs, id=f"{name}-{config.desc}") for config in function(DEVICE)]


def check_constructor_errors(name, ours_cls):
    """PyTorch's own error inputs for ``name`` raise the same exception types and messages."""
    if common_optimizers is None:
        pytest.skip(COMMON_OPTIMIZERS_MISSING)
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


def save_and_load(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def check_state_dict_interchange(ours_cls, torch_cls, kwargs, direction, generator, seed):
    """Five steps with one optimizer, checkpoint (loaded with map_location='cpu'), five more with
    the other: identical to ten steps of torch alone."""
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
    checkpoint = save_and_load(first.state_dict())
    second = second_cls(params, **kwargs)
    second.load_state_dict(checkpoint)
    run(second, params, range(5, 10))
    assert second.state_dict()["param_groups"] == expected.state_dict()["param_groups"]
    assert all(float(state["step"]) == 10.0 for state in second.state.values() if "step" in state)
    # Both sides are float32 runs of ten steps: each side's roundings of each step are allowed
    # (an exp_avg of random-sign gradients may cancel to near zero, so its rounding is relative
    # to the terms; compare_states).
    initial = [p.detach().to(torch.float64) for p in start]
    compare_states(second, expected, params, expected_params, initial, torch.float32, seed,
                   steps=2 * ROUNDINGS_PER_STEP * 10)


def check_grad_scaler(ours_cls, torch_cls, kwargs, unscale_first, generator, seed, *, inf_steps=(0, 2, 4)):
    """torch.amp.GradScaler: the kernel unscales the grads and skips the step on inf/NaN (here
    also the very first step, before any state exists), exactly as torch's optimizer stepped
    by the scaler."""
    shapes = [(5, 3), (7,)]
    grads = [[make_tensor(s, generator=generator) for s in shapes] for _ in range(7)]
    for number, step in enumerate(inf_steps):
        grads[step][number % 2].view(-1)[1] = float("inf") if number % 2 == 0 else float("nan")
    start = [make_tensor(s, generator=generator, low=0.01, high=0.1) for s in shapes]
    results = []
    for cls in (ours_cls, torch_cls):
        params = [p.clone().requires_grad_() for p in start]
        scaler = torch.amp.GradScaler(DEVICE, init_scale=1024.0, growth_interval=2)
        optimizer = cls(params, **kwargs)
        for step_grads in grads:
            optimizer.zero_grad()
            loss = sum((p * g).sum() for p, g in zip(params, step_grads))  # d loss / d p = g
            scaler.scale(loss).backward()
            if unscale_first:
                scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
        results.append((params, optimizer, scaler.get_scale()))
    (ours, ours_opt, ours_scale), (theirs, theirs_opt, theirs_scale) = results
    assert ours_scale == theirs_scale
    for p, r in zip(ours, theirs):
        assert_close(p, r, torch.float32, what="param", seed=seed)
        for key, value in theirs_opt.state[r].items():
            if key == "step":
                assert float(ours_opt.state[p]["step"]) == float(value) == len(grads) - len(inf_steps)
            else:
                assert_close(ours_opt.state[p][key], value, torch.float32, what=key, seed=seed)


def check_no_aten_math(optimizer, op, launches):
    """The update itself is the Triton kernel: no ATen op of torch's optimizers runs during a step
    (after the first, which creates the state)."""
    for p in optimizer.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    optimizer.step()
    with record_aten_ops() as ops, count_launches() as launched:
        optimizer.step()
    math = [name for name in ops if name.startswith("aten::") and any(
        word in name for word in ("lerp", "addc", "sqrt", "mul", "div", "add", "maximum", "foreach", "clamp",
                                  "where", "copy"))]
    assert not math, f"ATen math ran during step(): {math}"
    assert ops.count(f"fastcnn::{op}") == 1, ops
    assert launched == launches


def check_no_host_sync(make_optimizer, generator):
    """``step()`` (after the first, which creates the state), also stepped by GradScaler, never
    waits for the device: torch's sync debug mode raises on any synchronising call."""
    params = [make_tensor((n, 7), device="cuda", generator=generator).requires_grad_() for n in (3, 300)]
    optimizer = make_optimizer(params)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        optimizer.step()
        optimizer.grad_scale = torch.full((), 1024.0, device="cuda")
        optimizer.found_inf = torch.zeros((), device="cuda")
        optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        for attribute in ("grad_scale", "found_inf"):
            if hasattr(optimizer, attribute):
                delattr(optimizer, attribute)


def check_launches_per_bucket(ours_cls, second_group, launches, generator, **defaults):
    """One launch set per (group, dtype) bucket whatever the number of tensors: 59 fp32 and two
    fp16 tensors in one group, an fp32 tensor in a second group (``second_group``'s options):
    three buckets, ``launches`` the expected {op: count}."""
    many = [make_tensor((n,), generator=generator).requires_grad_() for n in range(1, 60)]
    halves = [make_tensor((n,), torch.float16, generator=generator).requires_grad_() for n in (5, 9)]
    other = [make_tensor((11, 3), generator=generator).requires_grad_()]
    optimizer = ours_cls([{"params": many + halves}, {"params": other, **second_group}], **defaults)
    for p in many + halves + other:
        p.grad = torch.ones_like(p)
    with count_launches() as launched:
        optimizer.step()
    assert launched == launches


def check_sparse_grads_refused(make_optimizer):
    """A sparse gradient raises torch's sparse-gradient RuntimeError before any launch."""
    param = torch.ones(4, 3, requires_grad=True)
    optimizer = make_optimizer([param])
    param.grad = torch.ones(4, 3).to_sparse()
    with count_launches() as launched, pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()
    assert not launched
