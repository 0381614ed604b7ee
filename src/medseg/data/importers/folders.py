"""Import an ``images/`` + ``masks/`` folder pair into the native semantic layout.

Images and masks may be PNG, JPEG, TIFF or BMP. A mask pairs with the image of the same file stem; a
mask stem may also carry one of :data:`MASK_SUFFIXES` (``cell_07_mask.png`` pairs with ``cell_07.jpg``).
Masks hold either class ids (grey values, or the indices of a palette PNG) or colours:

- class ids are kept as they are, except that masks holding only 0 and 255 (the usual way binary masks
  are saved) become 0 and 1;
- colours map to class ids through ``palette`` (``"background=0,0,0;tumour=255,0,0"``: ids in the order
  given) or, without one, through the distinct colours found: black is background (id 0) and the other
  colours get ids 1, 2, ... in sorted (R, G, B) order, so the ids never depend on file order.

Everything is read and checked before anything is written; the dataset is then written to a hidden
folder beside ``dst`` and renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.importers.common import (
    channel_names_for,
    check_destination,
    check_group_by,
    file_ending,
    fits_png,
    safe_case_name,
    staging,
    unique_case_names,
    write_dataset_json,
)
from medseg.errors import ConfigError, DataError
from medseg.io import IMAGE_SUFFIXES, read_image, read_label, write_image

# Stem endings that mark a mask of the image with the rest of the stem; longest first, so that
# "x_cp_masks" pairs with "x" rather than "x_cp".
MASK_SUFFIXES = (
    "_segmentation",
    "_annotation",
    "_cp_masks",
    "_labels",
    "_label",
    "_masks",
    "_mask",
    "-mask",
    "_seg",
    "_gt",
)
MAX_CLASSES = 32  # more distinct colours (or ids without --labels) than this is not a mask
_JPEG = (".jpg", ".jpeg")
_TRACKED = 4 * MAX_CLASSES  # distinct values remembered per mask: enough to tell a photo from a mask


@dataclass
class _MaskInfo:
    """What pass one learnt about one mask: its colours and, for a one-channel mask, its values."""

    colours: set[int] | None  # packed 0xRRGGBB, at most _TRACKED of them; None: not 8-bit colours
    values: set[int] | None  # one-channel masks (grey or palette indices); None for a colour mask
    too_many: bool  # more distinct colours or values than _TRACKED


def import_folders(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    palette: str | Mapping[str, Sequence[int]] | None = None,
    labels: Sequence[str] | None = None,
    group_by: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ``src/images`` + ``src/masks`` (or ``src/labels``) into a native semantic dataset.

    Writes ``dataset.json``, ``imagesTr/{case}_0000{ending}`` (the image, all its channels in one file)
    and ``labelsTr/{case}{ending}`` (``(H, W)`` class ids), where the case is the image's file stem made
    safe for file names and the ending is ``.png`` when every image fits PNG (8-bit, or 16-bit grey),
    else ``.tif``.

    Args:
        src: folder holding ``images/`` and ``masks/`` (or ``labels/``).
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        palette: colour masks: ``"name=R,G,B;name=R,G,B"`` or a ``{name: (R, G, B)}`` mapping, class ids
            in the order given. Grey masks then count as colours ``(v, v, v)``.
        labels: class names in id order: for class-id masks (default ``background, class_1, ...`` up to
            the largest id) or for the colours of an inferred palette (one name per colour, black first).
        group_by: regex on the case name whose first group keeps related images together in splits
            (e.g. ``"^(patient\\d+)_"``); recorded as ``medseg.group_by`` in dataset.json.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path. dataset.json's ``medseg`` section records the command, class colours (colour
        masks) and ``notes`` saying how masks were paired and read.

    Raises:
        DataError: a folder is missing, files do not pair (all unpaired files are listed), a mask's
            size differs from its image's, images disagree on channels, a mask holds a colour the
            palette lacks or an id beyond ``labels``, or the masks hold more than 32 colours or ids
            (a photo or a JPEG-compressed mask rather than a label mask).
        ConfigError: ``palette``, ``labels`` or ``group_by`` is malformed.
    """
    src, dst = Path(src), Path(dst)
    given_palette = _parse_palette(palette) if palette is not None else None
    labels = [str(name).strip() for name in labels] if labels is not None else None
    if labels is not None and (len(set(labels)) != len(labels) or not all(labels)):
        raise ConfigError(f"--labels: class names must be distinct and non-empty, got {','.join(labels)}")
    pairs, notes = _pair_files(src)
    cases = unique_case_names((safe_case_name(image.stem), image) for image, _ in pairs)
    groups = check_group_by(group_by, cases, src)
    check_destination(src, dst, overwrite, kind="source folder")
    masks: dict[str, Path] = {case: mask for case, (_, mask) in zip(cases, pairs)}

    infos: dict[str, _MaskInfo] = {}
    channels: dict[int, Path] = {}
    all_fit_png = True
    for case, image_path in cases.items():
        image = read_image(image_path)
        channels.setdefault(1 if image.ndim == 2 else image.shape[-1], image_path)
        all_fit_png &= fits_png(image)
        mask, infos[case] = _survey_mask(masks[case])
        if mask.shape[:2] != image.shape[:2]:
            raise DataError(
                f"{masks[case]}: mask is {_size(mask)} but image {image_path} is {_size(image)} (WxH)"
            )
    if len(channels) > 1:
        shown = ", ".join(f"{path} has {c}" for c, path in sorted(channels.items()))
        raise DataError(f"{src}: images disagree on channel count ({shown}); convert them to one kind")

    colour_mode = given_palette is not None or any(info.values is None for info in infos.values())
    if colour_mode:
        class_names, colour_of, note = _colour_classes(src, masks, infos, given_palette, labels)
        lookup = {rgb: i for i, rgb in enumerate(colour_of)}
        notes.append(note)
        id_map = None
    else:
        class_names, id_map, note = _id_classes(masks, infos, labels)
        lookup = None
        if note:
            notes.append(note)
    ending = file_ending(all_fit_png, len(class_names) - 1)

    with staging(dst) as tmp:
        for case, image_path in cases.items():
            write_image(tmp / "imagesTr" / f"{case}_0000{ending}", read_image(image_path))
            raw = read_image(masks[case])
            if lookup is not None:
                ids = _colours_to_ids(_pack_colours(raw), lookup)
            else:
                ids = _one_channel_values(masks[case], raw)
                ids = id_map[ids] if id_map is not None else ids
            dtype = np.uint8 if len(class_names) <= 256 else np.uint16
            write_image(tmp / "labelsTr" / f"{case}{ending}", ids.astype(dtype))
        medseg: dict = {"task": "semantic", "source": _source(src, dst, palette, labels, group_by)}
        if colour_mode:
            medseg["colors"] = {name: list(_unpack(rgb)) for name, rgb in zip(class_names, colour_of)}
        if group_by:
            medseg["group_by"] = group_by
            notes.append(f"{groups} groups by --group-by '{group_by}'")
        medseg["notes"] = notes
        write_dataset_json(
            tmp,
            name=safe_case_name(src.resolve().name, "dataset"),
            channel_names=channel_names_for(next(iter(channels))),
            labels={name: i for i, name in enumerate(class_names)},
            num_training=len(cases),
            ending=ending,
            medseg=medseg,
        )
    return dst


def _pair_files(src: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(image, mask)`` pairs in image name order, and a note on how masks were matched."""
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    image_dir = src / "images"
    mask_dir = next((src / d for d in ("masks", "labels") if (src / d).is_dir()), None)
    if not image_dir.is_dir() or mask_dir is None:
        raise DataError(f"{src}: expected an images/ folder and a masks/ (or labels/) folder")
    images, masks = _files_by_stem(image_dir), _files_by_stem(mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    pairs: dict[str, Path] = {}  # image stem -> mask
    unpaired_masks: list[Path] = []
    used: set[str] = set()
    for stem, mask in sorted(masks.items()):
        target = stem if stem in images else None
        if target is None:
            lower = stem.lower()
            suffix = next((s for s in MASK_SUFFIXES if lower.endswith(s) and stem[: -len(s)] in images), None)
            if suffix is not None:
                target = stem[: -len(suffix)]
                used.add(suffix)
        if target is None:
            unpaired_masks.append(mask)
        elif target in pairs:
            raise DataError(f"{mask}: pairs with {images[target]}, as {pairs[target]} does; keep one mask")
        else:
            pairs[target] = mask
    unpaired_images = [images[stem] for stem in sorted(images) if stem not in pairs]
    if unpaired_images or unpaired_masks:
        parts = []
        if unpaired_images:
            parts.append(f"{len(unpaired_images)} image(s) without a mask: {_listing(unpaired_images)}")
        if unpaired_masks:
            parts.append(f"{len(unpaired_masks)} mask(s) without an image: {_listing(unpaired_masks)}")
        hint = f" (a mask may be named like its image or add one of {', '.join(MASK_SUFFIXES)})"
        raise DataError(f"{src}: unpaired files; " + "; ".join(parts) + hint)
    how = (
        f"masks paired by file stem with suffix {', '.join(sorted(used))}"
        if used
        else "masks paired by file stem"
    )
    return [(images[stem], pairs[stem]) for stem in sorted(images)], [how]


def _files_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.name.startswith(".") or file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if file.stem in found:
            raise DataError(f"{file}: has the same name as {found[file.stem].name}; keep one of them")
        found[file.stem] = file
    return found


def _listing(files: Sequence[Path], most: int = 5) -> str:
    shown = ", ".join(str(f) for f in files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "")


def _is_palette_png(path: Path) -> bool:
    """True for an indexed (palette) image, whose indices are the class ids of VOC-style masks."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return False
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode == "P"
    except Exception:  # unreadable: read_image names the problem
        return False


def _pack_colours(mask: np.ndarray) -> np.ndarray | None:
    """A mask as ``(H, W)`` uint32 colours 0xRRGGBB (grey v counts as (v, v, v); alpha is ignored), or
    None when its values are not 8-bit colours."""
    if mask.dtype.kind == "f" or (mask.size and (mask.min() < 0 or mask.max() > 255)):
        return None
    mask = mask.astype(np.uint32)
    if mask.ndim == 2 or mask.shape[-1] < 3:  # grey, or grey + alpha
        return (mask if mask.ndim == 2 else mask[..., 0]) * 0x010101
    return (mask[..., 0] << 16) | (mask[..., 1] << 8) | mask[..., 2]


def _survey_mask(path: Path) -> tuple[np.ndarray, _MaskInfo]:
    """Read a mask once and note its distinct colours and (one-channel masks) values."""
    raw = read_image(path)
    values = _one_channel_values(path, raw)
    packed = _pack_colours(raw)
    colours = _distinct(packed) if packed is not None else None
    value_set = _distinct(values) if values is not None else None
    too_many = any(found is not None and len(found) > _TRACKED for found in (colours, value_set))
    return raw, _MaskInfo(_first(colours), _first(value_set), too_many)


def _one_channel_values(path: Path, raw: np.ndarray) -> np.ndarray | None:
    """A one-channel mask's ``(H, W)`` values (a palette PNG's indices), or None for a colour mask."""
    if _is_palette_png(path):
        return read_label(path)  # the indices, not the colours they stand for
    if raw.ndim == 3 and raw.shape[-1] >= 3 and not _equal_channels(raw):
        return None
    values = raw if raw.ndim == 2 else raw[..., 0]
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and np.all(np.mod(values, 1) == 0)):
        raise DataError(f"{path}: mask holds non-integer values; expected class ids or colours")
    if values.size and values.min() < 0:
        raise DataError(f"{path}: mask holds negative values; expected class ids or colours")
    return values.astype(np.int64)


def _equal_channels(raw: np.ndarray) -> bool:
    return np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])


def _first(found: set[int] | None) -> set[int] | None:
    return None if found is None else set(sorted(found)[:_TRACKED])


def _distinct(array: np.ndarray) -> set[int]:
    return set(np.unique(array).tolist())


def _colour_classes(
    src: Path,
    masks: Mapping[str, Path],
    infos: Mapping[str, _MaskInfo],
    given: dict[str, int] | None,
    labels: list[str] | None,
) -> tuple[list[str], list[int], str]:
    """Class names and their packed colours in id order, and a note saying where they came from."""
    for case, info in infos.items():
        if info.colours is None:
            raise DataError(
                f"{masks[case]}: holds values outside 0..255, so it is no colour mask, but other masks (or "
                "--palette) are colour masks; save all masks one way"
            )
    if given is not None:
        known = set(given.values())
        for case, info in infos.items():
            unknown = sorted(info.colours - known)
            if unknown or info.too_many:
                shown = ", ".join(_rgb_text(c) for c in unknown[:5])
                hint = _jpeg_hint(masks[case])
                more = " ..." if len(unknown) > 5 else ""
                raise DataError(f"{masks[case]}: colours not in --palette: {shown}{more}{hint}")
        if labels is not None:
            raise ConfigError("--labels names class-id masks; with --palette the palette names the classes")
        return (
            list(given),
            list(given.values()),
            f"colour masks mapped with the given palette ({len(given)} classes)",
        )
    found: set[int] = set()
    for case, info in infos.items():
        found |= info.colours
        if info.too_many or len(found) > MAX_CLASSES:
            what = (
                f"more than {_TRACKED} distinct colours"
                if info.too_many
                else f"{len(found)} distinct colours in the masks so far, more than {MAX_CLASSES} classes"
            )
            hint = _jpeg_hint(masks[case]) or " (looks like a photo, not a mask)"
            raise DataError(f"{masks[case]}: {what}{hint}; pass --palette to name the mask colours")
    colours = [0, *sorted(found - {0})]
    if labels is not None:
        if len(labels) != len(colours):
            shown = ", ".join(_rgb_text(c) for c in colours)
            raise ConfigError(
                f"{src}: --labels gives {len(labels)} names but the masks hold {len(colours)} colours "
                f"(black first): {shown}"
            )
        names = labels
    else:
        names = ["background"] + [f"class_{i}" for i in range(1, len(colours))]
    return (
        names,
        colours,
        "palette inferred from mask colours: black = background, others in sorted RGB order",
    )


def _id_classes(
    masks: Mapping[str, Path], infos: Mapping[str, _MaskInfo], labels: list[str] | None
) -> tuple[list[str], np.ndarray | None, str | None]:
    """Class names for class-id masks, a value -> id lookup table (or None) and a note."""
    found: set[int] = set()
    for info in infos.values():
        found |= info.values or set()
    if found <= {0, 255} and 255 in found and (labels is None or len(labels) == 2):
        table = np.zeros(256, np.int32)
        table[255] = 1
        names = labels or ["background", "class_1"]
        return names, table, "binary masks: value 255 read as class 1"
    for case, info in infos.items():
        values = info.values or set()
        limit = len(labels) if labels is not None else MAX_CLASSES
        bad = sorted(v for v in values if v >= limit)
        if bad or info.too_many:
            if labels is not None:
                raise DataError(
                    f"{masks[case]}: mask values {bad[:5]} are not ids of --labels ({len(labels)} classes)"
                    + _jpeg_hint(masks[case])
                )
            hint = _jpeg_hint(masks[case]) or " (looks like a photo or intensity image, not a class-id mask)"
            raise DataError(
                f"{masks[case]}: mask values up to {max(values)} without --labels{hint}; pass --labels with "
                "one name per class id if they are real class ids"
            )
    count = len(labels) if labels is not None else max(found | {1}) + 1
    names = labels or ["background"] + [f"class_{i}" for i in range(1, count)]
    return names, None, None


def _jpeg_hint(path: Path) -> str:
    if path.suffix.lower() in _JPEG:
        return " (JPEG compression blends neighbouring colours; save masks as PNG)"
    return ""


def _colours_to_ids(packed: np.ndarray, lookup: Mapping[int, int]) -> np.ndarray:
    keys = np.array(sorted(lookup), np.uint32)
    ids = np.array([lookup[k] for k in sorted(lookup)], np.int32)
    pos = np.searchsorted(keys, packed).clip(0, len(keys) - 1)
    return ids[pos]  # every colour was checked in pass one


def _parse_palette(palette: str | Mapping[str, Sequence[int]]) -> dict[str, int]:
    """``"name=R,G,B;..."`` or a mapping -> ``{name: packed colour}`` in id order."""
    if isinstance(palette, str):
        entries = []
        for part in (p.strip() for p in palette.split(";")):
            if not part:
                continue
            name, sep, rgb = part.partition("=")
            if not sep:
                raise ConfigError(
                    f"--palette: {part!r} is not name=R,G,B (e.g. 'background=0,0,0;tumour=255,0,0')"
                )
            entries.append((name.strip(), rgb.split(",")))
    else:
        entries = [(str(name), list(rgb)) for name, rgb in palette.items()]
    result: dict[str, int] = {}
    for name, rgb in entries:
        try:
            values = [int(str(v).strip()) for v in rgb]
        except ValueError:
            values = []
        if not name or len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise ConfigError(
                f"--palette: {name or '?'}={','.join(map(str, rgb))} is not a name with R,G,B in 0..255"
            )
        colour = (values[0] << 16) | (values[1] << 8) | values[2]
        if name in result or colour in result.values():
            raise ConfigError(f"--palette: {name} repeats a class name or colour")
        result[name] = colour
    if len(result) < 2:
        raise ConfigError("--palette: needs at least two classes, e.g. 'background=0,0,0;tumour=255,0,0'")
    return result


def _unpack(colour: int) -> tuple[int, int, int]:
    return (colour >> 16) & 255, (colour >> 8) & 255, colour & 255


def _rgb_text(colour: int) -> str:
    return "({},{},{})".format(*_unpack(colour))


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def _source(
    src: Path,
    dst: Path,
    palette: str | Mapping[str, Sequence[int]] | None,
    labels: Sequence[str] | None,
    group_by: str | None,
) -> str:
    source = f"medseg data import folders {src} {dst}"
    if palette is not None:
        text = (
            palette
            if isinstance(palette, str)
            else ";".join(f"{k}={','.join(map(str, v))}" for k, v in palette.items())
        )
        source += f" --palette '{text}'"
    source += f" --labels {','.join(labels)}" if labels else ""
    source += f" --group-by '{group_by}'" if group_by else ""
    return source
