"""``fastcnn.convert(model)``: swap fastcnn's modules into an existing PyTorch model.

Two passes over the module tree:

1. Fusion. A norm whose output feeds only an activation takes that activation as its epilogue
   and the activation disappears: ``BatchNorm2d``, ``GroupNorm``, ``LayerNorm``,
   ``InstanceNorm1d/2d/3d`` and torchvision's ``LayerNorm2d`` fuse any of fastcnn's activations
   (ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh; module,
   ``torch``/``F`` function or tensor method), kept on the module as its ``activation``
   (``BatchNorm2d`` becomes ``BatchNorm2dReLU`` or ``BatchNorm2dAct``). An activation fastcnn
   does not compute is reported as such. Inside an ``nn.Sequential`` a norm followed by an
   activation is fused by position (the activation's slot becomes ``nn.Identity``); every
   Sequential is done first. Then each other module's ``forward`` is traced with ``torch.fx``
   (plain Sequentials inlined, every other child a leaf) to find where each norm's output goes:
   - a ``BatchNorm2d`` whose output only feeds an add with another tensor (the residual),
     itself followed by nothing or by an activation alone, becomes one call ``bn(x, residual)``
     computing act(bn(x) + residual) (the end of torchvision's BasicBlock, Bottleneck, RegNet's
     ResBottleneckBlock, MobileNetV2's InvertedResidual); the add and activation calls go;
   - a norm whose output feeds only an activation fuses it, as in a Sequential;
   - ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``, ``F.max_pool2d``, ``F.dropout`` and the
     activation functions called there become fastcnn's functionals, and the adds no batch norm
     took become ``fastcnn.add`` (an in-place ``a += b`` only where nothing else reads ``a``).
   A module with something to change gets, on that instance only, a ``forward`` generated from
   the graph (its class, children, parameters, buffers and attributes stay as they are; hooks
   of an inlined Sequential no longer run, as its children are called directly). Torchvision's
   ResNet blocks call one ``nn.ReLU`` module twice (after ``bn1`` and after the residual add):
   the graph rewrite fuses each call into its own norm. A module that cannot be traced keeps
   its code, and its norm layers are replaced unfused.
2. Replacement. Modules of exactly the types in ``REPLACEMENTS`` (convolution, max- and
   average pools, the norms, dropout, the activations, the loss) and the ``LayerNorm2d`` classes of
   ``LAYER_NORM2D_CLASSES`` (torchvision's ConvNeXt norm) take the fastcnn subclass as their
   class, and torchvision's ``StochasticDepth`` (``STOCHASTIC_DEPTH_CLASSES``) fastcnn's.
   fastcnn's modules subclass torch's (``StochasticDepth`` keeps torchvision's attributes) and add
   no state, so parameters and buffers are the same tensors (an optimizer built before an
   in-place conversion keeps working) and ``state_dict`` keys are unchanged.

``nn.SyncBatchNorm`` is left as it is: its statistics are all-reduced across processes, which
fastcnn's batch norm does not do. Subclasses of the torch modules are left too: their own
``forward`` may do something the fastcnn module would not.
"""
import copy
import logging
import operator
import types
from dataclasses import dataclass, field

import torch
import torch.fx

from . import nn as fastcnn_nn
from .ops import activation as fastcnn_activation
from .ops.activation import resolve_activation
from .ops.add import add
from .ops.avg_pool import adaptive_avg_pool2d, avg_pool2d
from .ops.dropout import dropout
from .ops.max_pool import max_pool2d

logger = logging.getLogger("fastcnn.convert")

REPLACEMENTS = {
    torch.nn.Conv2d: fastcnn_nn.Conv2d,
    torch.nn.MaxPool2d: fastcnn_nn.MaxPool2d,
    torch.nn.AvgPool2d: fastcnn_nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: fastcnn_nn.AdaptiveAvgPool2d,
    torch.nn.BatchNorm2d: fastcnn_nn.BatchNorm2d,
    torch.nn.GroupNorm: fastcnn_nn.GroupNorm,
    torch.nn.LayerNorm: fastcnn_nn.LayerNorm,
    torch.nn.InstanceNorm1d: fastcnn_nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d: fastcnn_nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d: fastcnn_nn.InstanceNorm3d,
    torch.nn.Dropout: fastcnn_nn.Dropout,
    torch.nn.Dropout2d: fastcnn_nn.Dropout2d,
    torch.nn.CrossEntropyLoss: fastcnn_nn.CrossEntropyLoss,
    **{activation.__mro__[1]: activation for activation in fastcnn_nn.ACTIVATIONS},
}
FASTCNN_MODULES = tuple(REPLACEMENTS.values()) + (fastcnn_nn.BatchNorm2dAct, fastcnn_nn.LayerNorm2d,
                                                  fastcnn_nn.StochasticDepth)
F = torch.nn.functional
# Activations as functions and tensor methods: their kind, and the positional index and keyword
# of their parameter (slope, alpha, approximate) when they have one.
ACTIVATION_FUNCTIONS = {
    torch.relu: ("relu", None), torch.relu_: ("relu", None), F.relu: ("relu", None), F.relu6: ("relu6", None),
    F.leaky_relu: ("leaky_relu", (1, "negative_slope")), F.elu: ("elu", (1, "alpha")), F.silu: ("silu", None),
    F.gelu: ("gelu", (1, "approximate")), F.hardswish: ("hardswish", None), F.hardsigmoid: ("hardsigmoid", None),
    torch.sigmoid: ("sigmoid", None), F.sigmoid: ("sigmoid", None), torch.tanh: ("tanh", None),
    F.tanh: ("tanh", None),
}
ACTIVATION_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh",
                      "tanh_": "tanh"}
# Functions a traced forward calls that fastcnn computes, by the same signature: the pools,
# dropout and the out-of-place activation functions (fastcnn's functional of the same name).
FUNCTION_SWAPS = {F.avg_pool2d: avg_pool2d, F.adaptive_avg_pool2d: adaptive_avg_pool2d, F.max_pool2d: max_pool2d,
                  F.dropout: dropout,
                  **{function: getattr(fastcnn_activation, kind) for function, (kind, _) in ACTIVATION_FUNCTIONS.items()
                     if function is not torch.relu_}}
# A residual add: out-of-place (either operand the norm's output) or in place into the norm's output.
ADD_FUNCTIONS = (operator.add, torch.add)
INPLACE_ADDS = (operator.iadd,)
ADD_METHODS = ("add",)
INPLACE_ADD_METHODS = ("add_",)


@dataclass
class ConversionReport:
    """What ``convert`` did. Each entry is (qualified module name, detail)."""

    replaced: list = field(default_factory=list)  # (name, "torch.nn.Conv2d -> fastcnn.nn.Conv2d")
    fused: list = field(default_factory=list)  # (norm name, which activation and how it was found)
    left: list = field(default_factory=list)  # (name, why it was not replaced or not fused)
    rewritten: list = field(default_factory=list)  # (name, "forward rewritten as an fx graph")

    def __str__(self):
        lines = [f"fastcnn.convert: {len(self.replaced)} modules replaced, {len(self.fused)} norms fused with "
                 f"what follows them, {len(self.left)} left"]
        for title, entries in (("replaced", self.replaced), ("fused", self.fused), ("left", self.left),
                               ("rewritten", self.rewritten)):
            lines += [f"  {title:9s} {name or '(model)'}: {detail}" for name, detail in entries]
        return "\n".join(lines)


def convert(model, inplace=False, *, fuse_relu=True, report=False):
    """Return ``model`` with fastcnn's modules swapped in (a deep copy unless ``inplace``).

    ``fuse_relu``: fuse each norm whose output feeds only an activation (any of fastcnn's), and
    each BatchNorm2d whose output feeds only a residual add (and the activation after it); swap
    the pools', dropout's and the activations' functions in traced forwards.
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


# The LayerNorm2d classes known to compute F.layer_norm over dim 1 by permuting (torchvision's
# ConvNeXt norm and fastcnn.models' copy of it), named so that torchvision need not be imported.
LAYER_NORM2D_CLASSES = {("torchvision.models.convnext", "LayerNorm2d"), ("fastcnn.models", "LayerNorm2d")}


# torchvision's StochasticDepth (EfficientNet's, ConvNeXt's) and fastcnn.models' copy, named likewise.
STOCHASTIC_DEPTH_CLASSES = {("torchvision.ops.stochastic_depth", "StochasticDepth"),
                            ("fastcnn.models", "StochasticDepth")}


def _is_layer_norm2d(module):
    return (type(module).__module__, type(module).__name__) in LAYER_NORM2D_CLASSES


def _replacement(module):
    """The fastcnn class ``module`` becomes, or None."""
    if _is_layer_norm2d(module):
        return fastcnn_nn.LayerNorm2d
    if (type(module).__module__, type(module).__name__) in STOCHASTIC_DEPTH_CLASSES:
        return fastcnn_nn.StochasticDepth
    return REPLACEMENTS.get(type(module))


def _fusable_norm(module):
    """A norm of a type convert fuses activations into, holding no float64 tensors."""
    replacement = _replacement(module)
    return (replacement is not None and issubclass(replacement, fastcnn_nn._FusedActivation)
            and _kernel_dtypes(module))


def _fuse_into(norm, kind, parameter):
    """Give ``norm`` its fastcnn class with the activation (kind None: none) as its epilogue."""
    if type(norm) is torch.nn.BatchNorm2d:
        norm.__class__ = (fastcnn_nn.BatchNorm2d if kind is None else fastcnn_nn.BatchNorm2dReLU if kind == "relu"
                          else fastcnn_nn.BatchNorm2dAct)
    else:
        norm.__class__ = _replacement(norm)
    norm.activation = None if kind is None else (kind, parameter)


def _module_activation(module):
    """(kind, parameter) of an activation module fastcnn computes, or None."""
    try:
        kind, parameter = resolve_activation("convert", module)
    except ValueError:
        return None
    return (kind, parameter) if kind is not None else None


def _is_activation_like(module):
    """A torch activation module (torch.nn.modules.activation), supported or not: for the report."""
    return type(module).__module__ in ("torch.nn.modules.activation", fastcnn_nn.__name__)


def _kernel_dtypes(module):
    """False when ``module`` holds float64 tensors, which fastcnn's kernels do not take."""
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return not any(t.dtype == torch.float64 for t in tensors)


def _runs_sequential_forward(module):
    """A Sequential whose forward is Sequential's own (not a subclass's override): position
    decides what follows what, and a traced parent may inline it."""
    return isinstance(module, torch.nn.Sequential) and type(module).forward is torch.nn.Sequential.forward


def _traceable_parent(module):
    """A module with children and code of its own (torch.nn's containers and layers have none
    that convert could change)."""
    return (not _runs_sequential_forward(module) and next(module.children(), None) is not None
            and not type(module).__module__.startswith("torch.nn."))


def _fuse(model, result):
    holders = _call_counts(model)
    modules = list(model.named_modules())
    for name, module in modules:
        if _runs_sequential_forward(module):
            _fuse_sequential(name, module, holders, result)
    for name, module in modules:
        if _traceable_parent(module):
            _fuse_traced(name, module, holders, result)


def _fuse_sequential(name, sequential, holders, result):
    children = list(sequential.named_children())
    for (norm_name, norm), (activation_name, activation) in zip(children, children[1:]):
        if not _fusable_norm(norm) or not _is_activation_like(activation):
            continue
        qualified = _join(name, norm_name)
        spec = _module_activation(activation)
        if holders[id(norm)] > 1:
            result.left.append((qualified, f"not fused: the {type(norm).__name__} is shared with another part of the "
                                           f"model"))
        elif spec is None:
            result.left.append((qualified, _unsupported(norm, type(activation).__name__)))
        else:
            _fuse_into(norm, *spec)
            setattr(sequential, activation_name, torch.nn.Identity())
            result.fused.append((qualified, f"followed by {type(activation).__name__} {_join(name, activation_name)} "
                                            f"in a Sequential (that slot is now nn.Identity)"))


def _unsupported(norm, activation):
    return (f"not fused: activation kind not supported: {activation} after {type(norm).__name__} (fastcnn fuses "
            f"ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh)")


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own ``forward``: plain Sequentials are inlined (their children called
    in turn), every other submodule call is a leaf ``call_module`` node."""

    def is_leaf_module(self, module, qualified_name):
        return not _runs_sequential_forward(module)


def _activation(node, root):
    """(kind, parameter) when ``node`` applies an activation fastcnn computes to its first argument
    (parameters given as constants), else None."""
    if node.op == "call_module":
        return _module_activation(root.get_submodule(node.target))
    if node.op == "call_method":
        kind = ACTIVATION_METHODS.get(node.target)
        return None if kind is None else (kind, 0.0)
    if node.op != "call_function" or node.target not in ACTIVATION_FUNCTIONS:
        return None
    kind, argument = ACTIVATION_FUNCTIONS[node.target]
    value = None
    if argument is not None:
        index, keyword = argument
        value = node.args[index] if len(node.args) > index else node.kwargs.get(keyword)
        if isinstance(value, torch.fx.Node):
            return None
    if kind == "gelu":
        return ("gelu_tanh" if value == "tanh" else "gelu"), 0.0
    return resolve_activation("convert", kind if value is None else (kind, value))


def _fuse_traced(name, module, holders, result):
    """Fuse residual adds and activations into the norms of ``module``'s traced forward, and swap
    the functions fastcnn computes; rewrite its forward when anything changed."""
    try:
        graph = _trace_independent_of_mode(module)
    except Exception as error:  # fx raises many types for data-dependent control flow
        for child_name, child in module.named_children():
            if _fusable_norm(child):
                result.left.append((_join(name, child_name), f"not fused: the forward of {type(module).__name__} "
                                                             f"could not be traced ({type(error).__name__}: "
                                                             f"{str(error).splitlines()[0][:120]})"))
        return
    changed = _fuse_residuals(name, module, graph, holders, result)
    changed |= _fuse_activations(name, module, graph, holders, result)
    changed |= _swap_functions(name, graph, result)
    if not changed:
        return
    graph.lint()
    _set_forward(module, graph)
    result.rewritten.append((name, f"forward of this {type(module).__name__} replaced by its traced graph "
                                   f"with the fused and swapped calls"))


class _DependsOnMode(Exception):
    """The traced forward differs between training and eval (it reads ``self.training``)."""


def _trace_independent_of_mode(module):
    """``module``'s forward traced; a graph generated from it would freeze any branch on
    ``self.training`` at its value now, so the forward is traced in both modes (the module's
    own flag; its children are leaves) and refused when the two differ."""
    mode = module.training
    try:
        graph = _ChildrenAsLeaves().trace(module)
        module.training = not mode
        other = _ChildrenAsLeaves().trace(module)
    finally:
        module.training = mode
    if graph.python_code(root_module="self").src != other.python_code(root_module="self").src:
        raise _DependsOnMode("its forward differs between training and eval")
    return graph


def _norm_calls(module, graph):
    """{target: [call nodes]} of the fusable norms ``graph`` calls."""
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module" and _fusable_norm(module.get_submodule(node.target)):
            calls.setdefault(node.target, []).append(node)
    return calls


def _residual_of(norm_node):
    """(add node, the other operand) when ``norm_node``'s output feeds only an add of one other
    tensor (out of place, or in place into the norm's output), else None."""
    users = list(norm_node.users)
    if len(users) != 1 or len(users[0].args) != 2 or users[0].kwargs:
        return None
    add = users[0]
    function = add.op == "call_function"
    out_of_place = (function and add.target in ADD_FUNCTIONS) or (add.op == "call_method"
                                                                   and add.target in ADD_METHODS)
    in_place = (function and add.target in INPLACE_ADDS) or (add.op == "call_method"
                                                             and add.target in INPLACE_ADD_METHODS)
    first, second = add.args
    if (out_of_place or in_place) and first is norm_node and isinstance(second, torch.fx.Node) \
            and second is not norm_node:
        return add, second
    if out_of_place and second is norm_node and isinstance(first, torch.fx.Node):
        return add, first
    return None


def _fuse_residuals(name, module, graph, holders, result):
    """bn → add(residual) [→ activation] becomes one ``bn(x, residual)`` call."""
    changed = False
    for target, calls in _norm_calls(module, graph).items():
        norm = module.get_submodule(target)
        if type(norm) is not torch.nn.BatchNorm2d or len(calls) != 1 or holders[id(norm)] > 1:
            continue
        found = _residual_of(calls[0])
        if found is None:
            continue
        add, residual = found
        last, spec = add, (None, 0.0)
        after = list(add.users)
        if len(after) == 1 and after[0].args and after[0].args[0] is add and _activation(after[0], module):
            last, spec = after[0], _activation(after[0], module)
        with graph.inserting_before(add):
            fused = graph.call_module(target, (calls[0].args[0], residual))
        last.replace_all_uses_with(fused)
        for node in ([last, add] if last is not add else [add]) + [calls[0]]:
            graph.erase_node(node)
        _fuse_into(norm, *spec)
        then = "" if last is add else f" then {_describe(last)}"
        result.fused.append((_join(name, target), f"its output fed only {_describe(add)} with a residual{then}: "
                                                  f"now one call with the residual"))
        changed = True
    return changed


def _fuse_activations(name, module, graph, holders, result):
    """norm → activation: the activation call goes, the norm takes it as its epilogue."""
    fusable = {}
    for target, calls in _norm_calls(module, graph).items():
        norm = module.get_submodule(target)
        users = [list(node.users) for node in calls]
        sole = [u[0] if len(u) == 1 and u[0].args and u[0].args[0] is node else None for u, node in zip(users, calls)]
        specs = [None if user is None else _activation(user, module) for user in sole]
        if holders[id(norm)] > 1:
            result.left.append((_join(name, target), f"not fused: the {type(norm).__name__} is shared with another "
                                                     f"part of the model"))
        elif all(spec is not None for spec in specs) and len(set(specs)) == 1:
            fusable[target] = (specs[0], sole)
        elif all(user is not None and (spec is not None or _is_activation_like_node(user, module))
                 for user, spec in zip(sole, specs)):
            result.left.append((_join(name, target), _unsupported(norm, _describe(sole[0]))))
        elif all(user.op == "call_module" and len(user.args) == 2 and user.args[1] is node
                 for u, node in zip(users, calls) for user in u):
            adders = sorted({_describe(user) for u in users for user in u})
            result.left.append((_join(name, target), f"its output is the residual that {', '.join(adders)} adds in "
                                                     f"its fused call (one norm of an add fuses it)"))
        else:
            consumers = sorted({_describe(user) for u in users for user in u})
            result.left.append((_join(name, target), f"not fused: its output goes to {', '.join(consumers)}, "
                                                     f"not to one activation alone"))
    for target, (spec, activation_nodes) in fusable.items():
        _fuse_into(module.get_submodule(target), *spec)
        for node in activation_nodes:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            result.fused.append((_join(name, target), f"its output fed only {_describe(node)}; that call was removed"))
    return bool(fusable)


def _swappable_add(node):
    """Whether ``node`` adds two values (``a + b``, ``torch.add(a, b)``, ``a.add(b)``; ``a += b`` and
    ``a.add_(b)`` only where nothing else reads ``a``, so that computing it out of place changes
    nothing) and may become ``fastcnn.add``, which runs torch's add for what its kernel does not
    take (numbers, broadcasting)."""
    if len(node.args) != 2 or node.kwargs or not all(isinstance(arg, torch.fx.Node) for arg in node.args):
        return False
    function = node.op == "call_function"
    if (function and node.target in ADD_FUNCTIONS) or (node.op == "call_method" and node.target in ADD_METHODS):
        return True
    in_place = (function and node.target in INPLACE_ADDS) or (node.op == "call_method"
                                                              and node.target in INPLACE_ADD_METHODS)
    return in_place and len(node.args[0].users) == 1


def _swap_functions(name, graph, result):
    """Calls of the functions in FUNCTION_SWAPS become calls of fastcnn's (same arguments), and the
    adds that no batch norm took become ``fastcnn.add``."""
    changed = False
    for node in graph.nodes:
        if node.op == "call_function" and node.target in FUNCTION_SWAPS:
            swapped = FUNCTION_SWAPS[node.target]
        elif _swappable_add(node):
            swapped = add
        else:
            continue
        result.replaced.append((_join(name, node.name), f"{_describe(node)} in the forward -> "
                                                        f"fastcnn.{swapped.__name__}()"))
        node.op, node.target = "call_function", swapped
        changed = True
    return changed


def _is_activation_like_node(node, root):
    return node.op == "call_module" and _is_activation_like(root.get_submodule(node.target))


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
    # Stateless modules (max-pool, the loss, activations, dropout) cannot tell their input's dtype:
    # in a model that holds float64 tensors they are left too.
    float64_model = not all(_kernel_dtypes(module) for module in model.modules())
    for name, module in model.named_modules():
        kind = type(module)
        replacement = _replacement(module)
        if replacement is not None and (not _kernel_dtypes(module) or float64_model):
            result.left.append((name, "float64 tensors in the model: fastcnn's kernels take fp32, fp16 and bf16"))
        elif replacement is not None:
            module.__class__ = replacement
            origin = "torch.nn" if kind.__module__.startswith("torch.nn") else kind.__module__
            result.replaced.append((name, f"{origin}.{kind.__name__} -> fastcnn.nn.{replacement.__name__}"))
        elif isinstance(module, FASTCNN_MODULES):
            if name in fused:
                activation = getattr(module, "activation", None)
                residual = any(entry == name and "residual" in how for entry, how in result.fused)
                detail = (" + residual" if residual else "") + (f" + {activation[0]}" if activation else "")
                result.replaced.append((name, f"torch.nn.{_torch_base(kind)} -> fastcnn.nn.{kind.__name__}{detail}"))
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
