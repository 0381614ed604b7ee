"""Undo merges of a per-frame segmentation with the previous frame's objects (NumPy/SciPy/scikit-image only).

A segmentation that merges two touching nuclei in one frame but kept them apart in the frame before costs
a tracker twice: one of the two tracks ends (or jumps to a neighbour), and when one of the two was a
newborn daughter its division is lost. Cells do not fuse, so an object that is where most of two objects of
the previous frame went, and is not convex (two touching nuclei leave a waist), is taken for a merge and
cut by a watershed on its distance transform, seeded with the parts of it that each previous object
covered. Frames are processed in order, so a merge that lasts several frames is cut in each of them; the
convexity test stops a wrong cut from repeating itself once the object is one round nucleus again.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.errors import DataError
from medseg.tracking.features import FrameObjects, _check_label_image, frame_objects, object_overlaps

__all__ = ["daughter_contact", "split_merged_objects", "split_merges"]

# A piece smaller than this fraction of the previous object that seeds it is a sliver, not a nucleus.
_MIN_PIECE = 0.25


def split_merges(
    before: np.ndarray,
    after: np.ndarray,
    *,
    min_overlap: float = 0.25,
    divided_overlap: float = 0.35,
    max_solidity: float = 0.93,
    max_contact: float = 0.9,
    overlaps: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    objects: tuple[FrameObjects, FrameObjects] | None = None,
) -> np.ndarray | None:
    """Cut the objects of ``after`` that merge two or more objects of ``before``.

    An object P of ``before`` points at the object O of ``after`` that it overlaps most, if that overlap
    is at least ``min_overlap`` of P's area; a P that went into two objects (a mother that divided) also
    points at the second one when at least ``divided_overlap`` of it went there. An O that two or more P
    point at, whose solidity (area over convex hull area) is at most ``max_solidity``, is cut: its pieces
    grow from the pixels under each P (the markers) by a watershed on O's distance transform, so the cut
    follows the waist between the nuclei. The cut is kept only when every piece keeps a quarter of the
    area of the P that seeds it, and no piece seeded by a divided P shares more border with that P's
    main continuation than ``max_contact`` times the smaller one's equivalent diameter (a daughter
    forms apart from her sister; a piece along her is the other half of a nucleus the segmentation cut).

    Args:
        before: (H, W) int labels of frame t (already cut, when frames are processed in order).
        after: (H, W) int labels of frame t + 1, same shape.
        min_overlap: fraction of a previous object that must lie inside O for it to count.
        divided_overlap: the same for the second object a previous object went into; above 0.5 = never.
        max_solidity: only objects at most this convex are cut (on the nuclei movie phantom's
            segmentation, merged pairs measured 0.82-0.94, single nuclei mostly 0.9-0.97).
        max_contact: see above, as :class:`~medseg.tracking.TrackingParams` ``max_daughter_contact``.
        overlaps: :func:`~medseg.tracking.features.object_overlaps` of the two frames, if known.
        objects: :func:`~medseg.tracking.features.frame_objects` of the two frames, if known.

    Returns:
        (H, W) int32 copy of ``after`` where the first piece of a cut object keeps its label and the
        others get new labels above the frame's largest; None when nothing was cut.

    Example:
        >>> before = np.array([[1, 1, 0, 0, 2, 2]])
        >>> split_merges(before, np.array([[5, 5, 5, 5, 5, 5]]), max_solidity=1.0).tolist()
        [[5, 5, 5, 6, 6, 6]]
    """
    before = _check_label_image(before, "before")
    after = _check_label_image(after, "after")
    if before.shape != after.shape:
        raise DataError(f"frames differ in shape: {before.shape} and {after.shape}")
    if overlaps is None:
        overlaps = object_overlaps(before, after)
    label_before, label_after, count = overlaps
    if len(count) == 0:
        return None
    if objects is None:
        objects = (frame_objects(before), frame_objects(after))
    previous, current = objects
    share = count / previous.area[previous.index_of(label_before)]
    # Sorted by label_before, then by decreasing overlap: each P's best row, then its second best.
    order = np.lexsort((-count, label_before))
    first = np.r_[True, label_before[order][1:] != label_before[order][:-1]]
    best, second = order[first], order[np.flatnonzero(first[:-1] & ~first[1:]) + 1]
    best_of = np.full(len(count), -1, np.int64)  # for a second row: the label P went into most
    best_of[order[~first]] = np.repeat(
        label_after[best], np.diff(np.r_[np.flatnonzero(first), len(first)]) - 1
    )
    rows = np.concatenate([best[share[best] >= min_overlap], second[share[second] >= divided_overlap]])
    rows = rows[share[rows] >= min_overlap]
    label_before, label_after, sister = label_before[rows], label_after[rows], best_of[rows]
    merged, claimants = np.unique(label_after, return_counts=True)
    merged = merged[claimants >= 2]
    if len(merged) == 0:
        return None
    out = after.astype(np.int32, copy=True)
    next_label = int(current.label[-1]) + 1
    changed = False
    for label in merged.tolist():
        seeds, sisters = label_before[label_after == label], sister[label_after == label]
        box = current.bbox[current.index_of([label])[0]]
        window = (slice(box[0], box[2]), slice(box[1], box[3]))
        region = out[window] == label
        pieces = _cut(region, before[window], seeds, max_solidity)
        if pieces is None:
            continue
        areas = np.bincount(pieces[region], minlength=len(seeds) + 1)[1:]
        if (areas < _MIN_PIECE * previous.area[previous.index_of(seeds)]).any():
            continue
        if any(
            _along_sister(after, current, box, region & (pieces == k), sibling) > max_contact
            for k, sibling in enumerate(sisters.tolist(), start=1)
            if sibling > 0
        ):
            continue
        new = np.concatenate([[label], next_label + np.arange(len(seeds) - 1)])
        out[window][region] = new[pieces[region] - 1]
        next_label += len(seeds) - 1
        changed = True
    return out if changed else None


def _along_sister(
    after: np.ndarray, current: FrameObjects, box: np.ndarray, piece: np.ndarray, sister: int
) -> float:
    """Border a piece (a mask within ``box``) shares with object ``sister`` of ``after``, over the smaller
    one's equivalent diameter."""
    sister_box = current.bbox[current.index_of([sister])[0]]
    row0, col0 = np.maximum(np.minimum(box[:2], sister_box[:2]) - 1, 0)
    row1, col1 = np.minimum(np.maximum(box[2:], sister_box[2:]) + 1, after.shape)
    canvas = np.zeros((row1 - row0, col1 - col0), np.int32)
    canvas[after[row0:row1, col0:col1] == sister] = 2
    canvas[box[0] - row0 : box[2] - row0, box[1] - col0 : box[3] - col0][piece] = 1
    smaller = min(int(piece.sum()), int((canvas == 2).sum()))
    return daughter_contact(canvas, 1, 2) / (2 * np.sqrt(smaller / np.pi)) if smaller else 0.0


def _cut(region: np.ndarray, before: np.ndarray, seeds: np.ndarray, max_solidity: float) -> np.ndarray | None:
    """(h, w) int32 piece 1..K of each pixel of ``region`` (0 outside), seeded by ``before == seeds[k]``;
    None when the region is too convex to be a merge or a seed got no piece."""
    from skimage.morphology import convex_hull_image
    from skimage.segmentation import watershed

    if region.sum() > max_solidity * convex_hull_image(region).sum():
        return None
    markers = np.zeros(region.shape, np.int32)
    for k, seed in enumerate(seeds.tolist(), start=1):
        markers[region & (before == seed)] = k
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    pieces = watershed(-distance, markers, mask=region)
    if len(np.unique(pieces[region])) < len(seeds):
        return None
    return pieces.astype(np.int32)


def split_merged_objects(masks: np.ndarray, **settings: float) -> np.ndarray:
    """Apply :func:`split_merges` frame after frame to a label movie (each frame against the cut one before).

    Args:
        masks: (T, H, W) int label movie, labels independent per frame, 0 = background.
        **settings: ``min_overlap``, ``divided_overlap``, ``max_solidity``, ``max_contact`` of
            :func:`split_merges`.

    Returns:
        (T, H, W) int32 movie with merged objects cut; frame 0 is unchanged.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise DataError(f"masks must be a (T, H, W) label movie, got shape {masks.shape}")
    out = masks.astype(np.int32, copy=True)
    for t in range(1, len(out)):
        cut = split_merges(out[t - 1], out[t], **settings)
        if cut is not None:
            out[t] = cut
    return out


def daughter_contact(labels: np.ndarray, first: int, second: int) -> float:
    """Length in pixels of the border two objects share: the mean of how many pixels of each touch the other.

    Counting pixels (4-neighbours) rather than neighbour pairs keeps a slanted border from counting up to
    twice as long as a straight one.

    Args:
        labels: (H, W) int label image.
        first: one object's label.
        second: the other's.

    Returns:
        The shared border length, 0.0 when the objects do not touch.

    Example:
        >>> daughter_contact(np.array([[1, 1, 2], [1, 1, 2]]), 1, 2)
        2.0
    """
    rows, cols = np.nonzero((labels == first) | (labels == second))
    if rows.size == 0:
        return 0.0
    window = labels[max(rows.min() - 1, 0) : rows.max() + 2, max(cols.min() - 1, 0) : cols.max() + 2]
    a, b = window == first, window == second
    return 0.5 * float((a & _grow(b)).sum() + (b & _grow(a)).sum())


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one pixel along rows and columns."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out
