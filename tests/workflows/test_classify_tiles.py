"""Per-tile classification of large images: the grid, agreement with whole-image prediction, the CLI."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.config import Config, load_config, save_config
from medseg.errors import ConfigError
from medseg.inference.sliding_window import tile_starts
from medseg.io import open_image_lazily, read_image, write_image
from medseg.workflows.classify import ClassificationPredictor, build_classifier
from medseg.workflows.classify_tiles import (
    GRID_COLOR,
    classify_tiles,
    grid_starts,
    tile_colors,
    tile_overlay,
)

NAMES = ["dark", "bright"]


def classify_config(*overrides: str) -> Config:
    return load_config(
        None,
        [
            "task=classify",
            "model.name=simple_cnn_tiny",
            "classify.image_size=16",
            "data.labels={dark: 0, bright: 1}",
            *overrides,
        ],
    )


def brightness_classifier(config: Config) -> torch.nn.Module:
    """simple_cnn_tiny wired by hand to say ``bright`` when a tile's mean intensity is above 0.5.

    Every conv passes channel 0 through (centre tap 1), batch norm is the identity, so the pooled feature
    0 is the mean of the (max-pooled) input; the head turns it into logits ``(+-40) * (mean - 0.5)``.
    """
    model = build_classifier(config, pretrained=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("encoder") and param.ndim == 4:
                param.zero_()
                param[0, 0, 1, 1] = 1.0
        model.head.weight.zero_()
        model.head.weight[:, 0] = torch.tensor([-20.0, 20.0])
        model.head.bias.copy_(torch.tensor([10.0, -10.0]))
    return model.eval()


def halves_image(rng: np.random.Generator, shape=(48, 96)) -> np.ndarray:
    """uint8 ``shape``: the left half dark (about 50), the right half bright (about 200), noisy."""
    image = np.where(np.arange(shape[1]) < shape[1] // 2, 50, 200) + rng.normal(0, 10, shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def brightness_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification run folder holding :func:`brightness_classifier` (raw intensities: no
    normalisation, one channel), read-only."""
    from medseg.engine.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("runs") / "bright"
    config = classify_config("data.in_channels=1", "data.normalization=none")
    save_config(config, run / "config.yaml")
    save_checkpoint(run / "checkpoints" / "best.pt", {"model": brightness_classifier(config).state_dict()})
    return run


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class TileReads:
    """An image that only hands out tile-sized reads (and counts them): proves nothing reads it whole."""

    def __init__(self, array: np.ndarray, tile: int) -> None:
        self.array, self.tile, self.reads = array, tile, 0
        self.shape, self.ndim, self.dtype = array.shape, array.ndim, array.dtype

    def __getitem__(self, key):
        part = self.array[key]
        assert part.shape[0] <= self.tile and part.shape[1] <= self.tile, f"read {part.shape}"
        self.reads += 1
        return part


def test_grid_starts_cover_non_multiple_sizes_and_match_tile_starts():
    assert grid_starts(100, 32, 32) == [0, 23, 45, 68]
    assert grid_starts(96, 32, 32) == [0, 32, 64]
    assert grid_starts(40, 32, 16) == [0, 8] and grid_starts(20, 32, 32) == [0]
    for size in range(16, 200, 7):
        for tile in (16, 24, 64):
            starts = grid_starts(size, tile, tile)
            assert starts == tile_starts(size, tile, 0.0)
            assert starts[0] == 0 and starts[-1] == max(0, size - tile)
            assert all(0 < b - a <= tile for a, b in itertools.pairwise(starts))
            for stride in (1, 5, tile // 2):  # exact where tile_starts' overlap fraction would round
                strided = grid_starts(size, tile, stride)
                assert len(strided) == (max(size - tile, 0) + stride - 1) // stride + 1
                assert all(0 < b - a <= stride for a, b in itertools.pairwise(strided))


def test_each_tile_gets_the_probabilities_predict_gives_that_crop(rng):
    torch.manual_seed(0)
    config = classify_config("data.in_channels=3")  # percentile normalisation, per tile as per image
    predictor = ClassificationPredictor(build_classifier(config, pretrained=False), config)
    image = rng.integers(0, 255, (28, 44, 3), dtype=np.uint8)
    result = classify_tiles(predictor, image, batch_size=5)
    assert result.starts == ([0, 12], [0, 14, 28]) and result.grid_shape == (2, 3)
    assert result.probabilities.shape == (2, 2, 3) and result.probabilities.dtype == np.float32
    assert result.tile == result.stride == 16 and result.class_names == NAMES
    for r, y in enumerate(result.starts[0]):
        for c, x in enumerate(result.starts[1]):
            expected = predictor.predict(image[y : y + 16, x : x + 16]).probabilities
            np.testing.assert_allclose(result.probabilities[:, r, c], expected, atol=1e-5)
    whole = classify_tiles(predictor, image[:16, 14:30])  # an image of exactly one tile
    np.testing.assert_allclose(whole.probabilities[:, 0, 0], result.probabilities[:, 0, 1], atol=1e-6)
    # another tile size is resized to the input size (classify.fit), with TTA as predict does it
    tta = ClassificationPredictor(
        predictor.model, classify_config("data.in_channels=3", "inference.tta=true")
    )
    resized = classify_tiles(tta, image[:, :32], tile=20, stride=12)
    assert resized.starts == ([0, 8], [0, 12]) and resized.stride == 12
    np.testing.assert_allclose(
        resized.probabilities[:, 1, 1], tta.predict(image[8:28, 12:32]).probabilities, atol=1e-5
    )


def test_two_halves_get_their_class_and_the_maps_follow_the_tiles(rng):
    config = classify_config("data.in_channels=1", "data.normalization=none")
    predictor = ClassificationPredictor(brightness_classifier(config), config)
    image = halves_image(rng)
    reader = TileReads(image, 16)
    result = classify_tiles(predictor, reader, batch_size=4)
    assert reader.reads == 3 * 6  # one read per tile, none larger than a tile
    assert result.classes.tolist() == [[0, 0, 0, 1, 1, 1]] * 3
    assert result.fractions() == {"dark": 0.5, "bright": 0.5}
    assert (result.probabilities.max(axis=0) > 0.99).all()
    labels = result.class_map()
    assert labels.shape == image.shape and labels.dtype == np.uint8
    assert (labels[:, :48] == 0).all() and (labels[:, 48:] == 1).all()
    probs = result.probability_map(step=4)
    assert probs.shape == (2, 12, 24)
    np.testing.assert_allclose(probs[:, 5, 20], result.probabilities[:, 1, 5])
    # overlapping tiles: each pixel belongs to the tile with the nearest centre
    odd = classify_tiles(predictor, image[:, :90], stride=8)
    _, cols = odd.pixel_tiles()
    assert odd.starts[1][-1] == 74 and cols[0] == 0 and cols[-1] == len(odd.starts[1]) - 1
    centres = np.asarray(odd.starts[1]) + 8
    assert (
        np.abs(centres[cols] - (np.arange(90) + 0.5)) <= np.abs(centres[:, None] - np.arange(90) - 0.5).min(0)
    ).all()
    assert (odd.class_map()[:, :40] == 0).all() and (odd.class_map()[:, 56:] == 1).all()


def test_overlay_tints_tiles_draws_the_grid_and_a_legend(rng):
    config = classify_config("data.in_channels=1", "data.normalization=none")
    result = classify_tiles(ClassificationPredictor(brightness_classifier(config), config), halves_image(rng))
    colors = tile_colors(NAMES, {"bright": [255, 0, 0]})
    assert colors[1] == (255, 0, 0) and colors[0] != (0, 0, 0)
    grey = np.full((48, 96), 128, np.uint8)
    overlay = tile_overlay(grey, result, colors=colors, alpha=0.5)
    assert overlay.shape[0] > 48 and overlay.shape[1] >= 96 and overlay.dtype == np.uint8
    assert overlay[8, 70].tolist() == [192, 64, 64]  # half grey, half red
    assert overlay[8, 8].tolist() == [round((128 + v) / 2) for v in colors[0]]
    assert overlay[16, 5].tolist() == list(GRID_COLOR) and overlay[5, 32].tolist() == list(GRID_COLOR)
    assert (overlay[48:, :].min(axis=-1) < 200).any()  # the legend's swatches and text
    small = tile_overlay(grey, result, step=4, legend=False)
    assert small.shape == (12, 24, 3)


def test_bad_tile_sizes_are_config_errors(rng):
    config = classify_config("data.in_channels=1", "data.normalization=none")
    predictor = ClassificationPredictor(brightness_classifier(config), config)
    image = halves_image(rng)
    for kwargs in ({"tile": 0}, {"tile": -16}, {"tile": 2.5}, {"stride": 0}, {"tile": 16, "stride": 17}):
        with pytest.raises(ConfigError, match="tile"):
            classify_tiles(predictor, image, **kwargs)
    with pytest.raises(ConfigError, match="batch size"):
        classify_tiles(predictor, image, batch_size=0)


def test_cli_writes_tile_csv_map_overlay_and_summary(brightness_run: Path, rng, tmp_path: Path, capsys):
    import tifffile

    image = halves_image(rng, (40, 96))
    write_image(tmp_path / "in" / "slide.png", image)
    tifffile.imwrite(tmp_path / "in" / "big.tif", image)  # uncompressed: memory-mapped
    assert isinstance(open_image_lazily(tmp_path / "in" / "big.tif"), np.memmap)
    out = tmp_path / "out"
    assert main(["predict", str(brightness_run), str(tmp_path / "in"), "--out", str(out), "--tiles"]) == 0
    assert "predictions.csv" in capsys.readouterr().out
    summary = {Path(r["file"]).name: r for r in read_csv(out / "predictions.csv")}
    assert set(summary) == {"slide.png", "big.tif"}
    for stem in ("big", "slide"):
        row = summary[f"{stem}.{'tif' if stem == 'big' else 'png'}"]
        assert row["tiles"] == "18" and (row["grid_rows"], row["grid_cols"]) == ("3", "6")
        assert float(row["fraction_dark"]) == pytest.approx(0.5) and row["tiles_csv"] == f"tiles/{stem}.csv"
        tiles = read_csv(out / "tiles" / f"{stem}.csv")
        assert list(tiles[0])[:6] == ["row", "col", "y", "x", "class", "probability"]
        assert list(tiles[0])[6:] == ["p_dark", "p_bright"] and len(tiles) == 18
        assert [(t["y"], t["x"]) for t in tiles[:6]] == [("0", str(x)) for x in (0, 16, 32, 48, 64, 80)]
        assert tiles[7]["y"] == "12" and tiles[-1]["y"] == "24"
        assert [t["class"] for t in tiles[:6]] == ["dark"] * 3 + ["bright"] * 3
        labels = read_image(out / "tiles" / f"{stem}_map.png")
        assert labels.shape == (40, 96) and (labels[:, :48] == 0).all() and (labels[:, 48:] == 1).all()
        overlay = read_image(out / "tiles" / f"{stem}_overlay.png")
        assert overlay.shape[0] > 40 and overlay.shape[1] >= 96 and overlay.shape[2] == 3
    # --tiles SIZE overrides the input size (each 40 px tile resized to 16)
    assert (
        main(
            [
                "predict",
                str(brightness_run),
                str(tmp_path / "in" / "big.tif"),
                "--out",
                str(out / "b"),
                "--tiles",
                "40",
            ]
        )
        == 0
    )
    assert [(r["tile"], r["tiles"]) for r in read_csv(out / "b" / "predictions.csv")] == [("40", "3")]


def test_cli_tiles_errors_are_one_line(brightness_run: Path, rng, tmp_path: Path, capsys):
    write_image(tmp_path / "a.png", halves_image(rng))
    semantic = tmp_path / "seg"
    save_config(load_config(None, []), semantic / "config.yaml")
    assert (
        main(["predict", str(semantic), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--tiles"])
        == 2
    )
    err = capsys.readouterr().err
    assert "segmentation run" in err and "--tiles" in err and len(err.strip().splitlines()) == 1
    predict = ["predict", str(brightness_run), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]
    for size in ("0", "-3", "x"):  # argparse's usage error: exit code 2, one line after the usage
        with pytest.raises(SystemExit) as exc:
            main([*predict, "--tiles", size])
        assert exc.value.code == 2
        assert f"argument --tiles: tile size '{size}' is not a whole number" in capsys.readouterr().err
    assert not (tmp_path / "o" / "predictions.csv").exists()
