"""Safe image decoding: every way an image can be bad becomes an ImageError naming the file.

Images come from datasets and from uploads, so nothing here trusts the file name or the
header: the content is sniffed, the size is bounded before decoding (decompression bombs),
and the result is always an 8-bit RGB image with EXIF orientation applied.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vlfuse.errors import DataError, ImageError

from .tar import read_member, tar_member

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 2**20

# Only well-understood formats: fewer decoders means less attack surface for uploads.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """Decode the image file at `path` into an RGB image, or raise ImageError saying why."""
    path = Path(path)
    member = tar_member(path)  # an image inside a WebDataset shard: ".../shard-000000.tar/KEY.jpg"
    if member is not None:
        try:
            data = read_member(*member)
        except DataError as exc:
            raise ImageError(exc.reason, path=exc.path) from None
        return load_image_bytes(data, name=str(path), max_pixels=max_pixels, max_bytes=max_bytes)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("image file not found", path=path) from None
    except OSError as exc:
        raise ImageError(f"cannot read image file: {exc.strerror or exc}", path=path) from None
    if path.is_dir():
        raise ImageError("expected an image file, found a directory", path=path)
    _check_byte_size(size, max_bytes, path)
    try:
        with path.open("rb") as f:
            # Read at most one byte past the limit, in case the file grew since stat().
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"cannot read image file: {exc.strerror or exc}", path=path) from None
    return load_image_bytes(data, name=str(path), max_pixels=max_pixels, max_bytes=max_bytes)


def load_image_bytes(data: bytes, *, name: str = "<upload>", max_pixels: int = DEFAULT_MAX_PIXELS,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """Decode encoded image bytes (e.g. an upload) into RGB; `name` is only used in errors.

    The format is sniffed from the content, never taken from `name`.
    """
    _check_byte_size(len(data), max_bytes, name)
    if not data:
        raise ImageError("empty file, not an image", path=name)
    with warnings.catch_warnings():
        # PIL only warns above its own pixel limit; a warning is not a refusal, so make it one.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(data, name, max_pixels)
        except ImageError:
            raise
        except UnidentifiedImageError:
            supported = ", ".join(SUPPORTED_FORMATS)
            raise ImageError(f"not an image or unsupported format (supported: {supported})",
                             path=name) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"refused as a decompression bomb: {exc}", path=name) from None
        except Exception as exc:  # noqa: BLE001 - PIL decoders raise many types on hostile input
            raise ImageError(f"corrupt or truncated image ({type(exc).__name__}: {exc})",
                             path=name) from None


def open_image(image) -> Image.Image:
    """A path, encoded bytes or a PIL image -> an RGB PIL image, decoded with the same checks as
    training data (ImageError / DataError when it is not a usable image)."""
    if isinstance(image, (bytes, bytearray)):
        return load_image_bytes(bytes(image))
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    raise TypeError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        return _sixteen_bit_to_rgb(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "F":
        # Pillow's own F->L convention: values are on the 0..255 scale, clipped and rounded.
        return image.convert("L").convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_byte_size(size: int, max_bytes: int, name: str | Path) -> None:
    if size > max_bytes:
        raise ImageError(f"file too large: {size} bytes exceeds max_bytes={max_bytes}", path=name)


def _decode(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open, bound, fully decode, orient and convert; PIL errors propagate to the caller."""
    with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
        width, height = image.size
        # Checked from the header, before load(), so a bomb never gets allocated.
        if width * height > max_pixels:
            raise ImageError(f"refused as a decompression bomb: {width}x{height} = "
                             f"{width * height} pixels exceeds max_pixels={max_pixels}", path=name)
        image.load()  # inside the caller's try: truncation only shows up here
        return to_rgb(ImageOps.exif_transpose(image))


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit gray (I;16*, or 'I' as Pillow opens 16-bit PNGs) to 0..255, not clip it."""
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)  # rounded, so 65535 -> 255
    return Image.fromarray(gray).convert("RGB")


def image_to_tensor(image, size: int) -> torch.Tensor:
    """PIL RGB image -> uint8 [3, size, size] (resized; the model scales to [0, 1])."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def image_tensor(image, size: int) -> torch.Tensor:
    """A path, encoded bytes or a PIL image -> uint8 [3, size, size], decoded and resized as in training."""
    return image_to_tensor(open_image(image), size)
