#!/usr/bin/env bash
# Set up .venv and run the demo: a small model trained with fastcnn's Adam next to torch's.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python -m fastcnn.demo "$@"
