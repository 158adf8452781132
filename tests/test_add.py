"""fastcnn.add (the residual add no batch norm took) against float64 torch: every layout, the
gradient passed on to both inputs without a launch, and torch's add for what the kernel does not
take (broadcasting, promotion, differing layouts, numbers)."""
import pytest
import torch

import fastcnn
from fastcnn.testing import DEVICE, LAYOUTS, assert_close, count_launches, make_tensor, record_aten_ops


@pytest.mark.every_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sum_and_gradients(layout, dtype, seed, generator):
    shape = (3, 5, 7, 6)
    x = make_tensor(shape, dtype, layout=layout, generator=generator).requires_grad_()
    r = make_tensor(shape, dtype, layout=layout, generator=generator).requires_grad_()
    with count_launches() as launched, record_aten_ops() as names:
        out = fastcnn.add(x, r)
        out.backward(torch.ones_like(out) * 3)
    expected = x.detach().double() + r.detach().double()
    assert_close(out, expected, dtype, what="sum", seed=seed)
    assert torch.equal(x.grad, torch.full_like(x, 3)) and torch.equal(r.grad, torch.full_like(r, 3))
    strided = layout == "sliced"  # not dense: torch's add
    assert launched.get("add", 0) == (0 if strided else 1), dict(launched)
    assert ("aten::add.Tensor" in names) == strided, names
    if not strided:
        assert out.stride() == x.stride()


def test_what_the_kernel_does_not_take_is_torchs_add(generator):
    x = make_tensor((2, 3, 4, 5), generator=generator)
    cases = [(x, make_tensor((1, 3, 1, 1), generator=generator)),  # broadcast
             (x, make_tensor((2, 3, 4, 5), layout="channels_last", generator=generator)),  # layouts differ
             (x, x.double()),  # promotion
             (x, 2.0), (3, 4)]
    with count_launches() as launched:
        for a, b in cases:
            out = fastcnn.add(a, b)
            expected = a + b
            assert (out == expected).all() if torch.is_tensor(out) else out == expected
            assert not torch.is_tensor(out) or out.dtype == expected.dtype
    assert not launched


def test_empty(generator):
    x = torch.empty(0, 3, device=DEVICE, requires_grad=True)
    out = fastcnn.add(x, torch.empty(0, 3, device=DEVICE))
    out.sum().backward()
    assert out.shape == (0, 3) and x.grad.shape == (0, 3)


def test_bytes_hand_counted():
    from fastcnn.ops import add as add_op

    assert add_op.bytes_moved(10, 4, backward=True) == 120  # read x and r, write out; nothing backward
