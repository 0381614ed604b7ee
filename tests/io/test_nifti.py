"""Tests for NIfTI reading and writing (medseg.io.nifti), cross-checked against nibabel itself."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import DataError
from medseg.io.nifti import is_nifti_file, read_nifti, read_nifti_label, write_nifti

AFFINE = np.array([[0.0, -0.8, 0.0, 12.5], [0.9, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 40.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii"])
def test_write_then_read_round_trip(tmp_path: Path, name: str) -> None:
    array = np.random.default_rng(0).normal(size=(16, 20, 6)).astype(np.float32)
    path = write_nifti(tmp_path / name, array, AFFINE)
    assert path == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left
    with open(path, "rb") as file:
        assert (file.read(2) == b"\x1f\x8b") == name.endswith(".gz")
    volume = read_nifti(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.spacing == pytest.approx((0.9, 0.8, 2.5), abs=1e-6)
    reference = nib.load(str(path))  # what nibabel reads from our file
    np.testing.assert_array_equal(reference.get_fdata(dtype=np.float32), array)
    np.testing.assert_allclose(reference.affine, AFFINE, atol=1e-6)


def test_read_applies_scaling_and_drops_singleton_axes(tmp_path: Path) -> None:
    raw = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3, 1)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(0.5, -10.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    volume = read_nifti(tmp_path / "scaled.nii.gz")
    assert volume.array.shape == (4, 5, 3)
    np.testing.assert_allclose(volume.array, raw[..., 0] * 0.5 - 10.0)
    four_d = read_nifti(write_nifti(tmp_path / "multi.nii.gz", np.zeros((4, 5, 3, 2), np.uint8)), dtype=None)
    assert four_d.array.shape == (4, 5, 3, 2) and four_d.array.dtype == np.uint8
    np.testing.assert_array_equal(four_d.affine, np.eye(4))


def test_read_label_gives_int32_and_refuses_bad_values(tmp_path: Path) -> None:
    labels = np.zeros((6, 7, 3), np.uint8)
    labels[1:3, 2:5, 1] = 2
    volume = read_nifti_label(write_nifti(tmp_path / "seg.nii.gz", labels, AFFINE))
    assert volume.array.dtype == np.int32
    np.testing.assert_array_equal(volume.array, labels)
    write_nifti(tmp_path / "frac.nii.gz", np.full((4, 4, 2), 0.5, np.float32))
    with pytest.raises(DataError, match=r"frac\.nii\.gz: label volume holds non-integer values"):
        read_nifti_label(tmp_path / "frac.nii.gz")
    write_nifti(tmp_path / "neg.nii.gz", np.full((4, 4, 2), -1, np.int16))
    with pytest.raises(DataError, match=r"neg\.nii\.gz: label volume holds negative values"):
        read_nifti_label(tmp_path / "neg.nii.gz")
    write_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"4d\.nii\.gz: label volume has shape \(4, 4, 2, 2\)"):
        read_nifti_label(tmp_path / "4d.nii.gz")


def test_unreadable_files_raise_one_line_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.nii\.gz: file not found"):
        read_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(DataError, match=r"junk\.nii\.gz: cannot read NIfTI") as info:
        read_nifti(tmp_path / "junk.nii.gz")
    assert "\n" not in str(info.value)
    good = (write_nifti(tmp_path / "good.nii.gz", np.ones((8, 8, 8), np.float32))).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz: cannot read NIfTI"):
        read_nifti(tmp_path / "cut.nii.gz")
    write_nifti(tmp_path / "flat.nii", np.ones((8, 8, 1, 1, 3), np.float32))
    with pytest.raises(DataError, match=r"flat\.nii: expected a 3D"):
        read_nifti(tmp_path / "flat.nii")
    nan = np.ones((4, 4, 2), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"nan\.nii\.gz: holds NaN"):
        read_nifti(write_nifti(tmp_path / "nan.nii.gz", nan))
    (tmp_path / "image.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"image\.png: not a NIfTI file"):
        read_nifti(tmp_path / "image.png")


def test_is_nifti_file() -> None:
    assert is_nifti_file("a/b.nii.gz") and is_nifti_file("B.NII") and not is_nifti_file("b.gz")
    with pytest.raises(ValueError, match="must end in .nii"):
        write_nifti("out.tif", np.zeros((2, 2, 2)))
