"""Pictures of cell tracks: movie frames with outlines coloured by track, and the lineage tree.

A track keeps its colour from frame to frame (:func:`~medseg.report.overlays.instance_colors` of its
label), and daughters get their own colours, so a division shows as one outline turning into two others.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medseg.io import atomic_path
from medseg.report.overlays import instance_colors, load_font

_MIN_SIDE = 384  # small movies are enlarged (nearest neighbour) so that the track ids stay readable


def movie_to_uint8(images: np.ndarray) -> np.ndarray:
    """Scale a whole movie to uint8 with one intensity window (1st-99.5th percentile of all frames).

    One window for all frames keeps the brightness from flickering as cells come and go.

    Args:
        images: ``(T, H, W)`` or ``(T, H, W, C)`` any numeric dtype.

    Returns:
        Same shape, uint8.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    sample = images[:: max(1, images.shape[0] // 8)].astype(np.float32)
    low, high = np.percentile(sample, [1.0, 99.5])
    scale = 255.0 / (high - low) if high > low else 0.0
    out = np.empty(images.shape, np.uint8)
    for t in range(images.shape[0]):  # frame by frame: no float copy of the whole movie
        out[t] = np.clip((images[t].astype(np.float32) - low) * scale, 0, 255).astype(np.uint8)
    return out


def track_frame(image: np.ndarray, tracks: np.ndarray, *, frame: int | None = None) -> np.ndarray:
    """One movie frame with each track's outline in its colour and its label at its centre.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 (see :func:`movie_to_uint8`).
        tracks: ``(H, W)`` int track labels, 0 = background.
        frame: frame index written in the corner, or None.

    Returns:
        ``(H', W', 3)`` uint8, enlarged by an integer factor when the frame is smaller than 384 px.
    """
    from PIL import Image, ImageDraw
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3].copy()
    zoom = max(1, -(-_MIN_SIDE // max(tracks.shape)))
    if zoom > 1:
        rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
        tracks = np.repeat(np.repeat(tracks, zoom, axis=0), zoom, axis=1)
    labels = np.unique(tracks)
    labels = labels[labels > 0]
    if labels.size:
        colors = instance_colors(labels)
        edges = find_boundaries(tracks, mode="inner") & (tracks > 0)
        rgb[edges] = colors[np.searchsorted(labels, tracks[edges])]
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    font = load_font(11)
    if labels.size:
        centres = ndimage.center_of_mass(np.ones_like(tracks), tracks, labels)
        for label, (row, col), color in zip(labels.tolist(), centres, colors):
            text = str(label)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            x, y = col - (right - left) / 2, row - (bottom - top) / 2 - top
            draw.text(
                (x, y), text, fill=tuple(int(c) for c in color), font=font, stroke_width=2, stroke_fill=0
            )
    if frame is not None:
        draw.text(
            (6, 4), f"t = {frame}", fill=(255, 255, 255), font=load_font(14), stroke_width=2, stroke_fill=0
        )
    return np.asarray(canvas)


def write_track_gif(
    images: np.ndarray,
    tracks: np.ndarray,
    path: str | os.PathLike[str],
    *,
    duration_ms: int = 250,
    max_frames: int = 200,
) -> Path:
    """An animated GIF of the tracked movie (see :func:`track_frame`).

    Args:
        images: ``(T, H, W)`` or ``(T, H, W, 3)`` frames, any dtype (one intensity window for all).
        tracks: ``(T, H, W)`` track labels.
        path: the ``.gif`` to write (atomically).
        duration_ms: display time per frame.
        max_frames: longer movies show every k-th frame so the file stays small.

    Returns:
        ``path`` as a Path.
    """
    from medseg.report.gif import write_gif

    step = max(1, -(-tracks.shape[0] // max_frames))
    picked = range(0, tracks.shape[0], step)
    scaled = movie_to_uint8(np.asarray(images)[::step])
    frames = [track_frame(scaled[i], tracks[t], frame=t) for i, t in enumerate(picked)]
    return write_gif(frames, path, duration_ms=duration_ms)


def lineage_order(table: np.ndarray) -> dict[int, float]:
    """Vertical position of every track in a lineage plot: leaves in depth-first order, parents centred.

    Trees are ordered by the begin frame of their root, children by their label, so that each tree is
    a contiguous band and sister tracks sit next to their parent.

    Args:
        table: ``(N, 4)`` track table ``(label, begin, end, parent)``.

    Returns:
        track label -> row (0 = top).
    """
    table = np.asarray(table, np.int64).reshape(-1, 4)
    labels = set(table[:, 0].tolist())
    children: dict[int, list[int]] = {}
    roots = []
    for label, _, _, parent in sorted(table.tolist(), key=lambda r: (r[1], r[0])):
        if parent in labels and parent != label:
            children.setdefault(parent, []).append(label)
        else:
            roots.append(label)
    rows: dict[int, float] = {}
    next_leaf = 0.0
    for root in roots:
        stack = [(root, False)]
        while stack:  # iterative post-order: deep lineages must not hit the recursion limit
            label, expanded = stack.pop()
            kids = children.get(label, [])
            if expanded:  # all children placed: centre the parent on them
                rows[label] = float(np.mean([rows[k] for k in kids]))
            elif kids:
                stack.append((label, True))
                stack.extend((k, False) for k in reversed(kids))
            else:
                rows[label] = next_leaf
                next_leaf += 1.0
    return rows


def plot_lineage(table: np.ndarray, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Plot the lineage forest: one horizontal bar per track over its frames, divisions as forks.

    Args:
        table: ``(N, 4)`` track table ``(label, begin, end, parent)``.
        path: the PNG to write (atomically).
        title: plot title (default: the numbers of tracks and divisions).

    Returns:
        ``path`` as a Path.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    table = np.asarray(table, np.int64).reshape(-1, 4)
    rows = lineage_order(table)
    n = max(len(rows), 1)
    height = float(np.clip(0.12 * n + 1.2, 2.5, 30.0))
    fig = Figure(figsize=(9, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    info = {int(r[0]): r for r in table}
    colors = instance_colors(table[:, 0]).astype(float) / 255 if len(table) else np.zeros((0, 3))
    width = 2.0 if n <= 60 else 1.0
    bars, bar_colors, links = [], [], []
    for (label, begin, end, parent), color in zip(table.tolist(), colors):
        y = rows[label]
        bars.append([(begin - 0.4, y), (end + 0.4, y)])
        bar_colors.append(color)
        if parent in info:  # fork: from the parent's end to the child's start
            links.append([(info[parent][2] + 0.4, rows[parent]), (begin - 0.4, y)])
    ax.add_collection(LineCollection(bars, colors=bar_colors, linewidths=width * 2))
    ax.add_collection(LineCollection(links, colors="0.45", linewidths=0.8))
    if n <= 60:
        for label, y in rows.items():
            ax.text(info[label][2] + 0.7, y, str(label), va="center", fontsize=7, color="0.3")
    frames = table[:, 1:3]
    last = int(frames.max()) if len(table) else 1
    ax.set_xlim(-1, last + (3 if n <= 60 else 1))
    ax.set_ylim(n, -1)
    ax.set_xlabel("frame")
    ax.set_ylabel("track")
    ax.set_yticks([])
    _, counts = np.unique(table[:, 3][np.isin(table[:, 3], table[:, 0])], return_counts=True)
    divisions = int(np.count_nonzero(counts >= 2))
    ax.set_title(title or f"{len(table)} tracks, {divisions} divisions", fontsize=11)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
