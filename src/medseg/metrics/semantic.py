"""Semantic segmentation metrics from label images: Dice, IoU, sensitivity, specificity, precision,
accuracy and HD95, per class and averaged over images. NumPy/SciPy only (no torch).

Conventions, per class and per image:

- Counts come from one (K, K) confusion matrix. Truth pixels outside ``0..K-1`` (an ignore value such
  as 255) are left out of every count, including N, and out of both masks for HD95.
- dice = 2TP / (2TP + FP + FN), iou = TP / (TP + FP + FN), sensitivity = TP / (TP + FN),
  specificity = TN / (TN + FP), precision = TP / (TP + FP), accuracy = (TP + TN) / N.
- A ratio whose denominator is 0 is NaN, not 1: a class absent from both truth and prediction has no
  Dice. NaNs are skipped when averaging (nnU-Net's convention), so an absent class neither inflates nor
  drags down the mean. A class absent from the truth but predicted scores Dice 0 (nnU-Net; MONAI's
  ``DiceMetric(ignore_empty=True)`` returns NaN there, ``ignore_empty=False`` returns 0 like us).
- HD95 follows MONAI's ``HausdorffDistanceMetric(percentile=95)``: the boundary of a mask is the mask
  XOR its binary erosion (scipy's default cross structuring element, outside the image counted as
  background); each boundary pixel's Euclidean distance (in ``spacing`` units) to the other mask's
  boundary is taken, and HD95 is the larger of the two directed 95th percentiles (linear interpolation,
  as ``torch.quantile``). Both masks empty: NaN. Exactly one empty: we return the image diagonal
  ``sqrt(sum((shape * spacing) ** 2))``, a distance no real pair of points can exceed (as BraTS scores
  a missed tumour with the diagonal of its volume), so a missed or hallucinated structure is penalised
  in the mean. MONAI differs here: plain Hausdorff gives inf, and HD95 gives NaN (the quantile of
  all-inf distances), which a NaN-skipping mean would silently drop.
- Overlapping classes (regions, :mod:`medseg.data.regions`): each region is its own binary mask and
  class 0 is the background, the pixels in no region (:func:`per_region_metrics`).
- :meth:`SemanticMetrics.aggregate` averages each class over images (NaNs skipped), then ``mean``
  averages the foreground classes (all but class 0) of those per-class means, again skipping NaNs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.data.regions import Regions

METRIC_NAMES = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy", "hd95")

__all__ = [
    "METRIC_NAMES",
    "SemanticMetrics",
    "confusion_matrix",
    "hd95",
    "per_class_metrics",
    "per_region_metrics",
]


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    return y_true, y_pred


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    out = np.asarray(spacing, dtype=np.float64)
    if out.ndim == 0:
        out = np.full(ndim, float(out))
    if out.shape != (ndim,) or not np.all(out > 0):
        raise ValueError(f"spacing must be a positive number or {ndim} positive numbers, got {spacing}")
    return out


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, NaN where the denominator is 0."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean skipping NaNs; NaN (without numpy's 'empty slice' warning) where nothing is defined."""
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    return _ratio(np.where(defined, values, 0.0).sum(axis=axis), defined.sum(axis=axis))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel confusion matrix of two label images, in one ``np.bincount`` pass.

    Args:
        y_true: (H, W[, D]) int ground-truth class ids; values outside ``0..num_classes-1`` (an ignore
            value such as 255) are excluded.
        y_pred: (H, W[, D]) int predicted class ids, all in ``0..num_classes-1``.
        num_classes: K, the number of classes including background.

    Returns:
        (K, K) int64, ``[t, p]`` = number of pixels of true class t predicted as p.

    Raises:
        ValueError: shapes differ, a non-integer dtype, or a predicted id outside ``0..K-1``.

    Example:
        >>> confusion_matrix(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 0]]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    k = int(num_classes)
    y_pred = y_pred.astype(np.int64, copy=False)
    if y_pred.size and (y_pred.min() < 0 or y_pred.max() >= k):
        bad = y_pred[(y_pred < 0) | (y_pred >= k)][0]
        raise ValueError(f"y_pred holds class id {bad}, outside 0..{k - 1} for num_classes={k}")
    y_true = y_true.astype(np.int64, copy=False)
    valid = (y_true >= 0) & (y_true < k)
    counts = np.bincount(y_true[valid] * k + y_pred[valid], minlength=k * k)
    return counts.reshape(k, k)


def _crop_to_union(mask_true: np.ndarray, mask_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union grown by 1 pixel (clipped to the image)."""
    union = mask_true | mask_pred
    box = []
    for axis in range(union.ndim):
        other_axes = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other_axes))
        box.append(slice(max(hits[0] - 1, 0), hits[-1] + 2))
    return mask_true[tuple(box)], mask_pred[tuple(box)]


def _hd95(mask_true: np.ndarray, mask_pred: np.ndarray, spacing: np.ndarray) -> float:
    has_true, has_pred = bool(mask_true.any()), bool(mask_pred.any())
    if not (has_true or has_pred):
        return math.nan
    if has_true != has_pred:
        return float(np.sqrt(np.sum((np.asarray(mask_true.shape) * spacing) ** 2)))
    mask_true, mask_pred = _crop_to_union(mask_true, mask_pred)
    # Cropping keeps the boundary exact: erosion counts outside the crop as background, and every pixel it
    # could affect already has a background neighbour (the 1-pixel margin is MONAI's, kept for clarity).
    edge_true = mask_true ^ ndimage.binary_erosion(mask_true)
    edge_pred = mask_pred ^ ndimage.binary_erosion(mask_pred)
    to_true = ndimage.distance_transform_edt(~edge_true, sampling=spacing)[edge_pred]
    to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=spacing)[edge_true]
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))


def hd95(
    mask_true: np.ndarray, mask_pred: np.ndarray, *, spacing: float | Sequence[float] | None = None
) -> float:
    """95th-percentile symmetric Hausdorff distance between the boundaries of two binary masks.

    Args:
        mask_true: (H, W[, D]) bool (or 0/1) ground-truth mask.
        mask_pred: (H, W[, D]) bool (or 0/1) predicted mask, same shape.
        spacing: pixel size per axis (one number for isotropic); None means 1.

    Returns:
        HD95 in ``spacing`` units; NaN if both masks are empty; the image diagonal if exactly one is.
    """
    mask_true, mask_pred = np.asarray(mask_true, dtype=bool), np.asarray(mask_pred, dtype=bool)
    if mask_true.shape != mask_pred.shape:
        raise ValueError(f"mask_true has shape {mask_true.shape} but mask_pred has shape {mask_pred.shape}")
    return _hd95(mask_true, mask_pred, _spacing(spacing, mask_true.ndim))


def per_class_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    *,
    spacing: float | Sequence[float] | None = None,
    hd95: bool = True,
) -> dict[str, np.ndarray]:
    """All metrics for every class (background included) of one image.

    Args:
        y_true: (H, W[, D]) int ground-truth class ids; values outside ``0..num_classes-1`` are ignored.
        y_pred: (H, W[, D]) int predicted class ids in ``0..num_classes-1``.
        num_classes: K, the number of classes including background.
        spacing: pixel size per axis for HD95 (one number for isotropic); None means 1.
        hd95: compute HD95 (the slow part); if False the ``"hd95"`` key is left out.

    Returns:
        ``{metric: (K,) float64}`` for the names in :data:`METRIC_NAMES`, NaN where undefined (see the
        module docstring).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm)
    result = _scores(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp, cm.sum())
    if hd95:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        valid = (y_true >= 0) & (y_true < num_classes)
        sampling = _spacing(spacing, y_true.ndim)
        result["hd95"] = np.array(
            [_hd95(y_true == k, (y_pred == k) & valid, sampling) for k in range(num_classes)]
        )
    return result


def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, total: int) -> dict[str, np.ndarray]:
    tn = total - tp - fp - fn
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, np.full(tp.shape, total)),
    }


def per_region_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    regions: Regions,
    *,
    spacing: float | Sequence[float] | None = None,
    hd95: bool = True,
) -> dict[str, np.ndarray]:
    """All metrics for background and every region of one image with overlapping classes.

    Each region is scored as its own binary mask (a pixel can count for several), as nnU-Net scores
    region-based training; index 0 is the background (pixels in no region).

    Args:
        y_true: (H, W[, D]) int ground-truth mask values (:mod:`medseg.data.regions`); values that are
            not mask values of ``regions`` (an ignore label, -1) are not scored.
        y_pred: (H, W[, D]) int predicted mask values.
        regions: which mask values belong to which region.
        spacing, hd95: as for :func:`per_class_metrics`.

    Returns:
        ``{metric: (R + 1,) float64}``, NaN where undefined.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shape mismatch: y_true {y_true.shape} vs y_pred {y_pred.shape}")
    valid = np.isin(y_true, regions.mask_values)
    true = regions.members(np.where(valid, y_true, 0))
    pred = regions.members(y_pred)
    true = np.concatenate([~true.any(axis=0)[None], true]) & valid
    pred = np.concatenate([~pred.any(axis=0)[None], pred]) & valid
    axes = tuple(range(1, true.ndim))
    tp = (true & pred).sum(axis=axes)
    fp = (pred & ~true).sum(axis=axes)
    fn = (true & ~pred).sum(axis=axes)
    result = _scores(tp, fp, fn, int(valid.sum()))
    if hd95:
        sampling = _spacing(spacing, y_true.ndim)
        result["hd95"] = np.array([_hd95(t, p, sampling) for t, p in zip(true, pred, strict=True)])
    return result


class SemanticMetrics:
    """Accumulate per-class metrics over images, then summarise them.

    Args:
        num_classes: K, the number of classes including background (class 0).
        spacing: pixel size per axis for HD95, the same for every image; None means 1.
        hd95: compute HD95 (the slow part).

    Example:
        >>> metrics = SemanticMetrics(2, hd95=False)
        >>> metrics.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))["dice"].tolist()
        [0.6666666666666666, 0.8]
        >>> metrics.aggregate(["background", "cell"])["mean"]["dice"]
        0.8
    """

    def __init__(
        self,
        num_classes: int,
        *,
        spacing: float | Sequence[float] | None = None,
        hd95: bool = True,
        regions: Regions | None = None,
    ) -> None:
        self.num_classes = int(num_classes)
        self.spacing = spacing
        self.hd95 = hd95
        self.regions = regions
        if regions is not None and self.num_classes != len(regions) + 1:
            raise ValueError(f"num_classes {num_classes} must be 1 + {len(regions)} regions")
        self._per_image: list[dict[str, np.ndarray]] = []

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._per_image.clear()

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
        """Score one image and remember it.

        Args:
            y_true: (H, W[, D]) int ground-truth class ids (ignore values allowed, see
                :func:`confusion_matrix`).
            y_pred: (H, W[, D]) int predicted class ids.

        Returns:
            The image's ``{metric: (K,) float64}`` from :func:`per_class_metrics`.
        """
        if self.regions is not None:
            scores = per_region_metrics(y_true, y_pred, self.regions, spacing=self.spacing, hd95=self.hd95)
        else:
            scores = per_class_metrics(y_true, y_pred, self.num_classes, spacing=self.spacing, hd95=self.hd95)
        self._per_image.append(scores)
        return scores

    def aggregate(self, class_names: Sequence[str]) -> dict:
        """Summarise the images seen so far as plain, JSON-ready Python values.

        Args:
            class_names: K names, class 0 (background) first.

        Returns:
            ``{"num_images": N, "per_class": {name: {metric: mean over images}}, "mean": {metric: mean
            over the foreground classes of the per-class means}}``; means skip NaNs and are NaN where
            nothing is defined (for example ``mean`` when K == 1).
        """
        if len(class_names) != self.num_classes:
            raise ValueError(f"got {len(class_names)} class names for num_classes={self.num_classes}")
        names = [name for name in METRIC_NAMES if self.hd95 or name != "hd95"]
        per_class_mean = {
            name: _nanmean(
                np.stack([scores[name] for scores in self._per_image])
                if self._per_image
                else np.full((0, self.num_classes), np.nan),
                axis=0,
            )
            for name in names
        }
        return {
            "num_images": len(self._per_image),
            "per_class": {
                str(class_name): {name: float(per_class_mean[name][k]) for name in names}
                for k, class_name in enumerate(class_names)
            },
            "mean": {name: float(_nanmean(per_class_mean[name][1:])) for name in names},
        }
