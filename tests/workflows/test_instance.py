"""The instance task end to end: train a deep-watershed model, tune, predict, count and evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.io import read_image

TINY = [
    "--model",
    "unet_tiny",
    "--set",
    "data.patch_size=[48,48]",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.progress=false",
]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def nuclei_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A unet_tiny deep-watershed run on eight 64 px nuclei phantoms (task taken from dataset.json)."""
    root = tmp_path_factory.mktemp("nuclei")
    data, run = root / "data", root / "run"
    assert run_cli("phantom", "nuclei", "--out", data, "--n", 8, "--size", 64, "--seed", 1) == 0
    assert run_cli("train", data, *TINY, "--epochs", 2, "--out", run) == 0
    return data, run


def test_training_writes_an_instance_run_with_tuned_thresholds(nuclei_run):
    _, run = nuclei_run
    config = (run / "config.yaml").read_text()
    assert "task: instance" in config and "monitor: val_f1" in config
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_loss", "val_f1", "val_pq"} <= set(header)
    tuned = json.loads((run / "thresholds.json").read_text())
    assert tuned["metric"] == "f1" and tuned["score"] >= tuned["default_score"]
    assert {"maxima_threshold", "interior_threshold", "min_distance"} <= set(tuned["params"])
    assert (run / "snapshots" / "progress.gif").is_file()


def test_predict_writes_instance_masks_objects_and_counts(nuclei_run, tmp_path: Path):
    data, run = nuclei_run
    out = tmp_path / "pred"
    images = sorted((data / "imagesTr").glob("*.tif"))[:2]
    assert run_cli("predict", run, *images, "--out", out) == 0
    mask = read_image(out / "masks" / "nuclei_000.tif")
    assert mask.shape == (64, 64) and mask.dtype == np.uint16
    overlay = read_image(out / "overlays" / "nuclei_000.png")
    assert overlay.shape == (64, 64, 3)
    with open(out / "objects.csv") as f:
        objects = list(csv.DictReader(f))
    header = (out / "objects.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "image",
        "label",
        "class",
        "area",
        "centroid_y",
        "centroid_x",
        "mean_intensity",
        "eccentricity",
    ]
    found = {int(r["label"]) for r in objects if r["image"] == "nuclei_000"}
    assert found == set(np.unique(mask).tolist()) - {0}
    with open(out / "counts.csv") as f:
        counts = list(csv.DictReader(f))
    totals = {r["image"]: int(r["count"]) for r in counts if r["class"] == "total"}
    assert totals["nuclei_000"] == len(found) and set(totals) == {"nuclei_000", "nuclei_001"}


def test_evaluate_reports_instance_metrics_and_match_overlays(nuclei_run, capsys):
    _, run = nuclei_run
    assert run_cli("evaluate", run) == 0
    out = capsys.readouterr().out
    assert "F1@0.5" in out and "PQ" in out and "count exact" in out
    summary = json.loads((run / "eval" / "metrics.json").read_text())
    assert summary["task"] == "instance" and summary["split"] == "val"
    pooled = summary["pooled"]
    assert 0 <= pooled["f1@0.5"] <= 1 and pooled["n_true"] > 0
    with open(run / "eval" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"case", "f1@0.5", "pq", "aji", "split", "count_error", "count_relative_error"} <= set(rows[0])
    assert len(rows) == summary["num_images"]
    panels = sorted((run / "eval" / "overlays").glob("*.png"))
    assert panels and read_image(panels[0]).ndim == 3
    assert run_cli("report", run) == 0
    html = (run / "report.html").read_text()
    assert "F1 at IoU 0.5" in html and "deep watershed loss" in html and "worst of" in html


def test_typed_instances_give_a_differential_count(blood_dataset: Path, tmp_path: Path):
    run, out = tmp_path / "run", tmp_path / "pred"
    args = ["train", blood_dataset, "--task", "instance", *TINY, "--epochs", 1, "--out", run]
    assert run_cli(*args, "--set", "train.snapshots=false", "--set", "instance.tune=off") == 0
    config = (run / "config.yaml").read_text()
    assert "- red_cell" in config and "val_type_accuracy" in (run / "metrics.csv").read_text()
    assert not (run / "thresholds.json").exists()
    image = sorted((blood_dataset / "imagesTr").glob("*.png"))[0]
    assert run_cli("predict", run, image, "--out", out) == 0
    with open(out / "counts.csv") as f:
        counts = list(csv.DictReader(f))
    classes = [r["class"] for r in counts]
    assert classes[:2] == ["red_cell", "neutrophil"] and classes[-1] == "total"
    assert counts[0]["percent"] == ""  # red cells are not part of the white-cell differential
    percents = [float(r["percent"]) for r in counts[1:-1] if r["percent"] != ""]
    assert not percents or abs(sum(percents) - 100) < 0.1
    assert run_cli("evaluate", run) == 0
    summary = json.loads((run / "eval" / "metrics.json").read_text())
    # NaN (written as null) when no predicted object matched a true one after one epoch
    assert summary["type_accuracy"] is None or 0 <= summary["type_accuracy"] <= 1
    assert "differential_count_exact_fraction" in summary


def test_typed_run_tunes_how_the_differential_is_typed(blood_dataset: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["train", blood_dataset, "--task", "instance", *TINY, "--epochs", 1, "--out", run]
    assert run_cli(*args, "--set", "train.snapshots=false") == 0
    tuned = json.loads((run / "thresholds.json").read_text())
    assert set(tuned["typing"]) == {"group_threshold", "merge_touching"}
    score = tuned["typing_score"]
    assert score["score"] >= score["default_score"] and len(score["trials"]) == 12
    from medseg.inference.predictor import Predictor

    assert Predictor.from_run(run, device="cpu").typing.to_dict() == tuned["typing"]


def test_instance_task_without_instance_labels_is_a_clear_error(tmp_path: Path, capsys):
    data = tmp_path / "data"
    assert run_cli("phantom", "blood", "--out", data, "--n", 3, "--size", 64) == 0
    meta = json.loads((data / "dataset.json").read_text())
    del meta["medseg"]["instances"]
    (data / "dataset.json").write_text(json.dumps(meta))
    assert run_cli("train", data, "--task", "instance", *TINY, "--out", tmp_path / "run") == 2
    assert "needs instance labels" in capsys.readouterr().err


def test_data_check_counts_objects_by_type(blood_dataset: Path, capsys):
    assert run_cli("data", "check", blood_dataset) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("objects"))
    assert "instances: " in line and "red_cell" in line
