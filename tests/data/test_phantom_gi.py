"""Tests for the abdominal MR phantom in the Kaggle UW-Madison GI Tract layout."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.data.dataset import open_dataset
from medseg.data.importers.uwmadison import UWMADISON_CLASSES, import_uwmadison
from medseg.data.phantoms import GiVolume, next_scan_day, random_abdomen, render_abdomen, write_gi_dataset
from medseg.errors import DataError, MedsegError
from medseg.io import read_label
from medseg.io.rle import rle_decode

SIZE = (48, 56)  # (H, W), non-square so a swapped width/height shows
SCAN = re.compile(r"^slice_(\d{4})_(\d+)_(\d+)_1\.50_1\.50\.png$")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom folder (read-only: copy before changing)."""
    return write_gi_dataset(tmp_path_factory.mktemp("gi") / "kaggle", cases=2, days=2, slices=12, size=SIZE)


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "train.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _scans(root: Path) -> list[Path]:
    return sorted((root / "train").glob("case*/case*_day*/scans/slice_*.png"))


def test_tree_and_csv_have_the_kaggle_names_and_format(phantom: Path) -> None:
    with (phantom / "train.csv").open(newline="") as handle:
        assert handle.readline().strip() == "id,class,segmentation"
    rows = _rows(phantom)
    scans = _scans(phantom)
    assert len(scans) == 2 * 2 * 12 and len(rows) == 3 * len(scans)
    ids = []
    for path in scans:
        number, width, height = SCAN.match(path.name).groups()
        assert (int(height), int(width)) == SIZE  # the name states WIDTH_HEIGHT
        day = path.parent.parent.name
        assert re.fullmatch(r"case\d+_day\d+", day) and path.parent.parent.parent.name == day.split("_")[0]
        ids.append(f"{day}_slice_{number}")
    numbers = sorted(int(SCAN.match(p.name).group(1)) for p in scans if p.parent == scans[0].parent)
    assert numbers == list(range(1, 13))  # slices from 0001
    # three rows per id, in the order large_bowel, small_bowel, stomach
    assert [r["class"] for r in rows] == list(UWMADISON_CLASSES) * len(scans)
    assert sorted(rows[i]["id"] for i in range(0, len(rows), 3)) == sorted(ids)
    assert all(rows[i]["id"] == rows[i + 1]["id"] == rows[i + 2]["id"] for i in range(0, len(rows), 3))
    empty = [r for r in rows if r["segmentation"] == ""]
    assert 0 < len(empty) < len(rows)
    assert all(re.fullmatch(r"(\d+ \d+)( \d+ \d+)*", r["segmentation"]) for r in rows if r["segmentation"])
    meta = json.loads((phantom / "phantom.json").read_text())
    assert meta["synthetic"] is True and meta["options"]["seed"] == 0
    assert meta["counts"]["slices"] == len(scans)
    assert sorted(meta["scan_days"]) == sorted({p.parent.parent.name for p in scans})


def test_scans_are_16_bit_grey_with_a_per_case_range(phantom: Path) -> None:
    maxima = {}
    for path in _scans(phantom)[::6]:
        with Image.open(path) as img:
            assert img.mode == "I;16" and img.size == (SIZE[1], SIZE[0])
            pixels = np.asarray(img)
        assert pixels.dtype == np.uint16 and pixels.max() > 255 and pixels.min() < 100  # dark air
        maxima.setdefault(path.parent.parent.parent.name, []).append(int(pixels.max()))
    assert len(maxima) == 2


def test_csv_rles_decode_to_the_phantoms_own_masks(tmp_path: Path) -> None:
    out = write_gi_dataset(tmp_path / "k", cases=1, days=1, slices=10, size=SIZE, seed=3)
    rng = np.random.default_rng([3, 1])
    patient = random_abdomen(rng)
    rng.choice(40, size=1, replace=False)  # the day number, drawn after the patient
    day_rng = np.random.default_rng([3, 1, 0])
    volume = render_abdomen(next_scan_day(patient, day_rng), 10, SIZE, day_rng)
    rows = _rows(out)
    assert len(rows) == 30
    for index, row in enumerate(rows):
        k, organ = divmod(index, 3)
        assert row["id"].endswith(f"_slice_{k + 1:04d}")
        decoded = rle_decode(row["segmentation"], SIZE)
        np.testing.assert_array_equal(decoded, volume.masks[k, organ])
    scan = _scans(out)[4]
    np.testing.assert_array_equal(np.asarray(Image.open(scan)), volume.image[4])
    assert volume.masks.any()


def test_large_and_small_bowel_overlap_in_a_band_in_some_slices() -> None:
    overlapping = organ_slices = 0
    for case in range(4):
        volume = render_abdomen(random_abdomen([0, case]), 16, (64, 76), [0, case, 0])
        large, small = volume.masks[:, 0], volume.masks[:, 1]
        both = large & small
        organ_slices += int(volume.masks.any(axis=(1, 2, 3)).sum())
        overlapping += int(both.any(axis=(1, 2)).sum())
        for k in np.flatnonzero(both.any(axis=(1, 2))):
            # a band of a few pixels, not one organ swallowing the other
            assert both[k].sum() < 0.5 * min(large[k].sum(), small[k].sum())
    assert 0.1 <= overlapping / organ_slices <= 0.5


def test_organs_come_and_go_along_the_slices_and_look_different() -> None:
    volume = render_abdomen(random_abdomen(7), 24, (64, 76), 1)
    present = volume.masks.any(axis=(2, 3))  # (S, 3)
    assert not present[0].any() and not present[-1].any()  # empty slices at both ends
    assert all(present[:, organ].any() for organ in range(3))
    # the stomach sits in the upper slices, the small bowel reaches lower
    assert np.flatnonzero(present[:, 2]).mean() < np.flatnonzero(present[:, 1]).mean()
    image = volume.image.astype(float)
    alone = [volume.masks[:, organ] & (volume.masks.sum(axis=1) == 1) for organ in range(3)]
    means = [image[m].mean() for m in alone]
    assert min(abs(a - b) for i, a in enumerate(means) for b in means[i + 1 :]) > 0.05 * image.max()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = write_gi_dataset(tmp_path / "a", cases=1, days=1, slices=4, size=SIZE, seed=5)
    second = write_gi_dataset(tmp_path / "b", cases=1, days=1, slices=4, size=SIZE, seed=5)
    other = write_gi_dataset(tmp_path / "c", cases=1, days=1, slices=4, size=SIZE, seed=6)
    assert (first / "train.csv").read_bytes() == (second / "train.csv").read_bytes()
    for a, b in zip(_scans(first), _scans(second), strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert [p.read_bytes() for p in _scans(first)] != [p.read_bytes() for p in _scans(other)]


def test_render_returns_shapes_and_dtypes() -> None:
    volume = render_abdomen(random_abdomen(1), 3, (40, 33), 0)
    assert isinstance(volume, GiVolume)
    assert volume.image.shape == (3, 40, 33) and volume.image.dtype == np.uint16
    assert volume.masks.shape == (3, 3, 40, 33) and volume.masks.dtype == np.bool_


def test_import_uwmadison_reads_the_phantom_with_three_regions(phantom: Path, tmp_path: Path) -> None:
    dst = import_uwmadison(phantom, tmp_path / "ds", context=1, keep_empty=0.0)
    meta = json.loads((dst / "dataset.json").read_text())
    counts = json.loads((phantom / "phantom.json").read_text())["counts"]
    assert meta["numTraining"] == counts["slices_with_organ"]
    values = set()
    for path in sorted((dst / "labelsTr").iterdir()):
        values |= set(np.unique(read_label(path)).tolist())
    assert {1, 2, 3} <= values and values <= set(range(8))  # 3 = large + small bowel overlap
    try:
        dataset = open_dataset(dst)
    except DataError as exc:
        if "regions unsupported" in str(exc):  # PENDING: open_dataset learns region labels in parallel
            pytest.xfail("open_dataset does not read region labels yet")
        raise
    assert set(dataset.regions) == set(UWMADISON_CLASSES)
    assert len(dataset.cases) == counts["slices_with_organ"]
    assert all(len(case.images) == 3 for case in dataset.cases)


def test_rewriting_a_phantom_replaces_it_and_drops_stale_scans(tmp_path: Path) -> None:
    out = write_gi_dataset(tmp_path / "k", cases=2, days=1, slices=5, size=SIZE)
    write_gi_dataset(out, cases=1, days=1, slices=3, size=SIZE)
    assert len(_scans(out)) == 3 and len(_rows(out)) == 9
    assert [p.name for p in (out / "train").iterdir()] == ["case1"]


def test_bad_arguments_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="at least|32"):
        write_gi_dataset(tmp_path / "small", size=(16, 64))
    with pytest.raises(MedsegError, match="cases"):
        write_gi_dataset(tmp_path / "none", cases=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MedsegError, match="holds no GI phantom"):
        write_gi_dataset(foreign, cases=1, days=1, slices=2, size=SIZE)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_cli_writes_the_phantom_and_refuses_a_foreign_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kaggle"
    args = ["phantom", "gi", "--out", str(out), "--cases", "1", "--days", "2", "--slices", "3"]
    assert main([*args, "--size", "40,48", "--seed", "2"]) == 0
    assert "next: medseg data import uw-madison-gi" in capsys.readouterr().out
    assert len(_scans(out)) == 6 and all(SCAN.match(p.name).groups()[1:] == ("48", "40") for p in _scans(out))
    assert json.loads((out / "phantom.json").read_text())["options"]["size"] == [40, 48]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dataset.json").write_text("{}")
    assert main(["phantom", "gi", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no GI phantom" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["dataset.json"]
