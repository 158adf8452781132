"""Run by tests/test_distributed.py under ``torch.distributed.run`` (2 CPU processes, gloo).

Each rank trains on its half of every batch; rank 0 then repeats the run without DDP and writes
what it found to ``--out``:
* plain: a converted conv/ReLU/max-pool/linear model (no batch norm, whose training statistics
  are per process by design) under DDP against one process on the combined batch;
* resnet: a converted TinyResNet (fused BN+ReLU) under DDP against torch's TinyResNet under DDP,
  both with per-process batch statistics as torch's BatchNorm2d has.
"""
import argparse
import json
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported, as in the test suite

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn.models import TinyResNet  # noqa: E402
from fastcnn.testing import flat_parameters, relative_error  # noqa: E402

STEPS = 3
BATCH = 8


def plain_model():
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                         nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(8 * 2 * 2, 5))


def batches(seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, 3, 12, 12, generator=generator), torch.randint(0, 5, (BATCH,), generator=generator))
            for _ in range(STEPS)]


def train(model, data, loss_fn, optimizer_class, shard=None):
    optimizer = optimizer_class(model.parameters(), lr=1e-2)
    losses = []
    for input, target in data:
        if shard is not None:
            input, target = input[shard::2], target[shard::2]
        optimizer.zero_grad()
        loss = loss_fn(model(input), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = batches(1234)
    result = {}

    torch.manual_seed(0)
    reference = plain_model()
    distributed = DistributedDataParallel(fastcnn.convert(reference))
    train(distributed, data, fastcnn.cross_entropy, fastcnn.optim.Adam, shard=rank)
    if rank == 0:
        single = fastcnn.convert(reference)
        train(single, data, fastcnn.cross_entropy, fastcnn.optim.Adam)
        result["plain"] = relative_error(flat_parameters(distributed.module), flat_parameters(single))

    torch.manual_seed(1)
    resnet = TinyResNet()
    converted, report = fastcnn.convert(resnet, report=True)
    fastcnn_ddp = DistributedDataParallel(converted)
    torch_ddp = DistributedDataParallel(resnet)
    fastcnn_losses = train(fastcnn_ddp, data, fastcnn.cross_entropy, fastcnn.optim.Adam, shard=rank)
    torch_losses = train(torch_ddp, data, nn.functional.cross_entropy, torch.optim.Adam, shard=rank)
    if rank == 0:
        result["resnet"] = relative_error(flat_parameters(converted), flat_parameters(resnet))
        result["resnet_losses"] = [fastcnn_losses, torch_losses]
        result["fused"] = len({name for name, _ in report.fused})  # norms fused with anything
        result["launches"] = dict(fastcnn._backend.launch_counts)
        with open(arguments.out, "w") as handle:
            json.dump(result, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
