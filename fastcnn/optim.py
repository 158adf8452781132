"""Fused multi-tensor Adam and AdamW.

``fastcnn.optim.Adam`` and ``fastcnn.optim.AdamW`` are drop-in subclasses of ``torch.optim.Adam``
and ``torch.optim.AdamW``: same constructor, same argument checks (torch's own), same param
groups and same ``state_dict`` layout, so a checkpoint of either continues with the other. Only
``step()`` differs: per param group, every tensor is updated by two Triton launches (the op in
``fastcnn/ops/adam.py`` over ``kernels/adam.py``) instead of one op per tensor.

State follows torch's *fused* Adam: ``step`` is a float32 scalar tensor on the param's device, so
the bias corrections are computed on the device and ``step()`` never waits for the GPU. A step
counter loaded from a torch checkpoint (a CPU tensor) is moved there on the next step.

``torch.amp.GradScaler`` is supported the way torch's fused Adam supports it
(``_step_supports_amp_scaling``): the scaler hands over ``grad_scale`` and ``found_inf`` tensors,
the kernel unscales the gradients itself and skips the whole step on the device when an inf or
NaN was found — no ``.item()``.
"""
from dataclasses import dataclass, field

import torch

from . import validation
from ._layout import is_dense
from .ops.adam import adam_step


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
        adam_step(f"optim.{type(self).__name__}.step", bucket.params, bucket.grads, bucket.exp_avgs,
                  bucket.exp_avg_sqs, bucket.max_exp_avg_sqs, bucket.steps, grad_scale=grad_scale,
                  found_inf=found_inf, **hyperparameters)
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
