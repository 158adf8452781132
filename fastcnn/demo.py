"""``python -m fastcnn.demo``: train a small CNN on scikit-learn's handwritten digits twice, from
the same initialisation and data order: once in plain PyTorch, once converted with
``fastcnn.convert`` (fastcnn's conv2d, fused BN+ReLU and max-pool) and stepped with fastcnn's
cross-entropy and optimizer (``--optimizer``: Adam by default, AdamW, SGD with Nesterov momentum,
RMSprop, Adagrad or Adadelta, each against torch's own). ``--augment`` augments each batch on the
device with ``fastcnn.transforms`` (a random crop with padding and a small rotation, each image its
own, one launch per batch), the same augmented batch for both runs. Prints per-epoch loss and
accuracy side by side, the final test accuracy,
the largest difference between the two loss curves, and saves a PNG plot of both.

``torchrun --nproc-per-node=2 -m fastcnn.demo --distributed`` trains across processes instead
(gloo on CPU, NCCL with one GPU per process): the model's batch norms become SyncBatchNorm
(``nn.SyncBatchNorm.convert_sync_batchnorm``), ``fastcnn.convert`` gives them fastcnn's
SyncBatchNorm with the ReLU fused, and DistributedDataParallel trains it, each process on its
share of every batch; process 0 also trains the plain PyTorch model on the whole batch in one
process, the run the distributed one must match (batch norm over the same global batch), and
compares the two.

The data are the 1797 8×8 digit images that ship with scikit-learn (no download). On a GPU the
kernels run compiled and step times are shown; on CPU the demo turns on Triton's interpreter
(before the kernels are first used), so the same Triton code runs, slowly, and no time is shown.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import torch


def load_digits(seed):
    """(train images, train labels, test images, test labels): a stratified 80/20 split, pixels
    scaled by the training set's mean and standard deviation."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=0.2, random_state=seed,
                                                        stratify=labels)
    mean, std = train_x.mean(), train_x.std()
    return (train_x - mean) / std, train_y, (test_x - mean) / std, test_y


class Run:
    """One of the two trainings: model, optimizer, loss function, and what it recorded."""

    def __init__(self, name, model, optimizer, loss_function):
        self.name, self.model, self.optimizer, self.loss_function = name, model, optimizer, loss_function
        self.step_losses, self.epoch_rows, self.step_seconds = [], [], []

    def step(self, images, labels):
        synchronize = images.device.type == "cuda"
        began = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(images)
        loss = self.loss_function(logits, labels)
        loss.backward()
        self.optimizer.step()
        if synchronize:
            torch.cuda.synchronize()
        self.step_seconds.append(time.perf_counter() - began)
        self.step_losses.append(loss.item())
        return (logits.argmax(1) == labels).sum().item()

    @torch.no_grad()
    def test_accuracy(self, images, labels):
        self.model.eval()
        return (self.model(images).argmax(1) == labels).float().mean().item()


class DistributedRun(Run):
    """fastcnn's run across processes: the model under DistributedDataParallel, each process
    stepping on its share of every batch (``torch.tensor_split``: shares differ by one image at
    most) with the loss summed over its images and divided by the batch's size over the process
    count, as DDP averages the gradients: the gradient of the whole batch's mean loss. The
    losses and counts recorded are the whole batch's."""

    def __init__(self, model, optimizer):
        import fastcnn
        import torch.distributed as dist

        from torch.nn.parallel import DistributedDataParallel

        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
        super().__init__(f"fastcnn, {self.world} processes", DistributedDataParallel(model, device_ids=device_ids),
                         optimizer, None)
        self.cross_entropy = fastcnn.cross_entropy

    def step(self, images, labels):
        import torch.distributed as dist

        share = torch.tensor_split(torch.arange(len(labels), device=labels.device), self.world)[self.rank]
        self.loss_function = lambda logits, target: (self.cross_entropy(logits, target, reduction="sum")
                                                     * self.world / len(labels))
        correct = super().step(images[share], labels[share])
        totals = torch.tensor([self.step_losses[-1] / self.world, correct], dtype=torch.float64, device=images.device)
        dist.all_reduce(totals)
        self.step_losses[-1] = totals[0].item()
        return int(totals[1].item())


def model_device(model):
    return next(model.parameters()).device


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for run, style in zip(runs, ("-", "--")):
        losses.plot(run.step_losses, style, label=run.name)
        accuracy.plot(range(1, len(run.epoch_rows) + 1), [row["test_accuracy"] for row in run.epoch_rows], style + "o",
                      label=run.name)
    losses.set(xlabel="step", ylabel="training loss", yscale="log", title="loss per step")
    accuracy.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch")
    accuracy.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for axes in (losses, accuracy):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.suptitle(f"scikit-learn digits: {runs[0].name} vs {runs[1].name}, same initialisation and data order")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --optimizer: (torch's class name, its keyword arguments beside lr); fastcnn.optim has the same names.
OPTIMIZERS = {
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {"weight_decay": 1e-2}),
    "sgd": ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    "rmsprop": ("RMSprop", {"alpha": 0.9, "eps": 1e-3, "momentum": 0.9}),
    "adagrad": ("Adagrad", {}),
    "adadelta": ("Adadelta", {}),
}
# Learning rates that train the small CNN in a few epochs (the default --lr is Adam's).
DEFAULT_LR = {"adam": 1e-2, "adamw": 1e-2, "sgd": 5e-2, "rmsprop": 1e-3, "adagrad": 5e-2, "adadelta": 1.0}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastcnn.demo",
        description="Train a small CNN on scikit-learn's digits twice from the same start: plain PyTorch, and "
                    "converted with fastcnn (its cross-entropy and optimizer too); compare the runs.")
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 on a GPU, 3 on CPU")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                        help="fastcnn.optim's and torch.optim's class of that name (default: adam)")
    parser.add_argument("--lr", type=float, default=None, help="default: a rate that suits --optimizer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps")
    parser.add_argument("--augment", action="store_true",
                        help="augment each batch with fastcnn.transforms: random crop with 1 pixel of padding and a "
                             "rotation of up to 10 degrees, each image its own (slow through the interpreter)")
    parser.add_argument("--plot", default="fastcnn_demo.png", help="where to save the PNG plot ('' for none)")
    parser.add_argument("--min-accuracy", type=float, default=0.95,
                        help="exit with status 1 when fastcnn's final test accuracy is below this")
    parser.add_argument("--distributed", action="store_true",
                        help="under torchrun: DistributedDataParallel with fastcnn's SyncBatchNorm, each process on "
                             "its share of every batch, against one process on the whole batch")
    args = parser.parse_args(argv)
    if args.distributed and args.augment:
        parser.error("--augment is not offered with --distributed")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if dist.get_rank() != 0:  # process 0 reports for all
            sys.stdout, args.plot = open(os.devnull, "w"), ""
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
        # The interpreter evaluates masked-off lanes too (0/0 there is never stored); numpy warns.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime.interpreter")
    import fastcnn
    from fastcnn.models import SmallCNN
    from tqdm.auto import tqdm

    epochs = args.epochs or (10 if device.type == "cuda" else 3)
    optimizer_name, optimizer_options = OPTIMIZERS[args.optimizer]
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    where = fastcnn.info()
    print(f"fastcnn {where['fastcnn']} | torch {where['torch']} | triton {where['triton']} | {where['device']}")
    backend = where["kernels_on_cuda_tensors"] if device.type == "cuda" else where["kernels_on_cpu_tensors"]
    if backend == "interpreted":
        print("fastcnn's Triton kernels run through Triton's interpreter on this CPU: slow, and no step times "
              "are shown (they would not say anything about a GPU)")
    else:
        print(f"fastcnn kernels on {device.type} tensors: {backend}")

    train_x, train_y, test_x, test_y = (t.to(device) for t in load_digits(args.seed))
    print(f"data: scikit-learn digits, {len(train_x)} training and {len(test_x)} test images of 8x8, 10 classes")
    torch.manual_seed(args.seed)
    torch_model = SmallCNN().to(device)
    norm = "BatchNorm2d"
    if args.distributed:  # torch's way to SyncBatchNorm first, then fastcnn's modules
        import copy

        norm = "SyncBatchNorm"
        fastcnn_model, report = fastcnn.convert(
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(torch_model)), inplace=True, report=True)
    else:
        fastcnn_model, report = fastcnn.convert(torch_model, report=True)
    with_relu = list(dict.fromkeys(name for name, detail in report.fused if "statistics from" not in detail))
    in_pool = sum("max-pool's prologue" in detail for _, detail in report.fused)
    from_moments = sum("statistics from" in detail for _, detail in report.fused)
    print(f"fastcnn.convert: {len(report.replaced)} modules replaced, {len(with_relu)} {norm}+ReLU fused "
          f"({', '.join(with_relu)}), {in_pool} of them in the next max-pool's prologue, {from_moments} taking "
          f"their statistics from their convolution's moments; "
          f"loss: fastcnn.cross_entropy; optimizer: "
          f"fastcnn.optim.{optimizer_name} (lr {lr:g})")
    assert all(torch.equal(a, b) for a, b in zip(torch_model.state_dict().values(),
                                                 fastcnn_model.state_dict().values()))
    torch_run = Run("PyTorch", torch_model, getattr(torch.optim, optimizer_name)(torch_model.parameters(), lr=lr,
                                                                                **optimizer_options),
                    torch.nn.functional.cross_entropy)
    fastcnn_optimizer = getattr(fastcnn.optim, optimizer_name)(fastcnn_model.parameters(), lr=lr, **optimizer_options)
    if args.distributed:
        fastcnn_run = DistributedRun(fastcnn_model, fastcnn_optimizer)
        torch_run.name = "PyTorch, 1 process"
        print(f"distributed: {fastcnn_run.world} processes ({dist.get_backend()}), DistributedDataParallel, each on "
              f"its share of every batch of {args.batch}; PyTorch trains the plain model on the whole batch in one process "
              f"(each process repeats it), the run the distributed one must match")
    else:
        fastcnn_run = Run("fastcnn", fastcnn_model, fastcnn_optimizer, fastcnn.cross_entropy)
    runs = [torch_run, fastcnn_run]

    augment = None
    if args.augment:
        from fastcnn import transforms as T

        background = float(train_x.min())  # a blank pixel, normalised
        augment = T.Compose([T.RandomCrop(8, padding=1, fill=background),
                             T.RandomRotation(10, interpolation="bilinear", fill=background)])
        print("augmentation: fastcnn.transforms.RandomCrop(8, padding=1) and RandomRotation(10), each image its own "
              "draw, one launch per batch; both runs train on the same augmented batches")
    order = torch.Generator().manual_seed(args.seed)
    timed = device.type == "cuda"
    header = f"{'epoch':>5} | {'loss':>8} {'':8} | {'train acc':>9} {'':9} | {'test acc':>8} {'':8}"
    names = f"{'':>5} | {'PyTorch':>8} {'fastcnn':>8} | {'PyTorch':>9} {'fastcnn':>9} | {'PyTorch':>8} {'fastcnn':>8}"
    if timed:
        header += " | step ms (median)"
        names += f" | {'PyTorch':>7} {'fastcnn':>7}"
    rows = []
    for epoch in range(1, epochs + 1):
        permutation = torch.randperm(len(train_x), generator=order).to(device)
        batches = [permutation[i:i + args.batch] for i in range(0, len(train_x), args.batch)][:args.max_steps]
        correct = [0, 0]
        first_step = [len(run.step_losses) for run in runs]
        for indices in tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="step", leave=False, file=sys.stderr,
                            disable=sys.stdout.name == os.devnull):
            images = train_x[indices] if augment is None else augment(train_x[indices])
            for index, run in enumerate(runs):
                correct[index] += run.step(images, train_y[indices])
        seen = sum(len(indices) for indices in batches)
        for index, run in enumerate(runs):
            run.epoch_rows.append(dict(
                loss=statistics.fmean(run.step_losses[first_step[index]:]), train_accuracy=correct[index] / seen,
                test_accuracy=run.test_accuracy(test_x, test_y),
                step_ms=1e3 * statistics.median(run.step_seconds[first_step[index]:])))
        ours, theirs = runs[1].epoch_rows[-1], runs[0].epoch_rows[-1]
        row = (f"{epoch:>5} | {theirs['loss']:>8.4f} {ours['loss']:>8.4f} | {theirs['train_accuracy']:>9.2%} "
               f"{ours['train_accuracy']:>9.2%} | {theirs['test_accuracy']:>8.2%} {ours['test_accuracy']:>8.2%}")
        if timed:
            row += f" | {theirs['step_ms']:>7.2f} {ours['step_ms']:>7.2f}"
        rows.append(row)
        if epoch == 1:
            print(header + "\n" + names)
        print(row)

    largest = max(abs(a - b) for a, b in zip(runs[0].step_losses, runs[1].step_losses))
    accuracy = runs[1].epoch_rows[-1]["test_accuracy"]
    print(f"final test accuracy: PyTorch {runs[0].epoch_rows[-1]['test_accuracy']:.2%}, fastcnn {accuracy:.2%}")
    print(f"largest difference between the two loss curves over {len(runs[0].step_losses)} steps: {largest:.2e}")
    if timed:
        print("step ms: forward, backward and optimizer step; fastcnn's first epoch includes compiling and "
              "autotuning its kernels")
    if args.plot:
        plot(runs, args.plot)
        print(f"plot of both loss curves: {os.path.abspath(args.plot)}")
    if args.distributed:
        dist.destroy_process_group()
    if accuracy < args.min_accuracy:
        print(f"fastcnn's test accuracy {accuracy:.2%} is below {args.min_accuracy:.0%}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
