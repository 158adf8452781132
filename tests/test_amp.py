"""Mixed precision: a converted model trained under torch.autocast (bf16), and under autocast
fp16 with torch.amp.GradScaler, follows torch's own AMP training within the dtype's tolerance;
GradScaler's skipped steps (inf gradients) are skipped the same way."""
import copy

import pytest
import torch

import fastcnn
from fastcnn.models import TinyResNet
from fastcnn.testing import DEVICE, count_launches, flat_parameters, make_tensor, relative_error, start_from


LR = 1e-3
STEPS = 4
# Each step is taken from the float64 run's state (weights, buffers, Adam's moments and count), so
# what is compared is the rounding of one step, which does not compound: summed over the steps,
# fastcnn's distance from float64 must stay within RATIO times torch's own, plus a floor of about
# a unit of roundoff per step (two runs' roundings differ by chance; see the false-failure count
# in the README's test section).
RATIO = 2.0
LOSS_FLOOR = {torch.bfloat16: 4e-3, torch.float16: 5e-4}  # per step, on a loss near 1.6
# The parameter update of one Adam step against float64's: its first steps move a weight by about
# lr·sign(grad), so a tiny gradient whose sign a rounding flips sends one weight 2·lr the other way.
UPDATE_FLOOR = {torch.bfloat16: 2e-2, torch.float16: 5e-3}  # per step, relative to the update
# GradScaler's scales: 2**28, then 2**20 (both overflow fp16, so both steps are skipped), then
# 2**12 (trains). Whether a step overflows must not hang on a rounding: over seeds 1-7 and
# 314583793 the largest unscaled gradient was 0.44 to 1.29, and overflow takes 65504/2**20 = 0.06
# (7x below) or 65504/2**12 = 16 (12x above).
INIT_SCALE, BACKOFF = 2.0**28, 2.0**-8


def _twins(generator):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    original = TinyResNet().to(DEVICE)
    return original, fastcnn.convert(original)


def _step(model, optimizer, scaler, loss_fn, input, target, dtype):
    optimizer.zero_grad()
    with torch.autocast(DEVICE, dtype=dtype):
        out = model(input)
        loss = loss_fn(out, target)
    assert out.dtype == dtype  # the linear head ran in the autocast dtype
    if scaler is None:
        loss.backward()
        optimizer.step()
        return loss.item(), False
    scale = scaler.get_scale()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), scaler.get_scale() < scale  # the scale backs off exactly when a step is skipped


@pytest.mark.parametrize("dtype, scaled", [(torch.bfloat16, False), (torch.float16, True)])
def test_amp_training_matches_torch(dtype, scaled, seed, generator):
    """Both AMP runs are compared with the same training in float64 without autocast, one step at
    a time from the float64 run's state: the loss (a forward at the same weights) and the
    parameter update of each step. Two low-precision runs are not compared with each other, nor
    after several steps of their own: Adam's first steps move each weight by about lr·sign(grad),
    so rounding flips of tiny gradients make any two runs drift apart, and a bound on one drifted
    run would fail by chance."""
    original, converted = _twins(generator)
    reference = copy.deepcopy(original).double()
    runs = []
    for model, optimizer_class, loss_fn in ((original, torch.optim.Adam, torch.nn.functional.cross_entropy),
                                            (converted, fastcnn.optim.Adam, fastcnn.cross_entropy)):
        scaler = torch.amp.GradScaler(DEVICE, init_scale=INIT_SCALE, backoff_factor=BACKOFF) if scaled else None
        runs.append((model, optimizer_class(model.parameters(), lr=LR), scaler, loss_fn))
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=LR)
    data_generator = torch.Generator().manual_seed(seed)
    skipped_steps, loss_errors, update_errors = 0, [], []
    with count_launches() as launched:
        for step in range(STEPS):
            input = make_tensor((4, 3, 13, 11), generator=data_generator)
            target = torch.randint(0, 5, (4,), generator=data_generator).to(DEVICE)
            for model, optimizer, _, _ in runs:
                start_from(model, optimizer, reference, reference_optimizer)
            before = flat_parameters(reference)
            (torch_loss, torch_skipped), (fastcnn_loss, fastcnn_skipped) = (
                _step(*run, input, target, dtype) for run in runs)
            assert torch_skipped == fastcnn_skipped, (step, seed)
            skipped_steps += torch_skipped
            reference_loss = _reference_step(reference, reference_optimizer, input, target, skip=torch_skipped)
            loss_errors.append((abs(torch_loss - reference_loss), abs(fastcnn_loss - reference_loss)))
            if not torch_skipped:
                update = flat_parameters(reference) - before
                update_errors.append(tuple(relative_error(flat_parameters(model) - before, update)
                                           for model, *_ in runs))
            print(f"step {step}: loss error against float64: torch {loss_errors[-1][0]:.2e}, fastcnn "
                  f"{loss_errors[-1][1]:.2e}" + ("" if torch_skipped else f"; update error: torch "
                                                 f"{update_errors[-1][0]:.2e}, fastcnn {update_errors[-1][1]:.2e}"))
    for name, errors, floor in (("loss", loss_errors, LOSS_FLOOR[dtype]), ("update", update_errors,
                                                                          UPDATE_FLOOR[dtype])):
        torch_error, fastcnn_error = (sum(column) for column in zip(*errors))
        print(f"{name} errors summed over {len(errors)} steps: torch {torch_error:.2e}, fastcnn {fastcnn_error:.2e} "
              f"({fastcnn_error / (RATIO * torch_error + floor * len(errors)):.2f} of the bound)")
        assert fastcnn_error <= RATIO * torch_error + floor * len(errors), (name, fastcnn_error, torch_error, seed)
    assert launched["conv2d"] and launched["batch_norm"] and launched["adam_step"]
    if scaled:
        scales = [run[2].get_scale() for run in runs]
        assert scales[0] == scales[1] < INIT_SCALE and 0 < skipped_steps < STEPS, (scales, skipped_steps)
    assert all(p.dtype == torch.float32 for p in converted.parameters())


def _reference_step(model, optimizer, input, target, skip):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(input.double()), target)
    if not skip:
        loss.backward()
        optimizer.step()
    return loss.item()
