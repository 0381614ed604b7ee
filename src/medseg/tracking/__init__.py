"""Cell tracking by linear assignment (NumPy/SciPy/scikit-image only, never torch).

- :mod:`medseg.tracking.features`: per-frame object features (area, centroid, bounding box) and the
  sparse pixel-overlap table of consecutive frames, without per-object loops.
- :mod:`medseg.tracking.linking`: :class:`TrackingParams`, frame-to-frame linking and the segment step
  (gap closing and divisions), each one global assignment.
- :mod:`medseg.tracking.merges`: :func:`split_merges` (cut an object that merges two objects of the
  previous frame) and :func:`daughter_contact` (the border two objects share).
- :mod:`medseg.tracking.tracks`: :func:`track_labels` (per-frame segmentation in, CTC tracks out) and
  :func:`build_tracks` (CTC tracks from any tracker's links).
"""

from medseg.tracking.features import (
    FrameCandidates,
    FrameObjects,
    frame_candidates,
    frame_objects,
    object_overlaps,
)
from medseg.tracking.linking import TrackingParams, assign, link_frames, link_segments
from medseg.tracking.merges import daughter_contact, split_merged_objects, split_merges
from medseg.tracking.tracks import Tracks, build_tracks, track_labels

__all__ = [
    "FrameCandidates",
    "FrameObjects",
    "TrackingParams",
    "Tracks",
    "assign",
    "build_tracks",
    "daughter_contact",
    "frame_candidates",
    "frame_objects",
    "link_frames",
    "link_segments",
    "object_overlaps",
    "split_merged_objects",
    "split_merges",
    "track_labels",
]
