"""Index helpers shared by the kernels that walk [N, C, H, W] tensors pixel by pixel."""
import triton
import triton.language as tl  # noqa: F401  (the interpreter requires it in every jit module)


@triton.jit
def pixel_coordinates(pixels, height, width):
    """(image, row, column) of flat pixel indices over an [N, height, width] grid."""
    return pixels // (height * width), (pixels // width) % height, pixels % width
