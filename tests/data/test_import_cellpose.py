"""Tests for the Cellpose ``*_seg.npy`` importer and its restricted unpickler."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.cli import main
from medseg.data.dataset import check_dataset, load_image, load_instances, open_dataset
from medseg.data.importers import IMPORTERS, import_cellpose, load_seg_file
from medseg.errors import DataError


def _masks(seed: int, h: int = 18, w: int = 14) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((h, w), np.uint16)
    for k in range(1, 4 + seed):
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
        masks[r : r + 3, c : c + 3] = k
    return masks


def _save_seg(image_path: Path, masks: np.ndarray, *, seg_path: Path | None = None, **extra) -> Path:
    """A seg file laid out as cellpose.io.masks_flows_to_seg writes it: np.save of a dict."""
    outlines = masks * (masks != np.roll(masks, 1, axis=-2))  # stands in for utils.masks_to_outlines
    dat = {
        "outlines": outlines.astype(np.uint16),
        "masks": masks.astype(np.uint16),
        "chan_choose": [0, 0],
        "ismanual": np.zeros(int(masks.max()), bool),
        "filename": str(image_path),
        "flows": [np.zeros((1, *masks.shape, 3), np.uint8), np.zeros(masks.shape, np.uint8), []],
        "diameter": np.nan,
        "est_diam": np.float64(17.5),
        **extra,
    }
    seg_path = seg_path or image_path.with_name(image_path.stem + "_seg.npy")
    np.save(seg_path, dat)
    return seg_path


def _folder(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    folder = tmp_path / "cp"
    folder.mkdir()
    rng = np.random.default_rng(1)
    truth = {}
    for i, name in enumerate(["s1_img01", "s1_img02", "s2_img01"]):
        image = rng.integers(0, 4000, (18, 14), dtype=np.uint16)
        tifffile.imwrite(folder / f"{name}.tif", image)
        truth[name] = (image, _masks(i))
        _save_seg(folder / f"{name}.tif", truth[name][1])
    return folder, truth


def test_seg_files_round_trip_to_an_instance_dataset(tmp_path: Path) -> None:
    src, truth = _folder(tmp_path)
    dst = import_cellpose(src, tmp_path / "ds", group_by=r"^(s\d)_")
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "cell": 1} and meta["file_ending"] == ".tif"
    assert meta["channel_names"] == {"0": "grey"} and meta["medseg"]["task"] == "instance"
    counts = [len(np.unique(m)) - 1 for _, m in truth.values()]
    assert meta["medseg"]["objects_per_image"] == pytest.approx(np.mean(counts), abs=1e-3)
    assert "2 groups by --group-by '^(s\\d)_'" in meta["medseg"]["notes"]
    dataset = open_dataset(dst)
    assert [c.name for c in dataset.cases] == sorted(truth)
    for case in dataset.cases:
        image, masks = truth[case.name]
        np.testing.assert_array_equal(load_image(case)[..., 0], image)
        ids, types = load_instances(case)
        np.testing.assert_array_equal(ids, masks)
        assert ids.dtype == np.int32 and types == {}
    report = check_dataset(dst)
    assert report.ok, report.problems


def test_image_is_found_through_the_filename_key_and_a_single_file_imports(tmp_path: Path) -> None:
    folder = tmp_path / "cp"
    folder.mkdir()
    image = np.random.default_rng(2).integers(0, 256, (18, 14, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "cells.png")
    # saved on another computer, then renamed: only the base name of 'filename' still points at the image
    seg = _save_seg(Path("C:/lab/data/cells.png"), _masks(0), seg_path=folder / "renamed_seg.npy")
    dst = import_cellpose(seg, tmp_path / "ds")
    case = open_dataset(dst).case("cells")
    np.testing.assert_array_equal(load_image(case), image)
    np.testing.assert_array_equal(load_instances(case)[0], _masks(0))


def test_a_pickle_that_names_other_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    seg = tmp_path / "evil_seg.npy"
    np.save(
        seg,
        {"masks": np.zeros((4, 4), np.uint16), "filename": "x.png", "extra": Payload()},
        allow_pickle=True,
    )
    with pytest.raises(
        DataError, match=r"evil_seg\.npy: not plain Cellpose data \(refusing to load (posix|nt)\.system\)"
    ):
        load_seg_file(seg)
    assert not marker.exists()
    data = load_seg_file(_save_seg(tmp_path / "ok.png", _masks(1)))  # the real format loads
    assert data["est_diam"] == 17.5 and data["chan_choose"] == [0, 0] and data["flows"][2] == []


def _bad_setups():
    def masks_3d(f: Path) -> None:
        _save_seg(f / "a.tif", np.stack([_masks(0)] * 2))

    def no_masks(f: Path) -> None:
        np.save(f / "a_seg.npy", {"filename": "a.tif", "outlines": _masks(0)})

    def wrong_size(f: Path) -> None:
        _save_seg(f / "a.tif", _masks(0, h=17))

    def no_image(f: Path) -> None:
        (f / "a.tif").unlink()
        _save_seg(f / "b.tif", _masks(0))

    def garbage(f: Path) -> None:
        (f / "a_seg.npy").write_bytes(b"not a numpy file at all")

    def negative(f: Path) -> None:
        np.save(f / "a_seg.npy", {"masks": _masks(0).astype(np.int32) - 1, "filename": "a.tif"})  # hand-made

    return [
        (masks_3d, r"a_seg\.npy: 'masks' has shape \(2, 18, 14\); only 2D masks"),
        (no_masks, r"a_seg\.npy: no 'masks' key \(found filename, outlines\)"),
        (wrong_size, r"a_seg\.npy: masks are 14x17 but image .*a\.tif is 14x18"),
        (
            no_image,
            r"b_seg\.npy: image not found \(looked for b\.png/\.tif/\.\.\. beside it and for .*b\.tif\)",
        ),
        (garbage, r"a_seg\.npy: cannot read \.npy file"),
        (negative, r"a_seg\.npy: 'masks' holds negative labels"),
    ]


@pytest.mark.parametrize(("setup", "message"), _bad_setups())
def test_bad_seg_files_raise_one_clear_error_and_write_nothing(tmp_path: Path, setup, message: str) -> None:
    folder = tmp_path / "cp"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((18, 14), np.uint16))
    tifffile.imwrite(folder / "0ok.tif", np.zeros((18, 14), np.uint16))
    _save_seg(folder / "0ok.tif", _masks(3))  # a good case written first: its files must not survive
    setup(folder)
    with pytest.raises(DataError, match=message) as info:
        import_cellpose(folder, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp"]


def test_cli_imports_cellpose_and_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    assert IMPORTERS["cellpose"] is import_cellpose
    src, _ = _folder(tmp_path)
    dst = tmp_path / "ds"
    assert main(["data", "import", "cellpose", str(src), str(dst)]) == 0
    objects = json.loads((dst / "dataset.json").read_text())["medseg"]["objects_per_image"]
    assert capsys.readouterr().out.startswith(
        f"imported 3 cases to {dst}: instance labels, {objects:.1f} objects per image\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "import", "cellpose", str(empty), str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medseg: error:") and "no Cellpose *_seg.npy files" in err and "\n" not in err
