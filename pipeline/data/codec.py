"""Image bytes <-> uint8 arrays: the one decoding rule shared by shard writing and reading.

Encoded images (any format PIL reads) are decoded to a fixed square side so they batch:
the shorter side is resized to `size` (bicubic, antialiased), then the centre is cropped.
Array sources resized by `datasets.<name>.image_size` follow the same rule.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# Member names in shards: `.npy` raw uint8 [H, W, C] (no pickle), or the original encoded
# bytes under their (normalised) file extension.
RAW = "npy"
_ALIASES = {"jpeg": "jpg", "tif": "tiff"}


@dataclass(frozen=True)
class Decoding:
    """How encoded images become arrays: side length and channel count (1 or 3)."""

    size: int
    channels: int


def member_extension(filename: str) -> str:
    """`photo.JPEG` -> `jpg`: the tar member suffix an encoded file is stored under."""
    ext = filename.rsplit(".", 1)[-1].lower()
    return _ALIASES.get(ext, ext)


def encode_raw(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image), allow_pickle=False)
    return buffer.getvalue()


_NPY_HEADERS: dict[bytes, tuple[int, np.dtype, tuple[int, ...]]] = {}


def decode_raw(payload: bytes) -> np.ndarray:
    """`.npy` bytes -> array (read-only view). Samples of a dataset share one header, so it
    is parsed once and later samples are a plain `frombuffer`: ~100x faster than np.load."""
    header = payload[:128]
    known = _NPY_HEADERS.get(header)
    if known is None:
        stream = io.BytesIO(payload)
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(stream)
        if fortran or dtype.hasobject:
            return np.load(io.BytesIO(payload), allow_pickle=False)
        known = (stream.tell(), dtype, shape)
        if len(_NPY_HEADERS) < 64:
            _NPY_HEADERS[header] = known
    offset, dtype, shape = known
    return np.frombuffer(payload, dtype=dtype, offset=offset).reshape(shape)


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size`, then crop the centre square: the one resize rule of
    every source. Bicubic with the filter widened by the downscale factor (antialiased), in
    Pillow's integer arithmetic, so the same input gives the same bytes on any CPU."""
    from PIL import Image

    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(resized, Image.Resampling.BICUBIC, reducing_gap=None)
    left = (resized[0] - size) // 2
    top = (resized[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def _to_array(image: Image.Image) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_image(payload: bytes, decoding: Decoding) -> np.ndarray:
    """Encoded bytes -> uint8 [size, size, channels]; raises OSError or ValueError on bad
    data, with messages that are the same on every run (PIL's name the buffer's address)."""
    from PIL import Image, UnidentifiedImageError

    try:
        opened = Image.open(io.BytesIO(payload))
    except UnidentifiedImageError:
        raise ValueError("not an image in a format PIL reads") from None
    with opened as image:
        image = image.convert("L" if decoding.channels == 1 else "RGB")
        return _to_array(fit_square(image, decoding.size))


def resize_array(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] (C = 1 or 3) -> [size, size, C] by the rule encoded images follow;
    the input itself when it already has that size."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    return _to_array(fit_square(Image.fromarray(image[..., 0] if image.shape[-1] == 1
                                                else image), size))
