#!/usr/bin/env bash
# Set up .venv and run the demo: a small CNN trained with fastcnn's kernels next to plain torch.
# With --distributed first: `torchrun --nproc-per-node=2 -m fastcnn.demo --distributed`, DDP and
# fastcnn's SyncBatchNorm across two processes (gloo on CPU) against one process.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" demo
if [ "${1:-}" = "--distributed" ]; then
    exec torchrun --nproc-per-node=2 -m fastcnn.demo "$@"
fi
exec python -m fastcnn.demo "$@"
