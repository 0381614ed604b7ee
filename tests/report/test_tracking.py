"""Pictures of tracks: lineage layout, track frames, the movie GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medseg.report.overlays import instance_colors
from medseg.report.tracking import lineage_order, movie_to_uint8, plot_lineage, track_frame, write_track_gif

# 1 divides into 2 and 3; 3 vanishes and continues as 5; 4 is alone
TABLE = np.array([[1, 0, 4, 0], [2, 5, 9, 1], [3, 5, 6, 1], [4, 2, 9, 0], [5, 8, 9, 3]])


def test_lineage_order_puts_children_beside_their_parent():
    rows = lineage_order(TABLE)
    assert rows[2] == 0 and rows[5] == 1 and rows[4] == 2  # leaves top to bottom, tree by tree
    assert rows[3] == rows[5]  # a gap continuation is an only child: same row as its parent
    assert rows[1] == (rows[2] + rows[3]) / 2  # a mother sits between her daughters
    assert lineage_order(np.zeros((0, 4), np.int64)) == {}
    chain = np.array([[k, k, k, k - 1] for k in range(1, 3001)])  # deep lineage: no recursion limit
    assert len(lineage_order(chain)) == 3000


def test_plot_lineage_writes_a_png(tmp_path: Path):
    path = plot_lineage(TABLE, tmp_path / "lineage.png")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] == 900 and image.shape[0] >= 250
    assert (np.abs(image.astype(int) - instance_colors([4])[0]).sum(-1) < 10).any()  # track 4's colour


def test_track_frame_outlines_each_track_in_its_colour_and_enlarges_small_frames():
    tracks = np.zeros((64, 64), np.int32)
    tracks[10:30, 10:30] = 7
    frame = track_frame(np.full((64, 64), 40, np.uint8), tracks, frame=3)
    assert frame.shape == (384, 384, 3)  # 6x: small movies are enlarged for readable ids
    colour = instance_colors([7])[0]
    assert (frame[60] == colour).all(-1).sum() >= 2  # the outline crosses row 10 * 6
    assert (frame[90, 150] == 40).all() and (frame[300, 300] == 40).all()  # inside and outside: no fill


def test_movie_to_uint8_uses_one_window_for_all_frames():
    movie = np.stack([np.full((4, 4), 100, np.uint16), np.full((4, 4), 1100, np.uint16)])
    movie[0, 0, 0] = 1100
    scaled = movie_to_uint8(movie)
    assert scaled.dtype == np.uint8 and scaled[0, 1, 1] < 30 and scaled[1, 1, 1] > 225


def test_write_track_gif_subsamples_long_movies(tmp_path: Path):
    tracks = np.zeros((10, 32, 32), np.int32)
    tracks[:, 5:15, 5:15] = 1
    path = write_track_gif(np.zeros((10, 32, 32), np.uint16), tracks, tmp_path / "t.gif", max_frames=4)
    assert Image.open(path).n_frames == 4  # every 3rd frame: 0, 3, 6, 9
