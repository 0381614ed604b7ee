"""Tune deep-watershed thresholds on validation images (NumPy/scikit-image only).

A coordinate search: starting from the given thresholds, try every grid value of one parameter with the
others fixed, keep the best, move to the next parameter, and repeat the sweep until a whole round
improves nothing. The score is pooled over images (TP/FP/FN summed before the F1 or PQ is formed, as
StarDist's ``matching_dataset`` does), so images with many objects weigh more than nearly empty ones.
Written here because no library tunes post-processing of distance maps; each trial is one watershed per
image plus one sparse matching, so a few hundred trials on a validation set take seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "maxima_threshold": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    "interior_threshold": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    "min_distance": (2, 3, 4, 5, 6, 8, 10),
    "small_objects_threshold": (0, 5, 10, 20, 40, 80, 120, 160),
    "maxima_smooth": (0.0, 1.0, 2.0),  # merges the several peaks a textured cell can raise
}


@dataclass
class TuneResult:
    """Best thresholds found, their score, the starting score and every trial ``(params dict, score)``."""

    params: object
    score: float
    start_score: float
    trials: list[dict]


def tune_watershed(
    maps: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    truths: Sequence[np.ndarray],
    *,
    metric: str = "f1",
    start=None,
    grid: Mapping[str, Sequence[float]] | None = None,
    max_rounds: int = 3,
    focus: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    focus_types: Sequence[int] = (),
) -> TuneResult:
    """Search watershed thresholds maximising pooled object F1 (IoU 0.5) or PQ over images.

    With ``focus``, the score is the mean of that over all objects and the F1 of the objects of
    ``focus_types`` alone (e.g. white cells among red cells): rare objects that a count is about would
    otherwise barely move a score dominated by common ones.

    Args:
        maps: per image ``(inner, outer, foreground)`` predicted maps, each ``(H, W)`` (foreground may be
            None).
        truths: per image ``(H, W)`` true instance ids.
        metric: ``f1`` or ``pq``.
        start: :class:`~medseg.postprocess.WatershedParams` to start from (None = defaults).
        grid: parameter name -> values to try (default :data:`DEFAULT_GRID`); names must be fields of
            ``WatershedParams``.
        max_rounds: at most this many sweeps over the parameters.
        focus: per image ``(type_probabilities (K, H, W), focus_truth (H, W))``: the predicted type maps,
            and the true instance ids of the focus objects only (0 elsewhere).
        focus_types: type indices (into K) whose objects count as focus objects.

    Returns:
        A :class:`TuneResult`; ties keep the earlier (starting) value, so tuning never makes the
        validation score worse than ``start``'s.
    """
    from medseg.postprocess.watershed import WatershedParams

    if metric not in ("f1", "pq"):
        raise ValueError(f"metric must be 'f1' or 'pq', got {metric!r}")
    if len(maps) != len(truths):
        raise ValueError(f"{len(maps)} map sets but {len(truths)} truths")
    params = start if start is not None else WatershedParams()
    grid = dict(DEFAULT_GRID if grid is None else grid)
    fields = {f.name for f in dataclasses.fields(params)}
    unknown = sorted(set(grid) - fields)
    if unknown:
        raise ValueError(f"grid names {unknown} are not watershed parameters {sorted(fields)}")
    trials: list[dict] = []
    seen: dict[tuple, float] = {}

    def score(candidate) -> float:
        key = tuple(sorted(candidate.to_dict().items()))
        if key not in seen:
            seen[key] = _pooled_score(maps, truths, candidate, metric, focus, focus_types)
            trials.append({**candidate.to_dict(), "score": seen[key]})
        return seen[key]

    best = score(params)
    start_score = best
    for _ in range(max_rounds):
        improved = False
        for name, values in grid.items():
            for value in values:
                candidate = dataclasses.replace(params, **{name: type(getattr(params, name))(value)})
                value_score = score(candidate)
                if value_score > best + 1e-12:
                    best, params, improved = value_score, candidate, True
        if not improved:
            break
    return TuneResult(params, float(best), float(start_score), trials)


TYPING_GRID: dict[str, tuple] = {
    "group_threshold": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    "merge_touching": (True, False),  # the default first: ties keep it
}


def tune_typing(
    instances: Sequence[np.ndarray],
    type_probabilities: Sequence[np.ndarray],
    group_truths: Sequence[np.ndarray],
    classes: Sequence[str],
    group: Sequence[str],
) -> TuneResult:
    """Choose the group rule of :func:`~medseg.postprocess.assign_types` that counts a group best.

    Every combination of :data:`TYPING_GRID` is tried (12 trials). The score ranks by the share of images
    whose group count (e.g. white cells) is exact, then by the mean absolute count error, then by the F1
    at IoU 0.5 of the group's objects; it is reported as that share. Ties keep the default rule.

    Args:
        instances: per image ``(H, W)`` predicted instance ids (the tuned watershed's output).
        type_probabilities: per image ``(K, H, W)`` per-pixel type probabilities.
        group_truths: per image ``(H, W)`` true instance ids of the group's objects only (0 elsewhere).
        classes: the K type names.
        group: the group's type names.

    Returns:
        A :class:`TuneResult` whose ``params`` is a :class:`~medseg.postprocess.TypingParams`.
    """
    from medseg.metrics.instance import match_instances
    from medseg.postprocess.objects import TypingParams, assign_types

    if not (len(instances) == len(type_probabilities) == len(group_truths)):
        raise ValueError("instances, type_probabilities and group_truths need one entry per image")
    true_counts = np.array([np.count_nonzero(np.unique(t)) for t in group_truths])
    trials: list[dict] = []
    best, best_key, start_key = TypingParams(), None, None
    for threshold in TYPING_GRID["group_threshold"]:
        for merge in TYPING_GRID["merge_touching"]:
            params = TypingParams(float(threshold), bool(merge))
            counts, found = [], np.zeros(3, np.int64)
            for labels, probabilities, truth in zip(instances, type_probabilities, group_truths):
                labels, types, _ = assign_types(labels, probabilities, classes, group, params)
                keep = [i for i, name in types.items() if name in group]
                counts.append(len(keep))
                match = match_instances(truth, np.where(np.isin(labels, keep), labels, 0), thresh=0.5)
                found += (match.tp, match.fp, match.fn)
            errors = np.abs(np.array(counts) - true_counts)
            tp, fp, fn = found
            f1 = tp / (tp + 0.5 * (fp + fn)) if tp + fp + fn else 1.0
            key = (float(np.mean(errors == 0)) if len(errors) else 1.0, -float(np.mean(errors)), f1)
            trials.append({**params.to_dict(), "exact": key[0], "count_error": -key[1], "f1": f1})
            if start_key is None:
                start_key = best_key = key
            elif key > best_key:
                best, best_key = params, key
    return TuneResult(best, best_key[0], start_key[0], trials)


def _pooled_score(maps, truths, params, metric: str, focus=None, focus_types=()) -> float:
    from medseg.metrics.instance import match_instances
    from medseg.postprocess.objects import majority_types
    from medseg.postprocess.watershed import deep_watershed

    tp = fp = fn = 0
    iou_sum = 0.0
    focus_counts = np.zeros(3, np.int64)  # tp, fp, fn of the focus objects
    for index, ((inner, outer, foreground), truth) in enumerate(zip(maps, truths)):
        labels = deep_watershed(inner, outer, foreground, **params.to_dict())
        match = match_instances(truth, labels, thresh=0.5)
        tp, fp, fn = tp + match.tp, fp + match.fp, fn + match.fn
        iou_sum += match.sq * match.tp
        if focus is not None:
            type_probabilities, focus_truth = focus[index]
            means = majority_types(labels, type_probabilities)
            keep = [i for i, p in means.items() if int(p.argmax()) in focus_types]
            found = match_instances(focus_truth, np.where(np.isin(labels, keep), labels, 0), thresh=0.5)
            focus_counts += (found.tp, found.fp, found.fn)
    denominator = tp + 0.5 * (fp + fn)
    score = 1.0 if not denominator else tp / denominator  # 1.0: nothing to find and nothing found
    if metric == "pq" and denominator:
        score *= iou_sum / tp if tp else 0.0
    if focus is not None:
        f_tp, f_fp, f_fn = focus_counts
        score = 0.5 * (score + (f_tp / (f_tp + 0.5 * (f_fp + f_fn)) if f_tp + f_fp + f_fn else 1.0))
    return score
