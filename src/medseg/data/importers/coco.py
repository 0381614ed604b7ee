"""Import a COCO instance-segmentation JSON into the native instance layout.

Each COCO image becomes a case: ``imagesTr/{case}_0000{ending}`` and ``labelsTr/{case}{ending}`` holding
``(H, W)`` instance ids (1..K in annotation order, 0 = background), with a ``labelsTr/{case}.json``
sidecar mapping each id to its category name; dataset.json lists the category names as
``medseg.instance_classes``, as the blood phantom does.

How annotations become pixels:

- polygons (``[[x1, y1, x2, y2, ...], ...]``) use COCO's continuous coordinates, where pixel ``(r, c)``
  covers ``[c, c + 1) x [r, r + 1)``; a pixel belongs to the object when its centre is inside a polygon
  (so a box polygon of width w and height h covers w x h pixels, matching COCO's ``area``). Several
  polygons of one object are united; polygons of fewer than 3 points are skipped.
- RLE, compressed (``counts`` a string, pycocotools' format) or not (``counts`` a list), runs over the
  pixels in column-major order starting with a run of background.
- overlaps: objects are drawn largest first, so a smaller object lying on a larger one stays visible
  (equal areas: the later annotation on top); an object left with no visible pixel is dropped.
- ``iscrowd: 1`` annotations (a region of many objects) are skipped: the instance layout has no ignore
  region, and one crowd label would teach a model to merge touching objects. The count is recorded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.importers.common import (
    channel_names_for,
    check_destination,
    check_group_by,
    file_ending,
    fits_png,
    fits_png_file,
    safe_case_name,
    staging,
    unique_case_names,
    write_dataset_json,
)
from medseg.errors import DataError
from medseg.io import read_image, write_image, write_json_atomic

_ASCII_BASE = 48  # the compressed string uses the characters 48 ('0') .. 111 ('o'), 6 bits each


def coco_string_to_counts(text: str) -> list[int]:
    """Decode pycocotools' compressed RLE string into run lengths.

    Each run length is stored like LEB128 with 5 data bits per character (value + 48; bit 0x20 says
    another character follows, bit 0x10 of the last one is the sign); from the fourth run on, the stored
    value is the difference to the run two places back (the previous run of the same pixel value).

    Args:
        text: the ``counts`` string of a compressed RLE.

    Returns:
        The run lengths, background run first.

    Raises:
        ValueError: a character outside ``'0'..'o'``, a truncated last run, or a negative run.

    >>> coco_string_to_counts("5221")
    [5, 2, 2, 3]
    """
    counts: list[int] = []
    value, shift, more = 0, 0, False
    for position, char in enumerate(text):
        code = ord(char) - _ASCII_BASE
        if not 0 <= code < 64:
            raise ValueError(f"character {char!r} at {position} is not part of a COCO RLE string")
        value |= (code & 0x1F) << shift
        shift += 5
        more = bool(code & 0x20)
        if more:
            continue
        if code & 0x10:  # sign-extend the last chunk
            value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError(f"run {len(counts)} decodes to a negative length {value}")
        counts.append(value)
        value, shift = 0, 0
    if more:
        raise ValueError("the string ends in the middle of a run")
    return counts


def decode_coco_rle(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """Expand run lengths into a mask.

    Args:
        counts: run lengths over the column-major pixels, alternating background and object, starting
            with background (possibly 0).
        height: mask height H.
        width: mask width W.

    Returns:
        ``(H, W)`` bool mask.

    Raises:
        ValueError: negative runs, or runs that do not add up to ``height * width``.
    """
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs.size and runs.min() < 0):
        raise ValueError("run lengths must be a flat list of non-negative integers")
    if int(runs.sum()) != height * width:
        raise ValueError(f"run lengths add up to {int(runs.sum())} pixels but the mask has {height}x{width}")
    flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)
    return flat.reshape((height, width), order="F")


def import_coco(
    src_json: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a COCO instance JSON and its images into a native instance dataset.

    Args:
        src_json: the annotation file (``images``, ``annotations``, ``categories``).
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        images: the folder ``file_name`` is relative to (default: the JSON's folder, or its ``images/``
            subfolder when the files are there).
        group_by: regex on the case name whose first group keeps related images together in splits;
            recorded as ``medseg.group_by`` in dataset.json.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path. dataset.json's ``medseg`` section records the command, the instance classes,
        objects per image and ``notes`` (crowd regions skipped, objects hidden by overlaps).

    Raises:
        DataError: the JSON is unreadable or malformed (naming the image or annotation id), an image is
            missing or its size differs from the JSON's, or ``dst`` is not empty.
        ConfigError: ``group_by`` is not a valid regex or matches no case name.
    """
    src, dst = Path(src_json), Path(dst)
    coco = _load_json(src)
    categories = _categories(src, coco)
    image_entries = _images(src, coco)
    by_image: dict[Any, list[dict]] = {key: [] for key in image_entries}
    crowd = 0
    for index, ann in enumerate(_list(src, coco, "annotations")):
        where = f"{src}: annotation {_entry_id(ann, index)}"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: expected an object")
        if not _is_key(ann.get("image_id")) or ann["image_id"] not in image_entries:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if not _is_key(ann.get("category_id")) or ann["category_id"] not in categories:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        if "segmentation" not in ann:
            raise DataError(f"{where}: has no 'segmentation'")
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        by_image[ann["image_id"]].append({**ann, "_where": where})
    folder = _image_folder(src, images, image_entries)
    files = {key: _image_file(src, folder, key, entry) for key, entry in image_entries.items()}
    cases = unique_case_names(
        (safe_case_name(Path(entry["file_name"]).with_suffix("").as_posix()), files[key])
        for key, entry in image_entries.items()
    )
    case_of = dict(zip(image_entries, cases))
    groups = check_group_by(group_by, cases, src)
    check_destination(src, dst, overwrite, kind="annotation file")
    check_destination(folder, dst, overwrite, kind="images folder")
    most = max((len(anns) for anns in by_image.values()), default=0)
    ending = file_ending(all(fits_png_file(f) for f in files.values()), most)

    objects = hidden = 0
    channels: set[int] = set()
    with staging(dst) as tmp:
        for key, entry in image_entries.items():
            case, file = case_of[key], files[key]
            image = read_image(file)
            if image.shape[:2] != (entry["height"], entry["width"]):
                raise DataError(
                    f"{file}: image is {image.shape[1]}x{image.shape[0]} but {src} says image id {key} is "
                    f"{entry['width']}x{entry['height']} (WxH)"
                )
            if ending == ".png" and not fits_png(image):
                raise DataError(f"{file}: decodes to {image.dtype} {image.shape}, which PNG cannot hold")
            channels.add(1 if image.ndim == 2 else image.shape[-1])
            ids, types, lost = _label_image(by_image[key], entry["height"], entry["width"], categories)
            objects, hidden = objects + len(types), hidden + lost
            write_image(tmp / "imagesTr" / f"{case}_0000{ending}", image)
            write_image(tmp / "labelsTr" / f"{case}{ending}", ids)
            write_json_atomic(tmp / "labelsTr" / f"{case}.json", {str(i): t for i, t in types.items()})
        if len(channels) > 1:
            raise DataError(f"{src}: images disagree on channel count ({sorted(channels)}); convert them")
        names = list(categories.values())
        notes = [
            "polygons rasterised by pixel centre; overlapping objects drawn largest first (smaller on top)",
            f"{crowd} crowd annotation(s) (iscrowd=1) skipped",
        ]
        if hidden:
            notes.append(f"{hidden} object(s) dropped: completely covered by smaller objects")
        medseg: dict = {
            "task": "instance",
            "source": _source(src, dst, images, group_by),
            "instance_classes": names,
            "objects_per_image": round(objects / max(len(cases), 1), 3),
        }
        if group_by:
            medseg["group_by"] = group_by
            notes.append(f"{groups} groups by --group-by '{group_by}'")
        medseg["notes"] = notes
        write_dataset_json(
            tmp,
            name=safe_case_name(src.stem, "coco"),
            channel_names=channel_names_for(next(iter(channels), 3)),
            labels={"background": 0, names[0] if len(names) == 1 else "object": 1},
            num_training=len(cases),
            ending=ending,
            medseg=medseg,
        )
    return dst


def _load_json(src: Path) -> dict:
    if not src.is_file():
        raise DataError(f"{src}: file not found")
    try:
        coco = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{src}: cannot read COCO JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(coco, dict) or "annotations" not in coco or "images" not in coco:
        raise DataError(f"{src}: not a COCO annotation file (expected 'images', 'annotations', 'categories')")
    return coco


def _entry_id(entry: Any, index: int) -> str:
    """How messages name an image or annotation: its id, or its position when it has none."""
    return str(entry["id"]) if isinstance(entry, dict) and "id" in entry else f"#{index}"


def _list(src: Path, coco: Mapping, key: str) -> list:
    value = coco.get(key)
    if not isinstance(value, list):
        raise DataError(f"{src}: '{key}' must be a list")
    return value


def _categories(src: Path, coco: Mapping) -> dict[Any, str]:
    """Category id -> name, in id order (COCO ids need not be consecutive)."""
    found: dict[Any, str] = {}
    for index, cat in enumerate(_list(src, coco, "categories")):
        if not isinstance(cat, dict) or not _is_key(cat.get("id")) or not str(cat.get("name", "")).strip():
            raise DataError(f"{src}: category #{index} needs an 'id' and a 'name'")
        if cat["id"] in found:
            raise DataError(f"{src}: category id {cat['id']!r} appears twice")
        name = str(cat["name"]).strip()
        if name in found.values():
            raise DataError(f"{src}: category name {name!r} is used by two ids; names must be distinct")
        found[cat["id"]] = name
    if not found:
        raise DataError(f"{src}: 'categories' is empty")
    if all(isinstance(key, int) for key in found):
        return dict(sorted(found.items()))
    return found


def _images(src: Path, coco: Mapping) -> dict[Any, dict]:
    """Image id -> entry (``file_name``, ``height``, ``width`` checked), in file order."""
    found: dict[Any, dict] = {}
    for index, entry in enumerate(_list(src, coco, "images")):
        where = f"{src}: image {_entry_id(entry, index)}"
        if not isinstance(entry, dict) or not _is_key(entry.get("id")):
            raise DataError(f"{where}: needs an 'id' (a number or a string)")
        if not isinstance(entry.get("file_name"), str) or not entry["file_name"].strip():
            raise DataError(f"{where}: needs a 'file_name'")
        for side in ("height", "width"):
            value = entry.get(side)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"{where}: '{side}' must be a positive integer, got {value!r}")
        if entry["id"] in found:
            raise DataError(f"{where}: image id appears twice")
        found[entry["id"]] = entry
    if not found:
        raise DataError(f"{src}: 'images' is empty")
    return found


def _image_folder(src: Path, images: str | os.PathLike[str] | None, entries: Mapping[Any, dict]) -> Path:
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise DataError(f"{folder}: images folder not found")
        return folder
    first = next(iter(entries.values()))["file_name"]
    for folder in (src.parent, src.parent / "images"):
        if (folder / first).is_file() or (folder / Path(first).name).is_file():
            return folder
    return src.parent


def _image_file(src: Path, folder: Path, key: Any, entry: Mapping) -> Path:
    name = entry["file_name"]
    for candidate in (folder / name, folder / Path(name).name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{src}: image id {key!r}: {name} not found in {folder} (pass --images FOLDER with the image files)"
    )


def _label_image(
    anns: Sequence[Mapping], height: int, width: int, categories: Mapping[Any, str]
) -> tuple[np.ndarray, dict[int, str], int]:
    """Instance ids ``(H, W)`` of one image, id -> category name, and how many objects were hidden."""
    # flat pixel indices rather than masks: memory follows the objects' area, not their number
    pixels = [np.flatnonzero(_rasterise(ann, height, width)) for ann in anns]
    order = sorted(range(len(pixels)), key=lambda i: (-pixels[i].size, i))  # largest first, later on top
    canvas = np.zeros(height * width, np.int32)
    for i in order:
        canvas[pixels[i]] = i + 1
    drawn = [i for i in range(len(pixels)) if pixels[i].size]
    visible = set(np.unique(canvas).tolist()) - {0}
    kept = [i for i in drawn if i + 1 in visible]
    table = np.zeros(len(pixels) + 1, np.int32)
    table[[i + 1 for i in kept]] = np.arange(1, len(kept) + 1)
    ids = table[canvas].reshape(height, width)
    types = {new: categories[anns[i]["category_id"]] for new, i in enumerate(kept, start=1)}
    return ids, types, len(drawn) - len(kept)


def _rasterise(ann: Mapping, height: int, width: int) -> np.ndarray:
    """One annotation's ``(H, W)`` bool mask; malformed segmentations raise DataError naming it."""
    where, seg = ann["_where"], ann["segmentation"]
    if isinstance(seg, list):
        return _polygons(where, seg, height, width)
    if not (isinstance(seg, dict) and "counts" in seg):
        raise DataError(f"{where}: segmentation must be a list of polygons or an RLE object with 'counts'")
    size = seg.get("size")
    if size != [height, width]:
        raise DataError(
            f"{where}: RLE size {size!r} differs from the image's [height, width] [{height}, {width}]"
        )
    counts = seg["counts"]
    try:
        if isinstance(counts, str):
            counts = coco_string_to_counts(counts)
        elif not isinstance(counts, list) or not all(_is_int(c) for c in counts):
            raise ValueError("'counts' must be a string or a list of integers")
        return decode_coco_rle(counts, height, width)
    except ValueError as exc:
        raise DataError(f"{where}: bad RLE ({exc})") from None


def _is_key(value: Any) -> bool:
    """Whether ``value`` can be a COCO id (numbers in COCO itself, strings in some exports)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _polygons(where: str, polygons: list, height: int, width: int) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros((height, width), bool)
    for k, points in enumerate(polygons):
        if not isinstance(points, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in points
        ):
            raise DataError(f"{where}: polygon {k} must be a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(points) % 2:
            raise DataError(f"{where}: polygon {k} has an odd number of coordinates ({len(points)})")
        if len(points) < 6:
            continue  # a point or a line: no area
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        rows, cols = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=(height, width))
        mask[rows, cols] = True
    return mask


def _source(src: Path, dst: Path, images: str | os.PathLike[str] | None, group_by: str | None) -> str:
    source = f"medseg data import coco {src} {dst}"
    source += f" --images {images}" if images is not None else ""
    source += f" --group-by '{group_by}'" if group_by else ""
    return source
