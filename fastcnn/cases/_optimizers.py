"""The cases every multi-tensor op (the optimizer steps, gradient clipping) is timed on: the
parameter suites (ResNet-50's 161 tensors, 2000 small ones), one case of a step over a suite, and
``optimizer_step_cases``, an optimizer's whole ``profile_cases`` from its torch class and recipe."""
import math

import torch

from .. import optim
from ..benchmarking import BenchmarkCase, compiled, element_size, random_input


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


def optimizer_step_cases(torch_class, recipe, bytes_moved, *, torch_fused):
    """An optimizer's ``profile_cases``: one step of ``fastcnn.optim.<torch_class's name>`` over each
    parameter suite against torch's fastest (``fused=True`` where ``torch_fused``, the README's goal
    being >= 1.0x of it, with ``foreach=True`` beside it; else ``foreach=True``) and torch.compile of
    the foreach step, all with ``recipe``. ``bytes_moved(numel, element_size)`` is the op module's
    cost formula."""
    ours = getattr(optim, torch_class.__name__)

    def foreach(params):
        return torch_class(params, foreach=True, **recipe)

    implementations = {"fastcnn": lambda params: ours(params, **recipe), "eager": foreach}
    if torch_fused:
        implementations.update(eager=lambda params: torch_class(params, fused=True, **recipe), torch_foreach=foreach)
    implementations["torch_compile"] = foreach

    def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
        """One step over each suite's parameters (see optimizer_profile_cases); ``layouts`` does
        not apply."""
        make_case = step_cases(op, implementations, lambda dtype: bytes_moved(1, element_size(dtype)))
        return optimizer_profile_cases(op, dtypes, make_case, quick=quick, smoke=smoke)
    return profile_cases
