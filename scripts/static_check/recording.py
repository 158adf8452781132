"""Loading the project's kernels as a stand-alone package, recording the launches its launch
helpers make instead of running them, and the scenarios that make them: each op's
``static_launches`` and ``MEMORY_BOUND_KERNELS`` in fastcnn/cases/<op>.py."""
import contextlib
import dataclasses
import importlib
import importlib.util
import os
import sys
import types


PACKAGE = "_static_report_kernels"


def load_kernels(project):
    os.environ.pop("TRITON_INTERPRET", None)
    path = os.path.join(os.path.abspath(project), "kernels")
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    if getattr(package, "INTERPRETED", False):
        raise SystemExit("kernels were loaded for the interpreter; unset TRITON_INTERPRET")
    return package


def kernel_module(name):
    return importlib.import_module(f"{PACKAGE}.{name}")


def pin_sm_count(sms):
    """The launch helpers size split-K from the device's SM count: answer an H100's without CUDA."""
    import torch
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(
        multi_processor_count=sms, name="H100 (static report)", major=9, minor=0)
    try:
        slicing = kernel_module("slicing")
        if hasattr(slicing, "sm_count"):
            slicing.sm_count = lambda device: sms
    except ImportError:
        pass


@dataclasses.dataclass
class Launch:
    scenario: str
    fn: object                # JITFunction
    args: tuple
    kwargs: dict
    grid: object
    configs: list             # list of dicts of kwargs incl. num_warps/num_stages; [kwargs-only] if not autotuned
    autotuned: bool


@contextlib.contextmanager
def recording(sink, scenario):
    from triton.runtime.jit import JITFunction
    from triton.runtime.autotuner import Autotuner
    saved = JITFunction.run, Autotuner.run

    def jit_run(self, *args, grid, warmup, **kwargs):
        sink.append(Launch(scenario, self, args, dict(kwargs), grid, [{}], False))

    def autotuner_run(self, *args, **kwargs):
        grid = kwargs.pop("grid")
        kwargs.pop("warmup", None)
        fn = self.fn
        # What the autotuner would benchmark: its configs after the kernel's own early pruning.
        self.nargs = dict(zip(self.arg_names, args))
        try:
            configs = [config.all_kwargs() for config in self.prune_configs(kwargs)]
        finally:
            self.nargs = None
        sink.append(Launch(scenario, fn, args, dict(kwargs), grid, configs, True))

    JITFunction.run, Autotuner.run = jit_run, autotuner_run
    try:
        yield
    finally:
        JITFunction.run, Autotuner.run = saved


# ------------------------------------------------------------------------------------------------
# Scenarios: each op's case module (fastcnn/cases/<op>.py) declares its launches and its
# memory-bound kernels; they are found here, as the profiler finds its benchmark cases.

def case_modules(project):
    """The project's case modules (its fastcnn/cases, imported from the project's source)."""
    source = os.path.abspath(project)
    if source not in sys.path:
        sys.path.insert(0, source)
    from fastcnn import cases
    return cases.modules()


def scenarios(options):
    """(name, callable) pairs; each callable launches kernels through the project's helpers: each
    op's ``static_launches`` and, with ``options.variants``, its ``compile_variants`` (named
    "variant ...": specialisations the report does not need but the compiler must accept, such as
    int64 indexing, unaligned tensors, every activation kind, integer max-pool)."""
    found = []
    for module in case_modules(options.project):
        if hasattr(module, "static_launches"):
            found += module.static_launches(kernel_module, options)
        if options.variants and hasattr(module, "compile_variants"):
            found += [(f"variant {name}", run) for name, run in module.compile_variants(kernel_module)]
    return found


def memory_bound_kernels(project):
    """(kernel module, kernel) of the memory-bound kernels whose grid must fill the GPU on the
    scenarios' (large) shapes: each case module names those of the op's kernel module."""
    return {(module.__name__.rsplit(".", 1)[1], kernel) for module in case_modules(project)
            for kernel in getattr(module, "MEMORY_BOUND_KERNELS", ())}
