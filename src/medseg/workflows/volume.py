"""Predict 3D volumes (NIfTI files, DICOM series folders) with a run trained on sliced volumes.

A run trained on a dataset written by ``medseg data import msd|nnunet`` saw 2D slices cut along one voxel
axis, with ``context`` neighbouring slices as extra channels and intensities windowed or percentile-scaled
per volume. :func:`predict_volume` repeats exactly that on a new volume: it turns the volume to the
orientation of the training volumes, scales intensities as the importer did, cuts the same slices,
predicts each one, stacks the class ids back and turns them to the input's voxel order, so the mask
overlays the input with the input's own affine. The importer's settings are read from the training
dataset's ``dataset.json`` (``config.data.path``), which the run's config points at.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.config import Config
from medseg.errors import DataError
from medseg.io.dicom import is_dicom_series, read_dicom_series
from medseg.io.nifti import NiftiVolume, is_nifti_file, read_nifti, write_nifti

if TYPE_CHECKING:
    from medseg.inference.predictor import Predictor

_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class SliceSettings:
    """How the training volumes were cut into slices (``medseg data import msd|nnunet``).

    Attributes:
        axis: ``"x"``, ``"y"`` or ``"z"``: the voxel axis sliced along (first, second, third).
        context: neighbouring slices on each side stacked as channels (edge slices repeated).
        window: ``(low, high)`` intensities clipped and scaled to 0..1, or None.
        percentile: ``(low, high)`` percentiles of each volume channel scaled to 0..1, or None.
        orientation: axis codes of the training volumes' voxel axes, e.g. ``("R", "A", "S")``; None
            when the dataset records no affine.
    """

    axis: str
    context: int
    window: tuple[float, float] | None = None
    percentile: tuple[float, float] | None = None
    orientation: tuple[str, str, str] | None = None

    @property
    def voxel_axis(self) -> int:
        """``axis`` as a voxel axis index."""
        return _AXES[self.axis]


@dataclass(frozen=True)
class VolumeClass:
    """How much of a volume one class fills.

    Attributes:
        id: class id.
        name: class name.
        voxels: voxels predicted as this class.
        fraction: ``voxels`` / voxels in the volume, 0..1.
        ml: volume in millilitres (voxel size from the affine).
    """

    id: int
    name: str
    voxels: int
    fraction: float
    ml: float


@dataclass
class VolumePrediction:
    """The result of :func:`predict_volume`.

    Attributes:
        mask_path: the written ``NAME_seg.nii.gz``.
        labels: ``(X, Y, Z)`` class ids in the input's voxel order, uint8 (uint16 with 256+ classes).
        affine: ``(4, 4)`` the input's voxel -> world (RAS+, mm) affine, also the mask's.
        classes: one :class:`VolumeClass` per class, in id order (background included).
    """

    mask_path: Path
    labels: np.ndarray
    affine: np.ndarray
    classes: list[VolumeClass]

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return voxel_ml(self.affine)

    def row(self, source: str | os.PathLike[str], mask: str) -> dict[str, Any]:
        """One ``volumes.csv`` row: file, mask, shape, voxel size, then per class voxels and mL."""
        row: dict[str, Any] = {
            "file": str(source),
            "mask": mask,
            "shape": "x".join(map(str, self.labels.shape)),
            "voxel_ml": self.voxel_ml,
        }
        for c in self.classes:
            row[f"voxels_{c.name}"] = c.voxels
            row[f"ml_{c.name}"] = c.ml
        return row


def is_volume_input(path: str | os.PathLike[str]) -> bool:
    """True for a ``.nii``/``.nii.gz`` file or a folder of DICOM slices (a series)."""
    path = Path(path)
    return (path.is_file() and is_nifti_file(path)) or is_dicom_series(path)


def volume_name(path: str | os.PathLike[str]) -> str:
    """``case`` from ``.../case.nii.gz``, ``.../case.nii``, a series folder ``.../case/`` or any other
    file ``.../case.ext``."""
    path = Path(path)
    for ending in (".nii.gz", ".nii"):
        if path.name.lower().endswith(ending):
            return path.name[: -len(ending)]
    return path.name if path.is_dir() else path.stem


def read_volume(path: str | os.PathLike[str]) -> NiftiVolume:
    """A NIfTI file or a DICOM series folder as ``(X, Y, Z)`` or ``(X, Y, Z, C)`` float32 with its affine.

    Raises:
        DataError: neither a NIfTI file nor a folder of DICOM files, or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        if not is_dicom_series(path):
            raise DataError(f"{path}: not a DICOM series (the folder holds files that are not DICOM)")
        return read_dicom_series(path)
    return read_nifti(path)


def slice_settings(config: Config) -> SliceSettings:
    """The slicing of the dataset a run was trained on: ``data.slicing`` in the run's config (copied from
    the dataset at training time), else the training dataset's ``dataset.json`` (runs trained before).

    Args:
        config: the run's config.

    Raises:
        DataError: no slicing recorded (not trained on ``medseg data import msd|nnunet`` output), so a
            volume cannot be cut as the training slices were.
    """
    meta_path = Path(config.data.path or ".") / "dataset.json"
    hint = "the run must be trained on a dataset written by `medseg data import msd|nnunet`"
    if config.data.slicing:
        extra = dict(config.data.slicing)
        affine = extra.get("affine")
        extra["volumes"] = {"training": {"affine": affine}} if affine is not None else {}
        meta_path = Path("config.yaml (data.slicing)")
    elif not config.data.path or not meta_path.is_file():
        raise DataError(f"{meta_path}: training dataset not found, so the volume slicing is unknown ({hint})")
    else:
        try:
            extra = json.loads(meta_path.read_text(encoding="utf-8")).get("medseg") or {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise DataError(f"{meta_path}: cannot read dataset.json ({exc})") from None
    if extra.get("axis") not in _AXES:
        raise DataError(f"{meta_path}: records no volume slicing (no medseg.axis); {hint}")
    try:
        window, percentile = extra.get("window"), extra.get("percentile")
        settings = SliceSettings(
            axis=extra["axis"],
            context=int(extra.get("context") or 0),
            window=(float(window[0]), float(window[1])) if window else None,
            percentile=(float(percentile[0]), float(percentile[1])) if percentile else None,
            orientation=_orientation(extra.get("volumes") or {}),
        )
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise DataError(f"{meta_path}: unreadable medseg slicing record ({exc})") from None
    return settings


def scale_intensities(image: np.ndarray, settings: SliceSettings) -> np.ndarray:
    """``(X, Y, Z, C)`` -> float32 windowed or percentile-scaled (per channel) exactly as the importer did."""
    from medseg.data.importers.msd import scale_intensities as importer_scaling

    return importer_scaling(image, settings.window, settings.percentile)


def slice_image(stack: np.ndarray, index: int, context: int) -> np.ndarray:
    """One 2D input as the importer wrote it: ``(H, W)`` or ``(H, W, C * (2 * context + 1))`` float32.

    Args:
        stack: ``(N, H, W, C)`` scaled slices (the volume with the slicing axis first).
        index: the slice.
        context: neighbours on each side; channel order is, per source channel, slices
            ``index - context .. index + context`` with edge slices repeated.
    """
    last = stack.shape[0] - 1
    planes = [
        stack[min(max(index + offset, 0), last), ..., channel]
        for channel in range(stack.shape[-1])
        for offset in range(-context, context + 1)
    ]
    return planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)


def segment_volume(
    predictor: Predictor, volume: NiftiVolume, settings: SliceSettings, source: str = "volume"
) -> np.ndarray:
    """Predict every slice of a volume and stack the class ids.

    Args:
        predictor: a semantic run trained on slices cut with ``settings``.
        volume: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` raw intensities and affine.
        settings: :func:`slice_settings` of the run.
        source: name used in error messages.

    Returns:
        ``(X, Y, Z)`` int32 class ids in ``volume``'s voxel order.

    Raises:
        DataError: the volume's channels (times the context slices) do not match the model's inputs.
    """
    image = volume.array if volume.array.ndim == 4 else volume.array[..., None]
    per_slice = image.shape[-1] * (2 * settings.context + 1)
    expected = predictor.config.data.in_channels
    if per_slice != expected:
        context = f" with {settings.context} context slice(s) on each side" if settings.context else ""
        raise DataError(
            f"{source}: volume has {image.shape[-1]} channel(s), giving {per_slice} input channel(s)"
            f"{context}, but the model expects {expected}"
        )
    to_training, from_training = _reorientations(volume.affine, settings.orientation)
    image = _apply_orientation(image, to_training)
    stack = np.moveaxis(scale_intensities(image, settings), settings.voxel_axis, 0)  # (N, H, W, C)
    labels = np.empty(stack.shape[:3], np.int32)
    for index in range(stack.shape[0]):
        labels[index] = predictor.predict(slice_image(stack, index, settings.context), source).labels
    return _apply_orientation(np.moveaxis(labels, 0, settings.voxel_axis), from_training)


def predict_volume(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    stem: str | None = None,
    settings: SliceSettings | None = None,
) -> VolumePrediction:
    """Segment a NIfTI volume or DICOM series and write ``OUT/masks/NAME_seg.nii.gz`` with its affine.

    Args:
        predictor: a semantic run trained on a dataset from ``medseg data import msd|nnunet``.
        path: a ``.nii``/``.nii.gz`` file or a folder of one DICOM series.
        out: output folder.
        stem: ``NAME`` of the mask; default :func:`volume_name` of ``path``.
        settings: the run's slicing; default :func:`slice_settings` of ``predictor.config``.

    Returns:
        The :class:`VolumePrediction`: mask path, ``(X, Y, Z)`` class ids (uint8, or uint16 with 256
        classes or more), the input's affine and per-class voxel counts and millilitres.

    Raises:
        DataError: unreadable input, no recorded slicing, a channel mismatch, or an instance run.
    """
    path = Path(path)
    if predictor.config.task != "semantic":
        raise DataError(f"{path}: volumes are predicted with semantic runs only, not {predictor.config.task}")
    settings = settings or slice_settings(predictor.config)
    volume = read_volume(path)
    names = predictor.config.data.class_names
    labels = segment_volume(predictor, volume, settings, str(path))
    regions = predictor.regions  # overlapping classes: mask values, each region counts all it holds
    labels = labels.astype(regions.dtype if regions else np.uint8 if len(names) < 256 else np.uint16)
    mask_path = write_nifti(
        Path(out) / "masks" / f"{stem or volume_name(path)}_seg.nii.gz", labels, volume.affine
    )
    flat = labels.reshape(-1, labels.shape[-1])
    counts = regions.counts(flat) if regions else np.bincount(labels.ravel(), minlength=len(names))
    size = voxel_ml(volume.affine)
    classes = [
        VolumeClass(i, name, int(counts[i]), float(counts[i] / labels.size), float(counts[i] * size))
        for i, name in enumerate(names)
    ]
    return VolumePrediction(mask_path, labels, volume.affine, classes)


def prepare_dicom_image(image: np.ndarray, settings: SliceSettings) -> np.ndarray:
    """A single DICOM slice ``(H, W)`` as a run trained on sliced volumes expects it: windowed (or
    percentile-scaled over this slice alone) and repeated as its own context slices.

    Returns:
        ``(H, W)`` or ``(H, W, 2 * context + 1)`` float32.
    """
    scaled = scale_intensities(image[None, ..., None], settings)  # one-slice volume (1, H, W, 1)
    return slice_image(scaled, 0, settings.context)


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in millilitres: ``|det(affine[:3, :3])|`` mm³ / 1000."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def _orientation(records: dict) -> tuple[str, str, str] | None:
    """Axis codes of the first recorded training volume's affine (the importer writes them all)."""
    from nibabel.orientations import aff2axcodes

    for record in records.values():
        affine = np.asarray(record["affine"], dtype=np.float64)
        return tuple(aff2axcodes(affine))
    return None


def _reorientations(affine: np.ndarray, target: tuple[str, str, str] | None):
    """nibabel orientation transforms from ``affine``'s axes to ``target`` and back (None: no change)."""
    if target is None:
        return None, None
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    current, wanted = io_orientation(affine), axcodes2ornt(target)
    forward = ornt_transform(current, wanted)
    if np.array_equal(forward, [[0, 1], [1, 1], [2, 1]]):
        return None, None
    return forward, ornt_transform(wanted, current)


def _apply_orientation(array: np.ndarray, transform) -> np.ndarray:
    """Permute and flip the first three axes of ``array`` (nibabel ``ornt`` transform); None: unchanged."""
    if transform is None:
        return array
    from nibabel.orientations import apply_orientation

    return np.ascontiguousarray(apply_orientation(array, transform))
