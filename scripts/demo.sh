#!/usr/bin/env bash
# Set up .venv and run the demo: a small CNN trained with fastcnn's kernels next to plain torch.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" demo
exec python -m fastcnn.demo "$@"
