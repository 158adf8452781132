"""Memory-layout predicates and views shared by the ops."""


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


def prefers_channels_last(tensor):
    """torch's reading of a 4-d tensor as channels_last: laid out so, and not also contiguous."""
    import torch

    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def rows_view(tensor, batched_dims=2):
    """``tensor`` viewed as [N, C, S] (``batched_dims`` = 2) or [N, S] (1), S the flattened trailing
    (spatial) dims, 1 when there are none; None when its strides cannot be merged into one."""
    try:
        if tensor.dim() > batched_dims:
            return tensor.view(tensor.shape[:batched_dims] + (-1,))
        return tensor.unsqueeze(-1)
    except RuntimeError:
        return None


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
