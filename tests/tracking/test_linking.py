"""Tests for medseg.tracking: features, assignments, frame/segment linking and CTC tracks on hand-made
movies of discs, checked against regionprops, brute-force assignments and py-ctcmetrics."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from skimage.draw import disk
from skimage.measure import regionprops

from medseg.errors import ConfigError, DataError
from medseg.tracking import (
    FrameObjects,
    TrackingParams,
    Tracks,
    assign,
    build_tracks,
    frame_candidates,
    frame_objects,
    link_frames,
    link_segments,
    object_overlaps,
    track_labels,
)

SHAPE = (64, 96)


def disc_labels(n_frames: int, n_discs: int, seed: int = 0) -> np.ndarray:
    """(T, K) label of disc k in frame t: shuffled per frame (an independent per-frame segmentation), so a
    tracker cannot lean on them."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(1, n_discs + 1)) * 7 + 3 for _ in range(n_frames)])


def draw(n_frames: int, discs: list[dict[int, tuple[float, float, float]]], seed: int = 0) -> np.ndarray:
    """(T, H, W) int32 movie; ``discs[k]`` maps frame -> (row, col, radius); labels from disc_labels."""
    labels = disc_labels(n_frames, len(discs), seed)
    movie = np.zeros((n_frames, *SHAPE), np.int32)
    for t in range(n_frames):
        for k, frames in enumerate(discs):
            if t in frames:
                row, col, radius = frames[t]
                movie[t][disk((row, col), radius, shape=SHAPE)] = labels[t, k]
    return movie


def check_ctc(tracks: Tracks) -> None:
    """The contract's consistency rules, checked independently of medseg.io.ctc.check_tracks."""
    masks, table = tracks.masks, tracks.table
    assert masks.dtype == np.int32 and table.dtype == np.int64 and table.shape[1:] == (4,)
    labels = table[:, 0].tolist()
    assert len(set(labels)) == len(labels) and all(label > 0 for label in labels)
    for t in range(len(masks)):
        present = set(np.unique(masks[t]).tolist()) - {0}
        expected = {label for label, begin, end, _ in table.tolist() if begin <= t <= end}
        assert present == expected, f"frame {t}: labels {present} but table says {expected}"
    end_of = dict(zip(labels, table[:, 2].tolist()))
    for _, begin, _, parent in table.tolist():
        assert parent == 0 or end_of[parent] < begin
    try:
        from medseg.io.ctc import check_tracks
    except ImportError:
        return
    check_tracks(masks, table, name="test")


def label_at(tracks: Tracks, t: int, row: float, col: float) -> int:
    return int(tracks.masks[t, round(row), round(col)])


def rows_by_begin(table: np.ndarray) -> list[list[int]]:
    """Table rows as (begin, end, parent begin or -1): independent of the label numbering."""
    begin_of = {label: begin for label, begin, _, _ in table.tolist()}
    return sorted([b, e, begin_of[p] if p else -1] for _, b, e, p in table.tolist())


# --- features ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 10**9])
def test_frame_objects_match_regionprops(rng: np.random.Generator, offset: int) -> None:
    labels = np.zeros((40, 50), np.int64)
    for value in (2, 5, 9, 30):
        r, c = rng.integers(5, 35), rng.integers(5, 45)
        labels[disk((r, c), rng.integers(2, 6), shape=labels.shape)] = value
    props = regionprops(labels.copy())
    labels[labels > 0] += offset  # sparse label values take the np.unique path
    objects = frame_objects(labels)
    assert objects.label.tolist() == [p.label + offset for p in props]
    assert objects.area.tolist() == [p.area for p in props]
    np.testing.assert_allclose(objects.centroid, [p.centroid for p in props])
    assert objects.bbox.tolist() == [list(p.bbox) for p in props]
    assert objects.index_of(objects.label[::-1]).tolist() == list(range(len(props)))[::-1]


def test_frame_objects_empty_and_invalid() -> None:
    empty = frame_objects(np.zeros((4, 4), np.uint16))
    assert len(empty) == 0 and empty.centroid.shape == (0, 2) and empty.bbox.shape == (0, 4)
    with pytest.raises(DataError, match="negative|>= 0"):
        frame_objects(np.array([[0, -1]]))
    with pytest.raises(DataError, match="integer"):
        frame_objects(np.zeros((3, 3), np.float32))


def test_object_overlaps_match_brute_force(rng: np.random.Generator) -> None:
    a = rng.integers(0, 6, (30, 30))
    b = rng.integers(0, 5, (30, 30)) * 1000  # large labels in one frame only
    la, lb, count = object_overlaps(a, b)
    expected = {
        (i, j): int(((a == i) & (b == j)).sum())
        for i in range(1, 6)
        for j in range(1000, 5000, 1000)
        if ((a == i) & (b == j)).any()
    }
    assert dict(zip(zip(la.tolist(), lb.tolist()), count.tolist())) == expected


def test_frame_candidates_join_near_and_overlapping_pairs() -> None:
    before = np.zeros((40, 40), np.int32)
    after = np.zeros((40, 40), np.int32)
    before[0:10, 0:30] = 1  # a long object: its centroid moves 15 px but the pixels overlap
    before[30:34, 30:34] = 2
    after[0:10, 20:40] = 4
    after[30:34, 36:40] = 6  # 6 px from object 2, no shared pixel
    objects_b, objects_a = frame_objects(before), frame_objects(after)
    pairs = frame_candidates(objects_b, objects_a, 8.0, object_overlaps(before, after))
    found = {(int(i), int(j)): (float(d), int(n)) for i, j, d, n in zip(*vars(pairs).values())}
    assert set(found) == {(0, 0), (1, 1)}
    assert found[(0, 0)] == (pytest.approx(15.0), 100)
    assert found[(1, 1)] == (pytest.approx(6.0), 0)
    distance_only = frame_candidates(objects_b, objects_a, 8.0)
    assert list(zip(distance_only.before.tolist(), distance_only.after.tolist())) == [(1, 1)]


# --- assignment -------------------------------------------------------------------------------------


def test_assign_matches_dense_augmented_problem(rng: np.random.Generator) -> None:
    for _ in range(5):
        n_rows, n_cols = rng.integers(1, 7, 2)
        dense = np.where(rng.random((n_rows, n_cols)) < 0.5, rng.random((n_rows, n_cols)) * 2, np.inf)
        rows, cols = np.nonzero(np.isfinite(dense))
        row_alt, col_alt = rng.random(n_rows) * 0.6 + 0.1, rng.random(n_cols) * 0.6 + 0.1
        r, c = assign(n_rows, n_cols, rows, cols, dense[rows, cols], row_alt, col_alt)
        total = dense[r, c].sum() + np.delete(row_alt, r).sum() + np.delete(col_alt, c).sum()
        # Brute force: the same choice as a dense square LSA with "stay unmatched" columns and rows.
        big = 1e6
        square = np.full((n_rows + n_cols, n_cols + n_rows), big)
        square[:n_rows, :n_cols] = np.where(np.isfinite(dense), dense, big)
        square[:n_rows, n_cols:] = np.where(np.eye(n_rows, dtype=bool), row_alt[:, None], big)
        square[n_rows:, :n_cols] = np.where(np.eye(n_cols, dtype=bool), col_alt[None, :], big)
        square[n_rows:, n_cols:] = np.where(np.isfinite(dense.T), 0.0, big)
        i, j = linear_sum_assignment(square)
        assert total == pytest.approx(square[i, j].sum())
        assert len(set(r.tolist())) == len(r) and len(set(c.tolist())) == len(c)


def test_link_frames_is_global_not_greedy() -> None:
    # b is closest to a' (5 px), but taking that pair leaves a with nothing within reach: the global
    # assignment links a->a' and b->b' (7 px each).
    def objects(points: list[tuple[float, float]]) -> FrameObjects:
        n = len(points)
        return FrameObjects(
            np.arange(1, n + 1), np.full(n, 50), np.array(points, float), np.zeros((n, 4), int)
        )

    before = objects([(10, 10), (10, 22)])
    after = objects([(10, 17), (10, 29)])
    links = link_frames(before, after, TrackingParams(max_distance=15))
    assert links.tolist() == [[0, 0], [1, 1]]
    # Beyond max_distance nothing links, and empty frames give no links.
    assert link_frames(before, after, TrackingParams(max_distance=4)).shape == (0, 2)
    assert link_frames(before, objects([]), TrackingParams()).shape == (0, 2)


# --- whole movies -----------------------------------------------------------------------------------


def test_straight_moving_objects_keep_one_label_each() -> None:
    paths = [
        {t: (12 + 0.5 * t, 10 + 4 * t, 5) for t in range(12)},
        {t: (32, 80 - 3 * t, 6) for t in range(12)},
        {t: (52 - t, 15 + 2 * t, 4) for t in range(12)},
    ]
    tracks = track_labels(draw(12, paths))
    check_ctc(tracks)
    assert rows_by_begin(tracks.table) == [[0, 11, -1]] * 3
    for path in paths:
        assert len({label_at(tracks, t, r, c) for t, (r, c, _) in path.items()}) == 1


def test_large_objects_link_through_overlap_beyond_max_distance() -> None:
    # A 20 px disc moves 14 px a frame with max_distance 10: the centroid test alone would cut the track
    # every frame, the IoU (about 0.4) keeps it.
    paths = [{t: (32, 22 + 14 * t, 20) for t in range(4)}]
    tracks = track_labels(draw(4, paths), TrackingParams(max_distance=10))
    check_ctc(tracks)
    assert tracks.table.tolist() == [[1, 0, 3, 0]]
    cut = track_labels(draw(4, paths), TrackingParams(max_distance=10, overlap_weight=0.0))
    assert len(cut.table) == 4


def test_crossing_objects_do_not_swap() -> None:
    # Two discs pass each other in opposite directions with 2 px between their edges; at the closest
    # frame the other disc's centre is nearer than some of the true steps would allow if swapped.
    paths = [
        {t: (26, 10 + 7 * t, 5) for t in range(12)},
        {t: (38, 87 - 7 * t, 5) for t in range(12)},
    ]
    tracks = track_labels(draw(12, paths, seed=1), TrackingParams(max_distance=15))
    check_ctc(tracks)
    assert len(tracks.table) == 2
    for path in paths:
        assert len({label_at(tracks, t, r, c) for t, (r, c, _) in path.items()}) == 1


def division_movie(seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    mother = {t: (32, 40 + t, 10) for t in range(5)}
    left = {t: (32 - 8 - (t - 5), 44, 7) for t in range(5, 10)}
    right = {t: (32 + 8 + (t - 5), 44, 7) for t in range(5, 10)}
    return draw(10, [mother, left, right], seed=seed), [mother, left, right]


def test_division_gives_parent_and_two_children() -> None:
    movie, (mother, left, right) = division_movie()
    tracks = track_labels(movie)
    check_ctc(tracks)
    assert rows_by_begin(tracks.table) == [[0, 4, -1], [5, 9, 0], [5, 9, 0]]
    parent = label_at(tracks, 0, *mother[0][:2])
    children = sorted([label_at(tracks, 5, *left[5][:2]), label_at(tracks, 5, *right[5][:2])])
    assert tracks.divisions == {parent: children}
    # Without division detection the mother simply continues as one daughter.
    plain = track_labels(movie, TrackingParams(divisions=False))
    check_ctc(plain)
    assert rows_by_begin(plain.table) == [[0, 9, -1], [5, 9, -1]]
    assert plain.divisions == {}


def test_division_needs_the_area_cue() -> None:
    # Same geometry, but the "daughters" are 1.65x the mother's area: a neighbour appearing, not a split.
    mother = {t: (32, 40 + t, 7) for t in range(5)}
    same = {t: (32 - 10, 44, 9) for t in range(5, 10)}
    other = {t: (32 + 10, 44, 9) for t in range(5, 10)}
    tracks = track_labels(draw(10, [mother, same, other]))
    check_ctc(tracks)
    assert tracks.divisions == {}
    assert all(parent == 0 for parent in tracks.table[:, 3])


def test_a_merged_pair_that_parts_is_no_division() -> None:
    # Two cells side by side; the segmentation merges them into one object in frame 5 (the "mother"
    # suddenly doubles in area), and they part in frame 6. The area cues alone would call it a division.
    top = {t: (24, 30 + t, 7) for t in range(10) if t != 5}
    bottom = {t: (39, 30 + t, 7) for t in range(10) if t != 5}
    merged = {5: (31.5, 35, 11)}
    movie = draw(10, [top, bottom, merged])
    tracks = track_labels(movie)
    check_ctc(tracks)
    assert tracks.divisions == {}
    assert track_labels(movie, TrackingParams(max_mother_growth=100.0)).divisions != {}


def test_a_division_needs_daughters_that_last() -> None:
    mother = {t: (32, 40 + t, 10) for t in range(5)}
    left = {t: (32 - 8 - (t - 5), 44, 7) for t in range(5, 10)}
    right = {t: (32 + 8, 44, 7) for t in range(5, 6)}  # gone after one frame, long before the end
    movie = draw(10, [mother, left, right])
    assert track_labels(movie).divisions == {}
    assert len(track_labels(movie, TrackingParams(min_daughter_frames=1)).divisions) == 1
    # a division in the last frames cannot show daughters that last: it is kept
    late = draw(7, [mother, left, {t: (32 + 8 + (t - 5), 44, 7) for t in range(5, 7)}])
    assert len(track_labels(late).divisions) == 1


def gap_movie(missing: range) -> np.ndarray:
    path = {t: (30, 10 + 3 * t, 5) for t in range(10) if t not in missing}
    other = {t: (10, 80 - 2 * t, 4) for t in range(10)}
    return draw(10, [path, other])


@pytest.mark.parametrize(
    ("missing", "max_gap", "closed"),
    [(range(3, 4), 1, True), (range(3, 4), 0, False), (range(3, 5), 1, False), (range(3, 5), 2, True)],
)
def test_gap_closing(missing: range, max_gap: int, closed: bool) -> None:
    tracks = track_labels(gap_movie(missing), TrackingParams(max_gap=max_gap))
    check_ctc(tracks)
    after = missing.stop
    expected = [[0, 9, -1], [0, missing.start - 1, -1], [after, 9, 0 if closed else -1]]
    assert rows_by_begin(tracks.table) == sorted(expected)
    assert tracks.divisions == {}


def test_objects_entering_and_leaving() -> None:
    paths = [
        {t: (20, 4 + 6 * t, 5) for t in range(0, 10) if 4 + 6 * t < SHAPE[1]},  # runs off the right edge
        {t: (45, 6 * (t - 4), 5) for t in range(4, 10)},  # enters on the left at frame 4
        {t: (30, 50, 6) for t in range(2, 7)},  # appears at 2, vanishes after 6
    ]
    movie = draw(20, paths)
    tracks = track_labels(movie)
    check_ctc(tracks)
    last_seen = max(t for t in range(20) if (movie[t, 15:26] > 0).any())
    assert rows_by_begin(tracks.table) == sorted([[0, last_seen, -1], [2, 6, -1], [4, 9, -1]])


def test_empty_frames_and_movies() -> None:
    path = {t: (30, 30 + t, 6) for t in (0, 1, 4, 5)}
    movie = draw(6, [path])  # frames 2 and 3 are empty
    tracks = track_labels(movie, TrackingParams(max_gap=2))
    check_ctc(tracks)
    assert rows_by_begin(tracks.table) == [[0, 1, -1], [4, 5, 0]]
    assert rows_by_begin(track_labels(movie, TrackingParams(max_gap=1)).table) == [[0, 1, -1], [4, 5, -1]]
    nothing = track_labels(np.zeros((3, 8, 8), np.uint16))
    assert nothing.table.shape == (0, 4) and nothing.masks.dtype == np.int32 and not nothing.masks.any()
    assert track_labels(np.zeros((0, 8, 8), np.int32)).table.shape == (0, 4)
    single = track_labels(movie[:1])
    assert single.table.tolist() == [[1, 0, 0, 0]]


def test_min_track_length_drops_short_orphans_only() -> None:
    movie, _ = division_movie()
    movie[7][disk((5, 5), 3, shape=SHAPE)] = 99  # a one-frame false positive
    assert len(track_labels(movie).table) == 4
    tracks = track_labels(movie, TrackingParams(min_track_length=6))
    check_ctc(tracks)
    # The 5-frame mother and daughters stay (they have a parent or children); the blip goes.
    assert rows_by_begin(tracks.table) == [[0, 4, -1], [5, 9, 0], [5, 9, 0]]
    assert tracks.masks[7, 5, 5] == 0


def test_input_validation() -> None:
    with pytest.raises(DataError, match="shape"):
        track_labels(np.zeros((8, 8), np.int32))
    with pytest.raises(DataError, match="integer"):
        track_labels(np.zeros((2, 8, 8), np.float32))
    movie = np.zeros((2, 8, 8), np.int32)
    movie[1, 0, 0] = -3
    with pytest.raises(DataError, match="frame 1"):
        track_labels(movie)


def test_params_json_roundtrip_and_validation() -> None:
    params = TrackingParams(max_distance=12.5, max_gap=3, divisions=False)
    assert TrackingParams(**json.loads(json.dumps(asdict(params)))) == params
    assert TrackingParams.from_dict(params.to_dict()) == params
    with pytest.raises(ConfigError, match="max_distance"):
        TrackingParams(max_distance=0)
    with pytest.raises(ConfigError, match="max_gap"):
        TrackingParams(max_gap=-1)
    with pytest.raises(ConfigError, match="unknown"):
        TrackingParams.from_dict({"max_dist": 3})
    # YAML/JSON numbers are stored with the declared types; wrong kinds are refused.
    coerced = TrackingParams(max_distance=20, max_gap=2.0)
    assert type(coerced.max_distance) is float and type(coerced.max_gap) is int
    for bad in ({"max_gap": 1.5}, {"divisions": "yes"}, {"max_distance": "20"}, {"max_gap": True}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrackingParams(**bad)


# --- building tracks from links ---------------------------------------------------------------------


def test_link_segments_reports_gaps_and_divisions_by_frame_and_index() -> None:
    movie, _ = division_movie()
    movie = np.concatenate([movie, movie[9:]])  # frame 10 repeats frame 9
    movie[8] = 0  # both daughters vanish for one frame
    params = TrackingParams()
    objects = [frame_objects(frame) for frame in movie]
    candidates = [
        frame_candidates(a, b, params.max_distance, object_overlaps(ma, mb))
        for a, b, ma, mb in zip(objects[:-1], objects[1:], movie[:-1], movie[1:])
    ]
    links = [
        link_frames(a, b, params, candidates=c) for a, b, c in zip(objects[:-1], objects[1:], candidates)
    ]
    gaps, divisions = link_segments(objects, links, params, candidates=candidates)
    assert sorted(gaps[:, [0, 2]].tolist()) == [[7, 9], [7, 9]]
    assert divisions[:, [0, 2]].tolist() == [[4, 5]]
    assert divisions[0, 1] == 0  # the mother is the only object of frame 4


def test_build_tracks_from_links_and_errors() -> None:
    movie, _ = division_movie()
    label = {t: np.unique(movie[t])[1:].tolist() for t in range(10)}
    links = [[t, label[t][0], t + 1, label[t + 1][0]] for t in range(4)]
    links += [[4, label[4][0], 5, child] for child in label[5]]
    links += [[t, lab, t + 1, nxt] for t in range(5, 9) for lab, nxt in zip(label[t], label[t + 1])]
    tracks = build_tracks(movie, links)
    check_ctc(tracks)
    assert rows_by_begin(tracks.table) == [[0, 4, -1], [5, 9, 0], [5, 9, 0]]
    reference = track_labels(movie)
    assert np.array_equal(tracks.table, reference.table) and np.array_equal(tracks.masks, reference.masks)
    with pytest.raises(DataError, match="cannot merge"):
        build_tracks(movie, [[5, label[5][0], 6, label[6][0]], [5, label[5][1], 6, label[6][0]]])
    with pytest.raises(DataError, match="not in masks"):
        build_tracks(movie, [[0, 12345, 1, label[1][0]]])
    with pytest.raises(DataError, match="forward"):
        build_tracks(movie, [[3, label[3][0], 2, label[2][0]]])


@pytest.fixture(scope="module")
def ctc_tra():
    """TRA by py-ctcmetrics' own AOGM code, with its ">50 % of the reference" matching done in memory.
    (A fixture: importing py-ctcmetrics pulls in scikit-learn and pandas, about 2 s, paid once.)"""
    pytest.importorskip("ctc_metrics")
    from ctc_metrics.metrics import tra
    from ctc_metrics.utils.representations import count_acyclic_graph_correction_operations

    def score(gt: Tracks, result: Tracks) -> float:
        labels_ref, labels_comp, mapped_ref, mapped_comp = [], [], [], []
        for ref, comp in zip(gt.masks, result.masks):
            ref_ids, comp_ids = np.unique(ref)[1:], np.unique(comp)[1:]
            labels_ref.append(ref_ids.tolist())
            labels_comp.append(comp_ids.tolist())
            pairs = [
                (int(r), int(c))
                for r in ref_ids
                for c in comp_ids
                if ((ref == r) & (comp == c)).sum() > 0.5 * (ref == r).sum()
            ]
            mapped_ref.append([r for r, _ in pairs])
            mapped_comp.append([c for _, c in pairs])
        operations = count_acyclic_graph_correction_operations(
            gt.table, result.table, labels_ref, labels_comp, mapped_ref, mapped_comp
        )
        return tra(**operations)[0]

    return score


def test_tracking_a_division_and_a_gap_scores_tra_one_with_py_ctcmetrics(ctc_tra) -> None:
    mother = {t: (32, 40 + t, 10) for t in range(5)}
    left = {t: (32 - 8 - (t - 5), 44, 7) for t in range(5, 10)}
    right = {t: (32 + 8 + (t - 5), 44, 7) for t in range(5, 10)}
    gappy = {t: (10, 10 + 2 * t, 4) for t in range(10) if t != 4}
    discs = [mother, left, right, gappy]
    movie, labels = draw(10, discs, seed=5), disc_labels(10, 4, seed=5)
    # The ground truth in CTC form, from the known identities: consecutive appearances of a disc are
    # linked (across the gap too), and the mother links to both daughters.
    links = [
        [t, labels[t, k], u, labels[u, k]]
        for k, path in enumerate(discs)
        for t, u in zip(sorted(path)[:-1], sorted(path)[1:])
    ]
    links += [[4, labels[4, 0], 5, labels[5, k]] for k in (1, 2)]
    gt = build_tracks(movie, links)
    assert rows_by_begin(gt.table) == [[0, 3, -1], [0, 4, -1], [5, 9, 0], [5, 9, 0], [5, 9, 0]]
    result = track_labels(movie)
    check_ctc(result)
    assert ctc_tra(gt, result) == pytest.approx(1.0)
    worse = track_labels(movie, TrackingParams(max_gap=0, divisions=False))
    assert ctc_tra(gt, worse) < 0.99
