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
        an alpha channel that is fully opaque is dropped.

    Raises:
        DataError: the file is missing, truncated, not an image, or not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported image type {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    try:
        if suffix in _TIFF:
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            array = _read_with_pillow(path)
    except DataError:
        raise
    except Exception as exc:  # every decoder has its own exception types
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from exc
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first TIFF
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if (
        array.ndim == 3
        and array.shape[-1] == 4
        and np.all(array[..., 3] == np.iinfo(array.dtype).max if array.dtype.kind == "u" else False)
    ):
        array = array[..., :3]
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 1:
        raise DataError(f"{path}: expected a 2D image, got an array of shape {array.shape}")
    return array


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()  # forces decoding so truncated files fail here
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img, dtype=np.uint16)
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            return np.asarray(img)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def read_label(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label mask.

    Returns:
        ``(H, W)`` int32 array. A grey image stored as RGB (all channels equal) is accepted.

    Raises:
        DataError: the file is unreadable, has colour channels, or holds non-integer values.
    """
    array = read_image(path)
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

            tifffile.imwrite(tmp, np.ascontiguousarray(array), compression="zlib")
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
