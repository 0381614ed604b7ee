"""``medseg explain``: Grad-CAM of the right class, layer and pixels for classification and segmentation runs,
feature-map galleries, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.explain import apply_colormap, feature_gallery, feature_maps, grad_cam, segmentation_target
from medseg.io import read_image, write_image
from medseg.transforms import normalize


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def make_run(folder: Path, *overrides: str, classes=("a", "b", "c")) -> Path:
    """A classification run folder with a seeded, untrained classifier (no training needed to explain)."""
    from medseg.config import load_config, save_config
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.workflows.classify import build_classifier

    config = load_config(None, ["task=classify", "model.name=simple_cnn_tiny", "train.amp=off", *overrides])
    config.data.labels = {name: i for i, name in enumerate(classes)}
    config.data.in_channels = 3
    torch.manual_seed(0)
    model = build_classifier(config, pretrained=False)
    save_config(config, folder / "config.yaml")
    save_checkpoint(folder / "checkpoints" / "best.pt", {"model": model.state_dict()})
    return folder


def load_model(run: Path):
    from medseg.workflows.classify import ClassificationPredictor

    return ClassificationPredictor.from_run(run, device="cpu")


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    image[10:30, 12:28] = [90, 40, 160]  # a purple "cell"
    return write_image(tmp_path / "cell.png", image)


def test_classification_heatmap_is_grad_cam_of_the_class_on_the_network_input(tmp_path, image_file, capsys):
    run = make_run(tmp_path / "run", "classify.image_size=40")
    out = tmp_path / "out"
    assert run_cli("explain", run, image_file, "--out", out, "--class", "b") == 0
    assert "gradcam for class b" in capsys.readouterr().out
    model = load_model(run).model
    x = torch.from_numpy(normalize(read_image(image_file)))[None]  # the default percentile normalisation
    expected = grad_cam(model, x, target=1, layer="encoder.stages.2")
    np.testing.assert_array_equal(read_image(out / "cell_gradcam_b_heatmap.png"), apply_colormap(expected))
    overlay = read_image(out / "cell_gradcam_b.png")
    assert overlay.shape == (40, 40, 3) and not np.array_equal(overlay, read_image(image_file))

    assert run_cli("explain", run, image_file, "--out", out, "--class", "c", "--method", "gradcam++") == 0
    plus = grad_cam(model, x, target=2, layer="encoder.stages.2", method="gradcam++")
    np.testing.assert_array_equal(read_image(out / "cell_gradcampp_c_heatmap.png"), apply_colormap(plus))


def test_default_class_is_the_predicted_one_and_a_crop_maps_back_in_place(tmp_path, image_file, capsys):
    run = make_run(tmp_path / "run", "classify.image_size=32", "classify.fit=crop")
    predictor = load_model(run)
    image = read_image(image_file)
    predicted = predictor.predict(image)
    assert run_cli("explain", run, image_file, "--out", tmp_path / "out") == 0
    assert f"class {predicted.name} (probability {predicted.confidence:.3f})" in capsys.readouterr().out
    heatmap = read_image(tmp_path / "out" / f"cell_gradcam_{predicted.name}_heatmap.png")
    # fit=crop: the network saw the central 32 x 32 pixels of the normalised 40 x 40 image
    x = torch.from_numpy(normalize(image)[:, 4:36, 4:36].copy())[None]
    expected = np.zeros((40, 40), np.float32)
    expected[4:36, 4:36] = grad_cam(predictor.model, x, target=predicted.index)
    np.testing.assert_array_equal(heatmap, apply_colormap(expected))


def test_feature_maps_show_each_stage_or_the_chosen_layers(tmp_path, image_file, capsys):
    run = make_run(tmp_path / "run", "classify.image_size=40")
    out = tmp_path / "out"
    assert run_cli("explain", run, image_file, "--out", out, "--feature-maps") == 0
    assert "encoder.stages.0, encoder.stages.1, encoder.stages.2" in capsys.readouterr().out
    assert (
        run_cli(
            "explain",
            run,
            image_file,
            "--out",
            out,
            "--feature-maps",
            "--layers",
            "encoder.stages.1",
            "-k",
            4,
        )
        == 0
    )
    x = torch.from_numpy(normalize(read_image(image_file)))[None]
    expected = feature_gallery(feature_maps(load_model(run).model, x, ["encoder.stages.1"]), 4)
    np.testing.assert_array_equal(read_image(out / "cell_features.png"), expected)


def test_bad_requests_are_one_line_errors(tmp_path, image_file, capsys):
    run = make_run(tmp_path / "run", "classify.image_size=40")
    out = tmp_path / "out"
    assert run_cli("explain", run, image_file, "--out", out, "--class", "z") == 2
    assert "--class 'z' is not a class of this run; classes: a, b, c" in capsys.readouterr().err
    assert run_cli("explain", run, image_file, "--out", out, "--layer", "encoder.stagez") == 2
    assert "nearby: encoder.stages" in capsys.readouterr().err
    two = write_image(tmp_path / "two.tif", np.zeros((40, 40, 2), np.uint8))
    assert run_cli("explain", run, two, "--out", out) == 2
    assert "two.tif: image has 2 channel(s) but the model expects 3" in capsys.readouterr().err
    assert run_cli("explain", run, image_file, "--out", out, "--layers", "encoder.stages.0") == 2
    assert "--feature-maps" in capsys.readouterr().err
    assert not out.exists()


def test_a_layer_whose_hooks_never_fire_is_named(tmp_path, capsys):
    # MONAI's ViT blocks keep a cross-attention norm (replaced by an identity) that forward never calls
    run = make_run(tmp_path / "run", "model.name=vit_tiny", "classify.image_size=64")
    image = write_image(tmp_path / "im.png", np.full((64, 64, 3), 128, np.uint8))
    layer = "encoder.blocks.1.norm_cross_attn"
    assert run_cli("explain", run, image, "--out", tmp_path / "out", "--layer", layer) == 2
    assert f"layer '{layer}' of Classifier never ran" in capsys.readouterr().err
    assert (
        run_cli("explain", run, image, "--out", tmp_path / "out", "--feature-maps") == 0
    )  # tokens on a grid


def test_segmentation_heatmap_explains_the_predicted_region_of_a_class(
    trained_run, blood_dataset, tmp_path, capsys
):
    from medseg.inference.predictor import Predictor

    image_file = sorted((blood_dataset / "imagesTr").glob("*.png"))[0]
    assert run_cli("explain", trained_run, image_file, "--out", tmp_path) == 0
    printed = capsys.readouterr().out
    predictor = Predictor.from_run(trained_run, device="cpu")
    x = torch.from_numpy(predictor.preprocess(read_image(image_file)))[None]  # 64 px: no padding
    with torch.no_grad():
        predicted = predictor.model(x)[0].argmax(0)
    counts = torch.bincount(predicted.flatten(), minlength=4)
    largest = 1 + int(counts[1:].argmax())  # the default: the foreground class with most pixels
    name = predictor.class_names[largest]
    assert f"gradcam for class {name} (predicted in {counts[largest] / 64**2:.1%} of the pixels)" in printed
    expected = grad_cam(
        predictor.model, x, target=segmentation_target(largest, (predicted == largest).numpy())
    )
    heatmap = read_image(tmp_path / f"{image_file.stem}_gradcam_{name}_heatmap.png")
    np.testing.assert_array_equal(heatmap, apply_colormap(expected))
    assert run_cli("explain", trained_run, image_file, "--out", tmp_path, "--class", "nope") == 2
    assert "classes: background, red_cell, wbc_cytoplasm, wbc_nucleus" in capsys.readouterr().err


def test_predict_explain_is_for_classification_runs(trained_run, blood_dataset, tmp_path, capsys):
    image_file = sorted((blood_dataset / "imagesTr").glob("*.png"))[0]
    assert run_cli("predict", trained_run, image_file, "--out", tmp_path, "--explain") == 2
    assert "use `medseg explain RUN IMAGE" in capsys.readouterr().err
