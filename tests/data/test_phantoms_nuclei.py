"""Tests for the synthetic fluorescent nuclei phantoms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from medseg.data.phantoms import (
    NUCLEI_LABELS,
    Microscope,
    NucleiImage,
    Nucleus,
    nuclei_image,
    random_nuclei,
    render_nuclei,
    write_nuclei_dataset,
)
from medseg.errors import MedsegError
from medseg.io import read_image, read_label

QUIET = Microscope(psf_sigma=1.0, background=0.1, background_variation=0.0, haze=0.0, photons=2000.0)


@pytest.fixture(scope="module")
def frames() -> list[NucleiImage]:
    """Default phantoms: three full-size and three smaller images."""
    return [nuclei_image(256, np.random.default_rng([0, i])) for i in range(3)] + [
        nuclei_image(128, np.random.default_rng([1, i])) for i in range(3)
    ]


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different instances that share a 4-connected pixel edge."""
    pairs = set()
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[touch].tolist(), b[touch].tolist())}
    return pairs


def test_shapes_dtypes_and_consecutive_ids(frames: list[NucleiImage]) -> None:
    for frame in frames:
        size = frame.labels.shape[0]
        assert frame.image.shape == frame.labels.shape == (size, size)
        assert frame.image.dtype == np.uint16 and frame.labels.dtype == np.int32
        ids = np.unique(frame.labels)
        assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(frame.nuclei) + 1))
    full = [len(f.nuclei) for f in frames if f.labels.shape[0] == 256]
    assert all(15 <= k <= 60 for k in full), full


def test_every_instance_is_one_visible_piece_of_nucleus_size(frames: list[NucleiImage]) -> None:
    for frame in frames:
        areas = np.bincount(frame.labels.ravel())[1:]
        assert areas.min() >= 12
        for k in range(1, len(areas) + 1):
            assert ndimage.label(frame.labels == k)[1] == 1, k
        # radii of ~6-14 px: the median equivalent radius of whole nuclei sits in the middle
        inner = [
            a
            for k, a in enumerate(areas, 1)
            if not _on_border(frame.labels == k) and a > 0.6 * _area(frame, k)
        ]
        assert 6.0 < math.sqrt(np.median(inner) / np.pi) < 12.5


def _on_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _area(frame: NucleiImage, k: int) -> float:
    nucleus = frame.nuclei[k - 1]
    return math.pi * nucleus.radius_major * nucleus.radius_minor


def test_some_nuclei_touch_or_overlap(frames: list[NucleiImage]) -> None:
    pairs = [len(_touching_pairs(f.labels)) for f in frames if f.labels.shape[0] == 256]
    assert sum(pairs) >= 20 and max(pairs) >= 10, pairs  # how crowded varies from image to image
    # and some are partly hidden: visible area clearly below the drawn ellipse's
    hidden = sum(
        np.sum(f.labels == k) < 0.85 * _area(f, k)
        for f in frames
        for k in range(1, len(f.nuclei) + 1)
        if not _on_border(f.labels == k)
    )
    assert hidden >= 3


def test_labels_match_the_bright_nuclei_in_the_image(frames: list[NucleiImage]) -> None:
    for frame in frames:
        image = frame.image.astype(float)
        fg = frame.labels > 0
        inner = fg & ~ndimage.binary_erosion(fg, iterations=2)
        outer = ndimage.binary_dilation(fg, iterations=2) & ~fg
        far = ~ndimage.binary_dilation(fg, iterations=6)
        # a label shifted by ~2 px would mix the two rings and erase the step at the outline
        assert image[inner].mean() > image[outer].mean() + 0.3 * (image[fg].mean() - image[far].mean())
        assert image[fg].mean() > image[far].mean() + 5 * image[far].std()


def test_intensities_are_in_range_and_brightness_varies(frames: list[NucleiImage]) -> None:
    for frame in frames:
        assert frame.image.min() > 50 and frame.image.max() < 65535
        background = np.median(frame.image[frame.labels == 0])
        means = ndimage.mean(frame.image.astype(float), frame.labels, np.arange(1, len(frame.nuclei) + 1))
        brightness = np.array([n.brightness for n in frame.nuclei])
        if frame.labels.shape[0] == 256:
            assert np.percentile(means - background, 95) > 1.8 * np.percentile(means - background, 5)
            assert brightness.max() / brightness.min() > 2.0
        assert np.corrcoef(means, brightness)[0, 1] > 0.6  # the image shows each nucleus' brightness


def test_same_seed_same_image_and_different_seed_differs() -> None:
    a, b = nuclei_image(96, 11), nuclei_image(96, np.random.default_rng(11))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.nuclei == b.nuclei
    c = nuclei_image(96, 12)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.labels, c.labels)


def test_rendering_is_separate_from_drawing_and_follows_the_parameters() -> None:
    nucleus = Nucleus(30.0, 30.0, 10.0, 7.0, 0.4, wobble=(0.03, 0.02, 0.01, 0.01), texture_seed=3)
    one = render_nuclei([nucleus], 64, QUIET, rng=0)
    moved = render_nuclei([Nucleus(**{**nucleus.__dict__, "col": 40.0})], 64, QUIET, rng=0)
    np.testing.assert_array_equal(moved.labels[:, 10:], one.labels[:, :-10])  # moves with its centre
    again = render_nuclei([nucleus], 64, QUIET, rng=1)  # another exposure of the same scene
    np.testing.assert_array_equal(again.labels, one.labels)
    assert not np.array_equal(again.image, one.image)
    assert np.corrcoef(again.image.ravel(), one.image.ravel())[0, 1] > 0.95


def test_the_outline_sits_where_outline_radius_says() -> None:
    dented = Nucleus(32.0, 32.0, 12.0, 8.0, 0.7, wobble=(0.0, 0.15, 0.0, 0.05), wobble_phase=(0, 1, 0, 2))
    labels = render_nuclei([dented], 64, QUIET, rng=0).labels
    radii = [dented.outline_radius(d) for d in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    assert max(radii) - min(radii) > 5  # an elongated, clearly wobbly outline
    for direction, r in zip(np.linspace(0, 2 * np.pi, 16, endpoint=False), radii):
        for step, expected in ((-0.8, 1), (0.8, 0)):
            point = 32 + (r + step) * np.array([np.sin(direction), np.cos(direction)])
            assert labels[tuple(np.round(point).astype(int))] == expected, (direction, step)


def test_the_nucleus_on_top_owns_the_overlap_and_light_adds_up() -> None:
    below = Nucleus(32.0, 26.0, 9.0, 9.0, 0.0, texture=0.0)
    above = Nucleus(32.0, 38.0, 9.0, 9.0, 0.0, texture=0.0)
    frame = render_nuclei([below, above], 64, QUIET, rng=0)
    assert frame.labels[32, 32] == 2 and frame.labels[32, 22] == 1 and frame.labels[32, 42] == 2
    image = frame.image.astype(float)
    assert image[31:34, 31:34].mean() > 1.4 * image[31:34, 20:23].mean()  # both nuclei shine there
    alone = render_nuclei([above, below], 64, QUIET, rng=0)  # swapped order: the other one on top
    assert alone.labels[32, 32] == 2 and alone.nuclei == [above, below]


def test_a_mostly_hidden_nucleus_is_left_out_of_labels_and_image() -> None:
    small = Nucleus(32.0, 32.0, 6.0, 6.0, 0.0, texture=0.0)
    big = Nucleus(32.0, 40.0, 12.0, 12.0, 0.0, texture=0.0)  # leaves ~17% of the small one visible
    frame = render_nuclei([small, big], 64, QUIET, rng=0)
    assert frame.nuclei == [big] and set(np.unique(frame.labels)) == {0, 1}
    only_big = render_nuclei([big], 64, QUIET, rng=0)
    np.testing.assert_array_equal(frame.labels, only_big.labels)
    np.testing.assert_array_equal(frame.image, only_big.image)  # not drawn either: no unlabelled light
    shifted = Nucleus(32.0, 42.0, 12.0, 12.0, 0.0, texture=0.0)  # ~37% visible: kept, as a crescent
    frame = render_nuclei([small, shifted], 64, QUIET, rng=0)
    assert frame.nuclei == [small, shifted] and 30 < np.sum(frame.labels == 1) < 50


def test_a_piece_cut_off_by_the_nucleus_on_top_joins_it() -> None:
    long = Nucleus(32.0, 32.0, 14.0, 5.0, 0.0, texture=0.0)  # horizontal, cut in the middle
    across = Nucleus(32.0, 30.0, 9.0, 3.5, np.pi / 2, texture=0.0)
    frame = render_nuclei([long, across], 64, QUIET, rng=0)
    assert [ndimage.label(frame.labels == k)[1] for k in (1, 2)] == [1, 1]
    assert frame.labels[32, 40] == 1 and frame.labels[32, 20] == 2


def test_random_nuclei_places_the_requested_count_inside_the_image() -> None:
    nuclei = random_nuclei(128, 4, count=12)
    assert len(nuclei) == 12 and all(0 <= n.row < 128 and 0 <= n.col < 128 for n in nuclei)
    assert all(5.0 <= n.radius_minor <= n.radius_major <= 14.0 for n in nuclei)
    assert random_nuclei(64, 0, count=0) == []


@pytest.mark.parametrize("kwargs", [{"size": 16}, {"count": -1}])
def test_bad_arguments_raise_a_user_error(kwargs: dict) -> None:
    with pytest.raises(MedsegError):
        nuclei_image(**{"size": 64, **kwargs})


def test_write_nuclei_dataset_writes_the_native_instance_layout(tmp_path) -> None:
    out = write_nuclei_dataset(tmp_path / "nuclei", 2, size=64, seed=5)
    assert out == tmp_path / "nuclei"
    assert json.loads((out / "dataset.json").read_text()) == {
        "name": "nuclei_phantom",
        "channel_names": {"0": "fluorescence"},
        "labels": NUCLEI_LABELS,
        "numTraining": 2,
        "file_ending": ".tif",
        "medseg": {"task": "instance", "source": "medseg phantom nuclei --n 2 --size 64 --seed 5"},
    }
    for i, case in enumerate(["nuclei_000", "nuclei_001"]):
        expected = nuclei_image(64, np.random.default_rng([5, i]))
        image = read_image(out / "imagesTr" / f"{case}_0000.tif")
        assert image.dtype == np.uint16
        np.testing.assert_array_equal(image, expected.image)
        np.testing.assert_array_equal(read_label(out / "labelsTr" / f"{case}.tif"), expected.labels)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["nuclei_000.tif", "nuclei_001.tif"]


def test_write_nuclei_dataset_is_byte_identical_and_cases_do_not_depend_on_n(tmp_path) -> None:
    small = write_nuclei_dataset(tmp_path / "a", 2, size=48, seed=9)
    large = write_nuclei_dataset(tmp_path / "b", 3, size=48, seed=9)
    for name in ("imagesTr/nuclei_001_0000.tif", "labelsTr/nuclei_001.tif"):
        assert (small / name).read_bytes() == (large / name).read_bytes()
    other = write_nuclei_dataset(tmp_path / "c", 1, size=48, seed=10)
    assert (other / "imagesTr/nuclei_000_0000.tif").read_bytes() != (
        small / "imagesTr/nuclei_000_0000.tif"
    ).read_bytes()


def test_rewriting_with_fewer_cases_removes_the_stale_ones(tmp_path) -> None:
    write_nuclei_dataset(tmp_path / "d", 3, size=48)
    write_nuclei_dataset(tmp_path / "d", 1, size=48)
    assert [p.name for p in (tmp_path / "d" / "imagesTr").iterdir()] == ["nuclei_000_0000.tif"]
    assert [p.name for p in (tmp_path / "d" / "labelsTr").iterdir()] == ["nuclei_000.tif"]


def test_refuses_to_write_into_another_dataset_or_with_bad_arguments(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dataset.json").write_text('{"name": "blood_phantom"}')
    with pytest.raises(MedsegError, match="holds another dataset"):
        write_nuclei_dataset(tmp_path / "d", 1, size=48)
    with pytest.raises(MedsegError, match="n >= 0"):
        write_nuclei_dataset(tmp_path / "e", -1)
    with pytest.raises(MedsegError, match="at least 32"):
        write_nuclei_dataset(tmp_path / "e", 1, size=20)


def test_nuclei_wholly_outside_the_image_are_left_out():
    from medseg.data.phantoms import Nucleus, render_nuclei

    outside = [Nucleus(-30.0, 30.0, 8.0, 6.0, 0.0), Nucleus(30.0, 200.0, 8.0, 6.0, 0.0)]
    frame = render_nuclei([*outside, Nucleus(32.0, 32.0, 8.0, 6.0, 0.0)], 64, rng=0)
    assert frame.labels.max() == 1 and len(frame.nuclei) == 1 and frame.nuclei[0].row == 32.0
