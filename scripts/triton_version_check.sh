#!/usr/bin/env bash
# The kernels under a second Triton (default 3.6.0, the version the lent GPU machines run with
# torch 2.11) in front of the one in .venv: the tests marked every_triton (the kernels compiled for
# sm_90 and sm_80, and a subset of each op's interpreter tests), so that an API difference fails
# here and not in a GPU session. Usage: bash scripts/triton_version_check.sh [VERSION]
set -euo pipefail
source "$(dirname "$0")/setup_env.sh" test
version="${1:-3.6.0}"
target="$repo_root/.triton-$version"
if [ ! -f "$target/.complete" ]; then
    rm -rf "$target"
    # Triton 3.6's interpreter turns one-element arrays into ints, which NumPy 2.4 refuses
    # (TypeError: only 0-dimensional arrays can be converted): pair it with an older NumPy.
    .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps --target "$target" \
        "triton==$version" "numpy<2.3"
    touch "$target/.complete"
fi
export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
# tests/test_compile_for_gpu.py compiles each kernel and compile variant once here (--lean), not
# every representative launch again.
export FASTCNN_LEAN_COMPILE_CHECK=1
python -c "import sys, triton; print('triton', triton.__version__, 'from', triton.__file__); sys.exit(triton.__version__ != '$version')"
cd tests
# The tests marked every_triton: every kernel compiled for sm_90 and sm_80, and each op's
# interpreter tests of its random shapes and special values (tests/test_architecture.py checks that
# every op's test file has some).
python -m pytest -q -p no:cacheprovider "${pytest_workers[@]}" -m every_triton
