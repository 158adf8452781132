"""Buffers the norms (batch, group, instance, layer) share: per-channel statistics a kernel updates
in place, and the one fp32 buffer their backward fills with both parameter gradients."""
from ._layout import empty_rows_like, view_or_none


def statistic_vectors(statistics):
    """(vectors, write_back) for per-channel buffers a kernel updates in place (running
    statistics; None entries stay None): each as a 1-d view of its C elements, read through its
    stride; a buffer whose strides no 1-d view can express is updated in a copy, listed in
    ``write_back`` as (buffer, copy) for the caller to copy back after the launch."""
    vectors, write_back = [], []
    for statistic in statistics:
        vector = statistic
        if statistic is not None and statistic.dim() != 1:
            vector = view_or_none(statistic, (-1,))
            if vector is None:
                vector = statistic.reshape(-1)  # a copy, as no view exists
                write_back.append((statistic, vector))
        vectors.append(vector)
    return vectors, write_back


def empty_norm_grads(input, output_mask, slope=None):
    """(grad_input laid out as ``empty_rows_like``, parameter_grads) of a per-channel norm's
    backward: parameter_grads is one fp32 [2, C] buffer (row 0 grad_bias, row 1 grad_weight;
    [3, C] with a fused PReLU's ``slope``, row 2 its slopes' gradient), which the kernels fill in
    one pass. Either has 0 elements when ``output_mask`` (grad_input, grad_weight, grad_bias[,
    grad_slope]) asks for none of it."""
    import torch

    grad_input = empty_rows_like(input) if output_mask[0] else input.new_empty(0)
    sums = torch.empty((2 if slope is None else 3, input.shape[1]) if any(output_mask[1:]) else (0,),
                       dtype=torch.float32, device=input.device)
    return grad_input, sums


def norm_parameter_grads(ctx, grad_out, backward_op, positions):
    """(grad_input, grad_weight, grad_bias, grad_slope) in an autograd node of a per-channel norm
    that saved (input, stats, weight, bias, slope) and keeps the options ``backward_op`` takes
    after them in ``ctx.options``; ``positions``: where (input, weight, bias, slope) are among the
    forward operator's inputs. None where autograd does not ask."""
    input, stats, weight, bias, slope = ctx.saved_tensors
    needs = [ctx.needs_input_grad[position] for position in positions]
    mask = needs[:3] + ([] if slope is None else needs[3:])
    grad_input, sums = backward_op(grad_out, input, stats, weight, bias, *ctx.options, slope, mask)
    grad_weight, grad_bias, *grad_slope = split_parameter_grads(sums, weight, bias, mask, slope)
    return grad_input if mask[0] else None, grad_weight, grad_bias, grad_slope[0] if grad_slope else None


def split_parameter_grads(sums, weight, bias, mask, slope=None):
    """(grad_weight, grad_bias) from ``empty_norm_grads``' fp32 [2, ...] buffer after the backward,
    in the parameters' dtypes and shapes, and with ``slope`` the slopes' gradient from its third
    row; None where ``mask`` (input, weight, bias[, slope]) does not ask."""
    grads = (sums[1].to(weight.dtype).view(weight.shape) if mask[1] else None,
             sums[0].to(bias.dtype).view(bias.shape) if mask[2] else None)
    if slope is None:
        return grads
    return (*grads, sums[2].to(slope.dtype) if mask[3] else None)
