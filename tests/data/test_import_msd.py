"""Tests for the MSD / nnU-Net raw NIfTI importer on tiny synthetic volumes written with nibabel."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.dataset import check_dataset, open_dataset
from medseg.data.importers import IMPORTERS, import_dataset
from medseg.data.importers.msd import import_msd, stack_slices
from medseg.data.splits import group_of, make_split
from medseg.errors import ConfigError, DataError
from medseg.io import read_image, read_label, write_image
from medseg.io.nifti import read_nifti_label

SHAPE = (16, 20, 6)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
AFFINE[:3, 3] = (-10.0, 5.0, 30.0)
FOREGROUND_Z = (1, 2, 3)  # slices 0, 4 and 5 are empty


def _volumes(seed: int, shape: tuple[int, ...] = SHAPE, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(image (X, Y, Z, C) float32 in HU-like range, labels (X, Y, Z) uint8 with classes 1 and 2)``."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1000, 1000, size=(*shape, channels)).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    for z in FOREGROUND_Z:
        labels[3 + z : 9 + z, 4:12, z] = 1
    labels[5:7, 6:8, 2] = 2
    return image, labels


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def write_msd(root: Path, names: tuple[str, ...] = ("la_003", "la_007"), channels: int = 1) -> Path:
    """An MSD task folder: 3D (or 4D multi-modal) images, MSD-style dataset.json."""
    modality = {"0": "CT"} if channels == 1 else {str(c): f"MR{c}" for c in range(channels)}
    training = []
    for i, name in enumerate(names):
        image, labels = _volumes(i, channels=channels)
        _save(root / "imagesTr" / f"{name}.nii.gz", image[..., 0] if channels == 1 else image)
        _save(root / "labelsTr" / f"{name}.nii.gz", labels)
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    meta = {
        "name": "Task02_Heart",
        "labels": {"0": "background", "1": "left_atrium", "2": "core"},
        "modality": modality,
        "numTraining": len(names),
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_nnunet(root: Path, names: tuple[str, ...] = ("case_a", "case_b"), channels: int = 2) -> Path:
    """An nnU-Net v2 raw folder: one file per channel CASE_000c.nii.gz, v2 dataset.json."""
    for i, name in enumerate(names):
        image, labels = _volumes(i, channels=channels)
        for c in range(channels):
            _save(root / "imagesTr" / f"{name}_{c:04d}.nii.gz", image[..., c])
        _save(root / "labelsTr" / f"{name}.nii.gz", labels)
    meta = {
        "channel_names": {str(c): f"MR{c}" for c in range(channels)},
        "labels": {"background": 0, "left_atrium": 1, "core": 2},
        "numTraining": len(names),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _nothing_written(tmp_path: Path, dst: Path) -> bool:
    return not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_msd_import_slices_volumes_and_round_trips(tmp_path: Path) -> None:
    src = write_msd(tmp_path / "Task02_Heart")
    dst = import_msd(src, tmp_path / "ds", keep_empty=0.0)
    cases = [f"{v}_z{z:03d}" for v in ("la_003", "la_007") for z in FOREGROUND_Z]
    assert sorted(p.name for p in (dst / "labelsTr").iterdir()) == [f"{c}.tif" for c in cases]
    assert sorted(p.name for p in (dst / "imagesTr").iterdir()) == [f"{c}_0000.tif" for c in cases]
    for i, volume in enumerate(("la_003", "la_007")):
        image, labels = _volumes(i)
        for z in FOREGROUND_Z:
            plane = read_image(dst / "imagesTr" / f"{volume}_z{z:03d}_0000.tif")
            assert plane.dtype == np.float32 and plane.shape == (16, 20)  # (X, Y): rows, cols
            np.testing.assert_array_equal(plane, image[:, :, z, 0])  # raw intensities kept
            np.testing.assert_array_equal(
                read_label(dst / "labelsTr" / f"{volume}_z{z:03d}.tif"), labels[..., z]
            )
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["name"] == "Task02_Heart" and meta["numTraining"] == 6 and meta["file_ending"] == ".tif"
    assert meta["labels"] == {"background": 0, "left_atrium": 1, "core": 2}
    assert meta["channel_names"] == {"0": "CT"}
    extra = meta["medseg"]
    assert extra["task"] == "semantic" and extra["axis"] == "z" and extra["context"] == 0
    assert extra["window"] is None and extra["percentile"] is None and extra["source_layout"] == "msd"
    record = extra["volumes"]["la_007"]
    assert record["shape"] == list(SHAPE) and record["slices_kept"] == 3 and record["empty_slices_kept"] == 0
    np.testing.assert_allclose(record["affine"], AFFINE)
    assert record["image"] == ["imagesTr/la_007.nii.gz"] and record["label"] == "labelsTr/la_007.nii.gz"
    assert extra["source"] == f"medseg data import msd {src} {dst} --keep-empty 0"
    dataset = open_dataset(dst)
    assert [c.name for c in dataset.cases] == cases and all(len(c.images) == 1 for c in dataset.cases)
    assert dataset.group_by == extra["group_by"]
    assert {group_of(c, dataset.group_by) for c in cases} == {"la_003", "la_007"}
    assert all(group_of(c, dataset.group_by) == c[:6] for c in cases)
    split = make_split(cases, val_fraction=0.4, group_by=dataset.group_by)
    assert {c[:6] for c in split["train"]}.isdisjoint({c[:6] for c in split["val"]})
    report = check_dataset(dst)
    assert report.ok, report.problems
    assert report.summary["sizes"] == {"20x16": 6}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_nnunet_v2_context_channels_are_neighbouring_slices(tmp_path: Path) -> None:
    src = write_nnunet(tmp_path / "Dataset001_Heart")
    dst = import_dataset("nnunet", src, tmp_path / "ds", axis="z", context=1, keep_empty=1.0)
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["channel_names"] == {
        "0": "MR0_z-1", "1": "MR0", "2": "MR0_z+1", "3": "MR1_z-1", "4": "MR1", "5": "MR1_z+1"
    }  # fmt: skip
    assert meta["numTraining"] == 2 * SHAPE[2] and meta["medseg"]["source_layout"] == "nnunet"
    image, _ = _volumes(1, channels=2)
    for z in (0, 3, 5):  # both edges repeat their own slice
        for c in range(2):
            for k, offset in enumerate((-1, 0, 1)):
                plane = read_image(dst / "imagesTr" / f"case_b_z{z:03d}_{3 * c + k:04d}.tif")
                np.testing.assert_array_equal(plane, image[:, :, min(max(z + offset, 0), 5), c])
    dataset = open_dataset(dst)
    assert all(len(case.images) == 6 for case in dataset.cases)
    report = check_dataset(dst)
    assert report.ok, report.problems
    assert report.summary["channels"] == {6: 12}


def test_msd_4d_image_equals_nnunet_channel_files_and_axis_x(tmp_path: Path) -> None:
    msd = import_msd(write_msd(tmp_path / "msd", ("a", "b"), channels=2), tmp_path / "m", axis="x")
    nnunet = import_msd(write_nnunet(tmp_path / "nn", ("a", "b"), channels=2), tmp_path / "n", axis="x")
    names = sorted(p.name for p in (msd / "imagesTr").iterdir())
    assert names == sorted(p.name for p in (nnunet / "imagesTr").iterdir())
    assert names and all("_x0" in name for name in names)
    for name in names:
        np.testing.assert_array_equal(
            read_image(msd / "imagesTr" / name), read_image(nnunet / "imagesTr" / name)
        )
    image, labels = _volumes(0, channels=2)
    plane = read_image(msd / "imagesTr" / "a_x008_0001.tif")
    assert plane.shape == (20, 6)  # (Y, Z)
    np.testing.assert_array_equal(plane, image[8, :, :, 1])
    np.testing.assert_array_equal(read_label(msd / "labelsTr" / "a_x008.tif"), labels[8])
    meta = json.loads((msd / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MR0", "1": "MR1"} and meta["medseg"]["voxel_axis"] == 0
    assert group_of("a_x008", meta["medseg"]["group_by"]) == "a"


def test_nnunet_v1_split_channels_listed_as_msd(tmp_path: Path) -> None:
    src = write_msd(tmp_path / "Task01", ("p1",), channels=1)
    (src / "imagesTr" / "p1.nii.gz").rename(src / "imagesTr" / "p1_0000.nii.gz")
    dst = import_msd(src, tmp_path / "ds", keep_empty=0)
    np.testing.assert_array_equal(
        read_image(dst / "imagesTr" / "p1_z002_0000.tif"), _volumes(0)[0][:, :, 2, 0]
    )


def test_window_and_percentile_scale_to_unit_range(tmp_path: Path) -> None:
    src = write_msd(tmp_path / "src", ("v",))
    image, _ = _volumes(0)
    windowed = import_msd(src, tmp_path / "w", window="-160,240", keep_empty=0)
    plane = read_image(windowed / "imagesTr" / "v_z002_0000.tif")
    expected = (np.clip(image[:, :, 2, 0], -160, 240) + 160) / 400
    np.testing.assert_allclose(plane, expected, atol=1e-6)
    assert plane.min() == 0.0 and plane.max() == 1.0  # uniform -1000..1000 hits both ends
    extra = json.loads((windowed / "dataset.json").read_text())["medseg"]
    assert extra["window"] == [-160.0, 240.0] and "--window=-160,240" in extra["source"]
    scaled = import_msd(src, tmp_path / "p", percentile=(1, 99), keep_empty=0)
    low, high = np.percentile(image[..., 0], [1, 99])  # over the whole volume, not the slice
    np.testing.assert_allclose(
        read_image(scaled / "imagesTr" / "v_z003_0000.tif"),
        (np.clip(image[:, :, 3, 0], low, high) - low) / (high - low),
        atol=1e-5,
    )


def test_empty_slices_subsampled_deterministically(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shape = (16, 20, 23)  # 3 foreground slices, 20 empty
    training = []
    for name in ("p1", "p2"):
        image, labels = _volumes(0, shape=shape)
        _save(root / "imagesTr" / f"{name}.nii.gz", image[..., 0])
        _save(root / "labelsTr" / f"{name}.nii.gz", labels)
        training.append({"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz"})
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"0": "bg", "1": "a", "2": "b"}, "training": training})
    )

    def slices(name: str, **options: object) -> list[str]:
        dst = import_msd(root, tmp_path / name, **options)
        return sorted(p.name for p in (dst / "labelsTr").iterdir())

    first, again = slices("a", keep_empty=0.25, seed=3), slices("b", keep_empty=0.25, seed=3)
    assert first == again
    for volume in ("p1", "p2"):
        kept = {int(n[len(volume) + 2 : -4]) for n in first if n.startswith(f"{volume}_z")}
        assert set(FOREGROUND_Z) <= kept and len(kept - set(FOREGROUND_Z)) == 5  # 25% of 20 empty
    assert {n[3:] for n in first if n.startswith("p1")} != {n[3:] for n in first if n.startswith("p2")}
    assert slices("c", keep_empty=0.25, seed=4) != first
    assert len(slices("d", keep_empty=1.0)) == 2 * 23 and len(slices("e", keep_empty=0.0)) == 2 * 3
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert meta["medseg"]["volumes"]["p1"]["empty_slices_kept"] == 5 and meta["channel_names"] == {
        "0": "channel_0"
    }


def _break_shape(src: Path) -> str:
    _save(src / "labelsTr" / "la_007.nii.gz", np.zeros((16, 20, 5), np.uint8))
    return r"labelsTr/la_007\.nii\.gz: label is 16x20x5 \(XxYxZ\) but la_007\.nii\.gz is 16x20x6"


def _break_affine(src: Path) -> str:
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.5
    _save(src / "labelsTr" / "la_007.nii.gz", _volumes(1)[1], shifted)
    return r"labelsTr/la_007\.nii\.gz: affine differs from la_007\.nii\.gz's by up to 1\.5"


def _drop_key(key: str):
    def drop(src: Path) -> str:
        meta = json.loads((src / "dataset.json").read_text())
        del meta[key]
        (src / "dataset.json").write_text(json.dumps(meta))
        return rf"dataset\.json: missing key '{key}'"

    return drop


def _undeclared(src: Path) -> str:
    labels = _volumes(1)[1]
    labels[0, 0, 0] = 7
    _save(src / "labelsTr" / "la_007.nii.gz", labels)
    return r"la_007\.nii\.gz: holds label values \[7\]"


def _escaping_path(src: Path) -> str:
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"][1]["label"] = "../elsewhere/la_007.nii.gz"
    (src / "dataset.json").write_text(json.dumps(meta))
    return r"dataset\.json: 'training' label '\.\./elsewhere/la_007\.nii\.gz' must be a path inside"


def _missing_image(src: Path) -> str:
    (src / "imagesTr" / "la_007.nii.gz").unlink()
    return r"imagesTr/la_007\.nii\.gz: file not found"


@pytest.mark.parametrize(
    "breaks",
    [
        _break_shape,
        _break_affine,
        _drop_key("labels"),
        _drop_key("training"),
        _undeclared,
        _missing_image,
        _escaping_path,
    ],
)
def test_msd_errors_name_the_file_and_write_nothing(tmp_path: Path, breaks) -> None:
    src = write_msd(tmp_path / "src")
    message = breaks(src)
    dst = tmp_path / "ds"
    with pytest.raises(DataError, match=message) as info:
        import_msd(src, dst)
    assert "\n" not in str(info.value)
    assert _nothing_written(tmp_path, dst)


def test_nnunet_errors_name_the_file_and_write_nothing(tmp_path: Path) -> None:
    src = write_nnunet(tmp_path / "src")
    meta = json.loads((src / "dataset.json").read_text())
    del meta["channel_names"]
    (src / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"dataset\.json: missing key 'channel_names'"):
        import_msd(src, tmp_path / "ds")
    src = write_nnunet(tmp_path / "src")
    shifted = AFFINE.copy()
    shifted[2, 2] = 3.0
    _save(src / "imagesTr" / "case_b_0001.nii.gz", _volumes(1, channels=2)[0][..., 1], shifted)
    with pytest.raises(DataError, match=r"case_b_0001\.nii\.gz: affine differs from case_b_0000\.nii\.gz's"):
        import_msd(src, tmp_path / "ds")
    (src / "imagesTr" / "case_a_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_a_0001\.nii\.gz: file not found"):
        import_msd(src, tmp_path / "ds")
    meta["channel_names"], meta["labels"]["whole"] = {"0": "MR0", "1": "MR1"}, [1, 2]
    (src / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="regions are unsupported"):
        import_msd(src, tmp_path / "ds")
    assert _nothing_written(tmp_path, tmp_path / "ds")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": "0,10", "percentile": "1,99"}, "exclude each other"),
        ({"window": "240,-160"}, "LOW < HIGH"),
        ({"window": "abc"}, "two numbers"),
        ({"percentile": (5, 101)}, "0 <= LOW < HIGH <= 100"),
        ({"axis": "t"}, "--axis"),
        ({"context": -1}, "--context"),
        ({"keep_empty": 1.5}, "--keep-empty"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        import_msd(tmp_path / "anything", tmp_path / "ds", **options)


def test_registered_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli import main

    assert IMPORTERS["msd"] is IMPORTERS["nnunet"] is import_msd
    src = write_msd(tmp_path / "src")
    dst = tmp_path / "ds"
    argv = ["data", "import", "msd", str(src), str(dst), "--window=-160,240", "--context", "1"]
    assert main([*argv, "--keep-empty", "0", "--axis", "z"]) == 0
    out = capsys.readouterr().out
    assert f"imported 6 cases to {dst}" in out and "left_atrium" in out
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["medseg"]["window"] == [-160.0, 240.0] and len(meta["channel_names"]) == 3
    assert main([*argv, "--keep-empty", "0.5"]) == 2  # not empty, no --overwrite
    assert "folder is not empty" in capsys.readouterr().err
    assert main([*argv, "--keep-empty", "0.5", "--overwrite"]) == 0
    assert json.loads((dst / "dataset.json").read_text())["numTraining"] == 6 + 2 * 2  # 2 of 3 empty rounded


def test_stack_slices_restores_volumes_with_their_affine(tmp_path: Path) -> None:
    src = write_msd(tmp_path / "src")
    dst = import_msd(src, tmp_path / "ds", axis="y", keep_empty=0.0)
    masks = tmp_path / "pred"
    for path in (dst / "labelsTr").iterdir():  # stand-ins for predictions, one named like a channel file
        name = path.name if "la_003" in path.name else path.name.replace(".tif", "_0000.png")
        write_image(masks / name, read_label(path).astype(np.uint8))
    written = stack_slices(dst, masks, tmp_path / "nifti")
    assert [p.name for p in written] == ["la_003.nii.gz", "la_007.nii.gz"]
    for i, path in enumerate(written):
        volume = read_nifti_label(path)
        np.testing.assert_array_equal(volume.array, _volumes(i)[1])  # left-out slices were empty
        np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-5)
    write_image(masks / "la_003_y002.png", np.zeros((16, 5), np.uint8))
    with pytest.raises(DataError, match=r"la_003_y002\.png: mask is \(16, 5\) but la_003's y-slices are"):
        stack_slices(dst, masks, tmp_path / "nifti")
    (masks / "la_003_y002.png").unlink()
    write_image(masks / "other_y001.png", np.zeros((16, 6), np.uint8))
    with pytest.raises(DataError, match=r"other_y001\.png: not named"):
        stack_slices(dst, masks, tmp_path / "nifti")
