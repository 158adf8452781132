"""The benchmark catalogue: one module per op, named as its op module (``cases/conv2d.py`` times
``ops/conv2d.py``), holding ``SUITES`` (the shapes, from the networks that run them),
``PROFILE_OPS`` (the names the profiler knows the op by) and ``profile_cases(op, dtypes, layouts,
quick=, smoke=)`` (``BenchmarkCase``s whose ``build(device)`` returns fastcnn's callable and every
baseline's: at least ``eager`` and ``torch_compile``); and for scripts/static_gpu_check.py
``static_launches(kernel_module, options)`` ((scenario name, callable) pairs, each calling the
kernels' launchers on CPU tensors of a representative shape), ``MEMORY_BOUND_KERNELS`` (kernels
of the op's kernel module whose grid must fill an H100 on those launches) and, optionally,
``compile_variants(kernel_module)`` (more launches, for specialisations only the compiler
checks).

Outside the runtime import graph: ``import fastcnn`` never imports this package (a case module
may import anything in fastcnn: ``nn``, ``optim``, the ops, another op's cases). The profiler,
``bench/`` and ``scripts/gpu_check.py`` find the cases of every op module here by its name.
"""
import importlib

from ..ops import MODULES as OP_MODULES


def for_op(op_module):
    """The case module of an op module (``fastcnn.ops.conv2d`` -> ``fastcnn.cases.conv2d``)."""
    return importlib.import_module(f"{__name__}.{op_module.__name__.rsplit('.', 1)[1]}")


def modules():
    """Every op's case module, in the order of ``fastcnn.ops.MODULES``."""
    return tuple(for_op(module) for module in OP_MODULES)


def by_profile_op():
    """Every profiled op name (conv2d's three passes are three) -> the case module that builds its cases."""
    return {name: module for module in modules() for name in module.PROFILE_OPS}
