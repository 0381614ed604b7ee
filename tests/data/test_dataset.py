import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.data.dataset import check_dataset, load_image, load_label, open_dataset
from medseg.errors import DataError
from medseg.io import write_image


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "data"))


def test_open_native_layout(blood_dataset: Path):
    data = open_dataset(blood_dataset)
    assert data.layout == "nnunet"
    assert len(data.cases) == 10
    assert data.class_names == ["background", "red_cell", "wbc_cytoplasm", "wbc_nucleus"]
    case = data.cases[0]
    image = load_image(case)
    assert image.shape == (64, 64, 3)
    assert load_label(case, image.shape).shape == (64, 64)


def test_one_file_per_channel_is_stacked(tmp_path: Path):
    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    for c in range(2):
        write_image(root / "imagesTr" / f"case_1_000{c}.png", np.full((8, 8), 10 * (c + 1), np.uint8))
    write_image(root / "labelsTr" / "case_1.png", np.zeros((8, 8), np.uint8))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "A", "1": "B"},
                "labels": {"background": 0, "x": 1},
                "file_ending": ".png",
            }
        )
    )
    data = open_dataset(root)
    image = load_image(data.cases[0])
    assert image.shape == (8, 8, 2)
    assert image[0, 0].tolist() == [10, 20]
    assert check_dataset(root).ok


def test_check_lists_every_problem_at_once(blood_dataset: Path, tmp_path: Path):
    root = _copy(blood_dataset, tmp_path)
    (root / "labelsTr" / "blood_000.png").unlink()  # missing partner
    write_image(root / "labelsTr" / "blood_001.png", np.zeros((60, 64), np.uint8))  # size mismatch
    write_image(root / "labelsTr" / "blood_002.png", np.full((64, 64), 9, np.uint8))  # unknown label
    (root / "imagesTr" / "blood_003_0000.png").write_bytes(b"garbage")  # unreadable
    write_image(
        root / "imagesTr" / "blood_004_0000.png", np.zeros((64, 64), np.uint8)
    )  # 1 channel, 3 declared
    write_image(root / "labelsTr" / "orphan.png", np.zeros((64, 64), np.uint8))  # label without image
    report = check_dataset(root)
    text = "\n".join(report.problems)
    assert not report.ok
    assert "blood_000_0000.png: no label file" in text
    assert "blood_001.png: label is 64x60 but blood_001_0000.png is 64x64" in text
    assert "blood_002.png: label values [9] are not declared classes" in text
    assert "blood_003_0000.png: cannot read image" in text
    assert "blood_004_0000.png: image has 1 channel(s) but dataset.json declares 3" in text
    assert "orphan.png: label has no matching image" in text
    assert len(report.problems) == 6
    assert report.summary["cases"] == 10


def test_check_summary_fractions(blood_dataset: Path):
    report = check_dataset(blood_dataset)
    assert report.ok, report.problems
    fractions = report.summary["class_fractions"]
    assert set(fractions) == {"background", "red_cell", "wbc_cytoplasm", "wbc_nucleus"}
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert report.summary["sizes"] == {"64x64": 10}


def test_empty_and_missing(tmp_path: Path):
    assert "dataset folder not found" in check_dataset(tmp_path / "nope").problems[0]
    (tmp_path / "e" / "imagesTr").mkdir(parents=True)
    (tmp_path / "e" / "dataset.json").write_text('{"labels": {"background": 0}}')
    assert any("dataset is empty" in p for p in check_dataset(tmp_path / "e").problems)
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a dataset"):
        open_dataset(tmp_path / "x")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "dataset.json").write_text("{oops")
    with pytest.raises(DataError, match="dataset.json: cannot read"):
        open_dataset(tmp_path / "j")


def test_images_masks_folder_pair(tmp_path: Path):
    root = tmp_path / "pair"
    for stem in ("a", "b"):
        write_image(root / "images" / f"{stem}.jpg", np.full((16, 16, 3), 120, np.uint8))
        write_image(root / "masks" / f"{stem}.png", np.eye(16, dtype=np.uint8) * 2)
    data = open_dataset(root, classes=["background", "x", "y"])
    assert data.layout == "folders"
    assert [c.name for c in data.cases] == ["a", "b"]
    assert data.labels == {"background": 0, "x": 1, "y": 2}
    assert check_dataset(root, classes=["background", "x", "y"]).ok
    problems = check_dataset(root).problems  # default classes background, foreground: 2 is unknown
    assert len(problems) == 2 and "label values [2]" in problems[0]
