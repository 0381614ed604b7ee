"""Import a Medical Segmentation Decathlon or nnU-Net raw 3D NIfTI dataset as a native 2D slice dataset.

Two source layouts are read, told apart by their ``dataset.json``:

- MSD (and nnU-Net v1): ``labels`` ``{"0": "background", "1": "tumour"}``, ``modality``
  ``{"0": "CT"}`` and ``training`` ``[{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]``;
  a multi-modal image is one 4D ``(X, Y, Z, C)`` file (or, as nnU-Net v1 renamed them, ``x_0000.nii.gz``,
  ``x_0001.nii.gz``, ...);
- nnU-Net v2: ``labels`` ``{"background": 0, "tumour": 1}``, ``channel_names``, ``file_ending``, one file
  per channel ``imagesTr/CASE_0000.nii.gz`` and ``labelsTr/CASE.nii.gz``.

Each volume is cut into 2D slices along one voxel axis (``slice = volume.take(index, axis)``: rows and
columns are the two remaining voxel axes in their stored order, so ``np.stack(slices, axis=axis)`` restores
the volume). A slice may carry ``context`` neighbouring slices on each side as extra channels (2.5D).
Intensities are kept, or windowed (CT) or percentile-scaled per volume (MR) to 0..1. Slices without
foreground are subsampled. ``dataset.json`` records the axis, context, intensity scaling and each volume's
shape and affine (``medseg.volumes``), and ``medseg.group_by`` keeps a volume's slices on one side of a
split. The dataset is written to a hidden folder beside the destination and renamed into place only when
every slice is written, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.importers.common import (
    check_destination,
    safe_case_name,
    staging,
    unique_case_names,
    write_dataset_json,
)
from medseg.errors import ConfigError, DataError
from medseg.io import LABEL_SUFFIXES, read_label, write_image
from medseg.io.nifti import is_nifti_file, read_nifti, read_nifti_label, write_nifti

MSD_AXES = {"x": 0, "y": 1, "z": 2}
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")  # a mask named after a channel file, e.g. la_003_z012_0000
_AFFINE_TOLERANCE = 1e-3  # millimetres; header round-off stays far below it


@dataclass(frozen=True)
class _Volume:
    """One training volume of the source: image file(s) (one 4D file or one per channel) and its label."""

    name: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class _Source:
    layout: str  # "msd" | "nnunet"
    name: str
    labels: dict[str, int]
    channel_names: list[str] | None  # None: MSD without "modality", taken from the first image
    volumes: list[_Volume]


def import_msd(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    axis: str = "z",
    context: int = 0,
    window: str | Sequence[float] | None = None,
    percentile: str | Sequence[float] | None = None,
    keep_empty: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Slice an MSD / nnU-Net raw NIfTI dataset into a native 2D semantic dataset.

    Writes ``dataset.json``, ``imagesTr/{volume}_{axis}{slice:03d}_{c:04d}.tif`` (float32 ``(H, W)``, one
    file per channel: for each source channel, the slices ``slice - context .. slice + context`` in order,
    edge slices repeated) and ``labelsTr/{volume}_{axis}{slice:03d}.tif`` (class ids, uint8 or uint16).
    ``H, W`` are the two voxel axes other than ``axis``, in stored order.

    Args:
        src: the dataset folder holding ``dataset.json``, ``imagesTr/`` and ``labelsTr/``.
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        axis: voxel axis to slice along: ``"z"`` (third), ``"y"`` (second) or ``"x"`` (first).
        context: neighbouring slices on each side added as channels (0 = plain 2D).
        window: ``(low, high)`` or ``"low,high"``: clip intensities to it and scale to 0..1 (CT, e.g.
            ``-160,240`` for abdomen soft tissue).
        percentile: ``(low, high)`` or ``"low,high"`` percentiles of each volume channel mapped to 0..1,
            values outside clipped (MR, e.g. ``0.5,99.5``). Not with ``window``. Neither: raw intensities.
        keep_empty: fraction (0..1) of each volume's slices without foreground to keep, chosen at random
            with ``seed`` (and the volume name), so re-importing gives the same slices.
        seed: seed of that choice.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``dataset.json`` is missing, unreadable or lacks a key; a NIfTI file is missing or
            unreadable; an image and its label differ in shape or affine; a label holds undeclared
            values; or ``dst`` is not empty.
        ConfigError: an option is out of range or ``window`` and ``percentile`` are both given.
    """
    src, dst = Path(src), Path(dst)
    if axis not in MSD_AXES:
        raise ConfigError(f"--axis must be one of z, y, x, got {axis!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ConfigError(f"--context must be a whole number >= 0, got {context!r}")
    if not 0.0 <= float(keep_empty) <= 1.0:
        raise ConfigError(f"--keep-empty must be a fraction between 0 and 1, got {keep_empty}")
    if window is not None and percentile is not None:
        raise ConfigError("--window and --percentile exclude each other: window for CT, percentile for MR")
    window_range = _parse_range("--window", window)
    percentile_range = _parse_range("--percentile", percentile)
    if percentile_range and not 0.0 <= percentile_range[0] < percentile_range[1] <= 100.0:
        raise ConfigError(f"--percentile must be LOW,HIGH with 0 <= LOW < HIGH <= 100, got {percentile}")
    source = _read_source(src)
    check_destination(src, dst, overwrite, kind="source folder")
    voxel_axis = MSD_AXES[axis]
    channels = len(source.channel_names) if source.channel_names else None
    declared = set(source.labels.values())
    slice_counts = [0] * len(source.volumes)
    records: dict[str, dict[str, Any]] = {}
    with staging(dst) as tmp:
        for v, volume in enumerate(source.volumes):
            image, affine, labels = _load_volume(volume, channels)
            channels = image.shape[-1]
            undeclared = sorted(set(np.unique(labels).tolist()) - declared)
            if undeclared:
                raise DataError(
                    f"{volume.label}: holds label values {undeclared} that dataset.json 'labels' does not "
                    f"declare ({', '.join(f'{n}={i}' for n, i in source.labels.items())})"
                )
            image = scale_intensities(image, window_range, percentile_range)
            kept, empty_kept = _slices_to_keep(
                labels, voxel_axis, keep_empty, seed, volume.name, source.labels.get("ignore")
            )
            digits = max(3, len(str(labels.shape[voxel_axis] - 1)))  # slice numbers of one volume align
            _write_slices(tmp, volume.name, image, labels, voxel_axis, axis, context, kept, digits)
            slice_counts[v] = len(kept)
            records[volume.name] = {
                "image": [str(p.relative_to(src)) for p in volume.images],
                "label": str(volume.label.relative_to(src)),
                "shape": list(labels.shape),
                "affine": np.round(affine, 6).tolist(),
                "slices_kept": len(kept),
                "empty_slices_kept": empty_kept,
            }
        total = sum(slice_counts)
        if total == 0:
            raise DataError(f"{src}: no slice to import (no foreground and --keep-empty {keep_empty})")
        base_names = source.channel_names or [f"channel_{c}" for c in range(channels)]
        write_dataset_json(
            tmp,
            name=source.name,
            channel_names=_context_channel_names(base_names, axis, context),
            labels=dict(sorted(source.labels.items(), key=lambda kv: kv[1])),
            num_training=total,
            ending=".tif",
            medseg={
                "task": "semantic",
                "source": _command(
                    source.layout, src, dst, axis, context, window_range, percentile_range, keep_empty, seed
                ),
                "source_layout": source.layout,
                "axis": axis,
                "voxel_axis": voxel_axis,
                "context": context,
                "window": list(window_range) if window_range else None,
                "percentile": list(percentile_range) if percentile_range else None,
                "keep_empty": float(keep_empty),
                "seed": seed,
                "group_by": rf"^(.+)_{axis}\d+$",
                "volumes": records,
                "notes": [
                    f"{total} {axis}-slices of {len(records)} volumes; slice = volume.take(index, "
                    f"axis={voxel_axis}), rows and columns the other voxel axes in stored order",
                    "group_by keeps each volume's slices on one side of a split",
                ],
            },
        )
    return dst


def stack_slices(
    dataset: str | os.PathLike[str], masks: str | os.PathLike[str], out: str | os.PathLike[str]
) -> list[Path]:
    """Stack per-slice label masks (e.g. ``medseg predict`` output on an imported dataset) back into
    NIfTI volumes with each volume's original shape and affine, as recorded by :func:`import_msd`.

    Args:
        dataset: the dataset folder :func:`import_msd` wrote (its ``dataset.json`` ``medseg`` section).
        masks: folder of ``(H, W)`` masks named ``{volume}_{axis}{slice}`` (``.png``/``.tif``; a channel
            suffix ``_0000`` is allowed).
        out: folder for ``{volume}.nii.gz`` (class ids, uint8 or uint16). Slices without a mask (empty
            slices left out at import) are 0.

    Returns:
        The NIfTI files written, one per volume that has at least one mask, sorted by volume.

    Raises:
        DataError: ``dataset.json`` lacks the slicing record, a mask names an unknown volume or slice,
            or has the wrong size; or no mask matches the dataset.
    """
    dataset, masks, out = Path(dataset), Path(masks), Path(out)
    meta_path = dataset / "dataset.json"
    try:
        extra = json.loads(meta_path.read_text(encoding="utf-8"))["medseg"]
        axis, voxel_axis, records = extra["axis"], int(extra["voxel_axis"]), extra["volumes"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{meta_path}: no slicing record from `medseg data import msd` ({exc})") from None
    if not masks.is_dir():
        raise DataError(f"{masks}: folder not found")
    case_name = re.compile(rf"^(?P<volume>.+)_{axis}(?P<index>\d+)$")
    stacks: dict[str, np.ndarray] = {}
    for path in sorted(masks.iterdir()):
        if path.suffix.lower() not in LABEL_SUFFIXES or path.name.startswith("."):
            continue
        match = case_name.match(_CHANNEL_SUFFIX.sub("", path.stem))
        if match is None or match["volume"] not in records:
            raise DataError(f"{path}: not named {{volume}}_{axis}{{slice}} after a volume of {meta_path}")
        volume, index = match["volume"], int(match["index"])
        shape = tuple(records[volume]["shape"])
        if index >= shape[voxel_axis]:
            raise DataError(
                f"{path}: slice {index} is past the {shape[voxel_axis]} {axis}-slices of {volume}"
            )
        plane = read_label(path)
        expected = shape[:voxel_axis] + shape[voxel_axis + 1 :]
        if plane.shape != expected:
            raise DataError(f"{path}: mask is {plane.shape} but {volume}'s {axis}-slices are {expected}")
        if volume not in stacks:
            stacks[volume] = np.zeros(shape, np.int32)
        np.moveaxis(stacks[volume], voxel_axis, 0)[index] = plane  # a view: writes into the volume
    if not stacks:
        raise DataError(f"{masks}: no masks named {{volume}}_{axis}{{slice}}.png/.tif")
    written = []
    for volume, stack in sorted(stacks.items()):
        dtype = np.uint8 if stack.max() < 256 else np.uint16 if stack.max() < 65536 else np.int32
        affine = np.asarray(records[volume]["affine"], dtype=np.float64)
        written.append(write_nifti(out / f"{volume}.nii.gz", stack.astype(dtype), affine))
    return written


def _parse_range(option: str, value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``(low, high)`` from ``"low,high"`` or a pair of numbers; None stays None."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} must be LOW,HIGH (two numbers), got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{option} must be LOW,HIGH with finite LOW < HIGH, got {value!r}")
    return low, high


def _read_source(src: Path) -> _Source:
    """Read ``src/dataset.json`` and list the training volumes, checking that their files exist."""
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    meta_path = src / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: file not found; an MSD or nnU-Net raw dataset needs its dataset.json")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: cannot read dataset.json ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object")
    if "labels" not in meta:
        raise DataError(f"{meta_path}: missing key 'labels'")
    name = safe_case_name(str(meta.get("name") or src.resolve().name), "dataset")
    if "channel_names" in meta or "file_ending" in meta:
        for key in ("channel_names", "file_ending"):
            if key not in meta:
                raise DataError(f"{meta_path}: missing key {key!r} (nnU-Net v2 dataset.json)")
        labels = _nnunet_labels(meta_path, meta["labels"])
        channel_names = _channel_names(meta_path, "channel_names", meta["channel_names"])
        volumes = _nnunet_volumes(src, meta_path, meta["file_ending"], len(channel_names))
        return _Source("nnunet", name, labels, channel_names, volumes)
    if "training" not in meta:
        raise DataError(
            f"{meta_path}: missing key 'training' (MSD) or 'channel_names' and 'file_ending' (nnU-Net v2)"
        )
    labels = _msd_labels(meta_path, meta["labels"])
    modality = meta.get("modality")
    channel_names = _channel_names(meta_path, "modality", modality) if modality is not None else None
    volumes = _msd_volumes(src, meta_path, meta["training"], len(channel_names) if channel_names else 1)
    return _Source("msd", name, labels, channel_names, volumes)


def _msd_labels(meta_path: Path, raw: Any) -> dict[str, int]:
    """MSD ``{"0": "background", ...}`` as ``{"background": 0, ...}``."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{meta_path}: \'labels\' must map ids to names, e.g. {{"0": "background"}}')
    labels: dict[str, int] = {}
    for key, value in raw.items():
        if not str(key).isdigit() or not isinstance(value, str):
            raise DataError(f"{meta_path}: 'labels' entry {key!r}: {value!r} is not id -> name")
        if value in labels:
            raise DataError(f"{meta_path}: label name {value!r} is used for ids {labels[value]} and {key}")
        labels[value] = int(key)
    return labels


def _nnunet_labels(meta_path: Path, raw: Any) -> dict[str, int]:
    """nnU-Net v2 ``{"background": 0, ...}``, refusing region-based (list-valued) labels."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{meta_path}: 'labels' must map names to ids, e.g. {{\"background\": 0}}")
    for key, value in raw.items():
        if isinstance(value, (list, tuple)):
            raise DataError(f"{meta_path}: label {key!r} is a region {value}; regions are unsupported")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{meta_path}: label {key!r} has id {value!r}; expected an integer >= 0")
    return {str(k): int(v) for k, v in raw.items()}


def _channel_names(meta_path: Path, key: str, raw: Any) -> list[str]:
    """Channel names in channel order from ``{"0": "CT", "1": ...}``."""
    if not isinstance(raw, dict) or not raw or not all(str(k).isdigit() for k in raw):
        raise DataError(f'{meta_path}: {key!r} must map channel numbers to names, e.g. {{"0": "CT"}}')
    order = sorted(int(k) for k in raw)
    if order != list(range(len(order))):
        raise DataError(f"{meta_path}: {key!r} channels must be numbered 0..{len(order) - 1}, got {order}")
    by_number = {int(k): str(v) for k, v in raw.items()}
    return [safe_case_name(by_number[c], f"channel_{c}") for c in order]


def _inside(src: Path, meta_path: Path, entry: Any, what: str) -> Path:
    """``src / entry`` after checking that it is a relative path inside ``src``."""
    if not isinstance(entry, str) or not entry:
        raise DataError(f"{meta_path}: 'training' {what} {entry!r} is not a file path")
    path = src / entry
    if Path(entry).is_absolute() or ".." in Path(entry).parts:
        raise DataError(f"{meta_path}: 'training' {what} {entry!r} must be a path inside {src}")
    return path  # pathlib drops the './' of './imagesTr/x.nii.gz'


def _msd_volumes(src: Path, meta_path: Path, training: Any, channels: int) -> list[_Volume]:
    if not isinstance(training, list) or not training:
        raise DataError(f"{meta_path}: 'training' must be a non-empty list of {{'image': ..., 'label': ...}}")
    pairs = []
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DataError(f"{meta_path}: 'training' item {i} lacks 'image' or 'label'")
        image = _inside(src, meta_path, entry["image"], "image")
        label = _inside(src, meta_path, entry["label"], "label")
        if not is_nifti_file(image):
            raise DataError(f"{meta_path}: 'training' image {entry['image']!r} is not a .nii or .nii.gz file")
        if not label.is_file():
            raise DataError(f"{label}: file not found (listed in {meta_path.name} 'training')")
        images: tuple[Path, ...] = (image,)
        if not image.is_file():
            stem, ending = _split_ending(image)
            # nnU-Net v1 renamed MSD images to one file per channel but kept the MSD dataset.json.
            split = tuple(image.with_name(f"{stem}_{c:04d}{ending}") for c in range(channels))
            if not all(p.is_file() for p in split):
                raise DataError(f"{image}: file not found (listed in {meta_path.name} 'training')")
            images = split
        pairs.append((safe_case_name(_split_ending(label)[0], f"volume_{i}"), images, label))
    unique_case_names((name, label) for name, _, label in pairs)
    return sorted((_Volume(*pair) for pair in pairs), key=lambda v: v.name)


def _nnunet_volumes(src: Path, meta_path: Path, ending: Any, channels: int) -> list[_Volume]:
    if not isinstance(ending, str) or ending.lower() not in (".nii.gz", ".nii"):
        raise DataError(f"{meta_path}: file_ending {ending!r} is not supported; only .nii.gz and .nii are")
    label_dir = src / "labelsTr"
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: folder not found")
    labels = sorted(
        p
        for p in label_dir.iterdir()
        if p.is_file() and p.name.endswith(ending) and not p.name.startswith(".")
    )
    if not labels:
        raise DataError(f"{label_dir}: no *{ending} label files")
    volumes = []
    for label in labels:
        case = label.name[: -len(ending)]
        images = tuple(src / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(channels))
        for image in images:
            if not image.is_file():
                raise DataError(f"{image}: file not found (channel image of {label.relative_to(src)})")
        volumes.append(_Volume(safe_case_name(case, "volume"), images, label))
    unique_case_names((v.name, v.label) for v in volumes)
    return volumes


def _split_ending(path: Path) -> tuple[str, str]:
    """``("la_003", ".nii.gz")`` from ``.../la_003.nii.gz``."""
    for ending in (".nii.gz", ".nii"):
        if path.name.lower().endswith(ending):
            return path.name[: -len(ending)], path.name[-len(ending) :]
    return path.stem, path.suffix


def _load_volume(volume: _Volume, channels: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (X, Y, Z, C) float32, affine (4, 4), labels (X, Y, Z) int32)`` after checking they agree."""
    first = read_nifti(volume.images[0])
    if len(volume.images) > 1:
        planes = [first.array]
        for path in volume.images[1:]:
            other = read_nifti(path)
            if other.array.shape != first.array.shape:
                raise DataError(
                    f"{path}: is {_shape(other.array.shape)} but {volume.images[0].name} is "
                    f"{_shape(first.array.shape)}"
                )
            _check_affine(path, other.affine, volume.images[0], first.affine)
            planes.append(other.array)
        if any(p.ndim != 3 for p in planes):
            raise DataError(f"{volume.images[0]}: a per-channel image must be 3D, got {first.array.shape}")
        image = np.stack(planes, axis=-1)
    else:
        image = first.array if first.array.ndim == 4 else first.array[..., None]
    if channels is not None and image.shape[-1] != channels:
        raise DataError(
            f"{volume.images[0]}: has {image.shape[-1]} channel(s) but dataset.json (or earlier volumes) "
            f"declare {channels}"
        )
    label = read_nifti_label(volume.label)
    if label.array.shape != image.shape[:3]:
        raise DataError(
            f"{volume.label}: label is {_shape(label.array.shape)} but {volume.images[0].name} is "
            f"{_shape(image.shape[:3])}"
        )
    _check_affine(volume.label, label.affine, volume.images[0], first.affine)
    return image, first.affine, label.array


def _check_affine(path: Path, affine: np.ndarray, reference: Path, expected: np.ndarray) -> None:
    difference = float(np.abs(affine - expected).max())
    if difference > _AFFINE_TOLERANCE:
        raise DataError(
            f"{path}: affine differs from {reference.name}'s by up to {difference:.4g} (orientation, spacing "
            "or origin disagree)"
        )


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape) + " (XxYxZ)"


def scale_intensities(
    image: np.ndarray, window: tuple[float, float] | None, percentile: tuple[float, float] | None
) -> np.ndarray:
    """``(X, Y, Z, C)`` float32: windowed, or percentile-scaled per channel, to 0..1; else unchanged."""
    if window is not None:
        low, high = window
        return ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)
    if percentile is not None:
        scaled = np.empty_like(image, dtype=np.float32)
        for c in range(image.shape[-1]):
            low, high = np.percentile(image[..., c], percentile)
            if high > low:
                scaled[..., c] = (np.clip(image[..., c], low, high) - low) / (high - low)
            else:  # a constant channel carries no contrast
                scaled[..., c] = 0.0
        return scaled
    return image.astype(np.float32, copy=False)


def _slices_to_keep(
    labels: np.ndarray, axis: int, keep_empty: float, seed: int, name: str, ignore: int | None
) -> tuple[list[int], int]:
    """Indices of the slices to write (all with foreground, a seeded fraction of the rest) and how many
    of them are empty."""
    foreground = (labels > 0) & (labels != ignore) if ignore is not None else labels > 0
    per_slice = np.moveaxis(foreground, axis, 0).reshape(labels.shape[axis], -1).any(axis=1)
    empty = np.flatnonzero(~per_slice)
    count = math.floor(keep_empty * len(empty) + 0.5)
    # Seeded by the volume's name too, so a volume keeps the same slices whatever else is imported.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    chosen = rng.choice(empty, size=count, replace=False) if count else np.empty(0, dtype=np.intp)
    kept = sorted(np.flatnonzero(per_slice).tolist() + chosen.tolist())
    return kept, count


def _write_slices(
    folder: Path,
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    voxel_axis: int,
    axis: str,
    context: int,
    kept: list[int],
    digits: int,
) -> None:
    """Write the kept slices of one volume: per-channel float32 images (with context) and label masks."""
    stack = np.moveaxis(image, voxel_axis, 0)  # (N, H, W, C)
    label_stack = np.moveaxis(labels, voxel_axis, 0)  # (N, H, W)
    last = stack.shape[0] - 1
    label_dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16 if labels.max() < 65536 else np.int32
    for index in kept:
        case = f"{name}_{axis}{index:0{digits}d}"
        c = 0
        for channel in range(stack.shape[-1]):
            for offset in range(-context, context + 1):
                neighbour = min(max(index + offset, 0), last)  # edge slices repeated
                plane = np.ascontiguousarray(stack[neighbour, ..., channel])
                write_image(folder / "imagesTr" / f"{case}_{c:04d}.tif", plane)
                c += 1
        write_image(folder / "labelsTr" / f"{case}.tif", label_stack[index].astype(label_dtype))


def _context_channel_names(names: Sequence[str], axis: str, context: int) -> dict[str, str]:
    """``{"0": "CT_z-1", "1": "CT", "2": "CT_z+1"}``: each source channel with its neighbouring slices."""
    offsets = range(-context, context + 1)
    out = [name if offset == 0 else f"{name}_{axis}{offset:+d}" for name in names for offset in offsets]
    return {str(c): n for c, n in enumerate(out)}


def _command(
    layout: str,
    src: Path,
    dst: Path,
    axis: str,
    context: int,
    window: tuple[float, float] | None,
    percentile: tuple[float, float] | None,
    keep_empty: float,
    seed: int,
) -> str:
    """The ``medseg data import`` command line that repeats this import."""
    command = f"medseg data import {layout} {src} {dst}"
    command += f" --axis {axis}" if axis != "z" else ""
    command += f" --context {context}" if context else ""
    command += f" --window={window[0]:g},{window[1]:g}" if window else ""
    command += f" --percentile {percentile[0]:g},{percentile[1]:g}" if percentile else ""
    command += f" --keep-empty {keep_empty:g}" if keep_empty != 0.1 else ""
    command += f" --seed {seed}" if seed else ""
    return command
