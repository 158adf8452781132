"""SyncBatchNorm with an optional fused residual add and activation:
``fastcnn.sync_batch_norm(..., process_group=None, activation=None, residual=None)`` = act(bn(x) +
residual) where bn normalises with the statistics of the batches of every process in the group,
as ``torch.nn.SyncBatchNorm`` does, over ``kernels/sync_batch_norm.py`` and batch norm's passes
(``kernels/batch_norm.py``). On CPU tensors too (gloo), which torch's does not run.

One training step of one layer, on each process:
forward
    ``fastcnn::sync_batch_norm_summary``: this process's (count, K, mean of x - K, M2) per channel,
    fp32, from batch norm's statistics pass or from the moments of the convolution that wrote x;
    **one all-gather** of those [4, C] summaries (``all_gather_summaries``);
    ``fastcnn::sync_batch_norm_statistics``: Chan's merge of every process's summary in rank
    order (exact for uneven and empty batches, the same bits on every process), the running
    statistics updated from the whole batch's, as torch does;
    batch norm's apply (``fastcnn::batch_norm_apply`` or ``..._residual_apply``): act(bn(x) [+ r]).
backward
    ``fastcnn::sync_batch_norm_backward_sums``: this process's sums of g = act'(z)·dy and g·x̂ and
    from them its own share of the weight's, the bias's (and a PReLU's slopes') gradients, which
    DistributedDataParallel adds across processes as it does torch's;
    **one all-reduce** of the [2, C] sums, when the input's gradient is wanted (as torch's);
    ``fastcnn::sync_batch_norm_backward_apply``: dx averaged over the whole batch's count, and
    the residual's gradient g.
Torch's SyncBatchNorm makes the same two collectives (its all-gather in the input's dtype, ours
in fp32), then an activation and an add of their own.

Outside training, without torch.distributed or with one process, it is ``fastcnn.batch_norm``
(torch's SyncBatchNorm is F.batch_norm there). Saved for backward: the input, the statistics, and
as batch norm keeps them the output (relu, sigmoid, tanh with a residual) or the residual.
"""
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .. import _backend
from .._cost import launches_of, one_pass
from .._layout import as_rows, empty_rows_like, rows_view
from .._norms import statistic_vectors
from .activation import DERIVATIVE_FROM_OUTPUT, apply_activation, prelu_channel_slopes, resolve_fused_activation
from .batch_norm import (_apply_op, _empty_grads, _residual_apply_op, _vector, batch_norm, bytes_moved,
                         check_batch_norm, check_moments, check_residual)
from .prelu import autocast_slope, prelu

__all__ = ["sync_batch_norm"]
# ``bytes_moved`` (imported) is batch norm's: the same passes over the same tensors on each process,
# and 16 bytes per channel per process more.

OP = "sync_batch_norm"


def _kernels():
    """(kernels/sync_batch_norm.py, kernels/batch_norm.py), imported on the first launch."""
    from ..kernels import batch_norm, sync_batch_norm

    return sync_batch_norm, batch_norm


# ----------------------------------------------------------------------------- checks
def process_group_size(process_group):
    """(group, number of processes) that a SyncBatchNorm in training synchronises over: the given
    group or the default one; (None, 1) when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return None, 1
    group = process_group if process_group is not None else dist.group.WORLD
    return group, dist.get_world_size(group)


def check_sync_batch_norm(op, input, running_mean, running_var, weight, bias, momentum, eps, residual, moments):
    """torch.nn.SyncBatchNorm's checks of a synchronised call (at least 2-d input, some
    channels), then batch norm's in training, except that a process may hold one value per
    channel, or none: the batch is every process's."""
    if isinstance(input, torch.Tensor) and input.dim() < 2:
        raise ValueError(f"{op}: expected at least 2D input (got {input.dim()}D input)")
    if isinstance(input, torch.Tensor) and input.shape[1] == 0:
        raise ValueError(f"{op}: SyncBatchNorm number of input channels should be non-zero")
    check_batch_norm(op, input, running_mean, running_var, weight, bias, True, momentum, eps, per_process=False)
    check_residual(op, input, residual)
    if moments is not None:
        check_moments(op, input, moments)


# ----------------------------------------------------------------------------- operators
def _summary_fields():
    from ..kernels.moments import MOMENT_FIELDS

    return MOMENT_FIELDS


@torch.library.custom_op("fastcnn::sync_batch_norm_summary", mutates_args=())
def _summary_op(input: Tensor, moments: Optional[Tensor]) -> Tensor:
    """This process's summary of ``input``, fp32 [4, C] (count, K, mean of x - K, M2: kernels/
    moments.py's fields), from a statistics pass or from ``moments``; zeros for an empty input."""
    shape = (_summary_fields(), input.shape[1])
    if not input.numel():
        return torch.zeros(shape, dtype=torch.float32, device=input.device)
    summary = torch.empty(shape, dtype=torch.float32, device=input.device)
    sync_kernels, _ = _kernels()
    with torch.profiler.record_function("fastcnn::sync_batch_norm summary"):
        _backend.record_launch(OP, sync_kernels.summary(rows_view(input), summary) if moments is None
                               else sync_kernels.summary_from_moments(rows_view(input), moments, summary))
    return summary


@_summary_op.register_fake
def _(input, moments):
    return input.new_empty((_summary_fields(), input.shape[1]), dtype=torch.float32)


def all_gather_summaries(summary, group, world_size):
    """Every process's summary, [P, 4, C] in rank order: one collective (all_gather into the rows
    of one tensor for CPU tensors and gloo, which may lack the single-tensor form; NCCL's
    all_gather_single, all_gather_into_tensor before torch 2.13)."""
    gathered = summary.new_empty((world_size, *summary.shape))
    if summary.device.type == "cpu" or dist.get_backend(group) == "gloo":
        dist.all_gather(list(gathered.unbind(0)), summary, group=group)
    else:
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        gather(gathered, summary, group=group)
    return gathered


def _empty_sync_statistics(input):
    from ..kernels.sync_batch_norm import SYNC_STATISTICS_ROWS

    return torch.empty((SYNC_STATISTICS_ROWS, input.shape[1]), dtype=torch.float32, device=input.device)


@torch.library.custom_op("fastcnn::sync_batch_norm_statistics", mutates_args=("running_mean", "running_var"))
def _statistics_op(input: Tensor, summaries: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                   weight: Optional[Tensor], bias: Optional[Tensor], momentum: float, eps: float) -> Tensor:
    """fp32 [SYNC_STATISTICS_ROWS, C]: batch norm's statistics rows for the batch of every
    process (the mean that of x - this process's K) and the whole batch's count, from
    ``summaries`` [P, 4, C]; the running statistics updated in place."""
    stats = _empty_sync_statistics(input)
    sync_kernels, _ = _kernels()
    with torch.profiler.record_function("fastcnn::sync_batch_norm statistics"):
        _backend.record_launch(OP, sync_kernels.statistics_from_summaries(
            as_rows(input), summaries, stats, running_mean, running_var, _vector(weight), _vector(bias),
            momentum=momentum, eps=eps))
    return stats


@_statistics_op.register_fake
def _(input, summaries, running_mean, running_var, weight, bias, momentum, eps):
    return _empty_sync_statistics(input)


def _rows_or_none(tensor):
    return None if tensor is None else as_rows(tensor)


@torch.library.custom_op("fastcnn::sync_batch_norm_backward_sums", mutates_args=())
def _backward_sums_op(grad_out: Tensor, input: Tensor, residual: Optional[Tensor], output: Optional[Tensor],
                      stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], kind: Optional[str],
                      parameter: float, slope: Optional[Tensor],
                      output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(the fp32 [2, C] sums of g = act'(z)·dy and of g·x̂ over this process's rows, and this
    process's shares of the weight's, the bias's and the slopes' gradients, each empty where
    ``output_mask`` (input, weight, bias, slope) does not ask); zeros for an empty input."""
    _, grad_weight, grad_bias, grad_slope = _empty_grads(input, weight, bias, slope, [False, *output_mask[1:]])
    wanted = [grad if needed else None for grad, needed in zip((grad_weight, grad_bias, grad_slope), output_mask[1:])]
    if not input.numel():  # no rows here: nothing to add to the all-reduce, no share of the gradients
        for grad in (grad_weight, grad_bias, grad_slope):
            grad.zero_()
        return torch.zeros((2, input.shape[1]), dtype=torch.float32, device=input.device), grad_weight, grad_bias, \
            grad_slope
    _, bn_kernels = _kernels()
    with torch.profiler.record_function("fastcnn::sync_batch_norm backward sums"):
        sums, launches = bn_kernels.backward_sums(
            as_rows(grad_out), rows_view(input), _rows_or_none(residual), stats, _vector(weight), _vector(bias),
            wanted[0], wanted[1], training=True, kind=kind, parameter=parameter, output=_rows_or_none(output),
            slope=slope, grad_slope=wanted[2])
        _backend.record_launch(OP, launches)
    return sums, grad_weight, grad_bias, grad_slope


@_backward_sums_op.register_fake
def _(grad_out, input, residual, output, stats, weight, bias, kind, parameter, slope, output_mask):
    _, grad_weight, grad_bias, grad_slope = _empty_grads(input, weight, bias, slope, [False, *output_mask[1:]])
    return input.new_empty((2, input.shape[1]), dtype=torch.float32), grad_weight, grad_bias, grad_slope


@torch.library.custom_op("fastcnn::sync_batch_norm_backward_apply", mutates_args=())
def _backward_apply_op(grad_out: Tensor, input: Tensor, residual: Optional[Tensor], output: Optional[Tensor],
                       stats: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], sums: Tensor,
                       kind: Optional[str], parameter: float, slope: Optional[Tensor],
                       output_mask: list[bool]) -> tuple[Tensor, Tensor]:
    """(grad_input, grad_residual) from the all-reduced ``sums``: dx = scale·(g - Σg/M - x̂·Σg·x̂/M)
    with M the whole batch's count (the statistics' COUNT_ROW), and the residual's g; each empty
    where ``output_mask`` (input, residual) does not ask."""
    grads = [empty_rows_like(input) if needed else input.new_empty(0) for needed in output_mask]
    if input.numel():
        _, bn_kernels = _kernels()
        with torch.profiler.record_function("fastcnn::sync_batch_norm backward"):
            _backend.record_launch(OP, bn_kernels.backward_apply(
                as_rows(grad_out), rows_view(input), _rows_or_none(residual),
                *(rows_view(grad) if needed else None for grad, needed in zip(grads, output_mask)), stats,
                _vector(weight), _vector(bias), sums, training=True, kind=kind, parameter=parameter,
                output=_rows_or_none(output), slope=slope, count_in_stats=True))
    return tuple(grads)


@_backward_apply_op.register_fake
def _(grad_out, input, residual, output, stats, weight, bias, sums, kind, parameter, slope, output_mask):
    return tuple(empty_rows_like(input) if needed else input.new_empty(0) for needed in output_mask)


class _SyncBatchNorm(torch.autograd.Function):
    """act(bn(x) [+ r]) with the statistics of every process's batch: one all-gather forward, one
    all-reduce backward (see the module's docstring)."""

    @staticmethod
    def forward(ctx, input, weight, bias, residual, slope, running_mean, running_var, moments, momentum, eps, kind,
                parameter, group, world_size):
        summaries = all_gather_summaries(_summary_op(input, moments), group, world_size)
        stats = _statistics_op(input, summaries, running_mean, running_var, weight, bias, momentum, eps)
        if residual is None:
            out = _apply_op(input, stats, weight, bias, True, kind, parameter, slope)
        else:
            out = _residual_apply_op(input, stats, weight, bias, residual, None, None, None, True, kind, parameter,
                                     slope)
        # What act'(z) is taken from, as batch norm keeps it (ops/batch_norm.py's _setup_residual_context).
        from_output = residual is not None and kind in DERIVATIVE_FROM_OUTPUT
        keep_residual = residual is not None and kind is not None and not from_output
        ctx.save_for_backward(input, stats, weight, bias, residual if keep_residual else None,
                              out if from_output else None, slope)
        ctx.options = (kind, parameter, group, residual is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        input, stats, weight, bias, residual, output, slope = ctx.saved_tensors
        kind, parameter, group, has_residual = ctx.options
        needs = ctx.needs_input_grad
        mask = [needs[0], weight is not None and needs[1], bias is not None and needs[2],
                slope is not None and needs[4]]
        grad_input = grad_weight = grad_bias = grad_residual = grad_slope = None
        sums = stats
        if any(mask):
            sums, grad_weight, grad_bias, grad_slope = _backward_sums_op(
                grad_out, input, residual, output, stats, weight, bias, kind, parameter, slope, mask)
            grad_weight, grad_bias, grad_slope = (grad if needed else None for grad, needed in
                                                  zip((grad_weight, grad_bias, grad_slope), mask[1:]))
            if needs[0]:
                dist.all_reduce(sums, group=group)  # the backward's one collective
        wants_residual = has_residual and needs[3]
        if needs[0] or (wants_residual and kind is not None):
            grad_input, grad_residual = _backward_apply_op(
                grad_out, input, residual, output, stats, weight, bias, sums, kind, parameter, slope,
                [needs[0], wants_residual and kind is not None])
        if wants_residual and kind is None:
            grad_residual = grad_out  # d(bn(x) + r)/dr
        return (grad_input if needs[0] else None, grad_weight, grad_bias,
                grad_residual if wants_residual else None, grad_slope) + (None,) * 9


# ----------------------------------------------------------------------------- launches (fastcnn.estimate)
@launches_of(_summary_op, "norm")
def _summary_launches(summary, input, moments):
    if not input.numel():
        return []
    if moments is not None:
        return [one_pass("_moments_summary_kernel", [moments], [summary])]
    return [one_pass("_partial_stats_kernel", [input], []), one_pass("_summary_kernel", [], [summary])]


@launches_of(_statistics_op, "norm")
def _statistics_launches(stats, input, summaries, running_mean, running_var, weight, bias, momentum, eps):
    return [one_pass("_merge_kernel", [summaries, running_mean, running_var, weight, bias],
                     [stats, running_mean, running_var])]


@launches_of(_backward_sums_op, "norm")
def _backward_sums_launches(outputs, grad_out, input, residual, output, stats, weight, bias, kind, parameter, slope,
                            output_mask):
    if not input.numel():
        return []
    reads = [grad_out, input] + ([output] if output is not None else [residual] if residual is not None else [])
    return [one_pass("_backward_sums_kernel", reads, []), one_pass("_backward_finalize_kernel", [], outputs[1:])]


@launches_of(_backward_apply_op, "norm")
def _backward_apply_launches(grads, grad_out, input, residual, output, stats, weight, bias, sums, kind, parameter,
                             slope, output_mask):
    if not input.numel():
        return []
    reads = [grad_out, input] + ([output] if output is not None else [residual] if residual is not None else [])
    return [one_pass("_backward_apply_kernel", reads, list(grads))]


# ----------------------------------------------------------------------------- functional
def synchronised_batch_norm(op, input, running_mean, running_var, weight, bias, momentum, eps, group, world_size,
                            activation=None, residual=None, moments=None):
    """act(bn(input) + residual) in training with the batch statistics of the ``world_size``
    processes of ``group``: the checks, then ``_SyncBatchNorm``. Each process calls it, in the
    same order, as each calls torch's."""
    check_sync_batch_norm(op, input, running_mean, running_var, weight, bias, momentum, eps, residual, moments)
    kind, parameter, slope = resolve_fused_activation(op, activation)
    if _backend.backend_for(input.device) == _backend.FALLBACK:
        _backend.warn_fallback(op, input.device)
        from torch.nn.modules._functions import SyncBatchNorm as TorchSyncBatchNorm

        out = TorchSyncBatchNorm.apply(input, weight, bias, running_mean, running_var, eps, momentum, group,
                                       world_size)
        return apply_activation(out if residual is None else out + residual, kind, parameter, slope)
    if slope is not None:
        slope, fusable = autocast_slope(slope, input)
        if not fusable:  # under autocast torch's prelu casts the norm's output down: it runs after the norm
            return prelu(synchronised_batch_norm(op, input, running_mean, running_var, weight, bias, momentum, eps,
                                                 group, world_size, None, residual, moments), slope)
    slopes = None if slope is None else prelu_channel_slopes(op, slope, input)
    if rows_view(input) is None:  # a strided view whose spatial dims cannot be merged: one copy
        input = input.contiguous()
    if residual is not None and residual.shape != input.shape:
        residual = residual.expand(input.shape)  # autograd sums its gradient back to the given shape
    running, write_back = statistic_vectors((running_mean, running_var))
    out = _SyncBatchNorm.apply(input, weight, bias, residual, slopes, *running, moments, float(momentum), float(eps),
                               kind, parameter, group, world_size)
    for statistic, vector in write_back:
        statistic.copy_(vector.view(statistic.shape))
    return out


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
                    *, process_group=None, activation=None, residual=None, moments=None):
    """``act(bn(input) + residual)`` as ``torch.nn.SyncBatchNorm`` normalises: in training with
    the mean and variance of the batches of every process in ``process_group`` (default: all),
    the running statistics updated from them, each process's output, input gradient and share
    of the parameters' gradients its own (DistributedDataParallel adds the shares). Each
    process's batch may have its own size, or be empty. Arguments as ``fastcnn.batch_norm``'s
    (``activation``, ``residual``, ``moments`` too); outside training, without torch.distributed
    or with one process it is ``fastcnn.batch_norm``. Runs on CUDA tensors (NCCL) and on CPU
    tensors (gloo; torch's SyncBatchNorm refuses them)."""
    group, world_size = process_group_size(process_group) if training else (None, 1)
    if world_size == 1:
        return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                          activation=activation, residual=residual, moments=moments)
    return synchronised_batch_norm("fastcnn.sync_batch_norm", input, running_mean, running_var, weight, bias,
                                   momentum, eps, group, world_size, activation, residual, moments)
