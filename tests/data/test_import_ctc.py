"""Tests for the Cell Tracking Challenge importer (on phantom movies written in CTC layout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.data.dataset import open_dataset
from medseg.data.importers.ctc import import_ctc
from medseg.data.phantoms.timelapse import write_nuclei_movie
from medseg.data.splits import make_split
from medseg.errors import DataError, MedsegError
from medseg.io import read_image, read_label
from medseg.io.ctc import read_frames, read_label_frames


@pytest.fixture(scope="module")
def ctc_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 3-frame 48 x 48 sequences in CTC layout (read-only: copy before modifying)."""
    return write_nuclei_movie(
        tmp_path_factory.mktemp("ctc") / "Fluo-phantom", 3, size=48, seed=0, sequences=2
    )


@pytest.fixture
def source(ctc_source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ctc_source, tmp_path / "Fluo-phantom"))


def test_every_annotated_frame_becomes_a_case(ctc_source: Path, tmp_path: Path) -> None:
    dst = import_ctc(ctc_source, tmp_path / "ds")
    assert dst == tmp_path / "ds"
    cases = [f"{s}_t{t:03d}" for s in ("01", "02") for t in range(3)]
    assert sorted(p.name for p in (dst / "imagesTr").iterdir()) == [f"{c}_0000.tif" for c in cases]
    assert sorted(p.name for p in (dst / "labelsTr").iterdir()) == [f"{c}.tif" for c in cases]
    for seq in ("01", "02"):
        frames = read_frames(ctc_source / seq)
        seg = read_label_frames(ctc_source / f"{seq}_GT" / "SEG", "man_seg")
        for t in range(3):
            image = read_image(dst / "imagesTr" / f"{seq}_t{t:03d}_0000.tif")
            assert image.dtype == np.uint16
            np.testing.assert_array_equal(image, frames[t])
            labels = read_image(dst / "labelsTr" / f"{seq}_t{t:03d}.tif")
            assert labels.dtype == np.int32
            np.testing.assert_array_equal(labels, seg[t])  # ids kept as annotated
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["name"] == "Fluo-phantom" and meta["numTraining"] == 6 and meta["file_ending"] == ".tif"
    assert meta["labels"] == {"background": 0, "cell": 1} and meta["channel_names"] == {"0": "grey"}
    extra = meta["medseg"]
    assert extra["task"] == "instance" and extra["image_size"] == [48, 48]
    assert extra["sequences"] == {"01": 3, "02": 3}
    assert extra["source"] == f"medseg data import ctc {ctc_source} {dst}"
    objects = [len(np.unique(read_label(p))) - 1 for p in sorted((dst / "labelsTr").iterdir())]
    assert extra["objects_per_image"] == pytest.approx(np.mean(objects), abs=1e-3)
    dataset = open_dataset(dst)
    assert dataset.task == "instance" and [c.name for c in dataset.cases] == cases
    split = make_split(cases, val_fraction=0.3, group_by=extra["group_by"])
    assert {c[:2] for c in split["train"]}.isdisjoint({c[:2] for c in split["val"]})  # sequences stay whole
    assert split["train"] and split["val"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_selected_sequences_partial_annotations_and_4_digit_names(source: Path, tmp_path: Path) -> None:
    (source / "02_GT" / "SEG" / "man_seg001.tif").unlink()
    for path in (source / "02").iterdir():  # t000.tif -> t0000.tif, as in long CTC sequences
        path.rename(path.with_name(f"t0{path.name[1:]}"))
    dst = import_ctc(source, tmp_path / "ds", sequences=[2])
    assert sorted(p.name for p in (dst / "labelsTr").iterdir()) == ["02_t000.tif", "02_t002.tif"]
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["medseg"]["sequences"] == {"02": 2}
    assert meta["medseg"]["source"].endswith(" --sequences 02")
    np.testing.assert_array_equal(
        read_image(dst / "imagesTr" / "02_t002_0000.tif"), read_frames(source / "02")[2]
    )


def test_sequences_without_ground_truth_are_skipped(source: Path, tmp_path: Path) -> None:
    shutil.rmtree(source / "02_GT")  # a challenge (test) sequence
    dst = import_ctc(source, tmp_path / "ds")
    assert json.loads((dst / "dataset.json").read_text())["medseg"]["sequences"] == {"01": 3}
    with pytest.raises(DataError, match=r"02_GT/SEG: folder not found; sequence 02 has no SEG annotations"):
        import_ctc(source, tmp_path / "other", sequences=["02"])


def test_missing_image_for_an_annotation(source: Path, tmp_path: Path) -> None:
    (source / "01" / "t001.tif").unlink()
    with pytest.raises(DataError, match=r"man_seg001.tif: no raw frame 1 in .*01 \(expected t001.tif\)"):
        import_ctc(source, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_annotation_of_another_size(source: Path, tmp_path: Path) -> None:
    tifffile.imwrite(source / "01_GT" / "SEG" / "man_seg002.tif", np.zeros((48, 40), np.uint16))
    with pytest.raises(DataError, match=r"man_seg002.tif: is 40x48 \(WxH\) but .*t002.tif is 48x48 \(WxH\)"):
        import_ctc(source, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_no_annotations(source: Path, tmp_path: Path) -> None:
    for seq in ("01", "02"):
        shutil.rmtree(source / f"{seq}_GT" / "SEG")
    with pytest.raises(DataError, match="no segmentation annotations to import: sequences 01, 02 have no"):
        import_ctc(source, tmp_path / "ds")
    (source / "01_GT" / "SEG").mkdir()
    with pytest.raises(DataError, match=r"no man_segNNN.tif annotations in 01_GT/SEG"):
        import_ctc(source, tmp_path / "ds")
    (source / "01_GT" / "SEG" / "man_seg_000_005.tif").write_bytes(b"")
    with pytest.raises(DataError, match="3D annotations"):
        import_ctc(source, tmp_path / "ds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no sequence folders"):
        import_ctc(tmp_path / "empty", tmp_path / "x")
    with pytest.raises(DataError, match="folder not found"):
        import_ctc(tmp_path / "missing", tmp_path / "x")


def test_bad_sequence_requests(ctc_source: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match="sequence 03 not found"):
        import_ctc(ctc_source, tmp_path / "ds", sequences=["03"])
    with pytest.raises(MedsegError, match="not a CTC sequence number"):
        import_ctc(ctc_source, tmp_path / "ds", sequences=["../01"])


def test_destination_must_be_empty_unless_overwrite(ctc_source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "ds"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="folder is not empty"):
        import_ctc(ctc_source, dst)
    import_ctc(ctc_source, dst, sequences="1", overwrite=True)
    assert (
        not (dst / "keep.txt").exists() and json.loads((dst / "dataset.json").read_text())["numTraining"] == 3
    )
    with pytest.raises(DataError, match="holds the source"):
        import_ctc(ctc_source, ctc_source.parent, overwrite=True)
