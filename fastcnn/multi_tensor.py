"""The PyTorch side shared by the multi-tensor ops (the optimizer steps in ``ops/adam.py``,
``ops/sgd.py``, ``ops/rmsprop.py``, ``ops/adagrad.py``, ``ops/adadelta.py`` and gradient clipping
in ``ops/clip_grad.py``), each over its kernel file and ``kernels/multi_tensor.py``:

* ``flat_walkable``: tensors the flat kernels can walk element by element (staged where not);
* the reference path's helpers: the gradient an update rule sees and the GradScaler-aware write,
  so each op's PyTorch path follows its kernel's math step for step without a host sync.

Their benchmark cases are in ``fastcnn/cases/_optimizers.py``.
"""
import torch

from . import _backend
from ._cost import one_pass
from ._layout import is_dense


# ----------------------------------------------------------------------------- walkable tensors
def flat_walkable(tensors, write_back, read_only=(1,)):
    """``tensors`` (an optimizer's param, grad, states; clipping's one grad) as tensors the kernel
    can walk element by element in the same order: dense and with identical strides. Those that
    are not (a grad laid out unlike its channels_last param, a strided param) are staged in the
    first one's dense layout; staged tensors the kernel writes (all but the positions in
    ``read_only``: an optimizer's grad) are queued in ``write_back``."""
    reference = tensors[0]
    if is_dense(reference) and all(t.stride() == reference.stride() or t.numel() == 0 for t in tensors[1:]):
        return tensors
    dense_template = reference if is_dense(reference) else reference.contiguous()
    staged = []
    for index, tensor in enumerate(tensors):
        if is_dense(tensor) and tensor.stride() == dense_template.stride():
            staged.append(tensor)
            continue
        copy = torch.empty_like(dense_template, dtype=tensor.dtype)
        copy.copy_(tensor)
        staged.append(copy)
        if index not in read_only:
            write_back.append((tensor, copy))
    return staged


# ----------------------------------------------------------------------------- the functionals, reference path helpers
def run_step(op, params, operator, reference, *args, **kwargs):
    """``operator(*args, **kwargs)`` (an op's fused kernels), or its PyTorch reference path
    ``reference`` with the same arguments, announced once with a FallbackWarning naming ``op``,
    where no kernel can run on the params' device."""
    device = params[0].device if params else torch.device("cpu")
    if _backend.backend_for(device) == _backend.FALLBACK:
        _backend.warn_fallback(op, device)
        reference(*args, **kwargs)
    else:
        operator(*args, **kwargs)


def step_input(param, grad, *, grad_scale, maximize, weight_decay):
    """The fp32 gradient an update rule sees, in torch's order: unscaled (GradScaler), negated
    (maximize), plus L2 weight decay (``multi_tensor.gradient_step_input`` in the kernels)."""
    grad = grad.float()
    if grad_scale is not None:
        grad = grad * (1.0 / grad_scale.float())
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad + weight_decay * param.float()
    return grad


def write(destination, value, keep):
    """destination[:] = value, or leave it when ``keep`` (a device bool) is False: no host sync."""
    if keep is not None:
        value = torch.where(keep, value, destination.float())
    destination.copy_(value)


def count_step(step, keep):
    """step += 1, or += 0 when GradScaler found inf/NaN (``keep`` False)."""
    step.add_(1.0 if keep is None else keep.to(step.dtype))


def counter_launches(counters):
    """The one launch that advances (or clears) the device-side counters ``counters``, if any."""
    return [one_pass("_advance_counters_kernel", [counters], [counters])] if counters else []


def step_launches(kernel, reads, writes, counters=()):
    """The launches of a multi-tensor step (fastcnn.estimate): the counters' advance when the step
    keeps any (``counters``: the step counts), then ``kernel`` over every chunk, reading the lists
    in ``reads`` and writing those in ``writes`` once each; no update launch when every tensor is
    empty."""
    launches = counter_launches(counters)
    if any(tensor.numel() for tensor in reads[0]):
        launches.append(one_pass(kernel, reads, writes))
    return launches
