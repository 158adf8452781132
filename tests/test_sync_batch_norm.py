"""fastcnn.nn.SyncBatchNorm and fastcnn.sync_batch_norm: batch norm over every process's batch.

Across processes (gloo, 2 and 3 CPU processes under torch.distributed.run, each run bounded by
a timeout so that a hung collective fails): tests/sync_batch_norm_worker.py checks each
process's output, input and residual gradients, its share of the parameters' gradients and the
running statistics against the float64 definition on the whole batch (uneven batches, an empty
one, momentum None, channels_last, fp16/bf16, fused activations and residuals, eval), the
collectives (one all-gather forward, one all-reduce backward), and converted models under DDP
and FSDP2 against one process on the whole batch. In this process (a group of one): the
synchronised path's kernels against float64, the fallbacks, the errors, convert and
convert_sync_batchnorm.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import fastcnn
from fastcnn.dtypes import tolerance
from fastcnn.ops.sync_batch_norm import synchronised_batch_norm
from fastcnn.testing import DEVICE, count_launches, fresh_seed, in_layout, make_tensor, relative_error

WORKER = Path(__file__).with_name("sync_batch_norm_worker.py")
needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _without_fully_shard():
    """{"fsdp2"} where this torch has no FSDP2 (before 2.6), else nothing."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return {"fsdp2"}
    return set()


@needs_gloo
@pytest.mark.parametrize("processes", [2, 3])
def test_sync_batch_norm_across_processes(processes, tmp_path):
    seed = fresh_seed()
    print(f"seed {seed}")
    environment = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), "--out", str(tmp_path),
               "--seed", str(seed)]
    # A hung collective ends here, not in CI's own timeout.
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    failures = []
    for rank in range(processes):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(results) >= 30, sorted(results)
        failures += [f"rank {rank} {check}: {error:.3g} > {bound:.3g}" for check, (error, bound) in results.items()
                     if not error <= bound]
        models = {check.split("/")[0] for check in results} & {"ddp", "fsdp2", "converted_resnet"}
        assert models == ({"ddp", "fsdp2"} - _without_fully_shard() if processes == 2 else {"converted_resnet"}), models
    assert not failures, "\n".join(failures)


@pytest.fixture
def one_process_group():
    """The default group, this process alone (NCCL for the GPU's tensors, else gloo), for the
    synchronised path's own tests; one another test of this process left (a benchmark case's,
    fastcnn/cases/sync_batch_norm.py) serves as well."""
    if dist.is_initialized():
        assert dist.get_world_size() == 1, "a test process holds a group of several processes"
        yield dist.group.WORLD
        return
    backend = "nccl" if DEVICE == "cuda" and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def _reference(x, weight, bias, residual, activation, eps=1e-5):
    """act(bn(x) + r) in float64 with the batch's statistics, autograd's gradients."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps) * weight.view(shape) + bias.view(shape)
    if residual is not None:
        y = y + residual
    return {"relu": torch.relu, "silu": nn.functional.silu, None: lambda t: t}[activation](y)


@needs_gloo
@pytest.mark.every_triton
@pytest.mark.parametrize("shape, layout, activation, with_residual, dtype", [
    ((3, 5, 7, 6), "contiguous", "relu", False, torch.float32),
    ((2, 6, 5, 3), "channels_last", "silu", True, torch.float32),
    ((4, 3, 9), "sliced", None, True, torch.float32),
    ((3, 5, 4, 7), "channels_last", "relu", True, torch.float16),
])
def test_synchronised_path_in_one_process(one_process_group, shape, layout, activation, with_residual, dtype):
    """The summary, the merge of one process's summary, the apply, the backward's sums (all-reduced
    over one process) and its apply over the count in the statistics: against float64."""
    seed = fresh_seed()
    print(f"seed {seed}")
    generator = torch.Generator().manual_seed(seed)
    channels = shape[1]
    x = (make_tensor(shape, generator=generator) + 3.0).to(dtype)
    residual = make_tensor(shape, generator=generator).to(dtype) if with_residual else None
    dy = make_tensor(shape, generator=generator).to(dtype)
    weight, bias = (make_tensor((channels,), generator=generator).requires_grad_() for _ in range(2))
    running_mean, running_var = torch.zeros(channels, device=DEVICE), torch.ones(channels, device=DEVICE)
    x_ours = in_layout(x, layout).requires_grad_()
    r_ours = None if residual is None else residual.clone().requires_grad_()
    with count_launches() as launched:
        out = synchronised_batch_norm("fastcnn.sync_batch_norm", x_ours, running_mean, running_var, weight, bias, 0.1,
                                      1e-5, one_process_group, 1, activation, r_ours)
        out.backward(dy)
    assert launched["sync_batch_norm"] >= 4 and launched["batch_norm"] >= 1, launched
    x64 = x.detach().double().requires_grad_()
    r64 = None if residual is None else residual.detach().double().requires_grad_()
    w64, b64 = (t.detach().double().requires_grad_() for t in (weight, bias))
    expected = _reference(x64, w64, b64, r64, activation)
    expected.backward(dy.double())
    count = x.numel() // channels
    summed = tolerance(torch.float32, count)
    assert relative_error(out, expected) <= tolerance(dtype)
    assert relative_error(x_ours.grad, x64.grad) <= tolerance(dtype)
    assert relative_error(weight.grad, w64.grad) <= summed and relative_error(bias.grad, b64.grad) <= summed
    if residual is not None:
        assert relative_error(r_ours.grad, r64.grad) <= tolerance(dtype)
    dims = [0] + list(range(2, x.dim()))
    assert relative_error(running_mean, 0.1 * x.double().mean(dims)) <= summed
    assert relative_error(running_var, 0.9 + 0.1 * x.double().var(dims)) <= summed


@needs_gloo
@pytest.mark.every_triton
def test_statistics_from_a_convolutions_moments(one_process_group):
    """A SyncBatchNorm after a convolution takes its summary from the convolution's moments (no
    pass over its input): the same statistics as from the pass."""
    generator = torch.Generator().manual_seed(fresh_seed())
    x = make_tensor((3, 4, 9, 7), generator=generator)
    conv_weight = make_tensor((6, 4, 3, 3), generator=generator)
    conv_out, moments = fastcnn.conv2d_with_moments(x, conv_weight, None, 1, 1, 1, 1)
    results = []
    for given in (moments, None):
        running_mean, running_var = torch.zeros(6, device=DEVICE), torch.ones(6, device=DEVICE)
        with count_launches() as launched:
            results.append((synchronised_batch_norm("op", conv_out, running_mean, running_var, None, None, 0.1, 1e-5,
                                                    one_process_group, 1, "relu", None, given), running_var))
        assert launched["sync_batch_norm"] == (2 if given is not None else 3), launched  # summary, merge (+ pass)
    (with_moments, var_moments), (with_pass, var_pass) = results
    assert relative_error(with_moments, with_pass) <= tolerance(torch.float32, 10)
    assert relative_error(var_moments, var_pass) <= tolerance(torch.float32, 10)


@needs_gloo
def test_prelu_fused_into_the_synchronised_path(one_process_group):
    """A PReLU (one slope per channel) as the fused activation: its slopes read in the apply, their
    gradient (this process's share) summed in the backward's sums pass; against float64."""
    generator = torch.Generator().manual_seed(fresh_seed())
    x = make_tensor((3, 4, 5, 6), generator=generator)
    dy = make_tensor((3, 4, 5, 6), generator=generator)
    prelu = nn.PReLU(4).to(DEVICE)
    with torch.no_grad():
        prelu.weight.copy_(make_tensor((4,), generator=generator))
    x_ours = x.clone().requires_grad_()
    with count_launches() as launched:
        out = synchronised_batch_norm("op", x_ours, None, None, None, None, 0.1, 1e-5, one_process_group, 1, prelu)
        out.backward(dy)
    assert launched["sync_batch_norm"] >= 4, launched
    x64 = x.double().requires_grad_()
    slope64 = prelu.weight.detach().double().requires_grad_()
    expected = nn.functional.prelu(_reference(x64, torch.ones(4, dtype=torch.float64),
                                              torch.zeros(4, dtype=torch.float64), None, None), slope64)
    expected.backward(dy.double())
    assert relative_error(out, expected) <= tolerance(torch.float32)
    assert relative_error(x_ours.grad, x64.grad) <= tolerance(torch.float32)
    assert relative_error(prelu.weight.grad, slope64.grad) <= tolerance(torch.float32, x.numel() // 4)


@pytest.mark.every_triton
@pytest.mark.parametrize("training", [True, False])
def test_without_distributed_it_is_batch_norm(training):
    """Without a process group of several processes (or in eval) the module is batch norm, as
    torch's SyncBatchNorm is F.batch_norm there (which, with a group of one, refuses CPU tensors:
    BatchNorm2d is the reference)."""
    generator = torch.Generator().manual_seed(fresh_seed())
    ours, theirs = fastcnn.nn.SyncBatchNorm(5, activation="relu").to(DEVICE), nn.BatchNorm2d(5).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    ours.train(training)
    theirs.train(training)
    x = make_tensor((3, 5, 4, 6), generator=generator)
    assert relative_error(ours(x), torch.relu(theirs(x))) <= tolerance(torch.float32)
    assert relative_error(ours.running_var, theirs.running_var) <= tolerance(torch.float32)
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("shape, fragment", [((5,), "expected at least 2D input"),
                                             ((3, 0, 4), "number of input channels should be non-zero")])
def test_errors_as_torchs(shape, fragment):
    """The module's input checks raise as torch's SyncBatchNorm's, before any launch."""
    x = torch.ones(shape)
    with pytest.raises(ValueError, match=fragment):
        nn.SyncBatchNorm(5)(x)
    with count_launches() as launched, pytest.raises(ValueError, match=fragment):
        fastcnn.nn.SyncBatchNorm(5)(x)
    assert not launched


def test_convert_swaps_sync_batch_norm_and_fuses_its_activation_and_residual():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.SyncBatchNorm(4)
            self.conv2, self.bn2, self.relu = nn.Conv2d(4, 4, 3, padding=1), nn.SyncBatchNorm(4), nn.ReLU()

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + x)

    converted, report = fastcnn.convert(Block(), report=True)
    replaced = dict(report.replaced)
    assert type(converted.bn1) is fastcnn.nn.SyncBatchNorm and converted.bn1.activation == ("relu", 0.0)
    assert "fastcnn.nn.SyncBatchNorm + relu" in replaced["bn1"]
    assert "fastcnn.nn.SyncBatchNorm + residual + relu" in replaced["bn2"]
    fused = [detail for name, detail in report.fused if name == "bn1"]
    assert any("statistics from the epilogue of module 'conv1'" in detail for detail in fused), fused
    assert not any("into module" in detail for _, detail in report.fused)  # no prologue: its own pass


def test_convert_sync_batchnorm_keeps_fastcnns_fusions():
    """torch.nn.SyncBatchNorm.convert_sync_batchnorm on a converted model gives fastcnn's
    SyncBatchNorm, the fused activation kept and the parameters shared; on a model without
    fastcnn's norms it is torch's own; fastcnn's class converts torch's norms too."""
    from fastcnn.models import TinyResNet

    converted = fastcnn.convert(TinyResNet())
    activations = {name: m.activation for name, m in converted.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    weights = {name: m.weight for name, m in converted.named_modules() if name in activations}
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(converted)
    norms = {name: m for name, m in synced.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert {name: type(m) for name, m in norms.items()} == {name: fastcnn.nn.SyncBatchNorm for name in activations}
    assert {name: m.activation for name, m in norms.items()} == activations
    assert all(norms[name].weight is weights[name] for name in norms)
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    assert type(plain[1]) is nn.SyncBatchNorm
    ours = fastcnn.nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    assert type(ours[1]) is fastcnn.nn.SyncBatchNorm


@pytest.mark.every_triton
def test_converted_then_synchronised_model_computes_as_before():
    """Without a process group the SyncBatchNorms of a converted-then-synchronised TinyResNet
    normalise as its batch norms did (in their own passes now, not in the convolutions')."""
    from fastcnn.models import TinyResNet

    torch.manual_seed(fresh_seed())
    model = TinyResNet().to(DEVICE)
    converted = fastcnn.convert(model)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(fastcnn.convert(model))
    x = make_tensor((2, 3, 12, 12), device=DEVICE)
    assert relative_error(synced(x), converted(x)) <= tolerance(torch.float32, 100)


@needs_gloo
def test_distributed_demo_matches_one_process(tmp_path):
    """The README's ``torchrun --nproc-per-node=2 -m fastcnn.demo --distributed``, shortened to one
    step: DDP with fastcnn's SyncBatchNorm (ReLU fused, statistics from the convolutions'
    moments) follows one process training torch's model on the whole batch."""
    environment = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "fastcnn.demo", "--distributed", "--epochs", "1",
               "--max-steps", "1", "--min-accuracy", "0", "--plot", str(tmp_path / "demo.png")]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    largest = [line for line in finished.stdout.splitlines() if line.startswith("largest difference")]
    assert largest and float(largest[0].split()[-1]) < 1e-5, finished.stdout
    assert "2 SyncBatchNorm+ReLU fused" in finished.stdout and "2 taking their statistics" in finished.stdout
    assert "distributed: 2 processes (gloo)" in finished.stdout
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
