"""Tests for the UW-Madison GI tract importer on a tiny fake Kaggle tree with the real naming and CSV."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data.dataset import open_dataset
from medseg.data.importers import IMPORTERS, import_dataset
from medseg.data.importers.uwmadison import UWMADISON_CLASSES, import_uwmadison
from medseg.data.splits import group_of, make_split
from medseg.errors import ConfigError, DataError
from medseg.io import read_image, read_label

ORGANS = ("large_bowel", "small_bowel", "stomach")
REGIONS = {"large_bowel": [1, 3, 5, 7], "small_bowel": [2, 3, 6, 7], "stomach": [4, 5, 6, 7]}
# scan day -> (width, height, pixel spacing in the file name, slice numbers, slices without any organ)
DAYS = {
    "case7_day0": (40, 32, "1.50", (1, 2, 3, 4), {1, 4}),
    "case7_day3": (40, 32, "1.50", (1, 2, 3), {3}),
    "case12_day1": (36, 30, "1.63", (1, 2, 3, 4), {1}),
}
ORGAN_SLICES = 7  # slices with at least one organ; 4 are empty


def _organs(number: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Rectangles per organ: large and small bowel overlap (value 3), stomach touches small bowel on even
    slices (value 6)."""
    shift = number % 2
    masks = {organ: np.zeros((height, width), bool) for organ in ORGANS}
    masks["large_bowel"][4 + shift : 14, 5 : 20 + shift] = True
    masks["small_bowel"][10:22, 15 + shift : 30] = True
    if number % 2 == 0:
        masks["stomach"][20:28, 28:38] = True
    return masks


def _kaggle_rle(mask: np.ndarray) -> str:
    """Kaggle RLE written pixel by pixel along the rows (independent of medseg.io.rle)."""
    pairs, start = [], None
    for index, on in enumerate([*mask.reshape(-1).tolist(), False]):
        if on and start is None:
            start = index
        elif not on and start is not None:
            pairs += [start + 1, index - start]
            start = None
    return " ".join(map(str, pairs))


def _scan(day: str, number: int, height: int, width: int) -> np.ndarray:
    """Deterministic 16-bit pixels, different for every slice (values above 255 so 8 bits would not do)."""
    seed = sum(map(ord, day)) * 100 + number
    return np.random.default_rng(seed).integers(300, 4000, size=(height, width)).astype(np.uint16)


def expected_label(day: str, number: int) -> np.ndarray:
    width, height, _, _, empty = DAYS[day]
    if number in empty:
        return np.zeros((height, width), np.uint8)
    masks = _organs(number, height, width)
    return sum((masks[organ].astype(np.uint8) << bit) for bit, organ in enumerate(ORGANS)).astype(np.uint8)


def scan_path(src: Path, day: str, number: int) -> Path:
    width, height, spacing, _, _ = DAYS[day]
    case = day.split("_")[0]
    return (
        src / "train" / case / day / "scans" / f"slice_{number:04d}_{width}_{height}_{spacing}_{spacing}.png"
    )


def write_kaggle(root: Path) -> Path:
    """A fake competition folder: train.csv (3 rows per id) and train/caseN/caseN_dayM/scans/*.png, plus a
    test-set day with no CSV rows (and a file name that would not parse) that must be ignored."""
    rows = []
    for day in sorted(DAYS):  # as on Kaggle: ids in sorted order, so case12 comes first
        width, height, _, numbers, empty = DAYS[day]
        for number in numbers:
            path = scan_path(root, day, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_scan(day, number, height, width)).save(path)
            masks = _organs(number, height, width)
            for organ in ORGANS:
                text = "" if number in empty else _kaggle_rle(masks[organ])
                rows.append([f"{day}_slice_{number:04d}", organ, text])
    test_scans = root / "train" / "case99" / "case99_day2" / "scans"
    test_scans.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 40), np.uint16)).save(test_scans / "slice_0001_40_32_1.50_1.50.png")
    (test_scans / "slice_0002.png").write_bytes(b"not looked at")
    with (root / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake competition folder (read-only: copy it before breaking it)."""
    return write_kaggle(tmp_path_factory.mktemp("uw") / "uw-madison-gi-tract-image-segmentation")


def _nothing_written(parent: Path, dst: Path) -> bool:
    return not dst.exists() and not [p for p in parent.iterdir() if p.name.startswith(".")]


def _all_ids() -> list[str]:
    return [f"{day}_slice_{n:04d}" for day, spec in sorted(DAYS.items()) for n in spec[3]]


def test_import_writes_scans_bitmasks_and_region_dataset_json(kaggle: Path, tmp_path: Path) -> None:
    dst = import_uwmadison(kaggle, tmp_path / "ds", keep_empty=1.0)
    ids = _all_ids()
    assert sorted(p.name for p in (dst / "labelsTr").iterdir()) == sorted(f"{i}.png" for i in ids)
    assert sorted(p.name for p in (dst / "imagesTr").iterdir()) == sorted(f"{i}_0000.png" for i in ids)
    values = set()
    for day, (width, height, _, numbers, _) in DAYS.items():
        for number in numbers:
            case = f"{day}_slice_{number:04d}"
            image = read_image(dst / "imagesTr" / f"{case}_0000.png")
            assert image.dtype == np.uint16 and image.shape == (height, width)  # (H, W), 16 bits kept
            np.testing.assert_array_equal(image, _scan(day, number, height, width))
            label = read_label(dst / "labelsTr" / f"{case}.png")
            np.testing.assert_array_equal(label, expected_label(day, number))
            values |= set(np.unique(label).tolist())
    assert values == {0, 1, 2, 3, 4, 6}  # 3 = large + small bowel, 6 = small bowel + stomach: overlap kept
    label = read_label(dst / "labelsTr" / "case7_day0_slice_0002.png")
    assert label[12, 17] == 3 and label[21, 29] == 6 and label[5, 6] == 1 and label[0, 0] == 0
    with Image.open(dst / "labelsTr" / "case7_day0_slice_0002.png") as img:
        assert img.mode == "L"  # uint8 bitmask

    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, **REGIONS}
    assert list(meta["labels"]) == ["background", *UWMADISON_CLASSES]
    assert meta["regions_class_order"] == [1, 2, 3]
    assert meta["channel_names"] == {"0": "MR"}
    assert meta["numTraining"] == 11 and meta["file_ending"] == ".png"
    extra = meta["medseg"]
    assert extra["group_by"] == r"^(case\d+)_" and extra["source_layout"] == "uw-madison-gi"
    assert extra["source"] == f"medseg data import uw-madison-gi {kaggle} {dst} --keep-empty 1"
    assert (extra["context"], extra["keep_empty"], extra["seed"]) == (0, 1.0, 0)
    assert sorted(extra["days"]) == sorted(DAYS)  # case99 (no CSV rows, a Kaggle test day) is ignored
    assert extra["days"]["case12_day1"] == {
        "scans": "train/case12/case12_day1/scans",
        "image_size": [30, 36],
        "pixel_spacing": [1.63, 1.63],
        "slices": 4,
        "slices_kept": 4,
        "empty_slices_kept": 1,
    }
    assert extra["days"]["case7_day0"]["image_size"] == [32, 40]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cases_group_by_patient_across_days(kaggle: Path, tmp_path: Path) -> None:
    dst = import_uwmadison(kaggle, tmp_path / "ds", keep_empty=1.0)
    pattern = json.loads((dst / "dataset.json").read_text())["medseg"]["group_by"]
    ids = _all_ids()
    assert {i: group_of(i, pattern) for i in ids} == {i: i.split("_")[0] for i in ids}
    for seed in range(5):
        split = make_split(ids, val_fraction=0.3, group_by=pattern, seed=seed)
        train, val = {i.split("_")[0] for i in split["train"]}, {i.split("_")[0] for i in split["val"]}
        assert train.isdisjoint(val) and train | val == {"case7", "case12"}


def test_open_dataset_sees_cases_and_regions(kaggle: Path, tmp_path: Path) -> None:
    dst = import_uwmadison(kaggle, tmp_path / "ds", context=1, keep_empty=1.0)
    try:
        dataset = open_dataset(dst)
    except DataError as exc:
        # PENDING: open_dataset learns region (list-valued) labels in the lead's parallel change.
        if "regions unsupported" in str(exc):
            pytest.xfail("open_dataset does not read region labels yet")
        raise
    assert [c.name for c in dataset.cases] == sorted(_all_ids())
    assert all(len(c.images) == 3 and c.label is not None for c in dataset.cases)
    assert dataset.group_by == r"^(case\d+)_"
    assert dataset.regions == REGIONS  # PENDING as above: Dataset.regions


def test_context_channels_are_the_neighbouring_slices(kaggle: Path, tmp_path: Path) -> None:
    dst = import_dataset("uw-madison-gi", kaggle, tmp_path / "ds", context=1, keep_empty=0.0)
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MR_z-1", "1": "MR", "2": "MR_z+1"}
    assert meta["numTraining"] == ORGAN_SLICES and meta["medseg"]["context"] == 1
    width, height = 40, 32
    # case7_day0 keeps slices 2 and 3; their neighbours 1 and 4 are empty and not imported, but are context.
    for number in (2, 3):
        for c, neighbour in enumerate((number - 1, number, number + 1)):
            plane = read_image(dst / "imagesTr" / f"case7_day0_slice_{number:04d}_{c:04d}.png")
            np.testing.assert_array_equal(plane, _scan("case7_day0", neighbour, height, width))
    # case7_day3 keeps slices 1 and 2: slice 1 has no slice before it, so it repeats itself.
    for number, neighbours in ((1, (1, 1, 2)), (2, (1, 2, 3))):
        for c, neighbour in enumerate(neighbours):
            plane = read_image(dst / "imagesTr" / f"case7_day3_slice_{number:04d}_{c:04d}.png")
            np.testing.assert_array_equal(plane, _scan("case7_day3", neighbour, height, width))
    dst = import_uwmadison(kaggle, tmp_path / "ds2", context=2, keep_empty=0.0)
    for c, neighbour in enumerate((2, 3, 4, 4, 4)):  # case12_day1 slice 4 is the last: clamped
        plane = read_image(dst / "imagesTr" / f"case12_day1_slice_0004_{c:04d}.png")
        np.testing.assert_array_equal(plane, _scan("case12_day1", neighbour, 30, 36))


def test_empty_slices_subsampled_deterministically(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "train").mkdir(parents=True)
    rows = [["id", "class", "segmentation"]]
    for day in ("case1_day1", "case2_day1"):  # 2 slices with an organ, 20 without
        for number in range(1, 23):
            path = src / "train" / day.split("_")[0] / day / "scans" / f"slice_{number:04d}_8_6_1.00_1.00.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 8), number, np.uint16)).save(path)
            for organ in ORGANS:
                rle = "3 4" if organ == "stomach" and number in (5, 6) else ""
                rows.append([f"{day}_slice_{number:04d}", organ, rle])
    with (src / "train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)

    def kept(name: str, **options: object) -> list[str]:
        dst = import_uwmadison(src, tmp_path / name, **options)
        return sorted(p.stem for p in (dst / "labelsTr").iterdir())

    first = kept("a", keep_empty=0.25, seed=3)
    assert first == kept("b", keep_empty=0.25, seed=3)
    for day in ("case1_day1", "case2_day1"):
        numbers = {int(n[-4:]) for n in first if n.startswith(day)}
        assert {5, 6} <= numbers and len(numbers - {5, 6}) == 5  # 25% of 20 empty slices
    assert {n[-4:] for n in first if n.startswith("case1")} != {
        n[-4:] for n in first if n.startswith("case2")
    }
    assert kept("c", keep_empty=0.25, seed=4) != first
    assert len(kept("d", keep_empty=0.0)) == 4 and len(kept("e")) == 4 + 2 * 2  # default 0.1 of 20
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert meta["medseg"]["days"]["case1_day1"]["empty_slices_kept"] == 5
    label = read_label(tmp_path / "d" / "labelsTr" / "case1_day1_slice_0005.png")
    assert label.tolist()[0] == [0, 0, 4, 4, 4, 4, 0, 0] and label.sum() == 16


def test_bit_depth_is_kept_for_dark_and_eight_bit_scans(kaggle: Path, tmp_path: Path) -> None:
    src = shutil.copytree(kaggle, tmp_path / "src")
    pixels = np.arange(32 * 40, dtype=np.uint32).reshape(32, 40) % 251
    Image.fromarray(pixels.astype(np.uint8)).save(scan_path(src, "case7_day3", 2))
    Image.fromarray(pixels.astype(np.uint16)).save(scan_path(src, "case7_day3", 1))  # 16 bits, all < 256
    dst = import_uwmadison(src, tmp_path / "ds", keep_empty=0.0)
    eight = read_image(dst / "imagesTr" / "case7_day3_slice_0002_0000.png")
    sixteen = read_image(dst / "imagesTr" / "case7_day3_slice_0001_0000.png")
    assert eight.dtype == np.uint8 and sixteen.dtype == np.uint16
    np.testing.assert_array_equal(eight, pixels)
    np.testing.assert_array_equal(sixteen, pixels)


def _rewrite_csv(src: Path, edit) -> None:
    path = src / "train.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows = edit(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _set_cell(line: int, column: int, value: str):
    def edit(rows: list[list[str]]) -> list[list[str]]:
        rows[line - 1][column] = value
        return rows

    return edit


def _no_csv(src: Path) -> str:
    (src / "train.csv").unlink()
    return r"train\.csv: file not found"


def _no_column(src: Path) -> str:
    _rewrite_csv(src, lambda rows: [[r[0], r[2]] for r in rows])
    return r"train\.csv: missing column\(s\) class; expected header id,class,segmentation"


def _bad_rle(src: Path) -> str:
    _rewrite_csv(src, _set_cell(6, 2, "5 3 x 2"))  # line 6 = case12_day1_slice_0002 small_bowel
    return r"train\.csv: line 6 \(case12_day1_slice_0002 small_bowel, .*\): RLE value 'x' is not a whole"


def _odd_rle(src: Path) -> str:
    _rewrite_csv(src, _set_cell(7, 2, "5 3 9"))
    return r"train\.csv: line 7 \(case12_day1_slice_0002 stomach, .*\): RLE has 3 values"


def _rle_outside_image(src: Path) -> str:
    # case12_day1 is 36x30 = 1080 pixels: a run that fits a 40x32 scan does not fit there.
    _rewrite_csv(src, _set_cell(5, 2, "1070 20"))
    return (
        r"train\.csv: line 5 \(case12_day1_slice_0002 large_bowel, scan slice_0002_36_30_1\.63_1\.63\.png\): "
        r"RLE run 1 \(1070 20\) ends at pixel 1089, past the 1080 pixels of a 30x36 \(HxW\) image"
    )


def _missing_scan(src: Path) -> str:
    scan_path(src, "case7_day3", 2).unlink()
    return r"case7_day3/scans/slice_0002_\*\.png: scan not found for case7_day3_slice_0002 \(train\.csv line"


def _unparsed_name(src: Path) -> str:
    path = scan_path(src, "case7_day0", 3)
    path.rename(path.with_name("slice_0003_40x32.png"))
    return r"scans/slice_0003_40x32\.png: scan name does not parse as slice_NNNN_WIDTH_HEIGHT_PW_PH\.png"


def _unknown_class(src: Path) -> str:
    _rewrite_csv(src, _set_cell(10, 1, "liver"))
    return r"train\.csv: line 10: unknown class 'liver'; expected one of large_bowel, small_bowel, stomach"


def _bad_id(src: Path) -> str:
    _rewrite_csv(src, _set_cell(3, 0, "case12_slice_0001"))
    return r"train\.csv: line 3: id 'case12_slice_0001' is not caseN_dayM_slice_NNNN"


def _duplicate_row(src: Path) -> str:
    _rewrite_csv(src, lambda rows: [*rows, rows[4]])
    return r"train\.csv: line 35: case12_day1_slice_0002 large_bowel repeats line 5"


def _missing_organ_row(src: Path) -> str:
    _rewrite_csv(src, lambda rows: rows[:6] + rows[7:])
    return r"train\.csv: line 5: case12_day1_slice_0002 has no row for stomach"


def _rgb_scan(src: Path) -> str:
    path = scan_path(src, "case7_day0", 2)
    Image.fromarray(np.zeros((32, 40, 3), np.uint8) + np.arange(3, dtype=np.uint8)).save(path)
    return r"slice_0002_40_32_1\.50_1\.50\.png: is uint8 with 3 channels; expected a 16- or 8-bit grey scan"


def _grey_alpha_scan(src: Path) -> str:
    pixels = np.zeros((32, 40, 2), np.uint8)
    pixels[..., 1] = np.arange(40, dtype=np.uint8)  # a real alpha channel, not fully opaque
    Image.fromarray(pixels, mode="LA").save(scan_path(src, "case7_day0", 2))
    return r"slice_0002_40_32_1\.50_1\.50\.png: is uint8 with 2 channels; expected a 16- or 8-bit grey"


def _wrong_size(src: Path) -> str:
    Image.fromarray(np.zeros((40, 32), np.uint16)).save(scan_path(src, "case7_day0", 2))
    return r"slice_0002_40_32_1\.50_1\.50\.png: is 32x40 \(WxH\) but its name says 40x32"


@pytest.mark.parametrize(
    "breaks",
    [
        _no_csv,
        _no_column,
        _bad_rle,
        _odd_rle,
        _rle_outside_image,
        _missing_scan,
        _unparsed_name,
        _unknown_class,
        _bad_id,
        _duplicate_row,
        _missing_organ_row,
        _rgb_scan,
        _grey_alpha_scan,
        _wrong_size,
    ],
)
def test_bad_input_names_file_and_line_and_writes_nothing(kaggle: Path, tmp_path: Path, breaks) -> None:
    src = shutil.copytree(kaggle, tmp_path / "src")
    message = breaks(src)
    dst = tmp_path / "ds"
    with pytest.raises(DataError, match=message) as info:
        import_uwmadison(src, dst, keep_empty=1.0)
    assert "\n" not in str(info.value)
    assert _nothing_written(tmp_path, dst)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"context": -1}, "--context"), ({"context": 1.5}, "--context"), ({"keep_empty": 2.0}, "--keep-empty")],
)
def test_bad_options(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        import_uwmadison(tmp_path / "anything", tmp_path / "ds", **options)


def test_registered_and_cli(kaggle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medseg.cli import main

    assert IMPORTERS["uw-madison-gi"] is import_uwmadison
    dst = tmp_path / "ds"
    argv = ["data", "import", "uw-madison-gi", str(kaggle), str(dst)]
    assert main([*argv, "--context", "1", "--keep-empty", "1"]) == 0
    out = capsys.readouterr().out
    assert f"imported 11 cases to {dst}: classes background, large_bowel, small_bowel, stomach" in out
    assert "11 slices of 3 scan days of 2 patients" in out and "medseg.group_by" in out
    assert len(json.loads((dst / "dataset.json").read_text())["channel_names"]) == 3
    assert main(argv) == 2  # not empty, no --overwrite
    assert "folder is not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((dst / "dataset.json").read_text())["numTraining"] == ORGAN_SLICES  # 0.1 of 1-2 empty
    capsys.readouterr()
    assert main(["data", "import", "uw-madison-gi", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: folder not found" in err
