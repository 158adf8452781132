"""fastcnn.convert on what a parent module does with its children: a Sequential a parent slices,
taps or runs whole, hooked modules, in-place adds into views, a residual that broadcasts the norm's
output up. Each converted model gives the original's outputs and gradients."""
import pytest
import torch
from torch import nn

import fastcnn
from fastcnn.testing import DEVICE, make_tensor, relative_error
from test_convert import SUM_TOLERANCE, TOLERANCE


def _fused_with_what_follows(report):
    """The report's fusions of a norm with what follows it (activation, residual, next conv),
    without the conv → bn moments a batch norm takes wherever a convolution feeds it, which do
    not depend on position or hooks."""
    return [(name, detail) for name, detail in report.fused if "statistics from" not in detail]


# ----------------------------------------------------------------------------- what a parent reaches
class _SlicesItsFeatures(nn.Module):
    """Pre-activation features: the parent runs the Sequential whole and also up to its norm."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 4, 1))

    def forward(self, x):
        return self.features(x) + self.features[:2](x).mean()


class _TapsEachChild(nn.Module):
    """Iterates its Sequential and keeps every intermediate output (the norm's among them)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        taps = []
        for module in self.features:
            x = module(x)
            taps.append(x)
        return taps[1] * 2 + taps[2]


class _RunsItWhole(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        return self.features(x)


def _same_outputs_and_gradients(model, converted, input):
    """The converted model's output and every parameter gradient against the original's (fp32).
    (The models have no conv bias before a batch norm: its gradient cancels to rounding noise.)"""
    model.train()
    converted.train()
    ours, theirs = input.clone().requires_grad_(), input.clone().requires_grad_()
    out, expected = converted(ours), model(theirs)
    grad_out = make_tensor(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(grad_out)
    expected.backward(grad_out)
    assert relative_error(out, expected) < TOLERANCE
    for (name, parameter), original in zip(converted.named_parameters(), model.parameters()):
        assert (parameter.grad is None) == (original.grad is None), name
        if original.grad is not None:
            assert relative_error(parameter.grad, original.grad) < SUM_TOLERANCE, name
    assert relative_error(ours.grad, theirs.grad) < SUM_TOLERANCE


@pytest.mark.parametrize("model_type", [_SlicesItsFeatures, _TapsEachChild])
def test_a_sequential_a_parent_slices_or_taps_is_not_fused_by_position(model_type, generator):
    model = model_type().to(DEVICE)
    converted, report = fastcnn.convert(model, report=True)
    assert not _fused_with_what_follows(report) and "not fused" in dict(report.left)["features.1"], report
    assert type(converted.features[2]) is fastcnn.nn.ReLU
    _same_outputs_and_gradients(model, converted, make_tensor((2, 3, 5, 6), generator=generator))


def test_a_sequential_its_parent_runs_whole_is_fused(generator):
    model = _RunsItWhole().to(DEVICE)
    converted, report = fastcnn.convert(model, report=True)
    assert [name for name, _ in _fused_with_what_follows(report)] == ["features.1"]
    assert type(converted.features[1]) is fastcnn.nn.BatchNorm2dReLU and type(converted.features[2]) is nn.Identity
    _same_outputs_and_gradients(model, converted, make_tensor((2, 3, 5, 6), generator=generator))


class _PoolsItsFeatures(nn.Module):
    """Runs its Sequential whole, then a functional pool that convert swaps (so its forward is
    regenerated from the traced graph)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        return torch.nn.functional.max_pool2d(self.features(x), 2)


@pytest.mark.parametrize("hooked", ["norm", "activation", "sequential"])
@pytest.mark.parametrize("hook", ["forward", "forward_pre"])
def test_hooked_modules_keep_their_hooks_semantics(hooked, hook, generator):
    """A norm or activation with hooks is not fused (its hooks see what they saw); a Sequential
    with hooks is not inlined into a rewritten forward (its hooks still run)."""
    model = _PoolsItsFeatures().to(DEVICE)
    target = {"norm": model.features[1], "activation": model.features[2], "sequential": model.features}[hooked]
    seen = []

    def record(module, args, output=None):
        seen.append((args[0] if output is None else output).detach().clone())

    getattr(target, f"register_{hook}_hook")(record)
    converted, report = fastcnn.convert(model, report=True)
    assert [name for name, _ in report.rewritten] == [""], report  # the pool was swapped
    input = make_tensor((2, 3, 5, 6), generator=generator)
    model.eval()
    converted.eval()
    expected, theirs = model(input), seen[:]
    seen.clear()
    out = converted(input)
    assert relative_error(out, expected) < TOLERANCE
    assert len(seen) == len(theirs) == 1 and relative_error(seen[0], theirs[0]) < TOLERANCE
    if hooked == "sequential":
        assert [name for name, _ in _fused_with_what_follows(report)] == ["features.1"]
    else:
        assert "hooks" in dict(report.left)["features.1"] and not _fused_with_what_follows(report)


class _AddsIntoAView(nn.Module):
    """In-place adds into views of a tensor that is returned: they must stay in place."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 4, 1)
        self.branch = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        a = self.conv(x)
        if self.how == "slice":
            a[:, :2] += self.branch(x)[:, 1:3]
        elif self.how == "view":
            a.view(a.shape[0], -1).add_(self.branch(x).flatten(1))
        else:  # a fresh sum nothing else reads: fastcnn.add may compute it out of place
            a = a * 2
            a += self.branch(x)
        return a


@pytest.mark.parametrize("how", ["slice", "view", "fresh"])
def test_inplace_adds_into_views_stay_in_place(how, generator):
    model = _AddsIntoAView(how).to(DEVICE)
    converted, report = fastcnn.convert(model, report=True)
    swapped = [detail for _, detail in report.replaced if "fastcnn.add" in detail]
    assert bool(swapped) == (how == "fresh"), report
    _same_outputs_and_gradients(model, converted, make_tensor((2, 3, 5, 6), generator=generator))


class _ResidualBroadcastsUp(nn.Module):
    """relu(bn(pool(x)) + x): the residual is larger than the norm's output."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return torch.relu(self.bn(self.pool(x)) + x)


def test_residual_that_broadcasts_the_norm_output_up_runs_as_the_original(generator):
    model = _ResidualBroadcastsUp().to(DEVICE)
    converted = fastcnn.convert(model)
    _same_outputs_and_gradients(model, converted, make_tensor((4, 3, 5, 6), generator=generator))
