"""Training edge cases: monitors, ignore labels, tiny or odd datasets, config mistakes."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import tiny_config

from medseg.cli import main
from medseg.config import load_config
from medseg.data.dataset import open_dataset
from medseg.errors import ConfigError, DataError, RunError
from medseg.io import read_label, write_image
from medseg.workflows.evaluate import evaluate
from medseg.workflows.train import train


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_val_loss_monitor_is_minimised(blood_dataset: Path, tmp_path: Path):
    run = train(blood_dataset, tiny_config("train.epochs=4", "train.monitor=val_loss"), tmp_path / "r")
    rows = _rows(run)
    losses = [float(r["val_loss"]) for r in rows]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["monitor"] == "val_loss"
    assert summary["best_epoch"] == int(np.argmin(losses)) + 1
    assert summary["best_metric"] == pytest.approx(min(losses), rel=1e-4)


def test_unknown_monitor_is_a_config_error(blood_dataset: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="train.monitor: 'val_dic' is not logged; choose one of"):
        train(blood_dataset, tiny_config("train.monitor=val_dic"), tmp_path / "r")


def test_patch_size_must_fit_the_model(blood_dataset: Path, tmp_path: Path, capsys):
    code = main(
        [
            "train",
            str(blood_dataset),
            "--model",
            "unet_tiny",
            "--set",
            "data.patch_size=[50,50]",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "data.patch_size: [50, 50] must be multiples of 4 for unet_tiny" in capsys.readouterr().err


def test_class_weights_length_is_a_config_error(blood_dataset: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="loss.class_weights: 2 values for 4 classes"):
        train(blood_dataset, tiny_config("loss.class_weights=[1,2]"), tmp_path / "r")


def test_train_does_not_modify_the_callers_config(blood_dataset: Path, tmp_path: Path):
    config = tiny_config("train.epochs=1")
    before = config.to_dict()
    train(blood_dataset, config, tmp_path / "r")
    assert config.to_dict() == before


def test_without_validation_cases_train_monitors_train_loss_and_evaluate_says_what_to_do(
    blood_dataset: Path, tmp_path: Path
):
    run = train(blood_dataset, tiny_config("data.val_fraction=0", "train.schedule=plateau"), tmp_path / "r")
    assert json.loads((run / "train_summary.json").read_text())["monitor"] == "train_loss"
    assert (run / "checkpoints" / "best.pt").is_file()
    with pytest.raises(RunError, match="without validation cases; use --split all"):
        evaluate(run, device="cpu")
    assert evaluate(run, split="all", device="cpu")["num_images"] == 10


def test_missing_split_file_is_a_run_error(trained_run: Path, tmp_path: Path):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    (run / "splits.json").unlink()
    with pytest.raises(RunError, match="splits.json: cannot read"):
        evaluate(run, device="cpu")


def test_resuming_an_early_stopped_run_changes_nothing(blood_dataset: Path, tmp_path: Path, capsys):
    # lr 0 never improves after the first epoch, so patience 1 stops after epoch 2
    config = tiny_config("train.epochs=6", "train.early_stopping=1", "train.lr=1e-12")
    run = train(blood_dataset, config, tmp_path / "r")
    rows = _rows(run)
    assert len(rows) < 6
    last = (run / "checkpoints" / "last.pt").read_bytes()
    train(blood_dataset, config, run, resume=True)
    assert "already stopped early" in capsys.readouterr().err
    assert _rows(run) == rows
    assert (run / "checkpoints" / "last.pt").read_bytes() == last


def _with_ignore_label(blood_dataset: Path, tmp_path: Path) -> Path:
    root = Path(shutil.copytree(blood_dataset, tmp_path / "data"))
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["ignore"] = 4
    (root / "dataset.json").write_text(json.dumps(meta))
    for label_path in (root / "labelsTr").glob("*.png"):
        label = read_label(label_path)
        label[:, :20] = 4  # the left third is unannotated
        write_image(label_path, label.astype(np.uint8))
    return root


def test_nnunet_ignore_label_is_not_a_class(blood_dataset: Path, tmp_path: Path):
    root = _with_ignore_label(blood_dataset, tmp_path)
    data = open_dataset(root)
    assert "ignore" not in data.labels and data.ignore_label == 4
    assert main(["data", "check", str(root)]) == 0
    run = train(root, tiny_config(), tmp_path / "r")
    config = load_config(run / "config.yaml")
    assert config.data.ignore_index == 4 and len(config.data.labels) == 4
    summary = evaluate(run, root, split="all", device="cpu")
    assert set(summary["per_class"]) == {"background", "red_cell", "wbc_cytoplasm", "wbc_nucleus"}


def test_all_ignored_batch_gives_a_finite_loss():
    import torch

    from medseg.losses import DiceCELoss

    loss = DiceCELoss(3, ignore_index=9)(torch.randn(2, 3, 8, 8), torch.full((2, 8, 8), 9))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_grey_image_among_rgb_is_a_data_error(blood_dataset: Path, tmp_path: Path):
    root = Path(shutil.copytree(blood_dataset, tmp_path / "data"))
    write_image(root / "imagesTr" / "blood_009_0000.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match=r"blood_009_0000.png: image has 1 channel\(s\) but"):
        train(root, tiny_config(), tmp_path / "r")


def test_four_digit_case_names_are_not_channels(tmp_path: Path):
    root = tmp_path / "ds"
    for i in range(1, 4):
        write_image(root / "imagesTr" / f"img_{i:04d}.png", np.zeros((8, 8, 3), np.uint8))
        write_image(root / "labelsTr" / f"img_{i:04d}.png", np.zeros((8, 8), np.uint8))
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "x": 1}})
    )
    data = open_dataset(root)
    assert [c.name for c in data.cases] == ["img_0001", "img_0002", "img_0003"]
    assert not data.orphan_labels


def test_single_class_dataset_is_refused(tmp_path: Path):
    root = tmp_path / "ds"
    write_image(root / "imagesTr" / "a_0000.png", np.zeros((32, 32, 3), np.uint8))
    write_image(root / "labelsTr" / "a.png", np.zeros((32, 32), np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(DataError, match="needs at least two classes"):
        train(root, tiny_config(), tmp_path / "r")


def test_debug_before_the_subcommand_is_honoured(tmp_path: Path):
    with pytest.raises(RunError):
        main(["--debug", "evaluate", str(tmp_path)])


def test_config_mistakes_from_values_are_exit_2(blood_dataset: Path, tmp_path: Path, capsys):
    assert (
        main(
            [
                "train",
                str(blood_dataset),
                "--set",
                "data.norm_low=99",
                "--set",
                "data.norm_high=1",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "data.norm_low/norm_high" in capsys.readouterr().err
    assert (
        main(["train", str(blood_dataset), "--set", "augment.affine_p=2", "--out", str(tmp_path / "r")]) == 2
    )
    assert "augment.affine_p" in capsys.readouterr().err


def test_dataset_group_by_is_used_unless_the_config_sets_one(blood_dataset: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(blood_dataset, data)
    meta = json.loads((data / "dataset.json").read_text())
    meta.setdefault("medseg", {})["group_by"] = r"^blood_00(\d)"  # as an importer writes it
    (data / "dataset.json").write_text(json.dumps(meta))
    run = train(data, tiny_config("train.epochs=1"), tmp_path / "r")
    assert "group_by: ^blood_00(\\d)" in (run / "config.yaml").read_text()
    splits = json.loads((run / "splits.json").read_text())
    assert splits["group_by"] == r"^blood_00(\d)"
    explicit = train(data, tiny_config("train.epochs=1", "data.group_by=^(blood)_"), tmp_path / "r2")
    assert json.loads((explicit / "splits.json").read_text())["group_by"] == "^(blood)_"
