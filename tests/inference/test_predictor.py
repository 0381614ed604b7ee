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
