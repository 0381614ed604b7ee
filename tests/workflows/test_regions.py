"""Overlapping classes (nnU-Net region labels) end to end: train, validate, predict, evaluate, serve."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import tiny_config

from medseg.data.dataset import check_dataset, open_dataset
from medseg.data.regions import Regions
from medseg.io import read_label, write_image, write_json_atomic

REGIONS = {"left": [1, 3], "right": [2, 3]}  # a bitmask: 3 = both


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def write_region_dataset(root: Path, n: int = 10, size: int = 48, seed: int = 0) -> Path:
    """Two discs that overlap: "left" shows in red, "right" in blue, the lens between them in both."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size, size)
        cy = size / 2 + rng.uniform(-4, 4)
        gap = rng.uniform(6, 12)
        radius = rng.uniform(11, 14)
        left = disc(shape, (cy, size / 2 - gap / 2), radius)
        right = disc(shape, (cy, size / 2 + gap / 2), radius)
        image = 30 + np.stack([120 * left, 20 * (left | right), 120 * right], axis=-1)
        image = image + rng.normal(0, 6, (*shape, 3))
        write_image(root / "imagesTr" / f"case{i:02d}_0000.png", np.clip(image, 0, 255).astype(np.uint8))
        write_image(root / "labelsTr" / f"case{i:02d}.png", (left * 1 + right * 2).astype(np.uint8))
    write_json_atomic(
        root / "dataset.json",
        {
            "channel_names": {"0": "R", "1": "G", "2": "B"},
            "labels": {"background": 0, **REGIONS},
            "regions_class_order": [1, 2],
            "numTraining": n,
            "file_ending": ".png",
        },
    )
    return root


@pytest.fixture(scope="module")
def region_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_region_dataset(tmp_path_factory.mktemp("regions") / "data", n=12)


@pytest.fixture(scope="module")
def region_run(region_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.workflows.train import train

    config = tiny_config(
        "train.epochs=12", "train.lr=0.01", "data.samples_per_epoch=32", "train.snapshots=true"
    )
    return train(region_dataset, config, tmp_path_factory.mktemp("runs") / "regions")


def test_open_and_check_a_region_dataset(region_dataset: Path):
    data = open_dataset(region_dataset)
    assert data.labels == {"background": 0, "left": 1, "right": 2}
    assert data.regions == REGIONS
    report = check_dataset(region_dataset)
    assert report.ok, report.problems
    fractions = report.summary["class_fractions"]
    # overlap pixels count for both regions: the fractions sum to more than 1
    assert sum(fractions.values()) > 1.0
    assert report.summary["regions"] == REGIONS


def test_a_mask_value_outside_every_region_is_a_problem(region_dataset: Path, tmp_path: Path):
    import shutil

    copy = Path(shutil.copytree(region_dataset, tmp_path / "copy"))
    label = read_label(copy / "labelsTr" / "case00.png")
    label[0, 0] = 4
    write_image(copy / "labelsTr" / "case00.png", label)
    problems = check_dataset(copy).problems
    assert any("case00.png" in p and "[4]" in p and "no region" in p for p in problems)


def test_training_learns_both_regions_and_their_overlap(region_run: Path, region_dataset: Path):
    from medseg.config import load_config
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image

    config = load_config(region_run / "config.yaml")
    assert config.data.regions == REGIONS
    history = list(csv.DictReader((region_run / "metrics.csv").open()))
    assert float(history[-1]["val_dice_left"]) > 0.7 and float(history[-1]["val_dice_right"]) > 0.7
    predictor = Predictor.from_run(region_run, device="cpu")
    assert predictor.layout.heads == (("regions", 2),)
    image = read_image(region_dataset / "imagesTr" / "case00_0000.png")
    prediction = predictor.predict(image)
    probabilities = prediction.probabilities
    assert probabilities.shape == (2, *image.shape[:2])
    assert not np.allclose(probabilities.sum(axis=0), 1.0)  # sigmoids, not a softmax
    truth = read_label(region_dataset / "labelsTr" / "case00.png")
    assert set(np.unique(prediction.labels).tolist()) <= {0, 1, 2, 3}
    overlap_true, overlap_pred = truth == 3, prediction.labels == 3
    assert overlap_pred.any()
    assert (overlap_true & overlap_pred).sum() / (overlap_true | overlap_pred).sum() > 0.4
    # the mask values are exactly the region decoding of the probabilities
    np.testing.assert_array_equal(prediction.labels, Regions.from_mapping(REGIONS).encode(probabilities))
    frames = sorted((region_run / "snapshots").glob("epoch_*.png"))
    assert frames and (region_run / "snapshots" / "progress.gif").is_file()


def test_evaluate_scores_each_region_as_its_own_mask(region_run: Path, region_dataset: Path):
    from medseg.workflows.evaluate import evaluate

    summary = evaluate(region_run, region_dataset, split="all", device="cpu")
    assert set(summary["per_class"]) == {"background", "left", "right"}
    assert summary["per_class"]["left"]["dice"] > 0.6
    assert summary["per_class"]["right"]["dice"] > 0.6
    panels = sorted((region_run / "eval" / "overlays").glob("*.png"))
    assert panels


def test_predict_writes_mask_values_and_counts_overlap_in_both(
    region_run: Path, region_dataset: Path, tmp_path
):
    from medseg.workflows.predict import predict

    out = tmp_path / "pred"
    predict(region_run, [region_dataset / "imagesTr" / "case01_0000.png"], out, device="cpu")
    from PIL import Image

    path = next((out / "masks").glob("*.png"))
    assert Image.open(path).mode == "L"  # 8-bit mask values
    assert 3 in np.unique(read_label(path))
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert rows
    header = rows[0].keys()
    assert any("left" in key for key in header) and any("right" in key for key in header)


def test_web_colour_layer_mixes_the_colours_of_overlapping_regions(region_run: Path, region_dataset: Path):
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image
    from medseg.web.app import color_layer
    from medseg.workflows.predict import segment_image

    predictor = Predictor.from_run(region_run, device="cpu")
    result = segment_image(predictor, read_image(region_dataset / "imagesTr" / "case02_0000.png"))
    layer = color_layer(result)
    left, right = (np.array(c.color, float) for c in result.classes[1:])
    both = result.labels == 3
    assert both.any()
    np.testing.assert_allclose(layer[both][0, :3], np.round((left + right) / 2), atol=1)
    assert (layer[result.labels == 0, 3] == 0).all()
    fractions = {c.name: c.fraction for c in result.classes}
    assert fractions["left"] + fractions["right"] + fractions["background"] > 1.0


def test_region_overlay_outlines_both_regions(region_dataset: Path):
    from medseg.report import class_colors, color_overlay

    regions = Regions.from_mapping(REGIONS)
    mask = read_label(region_dataset / "labelsTr" / "case03.png")
    image = np.zeros(mask.shape, np.uint8)  # black: the overlay shows the pure colours
    colors = class_colors(
        {"background": 0, "left": 1, "right": 2}, {"left": [255, 0, 0], "right": [0, 0, 255]}
    )
    overlay = color_overlay(image, mask, colors, regions=regions, alpha=1.0, outline=True)
    pure_red = (overlay == [255, 0, 0]).all(axis=-1)
    pure_blue = (overlay == [0, 0, 255]).all(axis=-1)
    mixed = (overlay == [128, 0, 128]).all(axis=-1)
    assert pure_red.any() and pure_blue.any() and mixed.any()
    # the right disc's outline runs through the overlap lens: blue pixels inside the left disc
    assert (pure_blue & (mask == 3)).any()
    assert (pure_red & (mask == 3)).any()


def test_grad_cam_explains_one_region_where_it_is_predicted(region_run: Path, region_dataset: Path):
    from medseg.errors import ConfigError
    from medseg.inference.predictor import Predictor
    from medseg.io import read_image
    from medseg.workflows.explain import segmentation_heatmap

    predictor = Predictor.from_run(region_run, device="cpu")
    image = read_image(region_dataset / "imagesTr" / "case04_0000.png")
    heat = segmentation_heatmap(predictor, image, class_name="right")
    assert heat.class_name == "right" and heat.cam.shape == image.shape[:2]
    truth = read_label(region_dataset / "labelsTr" / "case04.png")
    right = Regions.from_mapping(REGIONS).members(truth)[1]
    assert 0.5 * right.mean() < heat.score < 2 * right.mean()  # the region predicted as "right"
    assert segmentation_heatmap(predictor, image).class_name in ("left", "right")
    with pytest.raises(ConfigError, match="not a class"):
        segmentation_heatmap(predictor, image, class_name="background")


def test_web_api_answers_with_the_regions_and_overlapping_counts(region_run: Path, region_dataset: Path):
    from fastapi.testclient import TestClient

    from medseg.web.app import create_app

    data = (region_dataset / "imagesTr" / "case05_0000.png").read_bytes()
    with TestClient(create_app([region_run], device="cpu")) as client:
        response = client.post("/api/predict", files={"file": ("case05.png", data, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["regions"] == REGIONS
    classes = {c["name"]: c for c in answer["classes"]}
    assert set(classes) == {"background", "left", "right"}
    assert sum(c["pixels"] for c in classes.values()) > 48 * 48  # the lens counts for both discs


def test_evaluation_panels_skip_cases_with_nothing_to_score(region_run: Path, region_dataset: Path, tmp_path):
    from medseg.inference.predictor import Predictor
    from medseg.workflows.evaluate import _write_overlays

    # eight scored cases and one whose Dice is undefined (nothing in truth or prediction): that one used to
    # rank as the very worst
    rows = [{"case": f"case{i:02d}", "mean_dice": 0.5 + i / 20} for i in range(8)]
    rows.append({"case": "case08", "mean_dice": float("nan")})
    predictor = Predictor.from_run(region_run, device="cpu")
    _write_overlays(tmp_path / "overlays", predictor, open_dataset(region_dataset), rows)
    panels = sorted(p.name for p in (tmp_path / "overlays").glob("*.png"))
    assert panels == [
        "best_1_case07.png",
        "best_2_case06.png",
        "best_3_case05.png",
        "worst_1_case00.png",
        "worst_2_case01.png",
        "worst_3_case02.png",
    ]
