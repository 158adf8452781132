"""``fastcnn.estimate(model, example_input, ...)``: what one training step costs on a GPU, counted
without one: the kernel launches, the bytes each moves and the FLOPs it does, the peak memory and
what is alive at it, for the model converted to fastcnn and (``baseline=True``) as given.

How it counts. The step (forward, loss, backward, and the optimizer's step when one is given)
runs on fake tensors of the full size (``FakeTensorMode``: shapes, dtypes and strides, no data,
no arithmetic), under a dispatch recorder that sees every operator the step dispatches:

* fastcnn's operators (``fastcnn::conv2d``, ...) cost what their kernels' launchers launch on
  those shapes, as each op module states next to the operator (``fastcnn/_cost.py``): pass by
  pass, with split-K partials and layout copies, sized for a GPU's tiles and SM count.
* ATen's operators cost their known cuDNN/ATen passes where this module knows them (a
  convolution's FLOPs, batch and group norm's statistics and apply passes, max-pool backward's
  gather, multi-tensor ``_foreach`` launches); any other op reads each input once and writes each
  output once in one launch. That is a lower bound, and it favours eager.
* Memory: every storage the step allocates is followed from the operator that returned it until
  it is freed (rounded up to the CUDA caching allocator's 512-byte blocks, as
  ``torch.cuda.max_memory_allocated`` counts), plus each fastcnn launch's own workspace while it
  runs. At the peak, each live storage is put in one kind: parameters (and buffers), gradients,
  optimizer state, the input batch, activations saved for backward, temporaries. cuDNN's
  workspaces are not seen: eager's peak is a lower bound too.

The optimizer's state is made by a step on zero gradients before the counted step, so the
counted step is a steady one: state alive throughout, no ``.grad`` during the forward
(``zero_grad()`` sets them to None).

On a CPU-only torch, fake CUDA tensors fail in backward, so the step runs on fake CPU tensors
with fastcnn's kernel path forced on (no kernel runs: fake operators only allocate), and the
report is for the GPU.

The step time printed is a roofline lower bound, **modelled**: per launch, the larger of its
bytes over the memory bandwidth and its FLOPs over the matmul peak of its precision, plus a
fixed gap per launch; the peaks are those measured under ``bench/results/`` when a GPU run left
them, else the data sheet's.
"""
import contextlib
import dataclasses
import functools
import glob
import json
import math
import os
import weakref
from collections import Counter, defaultdict

import torch

from . import _backend, _cost
from .coverage import kind_of
from .ops.conv2d import uses_tf32

# The CUDA caching allocator hands out blocks in multiples of 512 bytes; max_memory_allocated
# counts those blocks.
ALLOCATION_GRANULE = 512

# Data-sheet peaks (SXM parts, dense tensor-core rates), used where no measured peak exists.
DATASHEET = {
    "H100": {"bandwidth": 3.35e12, "bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12,
             "fp64": 66.9e12},
    "H200": {"bandwidth": 4.8e12, "bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12,
             "fp64": 66.9e12},
}
# What one launch costs beyond its bytes and FLOPs: the gap between two dependent kernels on the
# GPU (launch, ramp-up and drain), about 2 µs on a Hopper part when the CPU keeps ahead.
LAUNCH_GAP_S = 2e-6

PEAK_LARGEST = 8  # storages listed by name at the peak
KINDS = ("parameters", "gradients", "optimizer state", "input batch", "saved activations", "temporaries")

# ATen ops that launch nothing: views, allocations, metadata.
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "alias",
              "lift_fresh", "lift_fresh_copy", "is_same_size", "_has_compatible_shallow_copy_type", "set_",
              "resize_", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"}


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class OperatorCall:
    """One operator the step dispatched: its launches and the bytes autograd saved from it."""

    name: str
    family: str
    phase: str
    launches: list
    saved_bytes: int = 0  # bytes of what it returned that autograd keeps for backward


@dataclasses.dataclass
class StepCost:
    """One side's step: the operator calls in order, the peak memory and what was alive then."""

    calls: list
    peak_bytes: int
    peak_by_kind: dict
    peak_at: str
    peak_largest: list  # [(bytes, kind, the operator that made it)] of the largest storages alive at the peak

    def launches(self):
        return [launch for call in self.calls for launch in call.launches]

    def totals(self, calls=None):
        calls = self.calls if calls is None else calls
        launches = [launch for call in calls for launch in call.launches]
        return {"launches": len(launches), "bytes_read": sum(l.bytes_read for l in launches),
                "bytes_written": sum(l.bytes_written for l in launches), "flops": sum(l.flops for l in launches),
                "saved_bytes": sum(call.saved_bytes for call in calls)}

    def by_family(self):
        families = defaultdict(list)
        for call in self.calls:
            families[call.family].append(call)
        return {family: self.totals(calls) for family, calls in families.items()}

    def step_time_s(self, peaks):
        """The modelled roofline lower bound of the step on a device with ``peaks``."""
        return sum(launch_time_s(launch, peaks) for launch in self.launches())

    def to_dict(self, machines, operators=True):
        """Totals, families, peaks and modelled times; with ``operators``, every call's launches."""
        figures = {"totals": self.totals(), "by_family": self.by_family(), "peak_bytes": self.peak_bytes,
                   "peak_by_kind": self.peak_by_kind, "peak_at": self.peak_at,
                   "peak_largest": [{"bytes": size, "kind": kind, "made_by": made_by}
                                    for size, kind, made_by in self.peak_largest],
                   "modelled_step_time_s": {name: self.step_time_s(peaks) for name, peaks in machines.items()}}
        if operators:
            figures["operators"] = [{"name": c.name, "family": c.family, "phase": c.phase,
                                     "saved_bytes": c.saved_bytes,
                                     "launches": [dataclasses.asdict(l) for l in c.launches]} for c in self.calls]
        return figures


def launch_time_s(launch, peaks):
    memory = (launch.bytes_read + launch.bytes_written) / peaks["bandwidth"]
    compute = launch.flops / peaks[launch.math] if launch.flops else 0.0
    return max(memory, compute) + LAUNCH_GAP_S


@dataclasses.dataclass
class Estimate:
    """``fastcnn.estimate``'s answer: ``fastcnn`` and (with a baseline) ``eager`` :class:`StepCost`,
    the machines' peaks the modelled times use, and what was run."""

    description: str
    fastcnn: StepCost
    eager: object  # StepCost or None
    machines: dict

    def to_dict(self):
        """Everything, every launch of every operator included."""
        return {"description": self.description, "modelled": True, "machines": self.machines,
                "fastcnn": self.fastcnn.to_dict(self.machines),
                "eager": None if self.eager is None else self.eager.to_dict(self.machines)}

    def summary(self):
        """The totals, families, peaks and modelled times of each side, without the launches."""
        sides = {"fastcnn": self.fastcnn, "eager": self.eager}
        return {"description": self.description, "modelled": True,
                **{name: side.to_dict(self.machines, operators=False) for name, side in sides.items()
                   if side is not None}}

    def __str__(self):
        return format_estimate(self)


def _gb(value):
    return f"{value / 1e9:.2f}"


def format_estimate(estimate):
    """The table a person reads: per op family, fastcnn beside eager, then memory and time."""
    ours, theirs = estimate.fastcnn, estimate.eager
    lines = [f"fastcnn.estimate: {estimate.description}",
             "MODELLED, not measured: counted on fake tensors (see fastcnn/estimation.py); eager's ATen ops cost one "
             "read of each input and one write of each output where their passes are not known, a lower bound "
             "that favours eager."]
    our_families = ours.by_family()
    their_families = theirs.by_family() if theirs is not None else {}
    families = sorted(set(our_families) | set(their_families),
                      key=lambda f: -(our_families.get(f, {}).get("bytes_read", 0)
                                      + our_families.get(f, {}).get("bytes_written", 0)
                                      + their_families.get(f, {}).get("bytes_read", 0)
                                      + their_families.get(f, {}).get("bytes_written", 0)))
    header = f"{'op family':22s} {'launches':>9s} {'GB moved':>9s} {'GFLOP':>9s} {'saved GB':>9s}"
    if theirs is not None:
        header += f" | {'eager launches':>14s} {'GB moved':>9s} {'saved GB':>9s} | {'bytes x':>7s}"
    lines += ["", header, "-" * len(header)]
    rows = [(family, our_families.get(family), their_families.get(family)) for family in families]
    rows.append(("total", ours.totals(), theirs.totals() if theirs is not None else None))
    for family, mine, other in rows:
        mine = mine or {"launches": 0, "bytes_read": 0, "bytes_written": 0, "flops": 0, "saved_bytes": 0}
        moved = mine["bytes_read"] + mine["bytes_written"]
        line = (f"{family:22s} {mine['launches']:9d} {_gb(moved):>9s} {mine['flops'] / 1e9:9.1f} "
                f"{_gb(mine['saved_bytes']):>9s}")
        if theirs is not None:
            other = other or {"launches": 0, "bytes_read": 0, "bytes_written": 0, "saved_bytes": 0}
            their_moved = other["bytes_read"] + other["bytes_written"]
            ratio = f"{moved / their_moved:.2f}" if their_moved else "-"
            line += f" | {other['launches']:14d} {_gb(their_moved):>9s} {_gb(other['saved_bytes']):>9s} | {ratio:>7s}"
        lines.append(line)
    lines.append("")
    for name, side in (("fastcnn", ours), ("eager", theirs)):
        if side is None:
            continue
        kinds = ", ".join(f"{kind} {side.peak_by_kind.get(kind, 0) / 2**30:.2f}" for kind in KINDS)
        lines.append(f"peak memory, {name}: {side.peak_bytes / 2**30:.2f} GiB at {side.peak_at} ({kinds} GiB)")
        largest = "; ".join(f"{size / 2**20:.0f} MiB {kind} from {made_by}" for size, kind, made_by in side.peak_largest[:3])
        lines.append(f"  largest then: {largest}")
    if theirs is not None and theirs.peak_bytes:
        lines.append(f"peak memory, fastcnn / eager: {ours.peak_bytes / theirs.peak_bytes:.2f}")
    for machine, peaks in estimate.machines.items():
        line = (f"step time lower bound on {machine} (MODELLED roofline, {peaks['source']} peaks): fastcnn "
                f"{1e3 * ours.step_time_s(peaks):.1f} ms")
        if theirs is not None:
            line += (f", eager {1e3 * theirs.step_time_s(peaks):.1f} ms "
                     f"({theirs.step_time_s(peaks) / ours.step_time_s(peaks):.2f}x)")
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- peaks
def machine_peaks(results_folder=None):
    """{"H100": peaks, "H200": peaks}: the copy bandwidth and matmul rates a GPU run of
    ``fastcnn-profile`` measured and left under ``results_folder`` (default: the checkout's
    bench/results), else the data sheet's; each says which (``source``)."""
    machines = {name: dict(values, source="data-sheet") for name, values in DATASHEET.items()}
    folder = results_folder or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                                            "results")
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                result = json.load(handle)
            gpu, peaks = result["environment"].get("gpu", ""), result.get("peaks") or {}
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        for name in machines:
            if name in gpu and "copy_gbps" in peaks:
                measured = dict(machines[name], bandwidth=peaks["copy_gbps"] * 1e9, source=f"measured ({path})")
                if "matmul_bf16_tflops" in peaks:
                    measured["bf16"] = measured["fp16"] = peaks["matmul_bf16_tflops"] * 1e12
                if "matmul_fp32_tflops" in peaks:
                    precision = "tf32" if peaks.get("fp32_matmul_uses_tf32") else "fp32"
                    measured[precision] = peaks["matmul_fp32_tflops"] * 1e12
                machines[name] = measured
    return machines


# ----------------------------------------------------------------------------- ATen's passes
def _base_name(func):
    return func._schema.name.split("::", 1)[-1]


def _conv_flops(output, weight, groups):
    return 2 * output.numel() * (weight.shape[1]) * math.prod(weight.shape[2:])


def _foreach_launches(tensor_lists):
    """Launches of ATen's multi_tensor_apply over ``tensor_lists`` (lists of equal length): a
    launch is full at depth_to_max_tensors tensors or 320 chunks of 65536 elements."""
    max_tensors = (110, 64, 48, 36, 30)[min(len(tensor_lists), 5) - 1]
    launches, tensors, chunks = 0, 0, 0
    for tensor in tensor_lists[0]:
        tensor_chunks = -(-tensor.numel() // 65536)
        if tensor_chunks == 0:
            continue
        tensors += 1
        chunks += tensor_chunks
        while chunks >= 320:
            launches += 1
            chunks -= 320
            tensors = 1 if chunks else 0
        if tensors == max_tensors:
            launches += 1
            tensors = chunks = 0
    return launches + (1 if tensors else 0)


def aten_launches(func, args, kwargs, output):
    """The launches of one ATen op, as this module knows them (see the module's docstring)."""
    name = _base_name(func)
    if func.is_view or name in _NO_KERNEL:
        return []
    outputs = _cost.tensors_in(output if isinstance(output, (tuple, list)) else [output])
    inputs = _cost.tensors_in(list(args) + list(kwargs.values()))
    if name.startswith("_foreach_"):
        lists = [value for value in list(args) + list(kwargs.values())
                 if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor)]
        if isinstance(output, (list, tuple)) and output:
            lists.append(list(output))
        count = _foreach_launches(lists) if lists else 0
        if not count:
            return []
        read, written = sum(map(_cost.tensor_bytes, inputs)), sum(map(_cost.tensor_bytes, outputs))
        if not outputs:  # in place: the first list is read and written
            written = sum(map(_cost.tensor_bytes, lists[0]))
        return [_cost.Launch(f"aten::{name}", read // count, written // count)] * count
    if name == "convolution":
        input, weight = args[0], args[1]
        return [_cost.one_pass("aten::convolution", inputs, outputs, flops=_conv_flops(output, weight, args[8]),
                               math=_cost.math_of(input.dtype, uses_tf32(input.dtype, "cuda")))]
    if name == "convolution_backward":
        grad_out, input, weight = args[0], args[1], args[2]
        mask = args[10]
        math_name = _cost.math_of(input.dtype, uses_tf32(input.dtype, "cuda"))
        flops = _conv_flops(grad_out, weight, args[9])
        launches = []
        if mask[0]:
            launches.append(_cost.one_pass("aten::convolution_backward (input)", [grad_out, weight], [output[0]],
                                           flops=flops, math=math_name))
        if mask[1]:
            launches.append(_cost.one_pass("aten::convolution_backward (weight)", [grad_out, input], [output[1]],
                                           flops=flops, math=math_name))
        if mask[2]:
            launches.append(_cost.one_pass("aten::convolution_backward (bias)", [grad_out], [output[2]]))
        return launches
    training_argument = {"native_batch_norm": 5, "_native_batch_norm_legit": 5, "cudnn_batch_norm": 5,
                         "_native_batch_norm_legit_functional": 5, "native_group_norm": None}
    if name in training_argument:
        input = args[0]
        training = True if training_argument[name] is None else bool(args[training_argument[name]])
        apply = _cost.one_pass(f"aten::{name} (apply)", inputs, outputs)
        return ([_cost.one_pass(f"aten::{name} (statistics)", [input], [])] if training else []) + [apply]
    if name in ("native_batch_norm_backward", "cudnn_batch_norm_backward", "native_group_norm_backward"):
        grad_out, input = args[0], args[1]
        return [_cost.one_pass(f"aten::{name} (sums)", [grad_out, input], []),
                _cost.one_pass(f"aten::{name} (apply)", inputs, outputs)]
    if name == "max_pool2d_with_indices_backward":  # a gather through the indices; the input is not read
        return [_cost.one_pass(f"aten::{name}", [args[0], args[7]], outputs)]
    if name in ("addmm", "mm", "bmm"):
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        flops = 2 * a.numel() * b.shape[-1]
        tf32 = a.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
        return [_cost.one_pass(f"aten::{name}", inputs, outputs, flops=flops, math=_cost.math_of(a.dtype, tf32))]
    if not outputs and not func._schema.is_mutable:
        return []
    if not outputs:  # an in-place op returning nothing: it writes its mutated arguments
        outputs = [a for a, argument in zip(args, func._schema.arguments)
                   if isinstance(a, torch.Tensor) and argument.alias_info is not None and argument.alias_info.is_write]
    return [_cost.one_pass(f"aten::{name}", inputs, outputs)]


def aten_family(name, phase, launches):
    """The op family an ATen op's work is listed under (fastcnn.coverage's kinds); the recorder
    lists everything of the optimizer's step under "optimizer"."""
    kind = kind_of(name)
    moved = sum(l.bytes_read + l.bytes_written for l in launches)
    if kind == "residual add" and moved <= 64:
        return "counters"
    if kind == "residual add" and phase == "backward":
        return "gradient sum"
    if kind in ("bookkeeping", "other"):
        return "copies and other"
    return kind


# ----------------------------------------------------------------------------- the step's memory
def _allocated(size):
    """What the CUDA caching allocator counts for a block of ``size`` bytes."""
    return -(-size // ALLOCATION_GRANULE) * ALLOCATION_GRANULE


class _Memory:
    """Live storages, from the operator that returned each until it is freed."""

    def __init__(self):
        self.serial_of = {}  # id(storage) -> serial, while the storage lives
        self.size = {}  # serial -> bytes (rounded to allocator blocks), live storages
        self.kind = {}  # serial -> kind, for storages whose kind is known when tracked
        self.live = 0
        self.next_serial = 0
        self.peak = 0
        self.peak_sizes = {}
        self.peak_workspace = 0
        self.peak_at = "start"

    def track(self, tensor, kind=None):
        """The serial of ``tensor``'s storage, tracked from now until it is freed."""
        storage = tensor.untyped_storage()
        key = id(storage)
        serial = self.serial_of.get(key)
        if serial is None:
            serial = self.next_serial
            self.next_serial += 1
            size = _allocated(storage.nbytes())
            self.serial_of[key], self.size[serial] = serial, size
            self.live += size
            weakref.finalize(storage, self._free, key, serial)
        if kind is not None:
            self.kind.setdefault(serial, kind)
        return serial

    def _free(self, key, serial):
        if self.serial_of.get(key) == serial:
            del self.serial_of[key]
        self.live -= self.size.pop(serial)

    def serial(self, tensor):
        return self.serial_of.get(id(tensor.untyped_storage()))

    def note_peak(self, where, workspace=0):
        if self.live + workspace > self.peak:
            self.peak = self.live + workspace
            self.peak_sizes = dict(self.size)
            self.peak_workspace = workspace
            self.peak_at = where


# ATen ops whose CUDA kernels keep the statistics of 16-bit input in fp32 (the accumulation
# type) where the CPU kernels keep the input's dtype: op -> the outputs that are statistics.
_STATISTICS_IN_FP32_ON_CUDA = {torch.ops.aten.native_layer_norm.default: (1, 2),
                               torch.ops.aten.native_batch_norm.default: (1, 2),
                               torch.ops.aten._native_batch_norm_legit.default: (1, 2)}


def _as_on_cuda(func, args, output):
    """``output`` as the op allocates it on CUDA, where its CPU kernel allocates otherwise: layer
    and batch norm's saved statistics of 16-bit input in fp32 (autograd keeps them)."""
    statistics = _STATISTICS_IN_FP32_ON_CUDA.get(func)
    if statistics is None or args[0].dtype not in (torch.float16, torch.bfloat16):
        return output
    return tuple(t.float() if index in statistics else t for index, t in enumerate(output))


class _Recorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records each dispatched operator's launches and tracks the storages it returns."""

    def __init__(self, memory):
        super().__init__()
        self.memory = memory
        self.calls = []
        self.phase = "forward"
        self.saved = {}  # serial -> the call that produced it, for storages saved for backward
        self.producer = dict.fromkeys(memory.size)  # serial -> the call that returned it first (None: before the step)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = _as_on_cuda(func, args, func(*args, **kwargs))
        name = func._schema.name
        if name.startswith("fastcnn::"):
            plan, family = _cost.PLANS[name]
            launches = plan(output, *args, **kwargs)
        else:
            launches = aten_launches(func, args, kwargs, output)
            family = aten_family(name, self.phase, launches)
        call = OperatorCall(name, family if self.phase != "optimizer" else "optimizer", self.phase, launches)
        allocated = False
        for tensor in _cost.tensors_in(output if isinstance(output, (tuple, list)) else [output]):
            serial = self.memory.track(tensor)
            if serial not in self.producer:
                self.producer[serial], allocated = call, True
        if launches or allocated:  # views and metadata queries are not listed
            self.calls.append(call)
        where = f"{self.phase} {name} (operator {len(self.calls)})"
        self.memory.note_peak(where, _allocated(max((l.workspace for l in launches), default=0)))
        return output

    def pack(self, tensor):
        """A tensor autograd saves for backward: its bytes are counted once, for the operator that
        produced it (autograd saves an op's inputs before it runs and its outputs after, so the
        producer is what identifies a saved tensor)."""
        serial = self.memory.serial(tensor)
        if serial is not None and serial not in self.saved:
            producer = self.producer.get(serial)
            self.saved[serial] = producer
            if producer is not None:
                producer.saved_bytes += self.memory.size[serial]
        return tensor


# ----------------------------------------------------------------------------- running the step
def _optimizer_classes(optimizer):
    """(fastcnn's optimizer factory, eager's) from a torch.optim class, a fastcnn.optim class,
    or a functools.partial of either with keyword arguments."""
    from . import optim as fastcnn_optim

    keywords = {}
    cls = optimizer
    if isinstance(optimizer, functools.partial):
        cls, keywords = optimizer.func, dict(optimizer.keywords)
        if optimizer.args:
            raise TypeError("fastcnn.estimate: a partial optimizer takes keyword arguments only")
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise TypeError(f"fastcnn.estimate: argument 'optimizer' must be a torch.optim.Optimizer class or a "
                        f"functools.partial of one, not {type(optimizer).__name__}")
    if cls.__module__ == fastcnn_optim.__name__:
        ours, torch_class = cls, next(base for base in cls.__mro__[1:] if base.__module__.startswith("torch.optim"))
    else:
        torch_class = cls
        ours = getattr(fastcnn_optim, cls.__name__, None)
        ours = ours if ours is not None and issubclass(ours, cls) else cls
    eager_keywords = dict(keywords)
    if "foreach" in torch_class.__init__.__code__.co_varnames:  # what torch picks for CUDA tensors
        eager_keywords.setdefault("foreach", True)
    return functools.partial(ours, **keywords), functools.partial(torch_class, **eager_keywords)


def _fake_like(tensor, requires_grad=False):
    fake = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="cpu")
    return fake.requires_grad_(requires_grad) if requires_grad else fake


@contextlib.contextmanager
def _kernel_path():
    """fastcnn's operators take their kernel path on every device (nothing launches: under fake
    tensors each runs its fake implementation)."""
    saved = _backend.backend_for
    _backend.backend_for = lambda device: _backend.COMPILED
    try:
        yield
    finally:
        _backend.backend_for = saved


def _run_step(model, example_input, target, loss_fn, optimizer_factory):
    """One counted training step of ``model`` on fake tensors: a :class:`StepCost`."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    memory = _Memory()
    with FakeTensorMode(allow_non_fake_inputs=False), _kernel_path():
        parameters = {name: _fake_like(p, p.requires_grad) for name, p in model.named_parameters()}
        buffers = {name: _fake_like(b) for name, b in model.named_buffers()}
        batch = _fake_like(example_input, example_input.requires_grad)
        labels = _fake_like(target) if target is not None else None
        leaves = [p for p in parameters.values() if p.requires_grad]
        optimizer = optimizer_factory(leaves) if optimizer_factory is not None else None
        if optimizer is not None:  # make the state a steady step has
            for parameter in leaves:
                parameter.grad = torch.zeros_like(parameter)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for tensor in list(parameters.values()) + list(buffers.values()):
            memory.track(tensor, "parameters")
        for state in (optimizer.state.values() if optimizer is not None else ()):
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    memory.track(value, "optimizer state")
        for tensor in (batch, labels):
            if tensor is not None:
                memory.track(tensor, "input batch")
        memory.note_peak("start")
        recorder = _Recorder(memory)
        with recorder, torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda tensor: tensor):
            output = torch.func.functional_call(model, {**parameters, **buffers}, (batch,))
            if loss_fn is not None:
                loss = loss_fn(output, labels) if labels is not None else loss_fn(output)
                gradient = None
            else:
                loss, gradient = output, torch.ones_like(output)
            recorder.phase = "backward"
            loss.backward(gradient)
            del loss, output, gradient
            if optimizer is not None:
                recorder.phase = "optimizer"
                optimizer.step()
        for parameter in leaves:
            if parameter.grad is not None:
                memory.track(parameter.grad, "gradients")
        by_kind, alive = Counter(), []
        for serial, size in memory.peak_sizes.items():
            kind = memory.kind.get(serial) or ("saved activations" if serial in recorder.saved else "temporaries")
            by_kind[kind] += size
            producer = recorder.producer.get(serial)
            alive.append((size, kind, f"{producer.phase} {producer.name}" if producer else "before the step"))
        by_kind["temporaries"] += memory.peak_workspace
        if memory.peak_workspace:
            alive.append((memory.peak_workspace, "temporaries", f"the workspace of {memory.peak_at}"))
        return StepCost(recorder.calls, memory.peak, {kind: by_kind.get(kind, 0) for kind in KINDS}, memory.peak_at,
                        sorted(alive, key=lambda entry: -entry[0])[:PEAK_LARGEST])


def estimate(model, example_input, target=None, loss_fn=None, *, optimizer=None, baseline=True, device="cuda",
             convert=True):
    """Count one training step of ``model`` at full size without running it: see
    fastcnn/estimation.py. Returns an :class:`Estimate` (``print()`` it; ``to_dict()`` for JSON).

    ``model``: the torch model as a user has it (converted to fastcnn here when ``convert``;
    ``baseline=True`` also counts it unconverted). ``example_input`` (and ``target``): tensors
    whose shape, dtype and strides the step uses, on any device including ``meta`` (only their
    metadata is read). ``loss_fn(output, target)``: a module (fastcnn's counterpart is used on
    the fastcnn side) or a function; without one, cross entropy when ``target`` is given, else
    the backward of a ones gradient. ``optimizer``: a torch.optim or fastcnn.optim class (or a
    ``functools.partial`` of one): fastcnn's fused step on the fastcnn side, torch's
    multi-tensor one for eager. ``device``: the GPU the figures are for ("cuda")."""
    from .convert import convert as fastcnn_convert

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fastcnn.estimate: argument 'model' must be a torch.nn.Module, not {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"fastcnn.estimate: argument 'example_input' must be a Tensor, not "
                        f"{type(example_input).__name__}")
    if torch.device(device).type != "cuda":
        raise ValueError(f"fastcnn.estimate: argument 'device' must be a CUDA device, not {device!r}: the "
                         f"estimate models a GPU's kernels")
    if loss_fn is None and target is not None:
        loss_fn = torch.nn.CrossEntropyLoss()
    ours_optimizer = eager_optimizer = None
    if optimizer is not None:
        ours_optimizer, eager_optimizer = _optimizer_classes(optimizer)
    our_model = fastcnn_convert(model) if convert else model
    our_loss = loss_fn
    if isinstance(loss_fn, torch.nn.Module) and convert:
        our_loss = fastcnn_convert(loss_fn)
    was_training = model.training
    try:
        model.train()
        our_model.train()
        ours = _run_step(our_model, example_input, target, our_loss, ours_optimizer)
        eager = _run_step(model, example_input, target, loss_fn, eager_optimizer) if baseline else None
    finally:
        model.train(was_training)
    layout = "channels_last" if example_input.dim() == 4 and example_input.is_contiguous(
        memory_format=torch.channels_last) and not example_input.is_contiguous() else "contiguous"
    optimizer_name = "" if optimizer is None else f", {getattr(optimizer, 'func', optimizer).__name__} step"
    description = (f"{type(model).__name__}, one training step (forward, loss, backward{optimizer_name}), input "
                   f"{list(example_input.shape)} {str(example_input.dtype).replace('torch.', '')} {layout}, for "
                   f"{device}")
    return Estimate(description, ours, eager, machine_peaks())


# ----------------------------------------------------------------------------- the command line
OPTIMIZERS = {"none": None, "sgd": functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
              "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(spec):
    """A model by name: "torchvision:resnet50" (weights=None), "fastcnn:TinyResNet"
    (fastcnn.models), or a bare name, looked up in torchvision when it imports, else in
    fastcnn.models."""
    from . import models

    source, _, name = spec.rpartition(":")
    if source not in ("", "torchvision", "fastcnn"):
        raise ValueError(f"fastcnn.estimate: unknown model source {source!r} in {spec!r}; use torchvision:NAME or "
                         f"fastcnn:NAME")
    if source in ("", "torchvision"):
        try:
            import torchvision
        except ImportError as error:
            if source:
                raise ValueError(f"fastcnn.estimate: {spec!r} needs torchvision, which does not import here "
                                 f"({error})") from error
        else:
            if source or name in torchvision.models.list_models():
                return torchvision.models.get_model(name, weights=None)
    model = getattr(models, name, None)
    if not (isinstance(model, type) and issubclass(model, torch.nn.Module)):
        known = [n for n, value in vars(models).items() if isinstance(value, type) and issubclass(value, torch.nn.Module)]
        raise ValueError(f"fastcnn.estimate: no model {name!r} in fastcnn.models ({', '.join(known)}) or torchvision")
    return model()


def input_channels(model):
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def estimate_model(spec, *, batch, dtype="bf16", channels_last=False, image_size=224, optimizer="sgd",
                   baseline=True):
    """``fastcnn.estimate`` of a named model (``load_model``) on a batch of random-size-only
    images with class targets, the model in ``dtype`` (and channels_last)."""
    model = load_model(spec).to(DTYPES[dtype])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    images = torch.empty((batch, input_channels(model), image_size, image_size), dtype=DTYPES[dtype],
                         device="meta").contiguous(memory_format=memory_format)
    labels = torch.empty((batch,), dtype=torch.int64, device="meta")
    result = estimate(model, images, labels, optimizer=OPTIMIZERS[optimizer], baseline=baseline)
    result.description = f"{spec}: {result.description}"
    return result


def add_arguments(parser):
    """The estimate's options of ``fastcnn-profile --estimate``."""
    group = parser.add_argument_group("--estimate: one training step counted on fake tensors (modelled, no GPU)")
    group.add_argument("--estimate", action="store_true",
                       help="count what one training step of --model costs (launches, bytes, FLOPs, peak memory), "
                            "fastcnn beside eager, and print it; runs no kernel and needs no GPU")
    group.add_argument("--model", default="torchvision:resnet50",
                       help="torchvision:NAME, fastcnn:NAME (fastcnn.models) or NAME (default %(default)s)")
    group.add_argument("--batch", type=int, default=256)
    group.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    group.add_argument("--channels-last", action="store_true")
    group.add_argument("--image-size", type=int, default=224)
    group.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZERS))
    group.add_argument("--no-baseline", action="store_true", help="count fastcnn's step only")
    group.add_argument("--json", metavar="FILE", help="also write the estimate, every launch, as JSON")


def run_from_arguments(arguments):
    result = estimate_model(arguments.model, batch=arguments.batch, dtype=arguments.dtype,
                            channels_last=arguments.channels_last, image_size=arguments.image_size,
                            optimizer=arguments.optimizer, baseline=not arguments.no_baseline)
    print(result)
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as handle:
            json.dump(result.to_dict(), handle, indent=1)
            handle.write("\n")
        print(f"written: {arguments.json}")
    return 0
