"""Image classification datasets: one folder per class, or a CSV of ``path,label[,group]`` (no torch).

Two layouts are read:

- class-per-folder: ``DATASET/<class>/*.png`` (any image suffix medseg reads, in nested folders too);
  hidden files and folders are skipped, as are files directly in ``DATASET`` (a ``labels.csv`` or
  README beside the class folders). Each image is its own group.
- CSV: a header row with the columns ``path`` and ``label`` and optionally ``group`` (the patient,
  slide or smear an image comes from, so that a split never puts one group on both sides). Paths are
  relative to the CSV's folder (absolute paths are kept); cells are plain text, nothing is evaluated.

Class ids follow the sorted class names in both layouts, so ids do not depend on file or row order;
pass ``classes`` to fix the names and their order instead (for example a trained model's classes, when a
test set lacks one of them).
"""

from __future__ import annotations

import csv as csvlib
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.dataset import CheckReport
from medseg.data.splits import group_of, make_split
from medseg.errors import DataError
from medseg.io import IMAGE_SUFFIXES, read_image

CSV_COLUMNS = ("path", "label", "group")
_REQUIRED = ("path", "label")


@dataclass(frozen=True)
class ClassificationItem:
    """One labelled image: its file, its class id and its group (for leakage-free splits)."""

    path: Path
    label: int
    group: str


@dataclass
class ClassificationDataset:
    """A classification set on disk: where it is, its images and its classes."""

    root: Path  # the dataset folder, or the CSV's folder
    layout: str  # "folders" | "csv"
    class_names: list[str]  # in class id order
    items: list[ClassificationItem]
    source: Path  # the dataset folder or the CSV file, for messages

    def class_counts(self) -> dict[str, int]:
        """Number of images per class, every class listed (0 for an empty one), in class id order."""
        counts = Counter(item.label for item in self.items)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def imbalance(self) -> dict:
        """How uneven the classes are.

        Returns:
            ``{"largest": name, "smallest": name, "ratio": largest count / smallest count}``; the
            ratio is ``inf`` when a class has no images and NaN when there are no classes.
        """
        counts = self.class_counts()
        if not counts:
            return {"largest": None, "smallest": None, "ratio": math.nan}
        largest = max(counts, key=lambda name: counts[name])
        smallest = min(counts, key=lambda name: counts[name])
        low, high = counts[smallest], counts[largest]
        return {"largest": largest, "smallest": smallest, "ratio": high / low if low else math.inf}

    def split(self, *, val_fraction: float = 0.2, seed: int = 0, group_by: str = "") -> dict[str, list[int]]:
        """Split item indices into train and val with no group on both sides (see :func:`make_split`).

        Args:
            val_fraction: target fraction of images for validation.
            seed: split seed.
            group_by: a regex on the file name stem whose first group is the group key (e.g.
                ``r"^(smear_\\d+)_"``); empty uses each item's own group.

        Returns:
            ``{"train": [...], "val": [...]}`` sorted item indices.
        """
        groups = [group_of(item.path.stem, group_by) if group_by else item.group for item in self.items]
        # make_split groups names with a regex: key each image "group\0path" and capture the group
        index = {f"{group}\0{item.path}": i for i, (group, item) in enumerate(zip(groups, self.items))}
        split = make_split(list(index), val_fraction=val_fraction, seed=seed, group_by=r"^([^\0]*)\0")
        return {part: sorted(index[name] for name in split[part]) for part in ("train", "val")}


def open_classification_dataset(
    path: str | os.PathLike[str],
    *,
    csv: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
) -> ClassificationDataset:
    """Find the images and labels of a classification set.

    Args:
        path: a class-per-folder dataset, or a CSV file.
        csv: a CSV of ``path,label[,group]``; relative to ``path`` when that is a folder and the name
            is not found as given. When set, the class folders are not scanned.
        classes: class names in id order; default the sorted names found.

    Returns:
        The dataset, items in folder/file order (folders) or row order (CSV).

    Raises:
        DataError: the folder or CSV is missing, has no classes, a CSV row is invalid (missing file,
            empty path or label, wrong number of cells, duplicate path), the header has an unknown or
            missing column, or a label is not one of ``classes``.
    """
    root = Path(path)
    if csv is not None:
        csv_path = Path(csv)
        if not csv_path.is_absolute() and not csv_path.exists() and root.is_dir():
            csv_path = root / csv_path
        return _open_csv(csv_path, classes)
    if root.is_file() and root.suffix.lower() == ".csv":
        return _open_csv(root, classes)
    if not root.is_dir():
        raise DataError(f"{root}: classification dataset folder not found")
    return _open_folders(root, classes)


def _open_folders(root: Path, classes: Sequence[str] | None) -> ClassificationDataset:
    if (root / "dataset.json").is_file():
        raise DataError(
            f"{root}: holds a segmentation dataset (dataset.json); a classification set has one folder per "
            "class or a path,label CSV"
        )
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected DATASET/<class>/*.png, or pass a CSV)")
    names = _class_names([d.name for d in folders], classes, root)
    ids = {name: i for i, name in enumerate(names)}
    items = []
    for folder in folders:
        if folder.name not in ids:
            raise DataError(f"{folder}: class {folder.name!r} is not one of {', '.join(names)}")
        for file in _images_under(folder):
            rel = file.relative_to(root)
            items.append(ClassificationItem(file, ids[folder.name], rel.with_suffix("").as_posix()))
    return ClassificationDataset(root, "folders", names, items, root)


def _images_under(folder: Path) -> list[Path]:
    """Image files below ``folder``, sorted, skipping hidden files and hidden folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        ]
    return found


def _open_csv(csv_path: Path, classes: Sequence[str] | None) -> ClassificationDataset:
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read CSV ({str(exc).splitlines()[0]})") from None
    rows = list(csvlib.reader(text.splitlines()))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{csv_path}: empty CSV; expected a header row path,label[,group]")
    header = [cell.strip().lower() for cell in rows[0]]
    for column in header:
        if column not in CSV_COLUMNS:
            raise DataError(f"{csv_path}: unknown column {column!r} (expected path,label[,group])")
    for column in _REQUIRED:
        if column not in header:
            raise DataError(f"{csv_path}: missing column {column!r} (expected path,label[,group])")
    if len(set(header)) != len(header):
        raise DataError(f"{csv_path}: a column appears twice in the header {','.join(header)}")
    folder = csv_path.parent
    records: list[tuple[int, Path, str, str]] = []
    seen: dict[Path, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        where = f"{csv_path}, row {line}"
        if len(row) != len(header):
            raise DataError(f"{where}: {len(row)} cells but the header has {len(header)}")
        cells = {column: cell.strip() for column, cell in zip(header, row)}
        if not cells["path"]:
            raise DataError(f"{where}: empty path")
        if not cells["label"]:
            raise DataError(f"{where}: empty label for {cells['path']}")
        file = Path(cells["path"])
        file = file if file.is_absolute() else folder / file
        if not file.is_file():
            raise DataError(f"{where}: image {cells['path']} not found (looked for {file})")
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{where}: {cells['path']} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        if file in seen:
            raise DataError(f"{where}: {cells['path']} is already listed in row {seen[file]}")
        seen[file] = line
        group = cells.get("group") or Path(cells["path"]).with_suffix("").as_posix()
        records.append((line, file, cells["label"], group))
    names = _class_names(sorted({label for _, _, label, _ in records}), classes, csv_path)
    ids = {name: i for i, name in enumerate(names)}
    items = []
    for line, file, label, group in records:
        if label not in ids:
            raise DataError(f"{csv_path}, row {line}: label {label!r} is not one of {', '.join(names)}")
        items.append(ClassificationItem(file, ids[label], group))
    return ClassificationDataset(folder, "csv", names, items, csv_path)


def _class_names(found: list[str], classes: Sequence[str] | None, source: Path) -> list[str]:
    if classes is None:
        return sorted(found)
    names = [str(name) for name in classes]
    if len(set(names)) != len(names) or not names:
        raise DataError(f"{source}: classes must be distinct, non-empty names, got {','.join(names)}")
    return names


def load_classification_image(item: ClassificationItem) -> np.ndarray:
    """Read an item's image as ``(H, W, C)`` in its stored dtype (a grey image gets C = 1).

    Raises:
        DataError: the file is unreadable.
    """
    image = read_image(item.path)
    return image[..., None] if image.ndim == 2 else image


def check_classification_dataset(
    path: str | os.PathLike[str],
    *,
    csv: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
) -> CheckReport:
    """Validate a classification set, listing every problem at once rather than stopping at the first.

    Checks: the folder or CSV opens, it has at least two classes, every class has at least two images
    (one for training and one for validation), every image decodes, and all images have the same number
    of channels.

    Args:
        path: a class-per-folder dataset, or a CSV file.
        csv: a CSV of ``path,label[,group]`` (see :func:`open_classification_dataset`).
        classes: class names in id order.

    Returns:
        A report with ``problems`` (one line each, naming the file) and ``summary`` (dataset, layout,
        images, groups, class_counts, imbalance, channels, sizes).
    """
    try:
        dataset = open_classification_dataset(path, csv=csv, classes=classes)
    except DataError as exc:
        return CheckReport([str(exc)], {})
    problems: list[str] = []
    if not dataset.items:
        problems.append(f"{dataset.source}: dataset is empty (no image files found)")
    if len(dataset.class_names) < 2:
        problems.append(f"{dataset.source}: needs at least two classes, found {len(dataset.class_names)}")
    counts = dataset.class_counts()
    for name, count in counts.items():
        if count < 2:
            problems.append(
                f"{dataset.source}: class {name!r} has {count} image(s); each class needs at least 2"
            )
    channels: dict[int, list[Path]] = {}
    sizes: Counter[tuple[int, int]] = Counter()
    for item in dataset.items:
        try:
            image = load_classification_image(item)
        except DataError as exc:
            problems.append(str(exc))
            continue
        channels.setdefault(image.shape[-1], []).append(item.path)
        sizes[image.shape[:2]] += 1
    if len(channels) > 1:
        common = max(channels, key=lambda c: len(channels[c]))
        for count, files in sorted(channels.items()):
            if count != common:
                shown = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
                problems.append(
                    f"{shown}: {len(files)} image(s) with {count} channel(s) but most images have {common}"
                )
    imbalance = dataset.imbalance()
    summary = {
        "dataset": str(dataset.source),
        "layout": dataset.layout,
        "images": len(dataset.items),
        "groups": len({item.group for item in dataset.items}),
        "class_counts": counts,
        "imbalance": imbalance,
        "channels": {c: len(files) for c, files in sorted(channels.items())},
        "sizes": {f"{w}x{h}": n for (h, w), n in sizes.most_common()},
    }
    return CheckReport(problems, summary)
