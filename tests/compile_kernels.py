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



def runtime_signature(kernel, pointer_types):
    """Types of ``kernel``'s non-constexpr arguments: pointers as given, ``num_*`` counts as i32,
    every other scalar (the hyperparameters) as fp32, read from the kernel so it cannot go stale."""
    signature = {}
    for param in kernel.params:
        if param.is_constexpr:
            continue
        name = param.name
        signature[name] = pointer_types[name] if name.endswith("_ptr") else "i32" if name.startswith("num_") else "fp32"
    return signature


def memory_accesses(kernel, signature, constexprs, capability):
    signature = dict(signature, **{name: "constexpr" for name in constexprs})
    compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                              target=GPUTarget("cuda", capability, 32))
    return collections.Counter(re.findall(r"(?:ld|st)\.global[\w.]*", compiled.asm["ptx"]))


def main():
    results = {}
    adam_signature = runtime_signature(adam._adam_step_kernel, {
        "tables_ptr": "*i64", "chunks_ptr": "*i64", "grad_scale_ptr": "*fp32", "found_inf_ptr": "*fp32"})
    for capability, element_type, aligned in itertools.product(
            (90, 80), (tl.float32, tl.bfloat16, tl.float16), (True, False)):
        constexprs = dict(ELEMENT_TYPE=element_type, STATE_TYPE=element_type, DECOUPLED_WEIGHT_DECAY=aligned,
                          HAS_WEIGHT_DECAY=True, AMSGRAD=aligned, MAXIMIZE=aligned, HAS_GRAD_SCALE=aligned,
                          HAS_FOUND_INF=aligned, ALIGNED=aligned, CHUNK_SIZE=16384, BLOCK=adam.BLOCK)
        key = f"adam_step/sm{capability}/{element_type}/{'aligned' if aligned else 'unaligned'}"
        results[key] = memory_accesses(adam._adam_step_kernel, adam_signature, constexprs, capability)
    results["count_steps/sm90"] = memory_accesses(
        adam._count_steps_kernel,
        runtime_signature(adam._count_steps_kernel, {"tables_ptr": "*i64", "found_inf_ptr": "*fp32"}),
        dict(HAS_FOUND_INF=True, STEP_BLOCK=adam.STEP_BLOCK), 90)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
