"""Read and write NIfTI volumes (``.nii``, ``.nii.gz``) with their affine, via nibabel. No torch.

Array contract at this boundary:

- images: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` in voxel order as stored (nibabel's axis order), intensities
  after the header's scale slope and intercept;
- labels: ``(X, Y, Z)`` int32, 0 = background;
- affine: ``(4, 4)`` float64 voxel -> world (RAS+, millimetres) matrix.

Every read failure raises :class:`~medseg.errors.DataError` naming the file; every write is atomic.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.atomic import write_bytes_atomic

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class NiftiVolume:
    """A NIfTI volume: ``array`` ``(X, Y, Z[, C])`` and its ``(4, 4)`` voxel -> world ``affine``."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along the three spatial axes (millimetres), from the affine's column norms."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def is_nifti_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike[str], *, dtype: type | np.dtype | None = np.float32) -> NiftiVolume:
    """Read a NIfTI image.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        dtype: dtype of the returned array (default float32); None keeps the stored (scaled) dtype.

    Returns:
        A :class:`NiftiVolume` with ``array`` ``(X, Y, Z)`` or ``(X, Y, Z, C)``; trailing axes of length 1
        beyond the third are dropped (a ``(X, Y, Z, 1)`` label is read as ``(X, Y, Z)``).

    Raises:
        DataError: the file is missing, not NIfTI, truncated, not 3D/4D, or holds NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not is_nifti_file(path):
        raise DataError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    import nibabel as nib

    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)  # scaled by scl_slope/inter; decoded now, errors land here
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # nibabel, gzip and zlib each raise their own types
        raise DataError(f"{path}: cannot read NIfTI ({_reason(exc)})") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4) or 0 in array.shape:
        raise DataError(f"{path}: expected a 3D (X, Y, Z) or 4D (X, Y, Z, C) volume, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: has data type {array.dtype}; expected numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path}: holds NaN or infinite values")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return NiftiVolume(array, affine)


def read_nifti_label(path: str | os.PathLike[str]) -> NiftiVolume:
    """Read a NIfTI label volume as ``(X, Y, Z)`` int32 class ids with its affine.

    Raises:
        DataError: as :func:`read_nifti`, or the volume has channels, non-integer or negative values.
    """
    volume = read_nifti(path, dtype=None)
    array = volume.array
    if array.ndim != 3:
        raise DataError(f"{path}: label volume has shape {array.shape}; expected (X, Y, Z)")
    if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise DataError(f"{path}: label volume holds non-integer values")
    if array.size and array.min() < 0:
        raise DataError(f"{path}: label volume holds negative values (min {array.min():g})")
    if array.size and array.max() > np.iinfo(np.int32).max:
        raise DataError(f"{path}: label volume holds values too large for int32")
    return NiftiVolume(array.astype(np.int32), volume.affine)


def write_nifti(path: str | os.PathLike[str], array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``array`` as a NIfTI-1 file atomically (gzip-compressed when ``path`` ends in ``.gz``).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` of any numeric dtype (bool is written as uint8).
        affine: ``(4, 4)`` voxel -> world matrix; default identity (1 mm voxels at the origin).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    if not is_nifti_file(path):
        raise ValueError(f"{path}: a NIfTI file name must end in .nii or .nii.gz")
    import nibabel as nib

    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    # nibabel picks the format from the extension, so it cannot write the temporary name atomic_path
    # makes; serialise in memory and write the bytes atomically instead.
    data = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    write_bytes_atomic(path, data)
    return path


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__
