"""Tests for the DeepCell npz importer and the importer registry."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medseg.data.importers import IMPORTERS, import_dataset, import_deepcell
from medseg.errors import ConfigError, DataError, MedsegError
from medseg.io import read_image, read_label


def _arrays(n: int = 3, h: int = 12, w: int = 10, c: int = 2, y_channels: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, h, w, c)).astype(np.float32)
    y = np.zeros((n, h, w, y_channels), np.int64)
    for i in range(n):
        for k in range(1, 4 + i):  # a few rectangles with sparse, non-consecutive ids
            r, col = rng.integers(0, h - 3), rng.integers(0, w - 3)
            y[i, r : r + 3, col : col + 3, :] = k * 7
    if y_channels == 2:
        y[..., 1] = np.where(y[..., 0] > 0, y[..., 0] + 1000, 0)
    return x, y


def _npz(path: Path, compressed: bool = True, **arrays: np.ndarray) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.mark.parametrize("compressed", [True, False])
def test_round_trip_keeps_values_and_ids_and_splits_channels(tmp_path: Path, compressed: bool) -> None:
    x, y = _arrays()
    src = _npz(tmp_path / "train.npz", compressed, X=x, y=y)
    dst = import_deepcell(src, tmp_path / "ds")
    assert dst == tmp_path / "ds"
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["name"] == "train" and meta["numTraining"] == 3 and meta["file_ending"] == ".tif"
    assert meta["labels"] == {"background": 0, "cell": 1}
    assert meta["channel_names"] == {"0": "channel_0", "1": "channel_1"}
    assert meta["medseg"]["task"] == "instance" and meta["medseg"]["image_size"] == [12, 10]
    objects = [len(np.unique(y[i])) - 1 for i in range(3)]
    assert meta["medseg"]["objects_per_image"] == pytest.approx(np.mean(objects), abs=1e-3)
    assert meta["medseg"]["source"] == f"medseg data import deepcell {src} {dst}"
    assert sorted(p.name for p in (dst / "imagesTr").iterdir()) == [
        f"train_{i:04d}_{c:04d}.tif" for i in range(3) for c in range(2)
    ]
    for i in range(3):
        for c in range(2):
            image = read_image(dst / "imagesTr" / f"train_{i:04d}_{c:04d}.tif")
            assert image.dtype == np.float32
            np.testing.assert_array_equal(image, x[i, ..., c])
        labels = read_image(dst / "labelsTr" / f"train_{i:04d}.tif")
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, y[i, ..., 0])  # ids kept, not renumbered
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_second_label_channel_names_prefix_and_3d_images(tmp_path: Path) -> None:
    x, y = _arrays(n=2, c=1, y_channels=2)
    src = _npz(tmp_path / "tissue net.npz", X=(x[..., 0] * 60000).astype(np.uint16), y=y.astype(np.float32))
    dst = import_deepcell(src, tmp_path / "ds", y_channel=1, channel_names=["nuclear"], prefix="tn")
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "nuclear"} and meta["name"] == "tn"
    assert meta["medseg"]["source"].endswith("--y-channel 1 --channel-names nuclear --prefix tn")
    image = read_image(dst / "imagesTr" / "tn_0001_0000.tif")
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, (x[1, ..., 0] * 60000).astype(np.uint16))
    np.testing.assert_array_equal(read_label(dst / "labelsTr" / "tn_0001.tif"), y[1, ..., 1])
    assert read_label(dst / "labelsTr" / "tn_0001.tif").min() == 0
    # the default prefix is the file name made safe for case names
    assert import_deepcell(src, tmp_path / "ds2").joinpath("labelsTr", "tissue_net_0000.tif").is_file()


def test_dtypes_follow_the_dataset_contract(tmp_path: Path) -> None:
    x, y = _arrays(n=1, c=1)
    for dtype, expected in [(np.float64, np.float32), (np.uint8, np.uint8), (np.int16, np.float32)]:
        src = _npz(tmp_path / f"{np.dtype(dtype).name}.npz", X=(x * 100).astype(dtype), y=y.astype(np.int32))
        dst = import_deepcell(src, tmp_path / np.dtype(dtype).name)
        image = read_image(dst / "imagesTr" / f"{np.dtype(dtype).name}_0000_0000.tif")
        assert image.dtype == expected
        np.testing.assert_array_equal(image, (x[0, ..., 0] * 100).astype(dtype).astype(expected))


def test_c_order_archives_stream_case_by_case_without_loading_whole_arrays(
    tmp_path: Path, monkeypatch
) -> None:
    x, y = _arrays(n=3, c=1)
    src = _npz(tmp_path / "s.npz", X=x, y=y)

    def no_full_load(*args, **kwargs):
        raise AssertionError("np.load reads whole arrays")

    monkeypatch.setattr(np, "load", no_full_load)
    dst = import_deepcell(src, tmp_path / "ds")
    np.testing.assert_array_equal(read_image(dst / "imagesTr" / "s_0002_0000.tif"), x[2, ..., 0])


def test_a_corrupted_archive_is_a_data_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = _npz(tmp_path / "c.npz", X=np.zeros((4, 32, 32, 1), np.uint8), y=rng.integers(0, 9, (4, 32, 32, 1)))
    data = bytearray(src.read_bytes())
    member = zipfile.ZipFile(src).getinfo("y.npy")
    middle = member.header_offset + member.compress_size // 2
    data[middle : middle + 3] = bytes(b ^ 0x5A for b in data[middle : middle + 3])
    src.write_bytes(bytes(data))
    # the CRC is checked at the end of the member, so garbage may first fail a value check instead
    with pytest.raises(DataError, match=r"c\.npz: (cannot read|y\[\d\] holds)"):
        import_deepcell(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_column_major_arrays_are_read_too(tmp_path: Path) -> None:
    x, y = _arrays(n=2, c=1)
    src = _npz(tmp_path / "f.npz", X=np.asfortranarray(x), y=np.asfortranarray(y))
    dst = import_deepcell(src, tmp_path / "ds")
    np.testing.assert_array_equal(read_image(dst / "imagesTr" / "f_0001_0000.tif"), x[1, ..., 0])
    np.testing.assert_array_equal(read_label(dst / "labelsTr" / "f_0001.tif"), y[1, ..., 0])


def _bad(tmp_path: Path, **arrays: np.ndarray) -> Path:
    return _npz(tmp_path / "bad.npz", **arrays)


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda x, y: {"y": y}, {}, "missing key 'X'"),
        (lambda x, y: {"X": x, "labels": y}, {}, "missing key 'y'"),
        (lambda x, y: {"X": x[:, :10], "y": y}, {}, "N, H and W must agree"),
        (lambda x, y: {"X": x[:2], "y": y}, {}, "N, H and W must agree"),
        (lambda x, y: {"X": x[None], "y": y}, {}, "time-lapse"),
        (lambda x, y: {"X": x, "y": -y}, {}, "negative labels"),
        (lambda x, y: {"X": x, "y": y + 0.5}, {}, "non-integer values"),
        (lambda x, y: {"X": x, "y": y.astype(str)}, {}, "expected integer instance labels"),
        (lambda x, y: {"X": np.where(x > 0.5, np.nan, x), "y": y}, {}, "NaN"),
        (lambda x, y: {"X": x, "y": y}, {"y_channel": 1}, "--y-channel 1 does not exist"),
        (lambda x, y: {"X": x, "y": y}, {"channel_names": ["a"]}, "2 channel(s) but 1 channel name"),
        (lambda x, y: {"X": x, "y": y}, {"prefix": "../up"}, "case prefix"),
    ],
)
def test_bad_archives_and_options_raise_one_clear_error_and_write_nothing(
    tmp_path: Path, make, kwargs: dict, message: str
) -> None:
    x, y = _arrays()
    src = _bad(tmp_path, **make(x, y))
    with pytest.raises(MedsegError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        import_deepcell(src, tmp_path / "out", **kwargs)
    assert str(src) in str(info.value) or "prefix" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]  # nothing partial, no staging


def test_a_late_bad_case_leaves_nothing_behind(tmp_path: Path) -> None:
    x, y = _arrays(n=4)
    y[3, 0, 0, 0] = -5  # only the last case is broken: three were already written
    src = _npz(tmp_path / "late.npz", X=x, y=y)
    with pytest.raises(DataError, match=r"y\[3\] holds negative labels"):
        import_deepcell(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.npz"]


def test_not_an_npz_or_missing_file(tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(DataError, match="x.npy: not an npz archive"):
        import_deepcell(npy, tmp_path / "out")
    with pytest.raises(DataError, match="nope.npz: file not found"):
        import_deepcell(tmp_path / "nope.npz", tmp_path / "out")
    pickled = tmp_path / "objects.npz"
    with zipfile.ZipFile(pickled, "w") as archive:
        with archive.open("X.npy", "w") as member:
            np.save(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        with archive.open("y.npy", "w") as member:
            np.save(member, np.zeros((1, 2, 2, 1), np.int32))
    with pytest.raises(DataError, match="'X' holds Python objects"):
        import_deepcell(pickled, tmp_path / "out")


def test_destination_rules(tmp_path: Path) -> None:
    x, y = _arrays(n=1)
    src = _npz(tmp_path / "a.npz", X=x, y=y)
    (tmp_path / "empty").mkdir()
    assert (import_deepcell(src, tmp_path / "empty") / "dataset.json").is_file()  # an empty folder is fine
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="folder is not empty.*--overwrite"):
        import_deepcell(src, full)
    assert (full / "mine.txt").read_text() == "keep me"
    import_deepcell(src, full, overwrite=True)
    assert sorted(p.name for p in full.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "empty", "full"]  # old copy removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        import_deepcell(src, tmp_path / "file")
    with pytest.raises(DataError, match="holds the source archive"):
        import_deepcell(src, tmp_path, overwrite=True)
    assert src.is_file()


def test_import_dataset_dispatches_by_format(tmp_path: Path) -> None:
    assert IMPORTERS["deepcell"] is import_deepcell
    x, y = _arrays(n=1)
    src = _npz(tmp_path / "a.npz", X=x, y=y)
    dst = import_dataset("deepcell", src, tmp_path / "ds", y_channel=0)
    assert (dst / "labelsTr" / "a_0000.tif").is_file()
    with pytest.raises(ConfigError, match="unknown import format 'deepcel'; choose from .*deepcell"):
        import_dataset("deepcel", src, tmp_path / "ds2")
    with pytest.raises(ConfigError, match="deepcell import: .*'ychannel'"):
        import_dataset("deepcell", src, tmp_path / "ds2", ychannel=1)
    assert not (tmp_path / "ds2").exists()
