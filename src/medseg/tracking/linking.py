"""LAP tracking (Jaqaman et al. 2008, as in TrackMate and laptrack): frame-to-frame linking, then one global
assignment that closes gaps and attaches daughters to their mothers. NumPy/SciPy only.

Costs are dimensionless so that one alternative cost serves every step:

- frame link: ``(1 - w) min((d / D)^2, 1) + w (1 - IoU)``, with d the centroid distance, D =
  ``max_distance`` and w = ``overlap_weight``. Candidates are pairs within D or with overlapping pixels
  (the cap lets a large object that moves further than D still link through its overlap).
- gap closing over g frames (track end at t, track start at t + g, 2 <= g <= ``max_gap`` + 1):
  ``(d / (g D))^2 + gap_penalty (g - 1)``, candidates within g D.
- division (a track start at t + 1 attached to a mother at t whose track continues to t + 1):
  ``((1 - w) min((d / D)^2, 1) + w (1 - c)) * rho`` with c the fraction of the daughter that overlaps
  the mother and ``rho = max(r, 1 / r)``, r = (area of both daughters) / (mother's area); both daughters
  must have between ``min_daughter_area_ratio`` and ``max_daughter_area_ratio`` of the mother's area.

Every object may instead start or end a track (or a mother stay undivided) at ``birth_death_cost``, so a
link is made only when it costs less than ending one track and starting another (2 x
``birth_death_cost``). With the default 0.5, two objects that do not overlap are linked only when their
centroids are less than ``max_distance`` apart, whatever ``overlap_weight`` is, and two that overlap
can always be linked (when ``overlap_weight`` > 0).

Each assignment is solved exactly on a sparse augmented cost matrix with
``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp), so 500 objects per frame stay
cheap: only candidate pairs are ever stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from itertools import pairwise

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from medseg.errors import ConfigError
from medseg.tracking.features import FrameCandidates, FrameObjects, frame_candidates

__all__ = ["TrackingParams", "assign", "link_frames", "link_segments"]


@dataclass(frozen=True)
class TrackingParams:
    """Tracker settings; JSON round-trip with ``asdict(params)`` and ``TrackingParams(**d)``.

    Attributes:
        max_distance: largest centroid displacement in pixels between consecutive frames for objects
            that do not overlap (overlapping objects are always candidates, whatever their distance).
        overlap_weight: weight w in [0, 1] of ``1 - IoU`` against the squared normalised distance.
        birth_death_cost: cost of starting or of ending a track; links must cost less than twice this.
        max_gap: most consecutive frames an object may be missing and still keep its lineage; 0 = no
            gap closing.
        gap_penalty: extra cost per missing frame of a closed gap.
        divisions: look for divisions (a new track that starts beside a mother whose track continues).
        min_daughter_area_ratio: smallest daughter area as a fraction of the mother's.
        max_daughter_area_ratio: largest daughter area as a fraction of the mother's. Above 1 because a
            mitotic nucleus is condensed: on the nuclei movie phantom daughters measure 0.4-1.2 of the
            mother's last frame, and 0.75 found a third of the divisions of ground-truth masks, 1.3 nine
            in ten; daughters cut out of merged objects (``split_merges``) come out larger, and with the
            ``max_daughter_contact`` test to reject halves of one nucleus 1.6 found two more divisions on
            each of three phantom movies' segmentations and on ground truth, with no more false ones.
        min_track_length: tracks shorter than this many frames with no parent and no children are
            dropped (1 keeps all).
        min_daughter_frames: a division is kept only when both daughters last this many frames
            (counting closed gaps) or reach the last frame; shorter "daughters" are segmentation flicker.
        max_mother_growth: no division from a mother whose area in her last frame exceeds this multiple of
            her median area over the 5 frames before (a mitotic nucleus condenses; a sudden growth is two
            cells merged by the segmentation, whose parting is not a division). On the movie phantom's
            segmentation, true mothers measured 0.6-1.16, merged pairs 0.85-2.6 (mostly above 1.1).
        max_daughter_contact: no division whose daughters share, in their first frame, a border longer
            than this multiple of the smaller daughter's equivalent diameter: two halves of one nucleus cut
            by the segmentation touch along their whole width, daughters nuclei form apart. On the nuclei
            movie phantom's segmentation such cuts measured 0.65-1.8 (most above 1), true daughters 0.
            Touching discs of half the mother's area side by side measure 0.71.
        split_merges: cut objects that merge two or more objects of the frame before (see
            :func:`medseg.tracking.merges.split_merges`) before linking.
        merge_overlap: fraction of an object that must go into one object of the next frame for that
            object to count as its continuation when looking for merges.
        merge_divided_overlap: fraction of an object that must go into the second of two objects of the
            next frame (a mother that divided) for it to count there too: a daughter the segmentation
            merged with a neighbour is cut out again.
        merge_max_solidity: only objects at most this convex (area over convex hull area) are cut.
    """

    max_distance: float = 20.0
    overlap_weight: float = 0.5
    birth_death_cost: float = 0.5
    max_gap: int = 1
    gap_penalty: float = 0.1
    divisions: bool = True
    min_daughter_area_ratio: float = 0.25
    max_daughter_area_ratio: float = 1.6
    min_track_length: int = 1
    min_daughter_frames: int = 3
    max_mother_growth: float = 1.1
    max_daughter_contact: float = 0.9
    split_merges: bool = True
    merge_overlap: float = 0.25
    merge_divided_overlap: float = 0.35
    merge_max_solidity: float = 0.93

    def __post_init__(self) -> None:
        # Values from YAML or JSON may arrive as 2.0 for 2 or 20 for 20.0: store the declared types.
        kinds = {
            "int": (int, "a whole number"),
            "float": (float, "a number"),
            "bool": (bool, "true or false"),
        }
        for field in fields(self):
            value = getattr(self, field.name)
            kind, description = kinds[str(field.type)]
            if kind is bool:
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                ok = ok and (kind is float or float(value).is_integer())
            if not ok:
                raise ConfigError(f"tracking parameter {field.name}={value!r} must be {description}")
            object.__setattr__(self, field.name, kind(value))
        checks = {
            "max_distance": self.max_distance > 0,
            "overlap_weight": 0 <= self.overlap_weight <= 1,
            "birth_death_cost": self.birth_death_cost > 0,
            "max_gap": self.max_gap >= 0,
            "gap_penalty": self.gap_penalty >= 0,
            "min_daughter_area_ratio": 0 <= self.min_daughter_area_ratio <= self.max_daughter_area_ratio,
            "max_daughter_area_ratio": self.max_daughter_area_ratio > 0,
            "min_track_length": self.min_track_length >= 1,
            "min_daughter_frames": self.min_daughter_frames >= 1,
            "max_mother_growth": self.max_mother_growth > 0,
            "max_daughter_contact": self.max_daughter_contact >= 0,
            "merge_overlap": 0 < self.merge_overlap <= 1,
            "merge_divided_overlap": 0 < self.merge_divided_overlap <= 1,
            "merge_max_solidity": 0 < self.merge_max_solidity <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"tracking parameter {name}={getattr(self, name)!r} is out of range")

    def to_dict(self) -> dict:
        """The parameters as a plain dict (``TrackingParams(**d)`` rebuilds them)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrackingParams:
        """Build from a dict, rejecting unknown keys with one line that lists the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown tracking parameter(s) {unknown}; valid: {sorted(known)}")
        return cls(**values)


def assign(
    n_rows: int,
    n_cols: int,
    rows: np.ndarray,
    cols: np.ndarray,
    costs: np.ndarray,
    row_alternative: float | np.ndarray,
    col_alternative: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost partial assignment where any row or column may stay unmatched at a price.

    The (n_rows + n_cols) x (n_cols + n_rows) augmented matrix of Jaqaman et al.: candidate costs
    top-left, the row alternatives on the top-right diagonal, the column alternatives on the
    bottom-left diagonal and the transposed candidates bottom-right, solved as a sparse full matching.

    Args:
        n_rows: number of row items.
        n_cols: number of column items.
        rows: (L,) int row index of each candidate pair (pairs unique).
        cols: (L,) int column index of each candidate pair.
        costs: (L,) float cost of each pair.
        row_alternative: cost of leaving a row unmatched, a scalar or (n_rows,).
        col_alternative: cost of leaving a column unmatched, a scalar or (n_cols,).

    Returns:
        ``(matched_rows, matched_cols)``: two (M,) int64 arrays, row-sorted.
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    if rows.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy()
    size = n_rows + n_cols
    data = np.concatenate(
        [
            np.asarray(costs, np.float64),
            np.broadcast_to(np.asarray(row_alternative, np.float64), (n_rows,)),
            np.broadcast_to(np.asarray(col_alternative, np.float64), (n_cols,)),
            np.zeros(rows.size),
        ]
    )
    # Every full matching uses exactly `size` entries, so a constant shift changes no optimum; it keeps
    # all stored weights strictly positive (a stored zero would read as "no edge").
    data = data - min(data.min(), 0.0) + 1.0
    matrix = csr_matrix(
        (
            data,
            (
                np.concatenate([rows, np.arange(n_rows), n_rows + np.arange(n_cols), n_rows + cols]),
                np.concatenate([cols, n_cols + np.arange(n_rows), np.arange(n_cols), n_cols + rows]),
            ),
        ),
        shape=(size, size),
    )
    matched_rows, matched_cols = min_weight_full_bipartite_matching(matrix)
    keep = (matched_rows < n_rows) & (matched_cols < n_cols)
    order = np.argsort(matched_rows[keep])
    return matched_rows[keep][order].astype(np.int64), matched_cols[keep][order].astype(np.int64)


def _distance_term(distance: np.ndarray, max_distance: float) -> np.ndarray:
    """Squared distance in units of ``max_distance``, capped at 1 (reached by overlapping pairs only)."""
    return np.minimum((distance / max_distance) ** 2, 1.0)


def link_frames(
    before: FrameObjects,
    after: FrameObjects,
    params: TrackingParams | None = None,
    *,
    candidates: FrameCandidates | None = None,
) -> np.ndarray:
    """Frame-to-frame links by one global assignment (each object linked at most once each way).

    Args:
        before: the objects of frame t.
        after: the objects of frame t + 1.
        params: tracker settings (``max_distance``, ``overlap_weight``, ``birth_death_cost``).
        candidates: :func:`frame_candidates` of the two frames, with pixel overlaps; None = computed
            from centroids alone (IoU taken as 0).

    Returns:
        (L, 2) int64 rows ``(index in before, index in after)``, sorted by the first column.
    """
    params = params or TrackingParams()
    if candidates is None:
        candidates = frame_candidates(before, after, params.max_distance)
    i, j = candidates.before, candidates.after
    if len(i) == 0:
        return np.zeros((0, 2), np.int64)
    union = before.area[i] + after.area[j] - candidates.intersection
    iou = candidates.intersection / union
    w = params.overlap_weight
    cost = (1 - w) * _distance_term(candidates.distance, params.max_distance) + w * (1 - iou)
    # A pair costing at least a death plus a birth is never worth linking.
    keep = cost < 2 * params.birth_death_cost
    rows, cols = assign(
        len(before),
        len(after),
        i[keep],
        j[keep],
        cost[keep],
        params.birth_death_cost,
        params.birth_death_cost,
    )
    return np.stack([rows, cols], 1)


def _gap_candidates(
    frame: np.ndarray, centroid: np.ndarray, ends: np.ndarray, starts: np.ndarray, params: TrackingParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end, start, cost) over every gap of 2 .. max_gap + 1 frames (detections indexed globally)."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if params.max_gap == 0 or len(ends) == 0 or len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    n_frames = int(frame.max()) + 1
    end_bounds = np.searchsorted(frame[ends], np.arange(n_frames + 1))
    start_bounds = np.searchsorted(frame[starts], np.arange(n_frames + 1))
    for t in np.unique(frame[ends]):
        sources = ends[end_bounds[t] : end_bounds[t + 1]]
        tree = None
        for gap in range(2, params.max_gap + 2):
            if t + gap >= n_frames:
                break
            targets = starts[start_bounds[t + gap] : start_bounds[t + gap + 1]]
            if len(targets) == 0:
                continue
            if tree is None:
                tree = cKDTree(centroid[sources])
            reach = gap * params.max_distance
            near = tree.sparse_distance_matrix(cKDTree(centroid[targets]), reach, output_type="ndarray")
            cost = (near["v"] / reach) ** 2 + params.gap_penalty * (gap - 1)
            out.append((sources[near["i"]], targets[near["j"]], cost))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*out))  # type: ignore[return-value]


def _division_candidates(
    offsets: np.ndarray,
    area: np.ndarray,
    centroid: np.ndarray,
    successor: np.ndarray,
    predecessor: np.ndarray,
    candidates: list[FrameCandidates],
    params: TrackingParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mother, daughter start, cost) for every plausible division (detections indexed globally)."""
    w = params.overlap_weight
    low, high = params.min_daughter_area_ratio, params.max_daughter_area_ratio
    out = []
    for t, pairs in enumerate(candidates):
        mother = offsets[t] + pairs.before
        daughter = offsets[t + 1] + pairs.after
        keep = (predecessor[daughter] < 0) & (successor[mother] >= 0)
        mother, daughter = mother[keep], daughter[keep]
        intersection = pairs.intersection[keep]
        sister = successor[mother]
        mother_area = area[mother].astype(np.float64)
        fraction, sister_fraction = area[daughter] / mother_area, area[sister] / mother_area
        keep = (fraction >= low) & (fraction <= high) & (sister_fraction >= low) & (sister_fraction <= high)
        keep &= _growth(mother, area, predecessor) <= params.max_mother_growth
        ratio = (fraction + sister_fraction)[keep]
        contained = intersection[keep] / area[daughter[keep]]
        mother, daughter, sister = mother[keep], daughter[keep], sister[keep]
        # the mother sits between her daughters: distance from her centroid to their midpoint
        midpoint = np.hypot(*(centroid[mother] - 0.5 * (centroid[daughter] + centroid[sister])).T)
        cost = (1 - w) * _distance_term(midpoint, 0.5 * params.max_distance) + w * (1 - contained)
        keep = slice(None)
        out.append((mother[keep], daughter[keep], cost * np.maximum(ratio, 1 / ratio)))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*out))  # type: ignore[return-value]


def _growth(index: np.ndarray, area: np.ndarray, predecessor: np.ndarray, history: int = 5) -> np.ndarray:
    """Area of each detection over the median area of its up to ``history`` predecessors (1 if none).

    A mitotic nucleus condenses before it splits (it shrinks); an object that suddenly grew is nearly
    always two touching cells the segmentation merged, and their parting is no division.
    """
    previous = np.full((history, len(index)), np.nan)
    current = index.copy()
    for k in range(history):
        current = np.where(current >= 0, predecessor[np.maximum(current, 0)], -1)
        previous[k] = np.where(current >= 0, area[np.maximum(current, 0)], np.nan)
    seen = np.isfinite(previous).any(axis=0)
    typical = np.ones(len(index))
    if seen.any():
        typical[seen] = np.nanmedian(previous[:, seen], axis=0)
    return np.where(seen, area[index] / typical, 1.0)


def _link_segments_global(
    objects: list[FrameObjects],
    successor: np.ndarray,
    predecessor: np.ndarray,
    candidates: list[FrameCandidates],
    params: TrackingParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Gap and division links as (G, 2) and (V, 2) int64 global detection pairs (earlier, later)."""
    counts = np.array([len(o) for o in objects], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    frame = np.repeat(np.arange(len(objects)), counts)
    centroid = np.concatenate([o.centroid for o in objects]) if len(frame) else np.zeros((0, 2))
    area = np.concatenate([o.area for o in objects]) if len(frame) else np.zeros(0, np.int64)
    ends = np.flatnonzero((successor < 0) & (frame < len(objects) - 1))
    starts = np.flatnonzero((predecessor < 0) & (frame > 0))
    gap_from, gap_to, gap_cost = _gap_candidates(frame, centroid, ends, starts, params)
    if params.divisions:
        mother, daughter, division_cost = _division_candidates(
            offsets, area, centroid, successor, predecessor, candidates, params
        )
    else:
        mother, daughter, division_cost = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    mothers = np.unique(mother)
    row_of = np.full(len(frame), -1, np.int64)
    row_of[ends] = np.arange(len(ends))
    row_of[mothers] = len(ends) + np.arange(len(mothers))
    col_of = np.full(len(frame), -1, np.int64)
    col_of[starts] = np.arange(len(starts))
    sources = np.concatenate([gap_from, mother])
    targets = np.concatenate([gap_to, daughter])
    cost = np.concatenate([gap_cost, division_cost])
    keep = cost < 2 * params.birth_death_cost
    rows, cols = assign(
        len(ends) + len(mothers),
        len(starts),
        row_of[sources[keep]],
        col_of[targets[keep]],
        cost[keep],
        params.birth_death_cost,
        params.birth_death_cost,
    )
    row_items = np.concatenate([ends, mothers])
    pairs = np.stack([row_items[rows], starts[cols]], 1)
    is_gap = rows < len(ends)
    return pairs[is_gap], pairs[~is_gap]


def _global_links(
    objects: list[FrameObjects], frame_links: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Successor and predecessor (D,) int64 arrays (-1 = none) from per-frame index pairs."""
    counts = np.array([len(o) for o in objects], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    successor = np.full(offsets[-1], -1, np.int64)
    predecessor = np.full(offsets[-1], -1, np.int64)
    for t, pairs in enumerate(frame_links):
        successor[offsets[t] + pairs[:, 0]] = offsets[t + 1] + pairs[:, 1]
        predecessor[offsets[t + 1] + pairs[:, 1]] = offsets[t] + pairs[:, 0]
    return successor, predecessor


def link_segments(
    objects: list[FrameObjects],
    frame_links: list[np.ndarray],
    params: TrackingParams | None = None,
    *,
    candidates: list[FrameCandidates] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Close gaps and find divisions among the segments left by frame-to-frame linking, in one assignment.

    Args:
        objects: T :class:`FrameObjects`, one per frame.
        frame_links: T - 1 arrays from :func:`link_frames` ((L, 2) index pairs between t and t + 1).
        params: tracker settings.
        candidates: T - 1 :func:`frame_candidates` with pixel overlaps (daughters are scored by how
            much of them overlaps the mother); None = centroid distance alone.

    Returns:
        ``(gaps, divisions)``: (G, 4) and (V, 4) int64 rows ``(frame, index, frame, index)`` from a
        track end to the start it continues as, and from a mother to its new daughter (the mother's
        frame-to-frame link is the other daughter).
    """
    params = params or TrackingParams()
    if len(frame_links) != max(len(objects) - 1, 0):
        raise ValueError(f"need {max(len(objects) - 1, 0)} frame_links for {len(objects)} frames")
    if candidates is None:
        candidates = [frame_candidates(a, b, params.max_distance) for a, b in pairwise(objects)]
    successor, predecessor = _global_links(objects, frame_links)
    gaps, divisions = _link_segments_global(objects, successor, predecessor, candidates, params)
    counts = np.array([len(o) for o in objects], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    frame = np.repeat(np.arange(len(objects)), counts)

    def local(pairs: np.ndarray) -> np.ndarray:
        f = frame[pairs]
        return np.stack([f[:, 0], pairs[:, 0] - offsets[f[:, 0]], f[:, 1], pairs[:, 1] - offsets[f[:, 1]]], 1)

    return local(gaps), local(divisions)
