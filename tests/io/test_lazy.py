"""open_image_lazily: memory-mapped where the TIFF allows, read_image's values and errors everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.errors import DataError
from medseg.io import images as images_module
from medseg.io import read_image, write_image
from medseg.io.lazy import open_image_lazily


def is_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a numpy.memmap or a view of one."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base if isinstance(array.base, np.ndarray) else None
    return False


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (60, 45, 3), dtype=np.uint8)


def test_uncompressed_interleaved_rgb_is_mapped_read_only(tmp_path: Path, rgb: np.ndarray):
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    image = open_image_lazily(path)
    assert is_mapped(image)
    assert not image.flags.writeable
    assert image.shape == (60, 45, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, rgb)
    np.testing.assert_array_equal(image, read_image(path))


def test_planar_and_ome_tiffs_come_back_channels_last(tmp_path: Path, rgb: np.ndarray):
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    ome = tmp_path / "slide.ome.tif"
    tifffile.imwrite(ome, np.moveaxis(rgb, -1, 0), photometric="minisblack", metadata={"axes": "CYX"})
    for path in (planar, ome):
        image = open_image_lazily(path)
        assert is_mapped(image), path
        assert image.shape == (60, 45, 3)
        np.testing.assert_array_equal(image, rgb)
        np.testing.assert_array_equal(image, read_image(path))


def test_grey_uint16_and_big_endian_values_match_read_image(tmp_path: Path):
    grey = np.random.default_rng(1).integers(0, 65536, (33, 70), dtype=np.uint16)
    for byteorder in ("<", ">"):
        path = tmp_path / f"grey{byteorder == '>'}.tif"
        tifffile.imwrite(path, grey, byteorder=byteorder)
        image = open_image_lazily(path)
        assert is_mapped(image) and image.shape == (33, 70)
        np.testing.assert_array_equal(image, grey)


def test_compressed_tiff_and_png_fall_back_to_a_whole_read(tmp_path: Path, rgb: np.ndarray):
    for name in ("zlib.tif", "image.png"):
        write_image(tmp_path / name, rgb)  # write_image compresses TIFFs
        image = open_image_lazily(tmp_path / name)
        assert not is_mapped(image), name
        np.testing.assert_array_equal(image, rgb)


def test_opaque_alpha_is_dropped_and_a_translucent_pixel_in_a_later_band_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "_ALPHA_ROWS", 4)  # several bands in a small image
    rgba = np.full((20, 10, 4), 255, np.uint8)
    rgba[..., :3] = np.random.default_rng(2).integers(0, 256, (20, 10, 3))
    tifffile.imwrite(tmp_path / "opaque.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    opaque = open_image_lazily(tmp_path / "opaque.tif")
    assert is_mapped(opaque) and opaque.shape == (20, 10, 3)
    rgba[17, 3, 3] = 254
    tifffile.imwrite(tmp_path / "alpha.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert open_image_lazily(tmp_path / "alpha.tif").shape == (20, 10, 4)
    assert read_image(tmp_path / "alpha.tif").shape == (20, 10, 4)


def test_unreadable_files_raise_one_line_data_errors(tmp_path: Path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\xff" * 20)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 30, 30), np.uint8), metadata={"axes": "ZYX"})
    for path, words in (
        (tmp_path / "missing.tif", "file not found"),
        (broken, "cannot read"),
        (stack, "stack"),
    ):
        with pytest.raises(DataError) as info:
            open_image_lazily(path)
        message = str(info.value)
        assert str(path) in message and words in message and "\n" not in message
