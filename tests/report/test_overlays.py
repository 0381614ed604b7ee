"""Overlays, panels, legends and GIFs: exact colours on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medseg.report import (
    ERROR_COLORS,
    class_colors,
    color_overlay,
    comparison_panel,
    default_colors,
    error_overlay,
    image_to_rgb8,
    legend_image,
    snapshot_frame,
    write_gif,
)

# 4x4 hand-made case: class ids 0 (background), 1, 2
Y_TRUE = np.array(
    [
        [0, 1, 1, 0],
        [0, 1, 2, 0],
        [0, 0, 2, 2],
        [0, 0, 0, 0],
    ]
)
Y_PRED = np.array(
    [
        [0, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 2, 0],
        [0, 0, 0, 0],
    ]
)
TP = [(0, 1), (1, 1), (2, 2)]
FN = [(0, 2), (2, 3)]
FP = [(1, 0)]
WRONG = [(1, 2)]


def test_error_overlay_pure_colours_at_each_error_kind():
    out = error_overlay(np.zeros((4, 4), np.uint8), Y_TRUE, Y_PRED, alpha=1.0)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    expected = np.zeros((4, 4, 3), np.uint8)
    for positions, name in [(TP, "true positive"), (FN, "false negative"), (FP, "false positive")]:
        for r, c in positions:
            expected[r, c] = ERROR_COLORS[name]
    expected[WRONG[0]] = ERROR_COLORS["wrong class"]
    np.testing.assert_array_equal(out, expected)
    # the colours are what the legend promises: green, red, blue, yellow
    r, g, b = out[TP[0]].astype(int)
    assert g > r + 100 and g > b + 100
    r, g, b = out[FP[0]].astype(int)
    assert r > g + 100 and r > b + 100
    r, g, b = out[FN[0]].astype(int)
    assert b > r + 100 and b > g + 50
    r, g, b = out[WRONG[0]].astype(int)
    assert r > 200 and g > 180 and b < 60


def test_error_overlay_blends_and_keeps_background_as_dimmed_grey():
    image = np.full((4, 4), 200, np.uint8)
    image[3, 3] = 40
    out = error_overlay(image, Y_TRUE, Y_PRED, alpha=0.6).astype(int)
    background = out[0, 0]
    assert background[0] == background[1] == background[2]
    assert 100 < background[0] < 200  # greyed a bit, not black, not the raw value
    assert out[3, 3, 0] < background[0]  # still shows the image
    grey = background[0]
    for (r, c), name in [(TP[0], "true positive"), (FP[0], "false positive"), (FN[0], "false negative")]:
        expected = np.round(0.4 * grey + 0.6 * np.array(ERROR_COLORS[name]))
        np.testing.assert_allclose(out[r, c], expected, atol=1)


def test_error_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="y_pred has shape"):
        error_overlay(np.zeros((4, 4)), Y_TRUE, Y_PRED[:3])


def test_color_overlay_without_outline_blends_only_foreground():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    labels = np.zeros((6, 7), np.int32)
    labels[1:4, 2:5] = 1
    labels[5, 0] = 2
    colors = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    out = color_overlay(image, labels, colors, alpha=0.5, outline=False)
    np.testing.assert_array_equal(out[labels == 0], image[labels == 0])
    expected = np.round(0.5 * image[labels == 1] + 0.5 * np.array([255, 0, 0]))
    np.testing.assert_allclose(out[labels == 1], expected, atol=0.51)
    expected = np.round(0.5 * image[5, 0] + 0.5 * np.array([0, 0, 255]))
    np.testing.assert_allclose(out[5, 0], expected, atol=0.51)


def test_color_overlay_outline_is_pure_colour_inside_objects_only():
    image = np.full((7, 7), 100, np.uint8)
    labels = np.zeros((7, 7), np.int32)
    labels[1:6, 1:6] = 1
    out = color_overlay(image, labels, [(0, 0, 0), (0, 255, 0)], alpha=0.5, outline=True)
    np.testing.assert_array_equal(out[labels == 0], 100)  # outline drawn inside, background untouched
    np.testing.assert_array_equal(out[1, 1], [0, 255, 0])  # boundary: full opacity
    np.testing.assert_array_equal(out[3, 3], [50, 178, 50])  # interior: blended (100 + 255) / 2 rounds to 178


def test_color_overlay_fills_in_missing_colours():
    labels = np.array([[0, 3]])
    out = color_overlay(np.zeros((1, 2), np.uint8), labels, [(0, 0, 0)], alpha=1.0, outline=False)
    np.testing.assert_array_equal(out[0, 1], default_colors(4)[3])


def test_image_to_rgb8_uint16_grey_is_rescaled_to_full_range():
    image = np.linspace(1000, 5000, 100 * 100).reshape(100, 100).astype(np.uint16)
    out = image_to_rgb8(image)
    assert out.shape == (100, 100, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # monotonic
    assert 120 <= out[50, 0, 0] <= 135  # the middle value lands mid-grey


def test_image_to_rgb8_float_with_nan_and_channel_counts():
    image = np.random.default_rng(1).normal(size=(20, 30)).astype(np.float32)
    image[0, 0] = np.nan
    out = image_to_rgb8(image)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out.max() == 255 and out.min() == 0
    two = image_to_rgb8(np.stack([image, -image], axis=-1))
    assert two.shape == (20, 30, 3) and np.all(two[..., 2] == 0)
    rgba = np.random.default_rng(2).integers(0, 256, (5, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb8(rgba), rgba[..., :3])
    constant = image_to_rgb8(np.full((3, 3), 7.5))
    np.testing.assert_array_equal(constant, 0)


def test_image_to_rgb8_keeps_uint8_rgb_unchanged():
    rgb = np.random.default_rng(3).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb8(rgb), rgb)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(image_to_rgb8(grey)[..., 1], grey)


def test_default_colors_background_black_and_distinct():
    colors = default_colors(40)
    assert len(colors) == 40 and colors[0] == (0, 0, 0)
    assert len(set(colors)) == 40
    assert all(all(0 <= v <= 255 for v in color) for color in colors)


def test_class_colors_uses_config_colours_and_fills_the_rest():
    table = class_colors({"background": 0, "nucleus": 1, "membrane": 3}, {"membrane": [10, 20, 30]})
    assert len(table) == 4
    assert table[3] == (10, 20, 30)
    assert table[1] == default_colors(2)[1]


def test_comparison_panel_upscales_small_images_and_drops_truth_tiles():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    labels = np.zeros((32, 32), np.int32)
    labels[8:20, 8:20] = 1
    full = comparison_panel(image, labels, labels, None, caption="case_7  dice 0.91")
    short = comparison_panel(image, None, labels, None)
    assert full.dtype == np.uint8 and full.ndim == 3 and full.shape[2] == 3
    assert full.shape[0] > 192 and short.shape[0] > 192  # 32 px tiles enlarged 6x to 192 px
    assert full.shape[1] > 4 * 192 and 2 * 192 < short.shape[1] < 3 * 192
    assert full.shape[0] > short.shape[0]  # the caption line
    # the image tile is in there, enlarged to 6x6 blocks of the original pixels
    assert contains(full[..., 0], np.kron(image, np.ones((6, 6), np.uint8)))
    assert contains(short[..., 0], np.kron(image, np.ones((6, 6), np.uint8)))


def contains(panel: np.ndarray, tile: np.ndarray) -> bool:
    """Whether ``tile`` occurs in ``panel`` at some offset (checked at a few pixels, then in full)."""
    h, w = tile.shape
    ph, pw = panel.shape[0] - h + 1, panel.shape[1] - w + 1
    candidates = np.ones((ph, pw), bool)
    for r, c in [(0, 0), (h - 1, w - 1), (h // 2, w // 3), (h // 3, w - 2)]:
        candidates &= panel[r : r + ph, c : c + pw] == tile[r, c]
    return any(np.array_equal(panel[y : y + h, x : x + w], tile) for y, x in np.argwhere(candidates))


def test_comparison_panel_shrinks_large_images():
    image = np.zeros((1000, 800), np.uint8)
    labels = np.zeros((1000, 800), np.int32)
    panel = comparison_panel(image, labels, labels, None, max_tile=400)
    assert panel.shape[0] < 500 and panel.shape[1] < 4 * 400 + 60


def test_legend_image_shows_each_colour():
    strip = legend_image(["nucleus", "membrane"], [(255, 0, 0), (0, 0, 255)])
    assert strip.ndim == 3 and strip.shape[0] < 60 and strip.shape[1] > 60
    flat = strip.reshape(-1, 3)
    assert np.any(np.all(flat == [255, 0, 0], axis=1)) and np.any(np.all(flat == [0, 0, 255], axis=1))


def test_write_gif_frames_sizes_and_durations(tmp_path):
    frames = [
        np.full((20, 30, 3), (255, 0, 0), np.uint8),
        np.full((25, 20, 3), (0, 255, 0), np.uint8),
        np.full((10, 10, 3), (0, 0, 255), np.uint8),
    ]
    path = write_gif(frames, tmp_path / "sub" / "progress.gif", duration_ms=200)
    assert path == tmp_path / "sub" / "progress.gif"
    assert [p.name for p in path.parent.iterdir()] == ["progress.gif"]  # no temp file left
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        assert gif.size == (30, 25)  # padded to the largest width and height
        durations, pixels = [], []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
            rgb = gif.convert("RGB")
            pixels.append((rgb.getpixel((0, 0)), rgb.getpixel((29, 24))))
        assert gif.info.get("loop") == 0
    assert durations == [200, 200, 600]
    assert pixels[0] == ((255, 0, 0), (255, 255, 255))
    assert pixels[1][0] == (0, 255, 0)
    assert pixels[2] == ((0, 0, 255), (255, 255, 255))


def test_write_gif_rejects_no_frames(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_gif([], tmp_path / "x.gif")


def test_snapshot_frame_captions_epoch():
    image = np.zeros((16, 16), np.uint8)
    labels = np.zeros((16, 16), np.int32)
    labels[4:8, 4:8] = 1
    one = snapshot_frame(image, labels, labels, None, epoch=1, score=0.5)
    two = snapshot_frame(image, labels, labels, None, epoch=2, score=0.5)
    unscored = snapshot_frame(image, labels, labels, None, epoch=1, score=None)
    assert one.shape == two.shape
    assert not np.array_equal(one, two)  # only the caption differs
    assert not np.array_equal(one, unscored)
    caption_rows = slice(0, 20)
    np.testing.assert_array_equal(one[40:], two[40:])
    assert not np.array_equal(one[caption_rows], two[caption_rows])


def test_display_channels_show_each_source_channels_centre_slice():
    from medseg.report import display_channels

    image = np.arange(2 * 2 * 6).reshape(2, 2, 6)  # 2 source channels x 3 slices (context 1)
    np.testing.assert_array_equal(display_channels(image, 1), image[..., [1, 4]])
    assert display_channels(image, 0) is image
    assert display_channels(image[..., :5], 1).shape == (2, 2, 5)  # not 2.5D-shaped: unchanged
