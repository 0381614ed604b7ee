"""Dataset discovery, loading and validation (no torch).

Two layouts are read:

- native = nnU-Net v2 raw: ``dataset.json``, ``imagesTr/CASE_0000.png`` (one file per channel, or one RGB
  file; a name without the ``_0000`` channel suffix is read as all channels of that case) and
  ``labelsTr/CASE.png``;
- a plain ``images/`` + ``masks/`` folder pair matched by file stem, with the class names given by the
  caller (``--classes background,cell``) since there is no dataset.json to hold them.

Instance datasets (``"medseg": {"task": "instance"}`` in dataset.json) hold instance ids in ``labelsTr``
(0 = background, any positive ids). A semantic dataset may carry instance labels beside its class masks
(``"medseg": {"instances": "instancesTr"}``, as the blood phantom does). Either way a ``CASE.json`` sidecar
next to the instance file may map instance ids to type names (``{"3": "neutrophil"}``), the types listed in
``"medseg": {"instance_classes": [...]}``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data.regions import Regions, parse_region_labels
from medseg.data.splits import group_of, suggest_group_by
from medseg.errors import DataError
from medseg.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_label

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One training example: its image file(s) in channel order and its label file (if any)."""

    name: str
    images: tuple[Path, ...]
    label: Path | None = None
    instances: Path | None = None  # instance ids (the label itself in an instance dataset)


@dataclass
class Dataset:
    """A dataset on disk: where it is, its cases and its classes."""

    root: Path
    layout: str  # "nnunet" | "folders"
    cases: list[Case]
    labels: dict[str, int]
    channel_names: dict[str, str] = field(default_factory=dict)
    colors: dict[str, list[int]] = field(default_factory=dict)
    orphan_labels: list[Path] = field(default_factory=list)  # label files with no image
    ignore_label: int | None = None  # nnU-Net's "ignore" label value: pixels excluded from loss and metrics
    task: str = "semantic"  # what dataset.json's "medseg" section says the labels are
    instance_classes: list[str] = field(default_factory=list)  # instance type names (sidecar values)
    differential: list[str] = field(default_factory=list)  # types a differential count is over
    group_by: str = ""  # importer's suggested data.group_by regex (e.g. one patient or sequence per group)
    slicing: dict = field(
        default_factory=dict
    )  # volumes cut into slices: axis, context, window, percentile, affine
    regions: dict[str, list[int]] = field(default_factory=dict)  # overlapping classes (medseg.data.regions)

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by id."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    def case(self, name: str) -> Case:
        """The case called ``name``."""
        if len(self._by_name) != len(self.cases):
            self._by_name = {case.name: case for case in self.cases}
        try:
            return self._by_name[name]
        except KeyError:
            raise DataError(f"{self.root}: no case named {name!r}") from None

    def __post_init__(self) -> None:
        self._by_name: dict[str, Case] = {}


def open_dataset(path: str | Path, *, classes: Sequence[str] | None = None) -> Dataset:
    """Find the cases of a dataset folder (native nnU-Net layout or images/ + masks/).

    Args:
        path: the dataset folder.
        classes: class names in id order for the images/ + masks/ layout (ignored when dataset.json
            names them); default ``["background", "foreground"]``.

    Raises:
        DataError: the folder is missing, is neither layout, or dataset.json is invalid.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if (root / "dataset.json").is_file():
        return _open_nnunet(root)
    if (root / "images").is_dir():
        return _open_folders(root, classes)
    raise DataError(
        f"{root}: not a dataset (expected dataset.json + imagesTr/ + labelsTr/, or images/ + masks/ folders)"
    )


def _open_nnunet(root: Path) -> Dataset:
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: cannot read dataset.json ({str(exc).splitlines()[0]})") from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise DataError(f'{meta_path}: missing \'labels\' mapping, e.g. {{"background": 0, "cell": 1}}')
    labels = dict(labels)
    ignore_label = labels.pop("ignore", None)  # nnU-Net v2: unannotated pixels, not a class
    if ignore_label is not None and not (isinstance(ignore_label, int) and ignore_label >= 0):
        raise DataError(f"{meta_path}: 'ignore' must be a non-negative integer label value")
    try:
        labels, parsed_regions = parse_region_labels(labels, str(meta_path))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if not all(isinstance(v, int) and v >= 0 for v in labels.values()):
        raise DataError(
            f"{meta_path}: 'labels' must map names to non-negative integer ids, or to lists of mask "
            'values (regions: "liver": [1, 2])'
        )
    regions = parsed_regions.to_mapping() if parsed_regions else {}
    channel_names = {
        str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality") or {}).items()
    }
    extra = meta.get("medseg") or {}
    colors = extra.get("colors") or {}
    task = extra.get("task") or "semantic"
    if task not in ("semantic", "instance"):
        raise DataError(f"{meta_path}: medseg.task must be 'semantic' or 'instance', got {task!r}")
    image_dir, label_dir = root / "imagesTr", root / "labelsTr"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: folder not found")
    label_files = {f.stem: f for f in _files(label_dir, LABEL_SUFFIXES)} if label_dir.is_dir() else {}
    max_channels = len(channel_names) or 10_000
    channels: dict[str, dict[int, Path]] = {}
    for file in sorted(_files(image_dir, IMAGE_SUFFIXES)):
        match = _CHANNEL_SUFFIX.match(file.stem)
        # "img_0001.png" is channel 1 of case "img" only if no label is named "img_0001" and the dataset
        # has that many channels; otherwise the digits are part of the case name.
        if match and file.stem not in label_files and int(match["channel"]) < max_channels:
            name, channel = match["case"], int(match["channel"])
        else:
            name, channel = file.stem, 0
        channels.setdefault(name, {})[channel] = file
    if task == "instance":
        instance_files = label_files
    elif extra.get("instances"):
        folder = root / str(extra["instances"])
        instance_files = {f.stem: f for f in _files(folder, LABEL_SUFFIXES)} if folder.is_dir() else {}
    else:
        instance_files = {}
    cases = [
        Case(name, tuple(files[c] for c in sorted(files)), label_files.get(name), instance_files.get(name))
        for name, files in sorted(channels.items())
    ]
    orphans = sorted(f for stem, f in label_files.items() if stem not in channels)
    types = [str(t) for t in extra.get("instance_classes") or []]
    differential = [str(t) for t in extra.get("differential") or []]
    group_by = str(extra.get("group_by") or "")
    slicing = {k: extra[k] for k in ("axis", "context", "window", "percentile") if k in extra}
    if slicing and isinstance(extra.get("volumes"), dict) and extra["volumes"]:
        first = next(iter(extra["volumes"].values()))
        if isinstance(first, dict) and "affine" in first:
            slicing["affine"] = first["affine"]  # the training volumes' orientation
    return Dataset(
        root,
        "nnunet",
        cases,
        labels,
        channel_names,
        colors,
        orphans,
        ignore_label,
        task,
        types,
        differential,
        group_by,
        slicing,
        regions,
    )


def _open_folders(root: Path, classes: Sequence[str] | None) -> Dataset:
    names = list(classes) if classes else ["background", "foreground"]
    if len(set(names)) != len(names):
        raise DataError(f"--classes: duplicate class names in {','.join(names)}")
    mask_dir = next((root / d for d in ("masks", "labels") if (root / d).is_dir()), root / "masks")
    images = {f.stem: f for f in _files(root / "images", IMAGE_SUFFIXES)}
    masks = {f.stem: f for f in _files(mask_dir, LABEL_SUFFIXES)} if mask_dir.is_dir() else {}
    cases = [Case(stem, (f,), masks.get(stem)) for stem, f in sorted(images.items())]
    orphans = sorted(f for stem, f in masks.items() if stem not in images)
    return Dataset(root, "folders", cases, {n: i for i, n in enumerate(names)}, {}, {}, orphans)


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return [
        f
        for f in folder.iterdir()
        if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith(".")
    ]


def load_image(case: Case) -> np.ndarray:
    """Read a case's image as ``(H, W, C)`` (channels from one multi-channel file or one file per channel).

    Raises:
        DataError: a file is unreadable, or the channel files differ in size.
    """
    arrays = [read_image(p) for p in case.images]
    arrays = [a[..., None] if a.ndim == 2 else a for a in arrays]
    for path, array in zip(case.images[1:], arrays[1:]):
        if array.shape[:2] != arrays[0].shape[:2]:
            raise DataError(
                f"{path}: image is {_size(array)} but {case.images[0].name} is {_size(arrays[0])}"
            )
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)


def load_label(case: Case, image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a case's label mask ``(H, W)`` int32, checking its size against ``image_shape``."""
    if case.label is None:
        raise DataError(f"{case.images[0]}: no label file for case {case.name!r}")
    label = read_label(case.label)
    if image_shape is not None and label.shape[:2] != tuple(image_shape[:2]):
        raise DataError(
            f"{case.label}: label is {_size(label)} but {case.images[0].name} is {_size(image_shape)}"
        )
    return label


def load_instances(
    case: Case, image_shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """Read a case's instance ids ``(H, W)`` int32 and its id -> type sidecar (empty without one).

    Raises:
        DataError: no instance file, negative ids, a size that differs from ``image_shape``, or an
            unreadable sidecar.
    """
    if case.instances is None:
        raise DataError(f"{case.images[0]}: no instance label file for case {case.name!r}")
    ids = read_label(case.instances)
    if image_shape is not None and ids.shape[:2] != tuple(image_shape[:2]):
        raise DataError(
            f"{case.instances}: label is {_size(ids)} but {case.images[0].name} is {_size(image_shape)}"
        )
    if ids.min(initial=0) < 0:
        raise DataError(f"{case.instances}: instance ids must be >= 0, found {int(ids.min())}")
    sidecar = case.instances.with_suffix(".json")
    types: dict[int, str] = {}
    if sidecar.is_file():
        try:
            raw = json.loads(sidecar.read_text(encoding="utf-8"))
            types = {int(k): str(v) for k, v in raw.items()}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{sidecar}: expected a JSON object of instance id -> type ({reason})") from None
    return ids.astype(np.int32, copy=False), types


def undeclared_values(
    label: np.ndarray,
    labels: dict[str, int],
    ignore_index: int | None = None,
    regions: dict[str, list[int]] | None = None,
) -> list[int]:
    """Values of ``label`` (H, W) that are neither a class id of ``labels`` (with ``regions``: a mask value
    of a region, or 0) nor ``ignore_index``."""
    allowed = set(_region_values(regions)) if regions else set(labels.values())
    if ignore_index is not None and ignore_index >= 0:
        allowed.add(ignore_index)
    return sorted(set(np.unique(label).tolist()) - allowed)


def label_values_error(
    path: Path | None,
    label: np.ndarray,
    labels: dict[str, int],
    ignore_index: int | None = None,
    regions: dict[str, list[int]] | None = None,
) -> str | None:
    """The one-line problem when ``label`` holds values that are not classes (or region values), else None."""
    unknown = undeclared_values(label, labels, ignore_index, regions)
    if not unknown:
        return None
    if regions:
        allowed = [v for v in _region_values(regions) if v]
        return f"{path}: label values {unknown} belong to no region (region mask values: {allowed})"
    return f"{path}: label values {unknown} are not declared classes {sorted(labels.values())}"


def _region_values(regions: dict[str, list[int]]) -> list[int]:
    """0 and every mask value of a region, ascending."""
    return Regions.from_mapping(regions).mask_values.tolist()


def _size(shape_or_array: np.ndarray | tuple[int, ...]) -> str:
    shape = shape_or_array.shape if isinstance(shape_or_array, np.ndarray) else shape_or_array
    return f"{shape[1]}x{shape[0]}"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: every problem found and a summary of what is there."""

    problems: list[str]
    summary: dict

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def check_dataset(
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    ignore_index: int | None = None,
    group_by: str | None = None,
) -> CheckReport:
    """Validate a dataset, listing every problem at once rather than stopping at the first.

    Checks: dataset readable and not empty, every image has a label and every label an image, every
    file decodes, image channels agree with each other (and with dataset.json), label sizes match
    image sizes, label values are declared classes, ``group_by`` is a valid regex.

    Args:
        path: the dataset folder.
        classes: class names for an images/ + masks/ dataset.
        ignore_index: a label value allowed besides the classes (default: dataset.json's "ignore").
        group_by: the regex that keeps related cases together in splits (default: dataset.json's
            ``medseg.group_by``).

    Returns:
        A report with ``problems`` (one line each, naming the file) and ``summary`` (cases, channels,
        sizes, class pixel fractions; ``group_by`` and ``groups`` when grouping is set, else
        ``suggested_group_by`` ``{"pattern", "groups", "cases"}`` when case names look like several
        images per patient or volume, see :func:`medseg.data.splits.suggest_group_by`).
    """
    try:
        dataset = open_dataset(path, classes=classes)
    except DataError as exc:
        return CheckReport([str(exc)], {})
    problems: list[str] = []
    if not dataset.cases:
        problems.append(f"{dataset.root}: dataset is empty (no image files found)")
    problems += [f"{f}: label has no matching image" for f in dataset.orphan_labels]
    if len(dataset.labels) < 2:
        problems.append(f"{dataset.root}: needs at least two classes (background and one more)")
    if ignore_index is None:
        ignore_index = dataset.ignore_label
    declared = set(dataset.labels.values()) | ({ignore_index} if ignore_index is not None else set())
    expected_channels = len(dataset.channel_names) or None
    channel_counts: Counter[int] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    pixel_counts: Counter[int] = Counter()
    objects: Counter[str] = Counter()  # instance type -> count ("" = untyped)
    for case in dataset.cases:
        if case.label is None:
            problems.append(f"{case.images[0]}: no label file for case {case.name!r}")
        try:
            image = load_image(case)
        except DataError as exc:
            problems.append(str(exc))
            image = None
        if image is not None:
            channel_counts[image.shape[-1]] += 1
            sizes[image.shape[:2]] += 1
            if expected_channels and image.shape[-1] != expected_channels:
                problems.append(
                    f"{case.images[0]}: image has {image.shape[-1]} channel(s) but dataset.json declares "
                    f"{expected_channels}"
                )
        if case.label is None:
            continue
        try:
            label = load_label(case, image.shape if image is not None else None)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if dataset.task == "instance":
            label = (label > 0).astype(np.int32)  # instance ids: count foreground, check the ids below
        values, counts = np.unique(label, return_counts=True)
        pixel_counts.update(dict(zip(values.tolist(), counts.tolist())))
        problem = label_values_error(case.label, label, dataset.labels, ignore_index, dataset.regions)
        if problem:
            problems.append(problem)
    for case in dataset.cases:
        if case.instances is not None:
            problems += _instance_problems(case, dataset, objects)
    if not expected_channels and len(channel_counts) > 1:
        common = channel_counts.most_common(1)[0][0]
        problems.append(
            f"{dataset.root}: images disagree on channel count ({dict(channel_counts)}); most have {common}"
        )
    total = sum(pixel_counts.values()) or 1
    id_to_name = {v: k for k, v in dataset.labels.items()}
    if ignore_index is not None:
        id_to_name[ignore_index] = "ignore"
    summary = {
        "dataset": str(dataset.root),
        "layout": dataset.layout,
        "cases": len(dataset.cases),
        "labelled": sum(c.label is not None for c in dataset.cases),
        "channels": dict(channel_counts),
        "sizes": {f"{w}x{h}": n for (h, w), n in sizes.most_common()},
        "class_fractions": {
            id_to_name.get(v, f"unknown({v})"): pixel_counts.get(v, 0) / total
            for v in sorted(declared | set(pixel_counts))
        },
    }
    if dataset.regions:  # overlapping: each region's share counts every mask value it holds
        fractions = {"background": pixel_counts.get(0, 0) / total}
        for name, values in dataset.regions.items():
            fractions[name] = sum(pixel_counts.get(v, 0) for v in values) / total
        summary["class_fractions"] = fractions
        summary["regions"] = dict(dataset.regions)
    if objects:
        summary["task"] = dataset.task
        summary["objects"] = dict(sorted(objects.items()))
    problems += _grouping(dataset, dataset.group_by if group_by is None else group_by, summary)
    return CheckReport(problems, summary)


def _grouping(dataset: Dataset, group_by: str, summary: dict) -> list[str]:
    """Record the grouping (or a suggested one) in ``summary``; a problem when the regex is invalid."""
    names = [case.name for case in dataset.cases]
    if group_by:
        try:
            re.compile(group_by)
        except re.error as exc:
            return [f"{dataset.root}: group_by {group_by!r} is not a valid regex ({exc})"]
        summary["group_by"] = group_by
        summary["groups"] = len({group_of(name, group_by) for name in names})
        return []
    suggestion = suggest_group_by(names)
    if suggestion is not None:
        summary["suggested_group_by"] = {
            "pattern": suggestion.pattern,
            "groups": suggestion.groups,
            "cases": suggestion.cases,
        }
    return []


def _instance_problems(case: Case, dataset: Dataset, objects: Counter[str]) -> list[str]:
    """Check one case's instance ids and type sidecar, counting objects per type into ``objects``."""
    try:
        ids, types = load_instances(case)
    except DataError as exc:
        return [str(exc)]
    present = set(np.unique(ids).tolist()) - {0}
    problems = []
    if types:
        unknown = sorted({t for t in types.values() if t not in dataset.instance_classes})
        if unknown:
            problems.append(
                f"{case.instances.with_suffix('.json')}: types {unknown} are not the dataset's "
                f"instance_classes {dataset.instance_classes}"
            )
        untyped = sorted(present - set(types))
        if untyped:
            problems.append(
                f"{case.instances.with_suffix('.json')}: instances {untyped[:5]} have no type"
                + (f" ({len(untyped)} in all)" if len(untyped) > 5 else "")
            )
    objects.update(types.get(i, "") for i in present)
    return problems
