"""Large inputs in ``medseg predict``: lazily read TIFFs, class ids written into the mask's own dtype."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.inference.predictor import Predictor
from medseg.io import read_image, read_label
from medseg.workflows import predict as predict_module


@pytest.fixture(scope="module")
def predictor(trained_run: Path) -> Predictor:
    return Predictor.from_run(trained_run, device="cpu", overrides=["inference.tile=64"])


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    """An uncompressed 150 x 130 RGB TIFF (memory-mappable)."""
    path = tmp_path / "in" / "slide.tif"
    path.parent.mkdir()
    rng = np.random.default_rng(4)
    tifffile.imwrite(path, rng.integers(0, 256, (150, 130, 3), dtype=np.uint8), photometric="rgb")
    return path


def test_labels_out_receives_the_same_class_ids_in_a_smaller_dtype(predictor: Predictor):
    image = np.random.default_rng(5).integers(0, 256, (150, 130, 3), dtype=np.uint8)
    for probabilities in (True, False):  # the whole-map path and the banded path
        expected = predictor.predict(image, probabilities=probabilities).labels
        out = np.full((150, 130), 255, np.uint8)
        result = predictor.predict(image, probabilities=probabilities, labels_out=out)
        assert result.labels is out
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="labels_out"):
        predictor.predict(image, labels_out=np.zeros((150, 129), np.uint8))


@pytest.mark.parametrize("mask_format", ["tif", "png"])
def test_large_tiff_is_mapped_and_its_mask_written_in_its_own_dtype(
    trained_run: Path, predictor: Predictor, slide: Path, tmp_path: Path, monkeypatch, mask_format: str
):
    # pretend 150 x 130 is huge: above the large-image size, overlays capped at 40 pixels a side
    monkeypatch.setattr(predict_module, "LARGE_IMAGE_PIXELS", 100 * 100)
    monkeypatch.setattr(predict_module, "OVERLAY_MAX_SIDE", 40)
    seen = []
    segment = predict_module.segment_image

    def spy(predictor, image, source="image", *, labels_out=None):
        seen.append((image, labels_out))
        return segment(predictor, image, source, labels_out=labels_out)

    monkeypatch.setattr(predict_module, "segment_image", spy)
    out = tmp_path / "out"
    predict_module.predict(
        trained_run, [slide], out, mask_format=mask_format, device="cpu", overrides=["inference.tile=64"]
    )
    ((image, labels_out),) = seen
    assert isinstance(image, np.memmap) and not image.flags.writeable
    assert labels_out.dtype == np.uint8
    assert isinstance(labels_out, np.memmap) == (mask_format == "tif")

    expected = predictor.predict(read_image(slide)).labels
    mask = out / "masks" / f"slide.{mask_format}"
    np.testing.assert_array_equal(read_label(mask), expected)
    if mask_format == "tif":
        assert tifffile.imread(mask).dtype == np.uint8
        assert not list(mask.parent.glob(".*"))  # the atomic write's temporary file is gone
    # every 4th pixel: the smallest step that fits 150 rows into 40
    assert read_image(out / "overlays" / "slide.png").shape == (38, 33, 3)
    with open(out / "summary.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert (int(row["height"]), int(row["width"])) == (150, 130)
    names = predictor.class_names
    fractions = np.bincount(expected.ravel(), minlength=len(names)) / expected.size
    for name, fraction in zip(names, fractions, strict=True):
        assert float(row[f"fraction_{name}"]) == pytest.approx(fraction, abs=1e-5)  # CSV rounding


def test_counts_are_summed_over_row_bands(predictor: Predictor, monkeypatch):
    monkeypatch.setattr(predict_module, "_COUNT_ROWS", 7)
    image = np.random.default_rng(6).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    result = predict_module.segment_image(predictor, image)
    counts = np.bincount(result.labels.ravel(), minlength=len(result.classes))
    assert [c.pixels for c in result.classes] == counts.tolist()
    assert result.overlay.shape == (50, 40, 3)  # small images keep a full-size overlay
