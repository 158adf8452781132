"""``fastcnn.coverage(model, example_input)``: how much of one training step runs in fastcnn.

One forward, loss and backward of ``model`` run under a dispatch recorder that sees every op
the step dispatches: fastcnn's operators (``fastcnn::conv2d``, ...) by name, with nothing of
what runs inside them, and every ATen op that runs outside them. The ATen ops are grouped by
kind (convolution, norm, activation, pooling, residual add, loss, linear, dropout,
elementwise, and the gradient sums autograd makes for a tensor used twice), so that "what is
left" reads as the work a user would want moved, apart from the bookkeeping (views, copies,
allocations, counters) every PyTorch step has.
"""
import contextlib
from collections import Counter
from dataclasses import dataclass, field

import torch

# ATen op names (without the "aten::" prefix and overload) by kind, in the order the report lists them.
ATEN_OPS_BY_KIND = {
    "convolution": ("convolution", "convolution_backward", "conv2d", "_convolution", "cudnn_convolution",
                    "mkldnn_convolution", "_slow_conv2d_forward", "_slow_conv2d_backward"),
    "norm": ("native_batch_norm", "native_batch_norm_backward", "_native_batch_norm_legit",
             "_native_batch_norm_legit_no_training", "batch_norm", "cudnn_batch_norm", "cudnn_batch_norm_backward",
             "native_group_norm", "native_group_norm_backward", "native_layer_norm", "native_layer_norm_backward",
             "instance_norm"),
    "activation": ("relu", "relu_", "threshold_backward", "hardtanh", "hardtanh_", "hardtanh_backward",
                   "leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "silu", "silu_", "silu_backward",
                   "gelu", "gelu_backward", "hardswish", "hardswish_", "hardswish_backward", "hardsigmoid",
                   "hardsigmoid_backward", "sigmoid", "sigmoid_", "sigmoid_backward", "tanh", "tanh_",
                   "tanh_backward", "clamp_min", "clamp_min_"),
    "pooling": ("max_pool2d", "max_pool2d_with_indices", "max_pool2d_with_indices_backward", "avg_pool2d",
                "avg_pool2d_backward", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
                "_adaptive_avg_pool2d_backward", "mean"),
    "residual add": ("add", "add_"),
    "loss": ("_log_softmax", "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward",
             "cross_entropy_loss", "log_softmax"),
    "linear": ("addmm", "mm", "bmm", "linear", "matmul"),
    "dropout": ("native_dropout", "native_dropout_backward", "bernoulli_", "dropout"),
    "elementwise": ("mul", "mul_", "div", "div_", "sub", "sub_", "neg", "pow", "sqrt", "rsqrt", "exp", "sum",
                    "where", "masked_fill", "masked_fill_", "addcmul_", "addcdiv_", "lerp_"),
}
# Ops every PyTorch step runs that move no activation-sized work of their own (or only metadata).
BOOKKEEPING = ("view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "squeeze", "unsqueeze",
               "as_strided", "alias", "detach", "empty", "empty_like", "empty_strided", "new_empty",
               "new_empty_strided", "zeros", "zeros_like", "ones_like", "full", "fill_", "zero_", "copy_",
               "clone", "_to_copy", "contiguous", "select", "slice", "flatten", "lift_fresh", "_local_scalar_dense",
               "is_same_size", "_reshape_alias", "split", "unbind", "stack", "cat", "randint", "random_",
               "_has_compatible_shallow_copy_type", "resize_", "set_", "item")


def kind_of(name):
    """The ATEN_OPS_BY_KIND entry of an ATen op name ("aten::relu_", "aten::add.Tensor"), "bookkeeping", or
    "other"."""
    base = name.split("::", 1)[-1].split(".", 1)[0]
    for kind, names in ATEN_OPS_BY_KIND.items():
        if base in names:
            return kind
    return "bookkeeping" if base in BOOKKEEPING else "other"


@contextlib.contextmanager
def record_ops(sizes=None):
    """Yield a list that fills with the names (``aten::add_.Tensor`` style; fastcnn's operators as
    ``fastcnn::conv2d``) of the ops dispatched inside the block. What runs inside an operator is
    not seen (the mode is off while an op runs). ``sizes``, a list, receives the element count of
    each op's first tensor argument (0 when it has none)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    names = []

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            names.append(func._schema.name + (("." + func._overloadname) if func._overloadname != "default" else ""))
            if sizes is not None:
                sizes.append(next((a.numel() for a in args if isinstance(a, torch.Tensor)), 0))
            return func(*args, **(kwargs or {}))

    with _Recorder():
        yield names


@dataclass
class Coverage:
    """What one training step dispatched: fastcnn's operators and the ATen ops left, by kind."""

    fastcnn: Counter = field(default_factory=Counter)  # {"fastcnn::conv2d": calls}
    left: dict = field(default_factory=dict)  # {kind: Counter({"aten::add.Tensor": calls})}, bookkeeping apart

    def left_in(self, *kinds):
        """The ATen ops left of the given kinds, {name: calls}."""
        return Counter({name: count for kind in kinds for name, count in self.left.get(kind, {}).items()})

    @property
    def work_left(self):
        """Calls of ATen ops left that are not bookkeeping."""
        return sum(sum(ops.values()) for kind, ops in self.left.items() if kind != "bookkeeping")

    def __str__(self):
        lines = [f"fastcnn.coverage: {sum(self.fastcnn.values())} fastcnn operator calls, {self.work_left} ATen "
                 f"calls left (besides bookkeeping)"]
        lines += [f"  fastcnn      {name}: {count}" for name, count in sorted(self.fastcnn.items())]
        for kind in list(ATEN_OPS_BY_KIND) + ["gradient sum", "other", "bookkeeping"]:
            ops = self.left.get(kind)
            if ops:
                listed = ", ".join(f"{name.split('::', 1)[-1]} x{count}" for name, count in sorted(ops.items()))
                lines.append(f"  {kind:12s} {listed}")
        return "\n".join(lines)


def coverage(model, example_input, target=None, loss_fn=None):
    """Run one training step of ``model`` on ``example_input`` (forward; ``loss_fn(output,
    target)`` and its backward, or without a ``loss_fn`` the backward of a ones gradient made
    outside the recording, so that only the model's ops are listed) and return a
    :class:`Coverage`: fastcnn's operator calls and the ATen ops that ran outside them, by kind.
    The model's gradients and its batch-norm statistics change as in any training step."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fastcnn.coverage: argument 'model' must be a torch.nn.Module, not {type(model).__name__}")
    forward_sizes, backward_sizes = [], []
    with record_ops(forward_sizes) as forward:
        output = model(example_input)
        loss = loss_fn(output, target) if loss_fn is not None else None
    gradient = torch.ones_like(output) if loss is None else None
    with record_ops(backward_sizes) as backward:
        (output if loss is None else loss).backward(gradient)
    report = Coverage()
    for names, sizes, phase in ((forward, forward_sizes, "forward"), (backward, backward_sizes, "backward")):
        for name, size in zip(names, sizes):
            if name.startswith("fastcnn::"):
                report.fastcnn[name] += 1
                continue
            kind = kind_of(name)
            if kind == "residual add" and size <= 1:
                kind = "bookkeeping"  # a counter (num_batches_tracked += 1) or a scalar loss
            elif kind == "residual add" and phase == "backward":
                kind = "gradient sum"  # autograd adding the gradients of a tensor used twice
            report.left.setdefault(kind, Counter())[name] += 1
    return report
