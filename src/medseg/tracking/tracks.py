"""From per-frame segmentations to Cell Tracking Challenge tracks: :func:`track_labels` runs the tracker,
:func:`build_tracks` turns any set of links (from this tracker or another) into CTC tracks.

Output convention (CTC ``res_track.txt``): a track holds one object in every frame from its begin B to
its end E. A division ends the mother's track at t and starts one new track per daughter at t + 1 with
the mother as parent (the daughter the mother was linked to frame-to-frame gets a new label too). A
closed gap ends the track before the gap and starts a new track after it, whose parent is the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.errors import DataError
from medseg.tracking.features import (
    FrameObjects,
    _compact,
    _foreground,
    _objects_from_pixels,
    _pair_counts,
    frame_candidates,
)
from medseg.tracking.linking import TrackingParams, _global_links, _link_segments_global, link_frames
from medseg.tracking.merges import daughter_contact, split_merges

__all__ = ["Tracks", "build_tracks", "track_labels"]


@dataclass(frozen=True)
class Tracks:
    """A tracking result in CTC form.

    Attributes:
        masks: (T, H, W) int32 label movie, pixel value = track label, 0 = background.
        table: (N, 4) int64 rows ``(label, begin, end, parent)``, parent 0 = none, labels 1..N in
            order of their begin frame.
    """

    masks: np.ndarray
    table: np.ndarray

    @property
    def divisions(self) -> dict[int, list[int]]:
        """Parent label -> labels of its two or more children (gap continuations are not divisions)."""
        children: dict[int, list[int]] = {}
        for label, parent in self.table[:, [0, 3]]:
            if parent:
                children.setdefault(int(parent), []).append(int(label))
        return {parent: kids for parent, kids in children.items() if len(kids) > 1}


def _check_movie(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise DataError(f"masks must be a (T, H, W) label movie, got shape {masks.shape}")
    if masks.dtype == bool:
        return masks.astype(np.uint8)
    if not np.issubdtype(masks.dtype, np.integer):
        raise DataError(f"masks must hold integer labels, got dtype {masks.dtype}")
    if np.issubdtype(masks.dtype, np.signedinteger):
        for t, frame in enumerate(masks):
            if frame.min() < 0:
                raise DataError(f"masks frame {t} holds negative label {int(frame.min())}")
    return masks


def _frame_labels(frame: np.ndarray) -> np.ndarray:
    values = frame[frame != 0]
    return _compact(values, frame.size)[0] if values.size else np.zeros(0, np.int64)


def _assemble(
    frame: np.ndarray, predecessor: np.ndarray, n_frames: int, min_track_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the link forest into CTC tracks.

    Args:
        frame: (D,) int64 frame of each detection, non-decreasing.
        predecessor: (D,) int64 the detection each one continues (-1 = none); at most one each.
        n_frames: T.
        min_track_length: drop shorter tracks that have no parent and no children.

    Returns:
        ``(track, table)``: (D,) int64 track label of each detection (0 = dropped) and the (N, 4)
        int64 table.
    """
    n = len(frame)
    has_predecessor = predecessor >= 0
    source = np.where(has_predecessor, predecessor, 0)
    successors = np.bincount(predecessor[has_predecessor], minlength=n)
    # A detection continues its predecessor's track only through a one-frame link from a predecessor
    # with no other successor; a division or a closed gap starts new tracks.
    continues = has_predecessor & (successors[source] == 1) & (frame - frame[source] == 1)
    heads = np.flatnonzero(~continues)
    track = np.zeros(n, np.int64)
    track[heads] = np.arange(1, len(heads) + 1)
    bounds = np.searchsorted(frame, np.arange(n_frames + 1))
    for t in range(1, n_frames):
        here = np.arange(bounds[t], bounds[t + 1])
        here = here[continues[here]]
        track[here] = track[predecessor[here]]
    end = np.zeros(len(heads) + 1, np.int64)
    np.maximum.at(end, track, frame)
    begin = frame[heads]
    end = end[1:]
    parent = np.where(has_predecessor[heads], track[source[heads]], 0)
    has_children = np.bincount(parent, minlength=len(heads) + 1)[1:] > 0
    drop = (end - begin + 1 < min_track_length) & (parent == 0) & ~has_children
    renumber = np.zeros(len(heads) + 1, np.int64)
    renumber[1:][~drop] = np.arange(1, int((~drop).sum()) + 1)
    table = np.stack([renumber[1:], begin, end, renumber[parent]], 1)[~drop]
    return renumber[track], table.astype(np.int64).reshape(-1, 4)


def _relabel(masks: np.ndarray, labels: list[np.ndarray], track: np.ndarray) -> np.ndarray:
    """(T, H, W) int32 movie with each detection's pixels set to its track label."""
    out = np.zeros(masks.shape, np.int32)
    start = 0
    for t, present in enumerate(labels):
        ids = track[start : start + len(present)].astype(np.int32)
        start += len(present)
        if len(present) == 0:
            continue
        top = int(present[-1])
        if top <= 4 * masks[t].size + 1024:
            lookup = np.zeros(top + 1, np.int32)
            lookup[present] = ids
            np.take(lookup, masks[t], out=out[t])
        else:
            position = np.minimum(np.searchsorted(present, masks[t]), len(present) - 1)
            out[t] = np.where(masks[t] != 0, ids[position], 0)
    return out


def build_tracks(masks: np.ndarray, links: np.ndarray, *, min_track_length: int = 1) -> Tracks:
    """CTC tracks from a label movie and links between its objects (from any tracker).

    Args:
        masks: (T, H, W) int label movie with independent labels per frame, 0 = background.
        links: (L, 4) int rows ``(frame, label, later frame, later label)``: the later object continues
            the earlier one (a later frame more than one ahead is a closed gap; two links from one
            object are a division). Each object may continue at most one other (no merges).
        min_track_length: drop tracks shorter than this with no parent and no children.

    Returns:
        :class:`Tracks` with masks relabelled by track.
    """
    masks = _check_movie(masks)
    labels = [_frame_labels(frame) for frame in masks]
    counts = np.array([len(present) for present in labels], np.int64)
    frame = np.repeat(np.arange(len(masks)), counts)
    detections = np.concatenate(labels) if len(labels) else np.zeros(0, np.int64)
    span = int(detections.max()) + 1 if detections.size else 1
    keys = frame * span + detections
    links = np.unique(np.asarray(links, np.int64).reshape(-1, 4), axis=0)
    bad_frame = (links[:, 0] < 0) | (links[:, 2] >= len(masks)) | (links[:, 0] >= links[:, 2])
    if bad_frame.any():
        row = links[np.argmax(bad_frame)].tolist()
        raise DataError(f"link {row} must go forward in time within frames 0..{len(masks) - 1}")
    ends = []
    for columns in ((0, 1), (2, 3)):
        key = links[:, columns[0]] * span + links[:, columns[1]]
        position = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
        missing = (links[:, columns[1]] <= 0) | (links[:, columns[1]] >= span)
        missing |= keys[position] != key if len(keys) else np.ones(len(key), bool)
        if missing.any():
            f, label = links[np.argmax(missing), list(columns)].tolist()
            raise DataError(f"link names label {label} in frame {f}, which is not in masks")
        ends.append(position)
    earlier, later = ends
    if len(later) and np.bincount(later).max() > 1:
        twice = np.flatnonzero(np.bincount(later) > 1)[0]
        raise DataError(
            f"label {detections[twice]} in frame {frame[twice]} continues two objects: "
            "CTC tracks cannot merge"
        )
    predecessor = np.full(len(frame), -1, np.int64)
    predecessor[later] = earlier
    track, table = _assemble(frame, predecessor, len(masks), min_track_length)
    return Tracks(_relabel(masks, labels, track), table)


def _lasting_divisions(
    divisions: np.ndarray,
    gaps: np.ndarray,
    successor: np.ndarray,
    frame: np.ndarray,
    n_frames: int,
    min_frames: int,
) -> np.ndarray:
    """The (V, 2) mother -> daughter links whose two daughters both last ``min_frames`` frames.

    A daughter lasts from its first frame to the end of its branch (frame links and closed gaps), or
    reaches the movie's last frame. A "daughter" gone after a frame or two is nearly always a
    segmentation that split a nucleus for a moment (or two touching nuclei that parted), not a mitosis.
    """
    if len(divisions) == 0 or min_frames <= 1:
        return divisions
    following = successor.copy()
    following[gaps[:, 0]] = gaps[:, 1]
    last = frame.copy()
    starts = np.searchsorted(frame, np.arange(n_frames + 1))  # detections are ordered by frame
    for t in range(n_frames - 1, -1, -1):  # later frames first: where a branch ends is known
        index = np.arange(starts[t], starts[t + 1])
        nxt = following[index]
        last[index] = np.where(nxt >= 0, last[np.maximum(nxt, 0)], frame[index])

    def lasts(start: np.ndarray) -> np.ndarray:
        return (last[start] - frame[start] + 1 >= min_frames) | (last[start] == n_frames - 1)

    mother, daughter = divisions[:, 0], divisions[:, 1]
    return divisions[lasts(daughter) & lasts(successor[mother])]


def _next_frame(
    masks: np.ndarray, t: int, pixels: tuple[np.ndarray, np.ndarray], size: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Overlaps of frame t (given by its foreground ``pixels``) with frame t + 1, and t + 1's pixels."""
    # The overlap table only needs the next frame's values under this frame's foreground.
    below = masks[t + 1].reshape(-1)[pixels[0]]
    shared = below != 0
    return _pair_counts(pixels[1][shared], below[shared], size), _foreground(masks[t + 1])


def _apart_divisions(
    divisions: np.ndarray,
    successor: np.ndarray,
    masks: np.ndarray,
    objects: list[FrameObjects],
    frame: np.ndarray,
    max_contact: float,
) -> np.ndarray:
    """The (V, 2) mother -> daughter links whose daughters share at most ``max_contact`` times the
    smaller one's equivalent diameter of border in their first frame (a loop over the few divisions)."""
    if len(divisions) == 0:
        return divisions
    label = np.concatenate([o.label for o in objects])
    area = np.concatenate([o.area for o in objects])
    objects_bbox = np.concatenate([o.bbox for o in objects])
    keep = np.ones(len(divisions), bool)
    for k, (mother, daughter) in enumerate(divisions.tolist()):
        sister = int(successor[mother])
        t = int(frame[daughter])
        diameter = 2 * np.sqrt(min(area[daughter], area[sister]) / np.pi)
        box = np.concatenate([objects_bbox[daughter], objects_bbox[sister]]).reshape(2, 4)
        row0, col0 = np.maximum(box[:, :2].min(0) - 1, 0)
        row1, col1 = box[:, 2:].max(0) + 1
        window = masks[t, row0:row1, col0:col1]  # both daughters and a one-pixel margin
        contact = daughter_contact(window, int(label[daughter]), int(label[sister]))
        keep[k] = contact <= max_contact * diameter
    return divisions[keep]


def track_labels(masks: np.ndarray, params: TrackingParams | None = None) -> Tracks:
    """Track the objects of a per-frame segmentation: frame linking, gap closing, divisions, CTC export.

    With ``params.split_merges`` (the default) an object that merges two objects of the frame before is
    first cut in two (:func:`~medseg.tracking.merges.split_merges`), so the result's masks can hold more
    objects than the input; the input is never modified.

    Args:
        masks: (T, H, W) int label movie with INDEPENDENT labels per frame (as a per-frame segmentation
            gives them), 0 = background.
        params: tracker settings; None = :class:`TrackingParams` defaults.

    Returns:
        :class:`Tracks`: ``masks`` (T, H, W) int32 relabelled by track (1..N) and the (N, 4) int64
        table ``(label, begin, end, parent)``.

    Example:
        >>> import numpy as np
        >>> movie = np.zeros((3, 8, 8), np.int32)
        >>> movie[0, 1:3, 1:3], movie[1, 2:4, 2:4], movie[2, 3:5, 3:5] = 5, 9, 2
        >>> track_labels(movie).table.tolist()
        [[1, 0, 2, 0]]
    """
    params = params or TrackingParams()
    masks = _check_movie(masks)
    n_frames = len(masks)
    if n_frames == 0:
        return Tracks(np.zeros(masks.shape, np.int32), np.zeros((0, 4), np.int64))
    size = masks[0].size
    pixels = _foreground(masks[0])
    objects = [_objects_from_pixels(*pixels, masks.shape[1:])]
    candidates, frame_links = [], []
    owned = False
    for t in range(n_frames - 1):
        overlaps, next_pixels = _next_frame(masks, t, pixels, size)
        next_objects = _objects_from_pixels(*next_pixels, masks.shape[1:])
        if params.split_merges:
            cut = split_merges(
                masks[t],
                masks[t + 1],
                min_overlap=params.merge_overlap,
                divided_overlap=params.merge_divided_overlap,
                max_solidity=params.merge_max_solidity,
                max_contact=params.max_daughter_contact,
                overlaps=overlaps,
                objects=(objects[t], next_objects),
            )
            if cut is not None:
                if not owned:  # copy the movie only when a frame changes (and widen uint16 labels)
                    masks, owned = masks.astype(np.int32, copy=True), True
                masks[t + 1] = cut
                overlaps, next_pixels = _next_frame(masks, t, pixels, size)
                next_objects = _objects_from_pixels(*next_pixels, masks.shape[1:])
        pixels = next_pixels
        objects.append(next_objects)
        pairs = frame_candidates(objects[t], objects[t + 1], params.max_distance, overlaps)
        candidates.append(pairs)
        frame_links.append(link_frames(objects[t], objects[t + 1], params, candidates=pairs))
    successor, predecessor = _global_links(objects, frame_links)
    gaps, divisions = _link_segments_global(objects, successor, predecessor, candidates, params)
    counts = np.array([len(o) for o in objects], np.int64)
    frame = np.repeat(np.arange(n_frames), counts)
    divisions = _lasting_divisions(divisions, gaps, successor, frame, n_frames, params.min_daughter_frames)
    divisions = _apart_divisions(divisions, successor, masks, objects, frame, params.max_daughter_contact)
    for pairs in (gaps, divisions):
        predecessor[pairs[:, 1]] = pairs[:, 0]
    track, table = _assemble(frame, predecessor, n_frames, params.min_track_length)
    return Tracks(_relabel(masks, [o.label for o in objects], track), table)
