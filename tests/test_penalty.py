"""fastcnn.penalty against float64 torch: L1, L2 and elastic net over many tensors of mixed
shapes, layouts and dtypes, its gradient (one launch), sign(0), a fixed-order sum, empty and
frozen tensors, torch.compile, and its errors."""
import pytest
import torch

import fastcnn
from fastcnn.testing import DEVICE, assert_close, count_launches, make_tensor, record_aten_ops


def _reference(tensors, l1, l2):
    return sum(l1 * t.abs().sum() + l2 * t.square().sum() for t in tensors)


def _tensors(generator, dtype=torch.float32):
    shapes = [(6, 3, 5, 5), (6,), (11, 7), (3,), (5000,)]
    tensors = [make_tensor(shape, dtype, generator=generator) for shape in shapes]
    tensors[0] = tensors[0].to(memory_format=torch.channels_last)
    tensors[3][1] = 0.0  # sign(0) = 0
    return [t.requires_grad_() for t in tensors]


@pytest.mark.every_triton
@pytest.mark.parametrize("l1, l2", [(1e-3, 0.0), (0.0, 5e-3), (2e-3, 7e-3)])
def test_value_and_gradients_match_float64_torch(l1, l2, seed, generator):
    tensors = _tensors(generator)
    with count_launches() as launched, record_aten_ops() as names:
        value = fastcnn.penalty(tensors, l1, l2)
        (value * 3.0).backward()
    assert launched["penalty"] == 3, dict(launched)  # sums, total; gradients
    assert not [n for n in names if any(w in n for w in ("abs", "pow", "square", "sum", "sgn", "sign"))], names
    references = [t.detach().double().requires_grad_() for t in tensors]
    expected = _reference(references, l1, l2)
    (expected * 3.0).backward()
    numel = sum(t.numel() for t in tensors)
    assert value.dtype == torch.float32 and value.shape == ()
    assert_close(value, expected, torch.float32, what="penalty", seed=seed, reduction_length=numel)
    for index, (ours, theirs) in enumerate(zip(tensors, references)):
        assert ours.grad.stride() == ours.stride()
        assert_close(ours.grad, theirs.grad, torch.float32, what=f"grad {index}", seed=seed)
    assert tensors[3].grad[1] == 6.0 * l2 * 0.0


def test_mixed_dtypes_strided_views_and_determinism(seed, generator):
    tensors = _tensors(generator)[:3] + _tensors(generator, torch.bfloat16)[1:3]
    view = make_tensor((8, 9), generator=generator)[:, ::2].requires_grad_()
    tensors.append(view)
    first, second = fastcnn.penalty(tensors, 1e-3, 1e-2), fastcnn.penalty(tensors, 1e-3, 1e-2)
    assert torch.equal(first, second)
    expected = _reference([t.detach().double() for t in tensors], 1e-3, 1e-2)
    assert first.dtype == torch.float32  # bf16 and fp32 sums promote, as torch's would
    assert_close(first, expected, torch.bfloat16, what="mixed", seed=seed, reduction_length=10000)
    first.backward()
    assert view.grad.shape == view.shape
    assert_close(view.grad, 1e-3 * view.detach().double().sign() + 2e-2 * view.detach().double(), torch.float32,
                 what="view grad", seed=seed)


def test_empty_frozen_and_compiled(generator):
    assert torch.equal(fastcnn.penalty([], 1.0, 1.0), torch.zeros(()))
    empty = torch.empty(0, device=DEVICE, requires_grad=True)
    frozen = make_tensor((4, 3), generator=generator)
    trained = make_tensor((5,), generator=generator).requires_grad_()
    value = fastcnn.penalty([empty, frozen, trained], 0.5, 0.25)
    value.backward()
    assert frozen.grad is None and empty.grad.shape == (0,)
    assert torch.allclose(value, _reference([frozen, trained], 0.5, 0.25))
    model = torch.nn.Linear(3, 2).to(DEVICE)
    compiled = torch.compile(lambda: fastcnn.penalty(model.parameters(), 0.1, 0.2), fullgraph=True,
                             backend="aot_eager")
    assert torch.allclose(compiled(), _reference(list(model.parameters()), 0.1, 0.2))


def test_errors():
    with pytest.raises(TypeError, match="fastcnn.penalty: parameters\\[1\\] must be a Tensor"):
        fastcnn.penalty([torch.ones(2), 3.0], 0.1)
    with pytest.raises(TypeError, match="fastcnn.penalty: l2 must be a real number"):
        fastcnn.penalty([torch.ones(2)], 0.1, "0.2")
    with pytest.raises(TypeError, match="not supported by fastcnn's kernels"):
        fastcnn.penalty([torch.ones(2, dtype=torch.float64)], 0.1)


def test_bytes_hand_counted():
    from fastcnn.ops import penalty

    assert penalty.bytes_moved(10, 4) == 120 and penalty.bytes_moved(10, 2, backward=False) == 20
