"""Tests for medseg.transforms.targets: DeepCell's inner/outer distance and fgbg targets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label, regionprops
from skimage.segmentation import find_boundaries, relabel_sequential

from medseg.transforms.targets import deep_watershed_targets, erode_instances, inner_boundaries


def _touching_discs(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Random discs; where they overlap the nearest centre wins, so many touch. Ids are 3, 8, 13, ..."""
    centres = rng.uniform(0, 1, (count, 2)) * np.array(shape)
    radii = rng.uniform(5, 11, count)
    rows, cols = np.indices(shape)
    distance = np.hypot(rows[..., None] - centres[:, 0], cols[..., None] - centres[:, 1])
    nearest = distance.argmin(axis=-1)
    inside = distance.min(axis=-1) < radii[nearest]
    return np.where(inside, 5 * nearest + 3, 0).astype(np.int32)


def _deepcell_reference(instances: np.ndarray, alpha, beta: float, erosion: int):
    """DeepCell's inner/outer_distance_transform_2d, transcribed with its regionprops loop."""
    mask = instances.copy()
    for _ in range(erosion):
        mask[find_boundaries(mask, mode="inner")] = 0
    distance = ndimage.distance_transform_edt(mask)
    components = label(mask)
    outer = distance.copy()
    inner = np.zeros(mask.shape)
    for prop in regionprops(components, distance):
        coords = prop.coords
        outer[coords[:, 0], coords[:, 1]] /= distance[coords[:, 0], coords[:, 1]].max()
        squared = np.sum((coords - prop.centroid_weighted) ** 2, axis=1)
        rate = 1 / np.sqrt(prop.area) if alpha == "auto" else alpha
        inner[coords[:, 0], coords[:, 1]] = 1 / (1 + beta * rate * squared)
    return inner, outer


@pytest.mark.parametrize(("alpha", "beta", "erosion"), [("auto", 1.0, 0), (0.1, 2.0, 0), ("auto", 1.0, 2)])
def test_matches_deepcell_reference(rng, alpha, beta, erosion):
    instances = _touching_discs((96, 80), 18, rng)
    maps = deep_watershed_targets(instances, alpha=alpha, beta=beta, erosion=erosion)
    inner, outer = _deepcell_reference(instances, alpha, beta, erosion)
    np.testing.assert_allclose(maps["inner"], inner, atol=1e-6)
    np.testing.assert_allclose(maps["outer"], outer, atol=1e-6)


def test_inner_peaks_at_centres_and_vanishes_on_background():
    instances = np.zeros((64, 64), np.int32)
    rows, cols = np.indices(instances.shape)
    centres = {7: (16, 16), 42: (40, 44), 9: (50, 12)}
    for value, (r, c) in centres.items():
        instances[np.hypot(rows - r, cols - c) <= 8] = value
    maps = deep_watershed_targets(instances)
    inner = maps["inner"]
    assert inner.dtype == np.float32 and maps["outer"].dtype == np.float32
    assert np.all(inner[instances == 0] == 0) and np.all(maps["outer"][instances == 0] == 0)
    for value, centre in centres.items():
        inside = np.where(instances == value, inner, -1)
        assert np.unravel_index(inside.argmax(), inside.shape) == centre
        assert inner[centre] == pytest.approx(1.0)
        # falls off away from the centre: the rim is far below the peak
        assert inner[(instances == value) & (np.hypot(rows - centre[0], cols - centre[1]) > 7)].max() < 0.5


def test_ranges_and_per_object_normalisation(rng):
    instances = _touching_discs((96, 96), 25, rng)
    maps = deep_watershed_targets(instances)
    for key in ("inner", "outer"):
        assert maps[key].min() >= 0 and maps[key].max() <= 1
    objects = label(instances, connectivity=2)
    peaks = ndimage.maximum(maps["outer"], objects, np.arange(1, objects.max() + 1))
    np.testing.assert_allclose(peaks, 1.0)
    assert np.all(maps["outer"][instances > 0] > 0) and np.all(maps["inner"][instances > 0] > 0)


def test_ids_need_not_be_consecutive(rng):
    instances = _touching_discs((80, 80), 15, rng)
    consecutive = relabel_sequential(instances)[0]
    assert instances.max() > consecutive.max()
    a, b = (
        deep_watershed_targets(instances, boundary=True),
        deep_watershed_targets(consecutive, boundary=True),
    )
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_fgbg_boundary_separates_touching_objects():
    instances = np.zeros((20, 30), np.int32)
    instances[4:16, 3:15], instances[4:16, 15:27] = 11, 4  # two touching squares
    plain = deep_watershed_targets(instances)["fgbg"]
    assert plain.dtype == np.uint8 and set(np.unique(plain)) == {0, 1}
    np.testing.assert_array_equal(plain, instances > 0)
    fgbg = deep_watershed_targets(instances, boundary=True)["fgbg"]
    assert set(np.unique(fgbg)) == {0, 1, 2}
    assert np.all(fgbg[4:16, 14:16] == 2)  # both sides of the contact
    assert np.all(fgbg[5:15, 4:14] == 1)  # interiors
    assert ndimage.label(fgbg == 1)[1] == 2  # the foreground class alone splits the two objects
    assert ndimage.label(plain == 1)[1] == 1


def test_inner_boundaries_equals_skimage(rng):
    for _ in range(5):
        instances = rng.integers(0, 4, (23, 31))
        np.testing.assert_array_equal(inner_boundaries(instances), find_boundaries(instances, mode="inner"))
    discs = _touching_discs((64, 64), 12, rng)
    np.testing.assert_array_equal(inner_boundaries(discs), find_boundaries(discs, mode="inner"))


def test_erosion_opens_a_gap_between_touching_objects():
    instances = np.zeros((20, 30), np.int32)
    instances[4:16, 3:15], instances[4:16, 15:27] = 1, 2
    eroded = erode_instances(instances, 2)
    assert np.all(eroded[:, 13:17] == 0) and np.all(eroded[6:14, 5:13] == 1)
    maps = deep_watershed_targets(instances, erosion=2)
    assert np.all(maps["outer"][:, 13:17] == 0) and np.all(maps["inner"][:, 13:17] == 0)
    np.testing.assert_array_equal(maps["fgbg"], instances > 0)  # erosion leaves fgbg alone
    gone = deep_watershed_targets(instances, erosion=10)  # eroded away entirely
    assert not gone["outer"].any() and gone["fgbg"].any()


def test_empty_and_cut_objects():
    empty = deep_watershed_targets(np.zeros((8, 9), np.uint16), boundary=True)
    assert {k: (v.shape, v.any()) for k, v in empty.items()} == {k: ((8, 9), False) for k in empty}
    # An object cut by the patch edge: the edge is not background, so its distance grows towards it.
    cut = np.zeros((10, 10), np.int32)
    cut[:, :4] = 5
    outer = deep_watershed_targets(cut)["outer"]
    assert outer[5, 0] == 1.0 and outer[5, 3] == 0.25
    # No background at all: the outside of the array counts as background instead.
    full = np.ones((6, 6), np.int32)
    full[:, 3:] = 2
    maps = deep_watershed_targets(full)
    assert np.isfinite(maps["inner"]).all() and maps["outer"].max() == 1.0 and maps["outer"][0, 0] > 0


@pytest.mark.parametrize(
    ("instances", "kwargs", "match"),
    [
        (np.zeros((4, 4), np.float32), {}, "integer"),
        (np.zeros((2, 4, 4), np.int32), {}, "shape"),
        (np.full((4, 4), -1, np.int32), {}, ">= 0"),
        (np.zeros((4, 4), np.int32), {"alpha": "fast"}, "alpha"),
        (np.zeros((4, 4), np.int32), {"alpha": -0.1}, "alpha"),
        (np.zeros((4, 4), np.int32), {"beta": 0}, "beta"),
        (np.ones((4, 4), np.int32), {"erosion": -1}, "erosion"),
    ],
)
def test_invalid_input(instances, kwargs, match):
    with pytest.raises(ValueError, match=match):
        deep_watershed_targets(instances, **kwargs)
