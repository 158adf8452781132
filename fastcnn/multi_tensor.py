"""The PyTorch side shared by the multi-tensor ops (the optimizer steps in ``ops/adam.py``,
``ops/sgd.py``, ``ops/rmsprop.py``, ``ops/adagrad.py``, ``ops/adadelta.py`` and gradient clipping
in ``ops/clip_grad.py``), each over its kernel file and ``kernels/multi_tensor.py``:

* ``flat_walkable``: tensors the flat kernels can walk element by element (staged where not);
* the reference path's helpers: the gradient an update rule sees and the GradScaler-aware write,
  so each op's PyTorch path follows its kernel's math step for step without a host sync;
* the benchmark suites of parameter shapes (ResNet-50's 161 tensors, 2000 small ones) and the
  optimizer benchmark case every optimizer's ``profile_cases`` is made of.
"""
import math

import torch

from . import _backend
from ._layout import is_dense
from .benchmarking import BenchmarkCase, compiled, random_input


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


# ----------------------------------------------------------------------------- benchmark suites and cases
def resnet50_parameter_shapes():
    """Shapes of torchvision's ResNet-50 parameters (conv, BN weight/bias, fc): 161 tensors,
    25,557,032 elements. Written out from the architecture so that no torchvision is needed."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    in_channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        out_channels = 4 * width
        for block in range(blocks):
            shapes += [(width, in_channels, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (out_channels, width, 1, 1), (out_channels,), (out_channels,)]
            if block == 0:  # projection shortcut
                shapes += [(out_channels, in_channels, 1, 1), (out_channels,), (out_channels,)]
            in_channels = out_channels
    shapes += [(1000, 2048), (1000,)]
    return shapes


def many_small_parameter_shapes(count=2000):
    """Many small tensors (BN vectors, depthwise and narrow convs): launch overhead dominates."""
    sizes = [(64,), (96,), (128, 9), (256,), (32, 3, 3, 3), (144,), (24, 144, 1, 1), (1000,)]
    return [sizes[index % len(sizes)] for index in range(count)]


PARAMETER_SUITES = {
    "resnet50": resnet50_parameter_shapes,
    "many_small": many_small_parameter_shapes,
}


def parameters_with_grads(shapes, dtype, device, seed=0):
    """Leaf tensors of ``shapes`` with random grads; the same values for every ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    params = [random_input(shape, dtype, "nchw", device, generator).requires_grad_() for shape in shapes]
    for param in params:
        param.grad = random_input(param.shape, dtype, "nchw", device, generator)
    return params


def optimizer_case(op, suite, shapes, dtype, bytes_per_parameter, implementations, variant=""):
    """One optimizer step (or gradient clipping) over ``shapes`` for each of ``implementations``
    ({name: params -> optimizer or zero-argument callable}; fastcnn's, eager (torch's fastest),
    torch_compile (torch's foreach step compiled) and any other baseline). ``bytes_per_parameter``
    is what the algorithm must move per parameter; ``variant`` names the configuration."""
    numel = sum(math.prod(shape) for shape in shapes)

    def build(device):
        def step(name):
            params = parameters_with_grads(shapes, dtype, device)  # the same parameters for each
            made = implementations[name](params)
            update = made.step if isinstance(made, torch.optim.Optimizer) else made
            update = compiled(update) if name == "torch_compile" else update

            returns_grad = not isinstance(made, torch.optim.Optimizer)  # clipping changes the grads

            def run():
                update()
                return params[0].grad if returns_grad else params[0]
            return run

        return {name: step(name) for name in implementations}

    name = f"{suite}/{len(shapes)} tensors" + (f"/{variant}" if variant else "")
    return BenchmarkCase(op, name, dtype, "-", {"bytes": numel * bytes_per_parameter}, build)


def fastcnn_optimizer(class_name, **options):
    """params -> fastcnn.optim.<class_name>(params, **options), fastcnn's entry of a case's
    implementations (imported when called: fastcnn.optim imports the op modules)."""
    def make(params):
        from . import optim

        return getattr(optim, class_name)(params, **options)
    return make


def step_cases(op, implementations, bytes_per_parameter, variant=""):
    """``make_case`` for ``optimizer_profile_cases``: one case of ``implementations`` per suite
    and dtype; ``bytes_per_parameter(dtype name)`` is what the rule must move per parameter."""
    def make_case(suite, shapes, dtype):
        return optimizer_case(op, suite, shapes, dtype, bytes_per_parameter(dtype), implementations, variant)
    return make_case


def optimizer_profile_cases(op, dtypes, make_case, *, quick=False, smoke=False):
    """The profiler's cases of an optimizer-like op: ``make_case(suite, shapes, dtype)`` (one
    case or a list) over each suite of PARAMETER_SUITES (the ResNet-50 one with ``quick``; two
    small fp32 tensors for the smoke check)."""
    suites = {"smoke": lambda: [(7, 3), (13,)]} if smoke else {
        name: shapes for name, shapes in PARAMETER_SUITES.items() if not quick or name == "resnet50"}
    made = [make_case(name, make(), dtype) for name, make in suites.items() for dtype in dtypes
            if dtype == "fp32" or not smoke]
    return [case for cases in made for case in (cases if isinstance(cases, list) else [cases])]

