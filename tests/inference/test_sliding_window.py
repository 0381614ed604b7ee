import math

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.inference.sliding_window import (
    importance_map,
    sliding_window,
    sliding_window_bands,
    tile_starts,
    with_flip_tta,
)
from medseg.transforms.normalize import normalize, normalize_lazily


class Recorder:
    """A tile predictor that applies ``module`` and records the shape of every batch it is given."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(images.shape))
        return self.module(images)


def conv(kernel: int, seed: int = 0, channels: int = 3, classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    layer = torch.nn.Conv2d(channels, classes, kernel, padding=kernel // 2)
    torch.nn.init.normal_(layer.weight, std=2.0)
    return layer.eval()


def whole_image(module: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(module(torch.from_numpy(image)[None]), dim=1)[0].numpy()


def random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize(
    ("height", "width", "tile"),
    [(300, 170, 128), (256, 256, 128), (129, 64, 64), (50, 30, 128), (5, 9, 64), (300, 40, 64)],
)
def test_pointwise_model_tiled_equals_whole_image(height: int, width: int, tile: int):
    # a 1x1 conv sees no neighbours, so blending per-tile softmaxes must give the whole-image softmax,
    # and any misplaced tile, or padding left in the output, would show
    image = random_image((3, height, width))
    model = Recorder(conv(1))
    probs = sliding_window(image, model, tile)
    assert probs.shape == (4, height, width)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, whole_image(model.module, image), atol=2e-6)
    assert all(shape[-2:] == (tile, tile) for shape in model.shapes)  # small images are padded to the tile


def test_tile_count_and_batches():
    model = Recorder(conv(1))
    sliding_window(random_image((3, 300, 170)), model, 128, overlap=0.25, batch_size=4)
    rows, cols = tile_starts(300, 128, 0.25), tile_starts(170, 128, 0.25)
    assert (rows, cols) == ([0, 86, 172], [0, 42])
    assert [shape[0] for shape in model.shapes] == [4, 2]


def test_rectangular_tiles():
    image = random_image((3, 300, 70))
    model = Recorder(conv(1))
    probs = sliding_window(image, model, (96, 72))
    np.testing.assert_allclose(probs, whole_image(model.module, image), atol=2e-6)
    assert {shape[-2:] for shape in model.shapes} == {(96, 72)}


@pytest.mark.parametrize("size", [1, 63, 64, 65, 100, 128, 129, 300, 1000])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiles_cover_every_pixel_with_the_requested_overlap(size: int, overlap: float):
    tile = 64
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, size - tile)
    covered = np.zeros(size, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all()
    gaps = np.diff(starts)
    assert (gaps <= tile * (1 - overlap)).all()


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_every_pixel_gets_weight(blend: str):
    # a predictor of constant probability 1 blends to exactly 1 everywhere; an uncovered or zero-weight
    # pixel would be 0/0 = nan, a seam counted twice would still average to 1 but a missing one would not
    def ones(images: torch.Tensor) -> torch.Tensor:
        return torch.ones(images.shape[0], 2, *images.shape[-2:])

    probs = sliding_window(random_image((1, 333, 201)), ones, 64, blend=blend, softmax=False)
    np.testing.assert_allclose(probs, 1.0, rtol=1e-6)


def test_gaussian_importance_map():
    weights = importance_map((64, 96))
    assert weights.shape == (64, 96)
    assert weights.dtype == np.float32
    assert weights.min() > 0
    assert weights.max() == pytest.approx(np.exp(-0.5 * (0.5 / 8) ** 2 - 0.5 * (0.5 / 12) ** 2), rel=1e-6)
    # sigma = tile / 8 along each axis: one sigma from the centre of the rows the weight drops by exp(-1/2)
    centre_row, centre_col = 31.5, 47.5
    row = np.exp(-0.5 * ((np.arange(64) - centre_row) / 8) ** 2)
    col = np.exp(-0.5 * ((np.arange(96) - centre_col) / 12) ** 2)
    np.testing.assert_allclose(weights, np.outer(row, col), rtol=1e-5)
    assert importance_map((1024, 1024)).min() > 0


def test_gaussian_blend_favours_tile_centres():
    # a predictor that is confident in tile centres and wrong at tile borders: gaussian blending
    # lets the centres win where tiles overlap, plain averaging does not
    def centre_biased(images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        rows = torch.arange(h).sub((h - 1) / 2).abs().view(h, 1)
        cols = torch.arange(w).sub((w - 1) / 2).abs().view(1, w)
        border = ((rows > h / 4) | (cols > w / 4)).float()
        return torch.stack([1 - border, border]).expand(n, 2, h, w).float()

    image = random_image((1, 160, 160))
    gaussian = sliding_window(image, centre_biased, 64, overlap=0.5, softmax=False)
    constant = sliding_window(image, centre_biased, 64, overlap=0.5, blend="constant", softmax=False)
    inner = (slice(None), slice(32, 128), slice(32, 128))
    assert gaussian[inner][0].mean() > constant[inner][0].mean() + 0.1


def test_batch_size_does_not_change_the_result():
    image = random_image((3, 200, 150))
    model = conv(5, seed=1)
    results = [sliding_window(image, model, 64, batch_size=b) for b in (1, 3, 64)]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], atol=1e-6)


def test_neighbourhood_model_matches_whole_image_away_from_tile_borders():
    # a 5x5 conv differs from the whole-image result only within 2 px of a tile edge that is not an
    # image edge; the gaussian gives those pixels tiny weight where another tile covers them
    # (plain averaging is off by up to 0.75 here)
    image = random_image((3, 160, 160), seed=2)
    model = conv(5, seed=3)
    error = np.abs(sliding_window(image, model, 64, overlap=0.5) - whole_image(model, image))
    assert error.max() < 0.01
    assert error.mean() < 1e-4


def test_invalid_arguments():
    image = random_image((1, 32, 32))
    model = conv(1, channels=1)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window(image, model, 16, overlap=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        sliding_window(image, model, 16, batch_size=0)
    with pytest.raises(ConfigError, match="blend: 'median'"):
        sliding_window(image, model, 16, blend="median")
    with pytest.raises(ValueError, match=r"expected \(C, H, W\)"):
        sliding_window(image[0], model, 16)


def test_tta_of_an_equivariant_model_changes_nothing():
    images = torch.from_numpy(random_image((2, 3, 40, 40)))
    model = conv(1)
    with torch.inference_mode():
        plain = torch.softmax(model(images), dim=1)
        np.testing.assert_allclose(with_flip_tta(model)(images), plain, atol=1e-6)
        np.testing.assert_allclose(with_flip_tta(model)(images[..., :31]), plain[..., :31], atol=1e-6)


@pytest.mark.parametrize("width", [40, 33])
def test_tta_averages_a_non_equivariant_model_into_an_equivariant_one(width: int):
    images = torch.from_numpy(random_image((2, 3, 40, width), seed=4))
    model = Recorder(conv(3, seed=5))
    tta = with_flip_tta(model)
    with torch.inference_mode():
        plain = torch.softmax(model.module(images), dim=1)
        averaged = tta(images)
        assert len(model.shapes) == (8 if width == 40 else 4)  # rotations only for square inputs
        assert (averaged - plain).abs().max() > 1e-2
        np.testing.assert_allclose(averaged.sum(1), 1.0, atol=1e-5)
        # the average over the group commutes with the group's transforms: inverses applied correctly
        np.testing.assert_allclose(tta(images.flip(-1)), averaged.flip(-1), atol=1e-5)
        np.testing.assert_allclose(tta(images.flip(-2)), averaged.flip(-2), atol=1e-5)
        if width == 40:
            rotated = torch.rot90(images, 1, (-2, -1))
            np.testing.assert_allclose(tta(rotated), torch.rot90(averaged, 1, (-2, -1)), atol=1e-5)


def test_tta_composes_with_tiling():
    image = random_image((3, 150, 150), seed=6)
    model = conv(1)
    probs = sliding_window(image, with_flip_tta(model), 64, softmax=False)
    np.testing.assert_allclose(probs, whole_image(model, image), atol=2e-6)
    assert math.isclose(float(probs.sum(0).mean()), 1.0, rel_tol=1e-5)


def whole_output_reference(
    image: np.ndarray, module: torch.nn.Module, tile: int, overlap: float
) -> np.ndarray:
    """Blending as first written: (K, H, W) sums and an (H, W) weight map for the whole image."""
    _, height, width = image.shape
    weights = importance_map((tile, tile))
    sums, total = None, np.zeros((height, width), np.float64)
    for y in tile_starts(height, tile, overlap):
        for x in tile_starts(width, tile, overlap):
            crop = image[:, y : y + tile, x : x + tile]
            h, w = crop.shape[1:]
            padded = np.pad(crop, ((0, 0), (0, tile - h), (0, tile - w)), mode="reflect")
            with torch.inference_mode():
                probs = torch.softmax(module(torch.from_numpy(padded)[None]), dim=1)[0].numpy()
            sums = np.zeros((probs.shape[0], height, width)) if sums is None else sums
            sums[:, y : y + h, x : x + w] += probs[:, :h, :w] * weights[:h, :w]
            total[y : y + h, x : x + w] += weights[:h, :w]
    return (sums / total).astype(np.float32)


@pytest.mark.parametrize(("height", "width", "tile"), [(200, 260, 64), (129, 70, 64), (40, 90, 64)])
def test_bands_are_final_rows_in_order_and_match_whole_image_blending(height: int, width: int, tile: int):
    image = random_image((3, height, width), seed=7)
    model = Recorder(conv(5, seed=8))
    bands = list(sliding_window_bands(image, model, tile, overlap=0.25, batch_size=3))
    tops = [top for top, _ in bands]
    starts = tile_starts(height, tile, 0.25)
    assert tops == starts  # one band per row of tiles, each ending where the next row of tiles begins
    assert all(band.shape[1] <= tile for _, band in bands)  # never more than a tile's rows held
    stacked = np.concatenate([band for _, band in bands], axis=1)
    assert stacked.shape == (4, height, width) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked, sliding_window(image, model.module, tile, batch_size=3))
    np.testing.assert_allclose(stacked, whole_output_reference(image, model.module, tile, 0.25), atol=1e-5)


def test_bands_stream_before_the_last_tile_is_predicted():
    # the first rows must come out while most tiles are still to be predicted: that is what bounds memory
    image = random_image((3, 400, 64), seed=9)
    model = Recorder(conv(1))
    bands = sliding_window_bands(image, model, 64, overlap=0.25, batch_size=1)
    top, band = next(bands)
    assert top == 0 and band.shape == (4, 48, 64)
    assert len(model.shapes) == 2  # the first two rows of tiles; 8 rows in all
    assert len(tile_starts(400, 64, 0.25)) == 8
    assert sum(b.shape[1] for _, b in bands) == 400 - 48


def test_lazily_normalised_image_gives_the_same_blend():
    raw = np.random.default_rng(10).integers(0, 65536, (150, 170, 3)).astype(np.uint16)
    model = conv(3, seed=11)
    lazy = sliding_window(normalize_lazily(raw), model, 64, overlap=0.25)
    np.testing.assert_array_equal(lazy, sliding_window(normalize(raw), model, 64, overlap=0.25))
