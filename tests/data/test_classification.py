"""Tests for classification datasets: class-per-folder and CSV layouts, every CSV error, checks, splits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medseg.data.classification import (
    ClassificationDataset,
    check_classification_dataset,
    load_classification_image,
    open_classification_dataset,
)
from medseg.errors import DataError
from medseg.io import write_image


def _png(path: Path, channels: int = 3, value: int = 100) -> Path:
    shape = (8, 10) if channels == 1 else (8, 10, channels)
    return write_image(path, np.full(shape, value, np.uint8))


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """b/ with 2 images, a/ with 3 (one nested, one JPEG), plus files and folders that must be skipped."""
    root = tmp_path / "cells"
    _png(root / "b" / "x1.png")
    _png(root / "b" / "x2.png")
    _png(root / "a" / "y1.png")
    _png(root / "a" / "sub" / "y2.png")
    write_image(root / "a" / "y3.jpg", np.zeros((8, 10, 3), np.uint8))
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    _png(root / "a" / ".hidden.png")
    _png(root / ".cache" / "z.png")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "labels.csv").write_text("path,label\n")  # files beside the class folders are ignored
    return root


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def csv_set(tmp_path: Path) -> Path:
    """A CSV with groups, an image in a subfolder, a blank line; labels out of order."""
    _png(tmp_path / "img" / "p1_a.png")
    _png(tmp_path / "img" / "p1_b.png")
    _png(tmp_path / "img" / "p2_a.png")
    _png(tmp_path / "img" / "p3_a.png")
    return _write_csv(
        tmp_path / "labels.csv",
        "path,label,group\nimg/p1_a.png,tumour,p1\nimg/p1_b.png,normal,p1\n\nimg/p2_a.png,tumour,p2\n"
        "img/p3_a.png, normal ,p3\n",
    )


# --- class-per-folder ---------------------------------------------------------------------------------


def test_folders_layout(folders: Path) -> None:
    dataset = open_classification_dataset(folders)
    assert dataset.layout == "folders" and dataset.root == folders
    assert dataset.class_names == ["a", "b"]
    found = {item.path.relative_to(folders).as_posix(): item.label for item in dataset.items}
    assert found == {"a/sub/y2.png": 0, "a/y1.png": 0, "a/y3.jpg": 0, "b/x1.png": 1, "b/x2.png": 1}
    groups = [item.group for item in dataset.items]
    assert len(set(groups)) == 5 and "a/sub/y2" in groups  # each image its own group
    assert dataset.class_counts() == {"a": 3, "b": 2}
    assert dataset.imbalance() == {"largest": "a", "smallest": "b", "ratio": 1.5}


def test_folders_with_given_classes(folders: Path) -> None:
    dataset = open_classification_dataset(folders, classes=["b", "a", "c"])
    assert dataset.class_names == ["b", "a", "c"]
    assert {item.label for item in dataset.items if item.path.parent.name == "b"} == {0}
    assert dataset.class_counts() == {"b": 2, "a": 3, "c": 0}
    assert dataset.imbalance()["ratio"] == math.inf
    with pytest.raises(DataError, match=r"b: class 'b' is not one of a, c"):
        open_classification_dataset(folders, classes=["a", "c"])
    with pytest.raises(DataError, match="distinct"):
        open_classification_dataset(folders, classes=["a", "a"])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing: classification dataset folder not found"):
        open_classification_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no class folders"):
        open_classification_dataset(tmp_path / "empty")
    (tmp_path / "seg" / "imagesTr").mkdir(parents=True)
    (tmp_path / "seg" / "dataset.json").write_text("{}")
    with pytest.raises(DataError, match=r"seg: holds a segmentation dataset"):
        open_classification_dataset(tmp_path / "seg")


# --- CSV ----------------------------------------------------------------------------------------------


def test_csv_layout(csv_set: Path) -> None:
    dataset = open_classification_dataset(csv_set)
    assert dataset.layout == "csv" and dataset.source == csv_set and dataset.root == csv_set.parent
    assert dataset.class_names == ["normal", "tumour"]  # sorted, not in order of appearance
    assert [item.path.name for item in dataset.items] == ["p1_a.png", "p1_b.png", "p2_a.png", "p3_a.png"]
    assert [item.label for item in dataset.items] == [1, 0, 1, 0]  # " normal " is stripped
    assert [item.group for item in dataset.items] == ["p1", "p1", "p2", "p3"]
    assert all(item.path.is_file() for item in dataset.items)


def test_csv_option_is_found_beside_the_dataset_and_absolute_paths_work(csv_set: Path) -> None:
    assert open_classification_dataset(csv_set.parent, csv="labels.csv").class_counts() == {
        "normal": 2,
        "tumour": 2,
    }
    other = csv_set.parent / "elsewhere"
    other.mkdir()
    absolute = (csv_set.parent / "img" / "p2_a.png").resolve()
    # a byte-order mark (spreadsheets), a capitalised header, no group column, an absolute path
    _write_csv(other / "list.csv", f"\ufeffPath,Label\n{absolute},x\n../img/p1_a.png,y\n")
    dataset = open_classification_dataset(other / "list.csv")
    assert [item.path for item in dataset.items] == [absolute, other / "../img/p1_a.png"]
    assert [item.group for item in dataset.items][1] == "../img/p1_a"  # no group column: the image


def test_csv_cells_are_never_evaluated(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    label = "__import__('os').system('exit 3')"
    dataset = open_classification_dataset(
        _write_csv(tmp_path / "l.csv", f'path,label\na.png,"{label}"\nb.png,x\n')
    )
    assert dataset.class_names == [label, "x"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty CSV"),
        ("path,label,site\na.png,x,1\n", "unknown column 'site'"),
        ("path,group\na.png,g\n", "missing column 'label'"),
        ("path,label,label\na.png,x,y\n", "appears twice"),
        ("path,label\na.png,x\nb.png,\n", r"row 3: empty label for b.png"),
        ("path,label\na.png,x\n,y\n", r"row 3: empty path"),
        ("path,label\na.png,x\nmissing.png,y\n", r"row 3: image missing.png not found"),
        ("path,label\na.png,x\nb.png,y,extra\n", r"row 3: 3 cells but the header has 2"),
        ("path,label\na.png,x\na.png,y\n", r"row 3: a.png is already listed in row 2"),
        ("path,label\nnotes.txt,x\n", r"row 2: notes.txt is not an image"),
    ],
)
def test_csv_errors_name_file_and_row(tmp_path: Path, text: str, message: str) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("x")
    path = _write_csv(tmp_path / "labels.csv", text)
    with pytest.raises(DataError, match=message) as info:
        open_classification_dataset(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_csv_label_outside_given_classes_and_missing_csv(csv_set: Path) -> None:
    with pytest.raises(DataError, match=r"labels.csv, row 3: label 'normal' is not one of tumour, benign"):
        open_classification_dataset(csv_set, classes=["tumour", "benign"])
    with pytest.raises(DataError, match="nope.csv: CSV file not found"):
        open_classification_dataset(csv_set.parent, csv="nope.csv")


# --- splits -------------------------------------------------------------------------------------------


def _grouped(tmp_path: Path, n_groups: int = 12, per_group: int = 3) -> ClassificationDataset:
    rows = ["path,label,group"]
    for g in range(n_groups):
        for j in range(per_group):
            name = f"slide{g:02d}_{j}.png"
            (tmp_path / name).touch()  # opening does not decode images
            rows.append(f"{name},{'ab'[(g + j) % 2]},slide{g:02d}")
    return open_classification_dataset(_write_csv(tmp_path / "labels.csv", "\n".join(rows) + "\n"))


def test_split_keeps_groups_together(tmp_path: Path) -> None:
    dataset = _grouped(tmp_path)
    split = dataset.split(val_fraction=0.25, seed=1)
    assert sorted(split["train"] + split["val"]) == list(range(36))
    train_groups = {dataset.items[i].group for i in split["train"]}
    val_groups = {dataset.items[i].group for i in split["val"]}
    assert not train_groups & val_groups
    assert len(split["val"]) == 9  # 3 whole groups of 3 reach 25%
    assert dataset.split(val_fraction=0.25, seed=1) == split
    assert dataset.split(val_fraction=0.25, seed=2) != split


def test_split_by_regex_on_file_names(tmp_path: Path) -> None:
    dataset = _grouped(tmp_path, n_groups=6, per_group=2)
    ungrouped = open_classification_dataset(tmp_path / "labels.csv")
    ungrouped.items = [type(item)(item.path, item.label, item.path.stem) for item in ungrouped.items]
    split = ungrouped.split(val_fraction=0.3, seed=0, group_by=r"^(slide\d+)_")
    assert split == dataset.split(val_fraction=0.3, seed=0)


# --- check --------------------------------------------------------------------------------------------


def test_check_a_good_dataset(folders: Path) -> None:
    report = check_classification_dataset(folders)
    assert report.ok, report.problems
    s = report.summary
    assert s["layout"] == "folders" and s["images"] == 5 and s["groups"] == 5
    assert s["class_counts"] == {"a": 3, "b": 2}
    assert s["imbalance"]["ratio"] == 1.5
    assert s["channels"] == {3: 5} and s["sizes"] == {"10x8": 5}


def test_check_lists_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    _png(root / "a" / "1.png")
    _png(root / "a" / "2.png", channels=1)
    _png(root / "a" / "3.png")
    _png(root / "b" / "only.png")
    (root / "c").mkdir()
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = check_classification_dataset(root)
    problems = "\n".join(report.problems)
    assert "class 'b' has 1 image(s)" in problems
    assert "class 'c' has 0 image(s)" in problems
    assert "broken.png: cannot read image" in problems
    assert "2.png: 1 image(s) with 1 channel(s) but most images have 3" in problems
    assert len(report.problems) == 4
    assert report.summary["class_counts"] == {"a": 4, "b": 1, "c": 0}
    assert report.summary["channels"] == {1: 1, 3: 3}


def test_check_reports_open_errors_and_a_single_class(tmp_path: Path) -> None:
    report = check_classification_dataset(tmp_path / "missing")
    assert not report.ok and "not found" in report.problems[0] and report.summary == {}
    _png(tmp_path / "one" / "a" / "1.png")
    _png(tmp_path / "one" / "a" / "2.png")
    assert check_classification_dataset(tmp_path / "one").problems == [
        f"{tmp_path / 'one'}: needs at least two classes, found 1"
    ]


def test_load_image_adds_a_channel_axis(tmp_path: Path) -> None:
    _png(tmp_path / "g" / "grey.png", channels=1, value=7)
    _png(tmp_path / "r" / "rgb.png", value=9)
    items = open_classification_dataset(tmp_path).items
    grey, rgb = (load_classification_image(item) for item in items)
    assert grey.shape == (8, 10, 1) and grey.dtype == np.uint8 and np.all(grey == 7)
    assert rgb.shape == (8, 10, 3) and np.all(rgb == 9)
