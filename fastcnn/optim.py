"""Fused multi-tensor optimizers: Adam, AdamW, SGD, RMSprop, Adagrad and Adadelta.

Each is a drop-in subclass of its ``torch.optim`` class: same constructor, same argument checks
(torch's own), same param groups, LR-scheduler support and ``state_dict`` layout, so a checkpoint
of either continues with the other. Only ``step()`` differs: per param group, every tensor of a
(device, dtype) bucket is updated by one or two Triton launches (the op in ``fastcnn/ops/<name>.py``
over ``kernels/<name>.py``) instead of one op per tensor.

Step counters follow torch's *fused* optimizers: ``step`` is a float32 scalar tensor on the
param's device, so nothing in ``step()`` waits for the GPU. A counter loaded from a torch
checkpoint (a CPU tensor) is moved there on the next step.

``torch.amp.GradScaler`` is supported the way torch's fused optimizers support it
(``_step_supports_amp_scaling``): the scaler hands over ``grad_scale`` and ``found_inf`` tensors,
the kernel unscales the gradients itself and skips the whole step on the device when an inf or
NaN was found — no ``.item()``.
"""
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensor

from . import validation
from .multi_tensor import flat_walkable
from .ops.adadelta import adadelta_step
from .ops.adagrad import adagrad_step
from .ops.adam import adam_step
from .ops.rmsprop import rmsprop_step
from .ops.sgd import sgd_step


@dataclass
class _Bucket:
    """The tensors of one param group that share a device and dtypes: one fused launch (or two)."""

    params: list = field(default_factory=list)
    grads: list = field(default_factory=list)
    states: list = field(default_factory=list)  # one list per state tensor of the rule, in its order
    counters: list = field(default_factory=list)  # per-tensor fp32 scalars: step counters, SGD's flags
    pending: list = field(default_factory=list)  # SGD's first-step flags that the step must clear
    # (destination, staged copy) pairs to write back after the launch, for tensors whose layout
    # the flat kernel cannot walk directly.
    write_back: list = field(default_factory=list)

    def add(self, tensors, counter, pending):
        self.params.append(tensors[0])
        self.grads.append(tensors[1])
        for index, tensor in enumerate(tensors[2:]):
            if index == len(self.states):
                self.states.append([])
            self.states[index].append(tensor)
        if counter is not None:
            self.counters.append(counter)
        if pending is not None:
            self.pending.append(pending)


class _FusedStep:
    """``step()`` of every fastcnn optimizer. A subclass says, per param, which state tensors its
    rule updates (``_prepare_state``), what its hyperparameters are (``_hyperparameters``) and
    which op runs the bucket (``_launch``)."""

    def _accept_grad_scaler(self):
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
            hyperparameters = self._hyperparameters(group)
            for bucket_key, bucket in self._buckets(group).items():
                device = bucket_key[0]
                self._launch(f"optim.{type(self).__name__}.step", bucket, hyperparameters,
                             grad_scale=_on_device(grad_scale, device), found_inf=_on_device(found_inf, device))
                for destination, staged in bucket.write_back:
                    destination.copy_(staged)
        return loss

    def _buckets(self, group):
        name = type(self).__name__
        buckets = {}
        for param in group["params"]:
            if param.grad is None:
                continue
            validation.check_gradient(name, param)
            states, counter, pending = self._prepare_state(param, group)
            tensors = [param, param.grad, *states]
            if param.is_complex():
                tensors = [torch.view_as_real(t) for t in tensors]
            key = (param.device, tensors[0].dtype, tensors[2].dtype if len(tensors) > 2 else None)
            bucket = buckets.setdefault(key, _Bucket())
            bucket.add(flat_walkable(tensors, bucket.write_back), counter, pending)
        return buckets

    def _device_step(self, param):
        """The param's step counter as a float32 scalar on its device (created at zero). A counter
        from torch's non-fused optimizer (a CPU tensor, maybe float64) or an old checkpoint (a
        Python number) is moved once, then it lives on the device."""
        state = self.state[param]
        step = state.get("step", 0.0)
        if not torch.is_tensor(step) or step.device != param.device or step.dtype != torch.float32:
            state["step"] = torch.as_tensor(step, dtype=torch.float32).to(param.device)
        return state["step"]

    def _zeros_state(self, param, key, fill=0.0):
        state = self.state[param]
        if key not in state:
            state[key] = torch.full_like(param, fill, memory_format=torch.preserve_format)
        return state[key]


def _numbers(group, *names):
    """The group's hyperparameters ``names`` as Python floats (a 1-element CPU tensor is read
    without a device sync; see validation.scalar_hyperparameter)."""
    return {name: validation.scalar_hyperparameter(name, group[name]) for name in names}


class Adam(_FusedStep, torch.optim.Adam):
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
        self._accept_grad_scaler()

    def _hyperparameters(self, group):
        return dict(
            lr=validation.scalar_hyperparameter("lr", group["lr"]),
            beta1=validation.scalar_hyperparameter("betas[0]", group["betas"][0]),
            beta2=validation.scalar_hyperparameter("betas[1]", group["betas"][1]),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
            amsgrad=bool(group["amsgrad"]),
            maximize=bool(group["maximize"]),
        )

    def _prepare_state(self, param, group):
        step = self._device_step(param)
        states = [self._zeros_state(param, "exp_avg"), self._zeros_state(param, "exp_avg_sq")]
        if group["amsgrad"]:
            states.append(self._zeros_state(param, "max_exp_avg_sq"))
        return states, step, None

    def _launch(self, op, bucket, hyperparameters, grad_scale, found_inf):
        exp_avgs, exp_avg_sqs = bucket.states[:2]
        max_exp_avg_sqs = bucket.states[2] if hyperparameters["amsgrad"] else exp_avg_sqs
        adam_step(op, bucket.params, bucket.grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, bucket.counters,
                  grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


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


# Per device, the fp32 constants [0, 1] whose addresses SGD's kernel reads as a tensor's first-step
# flag when the host knows the answer (a flag tensor of its own only when GradScaler may skip).
_FIRST_STEP_CONSTANTS = {}


def _first_step_constant(param, fresh):
    if isinstance(param, FakeTensor):  # fastcnn.estimate: a fake constant of the param's own mode, never cached
        return torch.tensor([0.0, 1.0], device=param.device)[1 if fresh else 0]
    constants = _FIRST_STEP_CONSTANTS.get(param.device)
    if constants is None:
        constants = _FIRST_STEP_CONSTANTS[param.device] = torch.tensor([0.0, 1.0], device=param.device)
    return constants[1 if fresh else 0]


class SGD(_FusedStep, torch.optim.SGD):
    __doc__ = (
        "SGD (momentum, dampening, Nesterov, weight decay, maximize) with a fused multi-tensor\n"
        "Triton step; arguments and semantics of torch.optim.SGD, and its state: the\n"
        "``momentum_buffer`` appears on the first step with momentum, holding that step's gradient.\n"
        "``foreach`` and ``fused`` are accepted and stored; ``differentiable=True`` is refused.\n"
    )

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        validation.check_optimizer_flags(type(self).__name__, differentiable=differentiable)
        torch.optim.SGD.__init__(self, params, lr=lr, momentum=momentum, dampening=dampening,
                                 weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                 foreach=foreach, differentiable=differentiable, fused=fused)
        # param -> (momentum buffer, flag): a buffer created while GradScaler may skip the step
        # keeps an fp32 flag on the device, 1 until a step really ran (cleared by the kernel).
        self._first_step_flags = {}
        self._accept_grad_scaler()

    def __setstate__(self, state):
        super().__setstate__(state)
        self._first_step_flags = {}

    def _hyperparameters(self, group):
        return dict(**_numbers(group, "lr", "momentum", "dampening", "weight_decay"),
                    nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]))

    def _prepare_state(self, param, group):
        if group["momentum"] == 0:
            return [], None, None
        state = self.state[param]
        buffer = state.get("momentum_buffer")
        fresh = buffer is None
        if fresh:
            # Zeros until the kernel writes the first step's gradient into it (its first-step flag).
            buffer = state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        pending = self._first_step_flags.get(param)
        if pending is not None and pending[0] is not buffer:  # the buffer was replaced (a checkpoint)
            del self._first_step_flags[param]
            pending = None
        if fresh and getattr(self, "found_inf", None) is not None:
            pending = (buffer, torch.ones((), dtype=torch.float32, device=param.device))
            self._first_step_flags[param] = pending
        if pending is not None:
            return [buffer], pending[1], pending[1]
        return [buffer], _first_step_constant(param, fresh), None

    def _launch(self, op, bucket, hyperparameters, grad_scale, found_inf):
        momentum_buffers = bucket.states[0] if bucket.states else []
        sgd_step(op, bucket.params, bucket.grads, momentum_buffers, bucket.counters, bucket.pending,
                 grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)
        if found_inf is None and bucket.pending:
            # The step ran, so the pending flags are now zero: the shared constant serves from here.
            cleared = {id(flag) for flag in bucket.pending}
            for param, (_, flag) in list(self._first_step_flags.items()):
                if id(flag) in cleared:
                    del self._first_step_flags[param]


class RMSprop(_FusedStep, torch.optim.RMSprop):
    __doc__ = (
        "RMSprop (centered, momentum, weight decay, maximize) with a fused multi-tensor Triton\n"
        "step; arguments and semantics of torch.optim.RMSprop. ``foreach`` and ``capturable`` are\n"
        "accepted and stored; ``differentiable=True`` is refused.\n"
    )

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        validation.check_optimizer_flags(type(self).__name__, differentiable=differentiable)
        torch.optim.RMSprop.__init__(self, params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                     momentum=momentum, centered=centered, capturable=capturable,
                                     foreach=foreach, maximize=maximize, differentiable=differentiable)
        self._accept_grad_scaler()

    def _hyperparameters(self, group):
        return dict(**_numbers(group, "lr", "alpha", "eps", "weight_decay", "momentum"),
                    centered=bool(group["centered"]), maximize=bool(group["maximize"]))

    def _prepare_state(self, param, group):
        step = self._device_step(param)
        states = [self._zeros_state(param, "square_avg")]
        if group["centered"]:
            states.append(self._zeros_state(param, "grad_avg"))
        if group["momentum"] > 0:
            states.append(self._zeros_state(param, "momentum_buffer"))
        return states, step, None

    def _launch(self, op, bucket, hyperparameters, grad_scale, found_inf):
        states = iter(bucket.states)
        square_avgs = next(states)
        grad_avgs = next(states) if hyperparameters["centered"] else []
        momentum_buffers = next(states) if hyperparameters["momentum"] > 0 else []
        rmsprop_step(op, bucket.params, bucket.grads, square_avgs, grad_avgs, momentum_buffers, bucket.counters,
                     grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


class Adagrad(_FusedStep, torch.optim.Adagrad):
    __doc__ = (
        "Adagrad (lr decay, weight decay, initial accumulator, maximize) with a fused multi-tensor\n"
        "Triton step; arguments and semantics of torch.optim.Adagrad. Sparse gradients are refused\n"
        "(use torch.optim.Adagrad for them); ``foreach`` and ``fused`` are accepted and stored.\n"
    )

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        validation.check_optimizer_flags(type(self).__name__, differentiable=differentiable)
        torch.optim.Adagrad.__init__(self, params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                     initial_accumulator_value=initial_accumulator_value, eps=eps,
                                     foreach=foreach, maximize=maximize, differentiable=differentiable,
                                     fused=fused)
        self._accept_grad_scaler()

    def _hyperparameters(self, group):
        return dict(**_numbers(group, "lr", "lr_decay", "weight_decay", "eps"), maximize=bool(group["maximize"]))

    def _prepare_state(self, param, group):
        step = self._device_step(param)  # torch creates the state in __init__, on the CPU
        fill = float(group["initial_accumulator_value"])
        return [self._zeros_state(param, "sum", complex(fill, fill) if param.is_complex() else fill)], step, None

    def _launch(self, op, bucket, hyperparameters, grad_scale, found_inf):
        adagrad_step(op, bucket.params, bucket.grads, bucket.states[0], bucket.counters,
                     grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


class Adadelta(_FusedStep, torch.optim.Adadelta):
    __doc__ = (
        "Adadelta (weight decay, maximize) with a fused multi-tensor Triton step; arguments and\n"
        "semantics of torch.optim.Adadelta. ``foreach`` and ``capturable`` are accepted and stored;\n"
        "``differentiable=True`` is refused.\n"
    )

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *, capturable=False,
                 maximize=False, differentiable=False):
        validation.check_optimizer_flags(type(self).__name__, differentiable=differentiable)
        torch.optim.Adadelta.__init__(self, params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      foreach=foreach, capturable=capturable, maximize=maximize,
                                      differentiable=differentiable)
        self._accept_grad_scaler()

    def _hyperparameters(self, group):
        return dict(**_numbers(group, "lr", "rho", "eps", "weight_decay"), maximize=bool(group["maximize"]))

    def _prepare_state(self, param, group):
        step = self._device_step(param)
        return [self._zeros_state(param, "square_avg"), self._zeros_state(param, "acc_delta")], step, None

    def _launch(self, op, bucket, hyperparameters, grad_scale, found_inf):
        square_avgs, acc_deltas = bucket.states
        adadelta_step(op, bucket.params, bucket.grads, square_avgs, acc_deltas, bucket.counters,
                      grad_scale=grad_scale, found_inf=found_inf, **hyperparameters)


def _on_device(value, device):
    """GradScaler's ``grad_scale``/``found_inf`` as a float32 tensor on ``device`` (None stays None)."""
    if value is None:
        return None
    return torch.as_tensor(value, dtype=torch.float32).to(device, non_blocking=True)
