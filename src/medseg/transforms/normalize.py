"""Per-image intensity normalisation: the same function at training and at prediction time.

Everything a prediction needs to reproduce training's normalisation is the mode and, for ``"percentile"``,
the two percentiles; these are stored in the run's config. No dataset-wide statistics are kept, so a model
applies unchanged to an image from a microscope it has never seen, whatever its bit depth.

Array contract:

- input: ``(H, W)`` or ``(H, W, C)`` image in any numeric dtype (as returned by :mod:`medseg.io`);
- output: ``(C, H, W)`` float32, channels first, ready for a network.
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("percentile", "zscore", "none")

_ZSCORE_MIN_STD = 1e-8
# integer kinds whose exact histogram (<= 16 bits) gives NormalizedImage its statistics
_HISTOGRAM_KINDS = "uib"
_HISTOGRAM_ROWS = 512  # rows per bincount call: bounds its intp temporary to 8 bytes x 512 x W


def to_channels_first(image: np.ndarray) -> np.ndarray:
    """Move the channel axis first and cast to float32, without rescaling.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, any numeric dtype.

    Returns:
        ``(1, H, W)`` or ``(C, H, W)`` float32 C-contiguous array (always a new array).

    Raises:
        ValueError: ``image`` is not 2D or 3D.

    Example:
        >>> to_channels_first(np.zeros((4, 5, 3), np.uint8)).shape
        (3, 4, 5)
    """
    return _channels_first(np.asarray(image), np.float32)


def _channels_first(image: np.ndarray, dtype: type[np.floating]) -> np.ndarray:
    if image.ndim == 2:
        return image[np.newaxis].astype(dtype)
    if image.ndim == 3:
        return np.moveaxis(image, -1, 0).astype(dtype, order="C")
    raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")


def normalize(
    image: np.ndarray, mode: str = "percentile", *, low: float = 0.5, high: float = 99.5
) -> np.ndarray:
    """Normalise one image per channel and return it channels first.

    Modes:

    - ``"percentile"`` (Cellpose-style): clip each channel to its ``[low, high]`` percentiles, then scale
      that range to ``[0, 1]``. Robust to hot pixels and to any bit depth. A channel whose two percentiles
      are equal (e.g. a constant channel) becomes all zeros.
    - ``"zscore"``: ``(x - mean) / max(std, 1e-8)`` per channel, so a constant channel becomes zeros.
    - ``"none"``: cast to float32; unsigned integers are divided by their dtype's maximum
      (uint8 by 255, uint16 by 65535), booleans become 0/1, signed integers and floats keep their values.

    In every mode a float image's NaN pixels first become their channel's median and ``±inf`` its finite
    maximum/minimum (a channel with no finite value becomes zeros): they never reach the output.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, any numeric dtype.
        mode: one of :data:`NORMALIZATIONS`.
        low: lower percentile in ``[0, 100)``, used by ``"percentile"`` only.
        high: upper percentile in ``(low, 100]``, used by ``"percentile"`` only.

    Returns:
        ``(C, H, W)`` float32 array (``C = 1`` for an ``(H, W)`` input).

    Raises:
        ValueError: unknown ``mode``, invalid percentiles, or an image that is not 2D/3D.

    Example:
        >>> image = normalize(np.array([[0, 255], [0, 255]], np.uint8), "none")
        >>> image.shape, image.dtype, image.tolist()
        ((1, 2, 2), dtype('float32'), [[[0.0, 1.0], [0.0, 1.0]]])
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
    raw = np.asarray(image)
    if mode == "percentile" and not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    if mode == "none":
        channels = to_channels_first(raw)
        if raw.dtype.kind == "u":
            channels /= np.float32(np.iinfo(raw.dtype).max)
    else:
        # Work in float64 only when float32 cannot hold the input exactly (float64, 32/64-bit integers): a
        # narrow range far from zero would otherwise lose its digits when the offset is subtracted.
        channels = _channels_first(raw, np.result_type(raw.dtype, np.float32).type)
    # Only floats can hold NaN/inf. One NaN would turn a whole channel's percentiles or mean into NaN.
    # The working copy is checked so that float64 values beyond float32's range in mode "none" count too.
    if raw.dtype.kind == "f" and not np.isfinite(channels).all():
        _replace_non_finite(channels)
    if mode == "percentile":
        channels = _percentile(channels, low, high)
    elif mode == "zscore":
        channels = _zscore(channels)
    return channels.astype(np.float32, copy=False)


def _replace_non_finite(channels: np.ndarray) -> None:
    """In place, per channel: ±inf -> finite max/min, NaN -> median; no finite value at all -> zeros."""
    for channel in channels:
        finite = channel[np.isfinite(channel)]
        if finite.size == 0:
            channel[...] = 0.0
            continue
        np.clip(channel, finite.min(), finite.max(), out=channel)  # leaves NaN as NaN
        nan = np.isnan(channel)
        if nan.any():
            channel[nan] = np.median(channel[~nan])


def _percentile(channels: np.ndarray, low: float, high: float) -> np.ndarray:
    lows, highs = np.percentile(channels, [low, high], axis=(1, 2))
    for channel, lo, hi in zip(channels, lows, highs, strict=True):
        if hi > lo:
            np.clip(channel, lo, hi, out=channel)
            channel -= lo
            channel /= hi - lo  # division, not a reciprocal product, so the maximum is exactly 1
        else:
            channel[...] = 0.0
    return channels


def _zscore(channels: np.ndarray) -> np.ndarray:
    # Statistics accumulate in float64: float32 sums over megapixel images lose digits.
    means = channels.mean(axis=(1, 2), dtype=np.float64)
    stds = channels.std(axis=(1, 2), dtype=np.float64)
    for channel, mean, std in zip(channels, means, stds, strict=True):
        channel -= mean
        channel *= 1.0 / max(std, _ZSCORE_MIN_STD)
    return channels


class NormalizedImage:
    """A ``(C, H, W)`` float32 normalised image computed crop by crop from the raw image it wraps.

    Equal to ``normalize(image, mode, low=low, high=high)`` (bit for bit, or to float32 rounding for
    ``zscore``), but no whole-image float copy ever exists: the per-channel statistics are computed once
    from a histogram of the integer image, and ``image_view[:, y0:y1, x0:x1]`` normalises only that crop.
    This is what keeps a sliding-window prediction's memory independent of the image's size. Build one
    with :func:`normalize_lazily`.

    Attributes:
        shape: ``(C, H, W)``.
        ndim: 3.
        dtype: float32, the dtype every crop comes back in.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, image: np.ndarray, mode: str, low: float, high: float) -> None:
        raw = _stored(image)
        if raw.dtype.kind not in _HISTOGRAM_KINDS or raw.dtype.itemsize > 2:
            raise ValueError(f"NormalizedImage needs an integer image of at most 16 bits, not {raw.dtype}")
        # the pixels stay as stored, (H, W) or (H, W, C): a lazily decoded slide
        # (medseg.io.lazy.LazyTiffImage) is only ever read a band or a crop at a time
        self._stored = raw
        self._unsigned_max = np.float32(np.iinfo(raw.dtype).max) if raw.dtype.kind == "u" else None
        self._work = np.result_type(raw.dtype, np.float32).type  # float32: exact for <= 16-bit integers
        height, width = raw.shape[:2]
        self.shape = (1 if raw.ndim == 2 else raw.shape[2], height, width)
        self.mode = mode
        self._stats: list[tuple] = []
        if mode in ("percentile", "zscore"):
            for values, counts in _histograms(raw):
                if mode == "percentile":
                    self._stats.append(tuple(_percentiles(values, counts, (low, high), self._work)))
                else:
                    mean = np.dot(values.astype(np.float64), counts) / counts.sum()
                    std = np.sqrt(np.dot((values - mean) ** 2, counts) / counts.sum())
                    self._stats.append((np.float64(mean), np.float64(std)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:, :, :]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        """Normalise the crop ``key`` (basic indexing of the ``(C, H, W)`` image) into a new float32 array."""
        key = key if isinstance(key, tuple) else (key,)
        channel_key, spatial = (key[0], key[1:]) if key else (slice(None), ())
        crop = np.asarray(self._stored[spatial] if spatial else self._stored[...])
        crop = crop[np.newaxis] if self._stored.ndim == 2 else np.moveaxis(crop, -1, 0)  # (C, ...)
        channels = crop.astype(self._work, order="C")  # always a copy, so the raw image is never touched
        if self.mode == "none":
            if self._unsigned_max is not None:
                channels /= self._unsigned_max
        elif self.mode == "percentile":
            for channel, (lo, hi) in zip(channels, self._stats, strict=True):
                # the same operations in the same order as _percentile, so the values are identical
                if hi > lo:
                    np.clip(channel, lo, hi, out=channel)
                    channel -= lo
                    channel /= hi - lo
                else:
                    channel[...] = 0.0
        else:
            for channel, (mean, std) in zip(channels, self._stats, strict=True):
                channel -= mean
                channel *= 1.0 / max(std, _ZSCORE_MIN_STD)
        return channels.astype(np.float32, copy=False)[channel_key]


def normalize_lazily(
    image: np.ndarray, mode: str = "percentile", *, low: float = 0.5, high: float = 99.5
) -> np.ndarray | NormalizedImage:
    """:func:`normalize`, deferred to each crop where that is exact and cheap.

    Integer images of at most 16 bits (and booleans), the microscopy and photo formats, come back as a
    :class:`NormalizedImage` whose crops are normalised on demand, so a tiled prediction of an 8192² RGB
    image never holds its 768 MiB float32 copy. Other dtypes (floats, 32/64-bit integers) are normalised
    whole by :func:`normalize`, as their statistics need the float values themselves.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, any numeric dtype.
        mode, low, high: as for :func:`normalize`.

    Returns:
        A ``(C, H, W)`` float32 array or a :class:`NormalizedImage` of that shape.

    Raises:
        ValueError: as :func:`normalize`.
    """
    raw = _stored(image)
    if raw.dtype.kind not in _HISTOGRAM_KINDS or raw.dtype.itemsize > 2 or raw.ndim not in (2, 3):
        return normalize(np.asarray(raw), mode, low=low, high=high)
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if mode == "percentile" and not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    return NormalizedImage(raw, mode, low, high)


def _stored(image):
    """The image as given when it is an array-like that decodes on demand (it has ``shape``, ``dtype`` and
    basic slicing, e.g. :class:`medseg.io.lazy.LazyTiffImage`), so nothing reads it whole; else an
    ndarray."""
    if isinstance(image, np.ndarray) or not (hasattr(image, "shape") and hasattr(image, "dtype")):
        return np.asarray(image)
    return image


def _histograms(image) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact value histogram of each channel of an ``(H, W)`` or ``(H, W, C)`` integer image (<= 16 bits):
    ``[(values, counts)]`` int64, values ascending, counts > 0. One pass over bands of rows, all channels
    at once, so a lazily decoded image is read once."""
    dtype = np.dtype(image.dtype)
    offset = int(np.iinfo(dtype).min) if dtype.kind == "i" else 0
    channels = 1 if image.ndim == 2 else image.shape[2]
    counts = np.zeros((channels, 1 << (8 * dtype.itemsize)), np.int64)
    for top in range(0, image.shape[0], _HISTOGRAM_ROWS):
        block = np.asarray(image[top : top + _HISTOGRAM_ROWS])
        block = block[..., np.newaxis] if block.ndim == 2 else block
        for c in range(channels):
            band = block[..., c].ravel()
            if offset:
                band = band.astype(np.int32) - offset
            elif band.dtype == bool:
                band = band.view(np.uint8)
            counts[c] += np.bincount(band, minlength=counts.shape[1])
    result = []
    for row in counts:
        present = np.flatnonzero(row)
        result.append((present.astype(np.int64) + offset, row[present]))
    return result


def _percentiles(values: np.ndarray, counts: np.ndarray, q: tuple[float, float], work: type) -> np.ndarray:
    """``np.percentile(channel.astype(work), q)`` (method ``linear``) from the channel's histogram.

    The same index arithmetic and interpolation as NumPy, so the result is identical, not just close.
    """
    n = int(counts.sum())
    virtual = (n - 1) * np.true_divide(np.asarray(q, np.float64), 100)
    previous = np.clip(np.floor(virtual).astype(np.intp), 0, n - 1)
    following = np.minimum(previous + 1, n - 1)
    gamma = virtual - previous
    ends = np.cumsum(counts)  # order statistic i is values[first j with ends[j] > i]
    a = values[np.searchsorted(ends, previous, side="right")].astype(work)
    b = values[np.searchsorted(ends, following, side="right")].astype(work)
    diff = b - a
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe", dtype=result.dtype)
    return result
