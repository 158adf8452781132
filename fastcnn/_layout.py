"""Memory-layout predicates shared by the ops."""


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
