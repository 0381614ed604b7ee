"""`medseg track` and `medseg evaluate-tracking` end to end on a small phantom movie."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medseg.cli import main
from medseg.io.ctc import read_ctc_ground_truth, read_label_frames, read_track_table


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def movie(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 96 px nuclei movie in CTC layout (read-only)."""
    out = tmp_path_factory.mktemp("movie") / "movie"
    assert run_cli("phantom", "nuclei", "--frames", 12, "--size", 96, "--seed", 2, "--out", out) == 0
    return out


def test_tracking_ground_truth_masks_reproduces_the_ground_truth(movie: Path, tmp_path: Path, capsys):
    out = tmp_path / "res"
    assert (
        run_cli(
            "track", "--masks", movie / "01_GT" / "SEG", movie / "01", "--out", out, "--gt", movie / "01_GT"
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "TRA 1.0000" in printed or "TRA 0.99" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["det"] == 1.0 and metrics["seg"] == 1.0 and metrics["tra"] > 0.98
    truth = read_ctc_ground_truth(movie / "01_GT")
    masks = read_label_frames(out, "mask")
    table = read_track_table(out / "res_track.txt")
    assert masks.shape == truth.tra.shape and set(np.unique(masks)) - {0} == set(table[:, 0].tolist())
    # the same objects, relabelled by track
    np.testing.assert_array_equal(masks > 0, truth.tra > 0)
    summary = json.loads((out / "tracking.json").read_text())
    assert summary["frames"] == 12 and summary["tracks"] == len(table)
    with open(out / "tracks.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["track", "frame", "centroid_y", "centroid_x", "area", "parent"]
    assert len(rows) == sum(np.count_nonzero(np.unique(frame)) for frame in masks)
    first = next(r for r in rows if r["frame"] == "0")
    ys, xs = np.nonzero(masks[0] == int(first["track"]))
    assert float(first["centroid_y"]) == pytest.approx(ys.mean(), abs=0.01)
    assert float(first["centroid_x"]) == pytest.approx(xs.mean(), abs=0.01)
    assert int(first["area"]) == ys.size
    html = (out / "report.html").read_text()
    assert "Lineage" in html and "TRA" in html and "data:image/gif;base64," in html
    assert (out / "tracks.gif").stat().st_size > 1000 and (out / "lineage.png").is_file()


def test_evaluate_tracking_scores_a_result_and_rewrites_the_report(movie: Path, tmp_path: Path, capsys):
    out = tmp_path / "res"
    assert run_cli("track", "--masks", movie / "01_GT" / "TRA", "--out", out) == 0
    assert not (out / "metrics.json").exists() and "Scores" not in (out / "report.html").read_text()
    # drop one object from one frame: DET and TRA fall, the command still scores it
    masks = read_label_frames(out, "mask")
    table = read_track_table(out / "res_track.txt")
    assert run_cli("evaluate-tracking", out, movie / "01_GT") == 0
    perfect = json.loads((out / "metrics.json").read_text())
    assert "Scores" in (out / "report.html").read_text()
    victim = int(table[table[:, 2] - table[:, 1] >= 4][0, 0])  # a track of at least 5 frames
    frame = int(table[table[:, 0] == victim][0, 1]) + 2
    masks[frame][masks[frame] == victim] = 0  # a hole inside the track: a gap, now an invalid result
    tifffile.imwrite(out / f"mask{frame:03d}.tif", masks[frame].astype(np.uint16))
    assert run_cli("evaluate-tracking", out, movie / "01_GT") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(out) in error[0] and f"frame {frame}" in error[0]
    assert perfect["det"] == 1.0


def test_track_errors_are_one_line(movie: Path, tmp_path: Path, capsys):
    assert run_cli("track", movie / "01", "--out", tmp_path / "a") == 2  # a run without the movie
    assert "RUN FRAMES" in capsys.readouterr().err
    assert run_cli("track", "--masks", tmp_path / "nothing", "--out", tmp_path / "b") == 2
    assert "no such file or folder" in capsys.readouterr().err
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((12, 10, 10), np.uint16))
    assert run_cli("track", "--masks", small, movie / "01", "--out", tmp_path / "c") == 2
    assert "label movie is 12 x 10 x 10" in capsys.readouterr().err
    assert run_cli("track", "--masks", small, "--out", tmp_path / "d", "--set", "max_gap=-1") == 2
    assert "max_gap" in capsys.readouterr().err
    assert run_cli("track", "--masks", small, "--out", tmp_path / "e", "--set", "speed=3") == 2
    assert "unknown tracking parameter" in capsys.readouterr().err


def test_a_semantic_run_cannot_track(trained_run: Path, movie: Path, tmp_path: Path, capsys):
    assert run_cli("track", trained_run, movie / "01", "--out", tmp_path / "res") == 2
    assert "tracking needs an instance run" in capsys.readouterr().err


def test_tracking_with_an_instance_run_segments_every_frame(movie: Path, tmp_path: Path):
    from medseg.workflows.track import track

    data, run = tmp_path / "data", tmp_path / "run"
    assert run_cli("phantom", "nuclei", "--out", data, "--n", 4, "--size", 64, "--seed", 1) == 0
    tiny = ["--model", "unet_tiny", "--set", "data.patch_size=[48,48]", "--set", "train.progress=false"]
    assert run_cli("train", data, *tiny, "--epochs", 1, "--set", "instance.tune=off", "--out", run) == 0
    summary = track(tmp_path / "res", run=run, frames=movie / "01", gt=movie / "01_GT")
    assert summary["frames"] == 12 and summary["segmentation"] == {"run": str(run)}
    assert 0.0 <= summary["metrics"]["tra"] <= 1.0  # one epoch: a poor but valid, scored result
    assert read_label_frames(tmp_path / "res", "mask").shape == (12, 96, 96)


def test_scores_on_the_phantom_equal_py_ctcmetrics(movie: Path, tmp_path: Path):
    """A degraded segmentation of the phantom movie, tracked, scored by us and by py-ctcmetrics."""
    import contextlib
    import io
    import warnings

    evaluate_sequence = pytest.importorskip("ctc_metrics.scripts.evaluate").evaluate_sequence
    from scipy import ndimage

    rng = np.random.default_rng(0)
    truth = read_label_frames(movie / "01_GT" / "SEG", "man_seg")
    degraded = np.zeros_like(truth)
    for t, frame in enumerate(truth):
        for label in np.unique(frame)[1:]:
            if rng.random() < 0.06:  # missed
                continue
            mask = frame == label
            if rng.random() < 0.3:  # a rougher outline
                mask = ndimage.binary_erosion(mask)
            degraded[t][mask] = rng.integers(1, 60000)
    masks = tmp_path / "seg.tif"
    tifffile.imwrite(masks, degraded.astype(np.uint16))
    out = tmp_path / "res"
    assert run_cli("track", "--masks", masks, "--out", out, "--gt", movie / "01_GT") == 0
    ours = json.loads((out / "metrics.json").read_text())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        ref = evaluate_sequence(
            str(out), str(movie / "01_GT"), metrics=["Valid", "DET", "SEG", "TRA"], threads=1
        )
    assert ref["Valid"] == 1 and 0.5 < ours["tra"] < 1.0
    for key in ("det", "seg", "tra"):
        assert ours[key] == pytest.approx(ref[key.upper()], abs=1e-6), key
