from pathlib import Path

import numpy as np
from PIL import Image

from medseg.io import write_image
from medseg.workflows.snapshots import pick_snapshot_case, write_progress_gif


def test_pick_snapshot_case_prefers_all_classes_and_visible_rare_class():
    a = np.zeros((10, 10), int)
    a[:5] = 1
    b = a.copy()
    b[9, 9] = 2  # both classes, but class 2 is one pixel
    c = a.copy()
    c[8:, 8:] = 2  # both classes, class 2 larger
    assert pick_snapshot_case([a, b, c]) == 2


def test_progress_gif_subsamples_and_scales(tmp_path: Path):
    for epoch in range(1, 51):
        write_image(tmp_path / f"epoch_{epoch:03d}.png", np.full((20, 1000, 3), epoch * 5, np.uint8))
    path = write_progress_gif(tmp_path, max_frames=10, max_width=500)
    with Image.open(path) as gif:
        assert gif.n_frames == 10
        assert gif.size == (500, 10)
    assert write_progress_gif(tmp_path / "empty") is None


def test_trained_run_has_one_snapshot_per_epoch(trained_run: Path):
    snaps = sorted(p.name for p in (trained_run / "snapshots").glob("epoch_*.png"))
    assert snaps == ["epoch_001.png", "epoch_002.png"]
    with Image.open(trained_run / "snapshots" / "progress.gif") as gif:
        assert gif.n_frames == 2
