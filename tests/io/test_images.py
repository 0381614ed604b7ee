import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

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
        (".tif", np.arange(8 * 9 * 16, dtype=np.uint16).reshape(8, 9, 16)),  # more channels than rows
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


def test_read_label_returns_palette_indices(tmp_path: Path):
    classes = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    mask = Image.fromarray(classes, mode="P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])  # VOC-style colours: class 1 red, class 2 green
    mask.save(tmp_path / "voc.png")
    label = read_label(tmp_path / "voc.png")
    np.testing.assert_array_equal(label, classes)
    assert label.dtype == np.int32
    assert read_image(tmp_path / "voc.png").shape == (2, 3, 3)  # images still expand to RGB


def _png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey+alpha, RGB or RGBA by channel count), each row with the Sub filter."""
    height, width, channels = array.shape
    rows = array.astype(">u2").view(np.uint8).reshape(height, -1)
    step = 2 * channels  # Sub subtracts the same byte of the previous pixel
    filtered = rows.copy()
    filtered[:, step:] -= rows[:, :-step]
    raw = b"".join(b"\x01" + row.tobytes() for row in filtered)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = {2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_read_image_keeps_16_bit_colour_pngs(tmp_path: Path, channels):
    array = np.random.default_rng(3).integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    array[0, 0] = 65535
    array[0, 1] = 256  # high byte 1, low byte 0: wrong if either byte is dropped
    (tmp_path / "x.png").write_bytes(_png16(array))
    back = read_image(tmp_path / "x.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    ("array", "kwargs"),
    [
        (
            np.arange(2 * 50 * 60, dtype=np.uint16).reshape(2, 50, 60),
            {"imagej": True, "metadata": {"axes": "CYX"}},
        ),
        (np.arange(2 * 50 * 60, dtype=np.uint8).reshape(2, 50, 60), {"metadata": {"axes": "CYX"}}),
        (np.arange(2 * 50 * 60, dtype=np.uint8).reshape(2, 50, 60), {}),  # axes QYX: decided by shape
        (np.arange(2 * 50 * 60, dtype=np.uint8).reshape(2, 50, 60), {"planarconfig": "separate"}),  # SYX
        (np.arange(5 * 50 * 60, dtype=np.uint8).reshape(5, 50, 60), {"metadata": None}),  # IYX, no metadata
    ],
)
def test_read_image_moves_tiff_channels_last(tmp_path: Path, array, kwargs):
    tifffile.imwrite(tmp_path / "x.tif", array, photometric="minisblack", **kwargs)
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif"), np.moveaxis(array, 0, -1))


@pytest.mark.parametrize("shape", [(50, 60, 7), (50, 60, 2), (5, 6, 2)])
def test_read_image_keeps_tiff_channels_last(tmp_path: Path, shape):
    array = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    tifffile.imwrite(tmp_path / "x.tif", array)  # no axes recorded (axes QYX), as older medseg wrote them
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif"), array)


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        (
            (5, 50, 60),
            {"imagej": True, "metadata": {"axes": "ZYX"}},
            r"stack of shape \(5, 50, 60\) \(axes ZYX\)",
        ),
        (
            (5, 50, 60),
            {"imagej": True, "metadata": {"axes": "TYX"}},
            r"stack of shape \(5, 50, 60\) \(axes TYX\)",
        ),
        ((30, 50, 60), {}, r"stack of shape \(30, 50, 60\)"),
        (
            (4, 2, 50, 60),
            {"imagej": True, "metadata": {"axes": "ZCYX"}},
            r"array of shape \(4, 2, 50, 60\) \(axes ZCYX\)",
        ),
    ],
)
def test_read_image_refuses_tiff_stacks(tmp_path: Path, shape, kwargs, message):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros(shape, np.uint16), **kwargs)
    with pytest.raises(DataError, match=r"stack.tif: expected a 2D image, got an? " + message):
        read_image(tmp_path / "stack.tif")


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
