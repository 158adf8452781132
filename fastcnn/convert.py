"""``fastcnn.convert(model)``: swap fastcnn's modules into an existing PyTorch model.

Two passes over the module tree:

1. Fusion. A norm (or a ``Linear``: the GEMM's epilogue, ConvNeXt's Linear → GELU, a classifier
   head's activation) whose output feeds only an activation takes that activation as its
   epilogue and the activation disappears: ``BatchNorm2d``, ``GroupNorm``, ``LayerNorm``,
   ``InstanceNorm1d/2d/3d`` and torchvision's ``LayerNorm2d`` fuse any of fastcnn's activations
   (ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh; module,
   ``torch``/``F`` function or tensor method), kept on the module as its ``activation``
   (``BatchNorm2d`` becomes ``BatchNorm2dReLU`` or ``BatchNorm2dAct``), and PReLU modules, whose
   slopes the norm reads where they are (the PReLU keeps its place and state_dict keys). An
   activation fastcnn does not compute is reported as such. Inside an ``nn.Sequential`` a norm
   followed by an activation is fused by position (the activation's slot becomes ``nn.Identity``,
   a PReLU's ``fastcnn.nn.FusedPReLU``, which keeps its slopes and passes its input on); every
   Sequential is done first. Then each other module's ``forward`` is traced with ``torch.fx``
   (plain Sequentials inlined, every other child a leaf) to find where each norm's output goes:
   - a ``BatchNorm2d`` whose output only feeds an add with another tensor (the residual),
     itself followed by nothing or by an activation alone, becomes one call ``bn(x, residual)``
     computing act(bn(x) + residual) (the end of torchvision's BasicBlock, Bottleneck, RegNet's
     ResBottleneckBlock, MobileNetV2's InvertedResidual); the add and activation calls go;
   - a norm whose output feeds only an activation fuses it, as in a Sequential;
   - a plain ``BatchNorm2d`` whose output is only such a call's residual (a ResNet downsample's)
     runs inside that call's pass, ``bn(x, r_input, residual_norm=bn_r)`` computing
     act(bn(x) + bn_r(r_input)) (``fastcnn.batch_norm_add_batch_norm``): bn_r's output is never
     stored (reported as fused "inside module ...'s pass");
   - a ``BatchNorm2d`` (with the activation it took, if any) whose output feeds only a
     ``MaxPool2d`` (a ResNet stem) runs in the pool's prologue:
     ``fastcnn.nn.batch_norm_into_max_pool2d(x, bn, pool)`` (``fastcnn.batch_norm_max_pool2d``);
   - then a ``BatchNorm2d`` (with the activation it took, if any) whose output feeds only a
     ``Conv2d`` (zero padding, no hooks; past the ``nn.Identity`` slots a Sequential's fusion
     left) runs in that convolution's prologue: the two calls become one
     ``fastcnn.nn.batch_norm_into_conv2d(x, bn, conv)`` (``fastcnn.batch_norm_conv2d``), so
     act(bn(x)) is never stored (the interior of torchvision's BasicBlock and Bottleneck, VGG's
     consecutive convs, MobileNetV2's expand → depthwise → project). The report lists each as
     fused "into module ..." and says why any other batch norm kept its own pass;
   - then each convolution (plain, or one that took a batch norm) whose output feeds only a
     ``BatchNorm2d`` call (alone, with a residual, or into the next convolution) also emits its
     output's moments (``fastcnn.nn.conv2d_for_batch_norm``, kernels/moments.py), which the batch
     norm takes as ``moments=``: its training statistics come without a pass over its input
     (reported as "statistics from the epilogue of module ...");
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
   average pools, the norms, dropout, the activations, the loss) and torchvision's ConvNeXt
   ``LayerNorm2d`` (an ``nn.LayerNorm`` subclass of that name) take the fastcnn subclass as their
   class, and torchvision's ``StochasticDepth`` (a module of that name with ``p`` and ``mode``)
   and ``SqueezeExcitation`` (that name, its five submodules, a scale activation fastcnn
   computes: its gate and the scale's activation become one ``fastcnn.squeeze_excitation_gate``)
   fastcnn's.
   fastcnn's modules subclass torch's (``StochasticDepth`` and ``SqueezeExcitation`` keep
   torchvision's attributes and submodules) and add
   no state, so parameters and buffers are the same tensors (an optimizer built before an
   in-place conversion keeps working) and ``state_dict`` keys are unchanged.

``nn.SyncBatchNorm`` becomes ``fastcnn.nn.SyncBatchNorm`` (statistics across processes, one
all-gather forward and one all-reduce backward), and fuses an activation and a residual add as
``BatchNorm2d`` does, and takes its statistics from the moments of the convolution before it;
it keeps its own pass (no convolution's or max-pool's prologue, no other norm's pass), as its
gradient sums are all-reduced between its backward's passes. Subclasses of the torch modules are
left: their own ``forward`` may do something the fastcnn module would not.
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
from .ops.activation import DERIVATIVE_FROM_OUTPUT, resolve_activation
from .ops.add import add
from .ops.avg_pool import adaptive_avg_pool2d, avg_pool2d
from .ops.dropout import dropout
from .ops.linear import linear
from .ops.max_pool import max_pool2d
from .ops.softmax import log_softmax, softmax

logger = logging.getLogger("fastcnn.convert")

REPLACEMENTS = {
    torch.nn.Conv2d: fastcnn_nn.Conv2d,
    torch.nn.Linear: fastcnn_nn.Linear,
    torch.nn.MaxPool2d: fastcnn_nn.MaxPool2d,
    torch.nn.AvgPool2d: fastcnn_nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: fastcnn_nn.AdaptiveAvgPool2d,
    torch.nn.BatchNorm2d: fastcnn_nn.BatchNorm2d,
    torch.nn.SyncBatchNorm: fastcnn_nn.SyncBatchNorm,
    torch.nn.GroupNorm: fastcnn_nn.GroupNorm,
    torch.nn.LayerNorm: fastcnn_nn.LayerNorm,
    torch.nn.InstanceNorm1d: fastcnn_nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d: fastcnn_nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d: fastcnn_nn.InstanceNorm3d,
    torch.nn.Dropout: fastcnn_nn.Dropout,
    torch.nn.Dropout2d: fastcnn_nn.Dropout2d,
    torch.nn.CrossEntropyLoss: fastcnn_nn.CrossEntropyLoss,
    torch.nn.MSELoss: fastcnn_nn.MSELoss,
    torch.nn.L1Loss: fastcnn_nn.L1Loss,
    torch.nn.SmoothL1Loss: fastcnn_nn.SmoothL1Loss,
    torch.nn.HuberLoss: fastcnn_nn.HuberLoss,
    torch.nn.BCELoss: fastcnn_nn.BCELoss,
    torch.nn.BCEWithLogitsLoss: fastcnn_nn.BCEWithLogitsLoss,
    torch.nn.KLDivLoss: fastcnn_nn.KLDivLoss,
    torch.nn.NLLLoss: fastcnn_nn.NLLLoss,
    torch.nn.Softmax: fastcnn_nn.Softmax,
    torch.nn.LogSoftmax: fastcnn_nn.LogSoftmax,
    torch.nn.PReLU: fastcnn_nn.PReLU,
    **{activation.__mro__[1]: activation for activation in fastcnn_nn.ACTIVATIONS},
}
FASTCNN_MODULES = tuple(REPLACEMENTS.values()) + (fastcnn_nn.BatchNorm2dAct, fastcnn_nn.LayerNorm2d,
                                                  fastcnn_nn.StochasticDepth, fastcnn_nn.SqueezeExcitation,
                                                  fastcnn_nn.FusedPReLU)
# The torch batch norms whose output convert fuses a residual add into, and their statistics a
# convolution's moments: each becomes its fastcnn class.
TORCH_BATCH_NORMS = (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)
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
# dropout, linear and the out-of-place activation functions (fastcnn's functional of the same name).
FUNCTION_SWAPS = {F.avg_pool2d: avg_pool2d, F.adaptive_avg_pool2d: adaptive_avg_pool2d, F.max_pool2d: max_pool2d,
                  F.dropout: dropout, F.linear: linear, F.softmax: softmax, F.log_softmax: log_softmax,
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
        fused = len({name for name, _ in self.fused})  # a norm may fuse several things (an activation, a conv)
        lines = [f"fastcnn.convert: {len(self.replaced)} modules replaced, {fused} norms fused with "
                 f"what precedes or follows them, {len(self.left)} left"]
        for title, entries in (("replaced", self.replaced), ("fused", self.fused), ("left", self.left),
                               ("rewritten", self.rewritten)):
            lines += [f"  {title:9s} {name or '(model)'}: {detail}" for name, detail in entries]
        return "\n".join(lines)


def convert(model, inplace=False, *, fuse_relu=True, batch_norm_in_conv=True, report=False):
    """Return ``model`` with fastcnn's modules swapped in (a deep copy unless ``inplace``).

    ``fuse_relu``: fuse each norm whose output feeds only an activation (any of fastcnn's), and
    each BatchNorm2d whose output feeds only a residual add (and the activation after it); swap
    the pools', dropout's and the activations' functions in traced forwards.
    ``batch_norm_in_conv``: run each batch norm (and the activation it fused) whose output feeds
    only a convolution or a max-pool in that kernel's prologue, each convolution that feeds a
    batch norm with its moments epilogue, and a batch norm whose output is another's residual
    inside that one's pass (with ``fuse_relu``; off, each keeps its own pass, for comparison).
    ``report``: also return a :class:`ConversionReport` (``(model, report)``). The report is
    always logged at INFO level on the ``fastcnn.convert`` logger.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fastcnn.convert: argument 'model' must be a torch.nn.Module, not {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    result = ConversionReport()
    if fuse_relu:
        _fuse(model, result, batch_norm_in_conv)
    _replace(model, result)
    logger.info("%s", result)
    return (model, result) if report else model


def _call_counts(model):
    """How many places in the module tree hold each module object (shared modules count twice)."""
    counts = {}
    for _, module in model.named_modules(remove_duplicate=False):
        counts[id(module)] = counts.get(id(module), 0) + 1
    return counts


def _is_layer_norm2d(module):
    """torchvision's ConvNeXt ``LayerNorm2d`` or a copy of it (timm's too): an ``nn.LayerNorm``
    subclass of that name, which normalises (N, C, H, W) over C by permuting to channels-last and
    back. Recognised by what it is, so torchvision need not be imported."""
    return (isinstance(module, torch.nn.LayerNorm) and type(module).__name__ == "LayerNorm2d"
            and not isinstance(module, fastcnn_nn.LayerNorm2d))


def _is_stochastic_depth(module):
    """torchvision's ``StochasticDepth`` (EfficientNet's, ConvNeXt's) or a copy: a module of that
    name with its probability ``p`` and its ``mode``, "row" or "batch"."""
    return (type(module).__name__ == "StochasticDepth" and not isinstance(module, fastcnn_nn.StochasticDepth)
            and isinstance(getattr(module, "p", None), (int, float))
            and getattr(module, "mode", None) in ("row", "batch"))


def _is_squeeze_excitation(module):
    """torchvision's ``SqueezeExcitation`` or a copy (tests/replicas.py's): a module of that name
    with the five submodules its forward chains, the last an activation fastcnn computes."""
    parts = ("avgpool", "fc1", "activation", "fc2", "scale_activation")
    return (type(module).__name__ == "SqueezeExcitation" and not isinstance(module, fastcnn_nn.SqueezeExcitation)
            and all(isinstance(getattr(module, part, None), torch.nn.Module) for part in parts)
            and _module_activation(module.scale_activation) not in (None, ("prelu", module.scale_activation)))


def _replacement(module):
    """The fastcnn class ``module`` becomes, or None."""
    if _is_layer_norm2d(module):
        return fastcnn_nn.LayerNorm2d
    if _is_stochastic_depth(module):
        return fastcnn_nn.StochasticDepth
    if _is_squeeze_excitation(module):
        return fastcnn_nn.SqueezeExcitation
    return REPLACEMENTS.get(type(module))


def _fusable_norm(module):
    """A norm of a type convert fuses activations into, holding no float64 tensors."""
    replacement = _replacement(module)
    return (replacement is not None and issubclass(replacement, fastcnn_nn._FusedActivation)
            and _kernel_dtypes(module))


def fuse_activation_into(norm, kind, parameter):
    """Give ``norm`` its fastcnn class with the activation (kind None: none) as its epilogue (in
    place: its parameters and buffers stay; the benchmark cases build their fused units this way).
    Kind "prelu": ``parameter`` is the PReLU module, whose slopes ``norm`` reads where it is."""
    if type(norm) is torch.nn.BatchNorm2d:
        norm.__class__ = (fastcnn_nn.BatchNorm2d if kind is None else fastcnn_nn.BatchNorm2dReLU if kind == "relu"
                          else fastcnn_nn.BatchNorm2dAct)
    else:
        norm.__class__ = _replacement(norm)
    if kind == "prelu":
        norm.borrow_prelu(parameter)
    else:
        norm.activation = None if kind is None else (kind, parameter)


def _module_activation(module):
    """(kind, parameter) of an activation module fastcnn computes, or None; ("prelu", the module)
    for a PReLU (its slopes are its parameters: the fused norm or Linear reads them where they are)."""
    if type(module) in (torch.nn.PReLU, fastcnn_nn.PReLU) and module.weight.dim() == 1:
        return "prelu", module
    try:
        kind, parameter = resolve_activation("convert", module)
    except ValueError:
        return None
    return (kind, parameter) if kind is not None else None


def _is_activation_like(module):
    """A torch activation module (torch.nn.modules.activation), supported or not: for the report."""
    return type(module).__module__ == "torch.nn.modules.activation" or isinstance(module, fastcnn_nn.ACTIVATIONS)


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


def _fuse(model, result, batch_norm_in_conv):
    holders = _call_counts(model)
    modules = list(model.named_modules())
    owners = _code_owners(model)
    traces = {}
    for name, module in modules:
        if _runs_sequential_forward(module):
            _fuse_sequential(name, module, holders, owners, traces, result)
    for name, module in modules:
        if _traceable_parent(module):
            _fuse_traced(name, module, holders, result, batch_norm_in_conv)


def _has_hooks(module):
    """Whether ``module`` has forward, forward-pre or backward hooks of its own: fusing it (or
    calling an inlined Sequential's children directly) would change what they see or skip them."""
    return any(getattr(module, hooks, None) for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                                          "_backward_pre_hooks"))


# Modules with no forward of their own: code that reaches into them is their parent's.
CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict)


def _code_owners(model):
    """{id(module): the modules whose forward can call it directly}, for every plain Sequential:
    walking up through the plain Sequentials without hooks (which traced parents inline) and
    containers to the first module with code of its own. None marks the model itself: a plain
    Sequential at the top is only run whole by its own forward (what the caller does with it
    beyond that is not the model's code). A container at the top has no forward: no owner is
    known, so nothing in it is fused by position."""
    parents = {}
    for parent in model.modules():
        for child in parent.children():
            parents.setdefault(id(child), []).append(parent)

    def owners_of(module, seen):
        if module is model:
            return {None} if _runs_sequential_forward(module) else {"unknown"}
        found = set()
        for parent in parents.get(id(module), []):
            if id(parent) in seen:
                continue
            if (_runs_sequential_forward(parent) and not _has_hooks(parent)) or isinstance(parent, CONTAINERS):
                found |= owners_of(parent, seen | {id(parent)})
            else:
                found.add(parent)
        return found

    return {id(module): owners_of(module, {id(module)}) for module in model.modules()
            if _runs_sequential_forward(module)}


def _traced(owner, traces):
    """``owner``'s forward traced (cached in ``traces``), or the exception that stopped it."""
    if id(owner) not in traces:
        try:
            traces[id(owner)] = _trace_independent_of_mode(owner)
        except Exception as error:  # fx raises many types for data-dependent control flow
            traces[id(owner)] = error
    return traces[id(owner)]


def _position_is_dataflow(norm, activation, owners, traces):
    """None when fusing ``norm`` with the ``activation`` in the next slot of their Sequential gives
    the original's values however the owners' code reaches them, else why not: in each owner's
    traced forward (plain Sequentials inlined) every call of the norm must feed only a call of
    that activation, and every call of the activation must take a call of the norm, so that no
    slice, loop or tap of the Sequential sees the norm's output without the activation (or the
    activation applied to anything else)."""
    for owner in owners:
        if owner is None:
            continue
        if owner == "unknown":
            return "the Sequential sits in a container no forward of the model calls"
        graph = _traced(owner, traces)
        if isinstance(graph, Exception):
            return (f"the forward of {type(owner).__name__} that runs this Sequential could not be traced "
                    f"({type(graph).__name__}), so what it reaches cannot be checked")
        calls = [node for node in graph.nodes if node.op == "call_module"]
        norm_calls = [node for node in calls if owner.get_submodule(node.target) is norm]
        activation_calls = [node for node in calls if owner.get_submodule(node.target) is activation]
        for node in norm_calls:
            users = list(node.users)
            if len(users) != 1 or users[0] not in activation_calls:
                consumers = ", ".join(sorted({_describe(user) for user in users})) or "nothing"
                return (f"{type(owner).__name__}'s forward sends the norm's output to {consumers} (a slice, loop or "
                        f"tap of the Sequential), not to the activation alone")
        for node in activation_calls:
            if node.args[:1] and node.args[0] not in norm_calls:
                return f"{type(owner).__name__}'s forward applies the activation to something other than the norm"
    return None


def _fuse_sequential(name, sequential, holders, owners, traces, result):
    children = list(sequential.named_children())
    for (norm_name, norm), (activation_name, activation) in zip(children, children[1:]):
        if not _fusable_norm(norm) or not _is_activation_like(activation):
            continue
        qualified = _join(name, norm_name)
        spec = _module_activation(activation)
        why = None
        if holders[id(norm)] > 1:
            why = f"the {type(norm).__name__} is shared with another part of the model"
        elif holders[id(activation)] > 1:
            why = f"the {type(activation).__name__} is shared with another part of the model"
        elif _has_hooks(norm) or _has_hooks(activation):
            why = (f"{'the norm' if _has_hooks(norm) else 'the activation'} has hooks, which would see the fused "
                   f"output or not run")
        elif spec is not None:
            why = _position_is_dataflow(norm, activation, owners[id(sequential)], traces)
        if why is not None:
            result.left.append((qualified, f"not fused: {why}"))
        elif spec is None:
            result.left.append((qualified, _unsupported(norm, type(activation).__name__)))
        elif spec[0] == "prelu":  # the slot keeps the PReLU (its slopes, its state_dict keys), passing through
            fuse_activation_into(norm, *spec)
            activation.__class__ = fastcnn_nn.FusedPReLU
            result.fused.append((qualified, f"followed by PReLU {_join(name, activation_name)} in a Sequential (that "
                                            f"slot is now fastcnn.nn.FusedPReLU: its slopes, read by the norm)"))
        else:
            fuse_activation_into(norm, *spec)
            setattr(sequential, activation_name, torch.nn.Identity())
            result.fused.append((qualified, f"followed by {type(activation).__name__} {_join(name, activation_name)} "
                                            f"in a Sequential (that slot is now nn.Identity)"))


def _unsupported(norm, activation):
    return (f"not fused: activation kind not supported: {activation} after {type(norm).__name__} (fastcnn fuses "
            f"ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, Hardsigmoid, Sigmoid, Tanh)")


class _ChildrenAsLeaves(torch.fx.Tracer):
    """Traces one module's own ``forward``: plain Sequentials without hooks are inlined (their
    children called in turn), every other submodule call is a leaf ``call_module`` node (so a
    generated forward still runs a hooked Sequential's hooks)."""

    def is_leaf_module(self, module, qualified_name):
        return not _runs_sequential_forward(module) or _has_hooks(module)


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


def _fuse_traced(name, module, holders, result, batch_norm_in_conv):
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
    if batch_norm_in_conv:
        changed |= _fuse_residual_norms(name, module, graph, holders, result)
    if batch_norm_in_conv:
        changed |= _fuse_into_max_pools(name, module, graph, holders, result)
        changed |= _fuse_into_convolutions(name, module, graph, holders, result)
        changed |= _statistics_from_convolutions(name, module, graph, holders, result)
    changed |= _fuse_layer_scales(name, module, graph, holders, result)
    changed |= _swap_functions(name, module, graph, result)
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
        if type(norm) not in TORCH_BATCH_NORMS or len(calls) != 1 or holders[id(norm)] > 1 or _has_hooks(norm):
            continue
        found = _residual_of(calls[0])
        if found is None:
            continue
        add, residual = found
        last, spec = add, (None, 0.0)
        after = list(add.users)
        if (len(after) == 1 and after[0].args and after[0].args[0] is add and _activation(after[0], module)
                and not _hooked_call(after[0], module)):
            last, spec = after[0], _activation(after[0], module)
        with graph.inserting_before(add):
            fused = graph.call_module(target, (calls[0].args[0], residual))
        last.replace_all_uses_with(fused)
        for node in ([last, add] if last is not add else [add]) + [calls[0]]:
            graph.erase_node(node)
        fuse_activation_into(norm, *spec)
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
        elif _has_hooks(norm) or any(user is not None and _hooked_call(user, module) for user in sole):
            hooked = "the norm" if _has_hooks(norm) else "the activation"
            result.left.append((_join(name, target), f"not fused: {hooked} has hooks, which would see the fused output "
                                                     f"or not run"))
        elif all(spec is not None for spec in specs) and len(set(specs)) == 1:
            fusable[target] = (specs[0], sole)
        elif all(user is not None and (spec is not None or _is_activation_like_node(user, module))
                 for user, spec in zip(sole, specs)):
            result.left.append((_join(name, target), _unsupported(norm, _describe(sole[0]))))
        elif isinstance(norm, torch.nn.Linear):
            continue  # a Linear followed by no activation is no fusion missed
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
        fuse_activation_into(module.get_submodule(target), *spec)
        for node in activation_nodes:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            result.fused.append((_join(name, target), f"its output fed only {_describe(node)}; that call was removed"))
    return bool(fusable)


CONVOLUTIONS = (torch.nn.Conv2d, fastcnn_nn.Conv2d)
# Batch norms that run inside a convolution's or a max-pool's kernel, or another's pass.
BATCH_NORMS = (torch.nn.BatchNorm2d, fastcnn_nn.BatchNorm2d, fastcnn_nn.BatchNorm2dAct, fastcnn_nn.BatchNorm2dReLU)
# A SyncBatchNorm all-reduces its gradient sums between its backward's passes: it keeps its own
# pass (with its activation and residual), and takes its statistics from its convolution's moments.
SYNC_BATCH_NORMS = (torch.nn.SyncBatchNorm, fastcnn_nn.SyncBatchNorm)


def _through_identities(node, root):
    """The one node that consumes ``node``'s value past any ``nn.Identity`` or ``FusedPReLU``
    calls (the slots a Sequential's fused activations left), with those nodes passed; (None, [])
    when the value goes anywhere else or to more than one place."""
    passed = []
    while len(node.users) == 1:
        (user,) = node.users
        if not (user.op == "call_module"
                and type(root.get_submodule(user.target)) in (torch.nn.Identity, fastcnn_nn.FusedPReLU)
                and not _has_hooks(root.get_submodule(user.target))):
            return user, passed
        passed.append(user)
        node = user
    return None, passed


def _fuse_residual_norms(name, module, graph, holders, result):
    """bn(x, residual) whose residual is a plain batch norm's output that goes nowhere else (a
    ResNet downsample's): that batch norm runs inside the first one's pass, act(bn(x) +
    bn_r(r)) (``BatchNorm2d.forward``'s ``residual_norm``), so bn_r(r) is never stored and its
    backward sums come from the pass that computes the gradient of both outputs."""
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 2 or node.kwargs:
            continue
        norm = module.get_submodule(node.target)
        residual = node.args[1]
        if (type(norm) not in BATCH_NORMS or getattr(norm, "activation", None) not in (None,) and
                norm.activation[0] not in DERIVATIVE_FROM_OUTPUT or not isinstance(residual, torch.fx.Node)
                or residual.op != "call_module" or len(residual.users) != 1 or len(residual.args) != 1
                or residual.kwargs):
            continue
        residual_norm = module.get_submodule(residual.target)
        if (type(residual_norm) not in (torch.nn.BatchNorm2d, fastcnn_nn.BatchNorm2d)
                or getattr(residual_norm, "activation", None) is not None or holders[id(residual_norm)] > 1
                or _has_hooks(residual_norm) or not _kernel_dtypes(residual_norm)
                or sum(other.op == "call_module" and other.target == residual.target for other in graph.nodes) != 1):
            continue
        if type(residual_norm) is torch.nn.BatchNorm2d:
            fuse_activation_into(residual_norm, None, 0.0)
        with graph.inserting_before(node):
            attribute = graph.get_attr(residual.target)
        node.args = (node.args[0], residual.args[0])
        node.kwargs = {"residual_norm": attribute}
        graph.erase_node(residual)
        qualified = _join(name, residual.target)
        result.left[:] = [(entry, why) for entry, why in result.left if entry != qualified]
        result.fused.append((qualified, f"inside module '{_join(name, node.target)}''s pass: normalised as the "
                                        f"residual it adds, bn(x) + bn(r) in one pass (bn(r) is never stored)"))
        changed = True
    return changed


MAX_POOLS = (torch.nn.MaxPool2d, fastcnn_nn.MaxPool2d)


def _fuse_into_max_pools(name, module, graph, holders, result):
    """bn [→ activation, already its epilogue] → max-pool (a ResNet stem) becomes one
    ``batch_norm_into_max_pool2d`` call: the batch norm runs in the pool's prologue and its
    backward sums in the pool's backward (ops/max_pool.py), so act(bn(x)) is never stored. Norms
    that feed anything else are left to the fusions after this one, which report them."""
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        norm = module.get_submodule(node.target)
        if (type(norm) not in BATCH_NORMS or not _kernel_dtypes(norm) or holders[id(norm)] > 1 or _has_hooks(norm)
                or getattr(norm, "fuses_slopes", False) or len(node.args) != 1 or node.kwargs
                or sum(other.op == "call_module" and other.target == node.target for other in graph.nodes) != 1):
            continue
        user, identities = _through_identities(node, module)
        pool = module.get_submodule(user.target) if user is not None and user.op == "call_module" else None
        if (type(pool) not in MAX_POOLS or len(user.args) != 1 or user.kwargs or _has_hooks(pool)
                or pool.return_indices):
            continue
        if type(norm) is torch.nn.BatchNorm2d:
            fuse_activation_into(norm, None, 0.0)
        with graph.inserting_before(user):
            fused = graph.call_function(fastcnn_nn.batch_norm_into_max_pool2d,
                                        (node.args[0], graph.get_attr(node.target), graph.get_attr(user.target)))
        user.replace_all_uses_with(fused)
        for erased in [user, *reversed(identities), node]:
            graph.erase_node(erased)
        activation = "" if norm.activation is None else f" and its {norm.activation[0]}"
        result.fused.append((_join(name, node.target), f"into module '{_join(name, user.target)}': the batch "
                                                        f"norm{activation} run in the max-pool's prologue (act(bn(x)) "
                                                        f"is never stored)"))
        changed = True
    return changed


def _fuse_into_convolutions(name, module, graph, holders, result):
    """bn [→ activation, already its epilogue] → conv becomes one ``batch_norm_into_conv2d`` call:
    the batch norm runs in the convolution's prologue (ops/conv2d.py), so act(bn(x)) is never
    stored. Batch norms that end a residual block keep their own fused pass (bn + add + act)."""
    changed = False
    calls_of = {}
    for node in graph.nodes:  # the batch norms, whether or not an activation fused into them already
        if node.op == "call_module":
            norm = module.get_submodule(node.target)
            if type(norm) in BATCH_NORMS and _kernel_dtypes(norm):
                calls_of.setdefault(node.target, []).append(node)
    for target, calls in calls_of.items():
        norm = module.get_submodule(target)
        qualified = _join(name, target)
        if len(calls) != 1 or holders[id(norm)] > 1 or _has_hooks(norm):
            continue  # reported by the activation fusion already
        call = calls[0]
        if len(call.args) != 1 or call.kwargs:
            result.left.append((qualified, "normalised in its own pass: it ends a residual block, fused with the add "
                                           "and activation after it"))
            continue
        user, identities = _through_identities(call, module)
        conv = module.get_submodule(user.target) if user is not None and user.op == "call_module" else None
        why = None
        if conv is None or type(conv) not in CONVOLUTIONS:
            consumers = sorted({_describe(node) for node in (list(call.users) if user is None else [user])})
            why = f"its output feeds {', '.join(consumers) or 'nothing'}, not a convolution alone"
        elif len(user.args) != 1 or user.kwargs:
            why = f"module '{user.target}' is called with more than its input"
        elif _has_hooks(conv):
            why = f"module '{user.target}' has hooks, which would not see act(bn(x))"
        elif getattr(norm, "fuses_slopes", False):
            why = "its PReLU's learnable slopes are not read in a convolution's prologue"
        elif conv.padding_mode != "zeros":
            why = f"module '{user.target}' pads with mode {conv.padding_mode!r}, which the prologue does not"
        elif not _kernel_dtypes(conv):
            why = f"module '{user.target}' holds float64 tensors"
        if why is not None:
            if not any(entry == qualified for entry, _ in result.left):  # one reason per norm is enough
                result.left.append((qualified, f"normalised in its own pass: {why}"))
            continue
        if type(norm) is torch.nn.BatchNorm2d:
            fuse_activation_into(norm, None, 0.0)
        with graph.inserting_before(user):
            fused = graph.call_function(fastcnn_nn.batch_norm_into_conv2d,
                                        (call.args[0], graph.get_attr(target), graph.get_attr(user.target)))
        user.replace_all_uses_with(fused)
        for node in [user, *reversed(identities), call]:
            graph.erase_node(node)
        activation = "" if norm.activation is None else f" and its {norm.activation[0]}"
        result.fused.append((qualified, f"into module '{_join(name, user.target)}': the batch norm{activation} run in "
                                        f"the convolution's prologue (act(bn(x)) is never stored)"))
        changed = True
    return changed


def _producing_convolution(node, root):
    """The Conv2d module of ``node`` when it computes a convolution's output the moments epilogue
    can summarise: a plain call of a zero-padded, unhooked Conv2d, or a ``batch_norm_into_conv2d``
    call; else None."""
    if node.op == "call_module":
        conv = root.get_submodule(node.target)
        if (type(conv) in CONVOLUTIONS and len(node.args) == 1 and not node.kwargs and not _has_hooks(conv)
                and conv.padding_mode == "zeros" and _kernel_dtypes(conv)):
            return conv
        return None
    if node.op == "call_function" and node.target is fastcnn_nn.batch_norm_into_conv2d:
        return root.get_submodule(node.args[2].target)
    return None


def _consuming_norm(node, root):
    """(target, the fastcnn BatchNorm2d) of the batch norm that ``node`` calls on its first
    argument (a module call, ``batch_norm_into_conv2d`` or ``batch_norm_into_max_pool2d``), else None."""
    if node.op == "call_module":
        norm = root.get_submodule(node.target)
        if (type(norm) in BATCH_NORMS + SYNC_BATCH_NORMS and _kernel_dtypes(norm) and not _has_hooks(norm)
                and "moments" not in node.kwargs):
            return node.target, norm
    elif node.op == "call_function" and node.target in (fastcnn_nn.batch_norm_into_conv2d,
                                                        fastcnn_nn.batch_norm_into_max_pool2d):
        return node.args[1].target, root.get_submodule(node.args[1].target)
    return None


def _consuming_residual_norm(consumer, value):
    """The ``residual_norm`` get_attr node of ``consumer`` when it is a batch norm call that
    normalises ``value`` as its residual (``_fuse_residual_norms``) without moments yet, else None."""
    if (consumer is None or consumer.op != "call_module" or "residual_norm" not in consumer.kwargs
            or "residual_moments" in consumer.kwargs or len(consumer.args) < 2 or consumer.args[1] is not value):
        return None
    return consumer.kwargs["residual_norm"]


def _statistics_from_convolutions(name, module, graph, holders, result):
    """conv → bn: the convolution also emits its output's moments (kernels/moments.py) and the
    batch norm takes its training statistics from them (``conv2d_for_batch_norm``, ``moments=``),
    so no statistics pass reads the convolution's output again."""
    changed = False
    for node in list(graph.nodes):
        if _producing_convolution(node, module) is None:
            continue
        consumer, identities = _through_identities(node, module)
        value = (identities or [node])[-1]
        residual_norm = _consuming_residual_norm(consumer, value)
        found = None if consumer is None else residual_norm or _consuming_norm(consumer, module)
        if found is None or (residual_norm is None and consumer.args[0] is not value):
            continue  # the output goes elsewhere, or is not what the batch norm normalises
        norm_target, norm = (found.target, module.get_submodule(found.target)) if residual_norm else found
        if holders[id(norm)] > 1:
            continue  # shared with another part of the model: left as it is, as by the other fusions
        if type(norm) in TORCH_BATCH_NORMS:  # fastcnn's class (which takes the moments) now, not in _replace
            fuse_activation_into(norm, None, 0.0)
        with graph.inserting_before(node):
            norm_attribute = graph.get_attr(norm_target)
            if node.op == "call_module":
                pair = graph.call_function(fastcnn_nn.conv2d_for_batch_norm,
                                           (node.args[0], graph.get_attr(node.target), norm_attribute))
            else:
                x, bn, conv_attribute = node.args[:3]
                pair = graph.call_function(fastcnn_nn.batch_norm_into_conv2d,
                                           (x, bn, conv_attribute, node.args[3] if len(node.args) > 3 else None,
                                            norm_attribute))
        with graph.inserting_after(pair):
            out = graph.call_function(operator.getitem, (pair, 0))
        with graph.inserting_after(out):
            moments = graph.call_function(operator.getitem, (pair, 1))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        if residual_norm is not None:
            consumer.kwargs = {**consumer.kwargs, "residual_moments": moments}
        elif consumer.op == "call_module":
            consumer.kwargs = {**consumer.kwargs, "moments": moments}
        else:
            consumer.args = (*consumer.args[:3], moments, *consumer.args[4:])
        producer = _join(name, node.target if node.op == "call_module" else conv_attribute.target)
        result.fused.append((_join(name, norm_target), f"statistics from the epilogue of module '{producer}' "
                                                       f"(no pass over its output)"))
        changed = True
    return changed


def _swappable_add(node, root):
    """Whether ``node`` adds two values (``a + b``, ``torch.add(a, b)``, ``a.add(b)``; ``a += b`` and
    ``a.add_(b)`` only where writing ``a`` is provably seen by nobody, see ``_written_alone``) and
    may become ``fastcnn.add``, which runs torch's add for what its kernel does not take (numbers,
    broadcasting)."""
    if len(node.args) != 2 or node.kwargs or not all(isinstance(arg, torch.fx.Node) for arg in node.args):
        return False
    function = node.op == "call_function"
    if (function and node.target in ADD_FUNCTIONS) or (node.op == "call_method" and node.target in ADD_METHODS):
        return True
    in_place = (function and node.target in INPLACE_ADDS) or (node.op == "call_method"
                                                              and node.target in INPLACE_ADD_METHODS)
    return in_place and _written_alone(node.args[0], root)


# What a traced forward's nodes return, for the in-place adds: a new tensor ("fresh"), possibly
# their first argument itself or a view of it ("passes"), or anything else.
FRESH_MODULES = (torch.nn.modules.conv._ConvNd, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm,
                 torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.modules.instancenorm._InstanceNorm,
                 torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveAvgPool2d)
PASSING_MODULES = (torch.nn.Identity, torch.nn.Flatten, torch.nn.Unflatten, torch.nn.modules.dropout._DropoutNd,
                   fastcnn_nn.FusedPReLU)
FRESH_FUNCTIONS = {add, operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                   torch.cat, F.conv2d, F.linear, F.batch_norm, F.layer_norm, F.group_norm, F.avg_pool2d,
                   F.adaptive_avg_pool2d, F.max_pool2d}
FRESH_METHODS = {"add", "sub", "mul", "div", "clone"}
PASSING_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.narrow,
                     torch.squeeze, torch.unsqueeze, F.dropout, F.dropout2d} | set(INPLACE_ADDS)
PASSING_METHODS = {"view", "view_as", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze",
                   "expand", "expand_as", "narrow", "select", "contiguous", "__getitem__", "t", "unflatten",
                   "detach"} | set(INPLACE_ADD_METHODS) | {name for name in ACTIVATION_METHODS if name.endswith("_")}


def _returns(node, root):
    """"fresh" when ``node`` returns a tensor no other value aliases, "passes" when it may return
    its first argument or a view of it, None when unknown (an input, a parameter, another module)."""
    inplace = node.kwargs.get("inplace") is True or (len(node.args) > 1 and node.args[-1] is True)
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        if isinstance(module, PASSING_MODULES) or getattr(module, "inplace", False) is True:
            return "passes"
        if isinstance(module, FRESH_MODULES) or (_module_activation(module) is not None):
            return "fresh"
        return None
    if node.op == "call_function":
        if node.target in PASSING_FUNCTIONS or (node.target in ACTIVATION_FUNCTIONS and inplace):
            return "passes"
        if node.target in FRESH_FUNCTIONS or node.target in ACTIVATION_FUNCTIONS:
            return "fresh" if node.target is not torch.relu_ else "passes"
        return None
    if node.op == "call_method":
        if node.target in PASSING_METHODS:
            return "passes"
        if node.target in FRESH_METHODS or node.target in ACTIVATION_METHODS:
            return "fresh"
    return None


def _written_alone(tensor, root):
    """Whether an in-place write into ``tensor`` (a node) is seen by no other value: following it
    back through what may return its argument or a view of it (``a[:, :k]``, ``a.view(...)``,
    inplace activations, nn.Identity, dropout) to a fresh tensor, every value on the way has one
    reader, the next. Then the write can be computed out of place. A slice of a tensor read
    again, a forward's input, a parameter or a module's unknown result are written in place."""
    node = tensor
    while True:
        if len(node.users) != 1:
            return False
        returns = _returns(node, root)
        if returns == "fresh":
            return True
        if returns != "passes" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            return False
        node = node.args[0]


MULTIPLIES = (operator.mul, torch.mul)
LINEARS = (torch.nn.Linear, fastcnn_nn.Linear)


def _constant_tensor(node, root):
    """The tensor a ``get_attr`` node reads (a parameter or buffer of ``root``), else None."""
    if node.op != "get_attr":
        return None
    value = root
    for part in node.target.split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def _last_axis_to(node, root, position):
    """Whether ``node`` permutes its input's last axis to ``position`` (a torchvision ``Permute``
    module with ``dims``, or a ``permute`` method call with constant dims)."""
    if node.op == "call_module":
        dims = getattr(root.get_submodule(node.target), "dims", None)
    elif node.op == "call_method" and node.target == "permute":
        dims = node.args[1:] if len(node.args) > 2 else (node.args[1] if len(node.args) == 2 else None)
    else:
        return False
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) for d in dims):
        return False
    return len(dims) + position >= 0 and dims[position] in (len(dims) - 1, -1)


def _fuse_layer_scales(name, module, graph, holders, result):
    """scale * permute(linear(x)) (ConvNeXt's layer scale: a (C, 1, 1) parameter times the block's
    last Linear, permuted back to NCHW) becomes permute(linear(x, output_scale=scale)): the
    multiply rides in the GEMM's epilogue and its gradient in the weight gradient's pass."""
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in MULTIPLIES or len(node.args) != 2 or node.kwargs:
            continue
        scale_node, other = node.args
        if not isinstance(scale_node, torch.fx.Node) or _constant_tensor(scale_node, module) is None:
            scale_node, other = other, scale_node
        scale = _constant_tensor(scale_node, module) if isinstance(scale_node, torch.fx.Node) else None
        if scale is None or not isinstance(other, torch.fx.Node) or len(other.users) != 1:
            continue
        permute, call = None, other
        if other.op != "call_module" or not isinstance(module.get_submodule(other.target), LINEARS):
            permute, call = other, other.args[0] if other.args else None
            if not isinstance(call, torch.fx.Node) or len(call.users) != 1 or call.op != "call_module":
                continue
        linear = module.get_submodule(call.target) if call.op == "call_module" else None
        if type(linear) not in LINEARS or len(call.args) != 1 or call.kwargs:
            continue
        features = linear.out_features
        # the scale's features must lie where the linear's last axis lands
        expected = (features,) + (1,) * (scale.dim() - 1)
        if tuple(scale.shape) != expected or (permute is None and scale.dim() != 1) or (
                permute is not None and not _last_axis_to(permute, module, -scale.dim())):
            continue
        if (holders[id(linear)] > 1 or _has_hooks(linear) or not _kernel_dtypes(linear)
                or scale.dtype == torch.float64):
            continue
        call.kwargs = {"output_scale": scale_node}
        node.replace_all_uses_with(other)
        graph.erase_node(node)
        result.fused.append((_join(name, call.target), f"its output times {scale_node.target} (a per-feature "
                                                       f"scale) in the GEMM's epilogue; that multiply was removed"))
        changed = True
    return changed


def _swap_functions(name, root, graph, result):
    """Calls of the functions in FUNCTION_SWAPS become calls of fastcnn's (same arguments), and the
    adds that no batch norm took become ``fastcnn.add``."""
    changed = False
    for node in graph.nodes:
        if node.op == "call_function" and node.target in FUNCTION_SWAPS:
            swapped = FUNCTION_SWAPS[node.target]
        elif _swappable_add(node, root):
            swapped = add
        else:
            continue
        result.replaced.append((_join(name, node.name), f"{_describe(node)} in the forward -> "
                                                        f"fastcnn.{swapped.__name__}()"))
        node.op, node.target = "call_function", swapped
        changed = True
    return changed


def _hooked_call(node, root):
    """Whether ``node`` calls a module that has hooks."""
    return node.op == "call_module" and _has_hooks(root.get_submodule(node.target))


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
            if replacement is fastcnn_nn.SqueezeExcitation:
                module.__dict__.pop("forward", None)  # the gate's forward, not a traced copy of the old one
            origin = "torch.nn" if kind.__module__.startswith("torch.nn") else kind.__module__
            result.replaced.append((name, f"{origin}.{kind.__name__} -> fastcnn.nn.{replacement.__name__}"))
        elif isinstance(module, FASTCNN_MODULES):
            if name in fused:
                activation = getattr(module, "activation", None)
                residual = any(entry == name and "with a residual" in how for entry, how in result.fused)
                inside = any(entry == name and "residual it adds" in how for entry, how in result.fused)
                detail = (" + residual" if residual else "") + (f" + {activation[0]}" if activation else "") + (
                    " (run inside the pass of the norm it is the residual of)" if inside else "")
                result.replaced.append((name, f"torch.nn.{_torch_base(kind)} -> fastcnn.nn.{kind.__name__}{detail}"))
        elif isinstance(module, tuple(REPLACEMENTS)):
            result.left.append((name, f"{kind.__name__} subclasses torch.nn.{_torch_base(kind)} with code of "
                                      f"its own; left as it is"))


def _torch_base(kind):
    return next(base.__name__ for base in REPLACEMENTS if issubclass(kind, base))


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name
