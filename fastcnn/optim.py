"""Fused multi-tensor Adam and AdamW.

``fastcnn.optim.Adam`` and ``fastcnn.optim.AdamW`` are drop-in subclasses of ``torch.optim.Adam``
and ``torch.optim.AdamW``: same constructor, same argument checks (torch's own), same param
groups and same ``state_dict`` layout, so a checkpoint of either continues with the other. Only
``step()`` differs: per param group, every tensor is updated by two Triton launches (see
``kernels/adam.py``) instead of one op per tensor.

State follows torch's *fused* Adam: ``step`` is a float32 scalar tensor on the param's device, so
the bias corrections are computed on the device and ``step()`` never waits for the GPU. A step
counter loaded from a torch checkpoint (a CPU tensor) is moved there on the next step.

``torch.amp.GradScaler`` is supported the way torch's fused Adam supports it
(``_step_supports_amp_scaling``): the scaler hands over ``grad_scale`` and ``found_inf`` tensors,
the kernel unscales the gradients itself and skips the whole step on the device when an inf or
NaN was found — no ``.item()``.
"""
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from . import _backend, _reference, validation
from ._layout import is_dense
from .dtypes import triton_dtype


# Pointer tables of recent steps, keyed by what they encode (addresses and sizes): a model's
# tensors keep their addresses from step to step, so the table is built once.
_TABLES = {}
_MAX_TABLES = 64


@torch.library.custom_op("fastcnn::adam_step_",
                         mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "steps"))
def _adam_step_op(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                  max_exp_avg_sqs: list[Tensor], steps: list[Tensor], grad_scale: Optional[Tensor],
                  found_inf: Optional[Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float, decoupled_weight_decay: bool, amsgrad: bool, maximize: bool) -> None:
    """One Adam/AdamW step, in place, over tensors that share a device and dtypes, walkable as
    flat arrays (see Adam._buckets); ``max_exp_avg_sqs`` is empty unless ``amsgrad``."""
    if not params:
        return
    adam_kernels = _backend.kernel_module("adam")
    multi_tensor = _backend.kernel_module("multi_tensor")
    numels = [p.numel() for p in params]
    tensor_lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else exp_avg_sqs, steps)
    key = multi_tensor.table_key(tensor_lists, numels)
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) >= _MAX_TABLES:
            _TABLES.clear()
        table = _TABLES[key] = multi_tensor.build_table(tensor_lists, numels, adam_kernels.CHUNK_SIZE,
                                                        params[0].device, key=key)
    with torch.profiler.record_function("fastcnn::adam_step"):
        _backend.record_launch("adam_step", adam_kernels.adam_step(
            table, element_type=triton_dtype(params[0].dtype), state_type=triton_dtype(exp_avgs[0].dtype), lr=lr,
            beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad, maximize=maximize,
            grad_scale=grad_scale, found_inf=found_inf))


@_adam_step_op.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, grad_scale, found_inf, **hyperparameters):
    return None


@dataclass
class _Bucket:
    """The tensors of one param group that share a device and dtypes: one pair of launches."""

    params: list = field(default_factory=list)
    grads: list = field(default_factory=list)
    exp_avgs: list = field(default_factory=list)
    exp_avg_sqs: list = field(default_factory=list)
    max_exp_avg_sqs: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    # (destination, staged copy) pairs to write back after the launch, for tensors whose layout
    # the flat kernel cannot walk directly.
    write_back: list = field(default_factory=list)


class Adam(torch.optim.Adam):
    __doc__ = (
        "Adam with a fused multi-tensor Triton step; arguments and semantics of torch.optim.Adam.\n\n"
        "``foreach``, ``fused`` and ``capturable`` are accepted and stored for checkpoint\n"
        "compatibility; the step is always the fused kernel. ``differentiable=True`` is refused.\n"
    )

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        validation.check_optimizer_flags(type(self).__name__, differentiable=differentiable)
        torch.optim.Adam.__init__(
            self, params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable,
            fused=fused, decoupled_weight_decay=decoupled_weight_decay,
        )
        self._step_supports_amp_scaling = True

    def __setstate__(self, state):
        super().__setstate__(state)
        self._step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Set by torch.amp.GradScaler.step for optimizers with _step_supports_amp_scaling.
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            hyperparameters = dict(
                lr=validation.scalar_hyperparameter("lr", group["lr"]),
                beta1=validation.scalar_hyperparameter("betas[0]", group["betas"][0]),
                beta2=validation.scalar_hyperparameter("betas[1]", group["betas"][1]),
                eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]),
                decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
                amsgrad=bool(group["amsgrad"]),
                maximize=bool(group["maximize"]),
            )
            for bucket_key, bucket in self._buckets(group).items():
                device = bucket_key[0]
                self._launch(
                    device, bucket, hyperparameters,
                    grad_scale=_on_device(grad_scale, device), found_inf=_on_device(found_inf, device),
                )
        return loss

    def _buckets(self, group):
        name = type(self).__name__
        buckets = {}
        for param in group["params"]:
            if param.grad is None:
                continue
            validation.check_gradient(name, param)
            state = self._state_for(param, group["amsgrad"])
            tensors = [param, param.grad, state["exp_avg"], state["exp_avg_sq"]]
            if group["amsgrad"]:
                tensors.append(state["max_exp_avg_sq"])
            if param.is_complex():
                tensors = [torch.view_as_real(t) for t in tensors]
            key = (param.device, tensors[0].dtype, tensors[2].dtype)
            bucket = buckets.setdefault(key, _Bucket())
            tensors = _flat_walkable(tensors, bucket.write_back)
            bucket.params.append(tensors[0])
            bucket.grads.append(tensors[1])
            bucket.exp_avgs.append(tensors[2])
            bucket.exp_avg_sqs.append(tensors[3])
            bucket.max_exp_avg_sqs.append(tensors[4] if group["amsgrad"] else tensors[3])
            bucket.steps.append(state["step"])
        return buckets

    def _state_for(self, param, amsgrad):
        state = self.state[param]
        if len(state) == 0:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        step = state["step"]
        if not torch.is_tensor(step) or step.device != param.device or step.dtype != torch.float32:
            # A counter from torch's non-fused Adam (a CPU tensor, maybe float64) or an old
            # checkpoint (a Python number): moved once, then it lives on the device.
            state["step"] = torch.as_tensor(step, dtype=torch.float32).to(param.device)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _launch(self, device, bucket, hyperparameters, grad_scale, found_inf):
        backend = _backend.backend_for(device)
        if backend == _backend.FALLBACK:
            _backend.warn_fallback(f"optim.{type(self).__name__}.step", device)
            _reference.adam_step(
                bucket.params, bucket.grads, bucket.exp_avgs, bucket.exp_avg_sqs, bucket.max_exp_avg_sqs,
                bucket.steps, grad_scale=grad_scale, found_inf=found_inf, **hyperparameters,
            )
        else:
            max_exp_avg_sqs = bucket.max_exp_avg_sqs if hyperparameters["amsgrad"] else []
            _adam_step_op(bucket.params, bucket.grads, bucket.exp_avgs, bucket.exp_avg_sqs, max_exp_avg_sqs,
                          bucket.steps, grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)
        for destination, staged in bucket.write_back:
            destination.copy_(staged)


class AdamW(Adam, torch.optim.AdamW):
    __doc__ = (
        "AdamW (decoupled weight decay) with a fused multi-tensor Triton step; arguments and\n"
        "semantics of torch.optim.AdamW. See fastcnn.optim.Adam.\n"
    )

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable,
            fused=fused, decoupled_weight_decay=True,
        )


def _flat_walkable(tensors, write_back):
    """``tensors`` (param, grad, states) as tensors the kernel can walk element by element in the
    same order: dense and with identical strides. Those that are not (a grad laid out unlike its
    channels_last param, a strided param) are staged in the param's dense layout; staged tensors
    the step writes (all but the grad) are queued in ``write_back``."""
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
        if index != 1:
            write_back.append((tensor, copy))
    return staged


def _on_device(value, device):
    """GradScaler's ``grad_scale``/``found_inf`` as a float32 tensor on ``device`` (None stays None)."""
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32).to(device, non_blocking=True)
