"""Running moments shared by the normalisation kernels (batch, group, instance and layer norm):
Chan et al.'s merge of (count, mean, sum of squared deviations) summaries, so that tiles and
slices reduced separately combine into the statistics of their union without the cancellation
of a sum-of-squares formula (an input of mean 3000 and std 0.5 keeps fp32 accuracy)."""
import triton
import triton.language as tl


@triton.jit
def chan_merge(count, mean, m2, other_count, other_mean, other_m2):
    """Chan et al.'s parallel merge of two (count, mean, sum of squared deviations) summaries."""
    total = count + other_count
    delta = other_mean - mean
    fraction = other_count / tl.maximum(total, 1.0)
    return total, mean + delta * fraction, m2 + other_m2 + delta * delta * count * fraction
