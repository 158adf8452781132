"""What the normalisation kernels (batch, group, instance and layer norm) share: Chan et al.'s
merge of (count, mean, sum of squared deviations) summaries, so that tiles and slices reduced
separately combine into the statistics of their union without the cancellation of a
sum-of-squares formula (an input of mean 3000 and std 0.5 keeps fp32 accuracy); and the
optional affine parameters' load."""
import triton
import triton.language as tl


@triton.jit
def chan_merge(count, mean, m2, other_count, other_mean, other_m2):
    """Chan et al.'s parallel merge of two (count, mean, sum of squared deviations) summaries."""
    total = count + other_count
    delta = other_mean - mean
    fraction = other_count / tl.maximum(total, 1.0)
    return total, mean + delta * fraction, m2 + other_m2 + delta * delta * count * fraction


@triton.jit
def affine_parameters(weight_ptr, bias_ptr, index, mask, weight_stride, bias_stride,
                      HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(w, b) in fp32 at ``index`` (through the parameters' strides), 1 and 0 when absent."""
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + index * weight_stride, mask=mask, other=1.0).to(tl.float32)
    else:
        w = tl.full(index.shape, 1.0, tl.float32)
    if HAS_BIAS:
        b = tl.load(bias_ptr + index * bias_stride, mask=mask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros(index.shape, tl.float32)
    return w, b
