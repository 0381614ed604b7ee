"""Tests for the time-lapse nuclei phantom: ground truth consistency, events, CTC files, py-ctcmetrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medseg.data.phantoms.timelapse import NucleiMovie, nuclei_movie, write_nuclei_movie
from medseg.errors import MedsegError
from medseg.io.ctc import check_tracks, read_ctc_ground_truth, read_frames, write_ctc_result


@pytest.fixture(scope="module")
def movie() -> NucleiMovie:
    """128 x 128, 16 frames; seed 3 holds divisions and one-frame gaps (read-only)."""
    return nuclei_movie(128, 16, 3, count=14)


def _centroid(labels: np.ndarray, label: int) -> np.ndarray:
    return np.array(ndimage.center_of_mass(labels == label))


def _children(table: np.ndarray) -> dict[int, list[np.ndarray]]:
    children: dict[int, list[np.ndarray]] = {}
    for row in table:
        if row[3]:
            children.setdefault(int(row[3]), []).append(row)
    return children


def test_movie_arrays_and_table_agree(movie: NucleiMovie) -> None:
    assert movie.images.shape == (16, 128, 128) and movie.images.dtype == np.uint16
    assert movie.tracks.shape == (16, 128, 128) and movie.tracks.dtype == np.int32
    assert movie.table.dtype == np.int64 and movie.table.shape[1] == 4
    np.testing.assert_array_equal(movie.table[:, 0], np.arange(1, len(movie.table) + 1))
    assert np.all(np.diff(movie.table[:, 1]) >= 0)  # labels numbered by begin frame
    check_tracks(movie.tracks, movie.table, name="phantom")
    assert len(movie.nuclei) == 16
    assert min(len(np.unique(f)) - 1 for f in movie.tracks) >= 8


def test_labels_are_the_rendered_nuclei(movie: NucleiMovie) -> None:
    for t, (labels, drawn) in enumerate(zip(movie.tracks, movie.nuclei)):
        present = set(np.unique(labels[labels > 0]).tolist())
        assert present == set(drawn), f"frame {t}"
        for label, nucleus in drawn.items():
            pieces = ndimage.label(labels == label)[1]
            assert pieces == 1, f"label {label} in frame {t} is in {pieces} pieces"
            row, col = _centroid(labels, label)
            assert math.hypot(row - nucleus.row, col - nucleus.col) <= nucleus.reach + 1
        background = movie.images[t][labels == 0].mean()
        assert movie.images[t][labels > 0].mean() > background  # nuclei glow where the labels say


def test_nuclei_move_smoothly_and_cells_enter_and_leave(movie: NucleiMovie) -> None:
    steps = []
    for t in range(1, 16):
        for label in set(movie.nuclei[t]) & set(movie.nuclei[t - 1]):
            a, b = movie.nuclei[t - 1][label], movie.nuclei[t][label]
            steps.append(math.hypot(b.row - a.row, b.col - a.col))
    assert 0.8 < np.median(steps) < 4.5 and max(steps) < 10
    table, last = movie.table, 15
    has_children = set(_children(table))
    entered = [r for r in table if r[1] > 0 and r[3] == 0]
    left = [r for r in table if r[2] < last and r[0] not in has_children]
    assert entered and left


def test_divisions_split_the_mother_into_two_nearby_daughters(movie: NucleiMovie) -> None:
    divisions = {p: c for p, c in _children(movie.table).items() if len(c) == 2}
    assert len(divisions) == movie.divisions >= 1
    for parent, (a, b) in divisions.items():
        end = movie.table[parent - 1, 2]
        assert a[1] == b[1] == end + 1  # daughters appear in the next frame
        mother = movie.nuclei[end][parent]
        for child in (a, b):
            daughter = movie.nuclei[end + 1][int(child[0])]
            assert daughter.texture_seed != mother.texture_seed  # a new nucleus, not the same cell
            assert math.hypot(daughter.row - mother.row, daughter.col - mother.col) < 2 * mother.radius_major
            assert daughter.radius_major * daughter.radius_minor < mother.radius_major * mother.radius_minor


def test_a_cell_unseen_for_one_frame_continues_as_a_child_track(movie: NucleiMovie) -> None:
    children = _children(movie.table)
    gaps = [(p, c[0]) for p, c in children.items() if len(c) == 1 and c[0][1] == movie.table[p - 1, 2] + 2]
    assert gaps
    for parent, child in gaps:
        end = movie.table[parent - 1, 2]
        before, after = movie.nuclei[end][parent], movie.nuclei[end + 2][int(child[0])]
        assert after.texture_seed == before.texture_seed  # the same cell
        assert math.hypot(after.row - before.row, after.col - before.col) < 10
        assert not (movie.tracks[end + 1] == parent).any() and not (movie.tracks[end + 1] == child[0]).any()


def test_movie_is_deterministic_and_seed_dependent() -> None:
    a, b = nuclei_movie(64, 3, 5), nuclei_movie(64, 3, np.random.default_rng(5))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    np.testing.assert_array_equal(a.table, b.table)
    assert not np.array_equal(a.images, nuclei_movie(64, 3, 6).images)


def test_camera_noise_differs_between_frames_and_density_follows_count() -> None:
    empty = nuclei_movie(96, 2, 3, count=0)
    assert len(empty.table) == 0
    assert not np.array_equal(empty.images[0], empty.images[1])  # fresh noise ...
    assert empty.images[0].mean() == pytest.approx(empty.images[1].mean(), rel=0.02)  # ... same microscope
    dense = nuclei_movie(384, 2, 0, count=60)
    assert min(len(np.unique(f)) - 1 for f in dense.tracks) >= 50


def test_movie_argument_errors() -> None:
    with pytest.raises(MedsegError, match="at least 32 px"):
        nuclei_movie(16, 2)
    with pytest.raises(MedsegError, match="at least 1 frame"):
        nuclei_movie(64, 0)
    with pytest.raises(MedsegError, match="count must be >= 0"):
        nuclei_movie(64, 2, count=-1)


def test_write_nuclei_movie_ctc_layout_round_trip(tmp_path: Path) -> None:
    out = write_nuclei_movie(tmp_path / "movie", 4, size=64, seed=2, sequences=2)
    assert sorted(p.name for p in out.iterdir()) == ["01", "01_GT", "02", "02_GT", "phantom.json"]
    assert sorted(p.name for p in (out / "01").iterdir()) == [f"t{t:03d}.tif" for t in range(4)]
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["name"] == "nuclei_movie_phantom"
    assert meta["source"] == "medseg phantom nuclei --frames 4 --size 64 --seed 2 --sequences 2"
    for s, name in ((1, "01"), (2, "02")):
        expected = nuclei_movie(64, 4, np.random.default_rng([2, s]))
        np.testing.assert_array_equal(read_frames(out / name), expected.images)
        truth = read_ctc_ground_truth(out / f"{name}_GT")
        np.testing.assert_array_equal(truth.tra, expected.tracks)
        np.testing.assert_array_equal(truth.table, expected.table)
        assert sorted(truth.seg) == [0, 1, 2, 3]
        np.testing.assert_array_equal(truth.seg[3], expected.tracks[3])
        assert meta["sequences"][s - 1] == {
            "sequence": name,
            "tracks": len(expected.table),
            "divisions": expected.divisions,
        }


def test_write_nuclei_movie_is_byte_identical_and_replaces_an_earlier_phantom(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = files(write_nuclei_movie(tmp_path / "a", 3, size=48, seed=4))
    assert first == files(write_nuclei_movie(tmp_path / "b", 3, size=48, seed=4))
    write_nuclei_movie(tmp_path / "c", 5, size=48, seed=4, sequences=2)
    assert files(write_nuclei_movie(tmp_path / "c", 3, size=48, seed=4)) == first  # stale frames removed


def test_write_nuclei_movie_refuses_another_folder_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset.json").write_text('{"name": "mine"}')
    with pytest.raises(MedsegError, match="holds no nuclei movie phantom"):
        write_nuclei_movie(tmp_path / "data", 2, size=48)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dataset.json"]
    for kwargs in ({"frames": 0}, {"frames": 2, "seed": -1}, {"frames": 2, "sequences": 0}):
        with pytest.raises(MedsegError, match="nuclei movie needs"):
            write_nuclei_movie(tmp_path / "x", **kwargs)
    with pytest.raises(MedsegError, match="at least 32 px"):
        write_nuclei_movie(tmp_path / "x", 2, size=8)


def test_py_ctcmetrics_accepts_the_ground_truth(tmp_path: Path) -> None:
    """The reference evaluator reads our files, scores GT against itself perfectly and sees the division."""
    evaluate_sequence = pytest.importorskip("ctc_metrics.scripts.evaluate").evaluate_sequence

    out = write_nuclei_movie(tmp_path / "movie", 12, size=96, seed=1)
    truth = read_ctc_ground_truth(out / "01_GT")
    write_ctc_result(out / "01_RES", truth.tra, truth.table)
    metrics = ["Valid", "DET", "SEG", "TRA", "BC"]
    scores = evaluate_sequence(str(out / "01_RES"), str(out / "01_GT"), metrics, threads=1)
    assert scores["Valid"] == 1
    assert scores["DET"] == scores["SEG"] == scores["TRA"] == 1.0
    divisions = json.loads((out / "phantom.json").read_text())["sequences"][0]["divisions"]
    assert divisions >= 1 and scores["gt_divisions"] == divisions and scores["tp_div(0)"] == divisions
    # Cutting the division links must cost: the evaluator is not trivially satisfied.
    cut = truth.table.copy()
    parents, children = np.unique(cut[:, 3][cut[:, 3] > 0], return_counts=True)
    cut[np.isin(cut[:, 3], parents[children >= 2]), 3] = 0
    write_ctc_result(out / "01_RES", truth.tra, cut)
    broken = evaluate_sequence(str(out / "01_RES"), str(out / "01_GT"), ["Valid", "TRA"], threads=1)
    assert broken["Valid"] == 1 and broken["TRA"] < 1.0 and broken["AOGM_EA"] >= 2
