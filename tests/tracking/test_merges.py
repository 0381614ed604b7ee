"""Tests for medseg.tracking.merges and the rules it feeds in track_labels: merged objects cut with the
previous frame's objects, and divisions whose daughters are two halves of one nucleus rejected."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from medseg.errors import DataError
from medseg.tracking import TrackingParams, track_labels
from medseg.tracking.merges import daughter_contact, split_merged_objects, split_merges

SHAPE = (64, 96)


def movie(frames: list[list[list[tuple[float, float, float]]]], seed: int = 0) -> np.ndarray:
    """(T, H, W) int32 movie: ``frames[t]`` lists objects, each a list of (row, col, radius) discs drawn
    with one label (two discs in one object = two nuclei the segmentation merged). Labels are shuffled per
    frame, as an independent per-frame segmentation gives them."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(frames), *SHAPE), np.int32)
    for t, objects in enumerate(frames):
        labels = rng.permutation(len(objects)) * 5 + 2
        for label, discs in zip(labels, objects):
            for row, col, radius in discs:
                out[t][disk((row, col), radius, shape=SHAPE)] = label
    return out


def disc(row: float, col: float, radius: float) -> np.ndarray:
    image = np.zeros(SHAPE, bool)
    image[disk((row, col), radius, shape=SHAPE)] = True
    return image


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_split_merges_cuts_two_nuclei_merged_after_a_frame_apart() -> None:
    apart = movie([[[(32, 40, 7)], [(32, 55, 7)]]])[0]
    merged = movie([[[(32, 41, 7), (32, 54, 7)]]])[0]
    cut = split_merges(apart, merged)
    assert cut is not None and cut.dtype == np.int32
    labels = np.unique(cut[cut > 0])
    assert len(labels) == 2 and int(merged.max()) in labels.tolist()  # the first piece keeps its label
    pieces = sorted((cut == label for label in labels), key=lambda piece: np.nonzero(piece)[1].mean())
    assert iou(pieces[0], disc(32, 41, 7)) > 0.85 and iou(pieces[1], disc(32, 54, 7)) > 0.85
    assert np.array_equal(cut > 0, merged > 0)  # no pixel gained or lost


def test_split_merges_leaves_a_convex_nucleus_whole() -> None:
    # frame t: one nucleus cut in two by the segmentation; frame t + 1: the same nucleus whole. Both halves
    # go into it, but a round object has no waist: it is one nucleus, and stays one.
    halves = movie([[[(32, 48, 9)]]])[0]
    halves[:, 48:][halves[:, 48:] > 0] = 99
    whole = movie([[[(32, 48, 9)]]])[0]
    assert split_merges(halves, whole) is None
    assert split_merges(halves, whole, max_solidity=1.0) is not None  # the convexity test is what keeps it


def test_split_merges_ignores_an_object_that_continues_elsewhere() -> None:
    # A non-convex object takes in a third of its right neighbour, but that neighbour goes on as its own
    # object (which has more of it): only one object of frame t ends up in it, so it is no merge.
    before = movie([[[(32, 30, 6)], [(32, 46, 6)]]])[0]
    after = movie([[[(32, 30, 6), (32, 40, 5)], [(32, 52, 6)]]])[0]
    right = before == before[32, 46]
    into_left, into_own = (right & (after == after[32, 40])).sum(), (right & (after == after[32, 52])).sum()
    assert 0.25 * right.sum() <= into_left < into_own
    assert split_merges(before, after) is None
    alone = np.where(after == after[32, 52], 0, after)  # without its own continuation it is a merge
    assert split_merges(before, alone) is not None


def test_split_merged_objects_follows_a_merge_over_frames() -> None:
    frames = [[[(32, 40 - d, 7)], [(32, 55 + d, 7)]] for d in (2, 1)]
    frames += [[[(32, 41, 7), (32, 54, 7)]]] * 3 + [[[(32, 40, 7)], [(32, 55, 7)]]]
    masks = movie(frames)
    out = split_merged_objects(masks)
    assert [len(np.unique(f)) - 1 for f in out] == [2] * 6
    assert np.array_equal(out[:2], masks[:2]) and np.array_equal(out > 0, masks > 0)
    with pytest.raises(DataError, match="movie"):
        split_merged_objects(masks[0])


def test_track_labels_keeps_both_tracks_through_a_merge() -> None:
    frames = [[[(32, 40, 7)], [(32, 55, 7)]]] * 2
    frames += [[[(32, 41, 7), (32, 54, 7)]]] * 3 + [[[(32, 40, 7)], [(32, 55, 7)]]] * 2
    masks = movie(frames)
    given = masks.copy()
    tracks = track_labels(masks)
    assert tracks.table[:, 1:].tolist() == [[0, 6, 0], [0, 6, 0]]
    assert all(len(np.unique(frame)) == 3 for frame in tracks.masks)
    assert np.array_equal(masks, given)  # the cut is made on a copy
    without = track_labels(masks, TrackingParams(split_merges=False)).table
    assert len(without) > 2  # one track is lost for the merged frames


def test_track_labels_finds_a_division_whose_daughter_merged_with_a_neighbour() -> None:
    # Mother M (col 40) and neighbour N (col 55). M divides at t = 3 into B (col 34) and A (col 45);
    # the segmentation merges A with N for two frames, then shows them apart.
    before = [[[(32, 40, 6)], [(32, 55, 6)]]] * 3
    merged = [[[(32, 34, 5)], [(32, 45, 5), (32, 55, 6)]]] * 2
    after = [[[(32, 33, 5)], [(32, 45, 5)], [(32, 57, 6)]]] * 3
    masks = movie(before + merged + after)
    tracks = track_labels(masks)
    assert len(tracks.divisions) == 1
    ((mother, daughters),) = tracks.divisions.items()
    assert tracks.masks[2, 32, 40] == mother
    assert sorted(int(tracks.masks[3, 32, c]) for c in (34, 45)) == sorted(daughters)
    neighbour = int(tracks.masks[0, 32, 55])
    assert all(tracks.masks[t, 32, 58] == neighbour for t in range(8))
    assert track_labels(masks, TrackingParams(split_merges=False)).divisions == {}


def halves_movie(gap: int) -> np.ndarray:
    """A nucleus for 2 frames, then its left and right halves (``gap`` columns apart) for 4 frames."""
    masks = movie([[[(32, 48, 8)]]] * 6)
    for t in range(2, 6):
        frame = masks[t]
        right = frame[:, 48:].copy()
        frame[:, 48:] = 0
        frame[:, 48 + gap :] = right[:, : right.shape[1] - gap]
        frame[:, 48 + gap :][frame[:, 48 + gap :] > 0] = 77
    return masks


def test_track_labels_rejects_a_division_into_touching_halves() -> None:
    touching = halves_movie(gap=0)
    assert track_labels(touching).divisions == {}
    assert len(track_labels(touching, TrackingParams(max_daughter_contact=100)).divisions) == 1
    assert len(track_labels(halves_movie(gap=3)).divisions) == 1  # daughters apart: a division


def test_daughter_contact_measures_the_shared_border() -> None:
    straight = np.zeros((10, 10), np.int32)
    straight[2:8, 2:5], straight[2:8, 5:8] = 1, 2
    assert daughter_contact(straight, 1, 2) == 6.0
    assert daughter_contact(straight, 1, 3) == 0.0
    rows, cols = np.mgrid[0:20, 0:20]
    diagonal = np.where(rows + cols < 20, 1, 2)
    # a 45 degree border counts about its length over sqrt 2 per side, not twice its pixel pairs
    assert daughter_contact(diagonal, 1, 2) == pytest.approx(20, abs=1)
    apart = np.zeros((10, 10), np.int32)
    apart[2:8, 2:4], apart[2:8, 6:8] = 1, 2
    assert daughter_contact(apart, 1, 2) == 0.0


def test_track_labels_cuts_out_the_smaller_daughter_merged_with_a_neighbour() -> None:
    # An elongated mother M (cols 29-50) goes mostly into daughter B (col 33); the smaller share, daughter
    # A (col 46), is merged with neighbour N (col 59) through a neck for two frames: N's object is where M
    # went second.
    before = [[[(32, 36, 7), (32, 44, 7)], [(32, 59, 6)]]] * 3
    merged = [[[(32, 33, 7)], [(32, 46, 6), (32, 52.5, 3), (32, 59, 6)]]] * 2
    after = [[[(32, 32, 7)], [(32, 46, 6)], [(32, 60, 6)]]] * 3
    masks = movie(before + merged + after)
    mother = masks[2] == masks[2, 32, 40]
    into_b = (mother & (masks[3] == masks[3, 32, 33])).sum()
    into_a = (mother & (masks[3] == masks[3, 32, 46])).sum()
    assert 0.35 * mother.sum() <= into_a < into_b
    tracks = track_labels(masks)
    assert len(tracks.divisions) == 1
    ((parent, daughters),) = tracks.divisions.items()
    assert tracks.masks[2, 32, 40] == parent
    assert sorted(int(tracks.masks[3, 32, c]) for c in (33, 46)) == sorted(daughters)
    assert track_labels(masks, TrackingParams(merge_divided_overlap=0.9)).divisions == {}


def test_split_merges_keeps_a_fragment_along_its_nucleus_merged() -> None:
    # Frame t + 1 cuts a nucleus at column 42 and merges its right part with the neighbour: the right part
    # lies along the rest of the nucleus, so it is no daughter and the neighbour's object is not cut.
    before = movie([[[(32, 40, 8)], [(32, 58, 6)]]])[0]
    after = movie([[[(32, 40, 8), (32, 58, 6)]]])[0]
    after[:, :42][after[:, :42] > 0] = 50
    assert len(np.unique(after)) == 3
    assert split_merges(before, after) is None
    assert split_merges(before, after, max_contact=100) is not None
