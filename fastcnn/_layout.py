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


class ElementwiseWalk:
    """How a kernel walks operands broadcast to one shape (``elementwise_walk``): ``numel``
    elements in flat order, ``sizes`` the (at most four, outermost first) collapsed dims,
    ``strides`` each operand's strides over them (zeros for an absent operand), ``flat`` when
    every operand shares one dense layout (the flat index is then every operand's offset, in
    memory order), and ``out_strides``: the layout of outputs whose offset is the flat index
    (that shared layout, else contiguous)."""

    def __init__(self, numel, sizes, strides, flat, out_strides):
        self.numel, self.sizes, self.strides, self.flat, self.out_strides = numel, sizes, strides, flat, out_strides

    def empty(self, shape, dtype, device):
        """An output whose offsets are the flat indices."""
        import torch

        return torch.empty_strided(shape, self.out_strides, dtype=dtype, device=device)


def contiguous_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def elementwise_walk(shape, operands, max_dims=4):
    """The ``ElementwiseWalk`` of ``operands`` (tensors of ``shape``, broadcast views with stride 0
    included, or None), or None when their strides leave more than ``max_dims`` dims that cannot
    be merged (the caller then walks contiguous copies)."""
    present = [o for o in operands if o is not None]
    numel = math.prod(shape)
    if all(is_dense(o) and has_strides(o, present[0].stride()) for o in present):
        strides = tuple((0,) * max_dims for _ in operands)
        return ElementwiseWalk(numel, (1,) * max_dims, strides, True, present[0].stride())
    dims = [(size, [o.stride(d) if o is not None else 0 for o in operands]) for d, size in enumerate(shape)
            if size != 1]
    merged = []
    for size, strides in dims:  # outermost first: merge a dim into the one before it where all allow
        if merged and all(outer == inner * size for outer, inner in zip(merged[-1][1], strides)):
            merged[-1] = (merged[-1][0] * size, strides)
        else:
            merged.append((size, strides))
    if len(merged) > max_dims:
        return None
    merged = [(1, [0] * len(operands))] * (max_dims - len(merged)) + merged
    sizes = tuple(size for size, _ in merged)
    strides = tuple(tuple(merged[d][1][i] for d in range(max_dims)) for i in range(len(operands)))
    return ElementwiseWalk(numel, sizes, strides, False, contiguous_strides(shape))
