"""pointwise_loss's benchmark cases: loss and input gradient of an autoencoder's reconstruction
(mse_loss on images), a segmentation head's per-pixel binary cross-entropy with logits, and
knowledge distillation's kl_div over ImageNet logits, against torch eager and torch.compile."""
import torch

from ..benchmarking import BenchmarkCase, element_size, random_input, training_steps
from ..ops import pointwise_loss as ops
from ._static import DTYPES, empty

# (loss, input shape, keyword arguments) of each suite, where the networks use them.
SUITES = {
    "reconstruction": ("mse_loss", (64, 3, 224, 224), {}),
    "segmentation": ("binary_cross_entropy_with_logits", (16, 1, 512, 512), {}),
    "distillation": ("kl_div", (256, 1000), {"reduction": "batchmean", "log_target": True}),
}
PROFILE_OPS = ("mse_loss", "binary_cross_entropy_with_logits", "kl_div")


def _target(loss, shape, dtype, device, generator):
    if loss == "binary_cross_entropy_with_logits":
        return torch.rand(shape, device=device, generator=generator).round().to(DTYPES[dtype])
    return random_input(shape, dtype, "nchw", device, generator)


def _case(suite, loss, shape, kwargs, dtype, layout):
    def build(device):
        generator = torch.Generator(device=device).manual_seed(0)
        input = random_input(shape, dtype, layout if len(shape) == 4 else "nchw", device, generator).requires_grad_()
        target = _target(loss, shape, dtype, device, generator)
        ours, theirs = getattr(ops, loss), getattr(torch.nn.functional, loss)
        return training_steps(lambda x, t: ours(x, t, **kwargs), lambda x, t: theirs(x, t, **kwargs), input,
                              (target,))

    numel = torch.Size(shape).numel()
    return BenchmarkCase(loss, f"{suite}/{'x'.join(map(str, shape))}", dtype, layout,
                         {"bytes": ops.bytes_moved(numel, element_size(dtype))}, build)


def profile_cases(op, dtypes, layouts, *, quick=False, smoke=False):
    """The suites of ``op`` (the loss's name): one shape each (a small one with ``smoke``)."""
    out = []
    for suite, (loss, shape, kwargs) in SUITES.items():
        if loss != op:
            continue
        shape = (3, 5, 7) if smoke else shape
        out += [_case(suite, loss, shape, kwargs, dtype, layout) for dtype in dtypes
                for layout in (layouts if len(shape) == 4 else layouts[:1])]
    return out


# ----------------------------------------------------------------------------- the static check's launches
MEMORY_BOUND_KERNELS = ("_pointwise_loss_forward_kernel", "_pointwise_loss_backward_kernel")


def _launch(kernel_module, kind, dtype, shape, *, reduction="mean", broadcast_target=False, weight=False,
            pos_weight=False):
    """Forward (and finish) and backward of one loss on CPU tensors, walked as the op walks them."""
    from .._layout import elementwise_walk

    kernels = kernel_module("pointwise_loss")
    x = empty(shape, dtype)
    t = empty(shape[-1:], dtype).expand(shape) if broadcast_target else empty(shape, dtype)
    w = empty(shape, dtype) if weight else None
    p = empty(shape[-1:], dtype).expand(shape) if pos_weight else None
    walk = elementwise_walk(shape, [x, t, w, p])
    reduce, weight_total = reduction != "none", reduction == "weight_mean"
    invalid = kernels.invalid_buffer("cpu") if kind == "bce" else None
    if reduce:
        partials = kernels.forward_partials(walk.numel)
        partial = torch.empty(2 * partials, dtype=torch.float32)
        loss, denominator = torch.empty((), dtype=dtype), torch.empty((), dtype=torch.float32)
        kernels.forward(walk, kind, x, t, w, p, 1.0, loss, partial, invalid, reduce=True, weight_total=weight_total,
                        check_range=kind == "bce")
        kernels.finish(partial, partials, loss, denominator, walk.numel, weight_total=weight_total)
        grad_out = torch.empty((), dtype=dtype)
    else:
        loss, denominator = walk.empty(shape, dtype, "cpu"), None
        kernels.forward(walk, kind, x, t, w, p, 1.0, loss, None, invalid, reduce=False, weight_total=False,
                        check_range=kind == "bce")
        grad_out = walk.empty(shape, dtype, "cpu")
    dx, dt = walk.empty(shape, dtype, "cpu"), walk.empty(shape, dtype, "cpu")
    dw = walk.empty(shape, dtype, "cpu") if weight else None
    kernels.backward(walk, kind, grad_out, x, t, w, p, 1.0, loss, denominator, dx, dt if not broadcast_target else None,
                     dw, reduce=reduce, weight_total=weight_total)


def static_launches(kernel_module, options):
    """The three suites' losses, reduced, on 2**20-element inputs in each dtype."""
    kinds = (("mse", "mean"), ("bce_with_logits", "mean"), ("kl_div_log_target", "sum"))
    return [(f"{kind} loss 4x256x1024 {reduction} {dtype_name}",
             lambda kind=kind, reduction=reduction, dtype_name=dtype_name: _launch(
                 kernel_module, kind, DTYPES[dtype_name], (4, 256, 1024), reduction=reduction))
            for kind, reduction in kinds for dtype_name in options.dtypes]


def compile_variants(kernel_module):
    """Every other kind, 'none' and the weighted mean, a broadcast target and pos_weight (the
    strided walk), and a weight."""
    variants = [(f"{kind} loss none bf16", lambda kind=kind: _launch(kernel_module, kind, DTYPES["bf16"], (8, 40),
                                                                      reduction="none"))
                for kind in ("l1", "smooth_l1", "huber", "bce", "kl_div", "kl_div_log_target")]
    variants.append(("mse loss weighted mean fp32", lambda: _launch(kernel_module, "mse", DTYPES["fp32"], (8, 40),
                                                                    reduction="weight_mean", weight=True)))
    variants.append(("bce_with_logits loss broadcast pos_weight fp16", lambda: _launch(
        kernel_module, "bce_with_logits", DTYPES["fp16"], (8, 6, 40), reduction="sum", broadcast_target=True,
        weight=True, pos_weight=True)))
    return variants
