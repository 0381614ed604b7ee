"""The command line end to end on a tiny phantom set, and its handling of bad input."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.io import read_image, read_label, write_image

TINY = [
    "--model",
    "unet_tiny",
    "--set",
    "data.patch_size=[48,48]",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.batch_size=4",
]


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_version_and_help_do_not_import_torch():
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom medseg.cli import build_parser\nbuild_parser().format_help()\n"
            "assert 'torch' not in sys.modules, 'torch imported'",
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    version = subprocess.run([sys.executable, "-m", "medseg", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("medseg 0.")


def test_end_to_end(tmp_path: Path, capsys):
    data, run, pred = tmp_path / "data", tmp_path / "run", tmp_path / "pred"
    assert run_cli("phantom", "blood", "--out", data, "--n", 6, "--size", 64, "--seed", 5) == 0
    assert run_cli("data", "check", data) == 0
    assert "no problems found" in capsys.readouterr().out
    assert run_cli("train", data, *TINY, "--epochs", 2, "--out", run) == 0
    for name in (
        "config.yaml",
        "splits.json",
        "metrics.csv",
        "train_summary.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "snapshots/epoch_002.png",
        "snapshots/progress.gif",
    ):
        assert (run / name).is_file(), name
    assert run_cli("evaluate", run) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_images"] == len(
        json.loads((run / "splits.json").read_text())["val"]
    )
    assert set(metrics["per_class"]) == {"background", "red_cell", "wbc_cytoplasm", "wbc_nucleus"}
    assert list((run / "eval" / "overlays").glob("worst_1_*.png"))
    assert run_cli("predict", run, data / "imagesTr", "--out", pred) == 0
    rows = list(csv.DictReader((pred / "summary.csv").open()))
    assert len(rows) == 6
    mask = read_label(pred / "masks" / "blood_000.png")
    assert mask.shape == (64, 64) and mask.max() <= 3
    assert read_image(pred / "overlays" / "blood_000.png").shape == (64, 64, 3)
    fractions = [
        float(rows[0][f"fraction_{c}"]) for c in ("background", "red_cell", "wbc_cytoplasm", "wbc_nucleus")
    ]
    assert sum(fractions) == pytest.approx(1.0, abs=1e-5)
    assert run_cli("report", run) == 0
    html = (run / "report.html").read_text()
    assert "wbc_nucleus" in html and "data:image/gif;base64" in html


def test_predict_matches_input_size_for_odd_sizes(trained_run: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "odd.png", rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    assert (
        run_cli(
            "predict", trained_run, tmp_path / "in" / "odd.png", "--out", tmp_path / "p", "--format", "tif"
        )
        == 0
    )
    assert read_label(tmp_path / "p" / "masks" / "odd.tif").shape == (37, 53)


def _one_line_error(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medseg: error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_one_line_and_exit_2(trained_run: Path, blood_dataset: Path, tmp_path: Path, capsys):
    capsys.readouterr()
    _one_line_error(
        capsys,
        run_cli("train", tmp_path / "missing", "--out", tmp_path / "r"),
        "missing: dataset folder not found",
    )
    _one_line_error(
        capsys,
        run_cli("train", blood_dataset, "--set", "train.lrr=1", "--out", tmp_path / "r"),
        "did you mean train.lr",
    )
    _one_line_error(
        capsys,
        run_cli("train", blood_dataset, "--model", "unte", "--out", tmp_path / "r2", *TINY[2:]),
        "unknown model 'unte'",
    )
    _one_line_error(capsys, run_cli("train", "--resume", "--out", tmp_path / "nothing"), "not a medseg run")
    _one_line_error(capsys, run_cli("evaluate", tmp_path), "not a medseg run (no config.yaml)")
    _one_line_error(
        capsys,
        run_cli("predict", trained_run, tmp_path / "nope.png", "--out", tmp_path / "o"),
        "nope.png: no such file or folder",
    )
    corrupt = tmp_path / "bad" / "corrupt.png"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    write_image(tmp_path / "bad" / "good.png", np.zeros((40, 40, 3), np.uint8))
    _one_line_error(
        capsys,
        run_cli("predict", trained_run, tmp_path / "bad", "--out", tmp_path / "o"),
        "corrupt.png: cannot read image",
        "1 other image(s) were written",
    )
    assert (tmp_path / "o" / "masks" / "good.png").is_file()
    write_image(tmp_path / "grey2.tif", np.zeros((40, 40, 2), np.uint8))
    _one_line_error(
        capsys,
        run_cli("predict", trained_run, tmp_path / "grey2.tif", "--out", tmp_path / "o2"),
        "grey2.tif: image has 2 channel(s) but the model expects 3",
    )
    broken = Path(shutil.copytree(blood_dataset, tmp_path / "broken"))
    write_image(broken / "labelsTr" / "blood_001.png", np.full((64, 64), 7, np.uint8))
    assert run_cli("data", "check", broken) == 2
    assert "label values [7]" in capsys.readouterr().err
    _one_line_error(
        capsys, run_cli("train", broken, *TINY, "--out", tmp_path / "r3"), "blood_001.png: label values [7]"
    )
    assert not (tmp_path / "r3" / "checkpoints").exists()


def test_debug_shows_traceback(tmp_path: Path):
    with pytest.raises(Exception, match="not a medseg run"):
        main(["evaluate", str(tmp_path), "--debug"])


def test_models_lists_parameter_counts(capsys):
    assert run_cli("models") == 0
    out = capsys.readouterr().out
    assert "unet_tiny" in out and "1,625,737" in out


def test_predict_with_tta_and_tiles(trained_run: Path, tmp_path: Path, capsys):
    rng = np.random.default_rng(2)
    write_image(tmp_path / "in" / "big.png", rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    assert (
        run_cli("predict", trained_run, tmp_path / "in", "--out", tmp_path / "p", "--tta", "--tile", 32) == 0
    )
    assert read_label(tmp_path / "p" / "masks" / "big.png").shape == (70, 90)
    _one_line_error(
        capsys,
        run_cli("predict", trained_run, tmp_path / "in", "--out", tmp_path / "q", "--set", "model.name=x"),
        "only inference.* settings",
    )
