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

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fastcnn.kernels import (activation, adadelta, adagrad, adam, add, avg_pool, batch_norm, clip_grad, conv2d,  # noqa: E402
                             conv2d_depthwise, conv2d_gemm, cross_entropy, dropout, group_norm, layer_norm, max_pool,
                             multi_tensor, rmsprop, sgd, slicing)

slicing.sm_count = lambda device: 132  # no GPU to ask: an H100's, as the launchers would see it



def runtime_signature(kernel, pointer_types, scalar_type=None):
    """Types of ``kernel``'s non-constexpr arguments, read from the kernel so it cannot go stale:
    pointers as given; scalars ``scalar_type`` when given, else ``num_*`` counts i32 and the
    rest (hyperparameters) fp32."""
    signature = {}
    for param in kernel.params:
        if param.is_constexpr:
            continue
        name = param.name
        if name.endswith("_ptr"):
            signature[name] = pointer_types[name]
        else:
            signature[name] = scalar_type or ("i32" if name.startswith("num_") else "fp32")
    return signature


def memory_accesses(kernel, signature, constexprs, capability):
    signature = dict(signature, **{name: "constexpr" for name in constexprs})
    compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                              target=GPUTarget("cuda", capability, 32))
    return collections.Counter(re.findall(r"(?:ld|st)\.global[\w.]*|cp\.async\.\w+\.shared\.global[\w.]*", compiled.asm["ptx"]))


MULTI_TENSOR_POINTERS = {"tables_ptr": "*i64", "chunks_ptr": "*i64", "grad_scale_ptr": "*fp32",
                         "found_inf_ptr": "*fp32", "partials_ptr": "*fp32", "coefficient_ptr": "*fp32"}


def multi_tensor_variants(results):
    """The other optimizers (every option on) and gradient clipping, fp32 and bf16, with the
    alignment promise and without: 'optimizer_step/...' and 'clip_grad/...' keys."""
    common = dict(MAXIMIZE=True, HAS_WEIGHT_DECAY=True, HAS_GRAD_SCALE=True, HAS_FOUND_INF=True, CHUNK_SIZE=16384)
    steps = {
        "sgd": (sgd._sgd_step_kernel, dict(HAS_MOMENTUM=True, NESTEROV=True, BLOCK=sgd.BLOCK)),
        "rmsprop": (rmsprop._rmsprop_step_kernel, dict(CENTERED=True, HAS_MOMENTUM=True, BLOCK=rmsprop.BLOCK)),
        "adagrad": (adagrad._adagrad_step_kernel, dict(BLOCK=adagrad.BLOCK)),
        "adadelta": (adadelta._adadelta_step_kernel, dict(BLOCK=adadelta.BLOCK)),
    }
    for (name, (kernel, extra)), element_type, aligned in itertools.product(
            steps.items(), (tl.float32, tl.bfloat16), (True, False)):
        constexprs = dict(common, **extra, ELEMENT_TYPE=element_type, ALIGNED=aligned)
        if "STATE_TYPE" in kernel.arg_names:
            constexprs["STATE_TYPE"] = element_type
        key = f"optimizer_step/{name}/sm90/{element_type}/{'aligned' if aligned else 'unaligned'}"
        results[key] = memory_accesses(kernel, runtime_signature(kernel, MULTI_TENSOR_POINTERS), constexprs, 90)
    integers = ("partial_offset", "tensor_offset", "partials_stride")
    partial = clip_grad._partial_norms_kernel
    signature = {name: "i32" if name in integers else kind
                 for name, kind in runtime_signature(partial, MULTI_TENSOR_POINTERS).items()}
    norm_cases = [(2.0, tl.float32, True), (2.0, tl.bfloat16, True), (2.0, tl.bfloat16, False), (3.5, tl.float32, True),
                  (float("inf"), tl.float32, True), (float("-inf"), tl.float32, True), (0.0, tl.float32, True),
                  (-1.5, tl.float32, True)]
    for norm_type, element_type, aligned in norm_cases:
        flags = clip_grad.norm_constexprs(norm_type)
        key = f"clip_grad/partial_norms/sm90/p{norm_type}/{element_type}/{'aligned' if aligned else 'unaligned'}"
        results[key] = memory_accesses(partial, signature, dict(flags, ELEMENT_TYPE=element_type, ALIGNED=aligned,
                                                                CHUNK_SIZE=16384, BLOCK=clip_grad.BLOCK), 90)
        if element_type == tl.float32:
            total = clip_grad._total_norm_kernel
            total_signature = dict(runtime_signature(total, {"partials_ptr": "*fp32", "total_ptr": "*bf16",
                                                             "coefficient_ptr": "*fp32"}), num_partials="i32")
            results[f"clip_grad/total_norm/sm90/p{norm_type}"] = memory_accesses(
                total, total_signature, dict(flags, TOTAL_TYPE=tl.bfloat16, BLOCK=clip_grad.TOTAL_BLOCK), 90)
    scale = clip_grad._scale_kernel
    for clamp, element_type, aligned in itertools.product((False, True), (tl.float32, tl.bfloat16), (True, False)):
        key = (f"clip_grad/{'clamp' if clamp else 'scale'}/sm90/{element_type}/"
               f"{'aligned' if aligned else 'unaligned'}")
        results[key] = memory_accesses(scale, runtime_signature(scale, MULTI_TENSOR_POINTERS), dict(
            ELEMENT_TYPE=element_type, CLAMP=clamp, ALIGNED=aligned, CHUNK_SIZE=16384, BLOCK=clip_grad.BLOCK), 90)


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
    for mode in ("COUNT", "CLEAR"):
        kernel = multi_tensor._advance_counters_kernel
        signature = runtime_signature(kernel, {"tables_ptr": "*i64", "found_inf_ptr": "*fp32"}, "i32")
        results[f"advance_counters/sm90/{mode}"] = memory_accesses(
            kernel, signature, dict(MODE=getattr(multi_tensor, mode), HAS_FOUND_INF=True,
                                    COUNTER_BLOCK=multi_tensor.COUNTER_BLOCK), 90)
    multi_tensor_variants(results)
    conv_kernels = {
        "forward": (conv2d_gemm._conv2d_forward_kernel, ("x_ptr", "w_ptr", "bias_ptr", "y_ptr"), {"HAS_BIAS": True}),
        "input_grad": (conv2d_gemm._conv2d_input_grad_kernel, ("dy_ptr", "w_ptr", "dx_ptr"), {}),
        "weight_grad": (conv2d_gemm._conv2d_weight_grad_kernel, ("x_ptr", "dy_ptr", "dw_ptr"), {}),
    }
    for (name, (kernel, pointers, extra)), (element, precision), wide in itertools.product(
            conv_kernels.items(), (("*bf16", "ieee"), ("*fp16", "ieee"), ("*fp32", "tf32")), (False, True)):
        pointer_types = {pointer: element for pointer in pointers}
        if name == "weight_grad":
            pointer_types["dw_ptr"] = "*fp32"  # split-K partials
        config, num_warps, num_stages = conv2d_gemm.DEFAULT_CONFIG
        constexprs = dict(extra, WIDE_INDEX=wide, DOT_PRECISION=precision, UPCAST=False, **config)
        key = f"conv2d_{name}/sm90/{element[1:]}/{'int64' if wide else 'int32'}"
        results[key] = memory_accesses(kernel, runtime_signature(kernel, pointer_types, "i32"), constexprs, 90)
    # At launch Triton turns integer arguments equal to 1 into constants (batch 1, 1x1 kernels,
    # unit strides); compile that specialisation too.
    for name, (kernel, pointers, extra) in conv_kernels.items():
        pointer_types = {pointer: "*bf16" for pointer in pointers}
        ones = {param.name: 1 for param in kernel.params if param.name in (
            "batch", "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w", "in_per_group",
            "out_per_group", "taps_h", "taps_w", "x_stride_c", "dy_stride_k")}
        signature = {k: v for k, v in runtime_signature(kernel, pointer_types, "i32").items() if k not in ones}
        config, num_warps, num_stages = conv2d_gemm.DEFAULT_CONFIG
        constexprs = dict(extra, WIDE_INDEX=True, DOT_PRECISION="ieee", UPCAST=False, **config, **ones)
        results[f"conv2d_{name}/sm90/ones"] = memory_accesses(kernel, signature, constexprs, 90)
    depthwise_kernels = {
        "forward": (conv2d_depthwise._depthwise_forward_kernel, ("x_ptr", "w_ptr", "bias_ptr", "y_ptr"), {"HAS_BIAS": True}),
        "input_grad": (conv2d_depthwise._depthwise_input_grad_kernel, ("dy_ptr", "w_ptr", "dx_ptr"), {}),
        "weight_grad": (conv2d_depthwise._depthwise_weight_grad_kernel, ("x_ptr", "dy_ptr", "dw_ptr"), {}),
    }
    for name, (kernel, pointers, extra) in depthwise_kernels.items():
        block_p, block_c = conv2d_depthwise._blocks(1)
        constexprs = dict(extra, WIDE_INDEX=False, BLOCK_P=block_p, BLOCK_C=block_c)
        signature = runtime_signature(kernel, {pointer: "*bf16" for pointer in pointers}, "i32")
        results[f"conv2d_depthwise_{name}/sm90"] = memory_accesses(kernel, signature, constexprs, 90)
    results["conv2d_bias_grad/sm80"] = memory_accesses(
        conv2d._bias_grad_kernel, runtime_signature(conv2d._bias_grad_kernel, {"dy_ptr": "*bf16", "db_ptr": "*fp32"}, "i32"),
        dict(WIDE_INDEX=True, BLOCK_P=conv2d.BIAS_BLOCKS["nchw"][0], BLOCK_C=conv2d.BIAS_BLOCKS["nchw"][1]), 80)
    # The split-K partials' sum, which conv2d's weight and bias gradients launch.
    results["conv2d_sum_slices/sm80"] = memory_accesses(
        slicing._sum_slices_kernel,
        runtime_signature(slicing._sum_slices_kernel, {"partial_ptr": "*fp32", "out_ptr": "*bf16"}, "i32"),
        dict(BLOCK=slicing.SUM_BLOCK), 80)
    ce = cross_entropy._cross_entropy_kernel
    for element, probabilities, classes in itertools.product(("*bf16", "*fp32"), (False, True), (10, 128000)):
        rows, block_c = cross_entropy._tile(classes, 1024, None)
        pointer_types = dict(x_ptr=element, target_ptr=element if probabilities else "*i64", weight_ptr=element,
                             row_loss_ptr="*fp32", row_weight_ptr="*fp32", grad_ptr=element, invalid_ptr="*i64")
        signature = runtime_signature(ce, pointer_types, "i64")
        signature.update(num_rows="i32", classes="i32", spatial="i32", smoothing="fp32")
        constexprs = dict(PROBABILITIES=probabilities, HAS_WEIGHT=True, HAS_SMOOTHING=True, NEEDS_GRAD=True,
                          VECTOR=8 if element == "*bf16" else 4, ROWS=rows, BLOCK_C=block_c)
        key = f"cross_entropy/sm90/{element[1:]}/{'probabilities' if probabilities else 'indices'}/C{classes}"
        results[key] = memory_accesses(ce, signature, constexprs, 90)
    for kernel, pointer_types, constexprs in (
            (cross_entropy._reduce_rows_kernel, dict(row_loss_ptr="*fp32", row_weight_ptr="*fp32", out_ptr="*bf16",
                                                     denominator_ptr="*fp32"), dict(MEAN=True, BLOCK=1024)),
            (cross_entropy._scale_grad_kernel, dict(grad_ptr="*bf16", grad_out_ptr="*bf16", denominator_ptr="*fp32"),
             dict(PER_ROW=True, MEAN=True, VECTOR=8, ROWS=2, BLOCK_C=4096))):
        results[f"cross_entropy{kernel.__name__}/sm80"] = memory_accesses(
            kernel, runtime_signature(kernel, pointer_types, "i32"), constexprs, 80)
    # max_pool2d compares in the input's own dtype: floats start from -inf, integers from their
    # minimum (uint8 0, int64 -2**63), so those are compiled too; float64 sums its backward in fp64.
    pool_elements = {"*bf16": ("bf16", torch.bfloat16), "*fp32": ("fp32", torch.float32),
                     "*fp64": ("fp64", torch.float64), "*i64": (None, torch.int64), "*u8": (None, torch.uint8)}
    for (element, (grad_element, dtype)), channel_stride in itertools.product(pool_elements.items(), (1, 0)):
        compare_type, lowest = max_pool.comparison(dtype)
        block_p, block_c = max_pool._blocks(channel_stride)
        window = max_pool._geometry((3, 3), (2, 2), (1, 1), (1, 1))[1]
        layout = "channels_last" if channel_stride == 1 else "nchw"
        results[f"max_pool_forward/sm90/{element[1:]}/{layout}"] = memory_accesses(
            max_pool._max_pool2d_forward_kernel,
            runtime_signature(max_pool._max_pool2d_forward_kernel,
                              dict(x_ptr=element, out_ptr=element, taps_ptr="*u8", indices_ptr="*i64"), "i32"),
            dict(COMPARE_TYPE=compare_type, LOWEST=lowest, WRITE_INDICES=True, DENSE_OUT=True, SPAN_IMAGES=False,
                 WIDE_INDEX=True,
                 BLOCK_P=block_p, BLOCK_C=block_c, **window), 90)
        if grad_element is None:  # integers have no gradient
            continue
        results[f"max_pool_backward/sm90/{element[1:]}/{layout}"] = memory_accesses(
            max_pool._max_pool2d_backward_kernel,
            runtime_signature(max_pool._max_pool2d_backward_kernel,
                              dict(grad_out_ptr=element, taps_ptr="*u8", grad_in_ptr=element), "i32"),
            dict(ACCUMULATOR=tl.float64 if grad_element == "fp64" else tl.float32, DENSE_IN=False, SPAN_IMAGES=True,
                 WIDE_INDEX=False,
                 BLOCK_P=block_p, BLOCK_C=block_c, **window), 90)
    bn = batch_norm
    for element, channel_stride in itertools.product(("*bf16", "*fp32"), (1, 0)):
        block_r, block_c = bn._tiles(channel_stride)
        layout = "channels_last" if channel_stride == 1 else "nchw"
        float_pointers = dict(partial_ptr="*fp32", folded_ptr="*fp32", sums_ptr="*fp32", weight_ptr="*fp32",
                              bias_ptr="*fp32", running_mean_ptr="*fp32", running_var_ptr="*fp32",
                              grad_weight_ptr="*fp32", grad_bias_ptr="*fp32")
        tensors = dict(float_pointers, x_ptr=element, y_ptr=element, dy_ptr=element, dx_ptr=element, r_ptr=element,
                       dr_ptr=element)
        # The ResNet block's end: bn → + identity → ReLU, forward and backward (both gradients).
        block_end = dict(KIND="relu", HAS_RESIDUAL=True, BLOCK_R=block_r, BLOCK_C=block_c)
        for kernel, constexprs in (
                (bn._partial_stats_kernel, dict(BLOCK_R=block_r, BLOCK_C=block_c)),
                (bn._apply_kernel, block_end),
                (bn._backward_sums_kernel, block_end),
                (bn._backward_apply_kernel, dict(block_end, TRAINING=True, WRITE_DX=True, WRITE_DR=True))):
            signature = scalar_signature(kernel, tensors)
            results[f"batch_norm{kernel.__name__}/sm90/{element[1:]}/{layout}"] = memory_accesses(
                kernel, signature, constexprs, 90)
    for kernel, constexprs in (
            (bn._finalize_kernel, dict(TRAINING=True, UPDATE_RUNNING=True, HAS_WEIGHT=True, HAS_BIAS=True,
                                       BLOCK=bn.FINAL_BLOCK)),
            (bn._backward_finalize_kernel, dict(HAS_GRAD_WEIGHT=True, HAS_GRAD_BIAS=True, BLOCK=bn.FINAL_BLOCK))):
        signature = runtime_signature(kernel, float_pointers, "i32")
        signature.update({name: "fp32" for name in ("momentum", "eps") if name in signature})
        results[f"batch_norm{kernel.__name__}/sm80"] = memory_accesses(kernel, signature, constexprs, 80)
    normalization_variants(results)
    pooling_variants(results)
    json.dump(results, sys.stdout)


FLOAT_SCALARS = ("eps", "parameter", "p", "scale", "momentum", "unbiasing")


def scalar_signature(kernel, pointer_types):
    """Integer scalars i32 (sizes, strides), the float hyperparameters of FLOAT_SCALARS fp32."""
    signature = runtime_signature(kernel, pointer_types, "i32")
    signature.update({name: "fp32" for name in FLOAT_SCALARS if name in signature})
    return signature


def normalization_variants(results):
    """Activations (every kind, forward and backward, bf16), group norm (U-Net's tiles in both
    layouts, fused SiLU) and its running statistics, layer norm (one-tile and chunked
    rows) and dropout, each in bf16 and fp32: 'activation/...', 'group_norm...', 'layer_norm...',
    'dropout/...' keys."""
    for kind in activation.KINDS:
        pointers = dict(x_ptr="*bf16", y_ptr="*bf16", dy_ptr="*bf16", dx_ptr="*bf16")
        for kernel in (activation._forward_kernel, activation._backward_kernel):
            results[f"activation/{kind}{kernel.__name__}"] = memory_accesses(
                kernel, scalar_signature(kernel, pointers), dict(KIND=kind, BLOCK=activation.BLOCK), 90)
    for element, channel_stride in itertools.product(("*bf16", "*fp32"), (1, 4096)):
        layout = "channels_last" if channel_stride == 1 else "nchw"
        # U-Net's GroupNorm(32) on 320 x 64² (a meta tensor: the tile choice reads only shape and strides)
        unet = torch.empty_strided((8, 320, 4096), (320 * 4096, channel_stride, 320 if channel_stride == 1 else 1),
                                   device="meta")
        block_c, block_s = group_norm._reduction_blocks(unet)
        reduction = dict(WIDE_INDEX=False, BLOCK_C=block_c, BLOCK_S=block_s)
        _, block_c, block_s = group_norm._elementwise_grid(unet)
        elementwise = dict(HAS_WEIGHT=True, HAS_BIAS=True, KIND="silu", WIDE_INDEX=False, BLOCK_C=block_c,
                           BLOCK_S=block_s)
        pointers = dict(x_ptr=element, y_ptr=element, dy_ptr=element, dx_ptr=element, stats_ptr="*fp32",
                        weight_ptr="*fp32", bias_ptr="*fp32", running_mean_ptr="*fp32", running_var_ptr="*fp32",
                        row_sums_ptr="*fp32", channel_sums_ptr="*fp32", partial_ptr="*fp32")
        for kernel, constexprs in (
                (group_norm._partial_stats_kernel, reduction),
                (group_norm._finalize_stats_kernel, dict(USE_RUNNING=False, WIDE_INDEX=False,
                                                         BLOCK=group_norm.ROW_BLOCK)),
                (group_norm._apply_kernel, elementwise),
                (group_norm._partial_grad_sums_kernel, dict(reduction, HAS_WEIGHT=True, HAS_BIAS=True, KIND="silu")),
                (group_norm._finalize_grad_sums_kernel, dict(HAS_WEIGHT=True, CHANNEL_SUMS=True,
                                                             BLOCK=group_norm.ROW_BLOCK)),
                (group_norm._backward_apply_kernel, dict(BATCH_STATISTICS=True, **elementwise))):
            results[f"group_norm{kernel.__name__}/{element[1:]}/{layout}"] = memory_accesses(
                kernel, scalar_signature(kernel, pointers), constexprs, 90)
        pointers.update(partial_ptr="*fp32", grad_weight_ptr="*fp32", grad_bias_ptr="*fp32")
        for length, length_stride in ((768, 1), (768, 49)):  # ConvNeXt's block norm; its LayerNorm2d on NCHW
            block_r, block_l, single = layer_norm.tiles(length, length_stride)
            constexprs = dict(HAS_WEIGHT=True, HAS_BIAS=True, KIND="gelu", SINGLE=single, WIDE_INDEX=False,
                              BLOCK_R=block_r, BLOCK_L=block_l)
            for kernel, extra in ((layer_norm._forward_kernel, {}),
                                  (layer_norm._backward_kernel, dict(HAS_DX=True, PARAMETER_GRADS=True))):
                results[f"layer_norm{kernel.__name__}/{element[1:]}/{'single' if single else 'chunked'}"] = (
                    memory_accesses(kernel, scalar_signature(kernel, pointers), dict(constexprs, **extra), 90))
        pointers.update(seed_ptr="*i64")
        results[f"dropout/flat/{element[1:]}"] = memory_accesses(
            dropout._dropout_kernel, scalar_signature(dropout._dropout_kernel, pointers),
            dict(WIDE=False, BLOCK=dropout.BLOCK), 90)
        results[f"dropout/channels/{element[1:]}/{layout}"] = memory_accesses(
            dropout._channel_dropout_kernel, scalar_signature(dropout._channel_dropout_kernel, pointers),
            dict(WIDE=False, BLOCK_NC=64, BLOCK_S=32), 90)
    pointers = dict(stats_ptr="*fp32", running_mean_ptr="*fp32", running_var_ptr="*fp32")
    results["group_norm_running_stats_kernel/fp32"] = memory_accesses(
        group_norm._running_stats_kernel, scalar_signature(group_norm._running_stats_kernel, pointers),
        dict(BLOCK=group_norm.CHANNEL_BLOCK), 90)


def pooling_variants(results):
    """Average pooling: ResNet-style 3x3/2 avg_pool2d and a 7-to-3 adaptive pool, forward and
    backward, and the global pool, in bf16 and fp32, both layouts: 'avg_pool/...' keys; the
    residual add in bf16 and fp32: 'add/...'."""
    for element, channel_stride in itertools.product(("*bf16", "*fp32"), (1, 0)):
        layout = "channels_last" if channel_stride == 1 else "nchw"
        block_p, block_c = avg_pool._blocks(channel_stride)
        pointers = dict(x_ptr=element, out_ptr=element, grad_out_ptr=element, grad_in_ptr=element)
        tile = dict(ACCUMULATOR=tl.float32, SPAN_IMAGES=False, WIDE_INDEX=False, BLOCK_P=block_p, BLOCK_C=block_c)
        windows = {"avg": avg_pool._constexprs((3, 3), (2, 2), None, True, None),
                   "adaptive": avg_pool._constexprs(None, None, avg_pool.adaptive_extent(7, 3), True, None)}
        for name, window in windows.items():
            for kernel, dense in ((avg_pool._avg_pool_forward_kernel, "DENSE_OUT"),
                                  (avg_pool._avg_pool_backward_kernel, "DENSE_IN")):
                results[f"avg_pool/{name}{kernel.__name__}/{element[1:]}/{layout}"] = memory_accesses(
                    kernel, scalar_signature(kernel, pointers), dict(window, **tile, **{dense: True}), 90)
        if layout == "nchw":  # the flat add does not depend on the layout
            results[f"add/{element[1:]}"] = memory_accesses(
                add._add_kernel, scalar_signature(add._add_kernel, dict(x_ptr=element, r_ptr=element, out_ptr=element)),
                dict(ACCUMULATOR=tl.float32, BLOCK=add.BLOCK), 90)
        kernel = avg_pool._global_avg_pool_kernel
        results[f"avg_pool/global/{element[1:]}/{layout}"] = memory_accesses(
            kernel, scalar_signature(kernel, pointers), dict(ACCUMULATOR=tl.float32, DENSE_IN=True, WIDE_INDEX=False,
                                                             BLOCK_S=avg_pool.GLOBAL_BLOCK_S, BLOCK_C=block_c), 90)


if __name__ == "__main__":
    main()
