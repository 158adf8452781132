"""Training-step throughput of torchvision's ResNet-18 and ResNet-50: eager PyTorch,
torch.compile, fastcnn-converted, and fastcnn-converted + torch.compile, in one process.

One step = forward + cross-entropy + backward + Adam step on a synthetic 224x224 batch, bf16
autocast, channels_last model and input; fastcnn's variants use fastcnn.cross_entropy and
fastcnn.optim.Adam, torch's use F.cross_entropy and torch.optim.Adam(fused=True). Figures:
images/s (median step time over CUDA events), speedup over eager and over torch.compile, peak
memory of a step, and the first step's cost (compile and autotune). Goal (issue 6): fastcnn
>= 1.15x eager and >= 1.0x torch.compile with peak memory <= eager's.
"""
import time

import pytest
import torch

import fastcnn
from fastcnn.benchmarking import cuda_time_ms

# torchvision models on synthetic 224x224 batches, bf16 autocast, channels_last.
TRAINING_MODELS = {"resnet18": 128, "resnet50": 64}  # model name -> batch size
TRAINING_IMAGE_SIZE = 224

VARIANTS = ("eager", "torch_compile", "fastcnn", "fastcnn_compile")


def _training_step(model_name, variant, batch):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)().cuda().to(memory_format=torch.channels_last)
    uses_fastcnn = variant.startswith("fastcnn")
    if uses_fastcnn:
        model = fastcnn.convert(model, inplace=True)
        optimizer = fastcnn.optim.Adam(model.parameters(), lr=1e-3)
        loss_function = fastcnn.cross_entropy
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        loss_function = torch.nn.functional.cross_entropy
    forward = torch.compile(model) if variant.endswith("compile") else model
    generator = torch.Generator(device="cuda").manual_seed(0)
    images = torch.randn(batch, 3, TRAINING_IMAGE_SIZE, TRAINING_IMAGE_SIZE, device="cuda",
                         generator=generator).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), device="cuda", generator=generator)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
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
    for name in VARIANTS:
        torch._dynamo.reset()
        torch.cuda.empty_cache()
        step = _training_step(model_name, name, batch)
        began = time.perf_counter()
        step()
        torch.cuda.synchronize()
        first_step_s[name] = time.perf_counter() - began
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak_bytes[name] = torch.cuda.max_memory_allocated()
        times_ms[name] = cuda_time_ms(step, warmup=3, repeats=10, flush_l2=False)
        if name == "fastcnn":
            benchmark.group = f"train-{model_name}-n{batch}"
            benchmark.pedantic(lambda: (step(), torch.cuda.synchronize()), rounds=5, warmup_rounds=1)
        step = None  # free this variant's model and optimizer before the next one
    for name in VARIANTS:
        figures = {
            "suite": "training", "op": "train_step", "case": f"{model_name}/n{batch}/bf16/channels_last",
            "implementation": name, "median_ms": times_ms[name], "images_per_s": batch / (times_ms[name] * 1e-3),
            "speedup_vs_eager": times_ms["eager"] / times_ms[name],
            "speedup_vs_torch_compile": times_ms["torch_compile"] / times_ms[name],
            "peak_memory_bytes": peak_bytes[name], "peak_memory_vs_eager": peak_bytes[name] / peak_bytes["eager"],
            "first_step_s": first_step_s[name],
        }
        record_result(figures)
        if name == "fastcnn":
            benchmark.extra_info.update(figures)
