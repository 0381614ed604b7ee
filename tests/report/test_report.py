"""Plots and the self-contained HTML report, on synthetic run folders."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from medseg.errors import RunError
from medseg.io import write_image
from medseg.report import (
    build_report,
    plot_per_class_bars,
    plot_training_curves,
    read_metrics_csv,
    write_gif,
)
from medseg.report.plots import best_epoch, metric_columns

CONFIG = """\
task: semantic
data:
  path: /data/Dataset001_Cells
  labels: {background: 0, nucleus: 1, membrane: 2}
  colors: {nucleus: [230, 20, 20]}
  normalization: percentile
model: {name: unet_tiny}
loss: {dice_weight: 1.0, ce_weight: 1.0}
train: {epochs: 50, lr: 0.001, batch_size: 4}
augment: {flip: true}
"""

EVAL_METRICS = {
    "dataset": "Dataset001_Cells",
    "num_images": 12,
    "per_class": {
        "nucleus": {"dice": 0.8123, "iou": 0.6842, "sensitivity": 0.9, "specificity": 0.99,
                    "precision": 0.75, "accuracy": 0.97, "hd95": 4.25},
        "membrane": {"dice": 0.6511, "iou": 0.4828, "sensitivity": 0.7, "specificity": 0.98,
                     "precision": None, "accuracy": 0.95, "hd95": None},
    },
    "mean": {"dice": 0.7317, "iou": 0.5835, "sensitivity": 0.8, "specificity": 0.985,
             "precision": 0.75, "accuracy": 0.96, "hd95": 4.25},
}  # fmt: skip


class StrictParser(HTMLParser):
    """Collects <img> sources and checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "source", "wbr"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> while open: {self.stack[-3:]}")
        else:
            self.stack.pop()


def parse(html_text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(html_text)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


def write_metrics_csv(path, epochs=5):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds",
                         "val_dice_nucleus", "val_dice_membrane"])  # fmt: skip
        for epoch in range(1, epochs + 1):
            dice = 0.5 + 0.08 * epoch - (0.1 if epoch == 5 else 0.0)  # best at epoch 4
            writer.writerow([epoch, 1.0 / epoch, 1.1 / epoch, f"{dice:.4f}", 1e-3, 2.5,
                             f"{dice + 0.05:.4f}", f"{dice - 0.05:.4f}"])  # fmt: skip


@pytest.fixture
def full_run(tmp_path):
    run = tmp_path / "run_a"
    run.mkdir()
    (run / "config.yaml").write_text(CONFIG)
    write_metrics_csv(run / "metrics.csv")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.pt").write_bytes(b"x" * 2500)
    (run / "train_summary.json").write_text(json.dumps({
        "best_epoch": 4, "best_metric": 0.82, "monitor": "val_dice", "epochs_run": 5, "seconds": 75.0,
        "stopped_early": False, "device": "cpu", "amp": "off",
    }))  # fmt: skip
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps(EVAL_METRICS))
    with open(run / "eval" / "per_image.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "dice", "iou"])
        for index in range(12):
            name = "case<7>" if index == 7 else f"case_{index:02d}"
            writer.writerow([name, f"{0.40 + 0.05 * index:.4f}", f"{0.3 + 0.04 * index:.4f}"])
    rng = np.random.default_rng(0)
    for name in ("best_1_case_11", "worst_2_case_01", "worst_1_case_00"):
        write_image(run / "eval" / "overlays" / f"{name}.png", rng.integers(0, 256, (20, 40, 3), np.uint8))
    frames = [np.full((10, 10, 3), value, np.uint8) for value in (0, 120, 250)]
    write_gif(frames, run / "snapshots" / "progress.gif")
    return run


def test_build_report_full_run(full_run):
    path = build_report(full_run)
    assert path == full_run / "report.html"
    text = path.read_text(encoding="utf-8")
    parser = parse(text)

    # summary, evaluation numbers (3 decimals, null as a dash), worst cases
    assert "unet_tiny" in text and "run_a" in text and "/data/Dataset001_Cells" in text
    assert "epoch 4: val_dice 0.820" in text and "2.5 kB" in text
    for number in ("0.812", "0.684", "0.651", "0.732", "4.250"):
        assert number in text
    assert '<td class="num">—</td>' in text
    assert "0.8123" not in text
    assert "case&lt;7&gt;" in text and "case<7>" not in text  # escaped
    worst_table = text[text.index("worst of 12") :]
    for index in range(10):
        name = "case&lt;7&gt;" if index == 7 else f"case_{index:02d}"
        assert name in worst_table
    assert "case_10" not in worst_table.split("</table>")[0]  # only the 10 worst are listed

    # pictures: curves, bars, 2 colour keys, 3 overlays worst first, the GIF; all embedded
    assert len(parser.images) == 8
    assert all(src.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for src in parser.images)
    assert sum(src.startswith("data:image/gif") for src in parser.images) == 1
    assert text.index("worst 1: case_00") < text.index("worst 2: case_01") < text.index("best 1: case_11")
    assert (full_run / "plots" / "training_curves.png").is_file()
    assert (full_run / "plots" / "per_class_bars.png").is_file()

    # self-contained: nothing to fetch
    assert 'src="http' not in text and 'href="http' not in text
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert "section-error" not in text.split("</style>")[1]
    assert "not evaluated yet" not in text and "not trained yet" not in text


def test_build_report_without_config_is_a_run_error(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    with pytest.raises(RunError, match=re.escape(f"{tmp_path}: not a medseg run (no config.yaml)")):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_build_report_config_only(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    text = build_report(tmp_path).read_text(encoding="utf-8")
    parser = parse(text)
    assert "not evaluated yet" in text and "medseg evaluate" in text
    assert "not trained yet" in text
    assert parser.images == []
    assert "none yet" in text  # no checkpoints
    assert "section-error" not in text.split("</style>")[1]
    assert "<details>" in text and "normalization: percentile" in text  # the full config


def test_build_report_survives_a_corrupt_file(full_run):
    (full_run / "eval" / "metrics.json").write_text("{not json")
    text = build_report(full_run).read_text(encoding="utf-8")
    parse(text)
    body = text.split("</style>")[1]
    assert "section-error" in body and "metrics.json: cannot read JSON" in body
    assert "epoch 4: val_dice 0.820" in text  # the rest still renders


def test_read_metrics_csv_and_best_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss,val_loss,val_dice\n1,0.9,0.8,\n2,0.7,0.9,0.6\n3,0.5,0.85,0.55\n")
    columns = read_metrics_csv(path)
    assert list(columns) == ["epoch", "train_loss", "val_loss", "val_dice"]
    assert np.isnan(columns["val_dice"][0])
    assert best_epoch(columns) == (2, "val_dice", 0.6)
    columns.pop("val_dice")
    assert best_epoch(columns) == (1, "val_loss", 0.8)


def test_metric_columns_splits_means_and_per_class():
    names = ["epoch", "train_loss", "val_loss", "val_dice", "val_iou", "val_dice_nucleus", "val_iou_cell",
             "val_hd95", "lr"]  # fmt: skip
    means, per_class = metric_columns(dict.fromkeys(names))
    assert means == ["val_dice", "val_iou", "val_hd95"]
    assert per_class == ["val_dice_nucleus", "val_iou_cell"]


def test_plot_training_curves_writes_a_png(tmp_path):
    write_metrics_csv(tmp_path / "metrics.csv")
    out = plot_training_curves(tmp_path / "metrics.csv", tmp_path / "plots" / "curves.png")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert 900 <= image.width <= 1100 and 350 <= image.height <= 450
    with pytest.raises(RunError, match="file not found"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    (tmp_path / "empty.csv").write_text("epoch,train_loss\n")
    with pytest.raises(RunError, match="no epochs"):
        plot_training_curves(tmp_path / "empty.csv", tmp_path / "x.png")


def test_plot_per_class_bars(tmp_path):
    out = plot_per_class_bars(EVAL_METRICS, tmp_path / "bars.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width >= 400
    with pytest.raises(ValueError, match="no per-class"):
        plot_per_class_bars({"per_class": {}}, tmp_path / "none.png")


def test_importing_report_loads_neither_torch_nor_matplotlib():
    code = "import sys, medseg.report; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
