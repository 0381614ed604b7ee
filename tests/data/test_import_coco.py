"""Tests for the COCO instance importer and its RLE decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.data.dataset import check_dataset, load_image, load_instances, open_dataset
from medseg.data.importers import IMPORTERS, coco_string_to_counts, decode_coco_rle, import_coco
from medseg.errors import ConfigError, DataError


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a bool mask over its column-major pixels, background run first (maybe 0)."""
    runs, current, length = [], False, 0
    for pixel in mask.flatten(order="F"):
        if bool(pixel) == current:
            length += 1
        else:
            runs.append(length)
            current, length = bool(pixel), 1
    runs.append(length)
    return runs


def _rle_string(runs: list[int]) -> str:
    """pycocotools' string form, written out from its description: from the 4th run on store the
    difference to the run two back, then 5-bit little-endian chunks, 0x20 = more follows, sign in 0x10."""
    out = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        while True:
            chunk = value & 0x1F
            value >>= 5
            done = value == -1 if chunk & 0x10 else value == 0
            out.append(chr(48 + (chunk if done else chunk | 0x20)))
            if done:
                break
    return "".join(out)


def test_rle_string_decoding_matches_hand_computed_runs() -> None:
    assert coco_string_to_counts("5221") == [5, 2, 2, 3]  # 4th run stored as 3 - 2
    assert coco_string_to_counts("T3") == [100]  # 100 = 4 + 3 * 32, first chunk flagged "more"
    assert coco_string_to_counts("0:2I") == [0, 10, 2, 3]  # 'I' = 25 = -7 in 5 bits: 3 = 10 - 7
    with pytest.raises(ValueError, match="not part of a COCO RLE"):
        coco_string_to_counts("5~")
    with pytest.raises(ValueError, match="ends in the middle"):
        coco_string_to_counts("T")


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trips_random_masks_in_both_forms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 60, 2)
    mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
    mask[: h // 2, : w // 3] = True  # a long run, so that chunks and negative deltas both appear
    runs = _runs(mask)
    np.testing.assert_array_equal(decode_coco_rle(runs, h, w), mask)
    assert coco_string_to_counts(_rle_string(runs)) == runs
    np.testing.assert_array_equal(decode_coco_rle(coco_string_to_counts(_rle_string(runs)), h, w), mask)
    with pytest.raises(ValueError, match="add up to"):
        decode_coco_rle([*runs, 1], h, w)


def _write_coco(tmp_path: Path, extra_images: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """Three images and their COCO file; returns the JSON path and each case's expected instance ids."""
    h, w = 16, 20
    folder = tmp_path / "coco"
    (folder / "images" / "p1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("p1/a", "p1/b", "p2_c"):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / "images" / f"{name}.png"
        )
    # image a: a large RLE cell (compressed) under a small polygon nucleus: the nucleus stays on top
    cell = np.zeros((h, w), bool)
    cell[2:12, 1:15] = True
    box = np.zeros((h, w), bool)
    box[3:9, 2:8] = True  # polygon x 2..8, y 3..9 covers pixel centres of columns 2-7, rows 3-8
    a = np.zeros((h, w), np.int32)
    a[cell], a[box] = 2, 1
    # image b: uncompressed RLE object, and a 2x2 object fully covered by two smaller ones (dropped)
    blob = np.zeros((h, w), bool)
    blob[10:15, 5:17] = True
    square = np.zeros((h, w), bool)
    square[2:4, 2:4] = True
    top, bottom = np.zeros((h, w), bool), np.zeros((h, w), bool)
    top[2, 2:4], bottom[3, 2:4] = True, True
    b = np.zeros((h, w), np.int32)
    b[blob], b[top], b[bottom] = 1, 2, 3  # ids in annotation order after the hidden square is removed
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 3, "iscrowd": 0, "segmentation": [[2, 3, 8, 3, 8, 9, 2, 9]]},
        {
            "id": 2,
            "image_id": 10,
            "category_id": 7,
            "segmentation": {"size": [h, w], "counts": _rle_string(_runs(cell))},
        },
        {
            "id": 3,
            "image_id": 11,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": {"size": [h, w], "counts": _runs(blob)},
        },
        {
            "id": 4,
            "image_id": 11,
            "category_id": 7,
            "iscrowd": 1,
            "segmentation": {"size": [h, w], "counts": [0, h * w]},
        },
        {
            "id": 5,
            "image_id": 11,
            "category_id": 3,
            "segmentation": {"size": [h, w], "counts": _runs(square)},
        },
        {"id": 6, "image_id": 11, "category_id": 3, "segmentation": {"size": [h, w], "counts": _runs(top)}},
        {"id": 7, "image_id": 11, "category_id": 3, "segmentation": [[2, 3, 4, 3, 4, 4, 2, 4], [1, 1, 2, 2]]},
    ]
    coco = {
        "images": [
            {"id": 10, "file_name": "p1/a.png", "height": h, "width": w},
            {"id": 11, "file_name": "p1/b.png", "height": h, "width": w},
            {"id": 12, "file_name": "p2_c.png", "height": h, "width": w},
        ],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "cell"}, {"id": 3, "name": "nucleus"}],
    }
    src = folder / "instances.json"
    src.write_text(json.dumps(coco))
    return src, {"p1_a": a, "p1_b": b, "p2_c": np.zeros((h, w), np.int32)}


def test_coco_round_trip_polygons_rle_overlaps_and_crowds(tmp_path: Path) -> None:
    src, expected = _write_coco(tmp_path)
    dst = import_coco(src, tmp_path / "ds", group_by=r"^(p\d)_")
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "object": 1}
    assert meta["medseg"]["task"] == "instance"
    assert meta["medseg"]["instance_classes"] == ["nucleus", "cell"]  # category id order (3, 7)
    assert meta["medseg"]["objects_per_image"] == pytest.approx(5 / 3, abs=1e-3)
    assert "1 crowd annotation(s) (iscrowd=1) skipped" in meta["medseg"]["notes"]
    assert "1 object(s) dropped: completely covered by smaller objects" in meta["medseg"]["notes"]
    assert meta["file_ending"] == ".png" and meta["medseg"]["group_by"] == r"^(p\d)_"
    dataset = open_dataset(dst)
    assert [c.name for c in dataset.cases] == ["p1_a", "p1_b", "p2_c"]
    types = {"p1_a": {1: "nucleus", 2: "cell"}, "p1_b": {1: "cell", 2: "nucleus", 3: "nucleus"}, "p2_c": {}}
    for case in dataset.cases:
        ids, found = load_instances(case)
        np.testing.assert_array_equal(ids, expected[case.name])
        assert found == types[case.name]
        original = np.asarray(Image.open(src.parent / "images" / f"{case.name.replace('p1_', 'p1/')}.png"))
        np.testing.assert_array_equal(load_image(case), original)
    report = check_dataset(dst)
    assert report.ok, report.problems
    assert report.summary["objects"] == {"cell": 2, "nucleus": 3}


def _break(key: str, change):
    def apply(coco: dict) -> None:
        change(coco[key])

    return apply


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            _break("annotations", lambda a: a[1]["segmentation"].update(counts="0~")),
            r"annotation 2: bad RLE \(character",
        ),
        (
            _break("annotations", lambda a: a[2]["segmentation"]["counts"].append(5)),
            r"annotation 3: bad RLE \(run lengths add up to 325",
        ),
        (
            _break("annotations", lambda a: a[2]["segmentation"].update(size=[20, 16])),
            r"annotation 3: RLE size \[20, 16\] differs",
        ),
        (
            _break("annotations", lambda a: a[0].update(segmentation=[[2, 3, 8, 3, 8]])),
            r"annotation 1: polygon 0 has an odd number",
        ),
        (
            _break("annotations", lambda a: a[0].update(segmentation=[[2, "x", 8, 3, 8, 9]])),
            r"annotation 1: polygon 0 must be a flat list",
        ),
        (
            _break("annotations", lambda a: a[0].update(image_id=99)),
            r"annotation 1: image_id 99 is not in 'images'",
        ),
        (
            _break("annotations", lambda a: a[0].update(category_id=5)),
            r"annotation 1: category_id 5 is not in 'categories'",
        ),
        (
            _break("annotations", lambda a: a[0].update(segmentation={"size": [16, 20]})),
            r"annotation 1: segmentation must be",
        ),
        (
            _break("images", lambda i: i[2].update(file_name="gone.png")),
            r"image id 12: gone\.png not found in .* \(pass --images",
        ),
        (
            _break("images", lambda i: i[2].update(height=17)),
            r"p2_c\.png: image is 20x16 but .*instances\.json says image id 12 is 20x17",
        ),
        (_break("images", lambda i: i[0].pop("width")), r"image 10: 'width' must be a positive integer"),
        (
            _break("categories", lambda c: c[1].update(name="cell")),
            r"category name 'cell' is used by two ids",
        ),
    ],
)
def test_malformed_coco_names_the_entry_and_writes_nothing(tmp_path: Path, change, message: str) -> None:
    src, _ = _write_coco(tmp_path)
    coco = json.loads(src.read_text())
    change(coco)
    src.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=message) as info:
        import_coco(src, tmp_path / "out")
    assert str(src) in str(info.value) or "p2_c.png" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


def test_unreadable_json_images_option_and_group_by(tmp_path: Path) -> None:
    src, expected = _write_coco(tmp_path)
    moved = tmp_path / "elsewhere.json"
    moved.write_text(src.read_text())
    dst = import_coco(moved, tmp_path / "ds", images=src.parent / "images")  # JSON away from the images
    ids, _ = load_instances(open_dataset(dst).case("p1_a"))
    np.testing.assert_array_equal(ids, expected["p1_a"])
    moved.write_text("{not json")
    with pytest.raises(DataError, match=r"elsewhere\.json: cannot read COCO JSON"):
        import_coco(moved, tmp_path / "ds2")
    with pytest.raises(ConfigError, match="matches none of the case names"):
        import_coco(src, tmp_path / "ds2", group_by="^patient")
    assert not (tmp_path / "ds2").exists()


def test_cli_imports_coco_and_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    assert IMPORTERS["coco"] is import_coco
    src, _ = _write_coco(tmp_path)
    dst = tmp_path / "ds"
    assert main(["data", "import", "coco", str(src), str(dst), "--group-by", r"^(p\d)_"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"imported 3 cases to {dst}: instance labels, 1.7 objects per image; types nucleus, cell"
    )
    assert "2 groups by --group-by '^(p\\d)_'" in out and "medseg.group_by in dataset.json" in out
    assert main(["data", "import", "coco", str(tmp_path / "none.json"), str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medseg: error:") and "none.json: file not found" in err and "\n" not in err
