from pathlib import Path

import numpy as np
import pytest

from medseg.errors import DataError
from medseg.io import atomic_path, read_image, read_label, write_image, write_json_atomic


@pytest.mark.parametrize(
    ("suffix", "array"),
    [
        (".png", np.arange(12, dtype=np.uint8).reshape(3, 4)),
        (".png", (np.arange(36, dtype=np.uint8) * 7).reshape(3, 4, 3)),
        (".png", np.array([[0, 1000], [65535, 7]], dtype=np.uint16)),
        (".tif", np.array([[0, 70000], [3, 7]], dtype=np.int32)),
        (".tif", np.random.default_rng(0).random((5, 6, 2)).astype(np.float32)),
    ],
)
def test_write_read_round_trip(tmp_path: Path, suffix, array):
    path = write_image(tmp_path / f"x{suffix}", array)
    back = read_image(path)
    np.testing.assert_array_equal(back, array)


def test_read_image_errors_name_the_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"corrupt.png: cannot read image"):
        read_image(bad)
    good = write_image(tmp_path / "good.png", np.zeros((64, 64, 3), np.uint8) + 100)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"truncated.png: cannot read image"):
        read_image(truncated)
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    with pytest.raises(DataError, match="unsupported image type"):
        read_image(other)


def test_read_label_accepts_grey_rgb_and_rejects_colour(tmp_path: Path):
    grey = np.array([[0, 1], [2, 1]], np.uint8)
    write_image(tmp_path / "g.png", np.stack([grey] * 3, axis=-1))
    np.testing.assert_array_equal(read_label(tmp_path / "g.png"), grey)
    assert read_label(tmp_path / "g.png").dtype == np.int32
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    write_image(tmp_path / "c.png", colour)
    with pytest.raises(DataError, match="c.png: label mask has 3 colour channels"):
        read_label(tmp_path / "c.png")
    write_image(tmp_path / "f.tif", np.array([[0.5, 1.0]], np.float32))
    with pytest.raises(DataError, match="non-integer"):
        read_label(tmp_path / "f.tif")


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_json_writes_nan_as_null(tmp_path: Path):
    write_json_atomic(tmp_path / "m.json", {"x": float("nan"), "y": [1.0, float("nan")]})
    assert '"x": null' in (tmp_path / "m.json").read_text()
