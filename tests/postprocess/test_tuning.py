"""Watershed threshold tuning on validation maps."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.postprocess import WatershedParams
from medseg.postprocess.tuning import tune_watershed
from medseg.transforms.targets import deep_watershed_targets


def _discs(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for i in range(1, 7):
        cy, cx, r = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(5, 8)
        labels[(rows - cy) ** 2 + (cols - cx) ** 2 <= r * r] = i
    return labels


def _maps(truth: np.ndarray, seed: int):
    targets = deep_watershed_targets(truth)
    noise = np.random.default_rng(seed).normal(0, 0.05, truth.shape)
    inner = np.clip(targets["inner"] + noise, 0, 1).astype(np.float32)
    return inner, targets["outer"], (truth > 0).astype(np.float32)


def test_tuning_never_lowers_the_score_and_recovers_from_bad_thresholds():
    truths = [_discs(s) for s in range(3)]
    maps = [_maps(t, s) for s, t in enumerate(truths)]
    bad = WatershedParams(maxima_threshold=0.02, interior_threshold=0.5, min_distance=1)
    result = tune_watershed(maps, truths, start=bad, max_rounds=2)
    assert result.start_score < 0.5  # every noise peak seeds an object: over-segmented
    assert result.score >= 0.9 and result.score >= result.start_score
    assert result.params.min_distance > 1
    assert result.trials[0]["score"] == result.start_score and len(result.trials) > 10
    pq = tune_watershed(maps, truths, metric="pq", start=result.params, grid={"min_distance": [3, 5]})
    assert 0 < pq.score <= 1 and pq.score >= pq.start_score


def test_tuning_rejects_bad_arguments():
    truths = [_discs(0)]
    maps = [_maps(truths[0], 0)]
    with pytest.raises(ValueError, match="metric"):
        tune_watershed(maps, truths, metric="dice")
    with pytest.raises(ValueError, match="not watershed parameters"):
        tune_watershed(maps, truths, grid={"threshold": [0.1]})
    with pytest.raises(ValueError, match="1 map sets but 2 truths"):
        tune_watershed(maps, truths * 2)


def test_focus_objects_weigh_half_of_the_score():
    truth = _discs(0)
    maps = [_maps(truth, 0)]
    types = np.zeros((2, *truth.shape), np.float32)
    types[0] = 1.0
    rare = truth == 3
    assert rare.any()
    types[:, rare] = [[1.0], [0.0]][::-1] * np.ones((2, 1))  # object 3 is of type 1, the rest type 0
    focus_truth = np.where(rare, truth, 0)
    grid = {"min_distance": [5]}
    plain = tune_watershed(maps, [truth], grid=grid)
    focused = tune_watershed(maps, [truth], grid=grid, focus=[(types, focus_truth)], focus_types=[1])
    # the rare object is found, so the focus F1 is 1 and the score is the mean of the two
    assert focused.score == pytest.approx(0.5 * (plain.score + 1.0))
    missing = [(types, np.where(truth == 1, 1, 0))]  # a focus object no prediction is typed as
    assert tune_watershed(maps, [truth], grid=grid, focus=missing, focus_types=[1]).score < focused.score
