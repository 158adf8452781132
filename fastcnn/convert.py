"""``fastcnn.convert(model)``: swap fastcnn's modules into an existing PyTorch model.

Two passes over the module tree:

1. Fusion. A ``BatchNorm2d`` whose output feeds only a ReLU becomes ``BatchNorm2dReLU`` and that
   ReLU disappears. Inside an ``nn.Sequential`` a BN followed by a ReLU is fused by position (the
   ReLU's slot becomes ``nn.Identity``). Anywhere else the parent module's ``forward`` is traced
   with ``torch.fx`` (its children kept as leaves) to find where each BN's output goes; a parent
   with something to fuse gets, on that instance only, a ``forward`` generated from the graph
   without the fused ReLU calls (its class, children, parameters, buffers and attributes stay
   as they are). Torchvision's ResNet blocks call one ``nn.ReLU`` module twice (after
   ``bn1`` and after the residual add): the graph rewrite fuses only the call after ``bn1``. A
   parent that cannot be traced keeps its code, and its BN layers are replaced unfused.
2. Replacement. Modules of exactly the types ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.BatchNorm2d`` and
   ``nn.CrossEntropyLoss`` take the fastcnn subclass as their class. fastcnn's modules subclass
   torch's and add no state, so parameters and buffers are the same tensors (an optimizer
   built before an in-place conversion keeps working) and ``state_dict`` keys are unchanged.

``nn.SyncBatchNorm`` is left as it is: its statistics are all-reduced across processes, which
fastcnn's batch norm does not do. Subclasses of the torch modules are left too: their own
``forward`` may do something the fastcnn module would not.
"""
import copy
import logging
import types
from dataclasses import dataclass, field

import torch
import torch.fx

from . import nn as fastcnn_nn

logger = logging.getLogger("fastcnn.convert")

REPLACEMENTS = {
    torch.nn.Conv2d: fastcnn_nn.Conv2d,
    torch.nn.MaxPool2d: fastcnn_nn.MaxPool2d,
    torch.nn.BatchNorm2d: fastcnn_nn.BatchNorm2d,
    torch.nn.CrossEntropyLoss: fastcnn_nn.CrossEntropyLoss,
}
FASTCNN_MODULES = tuple(REPLACEMENTS.values()) + (fastcnn_nn.BatchNorm2dReLU,)
RELU_FUNCTIONS = (torch.relu, torch.relu_, torch.nn.functional.relu)
RELU_METHODS = ("relu", "relu_")


@dataclass
class ConversionReport:
    """What ``convert`` did. Each entry is (qualified module name, detail)."""

    replaced: list = field(default_factory=list)  # (name, "torch.nn.Conv2d -> fastcnn.nn.Conv2d")
    fused: list = field(default_factory=list)  # (BN name, how the ReLU was found)
    left: list = field(default_factory=list)  # (name, why it was not replaced or not fused)
    rewritten: list = field(default_factory=list)  # (name, "forward rewritten as an fx graph")

    def __str__(self):
        lines = [f"fastcnn.convert: {len(self.replaced)} modules replaced, {len(self.fused)} BatchNorm2d+ReLU "
                 f"fused, {len(self.left)} left"]
        for title, entries in (("replaced", self.replaced), ("fused", self.fused), ("left", self.left),
                               ("rewritten", self.rewritten)):
            lines += [f"  {title:9s} {name or '(model)'}: {detail}" for name, detail in entries]
        return "\n".join(lines)


def convert(model, inplace=False, *, fuse_relu=True, report=False):
    """Return ``model`` with fastcnn's modules swapped in (a deep copy unless ``inplace``).

    ``fuse_relu``: fuse each BatchNorm2d whose output feeds only a ReLU into ``BatchNorm2dReLU``.
    ``report``: also return a :class:`ConversionReport` (``(model, report)``). The report is
    always logged at INFO level on the ``fastcnn.convert`` logger.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fastcnn.convert: argument 'model' must be a torch.nn.Module, not {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    result = ConversionReport()
    if fuse_relu:
        _fuse(model, result)
    _replace(model, result)
    logger.info("%s", result)
    return (model, result) if report else model


def _call_counts(model):
    """How many places in the module tree hold each module object (shared modules count twice)."""
    counts = {}
    for _, module in model.named_modules(remove_duplicate=False):
        counts[id(module)] = counts.get(id(module), 0) + 1
    return counts


def _is_plain_bn(module):
    return type(module) is torch.nn.BatchNorm2d and _kernel_dtypes(module)


def _kernel_dtypes(module):
    """False when ``module`` holds float64 tensors, which fastcnn's kernels do not take."""
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return not any(t.dtype == torch.float64 for t in tensors)


def _fuse(model, result):
    holders = _call_counts(model)
    for name, module in list(model.named_modules()):
        # Position decides only where the forward is Sequential's own (not a subclass's override).
        if isinstance(module, torch.nn.Sequential) and type(module).forward is torch.nn.Sequential.forward:
            _fuse_sequential(name, module, holders, result)
        elif any(_is_plain_bn(child) for child in module.children()):
            _fuse_traced(name, module, holders, result)


def _fuse_sequential(name, sequential, holders, result):
    children = list(sequential.named_children())
    for (bn_name, bn), (relu_name, relu) in zip(children, children[1:]):
        if _is_plain_bn(bn) and type(relu) is torch.nn.ReLU:
            qualified = _join(name, bn_name)
            if holders[id(bn)] > 1:
                result.left.append((qualified, "not fused: the BatchNorm2d is shared with another part of the model"))
                continue
            bn.__class__ = fastcnn_nn.BatchNorm2dReLU
            setattr(sequential, relu_name, torch.nn.Identity())
            result.fused.append((qualified, f"followed by ReLU {_join(name, relu_name)} in a Sequential "
                                            f"(that slot is now nn.Identity)"))


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own ``forward``: every submodule call is a leaf ``call_module`` node."""

    def is_leaf_module(self, module, qualified_name):
        return True


def _is_relu(node, root):
    if node.op == "call_module":
        return type(root.get_submodule(node.target)) is torch.nn.ReLU
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    return node.op == "call_method" and node.target in RELU_METHODS


def _fuse_traced(name, module, holders, result):
    """Fuse the BN→ReLU pairs in ``module``'s own forward, when it can be traced."""
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception as error:  # fx raises many types for data-dependent control flow
        for child_name, child in module.named_children():
            if _is_plain_bn(child):
                result.left.append((_join(name, child_name), f"not fused: the forward of {type(module).__name__} "
                                                             f"could not be traced ({type(error).__name__}: "
                                                             f"{str(error).splitlines()[0][:120]})"))
        return
    bn_calls = {}
    for node in graph.nodes:
        if node.op == "call_module" and _is_plain_bn(module.get_submodule(node.target)):
            bn_calls.setdefault(node.target, []).append(node)
    fusable = {}
    for target, calls in bn_calls.items():
        users = [list(node.users) for node in calls]
        if holders[id(module.get_submodule(target))] > 1:
            result.left.append((_join(name, target), "not fused: the BatchNorm2d is shared with another part of "
                                                     "the model"))
        elif all(len(u) == 1 and _is_relu(u[0], module) and u[0].args[0] is node for u, node in zip(users, calls)):
            fusable[target] = [u[0] for u in users]
        else:
            consumers = sorted({_describe(user) for u in users for user in u})
            result.left.append((_join(name, target), f"not fused: its output goes to {', '.join(consumers)}, "
                                                     f"not to one ReLU alone"))
    if not fusable:
        return
    for target, relu_nodes in fusable.items():
        module.get_submodule(target).__class__ = fastcnn_nn.BatchNorm2dReLU
        for relu in relu_nodes:
            relu.replace_all_uses_with(relu.args[0])
            graph.erase_node(relu)
            result.fused.append((_join(name, target), f"its output fed only {_describe(relu)}; that call was removed"))
    graph.lint()
    _set_forward(module, graph)
    result.rewritten.append((name, f"forward of this {type(module).__name__} replaced by its traced graph "
                                   f"without the fused ReLU calls"))


def _describe(node):
    if node.op == "call_module":
        return f"module '{node.target}'"
    if node.op == "output":
        return "the forward's result"
    return f"{getattr(node.target, '__name__', node.target)}()"


def _set_forward(module, graph):
    """Give ``module`` (this instance only) a ``forward`` generated from ``graph``. The module keeps
    its class, children, parameters, buffers, hooks and attributes, so ``state_dict`` keys,
    ``isinstance``, ``repr`` and ``copy.deepcopy`` (which rebinds the method) are unchanged."""
    code = graph.python_code(root_module="self")
    namespace = dict(code.globals)
    exec(compile(code.src, f"<fastcnn.convert: {type(module).__name__}.forward>", "exec"), namespace)
    module.forward = types.MethodType(namespace["forward"], module)


def _replace(model, result):
    fused = {name for name, _ in result.fused}
    # Stateless modules (max-pool, the loss) cannot tell their input's dtype: in a model that
    # holds float64 tensors they are left too.
    float64_model = not all(_kernel_dtypes(module) for module in model.modules())
    for name, module in model.named_modules():
        kind = type(module)
        if kind in REPLACEMENTS and (not _kernel_dtypes(module) or float64_model):
            result.left.append((name, "float64 tensors in the model: fastcnn's kernels take fp32, fp16 and bf16"))
        elif kind in REPLACEMENTS:
            module.__class__ = REPLACEMENTS[kind]
            result.replaced.append((name, f"torch.nn.{kind.__name__} -> fastcnn.nn.{REPLACEMENTS[kind].__name__}"))
        elif isinstance(module, FASTCNN_MODULES):
            if name in fused:
                result.replaced.append((name, "torch.nn.BatchNorm2d -> fastcnn.nn.BatchNorm2dReLU"))
        elif isinstance(module, torch.nn.SyncBatchNorm):
            result.left.append((name, "nn.SyncBatchNorm all-reduces its statistics across processes; "
                                      "fastcnn's batch norm does not, so it stays torch's"))
        elif isinstance(module, tuple(REPLACEMENTS)):
            result.left.append((name, f"{kind.__name__} subclasses torch.nn.{_torch_base(kind)} with code of "
                                      f"its own; left as it is"))


def _torch_base(kind):
    return next(base.__name__ for base in REPLACEMENTS if issubclass(kind, base))


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name
