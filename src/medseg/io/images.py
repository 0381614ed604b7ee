"""Read and write 2D images and label masks (PNG, JPEG, TIFF, BMP).

Array contract at this boundary:

- images: ``(H, W)`` or ``(H, W, C)``, dtype as stored (uint8, uint16, float32, ...);
- labels: ``(H, W)`` integer, 0 = background, class ids (semantic) or instance ids (instance).

Every read failure raises :class:`~medseg.errors.DataError` naming the file; every write is atomic.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has a suffix medseg reads as an image."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file.

    Args:
        path: PNG, JPEG, BMP or TIFF file.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array in its stored dtype. Palette images are expanded to RGB(A);
        an alpha channel that is fully opaque is dropped. A TIFF's channel axis is moved last: it is
        found from the axes tifffile reports (ImageJ, OME, planar RGB) or, when those are unknown, is an
        axis of at most 16 that is shorter than the other two.

    Raises:
        DataError: the file is missing, truncated, not an image, or not 2D (e.g. a Z or T stack).
    """
    return _read(Path(path), palette_indices=False)


def _read(path: Path, *, palette_indices: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported image type {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    try:
        if suffix in _TIFF:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array, axes = np.asarray(series.asarray()), series.axes
        else:
            array = decode_with_pillow(path, palette_indices=palette_indices)
    except DataError:
        raise
    except Exception as exc:  # every decoder has its own exception types
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from exc
    if suffix in _TIFF:
        array = tiff_channels_last(path, array, axes)
    return tidy_channels(array, path)


def tidy_channels(array: np.ndarray, source: str | os.PathLike[str]) -> np.ndarray:
    """Drop a lone channel axis and a fully opaque alpha channel; refuse what is not a 2D image.

    Args:
        array: decoded pixels, ``(H, W)`` or ``(H, W, C)``.
        source: the file (or upload) name for the error message.

    Raises:
        DataError: the array is not ``(H, W)`` or ``(H, W, C)`` with H, W >= 1.
    """
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4 and array.dtype.kind == "u" and _opaque(array[..., 3]):
        array = array[..., :3]
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise DataError(f"{source}: expected a 2D image, got an array of shape {array.shape}")
    return array


_ALPHA_ROWS = 1024  # rows of the alpha channel checked at a time: no (H, W) bool copy of a huge image


def _opaque(alpha: np.ndarray) -> bool:
    """Whether an ``(H, W)`` unsigned alpha channel is fully opaque, checked in row bands."""
    full = np.iinfo(alpha.dtype).max
    return all(
        np.all(alpha[top : top + _ALPHA_ROWS] == full) for top in range(0, alpha.shape[0], _ALPHA_ROWS)
    )


_MAX_CHANNELS = 16
# tifffile axis codes: C channel and S sample (RGB components) are channels; Q (unknown, e.g. a plain
# numpy array written by tifffile, whose "YX" is then only a guess) and I (a page sequence without
# metadata) say nothing, so the shape decides. Any other code (Z, T, ...) names a stack.
_CHANNEL_AXES = "CS"
_UNKNOWN_AXES = "QI"


def tiff_channels_last(path: Path, array: np.ndarray, axes: str) -> np.ndarray:
    """Return a TIFF's pixels as ``(H, W)`` or ``(H, W, C)``; refuse stacks and higher dimensions."""
    if array.ndim == 2:
        return array
    if array.ndim != 3 or len(axes) != 3:
        raise DataError(f"{path}: expected a 2D image, got an array of shape {array.shape} (axes {axes})")
    extra = [i for i, code in enumerate(axes) if code not in "YX"]
    if len(extra) == 1 and axes[extra[0]] in _CHANNEL_AXES:
        return np.moveaxis(array, extra[0], -1)
    if len(extra) == 1 and axes[extra[0]] in _UNKNOWN_AXES:
        # Channels are few and fewer than the pixels along either image axis. The leading axis is
        # tried first: that is where ImageJ-style and planar files keep them.
        for axis in (0, 2):
            others = [size for i, size in enumerate(array.shape) if i != axis]
            if array.shape[axis] <= _MAX_CHANNELS and array.shape[axis] < min(others):
                return np.moveaxis(array, axis, -1)
    raise DataError(f"{path}: expected a 2D image, got a stack of shape {array.shape} (axes {axes})")


# Pillow decodes 16-bit colour PNGs (RGB, RGBA, grey+alpha) to 8 bit, keeping each sample's high byte.
# Its decoder (zlib, row filters, interlacing) still does the work if asked for another raw mode of the
# same pixel size: ";16L" unpacks the second byte of each sample, which in PNG's big-endian order is the
# low byte, and "RGBA" copies the four bytes of a grey+alpha pixel as they are.
_PNG16_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


def decode_with_pillow(path: Path, *, palette_indices: bool) -> np.ndarray:
    """Decode with Pillow; ``palette_indices`` returns a palette image's indices (label class ids)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            rawmode = img.tile[0][3] if img.format == "PNG" and len(img.tile) == 1 else None
            if rawmode in _PNG16_RAWMODES:
                return _read_png16(path, rawmode)
            img.load()  # forces decoding so truncated files fail here
            if img.mode == "P" and palette_indices:
                return np.asarray(img)
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img, dtype=np.uint16)
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            return np.asarray(img)


def _read_png16(path: Path, rawmode: str) -> np.ndarray:
    """Decode a 16-bit colour PNG at full depth (see :data:`_PNG16_RAWMODES`)."""
    from PIL import Image

    def decode(mode: str) -> np.ndarray:
        with Image.open(path) as img:
            img.tile = [(*img.tile[0][:3], mode)]  # (decoder, extents, offset, raw mode)
            img.load()
            return np.asarray(img)

    if rawmode == "LA;16B":
        return decode("RGBA").view(">u2").astype(np.uint16)  # (H, W, 2): grey, alpha
    return (decode(rawmode).astype(np.uint16) << 8) | decode(_PNG16_RAWMODES[rawmode])


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def read_label(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label mask.

    Returns:
        ``(H, W)`` int32 array. A palette (indexed) PNG gives its indices, which are the class ids in
        VOC-style masks; a grey image stored as RGB (all channels equal) is accepted.

    Raises:
        DataError: the file is unreadable, has colour channels, or holds non-integer values.
    """
    array = _read(Path(path), palette_indices=True)
    if array.ndim == 3:
        if all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, array.shape[-1])):
            array = array[..., 0]
        else:
            raise DataError(
                f"{path}: label mask has {array.shape[-1]} colour channels; expected one channel of class ids"
            )
    if array.dtype.kind == "f":
        if not np.all(np.mod(array, 1) == 0):
            raise DataError(f"{path}: label mask holds non-integer values")
    elif array.dtype.kind not in "uib":
        raise DataError(f"{path}: label mask has unsupported dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise DataError(f"{path}: label mask holds negative values")
    return array.astype(np.int32)


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write an image or label mask atomically; the format follows the suffix.

    Args:
        path: ``.png`` (uint8 or uint16, 1/3/4 channels), ``.tif``/``.tiff`` (any dtype), ``.jpg``
            (uint8, lossy: never for labels).
        array: ``(H, W)`` or ``(H, W, C)``.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in _TIFF:
            import tifffile

            # Record the axes: tifffile stores a plain (H, W, C) array as H pages of W x C, and without
            # them a reader has to guess which axis holds the channels.
            axes = "YXC"[: array.ndim]
            tifffile.imwrite(tmp, np.ascontiguousarray(array), compression="zlib", metadata={"axes": axes})
        else:
            from PIL import Image

            if array.dtype == np.bool_:
                array = array.astype(np.uint8)
            if array.dtype.kind in "iu" and array.dtype != np.uint8:
                if array.max(initial=0) > 65535 or array.min(initial=0) < 0:
                    raise ValueError(f"{path}: values outside 0..65535 cannot be stored as PNG; use .tif")
                array = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
            Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=_PIL_FORMATS[suffix])
    return path


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}
