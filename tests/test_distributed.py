"""A converted model trains under DistributedDataParallel (gloo, 2 CPU processes) to the same
parameters as one process on the combined batch; a converted ResNet under DDP matches torch's."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from fastcnn.dtypes import tolerance

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "result.json"
    environment = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", str(WORKER), "--out", str(out)]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    result = json.loads(out.read_text())
    print(result)
    # fp32 against fp32 in another summation order: the shared fp32 tolerance, widened as for 100
    # terms for the ResNet, whose parameters sum gradients over the batch and every layer.
    assert result["plain"] < tolerance(torch.float32), result
    assert result["resnet"] < tolerance(torch.float32, 100), result
    fastcnn_losses, torch_losses = result["resnet_losses"]
    assert all(abs(a - b) <= tolerance(torch.float32, 100) * abs(b) for a, b in zip(fastcnn_losses, torch_losses)), result
    # all 10 batch norms: each takes its conv's moments (8 also their activation or residual)
    assert result["fused"] == 10 and result["launches"]["conv2d"] and result["launches"]["adam_step"], result
