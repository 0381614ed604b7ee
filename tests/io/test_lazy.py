"""open_image_lazily: memory-mapped or decoded tile by tile where the TIFF allows, read_image's values and
errors everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.errors import DataError
from medseg.io import images as images_module
from medseg.io import lazy, read_image, read_label, write_image
from medseg.io.lazy import LazyTiffImage, open_image_lazily


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


# Compressed and tiled TIFFs: decoded tile by tile through tifffile's zarr store

zarr = pytest.importorskip("zarr")


@pytest.fixture
def decode_small(monkeypatch):
    """Treat every compressed/tiled TIFF as large enough to be decoded lazily."""
    monkeypatch.setattr(lazy, "LAZY_DECODE_MIN_PIXELS", 1)


def assert_reads_like_read_image(path: Path, expected: np.ndarray) -> LazyTiffImage:
    image = open_image_lazily(path)
    whole = read_image(path)
    assert isinstance(image, LazyTiffImage), path
    assert (image.shape, image.dtype, image.ndim) == (whole.shape, whole.dtype, whole.ndim)
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(np.asarray(image), whole)
    for key in (np.s_[17:90, 5:61], np.s_[::7, 3::5], np.s_[-30:, :-4], np.s_[40, 2:9], np.s_[0:0, :]):
        part = image[key]
        assert isinstance(part, np.ndarray), key
        np.testing.assert_array_equal(part, whole[key])
    # anything else (new axes, negative steps, index arrays, ndarray methods) on the decoded image
    for key in (np.s_[::-3, 4], np.s_[..., None], np.s_[[0, 5, 2]], np.s_[3:9, [1, 0]]):
        np.testing.assert_array_equal(image[key], whole[key])
    assert image.mean(axis=0).shape == whole.mean(axis=0).shape
    np.testing.assert_array_equal(image.astype(np.float32), whole.astype(np.float32))
    if whole.ndim == 3:
        np.testing.assert_array_equal(image[10:20, 30:33, :], whole[10:20, 30:33, :])
        np.testing.assert_array_equal(image[5:9, 1:40, 1], whole[5:9, 1:40, 1])
    return image


@pytest.mark.usefixtures("decode_small")
@pytest.mark.parametrize("compression", ["zlib", "lzw", "zstd"])
def test_tiled_compressed_rgb_is_decoded_lazily_with_read_images_values(tmp_path, rgb, compression):
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, rgb, tile=(16, 16), compression=compression, photometric="rgb")
    assert_reads_like_read_image(path, rgb)


@pytest.mark.usefixtures("decode_small")
def test_jpeg_tiles_decode_to_read_images_values(tmp_path, rgb):
    pytest.importorskip("imagecodecs")
    path = tmp_path / "jpeg.tif"
    tifffile.imwrite(path, rgb, tile=(16, 16), compression="jpeg", photometric="rgb")
    assert_reads_like_read_image(path, read_image(path))  # lossy: read_image's values are the reference


@pytest.mark.usefixtures("decode_small")
def test_striped_grey_uint16_planar_rgb_and_uncompressed_tiles(tmp_path, rgb):
    grey = np.random.default_rng(3).integers(0, 65536, (70, 33), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "grey.tif", grey, compression="zlib", rowsperstrip=8)
    assert_reads_like_read_image(tmp_path / "grey.tif", grey)
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(
        planar, np.moveaxis(rgb, -1, 0), compression="lzw", photometric="rgb", planarconfig="separate"
    )
    assert_reads_like_read_image(planar, rgb)
    tiled = tmp_path / "tiled.tif"  # uncompressed but tiled: not one contiguous block to map
    tifffile.imwrite(tiled, rgb, tile=(16, 16), photometric="rgb")
    assert_reads_like_read_image(tiled, rgb)


@pytest.mark.usefixtures("decode_small")
def test_pyramidal_ome_tiff_gives_level_zero(tmp_path, rgb):
    path = tmp_path / "pyramid.ome.tif"
    options = {"tile": (16, 16), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(rgb, subifds=2, metadata={"axes": "YXS"}, **options)
        tif.write(rgb[::2, ::2], subfiletype=1, **options)
        tif.write(rgb[::4, ::4], subfiletype=1, **options)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series[0].levels) == 3
    assert_reads_like_read_image(path, rgb)


@pytest.mark.usefixtures("decode_small")
def test_alpha_is_dropped_lazily_only_when_opaque(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "opaque.tif", rgba, tile=(16, 16), compression="zlib", photometric="rgb")
    assert_reads_like_read_image(tmp_path / "opaque.tif", rgb)
    rgba[50, 40, 3] = 3
    tifffile.imwrite(tmp_path / "alpha.tif", rgba, tile=(16, 16), compression="zlib", photometric="rgb")
    assert_reads_like_read_image(tmp_path / "alpha.tif", rgba)


def test_a_slice_decodes_only_the_tiles_it_touches(tmp_path, monkeypatch, decode_small):
    path = tmp_path / "slide.tif"
    image = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib", photometric="rgb")  # 8 x 8 tiles
    reads: list[int] = []
    read = tifffile.zarr.FileCache.read

    def counting_read(self, filehandle, offset, bytecount):
        reads.append(offset)
        return read(self, filehandle, offset, bytecount)

    monkeypatch.setattr(tifffile.zarr.FileCache, "read", counting_read)
    lazy_image = open_image_lazily(path)
    assert reads == []  # opening decodes nothing
    for key, tiles in ((np.s_[40:60, 70:90], 1), (np.s_[20:40, 60:70], 4), (np.s_[:, 100:110], 8)):
        reads.clear()
        np.testing.assert_array_equal(lazy_image[key], image[key])
        assert len(reads) == len(set(reads)) == tiles, key
    reads.clear()
    np.testing.assert_array_equal(lazy_image[::5, ::5], image[::5, ::5])
    assert len(reads) == len(set(reads)) == 64  # a stepped read decodes every tile once
    reads.clear()
    assert lazy_image[..., :2].shape == (256, 256, 2) and np.moveaxis(lazy_image, -1, 0).shape == (
        3,
        256,
        256,
    )
    assert reads == []  # channel selection and moveaxis are views
    np.testing.assert_array_equal(np.moveaxis(lazy_image, -1, 0)[1, 3:9, 4:6], image[3:9, 4:6, 1])


def test_small_files_and_a_missing_zarr_fall_back_to_a_whole_read(tmp_path, rgb, monkeypatch):
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, rgb, tile=(16, 16), compression="zlib", photometric="rgb")
    assert rgb.shape[0] * rgb.shape[1] < lazy.LAZY_DECODE_MIN_PIXELS
    assert isinstance(open_image_lazily(path), np.ndarray)  # below the size worth decoding lazily
    monkeypatch.setattr(lazy, "LAZY_DECODE_MIN_PIXELS", 1)
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)  # "import zarr" raises ImportError
    image = open_image_lazily(path)
    assert isinstance(image, np.ndarray)
    np.testing.assert_array_equal(image, rgb)


@pytest.mark.usefixtures("decode_small")
def test_corrupt_tiles_and_stacks_raise_one_line_data_errors(tmp_path):
    path = tmp_path / "corrupt.tif"
    image = np.random.default_rng(5).integers(0, 256, (64, 64), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[3], tif.pages[0].databytecounts[3]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00" * count)  # the last tile no longer inflates
    lazy_image = open_image_lazily(path)
    np.testing.assert_array_equal(lazy_image[:32, :32], image[:32, :32])  # the other tiles still read
    with pytest.raises(DataError) as info:
        lazy_image[40:50, 40:50]
    assert str(path) in str(info.value) and "cannot read" in str(info.value) and "\n" not in str(info.value)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 30, 30), np.uint8), compression="zlib", metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match="stack"):
        open_image_lazily(stack)


def test_predict_on_a_tiled_compressed_slide_matches_the_same_image_as_png(
    trained_run: Path, tmp_path: Path, monkeypatch, decode_small
):
    from medseg.workflows import predict as predict_module

    # pretend 150 x 130 is huge: tiled by 64, mask filled band by band, overlay every 4th pixel
    monkeypatch.setattr(predict_module, "LARGE_IMAGE_PIXELS", 100 * 100)
    monkeypatch.setattr(predict_module, "OVERLAY_MAX_SIDE", 40)
    image = np.random.default_rng(6).integers(0, 256, (150, 130, 3), dtype=np.uint8)
    slide, png = tmp_path / "tif" / "slide.tif", tmp_path / "png" / "slide.png"
    slide.parent.mkdir(), png.parent.mkdir()
    tifffile.imwrite(slide, image, tile=(32, 32), compression="zlib", photometric="rgb")
    write_image(png, image)
    seen = []
    segment = predict_module.segment_image

    def spy(predictor, image, source="image", *, labels_out=None):
        seen.append(image)
        return segment(predictor, image, source, labels_out=labels_out)

    monkeypatch.setattr(predict_module, "segment_image", spy)
    for source in (slide, png):
        predict_module.predict(
            trained_run,
            [source],
            tmp_path / source.parent.name,
            mask_format="tif",
            device="cpu",
            overrides=["inference.tile=64"],
        )
    assert isinstance(seen[0], LazyTiffImage) and isinstance(seen[1], np.ndarray)
    masks = [read_label(tmp_path / name / "masks" / "slide.tif") for name in ("tif", "png")]
    assert masks[0].shape == (150, 130)
    np.testing.assert_array_equal(masks[0], masks[1])
    overlays = [read_image(tmp_path / name / "overlays" / "slide.png") for name in ("tif", "png")]
    assert overlays[0].shape == (38, 33, 3)
    np.testing.assert_array_equal(overlays[0], overlays[1])


def test_lazy_normalisation_reads_each_tile_once_and_a_crop_only_its_tiles(
    tmp_path, monkeypatch, decode_small
):
    from medseg.transforms import normalize
    from medseg.transforms.normalize import NormalizedImage, normalize_lazily

    path = tmp_path / "slide.tif"
    image = np.random.default_rng(5).integers(0, 4000, (256, 256, 3), dtype=np.uint16)
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib", photometric="rgb")
    reads: list[int] = []
    read = tifffile.zarr.FileCache.read

    def counting_read(self, filehandle, offset, bytecount):
        reads.append(offset)
        return read(self, filehandle, offset, bytecount)

    monkeypatch.setattr(tifffile.zarr.FileCache, "read", counting_read)
    normalised = normalize_lazily(open_image_lazily(path), "percentile", low=1, high=99)
    assert isinstance(normalised, NormalizedImage)
    assert len(reads) == len(set(reads)) == 64  # the histograms read every tile once, all channels at once
    reads.clear()
    np.testing.assert_array_equal(
        normalised[:, 40:60, 70:90], normalize(image, low=1, high=99)[:, 40:60, 70:90]
    )
    assert len(reads) == 1
