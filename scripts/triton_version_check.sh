#!/usr/bin/env bash
# The kernels under a second Triton (default 3.6.0, the version the lent GPU machines run with
# torch 2.11): compile every kernel for sm_90 and sm_80 (tests/test_compile_for_gpu.py) and run a
# small interpreter subset of the tests with that Triton in front of the one in .venv, so that an
# API difference fails here and not in a GPU session. Usage: bash scripts/triton_version_check.sh [VERSION]
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
python -c "import sys, triton; print('triton', triton.__version__, 'from', triton.__file__); sys.exit(triton.__version__ != '$version')"
cd tests
python -m pytest -q -p no:cacheprovider test_compile_for_gpu.py test_architecture.py \
    test_conv2d.py test_batch_norm.py test_cross_entropy.py test_max_pool.py test_adam.py test_sgd.py \
    test_rmsprop.py test_adagrad.py test_adadelta.py test_clip_grad.py test_group_norm.py test_layer_norm.py \
    test_activation.py test_dropout.py test_avg_pool.py test_add.py test_bfloat16_rounding.py \
    -k "compile or architecture or bfloat16_rounding or random or low_precision or pytorch_optimizer_inputs or grad_scaler or norm_and_clipping or clip_grad_value or huge_and_tiny or kept_fraction or nan_and_infinities or forward_and_backward_match or with_and_without_residual or adaptive_avg_pool2d or stochastic_depth or sum_and_gradients"
