"""Tests for the white-cell crop phantom: one centred crop per white cell, labels, files, determinism."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medseg.data.classification import open_classification_dataset
from medseg.data.phantoms import WBC_TYPES, BloodSmear, blood_smear
from medseg.data.phantoms.crops import CROP_SIZE, wbc_crops, write_wbc_crops
from medseg.errors import MedsegError
from medseg.io import read_image


@pytest.fixture(scope="module")
def smears() -> list[BloodSmear]:
    """Smears with every type, two white cells each, at a size where cells often touch the border."""
    return [
        blood_smear(96, np.random.default_rng([s, 11]), wbc_types=[t, t]) for s in range(3) for t in WBC_TYPES
    ]


def test_one_centred_crop_per_white_cell(smears: list[BloodSmear]) -> None:
    centre = CROP_SIZE // 2
    crops_seen = centred = 0
    for smear in smears:
        white = {i: kind for i, kind in smear.cell_types.items() if kind != "red_cell"}
        crops = wbc_crops(smear)
        assert [c.instance_id for c in crops] == sorted(white)
        for cell in crops:
            assert cell.cell_type == white[cell.instance_id]
            assert cell.image.shape == (CROP_SIZE, CROP_SIZE, 3) and cell.image.dtype == np.uint8
            assert cell.mask.sum() == np.sum(smear.instances == cell.instance_id)  # the whole cell fits
            crops_seen += 1
            centred += bool(cell.mask[centre, centre])
            row, col = cell.centre
            mean = np.argwhere(smear.instances == cell.instance_id).mean(axis=0)
            assert abs(row - mean[0]) <= 0.5 and abs(col - mean[1]) <= 0.5
    assert crops_seen == 2 * len(smears)
    assert centred >= 0.9 * crops_seen  # a crescent-shaped cell may miss its own centroid


def test_crop_pixels_come_from_the_smear_and_padding_is_background(smears: list[BloodSmear]) -> None:
    padded = 0
    for smear in smears:
        fill = np.round(np.median(smear.image[smear.semantic == 0], axis=0)).astype(np.uint8)
        for cell in wbc_crops(smear):
            top, left = cell.centre[0] - CROP_SIZE // 2, cell.centre[1] - CROP_SIZE // 2
            rows, cols = np.arange(top, top + CROP_SIZE), np.arange(left, left + CROP_SIZE)
            inside = ((rows >= 0) & (rows < 96))[:, None] & ((cols >= 0) & (cols < 96))[None]
            expected = smear.image[np.clip(rows, 0, 95)[:, None], np.clip(cols, 0, 95)[None]]
            assert np.array_equal(cell.image[inside], expected[inside])
            assert np.all(cell.image[~inside] == fill)
            padded += int((~inside).any())
    assert padded > 0  # 64 px crops of 96 px smears reach past the edge


def test_hand_made_smear_at_the_corner() -> None:
    instances = np.zeros((40, 40), np.int32)
    instances[0:6, 0:6] = 2  # a white cell in the corner
    instances[20:30, 20:30] = 1  # a red cell: no crop
    semantic = (instances > 0).astype(np.uint8)
    image = np.zeros((40, 40, 3), np.uint8)
    image[instances == 0] = (200, 180, 170)
    image[instances == 2] = (90, 40, 130)
    smear = BloodSmear(image, semantic, instances, {1: "red_cell", 2: "lymphocyte"})
    (cell,) = wbc_crops(smear, crop=16)
    assert cell.centre == (2, 2) or cell.centre == (3, 3)  # centroid 2.5 rounds to even
    assert cell.mask.sum() == 36
    assert np.all(cell.image[cell.mask] == (90, 40, 130))
    assert np.all(cell.image[~cell.mask] == (200, 180, 170))  # smear background and padding alike
    assert wbc_crops(BloodSmear(image, semantic, instances, {1: "red_cell", 2: "red_cell"})) == []


def test_write_crops(tmp_path: Path) -> None:
    out = write_wbc_crops(tmp_path / "crops", 4, size=96, seed=5)
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"path", "label", "group"}
    files = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.png"))
    assert sorted(r["path"] for r in rows) == files
    for row in rows:
        assert row["path"].startswith(f"{row['label']}/{row['group']}_cell")
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(WBC_TYPES)  # empty types too
    # smear i is blood_smear seeded (seed, i), as write_blood_dataset draws case i
    expected = wbc_crops(blood_smear(96, np.random.default_rng([5, 2])))
    written = [r for r in rows if r["group"] == "smear_002"]
    assert [r["label"] for r in written] == [c.cell_type for c in expected]
    for row, cell in zip(written, expected):
        assert np.array_equal(read_image(out / row["path"]), cell.image)
    # the CSV and the folders open as the same five-class set, with smears as groups
    by_csv = open_classification_dataset(out / "labels.csv", classes=WBC_TYPES)
    by_folder = open_classification_dataset(out, classes=WBC_TYPES)
    assert by_csv.class_names == list(WBC_TYPES)
    assert sorted((i.path, i.label) for i in by_csv.items) == sorted(
        (i.path, i.label) for i in by_folder.items
    )
    assert {i.group for i in by_csv.items} == {f"smear_{i:03d}" for i in range(4)}


def test_write_is_deterministic_and_removes_stale_crops(tmp_path: Path) -> None:
    first = write_wbc_crops(tmp_path / "a", 3, size=80, crop=48, seed=1)
    second = write_wbc_crops(tmp_path / "b", 3, size=80, crop=48, seed=1)
    names = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert read_image(next(first.glob("*/*.png"))).shape == (48, 48, 3)
    write_wbc_crops(first, 1, size=80, crop=48, seed=1)
    assert {p.name.split("_cell")[0] for p in first.glob("*/*.png")} == {"smear_000"}
    assert "smear_001" not in (first / "labels.csv").read_text()
    empty = write_wbc_crops(tmp_path / "none", 0)
    assert (empty / "labels.csv").read_text() == "path,label,group\n"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="n_smears >= 0"):
        write_wbc_crops(tmp_path, -1)
    with pytest.raises(MedsegError, match="at least 16"):
        write_wbc_crops(tmp_path, 1, crop=8)
    with pytest.raises(MedsegError, match="at least 32"):
        write_wbc_crops(tmp_path, 1, size=16)
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "dataset.json").write_text("{}")
    with pytest.raises(MedsegError, match="seg: holds a segmentation dataset"):
        write_wbc_crops(tmp_path / "seg", 1)
