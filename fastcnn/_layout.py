"""Memory-layout predicates and views shared by the ops."""
import math


def is_dense(tensor):
    """True when ``tensor``'s elements fill a gap-free, non-overlapping block of memory in some
    dimension order (contiguous, channels_last, any permutation of those), so that a kernel may
    walk it as a flat array of ``numel`` elements."""
    if tensor.numel() == 0:
        return True
    dims = sorted((stride, size) for size, stride in zip(tensor.shape, tensor.stride()) if size != 1)
    expected_stride = 1
    for stride, size in dims:
        if stride != expected_stride:
            return False
        expected_stride *= size
    return True


def suggests_channels_last(tensor):
    """``tensor.suggest_memory_format() == torch.channels_last``, as ATen decides it (its
    ``is_channels_last_strides_2d``): a 4-d tensor whose strides order C fastest, then W, H, N,
    with size-1 dimensions resolved as ATen resolves them. Ops that pick an output layout from
    their input (convolution, pooling) follow this rule, so a 1x1 weight of strides
    (C, 1, C, C) counts as channels_last although it is also contiguous."""
    if tensor.dim() != 4:
        return False
    sizes, strides = tensor.shape, tensor.stride()
    if strides[1] == 0:  # a broadcast channel dimension: ATen defaults to NCHW
        return False
    smallest_next = 0
    for dim in (1, 3, 2, 0):
        if sizes[dim] == 0 or strides[dim] < smallest_next:
            return False
        if dim == 0 and smallest_next == strides[1]:  # N111 with equal strides: ambiguous, NCHW
            return False
        smallest_next = strides[dim] * (sizes[dim] if sizes[dim] > 1 else 1)
    return True


def view_or_none(tensor, shape):
    """``tensor.view(shape)``, or None where its strides admit no such view (real tensors raise
    RuntimeError, fake ones, under torch.compile or fastcnn.estimate, ValueError)."""
    try:
        return tensor.view(shape)
    except (RuntimeError, ValueError):
        return None


def rows_view(tensor, batched_dims=2):
    """``tensor`` viewed as [N, C, S] (``batched_dims`` = 2) or [N, S] (1), S the flattened trailing
    (spatial) dims, 1 when there are none; None when its strides cannot be merged into one."""
    if tensor.dim() > batched_dims:
        # The trailing size spelled out, not -1: view cannot infer it when the tensor is empty.
        return view_or_none(tensor, tensor.shape[:batched_dims] + (math.prod(tensor.shape[batched_dims:]),))
    return tensor.unsqueeze(-1)


def as_rows(tensor, batched_dims=2):
    """``rows_view`` of ``tensor``, or of a contiguous copy when its spatial dims do not merge."""
    view = rows_view(tensor, batched_dims)
    return view if view is not None else rows_view(tensor.contiguous(), batched_dims)


def empty_rows_like(tensor):
    """An uninitialised tensor shaped like ``tensor`` in its layout when that layout has a
    ``rows_view`` (NCHW, channels_last), else contiguous."""
    import torch

    out = torch.empty_like(tensor)
    return out if rows_view(out) is not None else torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)


def has_strides(tensor, strides):
    """Whether ``tensor`` has ``strides`` wherever a dimension has more than one element."""
    return all(a == b for size, a, b in zip(tensor.shape, tensor.stride(), strides) if size > 1)


def with_strides(tensor, strides):
    """``tensor`` itself when it has ``strides`` (``has_strides``), else a copy laid out with them:
    the flat kernels pair the elements of their operands by memory position, so a gradient must
    be laid out as the output it belongs to."""
    import torch

    if has_strides(tensor, strides):
        return tensor
    return torch.empty_strided(tensor.shape, strides, dtype=tensor.dtype, device=tensor.device).copy_(tensor)


def elementwise_strides(tensor):
    """The strides torch gives the output of an elementwise op whose only tensor operand is
    ``tensor`` (its TensorIterator): the dimensions ordered as ``tensor``'s strides order them
    (smallest stride fastest; for equal strides the smaller size first; dimensions of stride 0
    keep their place), then laid out densely. A dense ``tensor`` gets its own strides back (up
    to size-1 dimensions); a strided view of a permuted or channels_last tensor keeps that
    dimension order instead of becoming contiguous."""
    shape, strides = tensor.shape, tensor.stride()
    perm = list(reversed(range(tensor.dim())))  # perm[0] is the fastest dimension

    def should_swap(dim0, dim1):
        stride0, stride1 = strides[dim0], strides[dim1]
        if stride0 == 0 or stride1 == 0:
            return 0
        if stride0 != stride1:
            return -1 if stride0 < stride1 else 1
        return 1 if shape[dim0] > shape[dim1] else 0

    for i in range(1, len(perm)):  # TensorIterator's insertion sort
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[dim0], perm[dim1])
            if comparison > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    out = [0] * tensor.dim()
    step = 1
    for dim in perm:
        out[dim] = step
        step *= shape[dim]
    return tuple(out)


def dense_copy(tensor):
    """``tensor`` itself when ``is_dense``, else a dense copy laid out as torch lays out an
    elementwise op's output (``elementwise_strides``), so that the flat kernels run on it and
    their output (``empty_like`` of it) has torch's strides. Differentiable (a ``copy_``)."""
    import torch

    if is_dense(tensor):
        return tensor
    return torch.empty_strided(tensor.shape, elementwise_strides(tensor), dtype=tensor.dtype,
                               device=tensor.device).copy_(tensor)
