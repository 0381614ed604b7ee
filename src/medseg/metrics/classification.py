"""Image classification metrics from true labels and predicted class probabilities. NumPy/SciPy only.

Conventions:

- The predicted class is the argmax of each probability row (the lowest class id wins a tie).
- Per class k, from the (K, K) confusion matrix (rows = true class, columns = predicted class):
  precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN), support = TP + FN.
- A ratio whose denominator is 0 is NaN, not 0 (as in :mod:`medseg.metrics.semantic`): precision of a
  class never predicted, recall of a class absent from the truth, F1 of a class neither true nor
  predicted. Macro averages skip NaNs, so a class absent from the evaluation set does not drag them down
  (scikit-learn's ``zero_division=np.nan``; its default ``zero_division=0`` would count it as 0). A class
  that is present but never predicted still scores recall 0 and F1 0.
- balanced accuracy = mean recall over the classes present in the truth (scikit-learn's definition).
- AUC is one-vs-rest per class: the probability that a random sample of class k gets a higher score
  ``probabilities[:, k]`` than a random sample of another class, ties counting one half (Mann-Whitney U
  from average ranks). It is NaN for a class absent from the truth or when every sample is of that
  class (no negatives); macro AUC is the unweighted mean of the defined ones (NaN if none is defined),
  which equals scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")`` whenever every
  class is present.
- Calibration uses the top-label confidence (the largest probability of a row) and whether that
  prediction is right. Confidences fall into ``n_bins`` equal-width bins ``(lower, upper]`` of [0, 1]
  (a confidence of exactly 0 goes to the first bin); ECE = sum over bins of
  ``count / N * |accuracy - mean confidence|`` (Guo et al. 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "classification_metrics",
    "expected_calibration_error",
    "one_vs_rest_auc",
    "reliability_bins",
]


def _check_inputs(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] < 1:
        raise ValueError(f"probabilities must have shape (N, K), got {probabilities.shape}")
    if y_true.shape != (probabilities.shape[0],):
        raise ValueError(f"y_true has shape {y_true.shape} but probabilities has {probabilities.shape}")
    if y_true.size == 0:
        raise ValueError("no samples: y_true and probabilities are empty")
    if not (np.issubdtype(y_true.dtype, np.integer) or y_true.dtype == bool):
        raise ValueError(f"y_true must hold integer class ids, got dtype {y_true.dtype}")
    k = probabilities.shape[1]
    if y_true.min() < 0 or y_true.max() >= k:
        bad = y_true[(y_true < 0) | (y_true >= k)][0]
        raise ValueError(f"y_true holds class id {bad}, outside 0..{k - 1} for {k} probability columns")
    probabilities = probabilities.astype(np.float64, copy=False)
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("probabilities must be finite and within [0, 1] (apply softmax to logits first)")
    return y_true.astype(np.int64, copy=False), probabilities


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, NaN where the denominator is 0."""
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)


def _nanmean(values: np.ndarray) -> float:
    """Mean skipping NaNs; NaN (without numpy's 'empty slice' warning) when nothing is defined."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def one_vs_rest_auc(y_true: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Area under the ROC curve of each class against all others, from ranks (ties count one half).

    Args:
        y_true: (N,) int true class ids in ``0..K-1``.
        probabilities: (N, K) float scores in [0, 1], column k scoring class k.

    Returns:
        (K,) float64; NaN for a class absent from ``y_true`` or present in every sample.

    Example:
        >>> probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]])
        >>> one_vs_rest_auc(np.array([0, 0, 1, 1]), probs)
        array([0.75, 0.75])
    """
    from scipy.stats import rankdata  # 1.7 s to import: only when an AUC is computed

    y_true, probabilities = _check_inputs(y_true, probabilities)
    n, k = probabilities.shape
    auc = np.full(k, np.nan)
    for c in range(k):
        positive = y_true == c
        n_pos = int(positive.sum())
        n_neg = n - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        # Mann-Whitney: the positives' rank sum minus its minimum counts (positive, negative) pairs the
        # positive wins; average ranks make a tied pair count one half.
        ranks = rankdata(probabilities[:, c])
        auc[c] = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return auc


def reliability_bins(
    y_true: np.ndarray, probabilities: np.ndarray, *, n_bins: int = 15
) -> dict[str, np.ndarray]:
    """Top-label confidence and accuracy in equal-width confidence bins: the reliability diagram's table.

    Args:
        y_true: (N,) int true class ids in ``0..K-1``.
        probabilities: (N, K) float class probabilities in [0, 1].
        n_bins: number of bins over [0, 1].

    Returns:
        ``{"lower", "upper": (n_bins,) bin edges, "count": (n_bins,) int64 samples per bin,
        "confidence": (n_bins,) mean top-label confidence, "accuracy": (n_bins,) fraction predicted
        right}``; confidence and accuracy are NaN in empty bins. Bins are ``(lower, upper]``, the first
        also holding confidence 0.
    """
    y_true, probabilities = _check_inputs(y_true, probabilities)
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.arange(n_bins + 1) / n_bins  # k / n is correctly rounded, so a confidence of 0.2 is an edge
    # side="left" on the inner edges puts a confidence equal to an edge into the bin below it
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(index, minlength=n_bins)
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count,
        "confidence": _ratio(np.bincount(index, weights=confidence, minlength=n_bins), count),
        "accuracy": _ratio(np.bincount(index, weights=correct, minlength=n_bins), count),
    }


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence over equal-width bins.

    Args:
        y_true: (N,) int true class ids in ``0..K-1``.
        probabilities: (N, K) float class probabilities in [0, 1].
        n_bins: number of bins over [0, 1] (15, as in Guo et al. 2017).

    Returns:
        ECE in [0, 1]: the sample-weighted mean gap between accuracy and mean confidence of the bins.

    Example:
        >>> expected_calibration_error(np.array([0, 1]), np.array([[0.75, 0.25], [0.75, 0.25]]))
        0.25
    """
    return _ece(reliability_bins(y_true, probabilities, n_bins=n_bins))


def _ece(bins: dict[str, np.ndarray]) -> float:
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] * gaps) / bins["count"].sum())


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], *, n_bins: int = 15
) -> dict:
    """Every classification metric of an evaluation set, as plain JSON-ready Python values.

    Args:
        y_true: (N,) int true class ids in ``0..K-1``.
        probabilities: (N, K) float class probabilities in [0, 1] (softmax outputs).
        class_names: K names, in class id order.
        n_bins: confidence bins for ECE and the reliability table.

    Returns:
        ``{"num_samples", "accuracy", "balanced_accuracy", "macro_precision", "macro_recall",
        "macro_f1", "macro_auc", "ece", "per_class": {name: {"precision", "recall", "f1", "auc",
        "support"}}, "confusion_matrix": K lists of K ints (rows = true, columns = predicted),
        "class_names", "reliability": [{"lower", "upper", "count", "confidence", "accuracy"}, ...]}``.
        Undefined values are NaN (see the module docstring); ``write_json_atomic`` writes them as null.

    Example:
        >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> m = classification_metrics(np.array([0, 1, 1, 1]), probs, ["a", "b"])
        >>> m["accuracy"], m["balanced_accuracy"], m["confusion_matrix"]
        (0.75, 0.8333333333333333, [[1, 0], [1, 2]])
    """
    y_true, probabilities = _check_inputs(y_true, probabilities)
    k = probabilities.shape[1]
    if len(class_names) != k:
        raise ValueError(f"got {len(class_names)} class names for {k} probability columns")
    y_pred = probabilities.argmax(axis=1)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    support = cm.sum(axis=1)
    fn = support - tp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    auc = one_vs_rest_auc(y_true, probabilities)
    bins = reliability_bins(y_true, probabilities, n_bins=n_bins)
    return {
        "num_samples": int(y_true.size),
        "accuracy": float(tp.sum() / y_true.size),
        "balanced_accuracy": _nanmean(recall),
        "macro_precision": _nanmean(precision),
        "macro_recall": _nanmean(recall),
        "macro_f1": _nanmean(f1),
        "macro_auc": _nanmean(auc),
        "ece": _ece(bins),
        "per_class": {
            str(name): {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "auc": float(auc[c]),
                "support": int(support[c]),
            }
            for c, name in enumerate(class_names)
        },
        "class_names": [str(name) for name in class_names],
        "confusion_matrix": cm.tolist(),
        "reliability": [
            {
                "lower": float(bins["lower"][b]),
                "upper": float(bins["upper"][b]),
                "count": int(bins["count"][b]),
                "confidence": float(bins["confidence"][b]),
                "accuracy": float(bins["accuracy"][b]),
            }
            for b in range(len(bins["count"]))
        ],
    }
