#!/usr/bin/env bash
# Set up .venv, check that the benchmark suites skip cleanly (CPU) or run (GPU), then run the
# full test suite (through Triton's interpreter when there is no GPU) on up to 4 worker processes
# (setup_env.sh's pytest_workers; -n 0 runs them in one). pytest runs from inside bench/ and
# tests/ so that the repository root is not on sys.path: the tests import the installed fastcnn
# (where fastcnn.kernels exists), not the source folder.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" test
(cd bench && python -m pytest -q)
(cd tests && python -m pytest "${pytest_workers[@]}" "$@")
