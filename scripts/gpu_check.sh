#!/usr/bin/env bash
# One command for a GPU session: bash scripts/gpu_check.sh [--dry-run] [STAGE ...]
# Stages, each inside about 8 minutes: tests (environment, peaks, the whole test suite compiled
# with FASTCNN_AUTOTUNE=0, pass/fail per file), quick (one representative case per op and pass,
# autotuned, against eager and torch.compile), catalogue (every case of the catalogue, as far as
# the time allows), resnet (the ResNet-18/50 training benchmark). Default: all four, in order.
# scripts/gpu_check.py --help says more. --dry-run: the same stages on the CPU through Triton's
# interpreter on tiny shapes (CI runs it).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# Wheels carried to an offline machine (expecttest, which PyTorch's OpInfo tests import) go in
# .whl/: installed into a side folder, in front of the machine's own packages.
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fastcnn-wheels .whl/*.whl
    export PYTHONPATH="/tmp/fastcnn-wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
source scripts/setup_env.sh test
exec python scripts/gpu_check.py "$@"
