"""Run by tests/test_sync_batch_norm.py under ``torch.distributed.run`` (2 or 3 CPU processes,
gloo). Every process draws the same global batches from ``--seed``, takes its own rows (uneven
counts, one process empty where a case says so), runs fastcnn's SyncBatchNorm forward and
backward on them and checks its slice against the float64 definition computed on the whole
batch: the output, the input's and the residual's gradient, its own share of the weight's and
the bias's gradients (sum over its rows), the running statistics; then the collectives counted,
and converted models (under DDP and FSDP2 with 2 processes, a converted-then-synchronised ResNet
under DDP with 3) against one process on the whole batch. Each case runs with the process counts
its batch sizes are given for (CI's time). Writes
``--out``/rank<R>.json: {check: [error, the bound it must not exceed]} (a count's error is its
distance from the expected count, bound 0).
"""
import argparse
import json
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported, as in the test suite

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn.cases.sync_batch_norm import collectives_of  # noqa: E402
from fastcnn.dtypes import tolerance  # noqa: E402
from fastcnn.testing import count_launches, make_tensor, relative_error  # noqa: E402

F = nn.functional
# (name, per-process batch sizes for the process counts it runs with, dtype, layout, activation,
# residual, momentum, steps): each case with 2 or 3 processes (CI's time), both with an empty batch.
CASES = [
    ("fp32_relu", {2: (3, 2)}, torch.float32, "contiguous", "relu", False, 0.1, 1),
    ("channels_last_silu_residual", {3: (1, 2, 2)}, torch.float32, "channels_last", "silu", True, 0.1, 1),
    ("relu_residual_from_output", {3: (2, 2, 1)}, torch.float32, "contiguous", "relu", True, 0.1, 1),
    ("one_empty", {2: (0, 3), 3: (2, 0, 3)}, torch.float32, "channels_last", None, False, 0.1, 1),
    ("momentum_none_two_steps", {2: (2, 2)}, torch.float32, "contiguous", "relu", False, None, 2),
    ("fp16", {3: (1, 2, 2)}, torch.float16, "channels_last", "relu", True, 0.1, 1),
    ("bf16", {2: (3, 2)}, torch.bfloat16, "contiguous", "relu", False, 0.1, 1),
]
CHANNELS, HEIGHT, WIDTH = 5, 7, 6


def reference(x, dy, weight, bias, residual, activation, sizes, eps=1e-5):
    """Float64 batch norm over the whole batch x (every process's rows), act(bn(x) + r), with
    each process's own copy of the weight and bias so that autograd gives each its share."""
    x = x.double().requires_grad_()
    residual = None if residual is None else residual.double().requires_grad_()
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    normalised = (x - mean) / torch.sqrt(var + eps)
    weights = [weight.double().clone().requires_grad_() for _ in sizes]
    biases = [bias.double().clone().requires_grad_() for _ in sizes]
    pieces, start = [], 0
    for size, w, b in zip(sizes, weights, biases):
        piece = normalised[start:start + size] * w[None, :, None, None] + b[None, :, None, None]
        pieces.append(piece)
        start += size
    y = torch.cat(pieces)
    if residual is not None:
        y = y + residual
    y = {"relu": F.relu, "silu": F.silu, None: lambda t: t}[activation](y)
    (y * dy.double()).sum().backward()
    count = x.numel() // x.shape[1]
    return dict(y=y.detach(), dx=x.grad, dr=None if residual is None else residual.grad,
                dw=[w.grad for w in weights], db=[b.grad for b in biases], mean=mean.flatten().detach(),
                unbiased=(var.flatten() * count / (count - 1)).detach())


def check_case(case, rank, world, generator, results):
    name, sizes_by_world, dtype, layout, activation, with_residual, momentum, steps = case
    sizes = sizes_by_world[world]
    total = sum(sizes)
    start = sum(sizes[:rank])
    module = fastcnn.nn.SyncBatchNorm(CHANNELS, momentum=momentum, activation=activation)
    with torch.no_grad():
        module.weight.copy_(make_tensor((CHANNELS,), device="cpu", generator=generator))
        module.bias.copy_(make_tensor((CHANNELS,), device="cpu", generator=generator))
    running_mean = torch.zeros(CHANNELS, dtype=torch.float64)
    running_var = torch.ones(CHANNELS, dtype=torch.float64)
    for step in range(steps):
        # Far from zero with a small spread: the shifted statistics must keep their digits.
        x = make_tensor((total, CHANNELS, HEIGHT, WIDTH), device="cpu", generator=generator) + 3.0
        dy = make_tensor((total, CHANNELS, HEIGHT, WIDTH), device="cpu", generator=generator)
        residual = (make_tensor((total, CHANNELS, HEIGHT, WIDTH), device="cpu", generator=generator)
                    if with_residual else None)
        x, dy = x.to(dtype), dy.to(dtype)
        residual = None if residual is None else residual.to(dtype)
        expected = reference(x, dy, module.weight.detach(), module.bias.detach(), residual, activation, sizes)
        mine = slice(start, start + sizes[rank])
        local = x[mine].clone()
        local = (local.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else local)
        local.requires_grad_()
        local_residual = None if residual is None else residual[mine].clone().requires_grad_()
        module.zero_grad()
        out = module(local) if residual is None else module(local, local_residual)
        out.backward(dy[mine])
        # The elementwise results round to the dtype; the parameters' gradients and the running
        # statistics are fp32 sums over the whole batch's values of a channel.
        elementwise, summed = tolerance(dtype), tolerance(torch.float32, total * HEIGHT * WIDTH)
        errors = {"out": relative_error(out, expected["y"][mine]),
                  "dx": relative_error(local.grad, expected["dx"][mine]),
                  "dw": relative_error(module.weight.grad, expected["dw"][rank]),
                  "db": relative_error(module.bias.grad, expected["db"][rank])}
        if residual is not None:
            errors["dr"] = relative_error(local_residual.grad, expected["dr"][mine])
        factor = 1.0 / (step + 1) if momentum is None else momentum
        running_mean = (1 - factor) * running_mean + factor * expected["mean"]
        running_var = (1 - factor) * running_var + factor * expected["unbiased"]
        errors["running_mean"] = relative_error(module.running_mean, running_mean)
        errors["running_var"] = relative_error(module.running_var, running_var)
        for check, error in errors.items():
            results[f"{name}/step{step}/{check}"] = [error, elementwise if check in ("out", "dx", "dr") else summed]
        if sizes[rank] == 0:  # an empty batch: its own share of the parameters' gradients is zero
            results[f"{name}/step{step}/empty_share"] = [float(module.weight.grad.abs().sum()), 0.0]
    # Every process holds the same running statistics, bit for bit.
    gathered = [torch.empty_like(module.running_mean) for _ in range(world)]
    dist.all_gather(gathered, module.running_mean)
    results[f"{name}/running_mean_equal_across_processes"] = [float(max((g - gathered[0]).abs().max()
                                                                      for g in gathered)), 0.0]
    module.eval()
    evaluated = module(local.detach())
    expected_eval = F.batch_norm(local.detach().double(), module.running_mean.double(), module.running_var.double(),
                                 module.weight.double(), module.bias.double(), False)
    if activation == "relu":
        expected_eval = F.relu(expected_eval)
    elif activation == "silu":
        expected_eval = F.silu(expected_eval)
    results[f"{name}/eval"] = [relative_error(evaluated, expected_eval), tolerance(dtype)]


def check_collectives(rank, world, generator, results):
    """One forward and backward of a SyncBatchNorm (+ReLU, with a residual): one all-gather and
    one all-reduce; eval: none."""
    module = fastcnn.nn.SyncBatchNorm(CHANNELS, activation="relu")
    x = make_tensor((2, CHANNELS, 3, 3), device="cpu", generator=generator).requires_grad_()
    residual = make_tensor((2, CHANNELS, 3, 3), device="cpu", generator=generator).requires_grad_()
    outputs = []
    with count_launches() as launched:
        forward = collectives_of(lambda: outputs.append(module(x, residual)))
    backward = collectives_of(lambda: outputs[0].sum().backward())
    results["launches/sync_batch_norm_kernels_ran"] = [int(launched["sync_batch_norm"] < 3), 0]
    module.eval()
    evaluation = collectives_of(lambda: module(x.detach()))
    # [|count - expected|, 0]: as every result, an error that must not exceed its bound
    results["collectives/forward"] = [abs(forward - 1), 0]
    results["collectives/backward"] = [abs(backward - 1), 0]
    results["collectives/eval"] = [evaluation, 0]


class SmallNet(nn.Module):
    """conv → SyncBatchNorm → ReLU → conv → SyncBatchNorm (+ identity) → ReLU → pool → linear."""

    def __init__(self, norm=nn.SyncBatchNorm):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = norm(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn2 = norm(6)
        self.relu = nn.ReLU()
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)) + y)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


def check_ddp_training(rank, world, results):
    """A converted SmallNet with SyncBatchNorm under DDP, each process on its (uneven) share of
    every batch, the loss a sum over its rows over the global batch size times the process count
    (DDP averages): the parameters, running statistics and losses of one process training torch's
    SmallNet with BatchNorm2d on the whole batch."""
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(7)
    reference = SmallNet(nn.BatchNorm2d)
    model, report = fastcnn.convert(SmallNet(), report=True)
    model.load_state_dict(reference.state_dict())
    swapped = sum("SyncBatchNorm" in detail for _, detail in report.replaced)
    results["ddp/converted_sync_batch_norms"] = [abs(swapped - 2), 0]
    ddp = DistributedDataParallel(model)
    results["ddp/loss"] = [train_against_one_process(ddp, reference, rank, world, 11, 2, (3, 6, 6)), 1e-4]
    results["ddp/state"] = [state_error(model, reference), 1e-4]


def train_against_one_process(model, reference, rank, world, seed, steps, shape):
    """Train ``model`` (each process on its uneven share of every batch, the loss a sum over its
    rows over the global batch size times the process count, as DDP and FSDP average) and
    ``reference`` (one process, the whole batch) with SGD; the largest relative difference of
    the losses."""
    ours = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    sizes = (3, 1, 2) if world == 3 else (3, 2)
    start = sum(sizes[:rank])
    largest = 0.0
    for _ in range(steps):
        x = torch.randn(sum(sizes), *shape, generator=generator)
        target = torch.randint(0, 4, (sum(sizes),), generator=generator)
        mine = slice(start, start + sizes[rank])
        ours.zero_grad()
        loss = F.cross_entropy(model(x[mine]), target[mine], reduction="sum") * world / sum(sizes)
        loss.backward()
        ours.step()
        theirs.zero_grad()
        reference_loss = F.cross_entropy(reference(x), target)
        reference_loss.backward()
        theirs.step()
        summed = loss.detach().clone()
        dist.all_reduce(summed)
        largest = max(largest, abs(float(summed) / world - float(reference_loss)) / abs(float(reference_loss)))
    return largest


def state_error(model, reference):
    """The largest relative error of ``model``'s floating state against ``reference``'s (a
    sharded parameter gathered whole)."""
    state, expected = model.state_dict(), reference.state_dict()
    full = {key: value.full_tensor() if hasattr(value, "full_tensor") else value for key, value in state.items()}
    return max(relative_error(full[key].double(), expected[key].double()) for key in expected
               if expected[key].is_floating_point())


def check_converted_then_synchronised(rank, world, results):
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` on a converted TinyResNet (its batch norms run in
    convolutions' and the max-pool's prologues, in another norm's pass, with fused activations
    and residuals): each becomes fastcnn's SyncBatchNorm with its activation, runs its own pass,
    and DDP training matches one process training torch's TinyResNet on the whole batch."""
    from torch.nn.parallel import DistributedDataParallel

    from fastcnn.models import TinyResNet

    torch.manual_seed(8)
    reference = TinyResNet(classes=4)
    converted = fastcnn.convert(reference)
    activations = [m.activation for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model = nn.SyncBatchNorm.convert_sync_batchnorm(converted)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    results["converted_resnet/torch_classes_left"] = [
        len(activations) - sum(type(m) is fastcnn.nn.SyncBatchNorm for m in norms), 0]
    results["converted_resnet/activations_lost"] = [
        int([m.activation for m in norms] != activations or sum(a is not None for a in activations) < 6), 0]
    ddp = DistributedDataParallel(model)
    results["converted_resnet/loss"] = [train_against_one_process(ddp, reference, rank, world, 13, 1, (3, 8, 8)),
                                        1e-4]
    results["converted_resnet/state"] = [state_error(model, reference), 1e-4]


def check_fsdp2(rank, world, results):
    """The converted SmallNet under FSDP2 (``fully_shard``, parameters sharded across the
    processes), trained as under DDP: the same as one process on the whole batch."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch before 2.6
        return
    torch.manual_seed(7)
    reference = SmallNet(nn.BatchNorm2d)
    model = fastcnn.convert(SmallNet())
    model.load_state_dict(reference.state_dict())
    fully_shard(model)
    results["fsdp2/loss"] = [train_against_one_process(model, reference, rank, world, 12, 2, (3, 6, 6)), 1e-4]
    results["fsdp2/state"] = [state_error(model, reference), 1e-4]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, required=True)
    arguments = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(arguments.seed)
    results = {}
    for case in CASES:
        if world in case[1]:
            check_case(case, rank, world, generator, results)
    check_collectives(rank, world, generator, results)
    # The converted models: with 2 processes DDP and FSDP2, with 3 a converted-then-synchronised ResNet.
    for check in ((check_ddp_training, check_fsdp2) if world == 2 else (check_converted_then_synchronised,)):
        check(rank, world, results)
    with open(os.path.join(arguments.out, f"rank{rank}.json"), "w") as file:
        json.dump(results, file)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
