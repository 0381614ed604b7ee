"""Open an image without reading its pixels: a memory map or a tile-by-tile decoder where the file allows.

A 20,000 x 20,000 RGB slide is 1.2 GB of pixels; tiled prediction only ever needs a few tiles of it at a
time. So a TIFF's first series is opened, not read:

- uncompressed and stored contiguously (OME-TIFF included): a read-only ``numpy.memmap``; the operating
  system pages in the rows each tile touches;
- compressed (LZW, deflate, JPEG, zstd, ...) or tiled, as whole-slide images (SVS, pyramidal OME-TIFF)
  are: a :class:`LazyTiffImage` over tifffile's zarr store of level 0 (full resolution), which decodes
  only the TIFF tiles or strips that an index touches. Images of fewer than :data:`LAZY_DECODE_MIN_PIXELS`
  pixels are read whole instead (a few tens of MB at most, and a plain array is faster to work with),
  as is everything when the optional ``zarr`` package is missing.

Every other format (PNG, JPEG, ...) is read whole by :func:`~medseg.io.images.read_image`. Values and
channel handling are :func:`~medseg.io.images.read_image`'s in every case.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError
from medseg.io.images import _TIFF, _reason, read_image, tidy_channels, tiff_channels_last

# Below this many pixels (H x W) a compressed or tiled TIFF is decoded whole: 4096² RGB is 48 MiB.
LAZY_DECODE_MIN_PIXELS = 4096 * 4096


def open_image_lazily(path: str | os.PathLike[str]) -> np.ndarray | LazyTiffImage:
    """Open an image, memory-mapping it or decoding it tile by tile where the format allows.

    Args:
        path: any file :func:`~medseg.io.images.read_image` reads.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` image in its stored dtype, with the same values and channel handling
        as :func:`~medseg.io.images.read_image`. For an uncompressed TIFF whose first series is stored
        contiguously it is a read-only view of a ``numpy.memmap`` (a planar ``(C, H, W)`` file comes back
        as a strided ``(H, W, C)`` view); for a compressed or tiled TIFF of at least
        :data:`LAZY_DECODE_MIN_PIXELS` pixels a :class:`LazyTiffImage` (needs ``zarr``); otherwise an
        ordinary array read whole.

    Raises:
        DataError: the file is missing, unreadable, or not a 2D image.
    """
    path = Path(path)
    if path.suffix.lower() not in _TIFF or not path.is_file():
        return read_image(path)
    opened = _open_tiff(path)
    if opened is None:
        return read_image(path)
    array, axes = opened
    return tidy_channels(tiff_channels_last(path, array, axes), path)


def _open_tiff(path: Path) -> tuple[np.ndarray | LazyTiffImage, str] | None:
    """``(pixels of series 0 level 0, their axes)`` without decoding them: a read-only memmap, or a
    :class:`LazyTiffImage`; None when the image is better (or only) read whole."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            if series.dataoffset is None or not series.keyframe.is_memmappable:
                return _open_zarr(series, axes, shape, path)
    except DataError:
        raise
    except Exception as exc:  # tifffile raises its own and OS errors for broken files
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from exc
    try:
        array = tifffile.memmap(path, series=0, mode="r")
    except (ValueError, OSError):  # e.g. a byte layout numpy cannot map: decode it instead
        return None
    return array, axes


def _open_zarr(
    series: Any, axes: str, shape: tuple[int, ...], path: Path
) -> tuple[LazyTiffImage, str] | None:
    """Level 0 of ``series`` (a ``tifffile.TiffPageSeries``) as a :class:`LazyTiffImage`, or None when it
    is small, not 2D/3D, or ``zarr`` is not installed."""
    pixels = int(np.prod([size for size, code in zip(shape, axes, strict=True) if code in "YX"]))
    if len(shape) not in (2, 3) or pixels < LAZY_DECODE_MIN_PIXELS:
        return None  # read_image reads it, or names the stack it is
    try:
        import zarr
    except ImportError:
        return None
    # The store reopens the file by name for each read, so it outlives the TiffFile it came from.
    array = zarr.open(series.aszarr(level=0), mode="r")
    if tuple(array.shape) != tuple(shape):
        return None  # e.g. squeezed differently: let read_image decide
    return LazyTiffImage(array, path), axes


class LazyTiffImage:
    """A read-only image whose pixels are decoded from a (compressed, tiled) TIFF only where indexed.

    It stands in for the NumPy array :func:`~medseg.io.images.read_image` would return, for the uses
    medseg makes of a large image:

    - ``shape``, ``dtype``, ``ndim``, ``size``, ``len()``;
    - basic indexing with integers and slices, steps included (``image[y0:y1, x0:x1]``,
      ``image[::k, ::k]``, ``image[y0:y1, x0:x1, :]``) returns a new NumPy array and decodes only the TIFF
      tiles or strips it touches (a stepped read decodes each tile once and keeps only the output); a
      tile that cannot be decoded raises :class:`~medseg.errors.DataError` naming the file;
    - selecting channels alone (``image[..., :3]``, ``image[..., 0]``) and ``np.moveaxis`` return another
      lazy view, decoding nothing;
    - ``np.asarray(image)``, any other NumPy function, any other index (``np.newaxis``, negative steps,
      index arrays) and any other ndarray attribute (``.mean()``, ``.astype()``, ...) work on the whole
      decoded image, as they would on ``read_image``'s array: fine for small images; for a large one
      that is the whole read this class exists to avoid.

    Attributes:
        shape: ``(H, W)`` or ``(H, W, C)`` (after :func:`open_image_lazily`'s channel handling).
        dtype: the stored dtype.
        ndim: 2 or 3.
        source: the file, for messages.
    """

    def __init__(
        self,
        array: Any,
        source: str | os.PathLike[str],
        select: tuple[range | int, ...] | None = None,
        order: tuple[int, ...] | None = None,
    ) -> None:
        """Wrap ``array`` (a zarr array, or anything with zarr's basic indexing returning NumPy).

        Args:
            array: the stored pixels, in the file's axis order.
            source: file name for messages.
            select: per axis of ``array``: the indices this view keeps (a ``range``), or one index (an
                int: the axis is dropped). None = everything.
            order: the axes of ``array`` (those selected by a range) in this view's axis order.
        """
        self._array = array
        self.source = str(source)
        self._select = select if select is not None else tuple(range(size) for size in array.shape)
        kept = tuple(axis for axis, chosen in enumerate(self._select) if isinstance(chosen, range))
        self._order = order if order is not None else kept
        if sorted(self._order) != list(kept):
            raise ValueError(f"order {self._order} must list the selected axes {kept}")
        self.dtype = np.dtype(array.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self._select[axis]) for axis in self._order)

    @property
    def ndim(self) -> int:
        return len(self._order)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyTiffImage({self.source!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray | LazyTiffImage:
        """Decode ``key`` (basic indexing: ints, slices with positive steps, one ``...``) into NumPy, or,
        when ``key`` only selects channels, return a lazy view of those channels."""
        entries = self._expand(key)
        if entries is None:  # NumPy's semantics (and errors) on the decoded image
            return np.asarray(self)[key]
        if self.ndim == 3 and entries[:2] == [slice(None)] * 2 and entries[2] != slice(None):
            return self._view(entries)
        select = list(self._select)
        for axis, entry in zip(self._order, entries, strict=True):
            select[axis] = select[axis][entry]  # range[int] -> int, range[slice] -> range
        stored = [axis for axis, chosen in enumerate(select) if isinstance(chosen, range)]
        wanted = [axis for axis, entry in zip(self._order, entries, strict=True) if isinstance(entry, slice)]
        if any(len(select[axis]) == 0 for axis in stored):
            return np.empty([len(select[axis]) for axis in wanted], self.dtype)
        # zarr decodes each touched tile once, also for a stepped slice, and keeps only the output
        try:
            pixels = np.asarray(self._array[tuple(_as_index(chosen) for chosen in select)])
        except Exception as exc:  # a corrupt or truncated tile: the decoder's own exception types
            raise DataError(f"{self.source}: cannot read image ({_reason(exc)})") from exc
        return pixels.transpose([stored.index(axis) for axis in wanted])

    def _expand(self, key: Any) -> list[int | slice] | None:
        """``key`` as one int or slice per axis, or None when it is not that simple (``np.newaxis``, a
        negative step, an index array, an out-of-range index, ...)."""
        key = key if isinstance(key, tuple) else (key,)
        ellipses = [at for at, entry in enumerate(key) if entry is Ellipsis]
        if len(ellipses) == 1:
            at = ellipses[0]
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        if len(ellipses) > 1 or len(key) > self.ndim:
            return None
        entries: list[int | slice] = []
        for entry, size in zip(key + (slice(None),) * (self.ndim - len(key)), self.shape, strict=True):
            if isinstance(entry, slice) and (entry.step is None or entry.step > 0):
                entries.append(entry)
            elif (
                isinstance(entry, (int, np.integer)) and not isinstance(entry, bool) and -size <= entry < size
            ):
                entries.append(int(entry))
            else:
                return None
        return entries

    def _view(self, entries: list[int | slice]) -> LazyTiffImage:
        """The lazy view that ``entries`` (one per axis) select: nothing is decoded."""
        select = list(self._select)
        for axis, entry in zip(self._order, entries, strict=True):
            select[axis] = select[axis][entry]
        order = tuple(
            axis for axis, entry in zip(self._order, entries, strict=True) if isinstance(entry, slice)
        )
        return LazyTiffImage(self._array, self.source, tuple(select), order)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(
                f"{self.source}: a lazily read image cannot be viewed as an array without a copy"
            )
        whole = self[(slice(None),) * self.ndim]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getattr__(self, name: str) -> Any:
        # the rest of ndarray's interface (.mean, .astype, .copy, ...) on the decoded image, as for
        # np.asarray: callers written for arrays keep working, at the cost of a whole read
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(np.asarray(self), name)

    def __array_function__(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        if func is np.moveaxis:
            return self._moveaxis(*args[1:], **kwargs)
        return func(*_decoded(args), **_decoded(kwargs))

    def _moveaxis(self, source: int | tuple[int, ...], destination: int | tuple[int, ...]) -> LazyTiffImage:
        """``np.moveaxis`` as a lazy view (the same axis arithmetic as NumPy's)."""
        source, destination = self._axes(source), self._axes(destination)
        if len(source) != len(destination):
            raise ValueError("`source` and `destination` arguments must have the same number of elements")
        permutation = [axis for axis in range(self.ndim) if axis not in source]
        for dst, src in sorted(zip(destination, source, strict=True)):
            permutation.insert(dst, src)
        order = tuple(self._order[axis] for axis in permutation)
        return LazyTiffImage(self._array, self.source, self._select, order)

    def _axes(self, axes: int | tuple[int, ...]) -> tuple[int, ...]:
        axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
        if any(not -self.ndim <= axis < self.ndim for axis in axes) or len(
            set(a % self.ndim for a in axes)
        ) < len(axes):
            raise ValueError(f"invalid axes {axes} for an image of {self.ndim} dimensions")
        return tuple(int(axis) % self.ndim for axis in axes)


def _as_index(chosen: range | int) -> slice | int:
    """One axis of a :class:`LazyTiffImage` selection as a zarr index (``chosen`` is not empty)."""
    return chosen if isinstance(chosen, int) else slice(chosen.start, chosen[-1] + 1, chosen.step)


def _decoded(value: Any) -> Any:
    """``value`` with every :class:`LazyTiffImage` in it (also inside lists, tuples, dicts) decoded."""
    if isinstance(value, LazyTiffImage):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_decoded(item) for item in value)
    if isinstance(value, dict):
        return {name: _decoded(item) for name, item in value.items()}
    return value
