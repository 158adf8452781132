"""Compile fastcnn's kernels to PTX without a GPU and print their global memory accesses as JSON.

Run in its own process by test_compile_for_gpu.py: the test session imports the kernels for the
interpreter, and Triton fixes that choice when a kernel is decorated.
"""
import collections
import itertools
import json
import os
import re
import sys

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fastcnn.kernels import adam  # noqa: E402

ADAM_SCALARS = ["lr", "beta2", "one_minus_beta1", "one_minus_beta2", "beta1_hi", "beta1_lo", "beta2_hi",
                "beta2_lo", "eps", "weight_decay", "decoupled_decay_factor"]


def memory_accesses(kernel, signature, constexprs, capability):
    signature = dict(signature, **{name: "constexpr" for name in constexprs})
    compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                              target=GPUTarget("cuda", capability, 32))
    return collections.Counter(re.findall(r"(?:ld|st)\.global[\w.]*", compiled.asm["ptx"]))


def main():
    results = {}
    adam_signature = {"tables_ptr": "*i64", "chunks_ptr": "*i64", "num_tensors": "i32", "num_chunks": "i32",
                      "grad_scale_ptr": "*fp32", "found_inf_ptr": "*fp32", **{n: "fp32" for n in ADAM_SCALARS}}
    for capability, element_type, aligned in itertools.product(
            (90, 80), (tl.float32, tl.bfloat16, tl.float16), (True, False)):
        constexprs = dict(ELEMENT_TYPE=element_type, STATE_TYPE=element_type, DECOUPLED_WEIGHT_DECAY=aligned,
                          HAS_WEIGHT_DECAY=True, AMSGRAD=aligned, MAXIMIZE=aligned, HAS_GRAD_SCALE=aligned,
                          HAS_FOUND_INF=aligned, ALIGNED=aligned, CHUNK_SIZE=16384, BLOCK=adam.BLOCK)
        key = f"adam_step/sm{capability}/{element_type}/{'aligned' if aligned else 'unaligned'}"
        results[key] = memory_accesses(adam._adam_step_kernel, adam_signature, constexprs, capability)
    results["count_steps/sm90"] = memory_accesses(
        adam._count_steps_kernel, {"tables_ptr": "*i64", "num_tensors": "i32", "found_inf_ptr": "*fp32"},
        dict(HAS_FOUND_INF=True, STEP_BLOCK=adam.STEP_BLOCK), 90)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
