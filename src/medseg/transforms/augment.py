"""Joint image + mask augmentation and cropping for 2D segmentation, in NumPy/SciPy only.

Why hand-written rather than MONAI (or torchvision) transforms: every random draw here comes from a
``np.random.Generator`` passed in for each sample, never from a global or per-worker random state. A
training run can therefore seed each sample from ``(seed, epoch, index)``, e.g.
``np.random.default_rng([seed, epoch, index])``, and a resumed run reproduces an uninterrupted one
exactly, whichever DataLoader worker happens to handle the sample and however many workers there are.

Array contract:

- image: ``(C, H, W)`` float, already normalised (see :func:`medseg.transforms.normalize`);
- mask: ``(H, W)`` integer labels (class or instance ids), or ``None`` when there is no target.

Spatial operations move image and mask identically: flips and 90-degree rotations are exact array
operations; the random affine (rotation, scale, translation about the centre) is one resampling, with
bilinear interpolation for the image and nearest-neighbour for the mask, so no label value is invented.
Both use reflection at the border, so no artificial border class appears. Intensity operations touch the
image only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class AugmentConfig:
    """Random augmentation settings, with defaults suited to 2D microscopy and medical images.

    Probabilities are in ``[0, 1]``; ranges are ``(low, high)`` with ``low <= high``. Setting a magnitude
    to zero, or a range to ``(1.0, 1.0)``, switches that operation off.

    Attributes:
        flip: random horizontal and vertical flips, each with probability 0.5.
        rotate90: random rotation by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3} for a square patch,
            in {0, 2} otherwise (so the shape never changes).
        affine_p: probability of a random affine transform built from ``rotation``, ``scale`` and
            ``translate`` below.
        rotation: maximum rotation in degrees, drawn uniformly in ``[-rotation, rotation]``.
        scale: isotropic zoom factor range, drawn uniformly.
        translate: maximum shift as a fraction of the patch size along each axis, drawn uniformly.
        brightness: maximum additive shift in normalised units, drawn uniformly in
            ``[-brightness, brightness]``, applied with probability 0.5 (same shift for all channels).
        contrast: multiplicative factor range around each channel's mean, applied with probability 0.5.
        gamma: gamma range (log-uniform, so darkening and brightening are equally likely), applied with
            probability 0.3 to a per-channel min-max rescaled copy that is then mapped back to the
            channel's original range.
        noise_std: maximum standard deviation of additive gaussian noise; the std is drawn uniformly in
            ``[0, noise_std]``, applied with probability 0.3.
        enabled: ``False`` makes :func:`augment` the identity (validation, prediction).
    """

    flip: bool = True
    rotate90: bool = True
    affine_p: float = 0.5
    rotation: float = 30.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.05
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.03
    enabled: bool = True

    def __post_init__(self) -> None:
        # YAML gives lists for tuples; store tuples so configs compare equal however they were built.
        self.scale = _range("scale", self.scale, positive=True)
        self.contrast = _range("contrast", self.contrast, positive=False)
        self.gamma = _range("gamma", self.gamma, positive=True)
        if not 0.0 <= self.affine_p <= 1.0:
            raise ValueError(f"augment.affine_p must be in [0, 1], got {self.affine_p}")
        for name in ("rotation", "translate", "brightness", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")


_FLIP_P = 0.5
_BRIGHTNESS_P = 0.5
_CONTRAST_P = 0.5
_GAMMA_P = 0.3
_NOISE_P = 0.3


def augment(
    image: np.ndarray,
    mask: np.ndarray | None,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Randomly augment an image and its mask together.

    Order: flips, 90-degree rotation, affine (one resampling), then brightness, contrast, gamma, noise.

    Args:
        image: ``(C, H, W)`` float array, already normalised.
        mask: ``(H, W)`` integer or bool labels aligned with ``image``, or ``None``.
        config: what to randomise and how much.
        rng: the sample's own generator; the only source of randomness.

    Returns:
        ``(image, mask)`` with the input shapes and dtypes, as new C-contiguous arrays (the inputs are
        never modified); ``mask`` is ``None`` when it was ``None``. With ``config.enabled`` false the
        inputs are returned as they are.

    Raises:
        ValueError: ``image`` is not a ``(C, H, W)`` float array or ``mask`` does not match its ``(H, W)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> image, mask = augment(np.zeros((3, 32, 48), np.float32), np.zeros((32, 48), np.uint8),
        ...                       AugmentConfig(), rng)
        >>> image.shape, image.dtype, mask.shape, mask.dtype
        ((3, 32, 48), dtype('float32'), (32, 48), dtype('uint8'))
    """
    _check_pair(image, mask)
    if not config.enabled:
        return image, mask
    out_image, out_mask = _spatial(image, mask, config, rng)
    out_image = _intensity(out_image, config, rng)
    return _own(out_image, image), None if mask is None else _own(out_mask, mask)


def _own(result: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``result`` as a C-contiguous array that shares no memory with ``source``."""
    if np.may_share_memory(result, source):
        return result.copy(order="C")
    return np.ascontiguousarray(result)


def _spatial(
    image: np.ndarray, mask: np.ndarray | None, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    # Flips and rot90 are views; the only copy or resampling happens at the end.
    axes: list[int] = []
    if config.flip:
        axes = [axis for axis in (-1, -2) if rng.random() < _FLIP_P]
    if axes:
        image = np.flip(image, axis=axes)
        mask = None if mask is None else np.flip(mask, axis=axes)
    if config.rotate90:
        height, width = image.shape[-2:]
        k = int(rng.integers(4)) if height == width else 2 * int(rng.integers(2))
        if k:
            image = np.rot90(image, k, axes=(-2, -1))
            mask = None if mask is None else np.rot90(mask, k, axes=(-2, -1))
    if config.affine_p > 0 and rng.random() < config.affine_p:
        matrix, offset = _random_affine(image.shape[-2:], config, rng)
        image, mask = _resample(image, mask, matrix, offset)
    return image, mask


def _random_affine(
    shape: tuple[int, ...], config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Output-to-input ``(matrix, offset)`` for ``scipy.ndimage.affine_transform`` in (row, col) order.

    The forward map sends input point ``p`` to ``c + s * R @ (p - c) + t`` (``c`` the patch centre), so
    the inverse used for sampling is ``p = A^-1 @ (q - c - t) + c`` with ``A = s * R``.
    """
    angle = math.radians(rng.uniform(-config.rotation, config.rotation))
    zoom = rng.uniform(*config.scale)
    size = np.asarray(shape, dtype=np.float64)
    shift = rng.uniform(-config.translate, config.translate, size=2) * size
    cos, sin = math.cos(angle), math.sin(angle)
    inverse = np.array([[cos, sin], [-sin, cos]]) / zoom  # (s R)^-1 = R^T / s
    centre = (size - 1.0) / 2.0
    offset = centre - inverse @ (centre + shift)
    return inverse, offset


def _resample(
    image: np.ndarray, mask: np.ndarray | None, matrix: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    out_image = np.empty(image.shape, dtype=image.dtype)
    for channel, out_channel in zip(image, out_image, strict=True):
        ndimage.affine_transform(
            channel, matrix, offset, output=out_channel, order=1, mode="reflect", prefilter=False
        )
    if mask is None:
        return out_image, None
    # affine_transform has no bool output; a bool array is reinterpreted as uint8 and back.
    source = mask.view(np.uint8) if mask.dtype == np.bool_ else mask
    out_mask = np.empty(mask.shape, dtype=source.dtype)
    ndimage.affine_transform(source, matrix, offset, output=out_mask, order=0, mode="reflect")
    return out_image, out_mask.view(mask.dtype)


def _intensity(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    # Every operation returns a new array, so the caller's image (possibly a flipped view) is never written.
    if config.brightness > 0 and rng.random() < _BRIGHTNESS_P:
        image = image + image.dtype.type(rng.uniform(-config.brightness, config.brightness))
    if config.contrast != (1.0, 1.0) and rng.random() < _CONTRAST_P:
        factor = image.dtype.type(rng.uniform(*config.contrast))
        mean = image.mean(axis=(-2, -1), keepdims=True)
        image = (image - mean) * factor + mean
    if config.gamma != (1.0, 1.0) and rng.random() < _GAMMA_P:
        log_low, log_high = math.log(config.gamma[0]), math.log(config.gamma[1])
        image = _gamma(image, math.exp(rng.uniform(log_low, log_high)))
    if config.noise_std > 0 and rng.random() < _NOISE_P:
        std = rng.uniform(0.0, config.noise_std)
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        image = image + (noise * np.float32(std)).astype(image.dtype, copy=False)
    return image


def _gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    low = image.min(axis=(-2, -1), keepdims=True)
    span = image.max(axis=(-2, -1), keepdims=True) - low
    # A constant channel (span 0) is left as it is rather than divided by zero.
    safe_span = np.where(span > 0, span, 1)
    unit = (image - low) / safe_span
    return (np.power(unit, image.dtype.type(gamma)) * safe_span + low).astype(image.dtype, copy=False)


def random_crop(
    image: np.ndarray,
    mask: np.ndarray | None,
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    pad_value_mask: int = 0,
    foreground_p: float = 0.33,
    sample_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop a random ``size`` patch, oversampling foreground like nnU-Net.

    An image smaller than ``size`` along an axis is first padded symmetrically (image with 0, mask with
    ``pad_value_mask``). With probability ``foreground_p``, and when the mask has foreground (``mask > 0``),
    the patch is centred, up to a random quarter-patch jitter, on a random pixel of a foreground class drawn
    uniformly among those present (so rare classes are centred as often as common ones), which is always
    inside the patch; otherwise the patch position is uniform. Oversampling matters when objects
    are small: a uniform 64x64 patch of a 1024x1024 slide rarely contains any.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` array.
        mask: ``(H, W)`` integer or bool labels, or ``None`` (then the position is always uniform).
        size: patch ``(height, width)``.
        rng: the sample's own generator.
        pad_value_mask: label for padded mask pixels (0 = background, or an ``ignore_index``).
        foreground_p: probability of a foreground-centred patch, in ``[0, 1]``.
        sample_mask: ``(H, W)`` integer classes to draw the centre from instead of ``mask`` (e.g. the
            cell type of each pixel when ``mask`` holds instance ids, so a rare type is centred as often
            as a common one); 0 = background.

    Returns:
        ``(image, mask)`` patches of spatial size ``size``, new arrays in the input dtypes.

    Raises:
        ValueError: invalid ``size`` or ``foreground_p``, mismatched shapes, or a ``pad_value_mask`` the
            mask's dtype cannot hold.
    """
    height, width = _check_size(size)
    if not 0.0 <= foreground_p <= 1.0:
        raise ValueError(f"foreground_p must be in [0, 1], got {foreground_p}")
    _check_crop_pair(image, mask)
    if sample_mask is not None and sample_mask.shape != image.shape[-2:]:
        raise ValueError(f"sample_mask shape {sample_mask.shape} does not match image {image.shape[-2:]}")
    if sample_mask is not None:
        _, sample_mask = _pad_to(image, sample_mask, (height, width), 0)
    image, mask = _pad_to(image, mask, (height, width), pad_value_mask)
    padded_height, padded_width = image.shape[-2:]
    use_foreground = rng.random() < foreground_p
    foreground = np.empty(0, np.intp)
    centres = sample_mask if sample_mask is not None else mask
    if use_foreground and centres is not None:
        # As nnU-Net: first a foreground class present in the mask, uniformly, then one of its pixels,
        # so a rare class (nuclei among many red cells) is centred as often as a common one.
        classes = np.unique(centres)
        classes = classes[(classes > 0) & ((classes != pad_value_mask) | (sample_mask is not None))]
        if classes.size:
            foreground = np.flatnonzero(centres == classes[rng.integers(classes.size)])
    if foreground.size:
        row, col = np.unravel_index(foreground[rng.integers(foreground.size)], centres.shape)
        jitter_row = rng.integers(-(height // 4), height // 4 + 1)
        jitter_col = rng.integers(-(width // 4), width // 4 + 1)
        top = int(np.clip(row - height // 2 + jitter_row, 0, padded_height - height))
        left = int(np.clip(col - width // 2 + jitter_col, 0, padded_width - width))
    else:
        top = int(rng.integers(padded_height - height + 1))
        left = int(rng.integers(padded_width - width + 1))
    return _window(image, mask, top, left, height, width)


def center_crop_or_pad(
    image: np.ndarray,
    mask: np.ndarray | None,
    size: tuple[int, int],
    *,
    pad_value_mask: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Deterministic counterpart of :func:`random_crop` for validation: pad, then crop the centre.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` array.
        mask: ``(H, W)`` integer or bool labels, or ``None``.
        size: patch ``(height, width)``.
        pad_value_mask: label for padded mask pixels; the image is padded with 0.

    Returns:
        ``(image, mask)`` of spatial size ``size``, new arrays in the input dtypes. Padding and cropping
        split the difference as ``before = diff // 2``, the remainder after.

    Raises:
        ValueError: invalid ``size``, mismatched shapes, or a ``pad_value_mask`` the mask cannot hold.
    """
    height, width = _check_size(size)
    _check_crop_pair(image, mask)
    image, mask = _pad_to(image, mask, (height, width), pad_value_mask)
    top = (image.shape[-2] - height) // 2
    left = (image.shape[-1] - width) // 2
    return _window(image, mask, top, left, height, width)


def _pad_to(
    image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int], pad_value_mask: int
) -> tuple[np.ndarray, np.ndarray | None]:
    missing = [max(target - have, 0) for have, target in zip(image.shape[-2:], size, strict=True)]
    spatial = [(total // 2, total - total // 2) for total in missing]
    if not any(before or after for before, after in spatial):
        return image, mask
    image = np.pad(image, [(0, 0)] * (image.ndim - 2) + spatial, constant_values=0)
    if mask is not None:
        _check_fits(pad_value_mask, mask.dtype)
        mask = np.pad(mask, spatial, constant_values=pad_value_mask)
    return image, mask


def _window(
    image: np.ndarray, mask: np.ndarray | None, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray | None]:
    rows, cols = slice(top, top + height), slice(left, left + width)
    cropped_mask = None if mask is None else mask[rows, cols].copy()
    return image[..., rows, cols].copy(), cropped_mask


def _check_pair(image: np.ndarray, mask: np.ndarray | None) -> None:
    if image.ndim != 3 or image.dtype.kind != "f":
        raise ValueError(f"expected a (C, H, W) float image, got shape {image.shape} dtype {image.dtype}")
    if mask is not None and mask.shape != image.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} does not match image (C, H, W) shape {image.shape}")


def _check_crop_pair(image: np.ndarray, mask: np.ndarray | None) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a (C, H, W) or (H, W) image, got shape {image.shape}")
    if mask is not None and mask.shape != image.shape[-2:]:
        raise ValueError(f"mask shape {mask.shape} does not match image spatial shape {image.shape[-2:]}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(side) != side or side < 1 for side in size):
        raise ValueError(f"size must be two positive integers (height, width), got {size}")
    return int(size[0]), int(size[1])


def _check_fits(value: int, dtype: np.dtype) -> None:
    if dtype.kind in "iu" and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
        raise ValueError(f"pad_value_mask={value} does not fit the mask dtype {dtype}")
    if dtype == np.bool_ and value not in (0, 1):
        raise ValueError(f"pad_value_mask={value} does not fit a bool mask (use 0 or 1)")


def _range(name: str, value: tuple[float, float], *, positive: bool) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"augment.{name} must be a (low, high) pair, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high or (positive and low <= 0) or (not positive and low < 0):
        bound = "0 < low" if positive else "0 <= low"
        raise ValueError(f"augment.{name} must be (low, high) with {bound} <= high, got {tuple(value)}")
    return low, high
