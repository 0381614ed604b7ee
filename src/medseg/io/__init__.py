"""File input/output: images, label masks, atomic writes. No torch."""

from medseg.io.atomic import (
    atomic_path,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from medseg.io.ctc import (
    CtcGroundTruth,
    check_tracks,
    list_frames,
    read_ctc_ground_truth,
    read_frames,
    read_label_frames,
    read_track_table,
    write_ctc_result,
    write_frames,
    write_track_table,
)
from medseg.io.images import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    is_image_file,
    read_image,
    read_label,
    write_image,
)
from medseg.io.lazy import open_image_lazily
from medseg.io.nifti import NiftiVolume, read_nifti, read_nifti_label, write_nifti

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "CtcGroundTruth",
    "NiftiVolume",
    "atomic_path",
    "check_tracks",
    "is_image_file",
    "list_frames",
    "open_image_lazily",
    "read_ctc_ground_truth",
    "read_frames",
    "read_image",
    "read_label",
    "read_label_frames",
    "read_nifti",
    "read_nifti_label",
    "read_track_table",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_ctc_result",
    "write_frames",
    "write_image",
    "write_json_atomic",
    "write_nifti",
    "write_text_atomic",
    "write_track_table",
]
