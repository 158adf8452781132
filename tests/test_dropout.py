"""fastcnn.dropout / dropout2d and their modules: torch's semantics, statistically (the random
numbers are Philox's in the kernel, not torch's, so masks are compared by their properties)."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.testing import (DEVICE, LAYOUTS, assert_raises_like_torch, count_launches, gpu_only, in_layout,
                             STRIDED_VIEWS, make_tensor, record_aten_ops, strided_view_base)


def _kept_fraction_bounds(p, trials):
    """Six standard deviations of a binomial fraction around 1 - p."""
    spread = 6 * math.sqrt(p * (1 - p) / trials)
    return 1 - p - spread, 1 - p + spread


@pytest.mark.every_triton
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_scaling_and_gradient(p, generator):
    input = make_tensor((50, 41, 97), generator=generator).requires_grad_()
    with count_launches() as launched:
        out = fastcnn.dropout(input, p)
        grad_out = make_tensor(out.shape, generator=generator)
        out.backward(grad_out)
    assert launched["dropout"] == 2
    kept = out != 0
    low, high = _kept_fraction_bounds(p, input.numel())
    assert low < kept.float().mean().item() < high, kept.float().mean().item()
    # Kept elements are scaled by exactly 1/(1-p) (the product rounded once), dropped ones are 0.
    scale = 1.0 / (1.0 - p)
    torch.testing.assert_close(out[kept], input.detach()[kept] * scale, rtol=2e-7, atol=0)
    torch.testing.assert_close(input.grad, grad_out * kept * scale, rtol=2e-7, atol=0)


def test_dropout2d_drops_whole_channels_and_their_gradients(generator):
    p = 0.4
    for layout in LAYOUTS:
        input = in_layout(make_tensor((30, 40, 3, 5), generator=generator), layout).requires_grad_()
        out = fastcnn.dropout2d(input, p)
        out.backward(torch.ones_like(out))
        channel_kept = out[:, :, 0, 0] != 0
        assert torch.equal((out != 0), channel_kept[:, :, None, None].expand_as(out)), layout
        low, high = _kept_fraction_bounds(p, channel_kept.numel())
        assert low < channel_kept.float().mean().item() < high
        expected_grad = channel_kept[:, :, None, None].float().expand_as(out) / (1 - p)
        torch.testing.assert_close(input.grad, expected_grad, rtol=2e-7, atol=0)


def test_seeded_runs_repeat_and_other_seeds_differ(generator):
    input = make_tensor((64, 129), generator=generator)
    masks = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        masks.append(fastcnn.dropout(input, 0.5) != 0)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    torch.manual_seed(7)
    first, second = fastcnn.dropout(input, 0.5) != 0, fastcnn.dropout(input, 0.5) != 0
    assert not torch.equal(first, second)  # the generator moves on between calls


def test_mask_does_not_depend_on_the_gradients_layout(generator):
    """The flat kernel walks memory order: a gradient laid out unlike the output is copied into
    the output's layout, so its mask is the forward's."""
    input = make_tensor((6, 7, 5, 4), layout="channels_last", generator=generator).requires_grad_()
    out = fastcnn.dropout(input, 0.5)
    out.backward(torch.ones(out.shape, device=DEVICE))  # contiguous, unlike the channels_last output
    assert torch.equal(input.grad != 0, out != 0)


def test_p_zero_eval_and_p_one_follow_torch(generator):
    input = make_tensor((4, 6), generator=generator)
    input[0, 0] = float("nan")
    for p, training in ((0.0, True), (0.5, False), (1.0, False)):
        assert fastcnn.dropout(input, p, training) is input
        assert fastcnn.dropout2d(input.view(2, 2, 6), p, training).data_ptr() == input.data_ptr()
    dropped = fastcnn.dropout(input, 1.0)
    torch.testing.assert_close(dropped, F.dropout(input, 1.0), equal_nan=True)
    assert torch.isnan(dropped[0, 0]) and (dropped[1:] == 0).all()  # NaN · 0 stays NaN, as in torch


def test_nan_and_inf_dropped_become_nan_kept_stay(generator):
    input = torch.full((4096,), float("inf"), device=DEVICE)
    input[::2] = float("nan")
    out = fastcnn.dropout(input, 0.5)
    assert torch.isnan(out[::2]).all()
    odd = out[1::2]
    assert ((odd == float("inf")) | torch.isnan(odd)).all() and torch.isnan(odd).any() and torch.isinf(odd).any()


def test_inplace_only_when_autograd_does_not_need_the_input(generator):
    values = make_tensor((8, 9), generator=generator)
    input = values.clone()
    assert fastcnn.dropout(input, 0.5, inplace=True) is input
    assert ((input == 0) | torch.isclose(input, values * 2)).all() and (input == 0).any()
    leaf = values.clone().requires_grad_()
    out = fastcnn.dropout2d(leaf.view(2, 4, 9), 0.5, inplace=True)
    assert torch.equal(leaf.detach(), values) and out.data_ptr() != leaf.data_ptr()


def test_saves_only_the_seed_and_runs_no_aten_dropout(generator):
    input = make_tensor((5, 8, 3, 3), generator=generator).requires_grad_()
    with record_aten_ops() as names:
        out = fastcnn.dropout2d(input, 0.3)
        saved = out.grad_fn.saved_tensors
        out.backward(torch.ones_like(out))
    assert [(t.dtype, t.numel()) for t in saved] == [(torch.int64, 1)]
    assert not [name for name in names if "bernoulli" in name or "dropout" in name and "fastcnn" not in name], names
    assert [name for name in names if name.startswith("fastcnn::")] == ["fastcnn::dropout", "fastcnn::dropout"]


def test_modules_are_drop_ins(generator):
    for ours, theirs in ((fastcnn.nn.Dropout(0.3), torch.nn.Dropout(0.3)),
                         (fastcnn.nn.Dropout2d(0.3, inplace=True), torch.nn.Dropout2d(0.3, inplace=True))):
        assert isinstance(ours, type(theirs)) and repr(ours) == repr(theirs)
        input = make_tensor((3, 4, 5, 5), generator=generator)
        ours.eval()
        assert ours(input) is input
        ours.train()
        out = ours(input.clone())
        assert ((out == 0) | torch.isclose(out, input / 0.7)).all()


def test_bad_input_and_torchs_warnings():
    input = torch.randn(3, 4, device=DEVICE)
    for function, op in ((F.dropout, "dropout"), (F.dropout2d, "dropout2d")):
        ours = getattr(fastcnn, op)
        assert_raises_like_torch(lambda: function(input, 1.5), lambda: ours(input, 1.5), op=op,
                                 fragment="dropout probability has to be between 0 and 1, but got 1.5", error=ValueError)
    assert_raises_like_torch(lambda: F.dropout2d(torch.randn(3), 0.5),
                             lambda: fastcnn.dropout2d(torch.randn(3, device=DEVICE), 0.5), op="dropout2d",
                             fragment="Feature dropout requires at least 2 dimensions in the input")
    integers = torch.ones(3, 4, dtype=torch.int64, device=DEVICE)
    assert_raises_like_torch(lambda: F.dropout(integers.cpu(), 0.5), lambda: fastcnn.dropout(integers, 0.5),
                             op="dropout", fragment="result type Float can't be cast to the desired output type Long")
    for shape in ((2, 3, 4), (2, 3, 4, 5, 6)):
        with warnings.catch_warnings(record=True) as theirs:
            warnings.simplefilter("always")
            F.dropout2d(torch.randn(shape), 0.5)
        with warnings.catch_warnings(record=True) as ours:
            warnings.simplefilter("always")
            fastcnn.dropout2d(torch.randn(shape, device=DEVICE), 0.5)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]


def test_p_nan_is_refused_and_bools_and_0_dim_tensors_are_taken(generator):
    """torch refuses p = NaN (RuntimeError, in training and eval, even for an empty input) and takes
    a bool or a 0-dim tensor as p; torchvision's stochastic_depth refuses NaN in training. The input
    has 128 (sample, channel) planes, so that p = 0.25 drops one of them but for a 0.75**128 chance."""
    input = make_tensor((16, 8, 5), generator=generator)
    for function, op in ((F.dropout, "dropout"), (F.dropout2d, "dropout2d")):
        ours = getattr(fastcnn, op)
        for training in (True, False):
            for tensor in (input, input[:0]):
                with count_launches() as launched:
                    assert_raises_like_torch(lambda: function(tensor.cpu(), float("nan"), training),
                                             lambda: ours(tensor, float("nan"), training), op=op,
                                             fragment="dropout probability has to be between 0 and 1, but got nan")
                assert not launched
        assert torch.equal(ours(input, False), function(input, False)) and ours(input, False) is input
        assert torch.equal(ours(input, True), torch.zeros_like(input))
        kept = ours(input, torch.tensor(0.25))
        assert ((kept == 0) | torch.isclose(kept, input / 0.75)).all() and (kept == 0).any()
        with pytest.raises(TypeError, match="argument 'p' must be float, not Tensor"):
            ours(input, torch.tensor([0.25]))
    with pytest.raises(RuntimeError, match="expects p to be in \\[0, 1\\], but got p=nan"):
        fastcnn.stochastic_depth(input, float("nan"), "row")
    assert fastcnn.stochastic_depth(input, float("nan"), "row", training=False) is input
    assert torch.equal(fastcnn.stochastic_depth(input, True, "batch"), torch.zeros_like(input))


@pytest.mark.parametrize("view", sorted(STRIDED_VIEWS))
@pytest.mark.parametrize("op", ["dropout", "dropout2d"])
def test_inplace_on_a_strided_view_writes_into_it(op, view, generator):
    """``fastcnn.dropout(x[view], inplace=True)`` and ``nn.Dropout(inplace=True)`` drop elements of
    ``x`` inside the view (scaling the kept ones), nothing outside it, and return the view. A batch
    of 16 gives each view at least 32 (sample, channel) planes, so that dropout2d at p = 0.5 both
    drops and keeps some but for a 2**-31 chance."""
    values = make_tensor((16, 6, 4, 6), generator=generator)
    module_type = fastcnn.nn.Dropout2d if op == "dropout2d" else fastcnn.nn.Dropout
    for call in (lambda v: getattr(fastcnn, op)(v, 0.5, inplace=True), lambda v: module_type(0.5, inplace=True)(v)):
        written = strided_view_base(values, view)
        returned = call(STRIDED_VIEWS[view](written))
        mask = torch.zeros_like(strided_view_base(values, view), dtype=torch.bool)
        STRIDED_VIEWS[view](mask).fill_(True)
        assert torch.equal(written[~mask], values[~mask]), "written outside the view"
        dropped, kept = written[mask] == 0, torch.isclose(written[mask], values[mask] * 2)
        assert (dropped | kept).all() and dropped.any() and kept.any(), "the view was not written"
        assert returned.data_ptr() == STRIDED_VIEWS[view](written).data_ptr()


@pytest.mark.parametrize("view", sorted(STRIDED_VIEWS) + ["batch_interleaved"])
def test_outputs_of_strided_views_have_torchs_strides(view, generator):
    """torch's dropout, and torchvision's input * noise in stochastic_depth, keep their input's
    dimension order for any permutation and slice."""
    values = make_tensor((4, 6, 4, 6), generator=generator)
    if view == "batch_interleaved":
        input = values.transpose(0, 1)
    else:
        input = STRIDED_VIEWS[view](strided_view_base(values, view))
    expected = F.dropout(input, 0.3).stride()
    assert fastcnn.dropout(input, 0.3).stride() == expected
    assert fastcnn.stochastic_depth(input, 0.3, "row").stride() == (input * torch.ones(
        (input.shape[0], 1, 1, 1))).stride() == expected
    if view != "permuted":  # dropout2d's [N, C, S] rows: a sliced permutation is copied to NCHW (see README)
        assert fastcnn.dropout2d(input, 0.3).stride() == F.dropout2d(input, 0.3).stride()


def test_empty_input():
    empty = torch.empty(0, 4, device=DEVICE)
    assert fastcnn.dropout(empty, 0.5) is empty and fastcnn.dropout2d(empty, 0.5) is empty


@gpu_only("fp16/bf16, and a tensor of more than 2**31 elements")
def test_half_precision_and_wide_counters(generator):
    for dtype in (torch.float16, torch.bfloat16):
        input = make_tensor((64, 1000), dtype, generator=generator)
        out = fastcnn.dropout(input, 0.25)
        kept = out != 0
        torch.testing.assert_close(out[kept], (input[kept].float() / 0.75).to(dtype))
    big = torch.ones(2**31 + 1000, dtype=torch.float16, device=DEVICE)
    out = fastcnn.dropout(big, 0.5)
    tail = out[-2**20:] != 0
    low, high = _kept_fraction_bounds(0.5, tail.numel())
    assert low < tail.float().mean().item() < high


@pytest.mark.every_triton
@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_drops_whole_samples_or_the_batch(mode, generator):
    """torchvision.ops.stochastic_depth: "row" keeps or drops each sample, "batch" all of them,
    scaling what is kept by 1/(1 - p); the gradient takes the same mask; any layout, any rank."""
    p = 0.4
    kept_fractions = []
    for layout in LAYOUTS:
        input = in_layout(make_tensor((300, 4, 3, 5), generator=generator), layout).requires_grad_()
        with count_launches() as launched, record_aten_ops() as names:
            out = fastcnn.stochastic_depth(input, p, mode)
            out.backward(torch.ones_like(out))
        assert launched["dropout"] == 2 and not [name for name in names if "bernoulli" in name or "mul" in name]
        sample_kept = out.flatten(1)[:, 0] != 0
        assert torch.equal(out != 0, sample_kept[:, None, None, None].expand_as(out)), layout
        if mode == "batch":
            assert sample_kept.all() or not sample_kept.any()
        kept_fractions.append(sample_kept.float().mean().item())
        scale = sample_kept[:, None, None, None].float().expand_as(out) / (1 - p)
        torch.testing.assert_close(out, input.detach() * scale, rtol=2e-7, atol=0)
        torch.testing.assert_close(input.grad, scale, rtol=2e-7, atol=0)
        assert out.stride() == input.stride() or layout == "sliced"
    if mode == "row":
        low, high = _kept_fraction_bounds(p, 300)
        assert all(low < fraction < high for fraction in kept_fractions), kept_fractions
    flat = fastcnn.stochastic_depth(make_tensor((40, 7), generator=generator), p, mode)
    assert ((flat != 0).all(1) | (flat == 0).all(1)).all()


@pytest.mark.every_triton
def test_stochastic_depth_follows_torchvisions_contract(generator):
    input = make_tensor((5, 3, 4), generator=generator)
    assert fastcnn.stochastic_depth(input, 0.5, "row", training=False) is input
    assert fastcnn.stochastic_depth(input, 0.0, "row") is input
    assert torch.equal(fastcnn.stochastic_depth(input, 1.0, "row"), torch.zeros_like(input))
    with pytest.raises(ValueError, match="drop probability has to be between 0 and 1, but got 1.5"):
        fastcnn.stochastic_depth(input, 1.5, "row")
    with pytest.raises(ValueError, match="mode has to be either 'batch' or 'row', but got column"):
        fastcnn.stochastic_depth(input, 0.5, "column")
    module = fastcnn.nn.StochasticDepth(0.3, "row")
    assert repr(module) == "StochasticDepth(p=0.3, mode=row)" and not list(module.state_dict())
    torch.manual_seed(7)
    first = module(input)
    torch.manual_seed(7)
    assert torch.equal(module(input), first)
    module.eval()
    assert module(input) is input
