"""Training-step throughput of torchvision's ResNet-18 and ResNet-50: eager PyTorch,
torch.compile, fastcnn-converted, and fastcnn-converted + torch.compile, in one process (and
fastcnn-converted without batch norm inside the convolutions, for what that fusion gains).

One step = forward + cross-entropy + backward + Adam step on a synthetic 224x224 batch, bf16
autocast, channels_last model and input; fastcnn's variants use fastcnn.cross_entropy and
fastcnn.optim.Adam, torch's use F.cross_entropy and torch.optim.Adam(fused=True). Figures:
images/s (median step time over CUDA events), speedup over eager and over torch.compile, peak
memory of a step, and the first step's cost (compile and autotune). Goal (README): fastcnn
>= 1.15x eager and >= 1.0x torch.compile with peak memory <= eager's.

``FASTCNN_BENCH_DRY_RUN=1`` (scripts/gpu_check.sh --dry-run) runs the same code on the CPU,
kernels through Triton's interpreter, on fastcnn.models.TinyResNet with 16x16 images, one timed
step each, so that the benchmark cannot rot between GPU sessions; its figures are marked
``dry_run`` and say nothing about speed.
"""
import time

import pytest
import torch

import fastcnn
from fastcnn.benchmarking import DRY_RUN, cuda_time_ms
from fastcnn.models import TinyResNet

# torchvision models on synthetic 224x224 batches, bf16 autocast, channels_last.
TRAINING_MODELS = {"tiny_resnet": 2} if DRY_RUN else {"resnet18": 128, "resnet50": 64}  # name -> batch
TRAINING_IMAGE_SIZE = 16 if DRY_RUN else 224
DEVICE = "cpu" if DRY_RUN else "cuda"

# fastcnn_bn_apart: converted without batch norm inside the convolutions (convert's
# batch_norm_in_conv=False), to show what that fusion gains.
VARIANTS = ("eager", "torch_compile", "fastcnn", "fastcnn_compile", "fastcnn_bn_apart")
# A dry run traces the compiled variants as on a GPU (dynamo, AOTAutograd, fastcnn's operators in
# the graph) but skips inductor's CPU code generation: C++ builds that take minutes and say nothing
# about the Triton code inductor writes for a GPU.
COMPILE_BACKEND = "aot_eager" if DRY_RUN else "inductor"


def _model(model_name):
    if model_name == "tiny_resnet":
        return TinyResNet(classes=1000)
    torchvision = pytest.importorskip("torchvision")
    return getattr(torchvision.models, model_name)()


def _time_ms(step):
    if DEVICE == "cuda":
        return cuda_time_ms(step, warmup=3, repeats=10, flush_l2=False)
    began = time.perf_counter()
    step()
    return (time.perf_counter() - began) * 1e3


def _training_step(model_name, variant, batch):
    torch.manual_seed(0)
    model = _model(model_name).to(DEVICE).to(memory_format=torch.channels_last)
    uses_fastcnn = variant.startswith("fastcnn")
    if uses_fastcnn:
        model = fastcnn.convert(model, inplace=True, batch_norm_in_conv=variant != "fastcnn_bn_apart")
        optimizer = fastcnn.optim.Adam(model.parameters(), lr=1e-3)
        loss_function = fastcnn.cross_entropy
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        loss_function = torch.nn.functional.cross_entropy
    forward = torch.compile(model, backend=COMPILE_BACKEND) if variant.endswith("compile") else model
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    images = torch.randn(batch, 3, TRAINING_IMAGE_SIZE, TRAINING_IMAGE_SIZE, device=DEVICE,
                         generator=generator).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), device=DEVICE, generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = loss_function(forward(images), labels)
        loss.backward()
        optimizer.step()
    return step


@pytest.mark.parametrize("model_name", list(TRAINING_MODELS))
def test_training_throughput(benchmark, model_name, record_result):
    """All four variants are measured here, one after the other in one process, so their ratios
    are comparable; pytest-benchmark's own timing is of the fastcnn variant."""
    batch = TRAINING_MODELS[model_name]
    times_ms, peak_bytes, first_step_s = {}, {}, {}
    cuda = DEVICE == "cuda"
    for name in VARIANTS:
        torch._dynamo.reset()
        step = _training_step(model_name, name, batch)
        began = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        first_step_s[name] = time.perf_counter() - began
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak_bytes[name] = torch.cuda.max_memory_allocated()
        times_ms[name] = _time_ms(step)
        if name == "fastcnn":
            benchmark.group = f"train-{model_name}-n{batch}"
            benchmark.pedantic(lambda: (step(), torch.cuda.synchronize() if cuda else None), rounds=5 if cuda else 1,
                               warmup_rounds=1 if cuda else 0)
        step = None  # free this variant's model and optimizer before the next one
    for name in VARIANTS:
        figures = {
            "suite": "training", "op": "train_step", "case": f"{model_name}/n{batch}/bf16/channels_last",
            "implementation": name, "median_ms": times_ms[name], "images_per_s": batch / (times_ms[name] * 1e-3),
            "speedup_vs_eager": times_ms["eager"] / times_ms[name],
            "speedup_vs_torch_compile": times_ms["torch_compile"] / times_ms[name],
            "first_step_s": first_step_s[name],
        }
        if cuda:
            figures.update(peak_memory_bytes=peak_bytes[name], peak_memory_vs_eager=peak_bytes[name] / peak_bytes["eager"])
        else:
            figures["dry_run"] = True
        record_result(figures)
        if name == "fastcnn":
            benchmark.extra_info.update(figures)
