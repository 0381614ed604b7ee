"""Open an image without reading its pixels: a read-only memory map where the file allows it.

A 20,000 x 20,000 RGB slide is 1.2 GB of pixels; tiled prediction only ever needs a few tiles of it at a
time, so for an uncompressed, contiguous TIFF (OME-TIFF included) the pixels are mapped, not read, and the
operating system pages in the rows each tile touches. Everything else (compressed or tiled TIFF, PNG,
JPEG, ...) is read whole by :func:`~medseg.io.images.read_image`. Reading compressed or pyramidal slides
tile by tile (``tifffile.imread(path, aszarr=True)``) needs the ``zarr`` package, which medseg does not
depend on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.images import _TIFF, _reason, read_image, tidy_channels, tiff_channels_last


def open_image_lazily(path: str | os.PathLike[str]) -> np.ndarray:
    """Open an image, memory-mapping it where the format allows.

    Args:
        path: any file :func:`~medseg.io.images.read_image` reads.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array in its stored dtype, with the same values and channel handling
        as :func:`~medseg.io.images.read_image`. For an uncompressed TIFF whose first series is stored
        contiguously it is a read-only view of a ``numpy.memmap`` (only the pixels that are indexed are
        read; a planar ``(C, H, W)`` file comes back as a strided ``(H, W, C)`` view); otherwise an
        ordinary array read whole.

    Raises:
        DataError: the file is missing, unreadable, or not a 2D image.
    """
    path = Path(path)
    if path.suffix.lower() not in _TIFF or not path.is_file():
        return read_image(path)
    mapped = _memory_map(path)
    if mapped is None:
        return read_image(path)
    array, axes = mapped
    return tidy_channels(tiff_channels_last(path, array, axes), path)


def _memory_map(path: Path) -> tuple[np.ndarray, str] | None:
    """``(read-only memmap of series 0, its axes)``, or None when the pixels are not stored contiguously
    and uncompressed (then only decoding can read them)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            if series.dataoffset is None or not series.keyframe.is_memmappable:
                return None
    except Exception as exc:  # tifffile raises its own and OS errors for broken files
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from exc
    try:
        array = tifffile.memmap(path, series=0, mode="r")
    except (ValueError, OSError):  # e.g. a byte layout numpy cannot map: decode it instead
        return None
    return array, axes
