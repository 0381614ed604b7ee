"""Instance segmentation metrics from two label images: matching (TP/FP/FN, precision, recall, F1), panoptic
quality, AJI and AJI+, DSB-style average precision and DeepCell-style object error types. NumPy/SciPy only.

Everything comes from one sparse overlap table (:func:`overlap_table`): the pixel count of every
(true object, predicted object) pair that overlaps, plus each object's area, computed in one pass over
the pixels (one combined key per pixel, sorted and counted). No per-object masks and no loops over all
pairs, so a 2048x2048 image with thousands of objects takes a few tens of milliseconds.

Conventions:

- Label images: 0 is background, every other value is one object (labels need not be consecutive; any
  integer dtype, negative values included; a bool image is one object). 2D and 3D alike.
- A pair (t, p) can match when IoU(t, p) > ``thresh``, strictly, as in the PQ paper and MONAI's
  ``PanopticQualityMetric`` (StarDist's ``matching`` uses >=). For ``thresh >= 0.5`` those pairs already
  form a one-to-one matching (an object cannot have IoU > 0.5 with two disjoint objects). Below 0.5 we
  take an optimal one-to-one assignment among them: the most matches, and among those the largest total
  IoU (StarDist's objective; MONAI instead maximises the total IoU over all pairs and then drops pairs
  at or below the threshold, which can give fewer matches).
- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN) = RQ,
  SQ = mean IoU of the matched pairs (= ``mean_matched_iou``), PQ = SQ * RQ = sum of matched IoUs /
  (TP + FP/2 + FN/2) (Kirillov et al. 2019). DSB average precision at t = TP / (TP + FP + FN),
  ``ap_dsb`` is its mean over t in 0.5, 0.55, ..., 0.95.
- A ratio whose denominator is 0 is NaN (as in :mod:`medseg.metrics.semantic`): with both images empty
  every score is NaN; with exactly one empty F1, RQ, PQ, AP and AJI are 0, precision is NaN when nothing
  is predicted, recall is NaN when the truth is empty, and SQ is NaN whenever TP = 0.
- AJI (Kumar et al. 2017, as HoVer-Net's ``get_fast_aji``): each true object is paired with the prediction
  of highest IoU (ties: the lowest predicted label), C += |T ∩ P|, U += |T ∪ P|; true objects overlapping
  nothing and predictions paired with no true object add their area to U; AJI = C / U. AJI+ (Graham et
  al. 2019) pairs one-to-one by maximum total IoU instead.
- Object error types follow DeepCell's ``ObjectAccuracy``: objects left unmatched at ``thresh`` are linked
  when IoU >= ``cutoff`` (0.1, DeepCell's ``cutoff2``) or when more than half of the smaller object lies in
  the other, and each connected component of that bipartite graph is classified: one true object with
  >= 2 predictions is a split (one event; ``gained_from_split`` counts the predictions beyond the first),
  >= 2 true objects with one prediction a merge (``missed_from_merge`` likewise), >= 2 of each a
  catastrophe; a lone object, or one true and one prediction linked only weakly, counts as missed (true)
  and gained (prediction). DeepCell matches by a linear assignment with ``cutoff1=0.4``, which in effect
  keeps pairs with IoU > 1 - 0.4; ``thresh=0.6`` approximates its counts.
- :func:`aggregate_instance_metrics` pools the counts of all images before taking ratios (dataset-level
  F1/PQ/AJI, as StarDist's ``matching_dataset``): large, crowded images weigh more. The ``image_mean_*``
  keys are the plain means over images (the DSB 2018 leaderboard averaged AP per image this way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

DSB_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
ERROR_TYPES = ("correct", "missed", "gained", "split", "merge", "catastrophe")
_ERROR_COUNTS = (
    *ERROR_TYPES,
    "gained_from_split",
    "missed_from_merge",
    "true_in_catastrophe",
    "pred_in_catastrophe",
)

__all__ = [
    "DSB_THRESHOLDS",
    "ERROR_TYPES",
    "MatchResult",
    "ObjectErrors",
    "OverlapTable",
    "aggregate_instance_metrics",
    "aji",
    "aji_plus",
    "instance_metrics",
    "match_instances",
    "object_errors",
    "overlap_table",
]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matching of true and predicted objects at one IoU threshold.

    ``matched_true``, ``matched_pred`` and ``matched_iou`` are (TP,) arrays: the labels of each matched
    pair (as in the input images) and their IoU, sorted by true label.
    """

    thresh: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    iou_sum: float
    precision: float
    recall: float
    f1: float
    sq: float
    rq: float
    pq: float
    mean_matched_iou: float
    matched_true: np.ndarray
    matched_pred: np.ndarray
    matched_iou: np.ndarray


@dataclass(frozen=True)
class ObjectErrors:
    """DeepCell-style error types (see the module docstring).

    ``true_error`` (T,) and ``pred_error`` (P,) name each object's category (one of :data:`ERROR_TYPES`),
    aligned with ``true_labels`` (T,) and ``pred_labels`` (P,), for overlays.
    """

    correct: int
    missed: int
    gained: int
    split: int
    merge: int
    catastrophe: int
    gained_from_split: int
    missed_from_merge: int
    true_in_catastrophe: int
    pred_in_catastrophe: int
    true_labels: np.ndarray
    pred_labels: np.ndarray
    true_error: np.ndarray
    pred_error: np.ndarray

    def counts(self) -> dict[str, int]:
        """The error counts as a plain dict (no label arrays)."""
        return {name: int(getattr(self, name)) for name in _ERROR_COUNTS}


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two label images and return them flattened (bool as uint8, without copying)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    flat = []
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.dtype == bool:
            arr = arr.view(np.uint8)
        elif not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer instance labels, got dtype {arr.dtype}")
        flat.append(arr.reshape(-1))
    return flat[0], flat[1]


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, codes): codes (N,) int64 with 0 for background and 1.. for the sorted labels; values[code]
    gives a code's label back."""
    values, inverse = np.unique(labels, return_inverse=True)
    codes = inverse.reshape(-1).astype(np.int64) + 1
    codes[labels == 0] = 0
    return np.concatenate([np.zeros(1, dtype=values.dtype), values]), codes


def _label_pair_counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true label, predicted label, pixel count) of every pair that occurs, except (0, 0).

    Sorted by true label, then predicted label. Each pixel gets one combined key ``t * width + p``; sorting
    the non-background keys and counting runs is the whole pass. Non-negative labels are used as they are
    (int32 keys when they fit, which sort fastest); negative or huge labels are first relabelled to
    1..n with ``np.unique``.
    """
    t_min = int(t.min()) if t.size else 0
    p_min = int(p.min()) if p.size else 0
    t_max = int(t.max()) if t.size else 0
    p_max = int(p.max()) if p.size else 0
    if min(t_min, p_min) < 0 or (t_max + 1) * (p_max + 1) > np.iinfo(np.int64).max:
        true_values, true_codes = _relabel(t)
        pred_values, pred_codes = _relabel(p)
        true_of, pred_of, count = _label_pair_counts(true_codes, pred_codes)
        return true_values[true_of], pred_values[pred_of], count
    width = p_max + 1
    key_dtype = np.int32 if (t_max + 1) * width <= np.iinfo(np.int32).max else np.int64
    key = t.astype(key_dtype)
    key *= width
    np.add(key, p, out=key, casting="unsafe")  # 0 <= p < width, so the sum fits the key dtype
    key = key[key != 0]
    if key.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    key.sort()
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    count = np.diff(np.append(starts, len(key))).astype(np.int64)
    cells = key[starts].astype(np.int64)
    return cells // width, cells % width, count


def _bipartite_components(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int
) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected components of the bipartite graph with edges (rows[i], cols[i]); (count, (R,), (C,))."""
    n = n_rows + n_cols
    graph = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols + n_rows)), shape=(n, n))
    n_components, labels = connected_components(graph, directed=False)
    return n_components, labels[:n_rows], labels[n_rows:]


def _max_weight_matching(
    rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int, n_cols: int
) -> np.ndarray:
    """A one-to-one set of edges of maximum total weight (all weights > 0); (E,) bool mask over the edges.

    Solved per connected component: a component with one row or one column keeps its heaviest edge
    (ties: lowest row, then lowest column), all at once; only components with several objects on both
    sides go through ``linear_sum_assignment``, on their own small dense block.
    """
    chosen = np.zeros(len(rows), dtype=bool)
    if len(rows) == 0:
        return chosen
    n_components, row_component, col_component = _bipartite_components(rows, cols, n_rows, n_cols)
    component = row_component[rows]
    rows_in = np.bincount(row_component, minlength=n_components)[component]
    cols_in = np.bincount(col_component, minlength=n_components)[component]
    star = (rows_in == 1) | (cols_in == 1)
    edges = np.flatnonzero(star)
    edges = edges[np.lexsort((cols[edges], rows[edges], -weights[edges], component[edges]))]
    first = np.ones(len(edges), dtype=bool)
    first[1:] = component[edges][1:] != component[edges][:-1]
    chosen[edges[first]] = True
    tangled = np.flatnonzero(~star)
    if len(tangled):
        tangled = tangled[np.argsort(component[tangled], kind="stable")]
        starts = np.flatnonzero(np.diff(component[tangled])) + 1
        for group in np.split(tangled, starts):
            row_ids, row_pos = np.unique(rows[group], return_inverse=True)
            col_ids, col_pos = np.unique(cols[group], return_inverse=True)
            block = np.zeros((len(row_ids), len(col_ids)))
            block[row_pos, col_pos] = weights[group]
            edge_at = np.full(block.shape, -1)
            edge_at[row_pos, col_pos] = group
            picked = edge_at[linear_sum_assignment(block, maximize=True)]
            chosen[picked[picked >= 0]] = True  # a zero entry is not an edge: that row stays unmatched
    return chosen


@dataclass(frozen=True)
class OverlapTable:
    """Sparse contingency table of two label images; every metric here is computed from it.

    Attributes:
        true_labels: (T,) labels of the true objects, ascending.
        pred_labels: (P,) labels of the predicted objects, ascending.
        true_areas: (T,) int64 pixel counts.
        pred_areas: (P,) int64 pixel counts.
        true_index: (E,) int64 index into ``true_labels`` of each overlapping pair.
        pred_index: (E,) int64 index into ``pred_labels`` of each overlapping pair.
        intersection: (E,) int64 shared pixel count of each pair (> 0); pairs sorted by (true, pred).
    """

    true_labels: np.ndarray
    pred_labels: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    true_index: np.ndarray
    pred_index: np.ndarray
    intersection: np.ndarray

    @property
    def n_true(self) -> int:
        return len(self.true_labels)

    @property
    def n_pred(self) -> int:
        return len(self.pred_labels)

    @cached_property
    def union(self) -> np.ndarray:
        """(E,) int64 |T ∪ P| of each overlapping pair."""
        return self.true_areas[self.true_index] + self.pred_areas[self.pred_index] - self.intersection

    @cached_property
    def iou(self) -> np.ndarray:
        """(E,) float64 IoU of each overlapping pair."""
        return self.intersection / self.union

    def _matched(self, thresh: float) -> np.ndarray:
        """(E,) bool: the pairs matched at ``thresh`` (see the module docstring)."""
        if not 0.0 <= thresh < 1.0:
            raise ValueError(f"thresh must be in [0, 1), got {thresh}")
        candidate = self.iou > thresh
        if thresh >= 0.5:
            return candidate
        edges = np.flatnonzero(candidate)
        # One more match always outweighs any IoU total: the IoU terms of a matching sum to at most 1/2.
        weights = 1.0 + self.iou[edges] / (2.0 * max(1, min(self.n_true, self.n_pred)))
        chosen = _max_weight_matching(
            self.true_index[edges], self.pred_index[edges], weights, self.n_true, self.n_pred
        )
        matched = np.zeros(len(candidate), dtype=bool)
        matched[edges[chosen]] = True
        return matched

    def match(self, thresh: float = 0.5) -> MatchResult:
        """Match objects one-to-one at IoU > ``thresh``; see :func:`match_instances`."""
        matched = self._matched(thresh)
        tp = int(matched.sum())
        fp, fn = self.n_pred - tp, self.n_true - tp
        matched_iou = self.iou[matched]
        iou_sum = float(matched_iou.sum())
        return MatchResult(
            thresh=float(thresh),
            n_true=self.n_true,
            n_pred=self.n_pred,
            tp=tp,
            fp=fp,
            fn=fn,
            iou_sum=iou_sum,
            precision=_ratio(tp, tp + fp),
            recall=_ratio(tp, tp + fn),
            f1=_ratio(2 * tp, 2 * tp + fp + fn),
            sq=_ratio(iou_sum, tp),
            rq=_ratio(tp, tp + 0.5 * fp + 0.5 * fn),
            pq=_ratio(iou_sum, tp + 0.5 * fp + 0.5 * fn),
            mean_matched_iou=_ratio(iou_sum, tp),
            matched_true=self.true_labels[self.true_index[matched]],
            matched_pred=self.pred_labels[self.pred_index[matched]],
            matched_iou=matched_iou,
        )

    def _aji_sums(self, *, one_to_one: bool) -> tuple[int, int]:
        """(C, U) of AJI (``one_to_one=False``) or AJI+ (``one_to_one=True``)."""
        if one_to_one:
            paired = np.flatnonzero(
                _max_weight_matching(self.true_index, self.pred_index, self.iou, self.n_true, self.n_pred)
            )
        else:
            # Best prediction per true object: sort pairs by (true, -IoU, pred) and keep each true's first.
            paired = np.lexsort((self.pred_index, -self.iou, self.true_index))
            first = np.ones(len(paired), dtype=bool)
            first[1:] = self.true_index[paired][1:] != self.true_index[paired][:-1]
            paired = paired[first]
        true_paired = np.zeros(self.n_true, dtype=bool)
        true_paired[self.true_index[paired]] = True
        pred_paired = np.zeros(self.n_pred, dtype=bool)
        pred_paired[self.pred_index[paired]] = True
        intersection = int(self.intersection[paired].sum())
        union = (
            int(self.union[paired].sum())
            + int(self.true_areas[~true_paired].sum())
            + int(self.pred_areas[~pred_paired].sum())
        )
        return intersection, union

    def aji(self) -> float:
        """Aggregated Jaccard Index; see :func:`aji`."""
        return _ratio(*self._aji_sums(one_to_one=False))

    def aji_plus(self) -> float:
        """AJI with one-to-one pairing; see :func:`aji_plus`."""
        return _ratio(*self._aji_sums(one_to_one=True))

    def object_errors(self, thresh: float = 0.5, cutoff: float = 0.1) -> ObjectErrors:
        """DeepCell-style error types; see :func:`object_errors`."""
        matched = self._matched(thresh)
        true_matched = np.zeros(self.n_true, dtype=bool)
        true_matched[self.true_index[matched]] = True
        pred_matched = np.zeros(self.n_pred, dtype=bool)
        pred_matched[self.pred_index[matched]] = True
        smaller = np.minimum(self.true_areas[self.true_index], self.pred_areas[self.pred_index])
        linked = (self.iou >= cutoff) | (2 * self.intersection > smaller)
        linked &= ~true_matched[self.true_index] & ~pred_matched[self.pred_index]
        n_components, true_component, pred_component = _bipartite_components(
            self.true_index[linked], self.pred_index[linked], self.n_true, self.n_pred
        )
        # Matched objects have no links left, so each sits alone in its component; count only the rest.
        n_t = np.bincount(true_component[~true_matched], minlength=n_components)
        n_p = np.bincount(pred_component[~pred_matched], minlength=n_components)
        kind = np.zeros(n_components, dtype=np.int64)  # 0: lone objects or a weak one-to-one link
        kind[(n_t == 1) & (n_p >= 2)] = 1  # split
        kind[(n_t >= 2) & (n_p == 1)] = 2  # merge
        kind[(n_t >= 2) & (n_p >= 2)] = 3  # catastrophe
        true_names = np.array(["missed", "split", "merge", "catastrophe"])
        pred_names = np.array(["gained", "split", "merge", "catastrophe"])
        true_error = np.where(true_matched, "correct", true_names[kind[true_component]])
        pred_error = np.where(pred_matched, "correct", pred_names[kind[pred_component]])
        return ObjectErrors(
            correct=int(matched.sum()),
            missed=int(np.sum(true_error == "missed")),
            gained=int(np.sum(pred_error == "gained")),
            split=int(np.sum(kind == 1)),
            merge=int(np.sum(kind == 2)),
            catastrophe=int(np.sum(kind == 3)),
            gained_from_split=int(np.sum(n_p[kind == 1] - 1)),
            missed_from_merge=int(np.sum(n_t[kind == 2] - 1)),
            true_in_catastrophe=int(np.sum(n_t[kind == 3])),
            pred_in_catastrophe=int(np.sum(n_p[kind == 3])),
            true_labels=self.true_labels,
            pred_labels=self.pred_labels,
            true_error=true_error,
            pred_error=pred_error,
        )


def overlap_table(y_true: np.ndarray, y_pred: np.ndarray) -> OverlapTable:
    """Count the shared pixels of every overlapping (true, predicted) object pair, in one pass.

    Args:
        y_true: (H, W[, D]) int ground-truth instance labels, 0 = background.
        y_pred: (H, W[, D]) int predicted instance labels, same shape.

    Returns:
        The :class:`OverlapTable`; reuse it to compute several metrics from one pass over the pixels.

    Raises:
        ValueError: shapes differ or a non-integer dtype.
    """
    t, p = _check_labels(y_true, y_pred)
    true_of, pred_of, count = _label_pair_counts(t, p)
    is_true, is_pred = true_of != 0, pred_of != 0
    true_labels = np.unique(true_of[is_true])
    pred_labels = np.unique(pred_of[is_pred])
    true_index = np.searchsorted(true_labels, true_of)
    pred_index = np.searchsorted(pred_labels, pred_of)
    true_areas = np.bincount(true_index[is_true], weights=count[is_true], minlength=len(true_labels))
    pred_areas = np.bincount(pred_index[is_pred], weights=count[is_pred], minlength=len(pred_labels))
    pair = is_true & is_pred
    return OverlapTable(
        true_labels=true_labels,
        pred_labels=pred_labels,
        true_areas=true_areas.astype(np.int64),
        pred_areas=pred_areas.astype(np.int64),
        true_index=true_index[pair].astype(np.int64),
        pred_index=pred_index[pair].astype(np.int64),
        intersection=count[pair].astype(np.int64),
    )


def match_instances(y_true: np.ndarray, y_pred: np.ndarray, *, thresh: float = 0.5) -> MatchResult:
    """Match true and predicted objects one-to-one at IoU > ``thresh`` and score the matching.

    Args:
        y_true: (H, W[, D]) int ground-truth instance labels, 0 = background.
        y_pred: (H, W[, D]) int predicted instance labels, same shape.
        thresh: IoU threshold in [0, 1); a pair matches only above it (strictly).

    Returns:
        :class:`MatchResult` with TP/FP/FN, precision, recall, F1, SQ, RQ, PQ and the matched pairs.

    Example:
        >>> y_true = np.array([[1, 1, 0, 2, 2, 2]])
        >>> y_pred = np.array([[5, 5, 0, 7, 7, 0]])
        >>> m = match_instances(y_true, y_pred)
        >>> m.tp, m.fp, m.fn, round(m.pq, 4), m.matched_pred.tolist()
        (2, 0, 0, 0.8333, [5, 7])
    """
    return overlap_table(y_true, y_pred).match(thresh)


def aji(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017): each true object with its best-IoU prediction.

    Args:
        y_true: (H, W[, D]) int ground-truth instance labels, 0 = background.
        y_pred: (H, W[, D]) int predicted instance labels, same shape.

    Returns:
        AJI in [0, 1]; NaN if both images are empty.
    """
    return overlap_table(y_true, y_pred).aji()


def aji_plus(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """AJI+ (Graham et al. 2019): AJI with a one-to-one pairing of maximum total IoU.

    Args:
        y_true: (H, W[, D]) int ground-truth instance labels, 0 = background.
        y_pred: (H, W[, D]) int predicted instance labels, same shape.

    Returns:
        AJI+ in [0, 1]; NaN if both images are empty.
    """
    return overlap_table(y_true, y_pred).aji_plus()


def object_errors(
    y_true: np.ndarray, y_pred: np.ndarray, *, thresh: float = 0.5, cutoff: float = 0.1
) -> ObjectErrors:
    """Classify objects as correct, missed, gained, split, merged or in a catastrophe (DeepCell-style).

    Args:
        y_true: (H, W[, D]) int ground-truth instance labels, 0 = background.
        y_pred: (H, W[, D]) int predicted instance labels, same shape.
        thresh: IoU threshold for correct matches (as :func:`match_instances`).
        cutoff: unmatched objects with IoU >= ``cutoff`` (or more than half of the smaller one inside the
            other) are linked into split/merge/catastrophe groups.

    Returns:
        :class:`ObjectErrors` with the counts and each object's category.
    """
    return overlap_table(y_true, y_pred).object_errors(thresh, cutoff)


def instance_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, thresholds: Sequence[float] = DSB_THRESHOLDS
) -> dict:
    """Every instance metric of one image as a flat, JSON-ready dict (one pass over the pixels).

    Args:
        y_true: (H, W[, D]) int ground-truth instance labels, 0 = background.
        y_pred: (H, W[, D]) int predicted instance labels, same shape.
        thresholds: IoU thresholds for ``ap_dsb`` and the ``*_by_threshold`` lists.

    Returns:
        Scalars (CSV-ready): ``n_true, n_pred, count_error`` (n_pred - n_true), ``tp, fp, fn, iou_sum,
        precision@0.5, recall@0.5, f1@0.5, pq, sq, rq, mean_matched_iou`` (all at IoU > 0.5), ``aji,
        aji_plus, ap_dsb``, the error counts of :class:`ObjectErrors` (at 0.5) and the AJI/AJI+ sums
        ``aji_intersection, aji_union, aji_plus_intersection, aji_plus_union``. Lists, one entry per
        threshold: ``thresholds, f1_by_threshold, ap_by_threshold, tp_by_threshold, fp_by_threshold,
        fn_by_threshold``.
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds must hold at least one IoU threshold")
    table = overlap_table(y_true, y_pred)
    at_half = table.match(0.5)
    sweep = [table.match(t) for t in thresholds]
    aji_c, aji_u = table._aji_sums(one_to_one=False)
    plus_c, plus_u = table._aji_sums(one_to_one=True)
    result = {
        "n_true": table.n_true,
        "n_pred": table.n_pred,
        "count_error": table.n_pred - table.n_true,
        "tp": at_half.tp,
        "fp": at_half.fp,
        "fn": at_half.fn,
        "iou_sum": at_half.iou_sum,
        "aji_intersection": aji_c,
        "aji_union": aji_u,
        "aji_plus_intersection": plus_c,
        "aji_plus_union": plus_u,
        **table.object_errors(0.5).counts(),
        "thresholds": thresholds,
        "tp_by_threshold": [m.tp for m in sweep],
        "fp_by_threshold": [m.fp for m in sweep],
        "fn_by_threshold": [m.fn for m in sweep],
    }
    result.update(_scores(result))
    return result


def _scores(counts: dict) -> dict:
    """The ratios of :func:`instance_metrics` from its counts (per image or pooled)."""
    tp, fp, fn, iou_sum = counts["tp"], counts["fp"], counts["fn"], counts["iou_sum"]
    by_threshold = list(zip(counts["tp_by_threshold"], counts["fp_by_threshold"], counts["fn_by_threshold"]))
    ap = [_ratio(t, t + p + n) for t, p, n in by_threshold]
    return {
        "precision@0.5": _ratio(tp, tp + fp),
        "recall@0.5": _ratio(tp, tp + fn),
        "f1@0.5": _ratio(2 * tp, 2 * tp + fp + fn),
        "pq": _ratio(iou_sum, tp + 0.5 * fp + 0.5 * fn),
        "sq": _ratio(iou_sum, tp),
        "rq": _ratio(tp, tp + 0.5 * fp + 0.5 * fn),
        "mean_matched_iou": _ratio(iou_sum, tp),
        "aji": _ratio(counts["aji_intersection"], counts["aji_union"]),
        "aji_plus": _ratio(counts["aji_plus_intersection"], counts["aji_plus_union"]),
        "ap_dsb": math.nan if any(math.isnan(a) for a in ap) else float(np.mean(ap)),
        "f1_by_threshold": [_ratio(2 * t, 2 * t + p + n) for t, p, n in by_threshold],
        "ap_by_threshold": ap,
    }


_SUMMED = (
    "n_true",
    "n_pred",
    "count_error",
    "tp",
    "fp",
    "fn",
    "iou_sum",
    "aji_intersection",
    "aji_union",
    "aji_plus_intersection",
    "aji_plus_union",
    *_ERROR_COUNTS,
)
_IMAGE_MEANS = ("precision@0.5", "recall@0.5", "f1@0.5", "pq", "sq", "rq", "aji", "aji_plus", "ap_dsb")


def aggregate_instance_metrics(results: Sequence[dict]) -> dict:
    """Dataset-level metrics from the per-image dicts of :func:`instance_metrics`.

    Args:
        results: one :func:`instance_metrics` dict per image, all with the same thresholds.

    Returns:
        The keys of :func:`instance_metrics`, pooled: counts summed over images and every ratio computed
        from the sums (F1 = 2ΣTP / (2ΣTP + ΣFP + ΣFN), AJI = ΣC / ΣU, ...); plus ``num_images``,
        ``image_mean_<name>`` (mean over images, NaNs skipped, NaN if none is defined) for precision,
        recall, F1, PQ, SQ, RQ, AJI, AJI+ and AP, and ``image_mean_abs_count_error``.
    """
    thresholds = [float(t) for t in results[0]["thresholds"]] if results else list(DSB_THRESHOLDS)
    for result in results:
        if [float(t) for t in result["thresholds"]] != thresholds:
            raise ValueError(f"cannot pool results at thresholds {result['thresholds']} with {thresholds}")
    pooled: dict = {"num_images": len(results)}
    pooled.update({name: sum(result[name] for result in results) for name in _SUMMED})
    pooled["thresholds"] = thresholds
    for name in ("tp_by_threshold", "fp_by_threshold", "fn_by_threshold"):
        pooled[name] = [sum(int(r[name][i]) for r in results) for i in range(len(thresholds))]
    pooled.update(_scores(pooled))
    for name in _IMAGE_MEANS:
        values = [r[name] for r in results if not math.isnan(r[name])]
        pooled[f"image_mean_{name}"] = float(np.mean(values)) if values else math.nan
    pooled["image_mean_abs_count_error"] = (
        float(np.mean([abs(r["count_error"]) for r in results])) if results else math.nan
    )
    return pooled
