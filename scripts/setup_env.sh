#!/usr/bin/env bash
# Shared set-up for scripts/test.sh and scripts/demo.sh: a virtual environment in .venv that
# sees an already installed torch (a GPU user's CUDA build is kept, never replaced), installs
# torch==2.13.0 (CPU build) only where none is importable, then installs fastcnn with the given
# extras in editable mode. Usage: source scripts/setup_env.sh [extras]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv --system-site-packages .venv
fi
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    pip_install torch==2.13.0
fi
extras="${1:-}"
# Offline machines (a lent GPU box has torch and triton but no index): fall back to an install
# that needs no build isolation and no downloads.
pip_install -e ".${extras:+[$extras]}" || pip_install --no-build-isolation --no-deps -e .
export PATH="$repo_root/.venv/bin:$PATH"
# pytest's options to spread the tests over the cores (at most 4 worker processes) with
# pytest-xdist, which the test extra installs (an offline install without it runs them in one
# process). Tests that must share one worker say so with @pytest.mark.xdist_group.
pytest_workers=()
if python -c "import xdist" >/dev/null 2>&1; then
    pytest_workers=(-n "$(python -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')" --dist loadgroup)
fi
