"""``python -m fastcnn.demo``: train one small CNN twice from the same initialisation and data
order, once in plain PyTorch and once with fastcnn's conv2d, BN+ReLU, max-pool, cross-entropy and
Adam kernels, and print both losses side by side.

The data are synthetic 12x12 "glyphs": ten fixed random class templates plus noise, so the run
needs no download. On a GPU the kernels run compiled; on CPU the demo turns on Triton's
interpreter (before the kernels are first used) so the same Triton code runs, slowly.
"""
import argparse
import copy
import os
import time

import torch
from torch import nn


def make_data(samples, generator):
    templates = torch.randn(10, 1, 12, 12, generator=generator)
    labels = torch.randint(0, 10, (samples,), generator=generator)
    images = templates[labels] + 0.8 * torch.randn(samples, 1, 12, 12, generator=generator)
    return images, labels


def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 3 * 3, 10),
    )


def use_fastcnn_modules(model):
    """The demo's own small swap for ``nn.Sequential`` models (``fastcnn.convert`` will do this
    for any model): Conv2d, MaxPool2d and BatchNorm2d become fastcnn's modules with the same
    weights and buffers, and a BatchNorm2d followed by a ReLU becomes one fused BatchNorm2dReLU
    (the ReLU an Identity). State_dict keys are unchanged."""
    import fastcnn

    children = list(model.named_children())
    for index, (name, child) in enumerate(children):
        following = children[index + 1][1] if index + 1 < len(children) else None
        if type(child) is nn.Conv2d:
            swapped = fastcnn.nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                        child.padding, child.dilation, child.groups, child.bias is not None,
                                        child.padding_mode)
        elif type(child) is nn.MaxPool2d:
            swapped = fastcnn.nn.MaxPool2d(child.kernel_size, child.stride, child.padding, child.dilation,
                                           child.return_indices, child.ceil_mode)
        elif type(child) is nn.BatchNorm2d:
            fused = isinstance(model, nn.Sequential) and type(following) is nn.ReLU
            module_type = fastcnn.nn.BatchNorm2dReLU if fused else fastcnn.nn.BatchNorm2d
            swapped = module_type(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            if fused:
                setattr(model, children[index + 1][0], nn.Identity())
        else:
            use_fastcnn_modules(child)
            continue
        swapped.load_state_dict(child.state_dict())
        tensors = list(child.parameters()) + list(child.buffers())
        setattr(model, name, swapped.to(tensors[0].device) if tensors else swapped)
    return model


def train(model, optimizer, loss_function, images, labels, steps, batch, device):
    losses, seconds = [], 0.0
    for step in range(steps):
        start = (step * batch) % images.shape[0]
        x, y = images[start:start + batch].to(device), labels[start:start + batch].to(device)
        optimizer.zero_grad()
        loss = loss_function(model(x), y)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - began
        losses.append(loss.item())
    return losses, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults: 40 steps of 64 on a GPU; 20 of 32 on CPU, where the interpreter runs the kernels.
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.steps = args.steps or (40 if device.type == "cuda" else 20)
    args.batch = args.batch or (64 if device.type == "cuda" else 32)
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import fastcnn

    where = fastcnn.info()
    print(f"fastcnn {where['fastcnn']} | torch {where['torch']} | triton {where['triton']} | {where['device']}")
    backend = where["kernels_on_cuda_tensors"] if device.type == "cuda" else where["kernels_on_cpu_tensors"]
    print(f"fastcnn kernels on {device.type} tensors: {backend}")

    generator = torch.Generator().manual_seed(args.seed)
    images, labels = make_data(args.steps * args.batch, generator)
    torch.manual_seed(args.seed)
    reference_model = make_model().to(device)
    fastcnn_model = use_fastcnn_modules(copy.deepcopy(reference_model))

    reference_losses, reference_seconds = train(
        reference_model, torch.optim.Adam(reference_model.parameters(), lr=3e-3), nn.functional.cross_entropy,
        images, labels, args.steps, args.batch, device)
    fastcnn_losses, fastcnn_seconds = train(
        fastcnn_model, fastcnn.optim.Adam(fastcnn_model.parameters(), lr=3e-3), fastcnn.cross_entropy,
        images, labels, args.steps, args.batch, device)

    print("fastcnn side: fastcnn.nn.Conv2d, BatchNorm2dReLU, MaxPool2d, fastcnn.cross_entropy and "
          "fastcnn.optim.Adam (the linear head is torch's)")
    print(f"{'step':>5} {'torch':>12} {'fastcnn':>13} {'difference':>11}")
    for step, (theirs, ours) in enumerate(zip(reference_losses, fastcnn_losses)):
        if step % 5 == 0 or step == args.steps - 1:
            print(f"{step:>5} {theirs:>12.6f} {ours:>13.6f} {abs(theirs - ours):>11.2e}")
    largest = max(abs(a - b) for a, b in zip(reference_losses, fastcnn_losses))
    print(f"largest loss difference over {args.steps} steps: {largest:.2e}")
    if device.type == "cuda":
        print(f"optimizer time per step: torch {1e3 * reference_seconds / args.steps:.3f} ms, "
              f"fastcnn {1e3 * fastcnn_seconds / args.steps:.3f} ms (includes first-call compilation)")
    else:
        print("(CPU: fastcnn's kernels ran through Triton's interpreter; no timings shown)")


if __name__ == "__main__":
    main()
