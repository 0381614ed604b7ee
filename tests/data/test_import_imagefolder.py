"""Tests for the class-per-folder (imagefolder) classification importer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.cli import main
from medseg.data.classification import check_classification_dataset, open_classification_dataset
from medseg.data.importers import IMPORTERS, import_imagefolder
from medseg.errors import ConfigError, DataError

FILES = {
    "benign": ["p01_x.png", "p01_y.png", "p02_z.png"],
    "malignant": ["p03_a.jpg", "nested/p03_b.png", "p04_c.png"],
}


def _make(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for label, names in FILES.items():
        for name in names:
            path = src / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    (src / "README.txt").write_text("files directly in the root are not images of a class")
    return src


def _rows(dst: Path) -> list[dict[str, str]]:
    with open(dst / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_class_folders_become_labels_csv_with_groups_from_the_regex(tmp_path: Path) -> None:
    src = _make(tmp_path)
    dst = import_imagefolder(src, tmp_path / "out", group_by=r"^(p\d+)_")
    rows = _rows(dst)
    expected = [
        {"path": f"{label}/{name}", "label": label, "group": name.split("/")[-1][:3]}
        for label, names in FILES.items()
        for name in names
    ]
    assert sorted(rows, key=lambda r: r["path"]) == sorted(expected, key=lambda r: r["path"])
    for row in rows:  # copied byte for byte
        assert (dst / row["path"]).read_bytes() == (src / row["path"]).read_bytes()
    data = open_classification_dataset(dst / "labels.csv")
    assert data.class_names == ["benign", "malignant"]
    assert sorted({item.group for item in data.items}) == ["p01", "p02", "p03", "p04"]
    split = data.split(val_fraction=0.5, seed=1)
    val_groups = {data.items[i].group for i in split["val"]}
    assert not val_groups & {data.items[i].group for i in split["train"]}  # no patient on both sides
    report = check_classification_dataset(dst / "labels.csv")
    assert report.ok, report.problems
    assert report.summary["groups"] == 4


def test_without_group_by_each_image_is_its_own_group(tmp_path: Path) -> None:
    src = _make(tmp_path)
    rows = _rows(import_imagefolder(src, tmp_path / "out"))
    assert [row["group"] for row in rows][:2] == ["benign/p01_x", "benign/p01_y"]
    assert len({row["group"] for row in rows}) == 6


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "message"),
    [
        (lambda s: (s / "empty").mkdir(), {}, DataError, r"src/empty: class folder holds no images"),
        (
            lambda s: None,
            {"group_by": r"^(p0[123])_"},
            ConfigError,
            r"matches no part of 1 file\(s\): .*p04_c\.png",
        ),
        (lambda s: None, {"group_by": "^(p"}, ConfigError, r"--group-by: invalid regex"),
        (
            lambda s: (s / "benign" / "p02_z.png").write_bytes(b"\x89PNG broken"),
            {},
            DataError,
            r"benign/p02_z\.png: cannot read image",
        ),
    ],
)
def test_bad_input_raises_one_clear_error_and_writes_nothing(
    tmp_path: Path, setup, kwargs: dict, error: type, message: str
) -> None:
    src = _make(tmp_path)
    setup(src)
    with pytest.raises(error, match=message):
        import_imagefolder(src, tmp_path / "out", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_destination_inside_the_source_or_a_missing_source_is_refused(tmp_path: Path) -> None:
    src = _make(tmp_path)
    with pytest.raises(DataError, match="lies inside the source"):
        import_imagefolder(src, src / "converted")
    with pytest.raises(DataError, match="classification dataset folder not found"):
        import_imagefolder(tmp_path / "nope", tmp_path / "out")
    assert not (src / "converted").exists() and not (tmp_path / "out").exists()


def test_cli_imports_imagefolder_and_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    assert IMPORTERS["imagefolder"] is import_imagefolder
    src = _make(tmp_path)
    dst = tmp_path / "out"
    assert main(["data", "import", "imagefolder", str(src), str(dst), "--group-by", r"^(p\d+)_"]) == 0
    assert capsys.readouterr().out == (
        f"imported 6 images of 2 classes (benign 3, malignant 3) in 4 groups to {dst}\n"
        f"next: medseg train {dst / 'labels.csv'} --task classify\n"
    )
    assert main(["data", "import", "imagefolder", str(src), str(dst)]) == 2  # dst not empty
    err = capsys.readouterr().err.strip()
    assert err.startswith("medseg: error:") and "folder is not empty" in err and "\n" not in err
