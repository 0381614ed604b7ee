"""Importers: convert other dataset layouts into the native (nnU-Net v2 raw) layout.

Each importer is ``fn(src, dst, **options) -> Path`` and writes a complete dataset folder at ``dst`` (or
nothing). :data:`IMPORTERS` maps the format names of ``medseg data import FORMAT SRC DST`` to them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.data.importers.cellpose import CELLPOSE_LABELS, import_cellpose, load_seg_file
from medseg.data.importers.coco import coco_string_to_counts, decode_coco_rle, import_coco
from medseg.data.importers.ctc import CTC_LABELS, import_ctc
from medseg.data.importers.deepcell import DEEPCELL_LABELS, import_deepcell
from medseg.data.importers.folders import MASK_SUFFIXES, import_folders
from medseg.data.importers.imagefolder import import_imagefolder
from medseg.data.importers.msd import import_msd, stack_slices
from medseg.data.importers.uwmadison import UWMADISON_CLASSES, UWMADISON_LABELS, import_uwmadison
from medseg.errors import ConfigError

IMPORTERS: dict[str, Callable[..., Path]] = {
    "cellpose": import_cellpose,
    "coco": import_coco,
    "ctc": import_ctc,
    "deepcell": import_deepcell,
    "folders": import_folders,
    "imagefolder": import_imagefolder,
    "msd": import_msd,
    "nnunet": import_msd,  # one reader for both: dataset.json tells the layouts apart
    "uw-madison-gi": import_uwmadison,
}


def import_dataset(
    format: str, src: str | os.PathLike[str], dst: str | os.PathLike[str], **options: Any
) -> Path:
    """Import the dataset at ``src`` (a file or folder, depending on ``format``) into ``dst``.

    Args:
        format: a key of :data:`IMPORTERS`, e.g. ``"deepcell"``.
        src: what to import.
        dst: the native dataset folder to create.
        **options: keyword options of that importer (see its docstring).

    Returns:
        ``dst`` as a Path.

    Raises:
        ConfigError: unknown format or an option the importer does not take.
        MedsegError: whatever the importer finds wrong with ``src`` or ``dst``.
    """
    if format not in IMPORTERS:
        raise ConfigError(f"unknown import format {format!r}; choose from {', '.join(sorted(IMPORTERS))}")
    importer = IMPORTERS[format]
    try:
        inspect.signature(importer).bind(src, dst, **options)
    except TypeError as exc:
        raise ConfigError(f"{format} import: {exc}") from None
    return importer(src, dst, **options)


__all__ = [
    "CELLPOSE_LABELS",
    "CTC_LABELS",
    "DEEPCELL_LABELS",
    "IMPORTERS",
    "MASK_SUFFIXES",
    "UWMADISON_CLASSES",
    "UWMADISON_LABELS",
    "coco_string_to_counts",
    "decode_coco_rle",
    "import_cellpose",
    "import_coco",
    "import_ctc",
    "import_dataset",
    "import_deepcell",
    "import_folders",
    "import_imagefolder",
    "import_msd",
    "import_uwmadison",
    "load_seg_file",
    "stack_slices",
]
