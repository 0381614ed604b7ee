"""Tests for medseg.postprocess.watershed: deep watershed, its fast parts, and WatershedParams."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import label
from skimage.morphology import disk, h_maxima, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from medseg.errors import ConfigError
from medseg.postprocess import (
    WatershedParams,
    deep_watershed,
    fill_small_holes,
    find_peaks,
    watershed_by_component,
)
from medseg.transforms.targets import deep_watershed_targets


def _touching_discs(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Discs of radius 6-9 with centres >= 12 px apart; overlaps go to the nearest centre, so many touch."""
    centres: list[np.ndarray] = []
    while len(centres) < count:
        point = rng.uniform(4, np.array(shape) - 4)
        if all(np.hypot(*(point - c)) >= 12 for c in centres):
            centres.append(point)
    centres_arr = np.array(centres)
    radii = rng.uniform(6, 9, count)
    rows, cols = np.indices(shape)
    distance = np.hypot(rows[..., None] - centres_arr[:, 0], cols[..., None] - centres_arr[:, 1])
    nearest = distance.argmin(axis=-1)
    inside = distance.min(axis=-1) < radii[nearest]
    return np.where(inside, 2 * nearest + 1, 0).astype(np.int32)


def _network_like(truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets blurred, with a smooth gain and faint noise: float32 maps like a network's output."""
    maps = deep_watershed_targets(truth)
    out = []
    for key in ("inner", "outer", "fgbg"):
        gain = 1 + 0.05 * ndimage.gaussian_filter(rng.normal(0, 1, truth.shape), 4) / 0.07
        noise = ndimage.gaussian_filter(rng.normal(0, 0.01, truth.shape), 1)
        blurred = ndimage.gaussian_filter(maps[key].astype(np.float32), 1.2)
        out.append(np.clip(blurred * gain + noise, 0, 1).astype(np.float32))
    return out[0], out[1], out[2]


def _baseline(inner, outer, fgbg=None, **kwargs) -> np.ndarray:
    """The recipe with plain scikit-image calls, as DeepCell writes it."""
    params = WatershedParams(**kwargs)
    maxima = ndimage.gaussian_filter(inner, params.maxima_smooth) if params.maxima_smooth else inner
    surface = ndimage.gaussian_filter(outer, params.interior_smooth) if params.interior_smooth else outer
    interior = surface
    if fgbg is not None:
        interior = ndimage.gaussian_filter(fgbg, params.interior_smooth) if params.interior_smooth else fgbg
    if params.maxima_algorithm == "h_maxima":
        markers = label(h_maxima(maxima, params.maxima_threshold, footprint=disk(params.radius)))
    else:
        coords = peak_local_max(
            maxima,
            min_distance=params.min_distance,
            threshold_abs=params.maxima_threshold,
            exclude_border=params.exclude_border,
        )
        markers = np.zeros(inner.shape, np.int32)
        markers[tuple(coords.T)] = 1
        markers = label(markers)
    labels = watershed(-surface, markers, mask=interior > params.interior_threshold)
    if params.small_objects_threshold:
        labels = remove_small_objects(labels, max_size=params.small_objects_threshold - 1)
    return relabel_sequential(labels)[0]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


def _matched_fraction(truth: np.ndarray, predicted: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of true objects with a predicted object of IoU > threshold (unique above 0.5)."""
    t_ids, t_index = np.unique(truth, return_inverse=True)
    p_ids, p_index = np.unique(predicted, return_inverse=True)
    table = np.bincount(t_index.ravel() * len(p_ids) + p_index.ravel(), minlength=len(t_ids) * len(p_ids))
    table = table.reshape(len(t_ids), len(p_ids))[t_ids > 0][:, p_ids > 0]
    union = table.sum(1, keepdims=True) + table.sum(0, keepdims=True) - table
    iou = table / np.maximum(union, 1)
    return float((iou.max(axis=1) > threshold).mean()) if iou.size else 0.0


def test_recovers_touching_discs_from_exact_targets(rng):
    truth = _touching_discs((160, 160), 50, rng)
    assert ndimage.label(truth > 0)[1] < 40  # many of the 50 discs touch
    maps = deep_watershed_targets(truth)
    labels = deep_watershed(maps["inner"], maps["outer"], min_distance=4, interior_smooth=0)
    assert labels.shape == truth.shape and labels.dtype == np.int32
    assert _matched_fraction(truth, labels) > 0.95
    with_fgbg = deep_watershed(
        maps["inner"], maps["outer"], maps["fgbg"].astype(np.float32), min_distance=4, interior_threshold=0.5
    )
    assert _matched_fraction(truth, with_fgbg) > 0.95


def test_recovers_touching_discs_from_network_like_maps(rng):
    truth = _touching_discs((160, 160), 50, rng)
    inner, outer, fgbg = _network_like(truth, rng)
    labels = deep_watershed(inner, outer, fgbg, min_distance=4, interior_threshold=0.5)
    assert _matched_fraction(truth, labels) > 0.95
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))  # 0, 1..K


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_distance": 4},
        {"min_distance": 6, "small_objects_threshold": 40, "maxima_smooth": 1.0, "exclude_border": True},
        {"min_distance": 3, "interior_smooth": 0.0, "maxima_threshold": 0.3, "interior_threshold": 0.2},
        {"min_distance": 1, "maxima_threshold": 0.5},
    ],
)
def test_identical_to_plain_recipe_on_random_frames(kwargs):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        truth = _touching_discs((128, 144), 35, rng)
        inner, outer, fgbg = _network_like(truth, rng)
        ours = deep_watershed(inner, outer, **kwargs)
        assert ours.max() > 25
        assert _same_partition(ours, _baseline(inner, outer, **kwargs))
    kwargs = {**kwargs, "interior_threshold": 0.4}
    assert _same_partition(
        deep_watershed(inner, outer, fgbg, **kwargs), _baseline(inner, outer, fgbg, **kwargs)
    )


def test_h_maxima_markers_match_plain_recipe(rng):
    truth = _touching_discs((96, 96), 20, rng)
    inner, outer, _ = _network_like(truth, rng)
    kwargs = {"maxima_algorithm": "h_maxima", "maxima_threshold": 0.05, "radius": 3}
    ours = deep_watershed(inner, outer, **kwargs)
    assert _same_partition(ours, _baseline(inner, outer, **kwargs))
    assert _matched_fraction(truth, ours) > 0.9


def test_small_objects_are_removed():
    truth = np.zeros((48, 48), np.int32)
    truth[8:28, 8:28] = 1
    truth[36:40, 36:40] = 2  # 16 pixels
    maps = deep_watershed_targets(truth)
    kept = deep_watershed(maps["inner"], maps["outer"], min_distance=2, interior_smooth=0)
    assert kept.max() == 2
    removed = deep_watershed(
        maps["inner"], maps["outer"], min_distance=2, interior_smooth=0, small_objects_threshold=17
    )
    assert removed.max() == 1 and not removed[36:40, 36:40].any() and removed[18, 18] == 1
    assert (
        deep_watershed(
            maps["inner"], maps["outer"], min_distance=2, interior_smooth=0, small_objects_threshold=16
        ).max()
        == 2
    )  # DeepCell's min_size: sizes below the threshold go


def test_exclude_border_drops_objects_centred_near_the_edge():
    truth = np.zeros((64, 64), np.int32)
    rows, cols = np.indices(truth.shape)
    truth[np.hypot(rows - 32, cols - 32) < 8] = 1
    truth[np.hypot(rows - 3, cols - 30) < 7] = 2  # centre 3 px from the top edge
    maps = deep_watershed_targets(truth)
    assert deep_watershed(maps["inner"], maps["outer"], min_distance=5).max() == 2
    labels = deep_watershed(maps["inner"], maps["outer"], min_distance=5, exclude_border=True)
    assert labels.max() == 1 and labels[32, 32] == 1 and not labels[:6].any()


def test_empty_and_flat_maps_give_no_objects():
    zeros = np.zeros((40, 50), np.float32)
    for inner, outer in ((zeros, zeros), (zeros + 0.7, zeros + 0.7)):
        labels = deep_watershed(inner, outer)
        assert labels.shape == (40, 50) and labels.dtype == np.int32 and not labels.any()
    assert deep_watershed(np.zeros((0, 5)), np.zeros((0, 5))).shape == (0, 5)


def test_find_peaks_equals_peak_local_max(rng):
    for trial in range(60):
        shape = tuple(rng.integers(4, 70, 2))
        image = rng.random(shape)
        if trial % 3 == 1:  # smooth with ties: few candidates, windows gathered one by one
            image = np.round(ndimage.gaussian_filter(image, 2), 2)
        elif trial % 3 == 2:  # many exact ties, candidates everywhere: one sliding maximum
            image = rng.integers(0, 3, shape).astype(np.float32)
        min_distance = int(rng.integers(1, 7))
        threshold = float(rng.choice([0.0, 0.3, 1.0]))
        border = [False, True, int(rng.integers(0, 6))][trial % 3]
        expected = peak_local_max(
            image, min_distance=min_distance, threshold_abs=threshold, exclude_border=border
        )
        found = find_peaks(image, min_distance=min_distance, threshold=threshold, exclude_border=border)
        np.testing.assert_array_equal(found, expected)


def test_watershed_by_component_equals_one_watershed_call(rng):
    for trial in range(12):
        surface = ndimage.gaussian_filter(rng.random((90, 110)), 2)
        if trial % 2:  # quantised: markers tie, which only the whole-image call orders like skimage
            surface = np.round(surface * 30) / 30
        mask = ndimage.gaussian_filter(rng.random((90, 110)), 3) > 0.5
        markers = np.zeros(mask.shape, np.int32)
        spots = rng.integers(0, 90 * 110, 40)
        markers.ravel()[spots] = rng.integers(1, 25, 40)  # repeated labels, some outside the mask
        markers[10:13, 10:13] = 30  # a multi-pixel marker
        expected = watershed(surface, markers, mask=mask)
        np.testing.assert_array_equal(watershed_by_component(surface, markers, mask), expected)


def test_fill_small_holes_fills_only_holes_inside_one_object():
    labels = np.zeros((20, 30), np.int32)
    labels[2:12, 2:12] = 1
    labels[5:7, 5:7] = 0  # 4-pixel hole inside object 1
    labels[2:12, 14:20], labels[2:12, 20:26] = 2, 3
    labels[6, 19:21] = 0  # hole between objects 2 and 3
    labels[0:3, 27:29] = 4
    labels[0, 27] = 0  # notch at the image edge: not a hole
    filled = fill_small_holes(labels, 5)
    assert np.all(filled[5:7, 5:7] == 1)
    assert np.all(filled[6, 19:21] == 0) and filled[0, 27] == 0
    assert np.all(fill_small_holes(labels, 4)[5:7, 5:7] == 0)  # holes must be smaller than max_size
    changed = filled != labels
    assert changed.sum() == 4 and changed[5:7, 5:7].all()  # nothing else moved
    ring = np.zeros((30, 30), np.float32)
    rows, cols = np.indices(ring.shape)
    ring[(np.hypot(rows - 15, cols - 15) < 10) & (np.hypot(rows - 15, cols - 15) >= 1.5)] = 1
    inner = np.clip(1 - np.hypot(rows - 15, cols - 11) / 10, 0, 1)
    holey = deep_watershed(inner, ring, min_distance=3, interior_smooth=0, interior_threshold=0.5)
    assert holey[15, 15] == 0
    filled = deep_watershed(
        inner, ring, min_distance=3, interior_smooth=0, interior_threshold=0.5, fill_holes_threshold=10
    )
    assert filled[15, 15] == filled[15, 20] == 1


def test_params_round_trip_and_apply(rng):
    params = WatershedParams(
        maxima_threshold=0.2, min_distance=3, exclude_border=True, small_objects_threshold=5
    )
    stored = json.loads(json.dumps(params.to_dict()))
    assert WatershedParams.from_dict(stored) == params
    assert WatershedParams.from_dict({}) == WatershedParams()
    truth = _touching_discs((64, 64), 10, rng)
    maps = deep_watershed_targets(truth)
    np.testing.assert_array_equal(
        deep_watershed(maps["inner"], maps["outer"], **params.to_dict()),
        deep_watershed(
            maps["inner"],
            maps["outer"],
            maxima_threshold=0.2,
            min_distance=3,
            exclude_border=True,
            small_objects_threshold=5,
        ),
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"maxima_treshold": 0.2}, "did you mean 'maxima_threshold'"),
        ({"min_distance": 0}, "min_distance"),
        ({"min_distance": 2.5}, "min_distance"),
        ({"interior_threshold": "high"}, "interior_threshold"),
        ({"maxima_threshold": float("nan")}, "maxima_threshold"),
        ({"exclude_border": "yes"}, "exclude_border"),
        ({"maxima_algorithm": "peaks"}, "maxima_algorithm"),
        ({"maxima_algorithm": "h_maxima", "maxima_threshold": 0}, "h_maxima"),
        ({"interior_smooth": -1}, "interior_smooth"),
        ([0.1], "mapping"),
    ],
)
def test_invalid_params(data, match):
    with pytest.raises(ConfigError, match=match) as info:
        WatershedParams.from_dict(data, source="run/thresholds.json")
    assert str(info.value).startswith("run/thresholds.json: ")
    if isinstance(data, dict) and "maxima_treshold" not in data:
        with pytest.raises(ValueError, match=match):
            WatershedParams(**data)


def test_invalid_maps():
    good = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="shape"):
        deep_watershed(good, np.zeros((8, 9), np.float32))
    with pytest.raises(ValueError, match="shape"):
        deep_watershed(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        deep_watershed(good, np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="fgbg"):
        deep_watershed(good, good, np.zeros((8, 8), complex))
    with pytest.raises(ValueError, match="min_distance"):
        deep_watershed(good, good, min_distance=0)
