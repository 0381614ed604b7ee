"""Tests for the images/ + masks/ folder importer (class-id and colour masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.cli import main
from medseg.data.dataset import check_dataset, load_image, load_label, open_dataset
from medseg.data.importers import IMPORTERS, import_folders
from medseg.errors import ConfigError, DataError, MedsegError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _rgb(seed: int, h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ids(seed: int, h: int = 12, w: int = 10, classes: int = 3) -> np.ndarray:
    ids = np.zeros((h, w), np.uint8)
    rng = np.random.default_rng(seed)
    for k in range(1, classes):
        r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
        ids[r : r + 4, c : c + 4] = k
    return ids


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _colour(ids: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array(colours, np.uint8)[ids]


def _nothing_written(tmp_path: Path, *keep: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_class_id_masks_with_a_suffix_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    images, masks = {}, {}
    for i, name in enumerate(["p01_a", "p01_b", "p02_a"]):
        images[name] = _rgb(i)
        masks[name] = _ids(i)
        _save(src / "images" / f"{name}.png", images[name])
        _save(src / "masks" / f"{name}_mask.png", masks[name])
    dst = import_folders(
        src, tmp_path / "ds", labels=["background", "tumour", "stroma"], group_by="^(p\\d+)_"
    )
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "tumour": 1, "stroma": 2}
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert meta["file_ending"] == ".png" and meta["numTraining"] == 3
    assert meta["medseg"]["task"] == "semantic" and meta["medseg"]["group_by"] == "^(p\\d+)_"
    assert "masks paired by file stem with suffix _mask" in meta["medseg"]["notes"]
    assert "2 groups by --group-by '^(p\\d+)_'" in meta["medseg"]["notes"]
    dataset = open_dataset(dst)
    assert [c.name for c in dataset.cases] == ["p01_a", "p01_b", "p02_a"]
    for case in dataset.cases:
        np.testing.assert_array_equal(load_image(case), images[case.name])
        np.testing.assert_array_equal(load_label(case), masks[case.name])
    report = check_dataset(dst)
    assert report.ok, report.problems
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_inferred_palette_orders_colours_black_first_then_by_rgb(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # ids in the palette order the importer must infer: black, (0,255,0) < (255,0,0) as 0xRRGGBB
    truth = {"a": _ids(1), "b": _ids(2)}
    _save(src / "images" / "a.jpg", _rgb(1)[..., 0], quality=95)  # grey JPEG images
    _save(src / "images" / "b.jpg", _rgb(2)[..., 0], quality=95)
    _save(src / "masks" / "a.png", _colour(truth["a"], [(0, 0, 0), GREEN, RED]))
    _save(src / "masks" / "b.png", _colour(truth["b"], [(0, 0, 0), GREEN, RED]))
    dst = import_folders(src, tmp_path / "ds")
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "class_1": 1, "class_2": 2}
    assert meta["medseg"]["colors"] == {"background": [0, 0, 0], "class_1": list(GREEN), "class_2": list(RED)}
    assert meta["channel_names"] == {"0": "grey"}
    for case in open_dataset(dst).cases:
        np.testing.assert_array_equal(load_label(case), truth[case.name])
        decoded = np.asarray(Image.open(src / "images" / f"{case.name}.jpg"))
        np.testing.assert_array_equal(load_image(case)[..., 0], decoded)  # JPEG pixels kept losslessly
    assert check_dataset(dst).ok
    # --labels names the inferred colours in id order
    named = import_folders(src, tmp_path / "named", labels=["bg", "green", "red"])
    assert json.loads((named / "dataset.json").read_text())["labels"] == {"bg": 0, "green": 1, "red": 2}


def test_given_palette_sets_ids_and_grey_masks_count_as_colours(tmp_path: Path) -> None:
    src = tmp_path / "src"
    ids = _ids(3, classes=3)
    _save(src / "images" / "x.bmp", _rgb(3))
    _save(src / "labels" / "x_label.png", _colour(ids, [(0, 0, 0), BLUE, RED]))  # labels/ folder works too
    binary = (ids > 0).astype(np.uint8) * 255
    _save(src / "images" / "y.png", _rgb(4))
    _save(src / "labels" / "y.png", binary)  # grey 255 = white
    dst = import_folders(
        src, tmp_path / "ds", palette="background=0,0,0; tumour=255,0,0; vessel=0,0,255; all=255,255,255"
    )
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "tumour": 1, "vessel": 2, "all": 3}
    dataset = open_dataset(dst)
    expected_x = np.select([ids == 1, ids == 2], [2, 1], 0)  # blue -> vessel (2), red -> tumour (1)
    np.testing.assert_array_equal(load_label(dataset.case("x")), expected_x)
    np.testing.assert_array_equal(load_label(dataset.case("y")), (ids > 0) * 3)
    assert check_dataset(dst).ok


def test_binary_255_masks_palette_pngs_and_16_bit_tiffs(tmp_path: Path) -> None:
    src = tmp_path / "bin"
    ids = _ids(5, classes=2)
    _save(src / "images" / "c.png", _rgb(5))
    _save(src / "masks" / "c_seg.png", ids * 255)
    dst = import_folders(src, tmp_path / "ds")
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "class_1": 1}
    assert "binary masks: value 255 read as class 1" in meta["medseg"]["notes"]
    np.testing.assert_array_equal(load_label(open_dataset(dst).case("c")), ids)

    src = tmp_path / "pal"
    indexed = Image.fromarray(_ids(6))
    indexed.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # VOC-style palette PNG
    (src / "masks").mkdir(parents=True)
    indexed.save(src / "masks" / "v.png")
    image16 = np.random.default_rng(6).integers(0, 65535, (12, 10), dtype=np.uint16)
    (src / "images").mkdir()
    tifffile.imwrite(src / "images" / "v.tif", image16)
    dst = import_folders(src, tmp_path / "ds2")
    meta = json.loads((dst / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "class_1": 1, "class_2": 2}  # indices, not colours
    assert meta["file_ending"] == ".png"  # 16-bit grey fits PNG
    case = open_dataset(dst).case("v")
    np.testing.assert_array_equal(load_label(case), _ids(6))
    np.testing.assert_array_equal(load_image(case)[..., 0], image16)

    src = tmp_path / "float"
    _save(src / "masks" / "f.png", _ids(7))
    (src / "images").mkdir()
    tifffile.imwrite(src / "images" / "f.tif", np.linspace(0, 1, 120, dtype=np.float32).reshape(12, 10))
    dst = import_folders(src, tmp_path / "ds3")
    assert json.loads((dst / "dataset.json").read_text())["file_ending"] == ".tif"
    assert load_image(open_dataset(dst).case("f")).dtype == np.float32


def _pair(
    src: Path,
    name: str = "a",
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    mask_name: str | None = None,
) -> None:
    _save(src / "images" / f"{name}.png", _rgb(0) if image is None else image)
    _save(src / "masks" / (mask_name or f"{name}.png"), _ids(0) if mask is None else mask)


def _photo(h: int = 12, w: int = 10) -> np.ndarray:
    return _rgb(9, h, w)


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "message"),
    [
        (
            lambda s: _pair(s, mask=_ids(0, h=11)),
            {},
            DataError,
            r"masks/a\.png: mask is 10x11 but image .*images/a\.png is 10x12",
        ),
        (
            lambda s: (
                _pair(s),
                _save(s / "images" / "lonely.png", _rgb(1)),
                _save(s / "masks" / "stray_gt.png", _ids(1)),
            ),
            {},
            DataError,
            r"unpaired files; 1 image\(s\) without a mask: .*lonely\.png; "
            r"1 mask\(s\) without an image: .*stray_gt\.png",
        ),
        (
            lambda s: _pair(s, mask=_photo()),
            {},
            DataError,
            r"masks/a\.png: .*distinct colours.* \(looks like a photo, not a mask\)",
        ),
        (
            lambda s: (
                _pair(s),
                _save(s / "masks" / "a.jpg", _colour(_ids(0), [(0, 0, 0), RED, GREEN]), quality=60),
                (s / "masks" / "a.png").unlink(),
            ),
            {},
            DataError,
            r"masks/a\.jpg: .*JPEG compression blends neighbouring colours; save masks as PNG",
        ),
        (
            lambda s: _pair(s, mask=_colour(_ids(0), [(0, 0, 0), RED, GREEN])),
            {"palette": "bg=0,0,0;red=255,0,0"},
            DataError,
            r"masks/a\.png: colours not in --palette: \(0,255,0\)",
        ),
        (
            lambda s: _pair(s),
            {"labels": ["bg", "one"]},
            DataError,
            r"masks/a\.png: mask values \[2\] are not ids of --labels",
        ),
        (
            lambda s: _pair(s, mask=_ids(0) * 40),
            {},
            DataError,
            r"masks/a\.png: mask values up to 80 without --labels",
        ),
        (
            lambda s: _pair(s),
            {"palette": "background:0,0,0"},
            ConfigError,
            r"--palette: 'background:0,0,0' is not name=R,G,B",
        ),
        (lambda s: _pair(s), {"palette": "a=0,0,0;b=0,0,0"}, ConfigError, r"repeats a class name or colour"),
        (
            lambda s: (_pair(s), _pair(s, "b", image=_rgb(2)[..., 0])),
            {},
            DataError,
            r"images disagree on channel count",
        ),
        (
            lambda s: (_pair(s), _save(s / "images" / "a.jpg", _rgb(3))),
            {},
            DataError,
            r"a\.png: has the same name as a\.jpg",
        ),
        (lambda s: _pair(s), {"group_by": "^(patient"}, ConfigError, r"--group-by: invalid regex"),
    ],
)
def test_bad_input_raises_one_clear_error_and_writes_nothing(
    tmp_path: Path, setup, kwargs: dict, error: type, message: str
) -> None:
    src = tmp_path / "src"
    setup(src)
    with pytest.raises(error, match=message) as info:
        import_folders(src, tmp_path / "out", **kwargs)
    assert "\n" not in str(info.value)
    _nothing_written(tmp_path, "src")


def test_a_late_unreadable_image_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _pair(src, "a")
    _pair(src, "b")
    (src / "images" / "b.png").write_bytes((src / "images" / "b.png").read_bytes()[:60])  # truncated
    with pytest.raises(DataError, match=r"images/b\.png: cannot read image"):
        import_folders(src, tmp_path / "out")
    _nothing_written(tmp_path, "src")


def test_cli_imports_folders_and_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    assert IMPORTERS["folders"] is import_folders
    src = tmp_path / "src"
    _pair(src, "a", mask=_colour(_ids(0), [(0, 0, 0), RED, GREEN]))
    dst = tmp_path / "ds"
    assert (
        main(["data", "import", "folders", str(src), str(dst), "--palette", "bg=0,0,0;g=0,255,0;r=255,0,0"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(f"imported 1 cases to {dst}: classes bg, g, r\n")
    assert "colour masks mapped with the given palette (3 classes)" in out
    assert main(["data", "check", str(dst)]) == 0
    capsys.readouterr()
    assert main(["data", "import", "folders", str(src), str(tmp_path / "d2"), "--labels", "bg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medseg: error:") and "--labels gives 1 names but the masks hold 3 colours" in err
    assert "\n" not in err
    with pytest.raises(MedsegError):  # the same through the Python API
        import_folders(src, tmp_path / "d3", labels=["bg"])
