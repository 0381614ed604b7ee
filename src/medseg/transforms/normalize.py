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
