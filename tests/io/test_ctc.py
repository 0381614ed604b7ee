"""Tests for Cell Tracking Challenge folder I/O: frames, track tables, ground truth, results, consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.errors import DataError
from medseg.io import ctc
from medseg.io.ctc import (
    check_tracks,
    list_frames,
    read_ctc_ground_truth,
    read_frames,
    read_label_frames,
    read_track_table,
    write_ctc_result,
    write_frames,
    write_track_table,
)


def _movie() -> tuple[np.ndarray, np.ndarray]:
    """5 frames: track 1 divides into 2 and 3 after frame 1; 3 is unseen in frame 3 and goes on as 4."""
    masks = np.zeros((5, 8, 10), np.int32)
    masks[0:2, 1:3, 1:3] = 1
    masks[2:5, 1:3, 0:2] = 2
    masks[2, 5:7, 5:7] = 3
    masks[4, 5:7, 6:8] = 4
    table = np.array([[1, 0, 1, 0], [2, 2, 4, 1], [3, 2, 2, 1], [4, 4, 4, 3]], np.int64)
    return masks, table


def test_track_table_round_trip_writes_ctc_lines(tmp_path: Path) -> None:
    _, table = _movie()
    path = write_track_table(tmp_path / "res_track.txt", table)
    assert path.read_text() == "1 0 1 0\n2 2 4 1\n3 2 2 1\n4 4 4 3\n"
    back = read_track_table(path)
    assert back.dtype == np.int64 and back.shape == (4, 4)
    np.testing.assert_array_equal(back, table)
    empty = write_track_table(tmp_path / "empty.txt", np.zeros((0, 4), np.int64))
    assert empty.read_text() == "" and read_track_table(empty).shape == (0, 4)


def test_read_track_table_accepts_tabs_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "man_track.txt"
    path.write_bytes(b"\xef\xbb\xbf1 0 3 0\r\n2\t4\t6\t1\n\n   \n")
    np.testing.assert_array_equal(read_track_table(path), [[1, 0, 3, 0], [2, 4, 6, 1]])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("5 0 4", "expected four non-negative integers"),
        ("5 0 x 0", "expected four non-negative integers"),
        ("5 -1 4 0", "expected four non-negative integers"),
        ("5 0 4 0 9", "expected four non-negative integers"),
        ("0 0 4 0", "label 0 is the background"),
        ("5 6 4 0", "ends in frame 4, before it begins in frame 6"),
        ("5 0 4 5", "its own parent"),
        ("1 7 8 0", "already listed on line 1"),
    ],
)
def test_read_track_table_names_file_and_line_of_a_bad_row(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "man_track.txt"
    path.write_text(f"1 0 4 0\n\n{line}\n")
    with pytest.raises(DataError, match=message) as info:
        read_track_table(path)
    assert str(info.value).startswith(f"{path}:3: ") and "\n" not in str(info.value)


def test_read_track_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_track_table(tmp_path / "nope.txt")


def test_write_track_table_refuses_a_bad_array(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="res_track.txt: a track table is"):
        write_track_table(tmp_path / "res_track.txt", np.zeros((3, 3), np.int64))
    with pytest.raises(DataError, match="negative"):
        write_track_table(tmp_path / "res_track.txt", np.array([[1, 0, 2, -1]]))
    assert not (tmp_path / "res_track.txt").exists()


def test_list_frames_reads_3_and_4_digits_and_ignores_other_files(tmp_path: Path) -> None:
    for name in ("t0010.tif", "t002.tif", "t000.TIF", "t001.tiff", "man_track.txt", "tx01.tif", "t003.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "t004.tif").mkdir()
    assert list_frames(tmp_path, "t") == [
        (0, tmp_path / "t000.TIF"),
        (1, tmp_path / "t001.tiff"),
        (2, tmp_path / "t002.tif"),
        (10, tmp_path / "t0010.tif"),
    ]
    assert list_frames(tmp_path, "mask") == []


def test_list_frames_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        list_frames(tmp_path / "missing", "t")
    (tmp_path / "t001.tif").write_bytes(b"")
    (tmp_path / "t0001.tif").write_bytes(b"")
    with pytest.raises(DataError, match=r"t0001.tif and t001.tif both hold frame 1"):
        list_frames(tmp_path, "t")


def test_read_frames_from_folder_and_from_stack_agree(tmp_path: Path) -> None:
    movie = np.random.default_rng(0).integers(0, 4000, (4, 6, 7)).astype(np.uint16)
    paths = write_frames(tmp_path / "01", "t", movie)
    assert [p.name for p in paths] == ["t000.tif", "t001.tif", "t002.tif", "t003.tif"]
    from_folder = read_frames(tmp_path / "01")
    assert from_folder.dtype == np.uint16
    np.testing.assert_array_equal(from_folder, movie)
    tifffile.imwrite(tmp_path / "plain.tif", movie, photometric="minisblack")  # pages, axes unknown
    tifffile.imwrite(tmp_path / "imagej.tif", movie, imagej=True, metadata={"axes": "TYX"})
    for name in ("plain.tif", "imagej.tif"):
        np.testing.assert_array_equal(read_frames(tmp_path / name), movie)
    tifffile.imwrite(tmp_path / "one.tif", movie[0])
    np.testing.assert_array_equal(read_frames(tmp_path / "one.tif"), movie[:1])


def test_read_frames_moves_channels_last(tmp_path: Path) -> None:
    movie = np.arange(3 * 2 * 5 * 6, dtype=np.uint8).reshape(3, 2, 5, 6)  # T C Y X
    tifffile.imwrite(tmp_path / "tcyx.tif", movie, imagej=True, metadata={"axes": "TCYX"})
    np.testing.assert_array_equal(read_frames(tmp_path / "tcyx.tif"), np.moveaxis(movie, 1, -1))
    rgb = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_frames(tmp_path / "rgb.tif"), rgb[None])


def test_read_frames_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        read_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no tNNN.tif frames found"):
        read_frames(tmp_path / "empty")
    write_frames(tmp_path / "gap", "t", np.zeros((3, 4, 4), np.uint16))
    (tmp_path / "gap" / "t001.tif").unlink()
    with pytest.raises(DataError, match=r"frame 1 \(t001.tif\) is missing before t002.tif"):
        read_frames(tmp_path / "gap")
    write_frames(tmp_path / "sizes", "t", np.zeros((2, 4, 4), np.uint16))
    write_frames(tmp_path / "other", "t", np.zeros((1, 4, 5), np.uint16))
    (tmp_path / "other" / "t000.tif").rename(tmp_path / "sizes" / "t002.tif")
    with pytest.raises(DataError, match=r"t002.tif: is 4x5 uint16 but t000.tif is 4x4 uint16"):
        read_frames(tmp_path / "sizes")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="junk.tif: cannot read TIFF stack"):
        read_frames(tmp_path / "junk.tif")


def test_write_frames_label_dtypes_and_4_digit_names(tmp_path: Path, monkeypatch) -> None:
    small = write_frames(tmp_path / "a", "mask", np.array([[[0, 65535]]], np.int64))
    assert tifffile.imread(small[0]).dtype == np.uint16
    large = write_frames(tmp_path / "b", "mask", np.array([[[0, 65536]]], np.int32))
    stored = tifffile.imread(large[0])
    assert stored.dtype == np.uint32 and stored.max() == 65536
    np.testing.assert_array_equal(read_label_frames(tmp_path / "b", "mask"), [[[0, 65536]]])
    with pytest.raises(DataError, match="labels must be >= 0"):
        write_frames(tmp_path / "c", "mask", np.array([[[0, -1]]], np.int32))
    names: list[str] = []
    monkeypatch.setattr(ctc, "_write_tiff", lambda path, array: names.append(path.name) or path)
    write_frames(tmp_path / "d", "mask", np.zeros((1000, 1, 1), np.uint16))
    assert names[0] == "mask000.tif" and names[-1] == "mask999.tif"
    names.clear()
    write_frames(tmp_path / "d", "mask", np.zeros((1001, 1, 1), np.uint16))
    assert names[0] == "mask0000.tif" and names[-1] == "mask1000.tif"


def test_write_ctc_result_round_trip(tmp_path: Path) -> None:
    masks, table = _movie()
    out = write_ctc_result(tmp_path / "01_RES", masks, table)
    assert sorted(p.name for p in out.iterdir()) == [f"mask{t:03d}.tif" for t in range(5)] + ["res_track.txt"]
    assert tifffile.imread(out / "mask002.tif").dtype == np.uint16
    back = read_label_frames(out, "mask")
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, masks)
    np.testing.assert_array_equal(read_track_table(out / "res_track.txt"), table)


def test_write_ctc_result_refuses_an_inconsistent_pair(tmp_path: Path) -> None:
    masks, table = _movie()
    masks[3, 0, 9] = 3  # track 3 ends in frame 2
    with pytest.raises(DataError, match="01_RES: label 3 is in frame 3, outside its track 2-2"):
        write_ctc_result(tmp_path / "01_RES", masks, table)
    assert not (tmp_path / "01_RES").exists()


def test_check_tracks_accepts_a_consistent_movie() -> None:
    masks, table = _movie()
    check_tracks(masks, table, name="movie")
    check_tracks(masks.astype(np.uint16), table[::-1].copy(), name="movie")  # row order is free


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m, t: m.__setitem__((3, 6, 6), 9), "label 9 in frame 3 is not in the track table"),
        (lambda m, t: m.__setitem__((0, 7, 9), 2), "label 2 is in frame 0, outside its track 2-4"),
        (lambda m, t: m.__setitem__((3,), np.where(m[3] == 2, 0, m[3])), "label 2 is missing from frame 3"),
        (lambda m, t: t.__setitem__((3, 3), 7), "track 4 has parent 7, which is not in the track table"),
        (lambda m, t: t.__setitem__((1, 1), 1), "label 2 is missing from frame 1"),
        (lambda m, t: t.__setitem__((3, 2), 5), "track 4 ends in frame 5 but the movie has 5 frames"),
        (lambda m, t: t.__setitem__((2, 0), 2), "track 2 is listed twice"),
    ],
)
def test_check_tracks_names_the_problem(edit, message: str) -> None:
    masks, table = _movie()
    edit(masks, table)
    with pytest.raises(DataError, match=message) as info:
        check_tracks(masks, table, name="res")
    assert str(info.value).startswith("res: ") and "\n" not in str(info.value)


def test_check_tracks_parent_must_end_before_child_begins_and_counts_problems() -> None:
    masks, table = _movie()
    masks[2, 1:3, 1:3] = 1  # track 1 now also in frame 2, where its children begin
    masks[2, 1:3, 0] = 2
    table[0, 2] = 2
    with pytest.raises(
        DataError, match=r"track 2 begins in frame 2 but its parent 1 ends in frame 2"
    ) as info:
        check_tracks(masks, table, name="res")
    assert str(info.value).endswith("(and 1 more problems)")  # the same for track 3
    with pytest.raises(DataError, match="integer label movie"):
        check_tracks(masks.astype(np.float32), table, name="res")


def _write_gt(root: Path, masks: np.ndarray, table: np.ndarray, seg_frames: list[int]) -> Path:
    gt = root / "01_GT"
    write_frames(gt / "TRA", "man_track", masks)
    write_track_table(gt / "TRA" / "man_track.txt", table)
    if seg_frames:
        (gt / "SEG").mkdir()
    for t in seg_frames:
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", (masks[t] * 10).astype(np.uint16))
    return gt


def test_read_ctc_ground_truth(tmp_path: Path) -> None:
    masks, table = _movie()
    gt = _write_gt(tmp_path, masks, table, [1, 4])
    truth = read_ctc_ground_truth(gt)
    assert truth.tra.dtype == np.int32 and truth.table.dtype == np.int64
    np.testing.assert_array_equal(truth.tra, masks)
    np.testing.assert_array_equal(truth.table, table)
    assert sorted(truth.seg) == [1, 4]
    np.testing.assert_array_equal(truth.seg[4], masks[4] * 10)
    assert truth.seg[4].dtype == np.int32
    (gt / "SEG" / "man_seg001.tif").unlink()
    (gt / "SEG" / "man_seg004.tif").unlink()
    (gt / "SEG").rmdir()
    assert read_ctc_ground_truth(gt).seg == {}


def test_read_ctc_ground_truth_errors(tmp_path: Path) -> None:
    masks, table = _movie()
    gt = _write_gt(tmp_path, masks, table, [])
    bad = table.copy()
    bad[0, 2] = 2
    write_track_table(gt / "TRA" / "man_track.txt", bad)
    with pytest.raises(DataError, match=r"01_GT/TRA: label 1 is missing from frame 2"):
        read_ctc_ground_truth(gt)
    assert read_ctc_ground_truth(gt, check=False).table[0, 2] == 2
    write_track_table(gt / "TRA" / "man_track.txt", table)
    (gt / "SEG").mkdir()
    tifffile.imwrite(gt / "SEG" / "man_seg002.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(DataError, match=r"man_seg002.tif: is 9x8 \(WxH\) but the TRA frames are 10x8"):
        read_ctc_ground_truth(gt)
    (gt / "SEG" / "man_seg002.tif").unlink()
    tifffile.imwrite(gt / "SEG" / "man_seg007.tif", np.zeros((8, 10), np.uint16))
    with pytest.raises(DataError, match="frame 7 is beyond the last TRA frame"):
        read_ctc_ground_truth(gt)
    (gt / "TRA" / "man_track.txt").unlink()
    with pytest.raises(DataError, match="man_track.txt: file not found"):
        read_ctc_ground_truth(gt)
