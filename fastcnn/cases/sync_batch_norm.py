"""sync_batch_norm's benchmark cases: SyncBatchNorm + ReLU forward + backward in training on
ResNet-50's activations, in a group of one process (what a step costs beside its collectives,
which here gather and reduce one process's vectors), fastcnn's fused against torch's
SyncBatchNorm (its autograd function, which the module would skip with one process) and a ReLU.
Each case's labels record the collectives one step made, counted on its first run."""
import torch
import torch.distributed as dist

from ..benchmarking import ACTIVATION_BATCHES, BenchmarkCase, element_size, random_input, training_steps
from ..nn import SyncBatchNorm
from ..ops.sync_batch_norm import bytes_moved, synchronised_batch_norm
from .batch_norm import MEMORY_BOUND_KERNELS as BATCH_NORM_KERNELS
from .batch_norm import resnet50_activation_shapes
from ._static import empty, per_layout_and_dtype

SUITES = {"resnet50": resnet50_activation_shapes}
PROFILE_OPS = ("sync_batch_norm_relu",)
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_gather_single", "all_reduce", "broadcast")


def one_process_group(device):
    """The default process group, initialised with this process alone when there is none (NCCL
    for CUDA, gloo for CPU tensors, an in-memory store)."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)
    return dist.group.WORLD


class _SynchronisedReLU(torch.nn.Module):
    """fastcnn's SyncBatchNorm + ReLU, synchronised over a one-process group."""

    def __init__(self, channels, group):
        super().__init__()
        self.norm, self.group = SyncBatchNorm(channels), group

    def forward(self, input):
        norm = self.norm
        return synchronised_batch_norm("fastcnn.nn.SyncBatchNorm", input, norm.running_mean, norm.running_var,
                                       norm.weight, norm.bias, norm.momentum, norm.eps, self.group, 1, "relu")


class _TorchSynchronisedReLU(torch.nn.Module):
    """torch's SyncBatchNorm autograd function over a one-process group, then ReLU; on CPU tensors,
    which it does not run on, F.batch_norm (the same definition for one process)."""

    def __init__(self, channels, group):
        super().__init__()
        self.norm, self.group = torch.nn.BatchNorm2d(channels), group

    def forward(self, input):
        norm = self.norm
        if input.is_cuda:
            from torch.nn.modules._functions import SyncBatchNorm as TorchSyncBatchNorm

            out = TorchSyncBatchNorm.apply(input, norm.weight, norm.bias, norm.running_mean, norm.running_var,
                                           norm.eps, norm.momentum, self.group, 1)
        else:
            out = norm(input)
        return torch.relu(out)


def collectives_of(step):
    """How many collectives of torch.distributed one call of ``step`` makes."""
    count = [0]
    saved = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def counting(original):
        def call(*args, **kwargs):
            count[0] += 1
            return original(*args, **kwargs)
        return call
    try:
        for name, original in saved.items():
            setattr(dist, name, counting(original))
        step()
    finally:
        for name, original in saved.items():
            setattr(dist, name, original)
    return count[0]


def _case(channels, size, batch, dtype, layout):
    labels = {}

    def build(device):
        group = one_process_group(device)
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input((batch, channels, size, size), dtype, layout, device, generator).requires_grad_()
        steps = training_steps(_SynchronisedReLU(channels, group).to(device),
                               _TorchSynchronisedReLU(channels, group).to(device), input)
        labels.update({f"collectives_per_step_{name}": collectives_of(steps[name]) for name in ("fastcnn", "eager")})
        return steps

    return BenchmarkCase("sync_batch_norm_relu", f"{channels}x{size}/n{batch}", dtype, layout,
                         {"bytes": bytes_moved(batch * channels * size * size, element_size(dtype), True)}, build,
                         labels=labels)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """SyncBatchNorm + ReLU forward + backward in training on ResNet-50's activations, one process."""
    activations = [(5, 7)] if smoke else resnet50_activation_shapes()
    activations = activations[:3] if quick else activations
    batches = (2,) if smoke else ACTIVATION_BATCHES[:1]
    return [_case(channels, size, batch, dtype, layout) for channels, size in activations for batch in batches
            for dtype in dtypes for layout in layouts]


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = BATCH_NORM_KERNELS


def static_launches(kernel_module, options):
    """SyncBatchNorm + ReLU (C128 28x28, 8 processes' summaries) forward and backward in training
    as fastcnn/ops/sync_batch_norm.py launches them: the summary (from a pass, and from a
    convolution's moments), the merge, batch norm's apply, the backward's sums and its apply
    averaged over the count in the statistics."""
    def sync_bn_relu(dtype, channels_last):
        batch_norm, sync = kernel_module("batch_norm"), kernel_module("sync_batch_norm")
        c = 128
        x, y, dy, dx = (empty((32, c, 28, 28), dtype, channels_last).view(32, c, -1) for _ in range(4))
        summary, summaries = torch.empty((4, c)), torch.empty((8, 4, c))
        sync.summary(x, summary)
        sync.summary_from_moments(x, torch.empty((kernel_module("moments").moment_slots(32 * 28 * 28), 4, c)),
                                  summary)
        stats = torch.empty((sync.SYNC_STATISTICS_ROWS, c))
        weight, bias = torch.ones(c), torch.zeros(c)
        sync.statistics_from_summaries(x, summaries, stats, torch.zeros(c), torch.ones(c), weight, bias,
                                       momentum=0.1, eps=1e-5)
        batch_norm.apply(x, None, y, stats, weight, bias, training=True, kind="relu", parameter=0.0)
        sums, _ = batch_norm.backward_sums(dy, x, None, stats, weight, bias, torch.empty(c), torch.empty(c),
                                           training=True, kind="relu", parameter=0.0)
        batch_norm.backward_apply(dy, x, None, dx, None, stats, weight, bias, sums, training=True, kind="relu",
                                  parameter=0.0, count_in_stats=True)
    return per_layout_and_dtype(options, "sync batchnorm+relu N32 C128 28x28", sync_bn_relu)
