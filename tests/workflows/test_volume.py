"""Predicting 3D volumes: NIfTI files and DICOM series cut, predicted and stacked as the importer sliced the
training volumes; single DICOM files; DICOM series geometry checked against nibabel's DICOM wrapper."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medseg.cli import main
from medseg.errors import DataError
from medseg.inference.predictor import Predictor
from medseg.io import read_image, read_label
from medseg.io.dicom import is_dicom_series, read_dicom, read_dicom_series
from medseg.io.nifti import read_nifti
from medseg.workflows.volume import (
    SliceSettings,
    predict_volume,
    slice_image,
    slice_settings,
    voxel_ml,
)

SHAPE = (32, 24, 5)  # X, Y, Z
AFFINE = np.array([[0.8, 0.0, 0.0, -12.0], [0.0, 0.7, 0.0, 8.0], [0.0, 0.0, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]])
WINDOW = (-200.0, 300.0)
TRAIN = [
    "--model",
    "unet_tiny",
    "--epochs",
    1,
    "--set",
    "data.patch_size=[32,24]",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.progress=false",
    "--set",
    "train.snapshots=false",
]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def ct_volume(seed: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """``(image (X, Y, Z) float32 even whole-number HU, labels (X, Y, Z) uint8)``: a bright box = class 1."""
    rng = np.random.default_rng(seed)
    image = 2 * rng.integers(-200, 0, size=shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[8:20, 6:16, 1:4] = 1
    image[labels == 1] += 500
    return image, labels


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_ct_slice(
    path: Path,
    stored: np.ndarray,
    position,
    orientation,
    spacing,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    instance: int = 1,
) -> Path:
    """A minimal single-frame CT DICOM file: ``stored`` ``(rows, columns)`` uint16 raw values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.InstanceNumber = "CT", instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series_of(folder: Path, image: np.ndarray, affine: np.ndarray) -> Path:
    """Write an axis-aligned RAS volume ``(X, Y, Z)`` as a DICOM series whose rows are X and columns Y,
    slices in scrambled file order, values stored as ``(HU + 1024) / 2`` with slope 2."""
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = ras_to_lps @ affine
    column_direction = lps[:3, 0] / np.linalg.norm(lps[:3, 0])  # next row (X)
    row_direction = lps[:3, 1] / np.linalg.norm(lps[:3, 1])  # next column (Y)
    orientation = [*row_direction, *column_direction]
    spacing = np.linalg.norm(lps[:3, :2], axis=0)  # (row spacing, column spacing)
    for k in np.random.default_rng(1).permutation(image.shape[2]):
        position = (lps @ [0, 0, k, 1])[:3]
        stored = (image[:, :, k] + 1024) / 2
        write_ct_slice(folder / f"IM{k * 37 % 11:04d}.dcm", stored, position, orientation, spacing, slope=2.0)
    return folder


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(source, dataset, run)``: two CT volumes imported with context 1 and a window, a 1-epoch run."""
    root = tmp_path_factory.mktemp("volume")
    source, dataset, run = root / "msd", root / "data", root / "run"
    training = []
    for i, name in enumerate(("ct_001", "ct_002")):
        image, labels = ct_volume(i)
        save_nifti(source / "imagesTr" / f"{name}.nii.gz", image)
        save_nifti(source / "labelsTr" / f"{name}.nii.gz", labels)
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    meta = {"name": "ct", "labels": {"0": "background", "1": "organ"}, "modality": {"0": "CT"}}
    meta |= {"numTraining": 2, "training": training}
    (source / "dataset.json").write_text(json.dumps(meta))
    window = f"--window={WINDOW[0]:g},{WINDOW[1]:g}"
    assert run_cli("data", "import", "msd", source, dataset, "--context", 1, window, "--keep-empty", 1) == 0
    assert run_cli("train", dataset, *TRAIN, "--out", run) == 0
    return source, dataset, run


@pytest.fixture(scope="module")
def predictor(volume_run) -> Predictor:
    return Predictor.from_run(volume_run[2], device="cpu")


def test_run_records_the_importers_slicing(volume_run, predictor):
    settings = slice_settings(predictor.config)
    assert settings == SliceSettings(axis="z", context=1, window=WINDOW, orientation=("R", "A", "S"))
    assert predictor.config.data.in_channels == 3


def test_predict_volume_matches_predicting_the_importers_slices(volume_run, predictor, tmp_path: Path):
    source, dataset, run = volume_run
    out = tmp_path / "pred"
    assert (
        run_cli("predict", run, source / "imagesTr" / "ct_002.nii.gz", "--out", out, "--device", "cpu") == 0
    )
    mask_path = out / "masks" / "ct_002_seg.nii.gz"
    stored = nib.load(str(mask_path))
    mask = np.asarray(stored.dataobj)
    assert mask.shape == SHAPE and mask.dtype == np.uint8
    np.testing.assert_allclose(stored.affine, AFFINE, atol=1e-6)
    # the same slices predicted from the importer's files (3 channels: z-1, z, z+1, windowed)
    for z in range(SHAPE[2]):
        channels = [read_image(dataset / "imagesTr" / f"ct_002_z{z:03d}_{c:04d}.tif") for c in range(3)]
        expected = predictor.predict(np.stack(channels, axis=-1)).labels
        np.testing.assert_array_equal(mask[:, :, z], expected, err_msg=f"slice z={z}")
    # volumes.csv: per-class voxels add up and millilitres use the affine's voxel size
    with open(out / "volumes.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["shape"] == "32x24x5" and row["mask"] == "masks/ct_002_seg.nii.gz"
    ml = 0.8 * 0.7 * 2.5 / 1000
    assert float(row["voxel_ml"]) == pytest.approx(ml, rel=1e-5)
    organ = int((mask == 1).sum())
    assert int(row["voxels_organ"]) == organ and int(row["voxels_background"]) == mask.size - organ
    assert float(row["ml_organ"]) == pytest.approx(organ * ml, rel=1e-5)
    with open(out / "summary.csv") as f:
        (summary,) = list(csv.DictReader(f))
    assert float(summary["fraction_organ"]) == pytest.approx(organ / mask.size, rel=1e-5)


def test_a_volume_stored_in_another_orientation_gets_the_same_segmentation(predictor, tmp_path: Path):
    image, _ = ct_volume(5)
    plain = predict_volume(predictor, save_nifti(tmp_path / "plain.nii.gz", image), tmp_path / "a")
    # the same anatomy stored as (Z, X reversed, Y): new voxel (a, b, c) is old voxel (X-1-b, c, a), so
    # slicing the stored third axis without turning it back would cut Y-slices, not the trained Z-slices
    turned = np.ascontiguousarray(np.transpose(image[::-1], (2, 0, 1)))
    new_to_old = np.array([[0, -1, 0, SHAPE[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    turned_affine = AFFINE @ new_to_old
    result = predict_volume(
        predictor, save_nifti(tmp_path / "turned.nii.gz", turned, turned_affine), tmp_path
    )
    assert result.labels.shape == turned.shape == (SHAPE[2], SHAPE[0], SHAPE[1])
    np.testing.assert_allclose(nib.load(str(result.mask_path)).affine, turned_affine, atol=1e-6)
    np.testing.assert_array_equal(result.labels, np.transpose(plain.labels[::-1], (2, 0, 1)))
    assert plain.labels.any()


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_dicom_series_reads_in_slice_order_with_rescale_and_the_affine_nibabel_gives(tmp_path: Path):
    from nibabel.nicom.dicomwrappers import wrapper_from_file

    rng = np.random.default_rng(0)
    stored = rng.integers(0, 3000, size=(3, 4, 6))  # (slices, rows, columns)
    # an oblique plane: rows and columns tilted about the z axis, slices 2 mm apart along the normal
    angle = np.deg2rad(30)
    row_direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    column_direction = np.array([-np.sin(angle), np.cos(angle), 0.0])
    orientation = [*row_direction, *column_direction]
    normal = np.cross(column_direction, row_direction)  # nibabel's slice normal
    origin = np.array([-5.0, 12.0, 30.0])
    for k, name in zip(range(3), ("b.dcm", "c.dcm", "a.dcm"), strict=True):
        position = origin + 2.0 * k * normal
        write_ct_slice(
            tmp_path / "s" / name, stored[k], position, orientation, (0.6, 0.9), slope=0.5, instance=9 - k
        )
    assert is_dicom_series(tmp_path / "s")
    volume = read_dicom_series(tmp_path / "s")
    assert volume.array.shape == (4, 6, 3) and volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, np.moveaxis(stored, 0, -1) * 0.5 - 1024)
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrapper_from_file(str(tmp_path / "s" / "b.dcm")).affine
    expected[:3, 2] = np.diag([-1.0, -1.0, 1.0]) @ (2.0 * normal)  # the wrapper uses SliceThickness
    np.testing.assert_allclose(volume.affine, expected, atol=1e-6)
    # every voxel lands where DICOM puts it: IPP + column * col spacing * row dir + row * row spacing * ...
    r, c, k = 3, 5, 2
    lps = origin + 2.0 * k * normal + c * 0.9 * row_direction + r * 0.6 * column_direction
    np.testing.assert_allclose(volume.affine @ [r, c, k, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)
    assert volume.spacing == pytest.approx((0.6, 0.9, 2.0))
    # a single file of the series: the same rescaled plane
    np.testing.assert_allclose(read_dicom(tmp_path / "s" / "c.dcm"), stored[1] * 0.5 - 1024)


def test_dicom_series_refuses_duplicate_and_missing_slices(tmp_path: Path):
    plane = np.zeros((2, 2))
    axial = [1, 0, 0, 0, 1, 0]
    for name, z in (("a.dcm", 0.0), ("b.dcm", 0.0)):
        write_ct_slice(tmp_path / "dup" / name, plane, (0, 0, z), axial, (1, 1))
    with pytest.raises(DataError, match="share a slice position"):
        read_dicom_series(tmp_path / "dup")
    for name, z in (("a.dcm", 0.0), ("b.dcm", 1.0), ("c.dcm", 3.0)):
        write_ct_slice(tmp_path / "gap" / name, plane, (0, 0, z), axial, (1, 1))
    with pytest.raises(DataError, match="unevenly spaced"):
        read_dicom_series(tmp_path / "gap")


def test_predict_dicom_series_equals_the_same_volume_as_nifti(volume_run, tmp_path: Path):
    _, _, run = volume_run
    image, _ = ct_volume(7)
    save_nifti(tmp_path / "in" / "case.nii.gz", image)
    write_series_of(tmp_path / "in" / "series", image, AFFINE)
    out = tmp_path / "out"
    args = ("predict", run, tmp_path / "in" / "case.nii.gz", tmp_path / "in" / "series", "--out", out)
    assert run_cli(*args, "--device", "cpu") == 0
    from_nifti = read_nifti(out / "masks" / "case_seg.nii.gz", dtype=None)
    from_dicom = read_nifti(out / "masks" / "series_seg.nii.gz", dtype=None)
    np.testing.assert_allclose(from_dicom.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    assert from_nifti.array.any()  # something to compare: the run finds the box at least in part
    with open(out / "volumes.csv") as f:
        assert [Path(r["file"]).name for r in csv.DictReader(f)] == ["case.nii.gz", "series"]


def test_single_dicom_file_is_rescaled_windowed_and_given_context(volume_run, predictor, tmp_path: Path):
    _, _, run = volume_run
    image, _ = ct_volume(3)
    stored = (image[:, :, 2] + 1024) / 2  # slope 2, intercept -1024
    single = write_ct_slice(
        tmp_path / "single" / "slice.dcm", stored, (0, 0, 0), [0, 1, 0, 1, 0, 0], (1, 1), slope=2
    )
    np.testing.assert_array_equal(read_dicom(single), image[:, :, 2])
    assert run_cli("predict", run, single, "--out", tmp_path / "out", "--device", "cpu") == 0
    mask = read_label(tmp_path / "out" / "masks" / "slice.png")
    windowed = (np.clip(image[:, :, 2], *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
    expected = predictor.predict(np.stack([windowed] * 3, axis=-1).astype(np.float32)).labels
    np.testing.assert_array_equal(mask, expected)


def test_the_web_app_gives_a_dicom_slice_the_training_window_and_context(volume_run, tmp_path: Path):
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from medseg.web import create_app

    _, _, run = volume_run
    image, _ = ct_volume(3)
    single = write_ct_slice(
        tmp_path / "single" / "slice.dcm",
        (image[:, :, 2] + 1024) / 2,
        (0, 0, 0),
        [0, 1, 0, 1, 0, 0],
        (1, 1),
        slope=2,
    )
    assert run_cli("predict", run, single, "--out", tmp_path / "out", "--device", "cpu") == 0
    with TestClient(create_app([run], device="cpu")) as client:
        response = client.post(
            "/api/predict", files={"file": ("slice.dcm", single.read_bytes(), "application/dicom")}
        )
    assert response.status_code == 200, response.text
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["mask_png_base64"]))))
    np.testing.assert_array_equal(mask, read_label(tmp_path / "out" / "masks" / "slice.png"))


def test_slice_image_repeats_edge_slices_per_channel():
    stack = np.arange(4 * 1 * 1 * 2, dtype=np.float32).reshape(4, 1, 1, 2)  # (N, H, W, C)
    first = slice_image(stack, 0, 1)[0, 0]
    # channel 0 at slices 0, 0, 1 then channel 1 at slices 0, 0, 1
    np.testing.assert_array_equal(first, [0, 0, 2, 1, 1, 3])
    assert slice_image(stack[..., :1], 2, 0).shape == (1, 1)


def test_voxel_ml_uses_the_affine_determinant():
    turned = np.array([[0.0, -2.0, 0.0, 5.0], [1.5, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0], [0, 0, 0, 1]])
    assert voxel_ml(turned) == pytest.approx(0.012)


def test_a_2d_run_given_a_volume_fails_with_one_line(trained_run, tmp_path: Path, capsys):
    image, _ = ct_volume(0)
    volume = save_nifti(tmp_path / "v.nii.gz", image)
    assert run_cli("predict", trained_run, volume, "--out", tmp_path / "out", "--device", "cpu") == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "records no volume slicing" in error and "dataset.json" in error


def test_a_volume_with_the_wrong_channel_count_fails_with_one_line(volume_run, tmp_path: Path, capsys):
    _, _, run = volume_run
    image, _ = ct_volume(0)
    two = save_nifti(tmp_path / "two.nii.gz", np.stack([image, image], axis=-1))
    assert run_cli("predict", run, two, "--out", tmp_path / "out", "--device", "cpu") == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert "volume has 2 channel(s), giving 6 input channel(s)" in error and "model expects 3" in error


def test_the_run_folder_alone_knows_the_slicing(volume_run, tmp_path: Path):
    run = volume_run[2]
    config = Predictor.from_run(run, device="cpu").config
    assert config.data.slicing["axis"] == "z" and "axis: z" in (run / "config.yaml").read_text()
    config.data.path = str(tmp_path / "moved")  # the training dataset is gone: the run still knows
    assert slice_settings(config) == SliceSettings(
        axis="z", context=1, window=WINDOW, orientation=("R", "A", "S")
    )
    config.data.slicing = {}  # a run trained before data.slicing existed falls back to dataset.json
    with pytest.raises(DataError, match="training dataset not found"):
        slice_settings(config)
