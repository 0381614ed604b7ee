"""Import the Kaggle "UW-Madison GI Tract Image Segmentation" training set as a native region dataset.

Source layout (as downloaded from Kaggle)::

    SRC/train.csv                      id,class,segmentation   (3 rows per id: one per organ)
    SRC/train/case123/case123_day20/scans/slice_0065_266_266_1.50_1.50.png

``id`` is ``case123_day20_slice_0065``; ``segmentation`` is a Kaggle RLE (:mod:`medseg.io.rle`: 1-based
starts over the row-major flattened ``(H, W)`` slice) or empty. A scan is a 16-bit grey PNG named
``slice_NNNN_W_H_PW_PH.png``: width and height in pixels, then the pixel width and height in mm.

The organs overlap (large and small bowel touch), so the label is a **bitmask** (bit 0 large bowel, bit 1
small bowel, bit 2 stomach: values 0..7) and ``dataset.json`` declares nnU-Net v2 regions, one per organ,
each listing the mask values that contain it. Each kept slice becomes case ``case123_day20_slice_0065``;
with ``context`` K its neighbouring slices of the same case and day become extra channels (2.5D), edge
slices repeated. ``medseg.group_by`` keeps all days of one patient on one side of a split. Only ids in
``train.csv`` are imported (the Kaggle test scans have no rows). Everything is checked before the dataset
is renamed into place, so bad input leaves nothing behind.
"""

from __future__ import annotations

import csv
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.importers.common import check_destination, safe_case_name, staging
from medseg.errors import ConfigError, DataError
from medseg.io import read_image, write_bytes_atomic, write_image, write_json_atomic
from medseg.io.rle import rle_decode

UWMADISON_CLASSES = ("large_bowel", "small_bowel", "stomach")  # class r is bit r of the label mask
UWMADISON_LABELS: dict[str, Any] = {
    "background": 0,
    **{
        name: [value for value in range(1, 2 ** len(UWMADISON_CLASSES)) if value & (1 << bit)]
        for bit, name in enumerate(UWMADISON_CLASSES)
    },
}
UWMADISON_GROUP_BY = r"^(case\d+)_"  # the patient: all their scan days stay on one side of a split
_COLUMNS = ("id", "class", "segmentation")
_ID = re.compile(r"^(?P<case>case\d+)_(?P<day>day\d+)_slice_(?P<slice>\d+)$", re.ASCII)
_SCAN = re.compile(
    r"^slice_(?P<slice>\d+)_(?P<width>\d+)_(?P<height>\d+)_(?P<pw>\d+(?:\.\d+)?)_(?P<ph>\d+(?:\.\d+)?)\.png$",
    re.ASCII,
)
_SCAN_FORM = "slice_NNNN_WIDTH_HEIGHT_PW_PH.png"


@dataclass(frozen=True)
class _Scan:
    """One scan file: its slice number, size and pixel spacing as its name states them."""

    path: Path
    number: int
    height: int
    width: int
    spacing: tuple[float, float]  # (row, column) = (pixel height, pixel width) in mm


@dataclass(frozen=True)
class _Slice:
    """One id of train.csv: its scan and, per organ, the RLE text and the CSV line it is on."""

    id: str
    scan: _Scan
    rles: dict[str, tuple[str, int]]

    @property
    def empty(self) -> bool:
        return not any(text.strip() for text, _ in self.rles.values())


def import_uwmadison(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    context: int = 0,
    keep_empty: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert the UW-Madison GI tract training set into a native 2D region dataset.

    Writes ``imagesTr/{id}_{c:04d}.png`` (a copy of the scan PNG, 16-bit grey ``(H, W)``; with ``context`` K,
    channels ``c = 0 .. 2K`` are slices ``n - K .. n + K`` of the same case and day in slice order, edge
    slices repeated), ``labelsTr/{id}.png`` (uint8 ``(H, W)`` bitmask: 1 large bowel, 2 small bowel,
    4 stomach, summed where organs overlap) and ``dataset.json`` with region labels
    (:data:`UWMADISON_LABELS`), ``regions_class_order``, and in ``medseg`` the group regex, options and
    each scan day's image size and pixel spacing.

    Args:
        src: the competition folder holding ``train.csv`` and ``train/``.
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        context: neighbouring slices on each side added as channels (0 = plain 2D).
        keep_empty: fraction (0..1) of each scan day's slices without any organ to keep, chosen at random
            with ``seed`` and the day's name, so re-importing gives the same slices.
        seed: seed of that choice.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``train.csv`` is missing, lacks a column, or has a bad row (unknown id form or class,
            duplicate or missing organ row, malformed RLE or a run outside the image; the line is named);
            a scan is missing, ambiguous, misnamed, not 8/16-bit grey, or not the size its name states;
            or ``dst`` is not empty.
        ConfigError: an option is out of range.
    """
    src, dst = Path(src), Path(dst)
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ConfigError(f"--context must be a whole number >= 0, got {context!r}")
    if not 0.0 <= float(keep_empty) <= 1.0:
        raise ConfigError(f"--keep-empty must be a fraction between 0 and 1, got {keep_empty}")
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    csv_path = src / "train.csv"
    rows = _read_csv(csv_path)
    days = _find_slices(src, csv_path, rows)
    check_destination(src, dst, overwrite, kind="source folder")
    records: dict[str, dict[str, Any]] = {}
    total = 0
    with staging(dst) as tmp:
        for day, (slices, scans) in days.items():
            kept, empty_kept = _slices_to_keep(slices, keep_empty, seed, day)
            _write_day(tmp, csv_path, scans, kept, context)
            first = slices[0].scan
            records[day] = {
                "scans": str(first.path.parent.relative_to(src)),
                "image_size": [first.height, first.width],
                "pixel_spacing": list(first.spacing),
                "slices": len(slices),
                "slices_kept": len(kept),
                "empty_slices_kept": empty_kept,
            }
            total += len(kept)
        if total == 0:
            raise DataError(f"{csv_path}: no slice to import (no organ and --keep-empty {keep_empty})")
        cases = len({day.split("_")[0] for day in records})
        write_json_atomic(
            tmp / "dataset.json",
            {
                "name": safe_case_name(src.resolve().name, "uw-madison-gi"),
                "channel_names": _channel_names(context),
                "labels": UWMADISON_LABELS,
                "regions_class_order": list(range(1, len(UWMADISON_CLASSES) + 1)),
                "numTraining": total,
                "file_ending": ".png",
                "medseg": {
                    "task": "semantic",
                    "source": _command(src, dst, context, keep_empty, seed),
                    "source_layout": "uw-madison-gi",
                    "group_by": UWMADISON_GROUP_BY,
                    "context": context,
                    "keep_empty": float(keep_empty),
                    "seed": seed,
                    "label_bits": {name: 1 << bit for bit, name in enumerate(UWMADISON_CLASSES)},
                    "days": records,
                    "notes": [
                        f"{total} slices of {len(records)} scan days of {cases} patients",
                        "labels are bitmasks (1 large_bowel + 2 small_bowel + 4 stomach): overlaps are kept",
                        "image_size is [height, width] in pixels, pixel_spacing [row, column] in mm",
                        "group_by keeps each patient's days on one side of a split",
                    ],
                },
            },
        )
    return dst


def _read_csv(path: Path) -> dict[str, dict[str, tuple[str, int]]]:
    """``{id: {class: (rle, line)}}`` from train.csv, in file order, after checking every row."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; the UW-Madison folder needs its train.csv and train/")
    rows: dict[str, dict[str, tuple[str, int]]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(_COLUMNS)}"
                )
            for row in reader:
                line = reader.line_num
                slice_id, organ = (row["id"] or "").strip(), (row["class"] or "").strip()
                if not _ID.match(slice_id):
                    raise DataError(f"{path}: line {line}: id {slice_id!r} is not caseN_dayM_slice_NNNN")
                if organ not in UWMADISON_CLASSES:
                    raise DataError(
                        f"{path}: line {line}: unknown class {organ!r}; expected one of "
                        f"{', '.join(UWMADISON_CLASSES)}"
                    )
                organs = rows.setdefault(slice_id, {})
                if organ in organs:
                    raise DataError(
                        f"{path}: line {line}: {slice_id} {organ} repeats line {organs[organ][1]}"
                    )
                organs[organ] = (row["segmentation"] or "", line)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({str(exc).splitlines()[0]})") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    for slice_id, organs in rows.items():
        absent = [c for c in UWMADISON_CLASSES if c not in organs]
        if absent:
            line = min(line for _, line in organs.values())
            raise DataError(
                f"{path}: line {line}: {slice_id} has no row for {', '.join(absent)} (each id needs one "
                f"row per class: {', '.join(UWMADISON_CLASSES)})"
            )
    return rows


def _find_slices(
    src: Path, csv_path: Path, rows: dict[str, dict[str, tuple[str, int]]]
) -> dict[str, tuple[list[_Slice], list[_Scan]]]:
    """Per scan day (``case123_day20``, sorted): its CSV slices in slice order and all its scans in slice
    order (the context neighbours), after checking every CSV id has exactly one well-named scan."""
    by_day: dict[str, list[str]] = {}
    for slice_id in rows:
        match = _ID.match(slice_id)
        assert match is not None  # checked by _read_csv
        by_day.setdefault(f"{match['case']}_{match['day']}", []).append(slice_id)
    days: dict[str, tuple[list[_Slice], list[_Scan]]] = {}
    for day in sorted(by_day):
        case = day.split("_")[0]
        folder = src / "train" / case / day / "scans"
        scans = _scans_of(folder) if folder.is_dir() else {}
        slices = []
        for slice_id in by_day[day]:
            number = int(slice_id.rsplit("_", 1)[1])
            if number not in scans:
                line = min(line for _, line in rows[slice_id].values())
                pattern = folder / f"slice_{slice_id.rsplit('_', 1)[1]}_*.png"
                raise DataError(f"{pattern}: scan not found for {slice_id} ({csv_path.name} line {line})")
            slices.append(_Slice(slice_id, scans[number], rows[slice_id]))
        slices.sort(key=lambda s: s.scan.number)
        first = slices[0].scan
        for scan in scans.values():
            if (scan.height, scan.width, scan.spacing) != (first.height, first.width, first.spacing):
                raise DataError(
                    f"{scan.path}: name says {_describe(scan)} but {first.path.name} of the same scan day "
                    f"says {_describe(first)}"
                )
        days[day] = (slices, [scans[n] for n in sorted(scans)])
    return days


def _scans_of(folder: Path) -> dict[int, _Scan]:
    """The ``slice_*.png`` files of one scans folder by slice number, each name checked."""
    scans: dict[int, _Scan] = {}
    for path in sorted(folder.glob("slice_*")):
        if not path.is_file() or path.suffix.lower() != ".png":
            continue
        match = _SCAN.match(path.name)
        if match is None:
            raise DataError(f"{path}: scan name does not parse as {_SCAN_FORM}")
        number = int(match["slice"])
        if number in scans:
            raise DataError(f"{path}: slice {number} again (also {scans[number].path.name})")
        height, width = int(match["height"]), int(match["width"])
        if height == 0 or width == 0:
            raise DataError(f"{path}: scan name gives a {width}x{height} (WxH) image")
        scans[number] = _Scan(path, number, height, width, (float(match["ph"]), float(match["pw"])))
    return scans


def _describe(scan: _Scan) -> str:
    return f"{scan.width}x{scan.height} (WxH) at {scan.spacing[1]:g}x{scan.spacing[0]:g} mm"


def _slices_to_keep(slices: list[_Slice], keep_empty: float, seed: int, day: str) -> tuple[list[_Slice], int]:
    """All slices with an organ and a seeded fraction of the others (in slice order), and how many of
    those are empty."""
    empty = [i for i, s in enumerate(slices) if s.empty]
    count = math.floor(keep_empty * len(empty) + 0.5)
    # Seeded by the day's name too, so a day keeps the same slices whatever else is imported.
    rng = np.random.default_rng([seed, zlib.crc32(day.encode("utf-8"))])
    chosen = set(rng.choice(empty, size=count, replace=False).tolist()) if count else set()
    kept = [s for i, s in enumerate(slices) if not s.empty or i in chosen]
    return kept, count


def _write_day(folder: Path, csv_path: Path, scans: list[_Scan], kept: list[_Slice], context: int) -> None:
    """Write the kept slices of one scan day: the scan (and its neighbours) and the organ bitmask.

    A scan's PNG is copied byte for byte once its pixels are checked: its bit depth and values are kept
    exactly, and no slice is re-encoded however many cases use it as context.
    """
    position = {scan.number: p for p, scan in enumerate(scans)}
    checked: dict[int, bytes] = {}  # each scan of the day read and checked once
    for item in kept:
        p = position[item.scan.number]
        for c, offset in enumerate(range(-context, context + 1)):
            neighbour = scans[min(max(p + offset, 0), len(scans) - 1)]
            if neighbour.number not in checked:
                _check_scan(neighbour)
                checked[neighbour.number] = neighbour.path.read_bytes()
            write_bytes_atomic(folder / "imagesTr" / f"{item.id}_{c:04d}.png", checked[neighbour.number])
        write_image(folder / "labelsTr" / f"{item.id}.png", _bitmask(csv_path, item))


def _check_scan(scan: _Scan) -> None:
    """Check that a scan decodes to ``(H, W)`` uint16 or uint8 pixels of the size its name states."""
    image = read_image(scan.path)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        channels = f"{image.shape[-1]} channels" if image.ndim == 3 else "one channel"
        raise DataError(f"{scan.path}: is {image.dtype} with {channels}; expected a 16- or 8-bit grey scan")
    if image.shape != (scan.height, scan.width):
        raise DataError(
            f"{scan.path}: is {image.shape[1]}x{image.shape[0]} (WxH) but its name says "
            f"{scan.width}x{scan.height}"
        )


def _bitmask(csv_path: Path, item: _Slice) -> np.ndarray:
    """``(H, W)`` uint8: bit r set where organ r of :data:`UWMADISON_CLASSES` is."""
    mask = np.zeros((item.scan.height, item.scan.width), dtype=np.uint8)
    for bit, organ in enumerate(UWMADISON_CLASSES):
        text, line = item.rles[organ]
        if text.strip():
            where = f"{csv_path}: line {line} ({item.id} {organ}, scan {item.scan.path.name})"
            organ_mask = rle_decode(text, (item.scan.height, item.scan.width), source=where)
            mask |= organ_mask.astype(np.uint8) << bit
    return mask


def _channel_names(context: int) -> dict[str, str]:
    """``{"0": "MR_z-1", "1": "MR", "2": "MR_z+1"}`` for context 1: the slice and its neighbours."""
    names = ["MR" if offset == 0 else f"MR_z{offset:+d}" for offset in range(-context, context + 1)]
    return {str(c): name for c, name in enumerate(names)}


def _command(src: Path, dst: Path, context: int, keep_empty: float, seed: int) -> str:
    """The ``medseg data import`` command line that repeats this import."""
    command = f"medseg data import uw-madison-gi {src} {dst}"
    command += f" --context {context}" if context else ""
    command += f" --keep-empty {keep_empty:g}" if keep_empty != 0.1 else ""
    command += f" --seed {seed}" if seed else ""
    return command
