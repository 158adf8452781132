"""Index arithmetic shared by the kernels that walk [N, C, H, W] tensors: pixel coordinates,
int64 widening for tensors of 2**31 elements or more, a program's [pixels x channels] tile of
one image and its plane offsets (pooling), and the window/tap relation of sliding-window ops
(convolution, pooling)."""
import triton
import triton.language as tl

from . import INTERPRETED


@triton.jit
def pixel_coordinates(pixels, height, width):
    """(image, row, column) of flat pixel indices over an [N, height, width] grid."""
    return pixels // (height * width), (pixels // width) % height, pixels % width


@triton.jit
def pixel_step(step, height, width):
    """``step`` flat pixels as (images, rows, columns) of an [N, height, width] grid, the split
    ``advance_pixels`` takes: step = images·height·width + rows·width + columns, with rows < height
    and columns < width."""
    images = step // (height * width)
    rest = step - images * (height * width)
    rows = rest // width
    return images, rows, rest - rows * width


@triton.jit
def advance_pixels(n, row, col, step_images, step_rows, step_cols, height, width):
    """``pixel_coordinates(pixels + step)`` from ``pixel_coordinates(pixels)`` and ``pixel_step(step)``,
    without a division. A loop over blocks of flat pixels would otherwise pay two integer divisions
    per pixel and step, most of its index arithmetic (grad-weight's reduction): here the column,
    then the row, carries at most once (each part of the step is below its extent)."""
    col += step_cols
    carry = col >= width
    col = tl.where(carry, col - width, col)
    row += step_rows + carry.to(row.dtype)
    carry = row >= height
    row = tl.where(carry, row - height, row)
    return n + step_images + carry.to(n.dtype), row, col


@triton.jit
def next_tap_step(block, tap_col, tap_row, blocks, tap_cols):
    """The reduction step after (tap_row, tap_col, channel block ``block``) of the loops
    ``for tap_row: for tap_col: for block < blocks``, which a GEMM walks as one counter so that the
    compiler pipelines its loads across taps: counted on, never recovered from the step by two
    integer divisions (some sixty instructions a step, a quarter of a 128x128 forward's loop)."""
    block += 1
    tap_done = block == blocks
    block = tl.where(tap_done, 0, block)
    tap_col = tl.where(tap_done, tap_col + 1, tap_col)
    row_done = tap_col == tap_cols
    tap_col = tl.where(row_done, 0, tap_col)
    tap_row = tl.where(row_done, tap_row + 1, tap_row)
    return block, tap_col, tap_row


@triton.jit
def widen(value, WIDE_INDEX: tl.constexpr):
    """``value`` in int64 when some tensor spans 2**31 elements or more, else unchanged (int32)."""
    if WIDE_INDEX:
        value = tl.cast(value, tl.int64)
    return value


@triton.jit
def block_indices(tile, BLOCK: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """tile * BLOCK + arange(BLOCK), widened before the multiplication can overflow."""
    return widen(tile, WIDE_INDEX) * BLOCK + widen(tl.arange(0, BLOCK), WIDE_INDEX)


@triton.jit
def plane_offsets(pixels, width, stride_h, stride_w, DENSE: tl.constexpr):
    """Offsets within one [H, W] plane of flat pixel indices: ``pixels * stride_w`` when the
    plane's rows follow each other (DENSE), so that Triton sees runs of consecutive pixels."""
    if DENSE:
        offsets = pixels * stride_w
    else:
        offsets = (pixels // width) * stride_h + (pixels % width) * stride_w
    return offsets


@triton.jit
def image_tile(pixel_blocks, images, plane_pixels, channels, SPAN_IMAGES: tl.constexpr, WIDE_INDEX: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile: (image, its pixels numbered within that image's plane of
    ``plane_pixels``, which of them exist, its channels, which of them exist). ``plane_pixels``
    is an argument rather than H·W computed here, so that Triton learns its divisibility by 16.

    A plane of at least BLOCK_P pixels is cut into ``pixel_blocks`` blocks per image and the
    image is one scalar per program. A smaller plane (SPAN_IMAGES: a 4x4 pooled map) would leave
    most of the tile masked off, so there the tile's pixels run on across images: ``image`` is
    then a vector (one per pixel) and costs a division by ``plane_pixels`` per pixel; combine it
    with the channel offsets through ``per_pixel``. See ``pixel_tiles`` for the grid."""
    if SPAN_IMAGES:
        flat = block_indices(tl.program_id(0), BLOCK_P, WIDE_INDEX)
        image = flat // plane_pixels
        pixels = flat - image * plane_pixels
        pixel_ok = image < images
    else:
        image = widen(tl.program_id(0) // pixel_blocks, WIDE_INDEX)
        pixels = block_indices(tl.program_id(0) - image * pixel_blocks, BLOCK_P, WIDE_INDEX)
        pixel_ok = pixels < plane_pixels
    channels_here = block_indices(tl.program_id(1), BLOCK_C, WIDE_INDEX)
    return image, pixels, pixel_ok, channels_here, channels_here < channels


@triton.jit
def per_pixel(image_offset, SPAN_IMAGES: tl.constexpr):
    """An image's offset (``image * stride_n`` of ``image_tile``) ready to add to [pixels x
    channels] offsets: a column when the tile spans images, else the scalar itself."""
    if SPAN_IMAGES:
        image_offset = image_offset[:, None]
    return image_offset


def pixel_tiles(images, plane_pixels, channels, blocks):
    """(grid, pixel_blocks, SPAN_IMAGES, BLOCK_P, BLOCK_C) of an ``image_tile`` launch over
    ``images`` planes of ``plane_pixels`` pixels and ``channels`` channels, ``blocks`` the
    kernel's (BLOCK_P, BLOCK_C) for that layout (``tiles.channel_blocks``). Tiles span images
    when a plane has fewer pixels than BLOCK_P. In Triton's interpreter, which pays per program
    and per operation on whole tiles, masked or not, the tile is shrunk to the pixels and channels
    there are and keeps its element count by widening the other side: the demo's 64 images of
    4x4 pixels take one program, not 64 mostly empty ones."""
    block_p, block_c = blocks
    span = plane_pixels < block_p
    pixels = images * plane_pixels if span else plane_pixels
    if INTERPRETED:
        budget = block_p * block_c
        block_p = min(block_p, max(2, triton.next_power_of_2(pixels)))
        block_c = min(max(block_c, budget // block_p), max(2, triton.next_power_of_2(channels)))
    pixel_blocks = triton.cdiv(pixels, block_p)
    grid = (pixel_blocks if span else images * pixel_blocks, triton.cdiv(channels, block_c))
    return grid, pixel_blocks, span, block_p, block_c


@triton.jit
def tap_input_pixel(out_row, out_col, r, s, in_height, in_width, stride_h, stride_w, pad_h, pad_w, dilation_h,
                    dilation_w):
    """(in_row, in_col, inside): the input pixel that tap (r, s) of output window (out_row, out_col)
    reads, row p*stride - pad + r*dilation and likewise for columns, and whether it lies inside
    the input (outside it is padding: zero for a convolution, skipped by a max-pool)."""
    in_row = out_row * stride_h - pad_h + r * dilation_h
    in_col = out_col * stride_w - pad_w + s * dilation_w
    inside = (in_row >= 0) & (in_row < in_height) & (in_col >= 0) & (in_col < in_width)
    return in_row, in_col, inside


@triton.jit
def window_through_tap(in_row, in_col, r, s, out_height, out_width, stride_h, stride_w, pad_h, pad_w,
                       dilation_h, dilation_w):
    """(out_row, out_col, reaches): the output window whose tap (r, s) lands on input pixel
    (in_row, in_col). Window p's tap r reads row p*stride - pad + r*dilation, so p =
    (in_row + pad - r*dilation) / stride, a window only when that division is exact and p lies in
    [0, out_height); likewise for columns. Gradients of sliding-window ops gather through this."""
    scaled_row = in_row + pad_h - r * dilation_h
    scaled_col = in_col + pad_w - s * dilation_w
    out_row = scaled_row // stride_h
    out_col = scaled_col // stride_w
    reaches = ((scaled_row >= 0) & (scaled_col >= 0) & (out_row * stride_h == scaled_row)
               & (out_col * stride_w == scaled_col) & (out_row < out_height) & (out_col < out_width))
    return out_row, out_col, reaches


def span(tensor):
    """Elements between the first and last addressable element of ``tensor``, plus one."""
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride()))


def needs_wide_index(*tensors, extra_span=0):
    """Whether index arithmetic over ``tensors`` (or ``extra_span`` elements) can pass 2**31 - 1,
    so that kernels must compute offsets in int64 (their ``WIDE_INDEX`` constexpr)."""
    return max([extra_span] + [span(t) for t in tensors]) >= 2**31 - 1


def dense_planes(tensor):
    """Whether each [H, W] plane of the 4-d ``tensor`` has its rows one after another (NCHW and
    channels_last both do), so that a plane's H·W pixels are one run of stride ``stride(3)``."""
    return tensor.shape[2] == 1 or tensor.stride(2) == tensor.shape[3] * tensor.stride(3)


def dense_pixels(tensor):
    """Whether all N·H·W pixels of the 4-d ``tensor`` lie one after another, a run of stride
    ``stride(3)`` (a dense channels_last tensor; NCHW only with one image or one channel): pixel
    p is then at p·stride(3), with no (image, row, column) to compute."""
    n, _, h, w = tensor.shape
    return dense_planes(tensor) and (n == 1 or tensor.stride(0) == h * w * tensor.stride(3))


def vector_elements(element_size, *values):
    """The widest vector (elements, a power of two, at most 16 bytes) that divides every value in
    ``values`` (strides, row lengths): what a kernel may promise with ``tl.multiple_of`` and
    ``tl.max_constancy`` so that rows starting at those offsets load and store 128 bits at a
    time. Triton itself only learns divisibility by 16 from its arguments, which a row of 1000
    bf16 logits (2000 bytes, 16-byte aligned) misses. The promise must be written in the kernel's
    own body, on computed tensors: Triton drops it from a tensor a called @jit function returns,
    and from a one-row tensor that it folds to a scalar (so promise the 2-d [rows x columns]
    offsets, with ``tl.multiple_of(offsets, [1, VECTOR])``)."""
    elements = max(1, 16 // element_size)
    while elements > 1 and any(value % elements for value in values):
        elements //= 2
    return elements
