"""Tests for medseg.metrics.tracking: hand-computed AOGM cases (missed object, false positive, merge, missed
division, wrong parent, ID switch, late division), validity checks, and a cross-check of DET, SEG, TRA,
the AOGM counts and BC(i) against py-ctcmetrics on simulated movies written in the CTC folder layout."""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import DataError
from medseg.metrics import tracking
from medseg.metrics.tracking import match_detections, tracking_metrics

# ---------------------------------------------------------------- tiny hand-made movies


def paint(*frames: dict[int, int | tuple[int, ...]], slots: int = 4) -> np.ndarray:
    """A (T, 3, 4 * slots) movie, one dict {label: slot or slots} per frame; slot k is the 3x3 square at
    columns 4k..4k+2 (a label given several slots is one object made of several squares)."""
    movie = np.zeros((len(frames), 3, 4 * slots), dtype=np.int32)
    for t, objects in enumerate(frames):
        for label, where in objects.items():
            for slot in (where,) if isinstance(where, int) else where:
                movie[t, :, 4 * slot : 4 * slot + 3] = label
    return movie


def table_of(movie: np.ndarray, parents: dict[int, int] | None = None) -> np.ndarray:
    """The CTC track table of a movie whose labels are each present in consecutive frames."""
    parents = parents or {}
    rows = []
    for label in np.unique(movie[movie > 0]):
        frames = np.flatnonzero((movie == label).any(axis=tuple(range(1, movie.ndim))))
        rows.append((label, frames[0], frames[-1], parents.get(int(label), 0)))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def two_tracks(n_frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
    gt = paint(*[{1: 0, 2: 1}] * n_frames)
    return gt, table_of(gt)


def division(parent_frames: int = 2, child_frames: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Track 1 in slot 0 divides into 2 (slot 0) and 3 (slot 1)."""
    gt = paint(*[{1: 0}] * parent_frames, *[{2: 0, 3: 1}] * child_frames)
    return gt, table_of(gt, {2: 1, 3: 1})


# ---------------------------------------------------------------- py-ctcmetrics as the reference


@pytest.fixture(scope="module")
def ctc_evaluate():
    return pytest.importorskip("ctc_metrics.scripts.evaluate").evaluate_sequence


def write_table(path: Path, table: np.ndarray) -> None:
    path.write_text("".join(" ".join(str(int(v)) for v in row) + "\n" for row in table))


def reference(
    evaluate,
    folder: Path,
    gt: np.ndarray,
    gt_table: np.ndarray,
    res: np.ndarray,
    res_table: np.ndarray,
    gt_seg: dict[int, np.ndarray] | None = None,
) -> dict:
    """py-ctcmetrics' scores of a sequence written as RES/ + GT/TRA/ + GT/SEG/ (single process)."""
    tifffile = pytest.importorskip("tifffile")
    (folder / "RES").mkdir(parents=True)
    (folder / "GT" / "TRA").mkdir(parents=True)
    (folder / "GT" / "SEG").mkdir(parents=True)
    for t in range(len(gt)):
        tifffile.imwrite(folder / "RES" / f"mask{t:03d}.tif", res[t].astype(np.uint16))
        tifffile.imwrite(folder / "GT" / "TRA" / f"man_track{t:03d}.tif", gt[t].astype(np.uint16))
    for t, frame in (gt_seg if gt_seg is not None else dict(enumerate(gt))).items():
        tifffile.imwrite(folder / "GT" / "SEG" / f"man_seg{t:03d}.tif", frame.astype(np.uint16))
    write_table(folder / "RES" / "res_track.txt", res_table)
    write_table(folder / "GT" / "TRA" / "man_track.txt", gt_table)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return evaluate(
            str(folder / "RES"),
            str(folder / "GT"),
            metrics=["Valid", "DET", "SEG", "TRA", "BC(0)"],
            threads=1,
        )


def assert_same_as_reference(scores, ref: dict, tolerance: int = 0) -> None:
    assert ref["Valid"] == 1
    assert scores.det == pytest.approx(ref["DET"], abs=1e-6)
    assert scores.seg == pytest.approx(ref["SEG"], abs=1e-6)
    assert scores.tra == pytest.approx(ref["TRA"], abs=1e-6)
    assert scores.aogm == pytest.approx(ref["AOGM"])
    assert scores.aogm_0 == pytest.approx(ref["AOGM_0"])
    for name in ("ns", "fn", "fp", "ed", "ea", "ec"):
        assert getattr(scores, name) == ref[f"AOGM_{name.upper()}"], name
    bc = ref[f"BC({tolerance})"]
    if bc is None:  # no GT division
        assert scores.divisions_true == 0
    else:
        assert scores.division_f1 == pytest.approx(bc, abs=1e-6)
        assert scores.divisions_matched == ref[f"tp_div({tolerance})"]


# ---------------------------------------------------------------- detection test


def test_match_detections_by_half_coverage():
    gt = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 3, 0, 4, 4, 4]])
    res = np.array([[5, 5, 5, 0, 0, 6, 6, 6, 6, 0, 0, 7, 7, 0]])
    m = match_detections(gt, res)
    assert m.gt_labels.tolist() == [1, 2, 3, 4]
    assert m.res_labels.tolist() == [5, 6, 7]
    # 5 covers 3/4 of 1; 6 covers all of 2 and exactly half of 3 (not more: no match); 7 covers 2/3 of 4
    assert m.gt_to_res.tolist() == [0, 1, -1, 2]
    assert m.iou == pytest.approx([3 / 4, 2 / 4, 0.0, 2 / 3])
    assert m.res_match_count.tolist() == [1, 1, 1]
    merged = match_detections(np.array([[1, 1, 2, 2, 0]]), np.array([[9, 9, 9, 9, 9]]))
    assert merged.gt_to_res.tolist() == [0, 0]
    assert merged.res_match_count.tolist() == [2]


def test_doctests():
    assert doctest.testmod(tracking).failed == 0


# ---------------------------------------------------------------- hand-computed AOGM


def test_perfect_result_scores_one_with_any_labels():
    gt, gt_table = division(2, 3)
    lut = np.array([0, 40, 7, 12])
    scores = tracking_metrics(gt, gt_table, lut[gt], table_of(lut[gt], {7: 40, 12: 40}))
    assert (scores.det, scores.seg, scores.tra) == (1.0, 1.0, 1.0)
    assert scores.aogm == 0 and scores.aogm_0 == 10 * 8 + 1.5 * 7
    assert (scores.gt_nodes, scores.gt_edges) == (8, 7)
    assert (scores.divisions_true, scores.divisions_matched, scores.division_f1) == (1, 1, 1.0)
    assert scores.id_switches == 0


@pytest.mark.parametrize("bridge", [False, True])
def test_missed_object(bridge, ctc_evaluate, tmp_path):
    gt, gt_table = two_tracks()
    res = paint({1: 0, 2: 1}, {1: 0}, {1: 0, 3: 1})  # track 2 missed in frame 1, then continued as 3
    res_table = table_of(res, {3: 2} if bridge else {})
    scores = tracking_metrics(gt, gt_table, res, res_table)
    # FN 10 + two GT track links to add (1.5 each); a gap-bridging parent link 2@0 -> 3@2 has no GT edge
    assert (scores.fn, scores.ea, scores.ed) == (1, 2, int(bridge))
    assert scores.aogm == 13 + bridge
    assert scores.det == pytest.approx(1 - 10 / 60)
    assert scores.tra == pytest.approx(1 - (13 + bridge) / 66)
    assert scores.id_switches == 1
    assert_same_as_reference(scores, reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table))


def test_false_positive(ctc_evaluate, tmp_path):
    gt, gt_table = two_tracks()
    res = gt.copy()
    res[1, :, 8:11] = 9
    res_table = table_of(res)
    scores = tracking_metrics(gt, gt_table, res, res_table)
    assert (scores.fp, scores.fn, scores.ns, scores.aogm) == (1, 0, 0, 1)
    assert scores.det == pytest.approx(1 - 1 / 60)
    assert scores.tra == pytest.approx(1 - 1 / 66)
    assert scores.res_nodes == 7
    assert_same_as_reference(scores, reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table))


def test_merge_is_a_non_split(ctc_evaluate, tmp_path):
    gt, gt_table = two_tracks()
    res = paint({1: 0, 2: 1}, {1: (0, 1)}, {1: 0, 3: 1})  # 1 covers both cells in frame 1
    res_table = table_of(res)
    scores = tracking_metrics(gt, gt_table, res, res_table)
    # NS 5; the merged node matches two GT nodes, so its edges leave the comparison: all 4 GT edges missing
    assert (scores.ns, scores.fn, scores.fp, scores.ea, scores.ed) == (1, 0, 0, 4, 0)
    assert scores.aogm == 5 + 4 * 1.5
    assert scores.det == pytest.approx(1 - 5 / 60)
    assert scores.seg == pytest.approx((4 + 0.5 + 0.5) / 6)  # the merged object has IoU 9/18 with each
    assert scores.id_switches == 1  # GT 2 is followed by result 2, then 3; the merged frame is skipped
    assert_same_as_reference(scores, reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table))


def test_missed_division_changes_an_edge_semantic(ctc_evaluate, tmp_path):
    gt, gt_table = division()
    res = paint({1: 0}, {1: 0}, {1: 0, 3: 1}, {1: 0, 3: 1})  # 1 runs on through child 2; 3 has no parent
    res_table = table_of(res)
    scores = tracking_metrics(gt, gt_table, res, res_table)
    # 1@1 -> 1@2 is a track link where the GT has the parent link 1 -> 2 (EC); 1 -> 3 is missing (EA)
    assert (scores.ec, scores.ea, scores.ed, scores.fn, scores.fp) == (1, 1, 0, 0, 0)
    assert scores.aogm == 2.5 and scores.aogm_0 == 60 + 1.5 * 5
    assert scores.det == 1.0
    assert (scores.divisions_true, scores.divisions_predicted, scores.divisions_matched) == (1, 0, 0)
    assert scores.division_recall == 0.0 and scores.division_f1 == 0.0
    assert math.isnan(scores.division_precision)
    assert scores.id_switches == 0
    assert_same_as_reference(scores, reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table))


def test_wrong_parent(ctc_evaluate, tmp_path):
    gt = paint({1: 0, 4: 2}, {1: 0, 4: 2}, {2: 0, 3: 1}, {2: 0, 3: 1})
    gt_table = table_of(gt, {2: 1, 3: 1})
    res_table = table_of(gt, {2: 1, 3: 4})  # child 3 linked to track 4, which ended beside it
    scores = tracking_metrics(gt, gt_table, gt, res_table)
    assert (scores.ed, scores.ea, scores.ec) == (1, 1, 0)
    assert scores.aogm == 2.5 and scores.aogm_0 == 80 + 1.5 * 6
    assert (scores.divisions_true, scores.divisions_predicted) == (1, 0)
    assert_same_as_reference(scores, reference(ctc_evaluate, tmp_path, gt, gt_table, gt, res_table))


@pytest.mark.parametrize("linked", [False, True])
def test_id_switch(linked, ctc_evaluate, tmp_path):
    gt = paint(*[{1: 0}] * 4)
    gt_table = table_of(gt)
    res = paint({1: 0}, {1: 0}, {2: 0}, {2: 0})
    res_table = table_of(res, {2: 1} if linked else {})
    scores = tracking_metrics(gt, gt_table, res, res_table)
    # unlinked: the track link 1@1 -> 1@2 is missing (EA); linked: it is a parent link instead (EC)
    assert (scores.ea, scores.ec, scores.aogm) == ((0, 1, 1.0) if linked else (1, 0, 1.5))
    assert scores.id_switches == 1
    assert_same_as_reference(scores, reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table))


@pytest.mark.parametrize("tolerance", [0, 1])
def test_late_division_within_tolerance(tolerance, ctc_evaluate, tmp_path):
    gt, gt_table = division(2, 3)
    # the result divides one frame late and misses child 3 in the frame it is born
    res = paint({1: 0}, {1: 0}, {1: 0}, {2: 0, 3: 1}, {2: 0, 3: 1})
    res_table = table_of(res, {2: 1, 3: 1})
    scores = tracking_metrics(gt, gt_table, res, res_table, division_tolerance=tolerance)
    # FN 3@2; EC for 1@1 -> 1@2 (GT parent link) and 1@2 -> 2@3 (GT track link); ED for 1@2 -> 3@3 (maps
    # to GT 2@2 -> 3@3); EA for 1@1 -> 3@2 and 3@2 -> 3@3
    assert (scores.fn, scores.ec, scores.ed, scores.ea) == (1, 2, 1, 2)
    assert scores.aogm == 10 + 2 + 1 + 3
    assert scores.divisions_matched == tolerance
    assert scores.division_f1 == float(tolerance)
    assert scores.id_switches == 1 - tolerance  # GT 2 goes from result 1 to result 2: explained if matched
    ref = reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table)
    assert_same_as_reference(scores, ref, tolerance)


@pytest.mark.parametrize("tolerance", [1, 2])
def test_division_parent_ends_must_be_within_tolerance(tolerance, ctc_evaluate, tmp_path):
    # GT parent 1 ends in frame 1 and its children appear after a gap, in frame 4; the result's parent
    # runs on through the gap (two false positives) to end in frame 3, two frames late
    gt = paint({1: 0}, {1: 0}, {}, {}, {2: 0, 3: 1}, {2: 0, 3: 1})
    gt_table = table_of(gt, {2: 1, 3: 1})
    res = paint({1: 0}, {1: 0}, {1: 0}, {1: 0}, {2: 0, 3: 1}, {2: 0, 3: 1})
    res_table = table_of(res, {2: 1, 3: 1})
    scores = tracking_metrics(gt, gt_table, res, res_table, division_tolerance=tolerance)
    assert scores.fp == 2
    assert scores.divisions_matched == (tolerance == 2)
    ref = reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table)
    assert_same_as_reference(scores, ref, tolerance)


def test_seg_scores_only_the_annotated_frames(ctc_evaluate, tmp_path):
    gt, gt_table = two_tracks()
    res = gt.copy()
    res[1, :2, 5:7] = 0  # result 2 keeps 5 of 9 pixels in frame 1: still a match for TRA, IoU 5/9
    seg_1 = gt[1].copy()
    seg_1[:, 4:7] = 0
    seg_1[2, 4:7] = seg_1[1, 4] = 2  # SEG object 2 is 4 pixels, all covered by result 2 (area 5): IoU 4/5
    seg_2 = gt[2].copy()
    seg_2[:, 8:11] = 5  # a SEG object the TRA movie lacks, never matched: scores 0
    gt_seg = {1: seg_1, 2: seg_2}
    scores = tracking_metrics(gt, gt_table, res, table_of(res), gt_seg=gt_seg)
    assert scores.seg_objects == 5
    assert scores.seg == pytest.approx((1 + 4 / 5 + 1 + 1 + 0) / 5)
    assert tracking_metrics(gt, gt_table, res, table_of(res)).seg == pytest.approx((5 + 5 / 9) / 6)
    ref = reference(ctc_evaluate, tmp_path, gt, gt_table, res, table_of(res), gt_seg)
    assert_same_as_reference(scores, ref)


def test_volumes_score_like_images():
    gt, gt_table = division()
    res = paint({1: 0}, {1: 0}, {1: 0, 3: 1}, {1: 0, 3: 1})
    flat = tracking_metrics(gt, gt_table, res, table_of(res))
    volume = tracking_metrics(gt[:, None], gt_table, res[:, None], table_of(res))
    np.testing.assert_equal(volume.as_dict(), flat.as_dict())


def test_empty_ground_truth_is_nan_and_as_dict_is_json_ready():
    gt = np.zeros((2, 3, 8), dtype=np.int32)
    res = paint({1: 0}, {1: 0}, slots=2)
    scores = tracking_metrics(gt, np.zeros((0, 4), np.int64), res, table_of(res))
    assert math.isnan(scores.det) and math.isnan(scores.tra) and math.isnan(scores.seg)
    assert (scores.fp, scores.gt_nodes, scores.res_edges) == (2, 0, 1)
    as_dict = scores.as_dict()
    assert {"det", "seg", "tra", "aogm", "aogm_0", "ns", "fn", "fp", "ed", "ea", "ec"} <= set(as_dict)
    assert {"divisions_true", "divisions_predicted", "division_f1", "id_switches"} <= set(as_dict)
    json.dumps(as_dict)


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda table: table[table[:, 0] != 2], "label 2 is in frame 0 but not in the track table"),
        (lambda table: table + [[0, 0, -1, 0]] * (table[:, 0:1] == 1), "outside its track's frames 0-1"),
        (lambda table: table + [[0, 0, 0, 9]] * (table[:, 0:1] == 2), "parent 9, which is not in the table"),
        (lambda table: table + [[0, 0, 0, 1]] * (table[:, 0:1] == 2), "a parent must end before"),
        (lambda table: np.vstack([table, table[:1]]), "repeats a label"),
        (lambda table: table[:, :3], "(N, 4) integer array"),
    ],
)
def test_invalid_result_is_refused(edit, message):
    gt, gt_table = two_tracks()
    res_table = edit(table_of(gt))
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tracking_metrics(gt, gt_table, gt, res_table)


def test_result_label_missing_inside_its_track_is_refused():
    gt, gt_table = two_tracks()
    res = gt.copy()
    res[1][res[1] == 2] = 0
    with pytest.raises(
        DataError, match="result: label 2 is missing from frame 1 although its track spans 0-2"
    ):
        tracking_metrics(gt, gt_table, res, table_of(gt))


def test_ground_truth_needs_only_its_parent_links():
    gt, gt_table = two_tracks()
    gt_holey = gt.copy()
    gt_holey[1][gt_holey[1] == 2] = 0  # GT track 2 unannotated in frame 1: fine, one node fewer
    scores = tracking_metrics(gt_holey, gt_table, gt, table_of(gt))
    assert (scores.gt_nodes, scores.fp) == (5, 1)
    parent, parent_table = division()
    parent[1][parent[1] == 1] = 0  # the parent's end node is missing: its parent links cannot be built
    with pytest.raises(DataError, match="parent's label 1 is not in frame 1"):
        tracking_metrics(parent, parent_table, parent, parent_table)
    with pytest.raises(DataError, match="shape"):
        tracking_metrics(gt, gt_table, gt[:2], table_of(gt[:2]))
    with pytest.raises(ValueError, match="division_tolerance"):
        tracking_metrics(gt, gt_table, gt, gt_table, division_tolerance=-1)


# ---------------------------------------------------------------- simulated movies vs py-ctcmetrics


def simulate_lineages(rng: np.random.Generator, n_frames: int = 8, grid: int = 4):
    """Cells on a ``grid x grid`` board of slots that divide into a free slot, leave, appear, and vanish
    for one frame to come back as a child track (the CTC gap convention).

    Returns one {label: slot} dict per frame and the {child: parent} links.
    """
    slots: dict[int, int] = {}  # slot -> label
    frames, parents, next_label = [], {}, 1
    hidden: dict[int, int] = {}  # slot -> label that vanished in this frame
    for t in range(n_frames):
        if t == 0:
            for slot in rng.choice(grid * grid, size=6, replace=False):
                slots[int(slot)], next_label = next_label, next_label + 1
        else:
            returning, hidden = hidden, {}
            for slot, label in list(slots.items()):
                fate = rng.random()
                free = [
                    s for s in range(grid * grid) if s not in slots and s not in returning and s not in hidden
                ]
                if fate < 0.2 and free:
                    other = int(rng.choice(free))
                    slots[slot], slots[other] = next_label, next_label + 1
                    parents[next_label] = parents[next_label + 1] = label
                    next_label += 2
                elif fate < 0.25:
                    del slots[slot]
                elif fate < 0.32:
                    hidden[slot] = label
                    del slots[slot]
            for slot, label in returning.items():
                slots[slot], parents[next_label] = next_label, label
                next_label += 1
            free = [s for s in range(grid * grid) if s not in slots and s not in hidden]
            if free and rng.random() < 0.5:
                slots[int(rng.choice(free))], next_label = next_label, next_label + 1
        frames.append({label: slot for slot, label in slots.items()})
    return frames, parents


def draw(frames: list[dict[int, int]], rng: np.random.Generator, grid: int = 4, cell: int = 16) -> np.ndarray:
    """Paint each {label: slot} frame as discs of radius 3.5-5.5 jittered around the slot centres."""
    movie = np.zeros((len(frames), grid * cell, grid * cell), dtype=np.int32)
    yy, xx = np.mgrid[: grid * cell, : grid * cell]
    radius = {}
    for t, objects in enumerate(frames):
        for label, slot in objects.items():
            r = radius.setdefault(label, rng.uniform(3.5, 5.5))
            cy, cx = (np.array(divmod(slot, grid)) + 0.5) * cell + rng.uniform(-1.5, 1.5, 2)
            movie[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label
    return movie


def tracks_from_movie(movie: np.ndarray, parents: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A valid CTC result: every label cut into runs of consecutive frames (later runs become new labels
    linked to the run before); a parent link is kept where the parent's last run ends before the child
    begins."""
    present = [set(np.unique(frame[frame > 0]).tolist()) for frame in movie]
    out, rows, next_label = np.zeros_like(movie), [], int(movie.max()) + 1
    run_of: dict[int, list[tuple[int, int, int]]] = {}  # label -> [(new label, begin, end)]
    for label in sorted(set().union(*present)):
        frames = [t for t, labels in enumerate(present) if label in labels]
        starts = [f for i, f in enumerate(frames) if i == 0 or frames[i - 1] != f - 1]
        for k, begin in enumerate(starts):
            end = begin
            while end + 1 in frames:
                end += 1
            new = label if k == 0 else next_label
            next_label += k > 0
            run_of.setdefault(label, []).append((new, begin, end))
            for t in range(begin, end + 1):
                out[t][movie[t] == label] = new
    for label, runs in run_of.items():
        for k, (new, begin, end) in enumerate(runs):
            parent = runs[k - 1][0] if k > 0 else 0
            if k == 0 and label in parents and parents[label] in run_of:
                before = [r for r in run_of[parents[label]] if r[2] < begin]
                parent = before[-1][0] if before else 0
            rows.append((new, begin, end, parent))
    return out, np.array(sorted(rows), dtype=np.int64).reshape(-1, 4)


def corrupt(frames: list[dict[int, int]], parents: dict[int, int], rng: np.random.Generator):
    """A tracker's output: dropped detections, merges, ID switches, missed divisions, broken links."""
    res_frames, res_parents, rename, next_label = [], {}, {}, 1000
    for objects in frames:
        out: dict[int, int | tuple[int, ...]] = {}
        for label, slot in objects.items():
            if rng.random() < 0.04:
                rename[label] = next_label  # ID switch from here on
                next_label += 1
            if label in parents and rng.random() < 0.2:
                rename[label] = rename.get(parents[label], parents[label])  # missed division / link
            new = rename.get(label, label)
            if rng.random() < 0.05 or new in out:
                continue  # missed detection
            out[new] = slot
        if out and rng.random() < 0.3:  # a merge: one label painted on two cells
            a, b = rng.choice(list(out), size=2, replace=len(out) < 2)
            if a != b:
                out[a] = (out[a], out.pop(b))
        res_frames.append(out)
    for label, parent in parents.items():
        if rng.random() < 0.85:
            res_parents[rename.get(label, label)] = rename.get(parent, parent)
    return res_frames, res_parents


def draw_result(res_frames, gt_movie, gt_frames, rng):
    """Paint the result from the GT discs (shifted by up to one pixel), plus a few false blobs."""
    movie = np.zeros_like(gt_movie)
    for t, objects in enumerate(res_frames):
        slot_label = {slot: label for label, slot in gt_frames[t].items()}
        shifted = np.roll(gt_movie[t], tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
        for label, where in objects.items():
            for slot in (where,) if isinstance(where, int) else where:
                movie[t][shifted == slot_label[slot]] = label
        if rng.random() < 0.5:
            y, x = rng.integers(0, movie.shape[1] - 3, 2)
            movie[t, y : y + 3, x : x + 3] = 2000 + t
    return movie


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_py_ctcmetrics_on_simulated_movies(seed, ctc_evaluate, tmp_path):
    rng = np.random.default_rng(seed)
    gt_frames, gt_parents = simulate_lineages(rng)
    gt, gt_table = tracks_from_movie(draw(gt_frames, rng), gt_parents)
    assert np.count_nonzero(gt_table[:, 3]) == len(gt_parents)  # the GT kept every link
    res_frames, res_parents = corrupt(gt_frames, gt_parents, rng)
    res, res_table = tracks_from_movie(draw_result(res_frames, gt, gt_frames, rng), res_parents)
    # SEG annotated on three frames, without every third track
    gt_seg = {t: np.where(np.isin(gt[t], gt_table[::3, 0]), 0, gt[t]) for t in (0, 3, 5)}
    ref = reference(ctc_evaluate, tmp_path, gt, gt_table, res, res_table, gt_seg)
    for tolerance in (0, 1, 2):
        scores = tracking_metrics(gt, gt_table, res, res_table, gt_seg=gt_seg, division_tolerance=tolerance)
        assert_same_as_reference(scores, ref, tolerance)
    assert 0 < scores.tra < 1 and scores.divisions_true > 0
