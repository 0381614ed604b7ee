from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.dataset import load_image, open_dataset
from medseg.errors import DataError, RunError
from medseg.inference.predictor import Predictor


@pytest.mark.parametrize("shape", [(64, 64, 3), (72, 56, 3), (37, 53, 3), (5, 9, 3)])
def test_output_has_input_size(trained_run: Path, shape):
    predictor = Predictor.from_run(trained_run, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    result = predictor.predict(image)
    assert result.labels.shape == shape[:2]
    assert result.probabilities.shape == (4, *shape[:2])
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.labels, result.probabilities.argmax(0))


def test_logits_pad_to_the_divisor_and_crop_back(trained_run: Path):
    predictor = Predictor.from_run(trained_run, device="cpu")
    predictor.bf16 = False
    assert predictor.divisor == 4
    image = torch.from_numpy(np.random.default_rng(1).random((1, 3, 40, 44)).astype(np.float32))
    with torch.inference_mode():
        direct = predictor.model(image)  # already a multiple of 4: no padding
        np.testing.assert_allclose(predictor.logits(image).numpy(), direct.numpy(), atol=1e-6)
        odd = image[..., :38, :43]
        padded = torch.nn.functional.pad(odd, (0, 1, 0, 2), mode="reflect")
        expected = predictor.model(padded)[..., :38, :43]
        np.testing.assert_allclose(predictor.logits(odd).numpy(), expected.numpy(), atol=1e-6)


def test_grey_image_is_expanded_for_an_rgb_model(trained_run: Path, blood_dataset: Path):
    predictor = Predictor.from_run(trained_run, device="cpu")
    rgb = load_image(open_dataset(blood_dataset).cases[0])
    grey = rgb.mean(-1).astype(np.uint8)
    assert predictor.predict(grey).labels.shape == grey.shape
    with pytest.raises(DataError, match="x.tif: image has 2 channel"):
        predictor.predict(np.zeros((8, 8, 2), np.uint8), "x.tif")


def test_from_run_errors(tmp_path: Path, trained_run: Path):
    with pytest.raises(RunError, match="run folder not found"):
        Predictor.from_run(tmp_path / "none")
    with pytest.raises(RunError, match="no config.yaml"):
        Predictor.from_run(tmp_path)
    (tmp_path / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    with pytest.raises(RunError, match="no checkpoint"):
        Predictor.from_run(tmp_path)


def test_prediction_is_deterministic_and_uses_best_checkpoint(trained_run: Path, blood_dataset: Path):
    image = load_image(open_dataset(blood_dataset).cases[0])
    a = Predictor.from_run(trained_run, device="cpu").predict(image)
    b = Predictor.from_run(trained_run, device="cpu").predict(image)
    np.testing.assert_array_equal(a.labels, b.labels)
    best = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    predictor = Predictor.from_run(trained_run, device="cpu")
    for key, value in best["model"].items():
        assert torch.equal(predictor.model.state_dict()[key], value)


class CountingModel(torch.nn.Module):
    """Wraps a network and records the input shape of every forward pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.size_divisor = model.size_divisor
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(images.shape))
        return self.model(images)


def counting_predictor(run: Path, *overrides: str) -> tuple[Predictor, CountingModel]:
    predictor = Predictor.from_run(run, device="cpu", overrides=list(overrides))
    predictor.bf16 = False
    counter = CountingModel(predictor.model)
    predictor.model = counter
    return predictor, counter


def test_large_image_is_tiled(trained_run: Path):
    from medseg.inference.sliding_window import tile_starts

    predictor, counter = counting_predictor(trained_run, "inference.tile=64")
    image = np.random.default_rng(2).integers(0, 255, (150, 101, 3), dtype=np.uint8)
    tiled = predictor.predict(image)
    assert tiled.labels.shape == (150, 101)
    assert tiled.probabilities.shape == (4, 150, 101)
    np.testing.assert_allclose(tiled.probabilities.sum(0), 1.0, atol=1e-5)
    tiles = len(tile_starts(150, 64, 0.25)) * len(tile_starts(101, 64, 0.25))
    assert [s[0] for s in counter.shapes] == [4] * (tiles // 4) + ([tiles % 4] if tiles % 4 else [])
    assert {s[-2:] for s in counter.shapes} == {(64, 64)}

    counter.shapes.clear()
    whole = predictor.predict(image, tile=0)  # per call: never tile
    assert counter.shapes == [(1, 3, 152, 104)]  # padded to the divisor 4
    assert whole.labels.shape == (150, 101)
    # (no closeness check: unet's instance norm sees each tile's statistics, so tiles legitimately differ)


def test_small_image_is_not_tiled_and_narrow_images_get_narrow_tiles(trained_run: Path):
    predictor, counter = counting_predictor(trained_run)
    assert predictor.config.inference.tile == 512
    image = np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    predictor.predict(image)
    assert counter.shapes == [(1, 3, 64, 64)]
    counter.shapes.clear()
    predictor.predict(np.zeros((200, 30, 3), np.uint8), tile=63)  # rounded up to the divisor: 64
    assert {s[-2:] for s in counter.shapes} == {(64, 32)}  # no tile wider than the (padded) image


def test_tta_per_call_and_from_config(trained_run: Path):
    predictor, counter = counting_predictor(trained_run)
    image = np.random.default_rng(4).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    plain = predictor.predict(image)
    counter.shapes.clear()
    augmented = predictor.predict(image, tta=True)
    assert len(counter.shapes) == 8  # 4 flips x (identity, transpose) of a square image
    assert np.abs(augmented.probabilities - plain.probabilities).max() > 1e-3
    np.testing.assert_allclose(augmented.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(augmented.labels, augmented.probabilities.argmax(0))

    configured, counter = counting_predictor(trained_run, "inference.tta=true")
    np.testing.assert_allclose(configured.predict(image).probabilities, augmented.probabilities, atol=1e-6)
    np.testing.assert_allclose(configured.predict(image, tta=False).probabilities, plain.probabilities)
    counter.shapes.clear()
    configured.predict(np.zeros((48, 40, 3), np.uint8))
    assert len(counter.shapes) == 4  # flips only: not square


def test_tta_with_tiling(trained_run: Path):
    predictor, counter = counting_predictor(trained_run, "inference.tile=32", "inference.batch_size=16")
    image = np.random.default_rng(5).integers(0, 255, (80, 70, 3), dtype=np.uint8)
    result = predictor.predict(image, tta=True)
    assert result.labels.shape == (80, 70)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)
    assert len(counter.shapes) == 8  # one batch of 3 x 3 tiles, 8 augmentations of the batch
    assert counter.shapes[0] == (9, 3, 32, 32)


def test_inference_config_round_trip(tmp_path: Path):
    from medseg.config import InferenceConfig, load_config, save_config

    config = load_config(None, ["inference.tta=true", "inference.tile=256", "inference.overlap=0.5"])
    assert config.inference == InferenceConfig(tile=256, overlap=0.5, batch_size=4, tta=True)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert load_config(None).inference == InferenceConfig(tile=512, overlap=0.25, batch_size=4, tta=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inference.tiel=3", "did you mean inference.tile"),
        ("inference.tile=-1", "tile >= 0"),
        ("inference.overlap=1", "overlap"),
        ("inference.batch_size=0", "batch_size >= 1"),
        ("inference.tta=maybe", "inference.tta: cannot use 'maybe' as bool"),
    ],
)
def test_invalid_inference_config(override: str, message: str):
    from medseg.config import load_config
    from medseg.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_old_run_without_inference_section_loads(tmp_path: Path, trained_run: Path):
    import shutil

    import yaml

    from medseg.config import InferenceConfig

    data = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert "inference" in data  # new runs record it
    del data["inference"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copytree(trained_run / "checkpoints", tmp_path / "checkpoints")
    predictor = Predictor.from_run(tmp_path, device="cpu")
    assert predictor.config.inference == InferenceConfig()
    assert predictor.predict(np.zeros((20, 24, 3), np.uint8)).labels.shape == (20, 24)
    tiled = Predictor.from_run(tmp_path, device="cpu", overrides=["inference.tile=8"])
    assert tiled.config.inference.tile == 8


def test_tuned_typing_is_read_from_thresholds_json(tmp_path: Path):
    import json

    from medseg.inference.predictor import typing_params
    from medseg.postprocess import TypingParams

    assert typing_params(None) == TypingParams() and typing_params(tmp_path) == TypingParams()
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"params": {}, "typing": {"group_threshold": 0.7, "merge_touching": False}}))
    assert typing_params(tmp_path) == TypingParams(0.7, False)
    path.write_text(json.dumps({"params": {}}))  # tuned before typing was tuned: the default rule
    assert typing_params(tmp_path) == TypingParams()
    for bad in ('{"typing": {"group_threshold": 2}}', "not json"):
        path.write_text(bad)
        with pytest.raises(RunError, match="thresholds.json: unreadable"):
            typing_params(tmp_path)


def whole_image_path(predictor: Predictor, image: np.ndarray, tile: int) -> np.ndarray:
    """The tiled prediction as it was first written: the whole image normalised into one float array,
    the whole (K, H, W) blend kept."""
    from medseg.inference.sliding_window import sliding_window

    def predict_tiles(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(predictor.logits(batch), dim=1)

    settings = predictor.config.inference
    normalised = predictor.preprocess(image)
    return sliding_window(
        normalised,
        predict_tiles,
        tile,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        softmax=False,
    )


@pytest.mark.parametrize(("normalization", "dtype"), [("percentile", np.uint8), ("zscore", np.uint16)])
def test_banded_prediction_equals_the_whole_image_path(trained_run: Path, normalization: str, dtype):
    overrides = ("inference.tile=96", "inference.batch_size=16", f"data.normalization={normalization}")
    predictor, counter = counting_predictor(trained_run, *overrides)
    high = np.iinfo(dtype).max
    image = np.random.default_rng(6).integers(0, high, (300, 500, 3)).astype(dtype)
    expected = whole_image_path(predictor, image, 96)
    counter.shapes.clear()
    banded = predictor.predict(image, probabilities=False)
    assert banded.probabilities is None
    assert banded.labels.dtype == np.int32
    assert sum(shape[0] for shape in counter.shapes) == 4 * 7  # tiled: 4 rows x 7 columns of tiles
    np.testing.assert_array_equal(banded.labels, expected.argmax(0))
    kept = predictor.predict(image, probabilities=True)
    np.testing.assert_allclose(kept.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(kept.labels, banded.labels)


def test_probabilities_are_kept_by_default_only_for_images_up_to_the_limit(trained_run: Path, monkeypatch):
    from medseg.inference import predictor as module

    predictor, _ = counting_predictor(trained_run, "inference.tile=32")
    monkeypatch.setattr(module, "FULL_PROBABILITIES_MAX_PIXELS", 40 * 40)
    small, large = (np.zeros(shape, np.uint8) for shape in ((40, 40, 3), (40, 41, 3)))
    assert predictor.predict(small).probabilities.shape == (4, 40, 40)
    assert predictor.predict(large).probabilities is None
    assert predictor.predict(large, probabilities=True).probabilities.shape == (4, 40, 41)
    assert predictor.predict(large, tile=0).probabilities is None  # untiled: predicted whole, then dropped


def test_banded_prediction_memory_does_not_grow_with_the_image(trained_run: Path):
    # tall images in 64-pixel tiles: the whole-image path holds a (3, H, W) float copy and the (4, H, W)
    # blend (7 x 4 bytes per pixel); the banded path the (H, W) int32 class ids (4 bytes per pixel) and a
    # fixed amount for a tile batch and a tile's rows of sums
    import tracemalloc

    predictor, _ = counting_predictor(trained_run, "inference.tile=64")

    def peak(call, height: int) -> int:
        image = np.random.default_rng(7).integers(0, 255, (height, 64, 3), dtype=np.uint8)
        tracemalloc.start()
        call(image)
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return result

    def banded(image):
        return predictor.predict(image, probabilities=False)

    extra_pixels = 1024 * 64
    whole_growth = peak(lambda image: whole_image_path(predictor, image, 64), 2048) - peak(
        lambda image: whole_image_path(predictor, image, 64), 1024
    )
    assert whole_growth > 7 * 4 * extra_pixels  # the measurement sees the whole-image buffers
    assert peak(banded, 2048) - peak(banded, 1024) < 1.5 * 4 * extra_pixels


def test_lazy_normalisation_equals_normalize():
    from medseg.transforms.normalize import NormalizedImage, normalize, normalize_lazily

    rng = np.random.default_rng(8)
    cases = [(np.uint8, (37, 53, 3)), (np.uint16, (40, 31)), (np.int16, (20, 30, 2)), (np.bool_, (16, 17, 3))]
    for dtype, shape in cases:
        info = np.iinfo(dtype) if dtype is not np.bool_ else np.iinfo(np.uint8)
        raw = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        raw.flat[:5] = info.max if dtype is not np.bool_ else True  # a few hot pixels move the percentiles
        for mode in ("percentile", "zscore", "none"):
            expected = normalize(raw, mode, low=1.0, high=98.0)
            lazy = normalize_lazily(raw, mode, low=1.0, high=98.0)
            assert isinstance(lazy, NormalizedImage) and lazy.shape == expected.shape
            whole = np.asarray(lazy)
            assert whole.dtype == np.float32
            if mode == "zscore":  # mean and std summed in another order: float32 rounding
                np.testing.assert_allclose(whole, expected, rtol=1e-6, atol=1e-6)
            else:  # exact percentiles from the histogram: identical values
                np.testing.assert_array_equal(whole, expected)
            np.testing.assert_array_equal(lazy[:, 3:11, 2:9], whole[:, 3:11, 2:9])
            np.testing.assert_array_equal(lazy[1:, 5:], whole[1:, 5:])
    constant = normalize_lazily(np.full((8, 8), 7, np.uint16))
    np.testing.assert_array_equal(np.asarray(constant), 0.0)
    floats = rng.random((9, 9, 3)).astype(np.float32)  # statistics of floats need the floats: whole
    np.testing.assert_array_equal(normalize_lazily(floats, "zscore"), normalize(floats, "zscore"))
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_lazily(raw, "minmax")
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        normalize_lazily(raw, low=50, high=10)
