"""Cell Tracking Challenge tracking metrics: DET, SEG, TRA (AOGM), division scores and ID switches.

Definitions follow Matula et al. 2015 ("Cell tracking accuracy measurement based on comparison of acyclic
oriented graphs") and Ulman et al. 2017, detail for detail as py-ctcmetrics 1.3 computes them (the tests
check DET, SEG and TRA against it to 1e-6). NumPy/SciPy only. Each frame costs one sparse overlap table
(:func:`medseg.metrics.instance.overlap_table`, one pass over the pixels); everything after that works on
node and edge arrays, with no per-object masks.

Inputs: a *label movie* is a (T, H, W) (or (T, D, H, W)) integer array, pixel value = track label, 0 =
background; a *track table* is an (N, 4) integer array of CTC rows ``(label, begin, end, parent)``.

- Nodes: every (frame, label) present in a movie. Detection test, per frame: a result object matches a
  GT object when it covers more than half of the GT object's pixels (so a GT object matches at most one
  result object). A GT object matched by nothing is a false negative (FN); a result object matching no
  GT object is a false positive (FP); a result object matching k >= 2 GT objects needs k - 1 splits (NS).
- Edges: track links join the same label in consecutive frames (taken from the movie, as
  py-ctcmetrics does); parent links join a parent's node at its end frame to each child's node at its
  begin frame (from the table). Only result nodes matching exactly one GT object take part in the edge
  comparison (the induced subgraph of the paper): a result edge between two such nodes that has no GT
  counterpart is to be deleted (ED); a GT edge without a result counterpart is to be added (EA, also when
  its nodes were missed); a counterpart of the other kind (track link vs parent link) is EC.
- AOGM = 5 NS + 10 FN + 1 FP + 1 ED + 1.5 EA + 1 EC; AOGM_0 = 10 #GT nodes + 1.5 #GT edges (building the
  GT graph from nothing); TRA = 1 - min(AOGM, AOGM_0) / AOGM_0. DET uses the detection part alone:
  AOGM-D = 5 NS + 10 FN + FP, AOGM-D_0 = 10 #GT nodes.
- SEG = sum of the IoUs of the GT SEG objects with the result object matching them (the same "more than
  half" test), divided by the number of GT SEG objects: an unmatched object scores 0. ``gt_seg`` holds the
  annotated frames (CTC often annotates only some); without it the GT movie's frames are used.
- With no GT nodes (or no GT SEG objects) the score is NaN, not 1 or 0 (py-ctcmetrics divides by zero for
  DET and TRA and reports 0 for SEG).
- Validity: the result must be a valid CTC result, as py-ctcmetrics requires before it scores anything
  (unique labels, each label present in every frame from its begin to its end and nowhere else, parents in
  the table and ending before their children begin); otherwise :class:`~medseg.errors.DataError`. The GT
  needs only a sane table whose parent links end on nodes of the movie.
- Divisions: a division is a track with >= 2 children. A GT division and a result division match when
  they have the same number of children, their parents end within ``division_tolerance`` frames of each
  other, the GT parent matches the result parent at the earlier of the two end frames, and the children
  can be paired one to one so that each pair begins within the tolerance and the GT child matches its
  result child at the later of the two begin frames ("matches" here means uniquely: the result object
  matches no other GT object). Matching pairs are then made one to one (maximum bipartite matching);
  precision, recall and F1 count those pairs. ``division_f1`` equals py-ctcmetrics' BC(i) at
  i = ``division_tolerance`` whenever the GT has a division: both use the same test, and for tp > 0
  2PR / (P + R) = 2tp / (2tp + fp + fn), for tp = 0 both are 0. They can only differ in contrived
  cases with i > 0: py-ctcmetrics counts every matching (GT, result) pair as a true positive, so one
  result division can count twice (and its fp go negative), and it pairs children greedily. With no GT
  division BC(i) is None; ``division_recall`` is NaN here and ``division_f1`` is 0 if the result
  divides, NaN if it does not.
- ID switches (CLEAR-MOT style): along each GT track, the result label uniquely matching it in a frame is
  compared with the one at its previous uniquely matched frame (frames where it is missed or merged are
  skipped); each change counts, unless it goes from the parent to a child of a result division matched
  to the GT division that this track starts or ends (a division detected a frame early or late). A track
  continued under a new GT label (a gap) is a different GT track, so no switch is counted across it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import maximum_bipartite_matching

from medseg.errors import DataError
from medseg.metrics.instance import overlap_table

AOGM_WEIGHTS = {"ns": 5.0, "fn": 10.0, "fp": 1.0, "ed": 1.0, "ea": 1.5, "ec": 1.0}

__all__ = [
    "AOGM_WEIGHTS",
    "DetectionMatch",
    "TrackingScores",
    "match_detections",
    "tracking_metrics",
]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


@dataclass(frozen=True)
class DetectionMatch:
    """The CTC detection test of one frame: which result object covers more than half of each GT object.

    Attributes:
        gt_labels: (G,) int64 GT labels present in the frame, ascending.
        res_labels: (R,) int64 result labels present in the frame, ascending.
        gt_to_res: (G,) int64 index into ``res_labels`` of the result object matching each GT object,
            -1 where none does.
        iou: (G,) float64 IoU of each GT object with its matching result object, 0 where none.
        res_match_count: (R,) int64 number of GT objects each result object matches (0 = false positive,
            >= 2 = non-split).
    """

    gt_labels: np.ndarray
    res_labels: np.ndarray
    gt_to_res: np.ndarray
    iou: np.ndarray
    res_match_count: np.ndarray


def match_detections(gt_frame: np.ndarray, res_frame: np.ndarray) -> DetectionMatch:
    """Match the objects of one frame by the CTC detection test (result covers > half of the GT object).

    Args:
        gt_frame: (H, W[, D]) int GT labels, 0 = background.
        res_frame: (H, W[, D]) int result labels, same shape.

    Returns:
        :class:`DetectionMatch` with each GT object's matching result object and their IoU.

    Example:
        >>> gt = np.array([[1, 1, 1, 0, 2, 2]])
        >>> res = np.array([[7, 7, 0, 0, 7, 7]])
        >>> m = match_detections(gt, res)
        >>> m.res_labels[m.gt_to_res].tolist(), m.res_match_count.tolist(), m.iou.round(2).tolist()
        ([7, 7], [2], [0.4, 0.5])
    """
    table = overlap_table(gt_frame, res_frame)
    matched = 2 * table.intersection > table.true_areas[table.true_index]
    gt_to_res = np.full(table.n_true, -1, dtype=np.int64)
    gt_to_res[table.true_index[matched]] = table.pred_index[matched]
    iou = np.zeros(table.n_true)
    iou[table.true_index[matched]] = table.iou[matched]
    return DetectionMatch(
        gt_labels=table.true_labels.astype(np.int64),
        res_labels=table.pred_labels.astype(np.int64),
        gt_to_res=gt_to_res,
        iou=iou,
        res_match_count=np.bincount(table.pred_index[matched], minlength=table.n_pred).astype(np.int64),
    )


@dataclass(frozen=True)
class TrackingScores:
    """CTC scores of one sequence (see the module docstring for every definition).

    ``det``, ``seg``, ``tra`` are in [0, 1] (NaN without GT objects); ``aogm``/``aogm_0`` and
    ``aogm_d``/``aogm_d_0`` are the weighted graph costs behind TRA and DET; ``ns, fn, fp, ed, ea, ec``
    the operation counts; ``gt_nodes, gt_edges, res_nodes, res_edges`` the graph sizes;
    ``seg_objects`` the number of GT SEG objects.
    """

    det: float
    seg: float
    tra: float
    aogm: float
    aogm_0: float
    aogm_d: float
    aogm_d_0: float
    ns: int
    fn: int
    fp: int
    ed: int
    ea: int
    ec: int
    gt_nodes: int
    gt_edges: int
    res_nodes: int
    res_edges: int
    seg_objects: int
    divisions_true: int
    divisions_predicted: int
    divisions_matched: int
    division_precision: float
    division_recall: float
    division_f1: float
    division_tolerance: int
    id_switches: int

    def as_dict(self) -> dict[str, float | int]:
        """The scores as a flat, JSON-ready dict (NaN stays a float NaN)."""
        return asdict(self)


@dataclass(frozen=True)
class _Graph:
    """Nodes (frame-major, labels ascending within a frame, so ``keys`` is sorted) and edges of a movie."""

    frames: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    keys: np.ndarray  # (N,) int64 frame * stride + label, ascending
    stride: int
    edge_src: np.ndarray  # (E,) int64 node index
    edge_dst: np.ndarray  # (E,) int64 node index
    edge_parent: np.ndarray  # (E,) bool: parent link (True) or track link (False)


def _find(keys: np.ndarray, stride: int, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Node index of each (frame, label) in the sorted node ``keys``, -1 where the movie has none."""
    query = np.asarray(frames, dtype=np.int64) * stride + np.asarray(labels, dtype=np.int64)
    if len(keys) == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    index = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[index] == query, index, -1)


def _build_graph(frame_labels: list[np.ndarray], table: np.ndarray, name: str) -> _Graph:
    frames = np.concatenate(
        [np.full(len(labels), t, dtype=np.int64) for t, labels in enumerate(frame_labels)]
    )
    labels = np.concatenate(frame_labels).astype(np.int64)
    stride = int(max(labels.max(initial=0), table[:, 0].max(initial=0))) + 1
    keys = frames * stride + labels
    by_label = np.lexsort((frames, labels))
    link = (labels[by_label][1:] == labels[by_label][:-1]) & (np.diff(frames[by_label]) == 1)
    track_src, track_dst = by_label[:-1][link], by_label[1:][link]
    children = table[table[:, 3] != 0]
    parent_rows = np.searchsorted(table[:, 0], children[:, 3])  # the table is sorted by label
    parent_src = _find(keys, stride, table[parent_rows, 2], children[:, 3])
    parent_dst = _find(keys, stride, children[:, 1], children[:, 0])
    for index, (node, frame, label) in enumerate(
        [(parent_src, table[parent_rows, 2], children[:, 3]), (parent_dst, children[:, 1], children[:, 0])]
    ):
        if np.any(node < 0):
            bad = int(np.flatnonzero(node < 0)[0])
            role = "parent" if index == 0 else "child"
            raise DataError(
                f"{name}: track {children[bad, 0]} has parent {children[bad, 3]}, but the {role}'s label "
                f"{label[bad]} is not in frame {frame[bad]} of the label movie"
            )
    return _Graph(
        frames=frames,
        labels=labels,
        keys=keys,
        stride=stride,
        edge_src=np.concatenate([track_src, parent_src]).astype(np.int64),
        edge_dst=np.concatenate([track_dst, parent_dst]).astype(np.int64),
        edge_parent=np.concatenate([np.zeros(len(track_src), bool), np.ones(len(parent_src), bool)]),
    )


def _check_movies(gt_tracks: np.ndarray, res_tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt_tracks, res_tracks = np.asarray(gt_tracks), np.asarray(res_tracks)
    for name, movie in (("gt", gt_tracks), ("result", res_tracks)):
        if movie.ndim < 3 or len(movie) == 0:
            raise DataError(f"{name}: a label movie must be (T, H, W) with T >= 1, got shape {movie.shape}")
        if not np.issubdtype(movie.dtype, np.integer):
            raise DataError(f"{name}: a label movie must hold integer track labels, got dtype {movie.dtype}")
        if movie.size and movie.min() < 0:
            raise DataError(f"{name}: the label movie holds negative labels (min {movie.min()})")
    if gt_tracks.shape != res_tracks.shape:
        raise DataError(f"the gt movie has shape {gt_tracks.shape} but the result has {res_tracks.shape}")
    return gt_tracks, res_tracks


def _check_table(table: np.ndarray, name: str, n_frames: int) -> np.ndarray:
    """The table as (N, 4) int64 sorted by label, after the checks every CTC table must pass."""
    table = np.asarray(table)
    if table.size == 0:  # an empty res_track.txt reads as a float (0, 4) array
        table = np.zeros((0, 4), dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 4 or not np.issubdtype(table.dtype, np.integer):
        raise DataError(
            f"{name}: a track table must be an (N, 4) integer array, got {table.shape} {table.dtype}"
        )
    table = table.astype(np.int64)[np.argsort(table[:, 0], kind="stable")]
    label, begin, end, parent = table.T
    problems = [
        (label <= 0, "has a label <= 0"),
        (np.r_[False, label[1:] == label[:-1]], "repeats a label already in the table"),
        ((begin < 0) | (end >= n_frames), f"spans frames outside 0..{n_frames - 1}"),
        (end < begin, "ends before it begins"),
        (parent < 0, "has a negative parent"),
    ]
    for bad, what in problems:
        if bad.any():
            row = table[np.flatnonzero(bad)[0]]
            raise DataError(f"{name} track table: track {row[0]} (row {' '.join(map(str, row))}) {what}")
    has_parent = parent != 0
    rows = np.minimum(np.searchsorted(label, parent), max(len(label) - 1, 0))
    unknown = has_parent & (label[rows] != parent)
    if unknown.any():
        row = table[np.flatnonzero(unknown)[0]]
        raise DataError(f"{name} track table: track {row[0]} has parent {row[3]}, which is not in the table")
    late = has_parent & (end[rows] >= begin)
    if late.any():
        row = table[np.flatnonzero(late)[0]]
        raise DataError(
            f"{name} track table: track {row[0]} begins in frame {row[1]} but its parent {row[3]} ends in "
            f"frame {end[rows][np.flatnonzero(late)[0]]}; a parent must end before its children begin"
        )
    return table


def _check_result_nodes(graph: _Graph, table: np.ndarray, name: str) -> None:
    """Every label of the movie is in the table and present in every frame of its track, and only there."""
    row = np.minimum(np.searchsorted(table[:, 0], graph.labels), max(len(table) - 1, 0))
    known = (table[row, 0] == graph.labels) if len(table) else np.zeros(len(graph.labels), bool)
    if not known.all():
        i = np.flatnonzero(~known)[0]
        raise DataError(
            f"{name}: label {graph.labels[i]} is in frame {graph.frames[i]} but not in the track table"
        )
    outside = (graph.frames < table[row, 1]) | (graph.frames > table[row, 2])
    if outside.any():
        i = np.flatnonzero(outside)[0]
        raise DataError(
            f"{name}: label {graph.labels[i]} is in frame {graph.frames[i]}, outside its track's frames "
            f"{table[row[i], 1]}-{table[row[i], 2]} in the track table"
        )
    count = np.bincount(row, minlength=len(table))
    missing = count != table[:, 2] - table[:, 1] + 1
    if missing.any():
        label, begin, end, _ = table[np.flatnonzero(missing)[0]]
        present = set(graph.frames[graph.labels == label].tolist())
        frame = next(t for t in range(begin, end + 1) if t not in present)
        raise DataError(
            f"{name}: label {label} is missing from frame {frame} although its track spans {begin}-{end}"
        )


def _divisions(table: np.ndarray) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(parent label, parent end, (C,) child labels, (C,) child begins) of each track with >= 2 children."""
    parents, counts = np.unique(table[table[:, 3] != 0, 3], return_counts=True)
    out = []
    for parent in parents[counts >= 2]:
        children = table[table[:, 3] == parent]
        end = table[np.searchsorted(table[:, 0], parent), 2]
        out.append((int(parent), int(end), children[:, 0], children[:, 1]))
    return out


_Division = tuple[int, int, np.ndarray, np.ndarray]


def _match_divisions(
    gt_divisions: list[_Division],
    res_divisions: list[_Division],
    unique_match: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tolerance: int,
) -> list[tuple[int, int]]:
    """One-to-one (GT index, result index) pairs of matching divisions (see the module docstring).

    ``unique_match(frames, gt_labels)`` gives the result label uniquely matching each GT node, 0 if none.
    """
    res_by_parent = {parent: j for j, (parent, *_rest) in enumerate(res_divisions)}
    rows, cols = [], []
    for i, (gt_parent, gt_end, gt_children, gt_begins) in enumerate(gt_divisions):
        frames = np.arange(max(gt_end - tolerance, 0), gt_end + 1)
        for frame, res_parent in zip(frames, unique_match(frames, np.full(len(frames), gt_parent))):
            j = res_by_parent.get(int(res_parent))
            if j is None:
                continue
            _, res_end, res_children, res_begins = res_divisions[j]
            # The parent test is made at min(gt_end, res_end): frame itself when it is before gt_end.
            on_time = res_end == frame if frame < gt_end else 0 <= res_end - gt_end <= tolerance
            if not on_time or len(res_children) != len(gt_children):
                continue
            later = np.maximum.outer(gt_begins, res_begins)
            close = np.abs(np.subtract.outer(gt_begins, res_begins)) <= tolerance
            child_rows = np.repeat(gt_children, len(res_children))
            matched = unique_match(later.ravel(), child_rows).reshape(later.shape)
            ok = close & (matched == res_children[None, :])
            pick = linear_sum_assignment(ok, maximize=True)
            if ok[pick].sum() == len(gt_children):
                rows.append(i)
                cols.append(j)
    if not rows:
        return []
    graph = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(gt_divisions), len(res_divisions))
    )
    partner = maximum_bipartite_matching(graph, perm_type="column")
    return [(i, int(j)) for i, j in enumerate(partner) if j >= 0]


def _seg_matches(gt_seg: Mapping[int, np.ndarray], res_tracks: np.ndarray) -> list[DetectionMatch]:
    """The detection test of each annotated SEG frame against the result frame of the same index."""
    out = []
    for frame, seg_frame in sorted(gt_seg.items()):
        seg_frame = np.asarray(seg_frame)
        if not 0 <= frame < len(res_tracks) or seg_frame.shape != res_tracks.shape[1:]:
            raise DataError(
                f"gt_seg: frame {frame} of shape {seg_frame.shape} does not fit a movie of "
                f"{len(res_tracks)} frames of shape {res_tracks.shape[1:]}"
            )
        out.append(match_detections(seg_frame, res_tracks[frame]))
    return out


def _id_switches(gt: _Graph, unique_res: np.ndarray, explained: set[tuple[int, int, int]]) -> int:
    """Changes of the uniquely matched result label along each GT track, less the ``explained`` ones."""
    nodes = np.flatnonzero(unique_res > 0)
    nodes = nodes[np.lexsort((gt.frames[nodes], gt.labels[nodes]))]
    label, res = gt.labels[nodes], unique_res[nodes]
    change = np.flatnonzero((label[1:] == label[:-1]) & (res[1:] != res[:-1]))
    return sum((int(label[k]), int(res[k]), int(res[k + 1])) not in explained for k in change)


def tracking_metrics(
    gt_tracks: np.ndarray,
    gt_table: np.ndarray,
    res_tracks: np.ndarray,
    res_table: np.ndarray,
    *,
    gt_seg: Mapping[int, np.ndarray] | None = None,
    division_tolerance: int = 0,
) -> TrackingScores:
    """Score a tracking result against the GT with the Cell Tracking Challenge measures.

    Args:
        gt_tracks: (T, H, W) or (T, D, H, W) int GT label movie (CTC ``TRA/man_trackNNN.tif``), pixel =
            track label, 0 = background.
        gt_table: (N, 4) int GT track table, rows ``(label, begin, end, parent)`` (``man_track.txt``).
        res_tracks: result label movie, same shape (``maskNNN.tif``).
        res_table: (M, 4) int result track table (``res_track.txt``).
        gt_seg: frame index -> (H, W) int SEG ground truth (``SEG/man_segNNN.tif``), possibly for some
            frames only; ``None`` scores SEG against every frame of ``gt_tracks``.
        division_tolerance: how many frames a result division may be early or late and still match.

    Returns:
        :class:`TrackingScores` with DET, SEG, TRA, the AOGM counts, division scores and ID switches.

    Raises:
        DataError: shapes differ, a table is malformed, or the result is not a valid CTC result.
    """
    if int(division_tolerance) != division_tolerance or division_tolerance < 0:
        raise ValueError(f"division_tolerance must be a non-negative integer, got {division_tolerance}")
    division_tolerance = int(division_tolerance)
    gt_tracks, res_tracks = _check_movies(gt_tracks, res_tracks)
    n_frames = len(gt_tracks)
    gt_table = _check_table(gt_table, "gt", n_frames)
    res_table = _check_table(res_table, "result", n_frames)
    matches = [match_detections(gt_tracks[t], res_tracks[t]) for t in range(n_frames)]
    gt = _build_graph([m.gt_labels for m in matches], gt_table, "gt")
    res = _build_graph([m.res_labels for m in matches], res_table, "result")
    _check_result_nodes(res, res_table, "result")

    # Detection test over the whole movie: global node indices on both sides.
    res_offset = np.cumsum([0] + [len(m.res_labels) for m in matches])
    gt_to_res = np.concatenate(
        [np.where(m.gt_to_res >= 0, m.gt_to_res + res_offset[t], -1) for t, m in enumerate(matches)]
    ).astype(np.int64)
    matched = gt_to_res >= 0
    res_count = np.bincount(gt_to_res[matched], minlength=len(res.labels))
    ns = int(np.maximum(res_count - 1, 0).sum())
    fn = int((~matched).sum())
    fp = int((res_count == 0).sum())

    # Edge test on the subgraph of result nodes matching exactly one GT node.
    unique_gt = np.flatnonzero(matched)
    unique_gt = unique_gt[res_count[gt_to_res[unique_gt]] == 1]
    res_to_gt = np.full(len(res.labels), -1, dtype=np.int64)
    res_to_gt[gt_to_res[unique_gt]] = unique_gt
    kept = (res_to_gt[res.edge_src] >= 0) & (res_to_gt[res.edge_dst] >= 0)
    n_gt = len(gt.labels)
    gt_codes = gt.edge_src * n_gt + gt.edge_dst
    res_codes = res_to_gt[res.edge_src[kept]] * n_gt + res_to_gt[res.edge_dst[kept]]
    _, in_gt, in_res = np.intersect1d(gt_codes, res_codes, assume_unique=True, return_indices=True)
    ed = int(len(res_codes) - len(in_gt))
    ea = int(len(gt_codes) - len(in_gt))
    ec = int((gt.edge_parent[in_gt] != res.edge_parent[kept][in_res]).sum())

    w = AOGM_WEIGHTS
    aogm_d = w["ns"] * ns + w["fn"] * fn + w["fp"] * fp
    aogm = aogm_d + w["ed"] * ed + w["ea"] * ea + w["ec"] * ec
    aogm_d_0 = w["fn"] * n_gt
    aogm_0 = aogm_d_0 + w["ea"] * len(gt_codes)

    seg_matches = matches if gt_seg is None else _seg_matches(gt_seg, res_tracks)
    seg_objects = sum(len(m.gt_labels) for m in seg_matches)
    seg_sum = sum(float(m.iou.sum()) for m in seg_matches)

    # Divisions and ID switches use unique matches: the result label matching a GT node alone, else 0.
    unique_res = np.zeros(n_gt, dtype=np.int64)
    unique_res[unique_gt] = res.labels[gt_to_res[unique_gt]]

    def unique_match(frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        node = _find(gt.keys, gt.stride, frames, labels)
        return np.where(node >= 0, unique_res[node], 0)

    gt_divisions, res_divisions = _divisions(gt_table), _divisions(res_table)
    pairs = _match_divisions(gt_divisions, res_divisions, unique_match, division_tolerance)
    explained = {
        (gt_label, res_divisions[j][0], int(res_child))
        for i, j in pairs
        for gt_label in (gt_divisions[i][0], *gt_divisions[i][2].tolist())
        for res_child in res_divisions[j][2]
    }
    tp_div = len(pairs)
    n_true_div, n_pred_div = len(gt_divisions), len(res_divisions)

    return TrackingScores(
        det=1.0 - min(aogm_d, aogm_d_0) / aogm_d_0 if aogm_d_0 else math.nan,
        seg=_ratio(seg_sum, seg_objects),
        tra=1.0 - min(aogm, aogm_0) / aogm_0 if aogm_0 else math.nan,
        aogm=float(aogm),
        aogm_0=float(aogm_0),
        aogm_d=float(aogm_d),
        aogm_d_0=float(aogm_d_0),
        ns=ns,
        fn=fn,
        fp=fp,
        ed=ed,
        ea=ea,
        ec=ec,
        gt_nodes=n_gt,
        gt_edges=len(gt_codes),
        res_nodes=len(res.labels),
        res_edges=len(res.edge_src),
        seg_objects=seg_objects,
        divisions_true=n_true_div,
        divisions_predicted=n_pred_div,
        divisions_matched=tp_div,
        division_precision=_ratio(tp_div, n_pred_div),
        division_recall=_ratio(tp_div, n_true_div),
        division_f1=_ratio(2 * tp_div, n_true_div + n_pred_div),
        division_tolerance=division_tolerance,
        id_switches=_id_switches(gt, unique_res, explained),
    )
