import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.data.dataset import load_image, load_label, open_dataset
from medseg.errors import DataError
from medseg.inference.predictor import Predictor
from medseg.metrics import SemanticMetrics
from medseg.workflows.evaluate import evaluate


def test_evaluate_all_matches_an_independent_recomputation(trained_run: Path, blood_dataset: Path, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    summary = evaluate(run, blood_dataset, split="all", device="cpu")
    predictor = Predictor.from_run(run, device="cpu")
    data = open_dataset(blood_dataset)
    reference = SemanticMetrics(4)
    for case in data.cases:
        image = load_image(case)
        reference.update(load_label(case), predictor.predict(image).labels)
    expected = reference.aggregate(data.class_names)
    assert summary["num_images"] == 10 and summary["split"] == "all"
    for name in data.class_names:
        for metric, value in expected["per_class"][name].items():
            got = summary["per_class"][name][metric]
            assert (np.isnan(value) and np.isnan(got)) or got == pytest.approx(value), (name, metric)
    on_disk = json.loads((run / "eval" / "metrics.json").read_text())
    assert on_disk["mean"]["dice"] == pytest.approx(summary["mean"]["dice"])
    rows = list(csv.DictReader((run / "eval" / "per_image.csv").open()))
    assert len(rows) == 10 and "dice_wbc_nucleus" in rows[0] and "hd95_red_cell" in rows[0]
    overlays = sorted(p.name for p in (run / "eval" / "overlays").glob("*.png"))
    assert len(overlays) == 6 and overlays[0].startswith("best_1_") and overlays[-1].startswith("worst_3_")


def test_default_split_on_training_data_is_val(trained_run: Path, tmp_path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    summary = evaluate(run, device="cpu")
    val = json.loads((run / "splits.json").read_text())["val"]
    assert summary["split"] == "val" and summary["num_images"] == len(val)


def test_other_classes_are_refused(trained_run: Path, tmp_path):
    root = tmp_path / "x"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "cell": 1}}))
    with pytest.raises(DataError, match="differ from the run's"):
        evaluate(trained_run, root, device="cpu")
