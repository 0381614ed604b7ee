"""Animated GIFs of training progress: one comparison panel per epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.data.regions import Regions
from medseg.io import atomic_path
from medseg.report.overlays import comparison_panel, image_to_rgb8

_LAST_FRAME_HOLD = 3  # the final state stays on screen longer before the loop restarts


def write_gif(
    frames: Sequence[np.ndarray],
    path: str | os.PathLike[str],
    *,
    duration_ms: int = 400,
    loop: int = 0,
) -> Path:
    """Write frames as an animated GIF, atomically.

    Args:
        frames: ``(H, W, 3)`` uint8 images (other shapes and dtypes go through
            :func:`~medseg.report.overlays.image_to_rgb8`); sizes may differ: every frame is padded with
            white on the right and bottom to the largest size.
        path: the ``.gif`` to write; parent folders are created.
        duration_ms: display time per frame; the last frame is held 3x longer.
        loop: number of repeats, 0 = forever.

    Returns:
        ``path`` as a Path.
    """
    from PIL import Image

    path = Path(path)
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to write")
    rgb = [image_to_rgb8(frame) for frame in frames]
    height = max(frame.shape[0] for frame in rgb)
    width = max(frame.shape[1] for frame in rgb)
    images = []
    for frame in rgb:
        canvas = np.full((height, width, 3), 255, np.uint8)
        canvas[: frame.shape[0], : frame.shape[1]] = frame
        # one adaptive palette per frame, no dithering: overlays are flat colours and dither looks noisy
        images.append(
            Image.fromarray(canvas).quantize(
                colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
            )
        )
    durations = [int(duration_ms)] * len(images)
    durations[-1] = int(duration_ms) * _LAST_FRAME_HOLD
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=int(loop),
            disposal=1,
        )
    return path


def snapshot_frame(
    image: np.ndarray,
    y_true: np.ndarray | None,
    y_pred: np.ndarray,
    colors: Sequence[Sequence[int]] | None,
    *,
    epoch: int,
    score: float | None,
    regions: Regions | None = None,
) -> np.ndarray:
    """One GIF frame: a comparison panel captioned ``"epoch 7  val dice 0.83"``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        y_true: ``(H, W)`` class ids, or ``None``.
        y_pred: ``(H, W)`` class ids predicted after ``epoch``.
        colors: ``(r, g, b)`` per class id.
        epoch: the epoch number shown.
        score: validation dice after that epoch, or ``None`` when not measured.
        regions: overlapping classes: ``y_true`` and ``y_pred`` are mask values.

    Returns:
        ``(H', W', 3)`` uint8.
    """
    caption = f"epoch {epoch}"
    if score is not None and np.isfinite(score):
        caption += f"  val dice {score:.2f}"
    return comparison_panel(image, y_true, y_pred, colors, caption=caption, regions=regions)
