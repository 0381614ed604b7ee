"""File input/output: images, label masks, atomic writes. No torch."""

from medseg.io.atomic import (
    atomic_path,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from medseg.io.images import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    is_image_file,
    read_image,
    read_label,
    write_image,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "atomic_path",
    "is_image_file",
    "read_image",
    "read_label",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_image",
    "write_json_atomic",
    "write_text_atomic",
]
