"""The classification workflow end to end: white-cell crops -> train -> evaluate / predict, and its parts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.config import load_config
from medseg.io import read_image, write_image

TINY = [
    "--model",
    "simple_cnn_tiny",
    "--set",
    "classify.image_size=24",  # the crops are 32 px: resized
    "--set",
    "data.num_workers=0",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.progress=false",
]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """White-cell crops of 16 small smears (32 px, about 30 images, every type), read-only."""
    out = tmp_path_factory.mktemp("crops") / "crops"
    assert run_cli("phantom", "blood", "--crops", "--out", out, "--n", 16, "--size", 96, "--crop", 32) == 0
    return out


@pytest.fixture(scope="module")
def crop_run(crops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simple_cnn_tiny trained for 2 epochs on ``crops/labels.csv`` (grouped by smear), read-only."""
    run = tmp_path_factory.mktemp("runs") / "cls"
    args = ["train", crops / "labels.csv", "--task", "classify", *TINY, "--epochs", 2, "--out", run]
    assert run_cli(*args, "--set", "data.val_fraction=0.3") == 0
    return run


def test_phantom_crops_and_data_check_report_class_counts(crops: Path, capsys):
    rows = read_csv(crops / "labels.csv")
    assert {r["label"] for r in rows} == {"basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"}
    assert read_image(crops / rows[0]["path"]).shape == (32, 32, 3)
    assert run_cli("data", "check", crops / "labels.csv") == 0
    out = capsys.readouterr().out
    counts = {label: sum(r["label"] == label for r in rows) for label in {r["label"] for r in rows}}
    line = next(x for x in out.splitlines() if x.startswith("classes"))
    for label, count in counts.items():
        assert f"{label} {count} (" in line
    ratio = max(counts.values()) / min(counts.values())
    assert f"imbalance {ratio:.2f}x" in out and "no problems found" in out
    assert run_cli("data", "check", crops, "--csv", "labels.csv") == 0  # --csv relative to the folder
    assert "16 group(s)" in capsys.readouterr().out


def test_training_writes_a_classification_run_with_a_grouped_split(crops: Path, crop_run: Path):
    config = load_config(crop_run / "config.yaml")
    assert config.task == "classify" and config.train.monitor == "val_balanced_accuracy"
    assert config.data.class_names == ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert config.data.in_channels == 3 and config.classify.image_size == 24
    header = (crop_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1"} <= set(header)
    assert {p.name for p in (crop_run / "checkpoints").glob("*.pt")} == {"best.pt", "last.pt"}
    summary = json.loads((crop_run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["monitor"] == "val_balanced_accuracy"
    splits = json.loads((crop_run / "splits.json").read_text())
    group = {r["path"]: r["group"] for r in read_csv(crops / "labels.csv")}
    assert sorted(splits["train"] + splits["val"]) == sorted(group)
    assert splits["val"] and not {group[p] for p in splits["train"]} & {group[p] for p in splits["val"]}
    assert summary["train_cases"] == len(splits["train"]) and summary["val_cases"] == len(splits["val"])


def test_evaluate_scores_the_validation_images_and_predict_agrees(crop_run: Path, tmp_path: Path, capsys):
    from medseg.metrics import classification_metrics

    assert run_cli("evaluate", crop_run) == 0
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "confusion matrix" in printed
    summary = json.loads((crop_run / "eval" / "metrics.json").read_text())
    splits = json.loads((crop_run / "splits.json").read_text())
    assert summary["task"] == "classify" and summary["split"] == "val"
    assert summary["num_images"] == len(splits["val"]) == sum(map(sum, summary["confusion_matrix"]))
    rows = read_csv(crop_run / "eval" / "per_image.csv")
    assert sorted(r["file"] for r in rows) == sorted(splits["val"])
    names = summary["class_names"]
    probabilities = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
    truth = np.array([names.index(r["true"]) for r in rows])
    recomputed = classification_metrics(truth, probabilities, names)
    assert recomputed["balanced_accuracy"] == pytest.approx(summary["balanced_accuracy"])
    assert np.mean([int(r["correct"]) for r in rows]) == pytest.approx(summary["accuracy"])
    assert all(r["predicted"] == names[int(np.argmax(p))] for r, p in zip(rows, probabilities))

    crops_root = Path(load_config(crop_run / "config.yaml").data.path).parent
    files = [crops_root / r["file"] for r in rows]
    assert run_cli("predict", crop_run, *files, "--out", tmp_path / "pred") == 0
    predicted = {
        Path(r["file"]).relative_to(crops_root).as_posix(): r
        for r in read_csv(tmp_path / "pred" / "predictions.csv")
    }
    assert list(next(iter(predicted.values())))[:3] == ["file", "class", "probability"]
    for row in rows:
        other = predicted[row["file"]]
        assert other["class"] == row["predicted"]
        for n in names:
            assert float(other[f"p_{n}"]) == pytest.approx(float(row[f"p_{n}"]), abs=2e-3)


def test_predict_explain_writes_heatmaps_and_reports_unreadable_files(crop_run: Path, crops: Path, tmp_path):
    image = crops / read_csv(crops / "labels.csv")[0]["path"]
    two_channels = write_image(tmp_path / "two.tif", np.zeros((32, 32, 2), np.uint8))
    out = tmp_path / "pred"
    assert run_cli("predict", crop_run, image, two_channels, "--out", out, "--explain") == 2
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 1 and rows[0]["heatmap"] == f"heatmaps/{image.stem}.png"
    assert read_image(out / rows[0]["heatmap"]).shape == (32, 32, 3)
    total = sum(float(v) for k, v in rows[0].items() if k.startswith("p_"))
    assert total == pytest.approx(1.0, abs=1e-4)


def test_folder_dataset_is_detected_and_resume_continues(crops: Path, tmp_path: Path):
    run = tmp_path / "run"
    common = ["--model", "simple_cnn_tiny", "--set", "classify.image_size=16", "--set", "data.num_workers=0"]
    common += ["--set", "train.progress=false", "--set", "classify.fit=crop", "--out", run]
    assert run_cli("train", crops, *common, "--epochs", 1) == 0  # no --task: a class-per-folder set
    assert load_config(run / "config.yaml").task == "classify"
    split = (run / "splits.json").read_text()
    assert run_cli("train", *common, "--resume", "--set", "train.epochs=2") == 0
    rows = read_csv(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (run / "splits.json").read_text() == split
    assert run_cli("train", crops, *common) == 2  # a trained run is never overwritten


def test_bad_settings_are_one_line_errors(crops: Path, tmp_path: Path, capsys):
    base = ["train", crops / "labels.csv", "--task", "classify", "--out", tmp_path / "run"]
    assert run_cli(*base, "--model", "unet_tiny") == 2
    assert "is not a classifier" in capsys.readouterr().err
    assert run_cli(*base, *TINY, "--set", "classify.class_weights=[1,2]") == 2
    assert "2 values for 5 classes" in capsys.readouterr().err
    assert run_cli(*base, "--model", "vit_tiny", "--set", "classify.image_size=32") == 2
    assert "classify.image_size: 32 px inputs do not fit vit_tiny" in capsys.readouterr().err


def test_auto_class_weights_are_inverse_frequency():
    from medseg.workflows.classify import class_weights

    config = load_config(None, ["task=classify", "classify.class_weights=auto"])
    config.data.labels = {"a": 0, "b": 1, "c": 2}
    labels = np.array([0] * 6 + [1] * 2)  # c absent
    assert class_weights(config, labels) == pytest.approx([8 / (2 * 6), 8 / (2 * 2), 0.0])
    config.classify.class_weights = [1, 2.5, 3]
    assert class_weights(config, labels) == [1.0, 2.5, 3.0]
    config.classify.class_weights = "none"
    assert class_weights(config, labels) is None


def test_balanced_sampler_draws_classes_equally_and_reproducibly():
    from medseg.workflows.classify import BalancedSampler

    labels = np.array([0] * 90 + [1] * 10)
    sampler = BalancedSampler(labels, 4000, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    assert len(first) == 4000 == len(sampler)
    drawn = labels[[index for index, _ in first]]
    assert abs(drawn.mean() - 0.5) < 0.03  # the 10 % class is drawn half of the time
    assert list(sampler) == first  # same epoch, same draws
    sampler.set_epoch(2)
    assert list(sampler) != first


def test_fit_image_and_unfit_map_are_inverse_for_centre_crops():
    from medseg.workflows.classify import fit_image, unfit_map

    rows, cols = np.mgrid[0:7, 0:12].astype(np.float32)
    image = np.stack([rows * 100 + cols])  # each pixel's value names its position
    fitted = fit_image(image, 9, "crop")  # rows padded 1 before / 1 after, columns cropped 1 .. 10
    assert fitted.shape == (1, 9, 9)
    np.testing.assert_array_equal(fitted[0, 1:8], image[0, :, 1:10])
    assert not fitted[0, 0].any() and not fitted[0, 8].any()
    back = unfit_map(fitted[0], (7, 12), "crop")
    np.testing.assert_array_equal(back[:, 1:10], image[0, :, 1:10])
    assert not back[:, 0].any() and not back[:, 10:].any()  # columns the network never saw
    resized = fit_image(image, 24, "resize")
    assert resized.shape == (1, 24, 24) and resized.dtype == np.float32
    assert unfit_map(resized[0], (7, 12), "resize").shape == (7, 12)


def test_report_shows_classification_scores_plots_and_mistakes(crop_run: Path):
    assert run_cli("evaluate", crop_run) == 0
    assert run_cli("report", crop_run) == 0
    html = (crop_run / "report.html").read_text()
    summary = json.loads((crop_run / "eval" / "metrics.json").read_text())
    assert f"balanced accuracy {summary['balanced_accuracy']:.3f}" in html  # summary row
    assert "balanced accuracy (mean recall)" in html and "macro AUC" in html
    assert 'alt="confusion matrix"' in html and 'alt="reliability diagram"' in html
    wrong = summary["num_images"] - sum(summary["confusion_matrix"][i][i] for i in range(5))
    assert (f"of {wrong} misclassified images" if wrong else "no misclassified image") in html
    assert 'id="overlays"' not in html and 'id="progress"' not in html  # nothing to show for a classifier
    assert (crop_run / "plots" / "confusion_matrix.png").is_file()


def test_confusion_matrix_plot_needs_a_square_matrix_with_names(tmp_path: Path):
    from medseg.report.plots import plot_confusion_matrix, plot_reliability

    with pytest.raises(ValueError, match="K x K"):
        plot_confusion_matrix({"confusion_matrix": [[1, 2]], "class_names": ["a", "b"]}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="reliability"):
        plot_reliability({"reliability": []}, tmp_path / "r.png")
    png = plot_confusion_matrix(
        {"confusion_matrix": [[3, 1], [0, 2]], "class_names": ["a", "b"]}, tmp_path / "c.png"
    )
    assert read_image(png).ndim == 3


class _FixedSegmentation:
    """A stand-in segmentation predictor that predicts the same labels for every image."""

    def __init__(self, labels: np.ndarray, names: list[str], task: str = "semantic") -> None:
        from types import SimpleNamespace

        self.labels, self.class_names, self.config = labels, names, SimpleNamespace(task=task)

    def predict(self, image, source="image"):
        from types import SimpleNamespace

        return SimpleNamespace(labels=self.labels)


def test_segmentation_guide_crops_and_masks_to_the_predicted_region():
    from medseg.errors import ConfigError
    from medseg.workflows.classify import SegmentationGuide

    labels = np.zeros((20, 30), np.int32)
    labels[5:10, 8:18] = 1  # "lung": rows 5..9, columns 8..17
    labels[12, 25] = 2  # "heart"
    fake = _FixedSegmentation(labels, ["background", "lung", "heart"])
    image = np.arange(20 * 30, dtype=np.float32).reshape(1, 20, 30) + 1
    guide = SegmentationGuide(fake, ["lung"], "crop", margin=0.2)
    region = guide.region(np.zeros((20, 30)))
    cropped, box = guide.apply(image, region)
    assert box == (4, 6, 7, 14)  # margins: round(0.2 * 5) = 1 row, round(0.2 * 10) = 2 columns
    np.testing.assert_array_equal(cropped, image[:, 4:11, 6:20])
    both, _ = SegmentationGuide(fake, ["lung"], "both", margin=0.2).apply(image, region)
    np.testing.assert_array_equal(both[0] > 0, labels[4:11, 6:20] == 1)  # zero outside the lung
    masked, box = SegmentationGuide(fake, [], "mask").apply(image, guide.region(None) | (labels == 2))
    assert box == (0, 0, 20, 30) and np.count_nonzero(masked) == 51  # default: every foreground class
    whole, box = guide.apply(image, np.zeros((20, 30), bool))
    assert box == (0, 0, 20, 30) and whole is image and guide.empty == 1
    with pytest.raises(ConfigError, match="liver not among the classes of the mask run"):
        SegmentationGuide(fake, ["liver"])
    objects = SegmentationGuide(_FixedSegmentation(labels, [], "instance"))
    assert objects.region(None).sum() == 51


def test_a_guided_run_keeps_its_own_copy_of_the_segmentation_run(crops, trained_run, tmp_path, capsys):
    import shutil

    from medseg.inference.predictor import Predictor
    from medseg.workflows.classify import ClassificationPredictor, SegmentationGuide, prepare_image

    seg = tmp_path / "seg"
    shutil.copytree(trained_run, seg)
    run = tmp_path / "run"
    guided = ["--set", f"data.mask_with={seg}", "--set", "classify.mask_classes=[wbc_cytoplasm,wbc_nucleus]"]
    assert run_cli("train", crops / "labels.csv", *TINY, "--epochs", 1, "--out", run, *guided) == 0
    assert (run / "mask_run" / "checkpoints" / "best.pt").is_file()
    shutil.rmtree(seg)  # the classification run needs only its own copy
    image_file = crops / read_csv(crops / "labels.csv")[0]["path"]
    assert run_cli("predict", run, image_file, "--out", tmp_path / "pred") == 0
    predictor = ClassificationPredictor.from_run(run, device="cpu")
    image = read_image(image_file)
    reference = SegmentationGuide(
        Predictor.from_run(run / "mask_run", device="cpu"), ["wbc_cytoplasm", "wbc_nucleus"]
    )
    np.testing.assert_array_equal(
        predictor.preprocess(image), prepare_image(image, predictor.config, "x", reference)
    )
    row = read_csv(tmp_path / "pred" / "predictions.csv")[0]
    expected = predictor.probabilities([prepare_image(image, predictor.config, "x", reference)])[0]
    assert float(row["probability"]) == pytest.approx(expected.max(), abs=1e-5)
    assert run_cli("explain", run, image_file, "--out", tmp_path / "explain") == 0


def test_classification_sets_are_told_from_segmentation_sets(crops: Path, blood_dataset: Path, tmp_path):
    from medseg.workflows.classify import is_classification_dataset

    assert is_classification_dataset(crops) and is_classification_dataset(crops / "labels.csv")
    assert not is_classification_dataset(blood_dataset)  # dataset.json
    (tmp_path / "pairs" / "images").mkdir(parents=True)
    (tmp_path / "pairs" / "masks").mkdir()
    assert not is_classification_dataset(tmp_path / "pairs")
    assert not is_classification_dataset(tmp_path / "missing")
