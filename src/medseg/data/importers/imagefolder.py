"""Import a class-per-folder image set (``root/<class>/*.png``) into medseg's classification layout.

The result is ``dst/<class>/...`` (the files copied byte for byte, nested folders kept) and
``dst/labels.csv`` with the columns ``path,label,group`` that
:func:`~medseg.data.classification.open_classification_dataset` reads. The group column keeps images
of one patient (slide, smear) on one side of a train/validation split: with ``group_by`` it is the
regex's first group on the file stem, else each image is its own group.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from medseg.data.classification import open_classification_dataset
from medseg.data.importers.common import check_destination, staging
from medseg.data.splits import group_of
from medseg.errors import ConfigError, DataError
from medseg.io import read_image, write_csv_atomic


def import_imagefolder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    group_by: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy a class-per-folder set to ``dst`` and write ``dst/labels.csv`` (path, label, group).

    Args:
        src: folder with one subfolder per class (hidden files and folders, and files directly in
            ``src``, are skipped).
        dst: folder to create, outside ``src``; it must be missing or empty unless ``overwrite``.
        group_by: regex on the file stem whose first group (or whole match) is the group, e.g.
            ``"^(patient\\d+)_"``; every file must match it.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path; train on ``dst/labels.csv`` so the groups are used.

    Raises:
        DataError: ``src`` is not a class-per-folder set, a class folder is empty, an image does not
            decode, ``dst`` lies inside ``src``, or ``dst`` is not empty.
        ConfigError: ``group_by`` is not a valid regex or does not match a file.
    """
    src, dst = Path(src), Path(dst)
    dataset = open_classification_dataset(src)
    if dataset.layout != "folders":
        raise DataError(f"{src}: expected a folder with one subfolder per class")
    if dst.resolve().is_relative_to(src.resolve()):
        raise DataError(f"{dst}: lies inside the source {src}; it would become a class folder")
    for name, count in dataset.class_counts().items():
        if count == 0:
            raise DataError(f"{src / name}: class folder holds no images")
    pattern = _compile(group_by)
    if pattern is not None:
        unmatched = [item.path for item in dataset.items if not pattern.search(item.path.stem)]
        if unmatched:
            shown = ", ".join(str(p) for p in unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
            raise ConfigError(f"--group-by {group_by!r} matches no part of {len(unmatched)} file(s): {shown}")
    check_destination(src, dst, overwrite, kind="source folder")
    rows = []
    for item in dataset.items:
        read_image(item.path)  # a file that does not decode stops the import here, naming it
        rel = item.path.relative_to(src)
        group = group_of(item.path.stem, group_by) if group_by else rel.with_suffix("").as_posix()
        rows.append({"path": rel.as_posix(), "label": dataset.class_names[item.label], "group": group})
    with staging(dst) as tmp:
        for item, row in zip(dataset.items, rows):
            target = tmp / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.path, target)
        write_csv_atomic(tmp / "labels.csv", rows, fieldnames=("path", "label", "group"))
    return dst


def _compile(group_by: str | None) -> re.Pattern[str] | None:
    if not group_by:
        return None
    try:
        return re.compile(group_by)
    except re.error as exc:
        raise ConfigError(f"--group-by: invalid regex {group_by!r} ({exc})") from None
