"""Read single DICOM images and DICOM series (a folder of slices) via pydicom. No torch.

Array contract at this boundary:

- a single file: ``(H, W)`` float32 (rows, columns) after the modality LUT (rescale slope and intercept,
  e.g. CT Hounsfield units), or ``(H, W, 3)`` uint8 for colour images;
- a series: a :class:`~medseg.io.nifti.NiftiVolume` ``(X, Y, Z)`` float32 with ``X`` = rows, ``Y`` =
  columns and ``Z`` = slices ordered along the slice normal (nibabel's DICOM convention), and a ``(4, 4)``
  voxel -> world affine in NIfTI's RAS+ millimetres (DICOM's patient space is LPS: x and y flipped).

Every read failure raises :class:`~medseg.errors.DataError` naming the file or folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.nifti import NiftiVolume

DICOM_SUFFIXES = (".dcm", ".dicom")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SPACING_TOLERANCE = 0.01  # relative: slices further off a regular grid are refused, not resampled


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file ending in ``.dcm``/``.dicom`` or starting with the DICOM preamble."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_series(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder whose visible files are DICOM files (at least one)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(is_dicom_file(p) for p in files)


def read_dicom(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one 2D DICOM image with its modality LUT applied.

    Args:
        path: a single-frame DICOM file.

    Returns:
        ``(H, W)`` float32 values after rescale slope/intercept (CT: Hounsfield units), or ``(H, W, 3)``
        uint8 for a colour (RGB) image.

    Raises:
        DataError: the file is missing, not DICOM, has no pixel data or holds several frames.
    """
    dataset = _read_dataset(Path(path))
    return _pixels(Path(path), dataset)


def read_dicom_series(folder: str | os.PathLike[str]) -> NiftiVolume:
    """Read a folder of single-frame DICOM slices as one volume.

    Slices are ordered by their position along the slice normal (``ImagePositionPatient`` projected on
    the cross product of the two ``ImageOrientationPatient`` directions), or by ``InstanceNumber`` when a
    slice lacks a position (the affine then uses ``SliceThickness``, default 1 mm).

    Args:
        folder: a folder holding only the DICOM files of one series.

    Returns:
        A :class:`~medseg.io.nifti.NiftiVolume`: ``(rows, columns, slices)`` float32 after rescale slope
        and intercept, and its RAS+ affine.

    Raises:
        DataError: the folder is missing or empty, a file is unreadable, the slices differ in size or
            orientation, two slices share a position, or the slices are not evenly spaced.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: folder holds no DICOM files")
    slices = [(path, _read_dataset(path)) for path in files]
    first_path, first = slices[0]
    shape = (int(first.Rows), int(first.Columns))
    orientation = _floats(first, "ImageOrientationPatient", 6)
    for path, dataset in slices[1:]:
        if (int(dataset.Rows), int(dataset.Columns)) != shape:
            raise DataError(
                f"{path}: is {dataset.Rows}x{dataset.Columns} but {first_path.name} is {shape[0]}x{shape[1]} "
                "(one series per folder)"
            )
        other = _floats(dataset, "ImageOrientationPatient", 6)
        if (orientation is None) != (other is None) or (
            orientation is not None and np.abs(other - orientation).max() > 1e-4
        ):
            raise DataError(f"{path}: ImageOrientationPatient differs from {first_path.name}'s")
    if orientation is None:
        orientation = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])  # axial, as when nothing says otherwise
    row_direction, column_direction = orientation[:3], orientation[3:]  # along a row; down a column
    normal = np.cross(column_direction, row_direction)  # right-handed with (rows, columns) as nibabel's
    positions = [_floats(dataset, "ImagePositionPatient", 3) for _, dataset in slices]
    if all(p is not None for p in positions):
        order = np.argsort([float(p @ normal) for p in positions], kind="stable")
        slices = [slices[i] for i in order]
        positions = [positions[i] for i in order]
        step = _slice_step(folder, [p for p, _ in slices], positions, normal)
        origin = positions[0]
    else:
        slices.sort(key=lambda item: int(getattr(item[1], "InstanceNumber", 0) or 0))
        thickness = float(getattr(first, "SliceThickness", 0) or 0) or 1.0
        step = normal * thickness
        origin = positions[0] if positions[0] is not None else np.zeros(3)
    spacing = _floats(first, "PixelSpacing", 2)
    row_spacing, column_spacing = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    affine = np.eye(4)
    affine[:3, 0] = column_direction * row_spacing  # next row: down a column
    affine[:3, 1] = row_direction * column_spacing  # next column: along a row
    affine[:3, 2] = step
    affine[:3, 3] = origin
    planes = []
    for path, dataset in slices:
        plane = _pixels(path, dataset)
        if plane.ndim != 2:
            raise DataError(f"{path}: a colour DICOM cannot be part of a volume")
        planes.append(plane)
    return NiftiVolume(np.stack(planes, axis=-1), _LPS_TO_RAS @ affine)


def _read_dataset(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for non-DICOM or truncated files
        raise DataError(f"{path}: cannot read DICOM ({_reason(exc)})") from exc
    if "PixelData" not in dataset:
        raise DataError(f"{path}: DICOM file holds no image (no PixelData)")
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        raise DataError(
            f"{path}: a multi-frame DICOM ({dataset.NumberOfFrames} frames); expected one 2D frame"
        )
    return dataset


def _pixels(path: Path, dataset) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        pixels = dataset.pixel_array
        if int(getattr(dataset, "SamplesPerPixel", 1) or 1) == 3:
            return np.asarray(pixels, dtype=np.uint8)
        # rescale slope/intercept (CT: Hounsfield units), as the stored values are meant to be read
        return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float32)
    except Exception as exc:  # missing codecs, truncated pixel data, ...
        raise DataError(f"{path}: cannot decode DICOM pixels ({_reason(exc)})") from exc


def _floats(dataset, keyword: str, count: int) -> np.ndarray | None:
    value = getattr(dataset, keyword, None)
    if value is None:
        return None
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.size == count else None


def _slice_step(
    folder: Path, paths: list[Path], positions: list[np.ndarray], normal: np.ndarray
) -> np.ndarray:
    """The world step from one slice to the next; refuses duplicates and uneven spacing."""
    if len(positions) == 1:
        return normal.copy()  # one slice: thickness along the normal unknown, 1 mm is as good as any
    distances = np.diff([float(p @ normal) for p in positions])
    duplicate = int(np.argmin(distances))
    if distances[duplicate] <= 1e-6:
        raise DataError(
            f"{folder}: {paths[duplicate].name} and {paths[duplicate + 1].name} share a slice position "
            "(two series in one folder?)"
        )
    mean = float(distances.mean())
    if np.abs(distances - mean).max() > _SPACING_TOLERANCE * mean:
        raise DataError(
            f"{folder}: slices are unevenly spaced ({distances.min():.3g} to {distances.max():.3g} mm); "
            "missing slices or two series in one folder"
        )
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__
