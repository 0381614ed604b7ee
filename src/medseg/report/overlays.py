"""Pictures of segmentations: class overlays, TP/FP/FN error maps, side-by-side panels, legends.

NumPy and Pillow only (plus ``skimage.segmentation.find_boundaries``). Every function takes arrays and
returns an ``(H, W, 3)`` uint8 RGB array, ready for :func:`medseg.io.write_image` or a GIF frame.

Array contract:

- ``image``: ``(H, W)`` or ``(H, W, C)``, any dtype (converted for display by :func:`image_to_rgb8`);
- ``labels``, ``y_true``, ``y_pred``: ``(H, W)`` integer class ids, 0 = background;
- ``colors``: one ``(r, g, b)`` per class id, index 0 = background (unused in overlays).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence

import numpy as np

from medseg.data.regions import Regions

Color = tuple[int, int, int]

# Okabe-Ito first (distinguishable with the common colour-vision deficiencies), then tab10 extras.
_PALETTE: tuple[Color, ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (148, 103, 189),  # purple
    (140, 86, 75),  # brown
    (188, 189, 34),  # olive
    (23, 190, 207),  # cyan
    (127, 127, 127),  # grey
)

#: Colours of :func:`error_overlay`, also used for its legend.
ERROR_COLORS: dict[str, Color] = {
    "true positive": (40, 200, 60),
    "false positive": (235, 50, 40),
    "false negative": (40, 120, 255),
    "wrong class": (255, 215, 0),
}

_BACKGROUND_DIM = 0.75  # error maps show the image as darkened grey so the four colours stand out
_MIN_TILE = 192  # panels upscale smaller images by an integer factor so they stay legible
_TITLE_SIZE = 14
_CAPTION_SIZE = 16
_GAP = 6
_WHITE = (255, 255, 255)
_TEXT = (30, 30, 30)


def display_channels(image: np.ndarray, context: int) -> np.ndarray:
    """What to show of a 2.5D input: each source channel's centre slice.

    Args:
        image: ``(H, W)`` or ``(H, W, C * (2 * context + 1))``, channels ordered per source channel, slices
            ``-context .. +context`` (as the volume importers write them).
        context: neighbouring slices on each side (``data.slicing.context``); 0 = not 2.5D.

    Returns:
        ``(H, W)`` or ``(H, W, C)``; other images unchanged (a view, never a copy).
    """
    width = 2 * context + 1
    if context <= 0 or image.ndim != 3 or image.shape[-1] % width:
        return image
    return image[..., context::width]


def image_to_rgb8(image: np.ndarray) -> np.ndarray:
    """Convert any image to 8-bit RGB for display.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype. uint8 is shown as stored; other dtypes are
            rescaled per channel from their 1st..99th percentile to 0..255 (NaN shown as black).
            One channel becomes grey, two channels become red and green, more than three keep the
            first three.

    Returns:
        ``(H, W, 3)`` uint8.

    >>> image_to_rgb8(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))[..., 0]
    array([[  0,  63],
           [128, 255]], dtype=uint8)
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {array.shape}")
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8:
        array = np.stack([_rescale_to_uint8(array[..., c]) for c in range(min(array.shape[-1], 3))], -1)
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 2:
        return np.concatenate([array, np.zeros_like(array[..., :1])], axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _rescale_to_uint8(channel: np.ndarray) -> np.ndarray:
    values = channel.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(channel.shape, np.uint8)
    sample = finite[:: max(1, finite.size // 1_000_000)]  # percentiles of a big image from a subsample
    low, high = np.percentile(sample, (1, 99))
    if high <= low:  # mostly constant (e.g. a sparse binary image): fall back to the full range
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(channel.shape, np.uint8)
    scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255.0 / (high - low))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def default_colors(num_classes: int) -> list[Color]:
    """One distinct colour per class id; class 0 (background) is black.

    The first 12 foreground colours come from the Okabe-Ito and tab10 palettes; beyond that colours are
    spread around the hue circle by the golden angle.

    >>> default_colors(3)
    [(0, 0, 0), (230, 159, 0), (86, 180, 233)]
    """
    colors: list[Color] = [(0, 0, 0)]
    for index in range(max(num_classes, 1) - 1):
        if index < len(_PALETTE):
            colors.append(_PALETTE[index])
        else:
            hue = (index * 0.618033988749895) % 1.0
            r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
            colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors[: max(num_classes, 1)]


def class_colors(labels: Mapping[str, int], colors: Mapping[str, Sequence[int]] | None = None) -> list[Color]:
    """Colours indexed by class id from a config's ``data.labels`` and (possibly partial) ``data.colors``.

    Args:
        labels: ``{class name: class id}``, e.g. ``{"background": 0, "nucleus": 1}``.
        colors: ``{class name: [r, g, b]}``; classes without an entry get :func:`default_colors`.

    Returns:
        A list of ``max(id) + 1`` colours; index 0 is black unless ``colors`` names the background.
    """
    size = max((int(i) for i in labels.values()), default=0) + 1
    result = default_colors(size)
    for name, class_id in labels.items():
        if colors and name in colors:
            result[int(class_id)] = _as_color(colors[name])
    return result


def _as_color(value: Sequence[int]) -> Color:
    r, g, b = (int(np.clip(round(float(v)), 0, 255)) for v in list(value)[:3])
    return (r, g, b)


def _color_table(colors: Sequence[Sequence[int]] | None, max_label: int) -> np.ndarray:
    """``(max_label + 1, 3)`` uint8 lookup table; missing entries filled from :func:`default_colors`."""
    table = default_colors(max_label + 1)
    for index, color in enumerate(list(colors or [])[: max_label + 1]):
        table[index] = _as_color(color)
    return np.asarray(table, dtype=np.uint8).reshape(-1, 3)


def _check_labels(labels: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != shape[:2]:
        raise ValueError(f"{name} has shape {labels.shape} but the image is {shape[0]}x{shape[1]}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    return np.where(labels > 0, labels, 0).astype(np.int64)


def color_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[Sequence[int]] | None,
    *,
    alpha: float = 0.45,
    outline: bool = True,
    regions: Regions | None = None,
) -> np.ndarray:
    """Blend class colours over an image.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        labels: ``(H, W)`` integer class ids, 0 = background (left untouched); with ``regions``, mask
            values (see :mod:`medseg.data.regions`).
        colors: ``(r, g, b)`` per class id; ``None`` or too short -> :func:`default_colors` fill in.
        alpha: colour weight inside objects, 0..1.
        outline: draw each region's inner boundary in its class colour at full opacity.
        regions: overlapping classes: a pixel in several regions is filled with the mean of their colours
            and every region is outlined in its own colour, so an overlap shows both.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    rgb = image_to_rgb8(image)
    labels = _check_labels(labels, rgb.shape, "labels")
    if regions is not None:
        return _region_overlay(rgb, labels, colors, regions, alpha, outline)
    table = _color_table(colors, int(labels.max(initial=0)))
    foreground = labels > 0
    out = rgb.copy()
    blended = (1.0 - alpha) * rgb[foreground] + alpha * table[labels[foreground]]
    out[foreground] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if outline and foreground.any():
        from skimage.segmentation import find_boundaries

        edges = find_boundaries(labels, mode="inner") & foreground
        out[edges] = table[labels[edges]]
    return out


def region_value_colors(
    regions: Regions, colors: Sequence[Sequence[int]] | None, size: int | None = None
) -> np.ndarray:
    """``(size, 3)`` uint8 display colour of each mask value of a region run: the mean colour of the
    regions it belongs to (an overlap of red and green shows olive), black for values in none.

    Args:
        regions: the run's regions.
        colors: ``(r, g, b)`` per class id, where class r + 1 is region r (see :func:`class_colors`).
        size: number of mask values to cover; default the largest region value + 1.
    """
    table = _color_table(colors, len(regions)).astype(np.float64)[1:]
    lut = regions.lookup(size)  # (V, R)
    count = lut.sum(axis=1, keepdims=True)
    mean = np.where(count > 0, lut @ table / np.maximum(count, 1), 0.0)
    return np.clip(np.round(mean), 0, 255).astype(np.uint8)


def _region_overlay(
    rgb: np.ndarray,
    values: np.ndarray,
    colors: Sequence[Sequence[int]] | None,
    regions: Regions,
    alpha: float,
    outline: bool,
) -> np.ndarray:
    table = _color_table(colors, len(regions)).astype(np.float64)[1:]  # (R, 3): region r = class r + 1
    members = regions.members(values)  # (R, H, W)
    value_colors = region_value_colors(regions, colors, int(values.max(initial=0)) + 1).astype(np.float64)
    foreground = members.any(axis=0)
    out = rgb.copy()
    blended = (1.0 - alpha) * rgb[foreground] + alpha * value_colors[values[foreground]]
    out[foreground] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if outline:
        from skimage.segmentation import find_boundaries

        for r, member in enumerate(members):
            if member.any():
                out[find_boundaries(member, mode="inner") & member] = table[r].astype(np.uint8)
    return out


def error_overlay(
    image: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    alpha: float = 0.6,
    regions: Regions | None = None,
) -> np.ndarray:
    """Colour foreground errors over a darkened grey copy of the image.

    Over all classes: true positive (``true == pred != 0``) green, false positive (``pred != 0``,
    ``true == 0``) red, false negative (``true != 0``, ``pred == 0``) blue, wrong class (both non-zero,
    different) yellow; see :data:`ERROR_COLORS`. Correct background shows the image.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        y_true: ``(H, W)`` integer class ids, 0 = background.
        y_pred: ``(H, W)`` integer class ids, 0 = background.
        alpha: colour weight, 0..1 (1 gives the pure colours).
        regions: overlapping classes (labels are mask values): true positive = the same non-empty set of
            regions, false positive/negative = regions where the other has none, "wrong class" = both
            have regions but not the same ones (e.g. an overlap predicted where there is one organ).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    rgb = image_to_rgb8(image)
    y_true = _check_labels(y_true, rgb.shape, "y_true")
    y_pred = _check_labels(y_pred, rgb.shape, "y_pred")
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    out = np.repeat((grey * _BACKGROUND_DIM)[..., None], 3, axis=-1)
    if regions is not None:
        true_members, pred_members = regions.members(y_true), regions.members(y_pred)
        true_fg, pred_fg = true_members.any(axis=0), pred_members.any(axis=0)
        same = (true_members == pred_members).all(axis=0)
    else:
        true_fg, pred_fg = y_true > 0, y_pred > 0
        same = y_true == y_pred
    masks = {
        "true positive": true_fg & same,
        "false positive": pred_fg & ~true_fg,
        "false negative": true_fg & ~pred_fg,
        "wrong class": true_fg & pred_fg & ~same,
    }
    for name, mask in masks.items():
        out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(ERROR_COLORS[name], np.float64)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def comparison_panel(
    image: np.ndarray,
    y_true: np.ndarray | None,
    y_pred: np.ndarray,
    colors: Sequence[Sequence[int]] | None,
    *,
    titles: Sequence[str] = ("image", "truth", "prediction", "errors"),
    caption: str = "",
    max_tile: int | None = 640,
    regions: Regions | None = None,
) -> np.ndarray:
    """Side-by-side tiles: image | truth overlay | prediction overlay | error overlay, titled.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        y_true: ``(H, W)`` class ids, or ``None`` for image | prediction only (no ground truth).
        y_pred: ``(H, W)`` class ids.
        colors: ``(r, g, b)`` per class id (see :func:`color_overlay`).
        titles: four tile titles, in the order above.
        caption: optional line above the tiles, e.g. ``"case_7  dice 0.91"``.
        max_tile: tiles larger than this many pixels on their long side are shrunk (smooth resampling,
            after the overlay is drawn); ``None`` keeps full size. Images under 192 px are enlarged by
            an integer factor (nearest neighbour) so they stay legible.
        regions: overlapping classes: labels are mask values (see :func:`color_overlay`).

    Returns:
        ``(H', W', 3)`` uint8 on a white background.
    """
    rgb = image_to_rgb8(image)
    tiles = [rgb]
    names = [titles[0]]
    if y_true is not None:
        tiles.append(color_overlay(rgb, y_true, colors, regions=regions))
        names.append(titles[1])
    tiles.append(color_overlay(rgb, y_pred, colors, regions=regions))
    names.append(titles[2])
    if y_true is not None:
        tiles.append(error_overlay(rgb, y_true, y_pred, regions=regions))
        names.append(titles[3])
    return _compose(tiles, names, caption, max_tile)


def _compose(
    tiles: list[np.ndarray], titles: Sequence[str], caption: str, max_tile: int | None
) -> np.ndarray:
    from PIL import Image, ImageDraw

    height, width = tiles[0].shape[:2]
    images = [Image.fromarray(tile) for tile in tiles]
    long_side = max(height, width)
    if long_side < _MIN_TILE:
        factor = math.ceil(_MIN_TILE / long_side)
        images = [im.resize((width * factor, height * factor), Image.Resampling.NEAREST) for im in images]
    elif max_tile is not None and long_side > max_tile:
        size = (max(1, round(width * max_tile / long_side)), max(1, round(height * max_tile / long_side)))
        images = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
    tile_w, tile_h = images[0].size

    title_font, caption_font = load_font(_TITLE_SIZE), load_font(_CAPTION_SIZE)
    title_h = _TITLE_SIZE + 8
    caption_h = _CAPTION_SIZE + 10 if caption else 0
    width_needed = len(images) * tile_w + (len(images) + 1) * _GAP
    if caption:
        width_needed = max(width_needed, int(text_width(caption, caption_font)) + 2 * _GAP)
    canvas = Image.new("RGB", (width_needed, caption_h + title_h + tile_h + _GAP), _WHITE)
    draw = ImageDraw.Draw(canvas)
    if caption:
        draw.text((_GAP, _GAP // 2 + 2), caption, fill=_TEXT, font=caption_font)
    for index, (tile, title) in enumerate(zip(images, titles, strict=False)):
        left = _GAP + index * (tile_w + _GAP)
        text = _fit_text(str(title), title_font, tile_w)
        x = left + (tile_w - text_width(text, title_font)) / 2
        draw.text((x, caption_h + 3), text, fill=_TEXT, font=title_font)
        canvas.paste(tile, (left, caption_h + title_h))
    return np.asarray(canvas)


def legend_image(class_names: Sequence[str], colors: Sequence[Sequence[int]]) -> np.ndarray:
    """A one-row strip of colour swatches and class names, for reports and figure keys.

    Args:
        class_names: names in the same order as ``colors`` (e.g. index = class id).
        colors: one ``(r, g, b)`` per name.

    Returns:
        ``(H, W, 3)`` uint8 on a white background.
    """
    from PIL import Image, ImageDraw

    font = load_font(_TITLE_SIZE)
    swatch, pad = _TITLE_SIZE, 8
    entries = [(str(name), _as_color(color)) for name, color in zip(class_names, colors, strict=False)]
    widths = [swatch + 5 + math.ceil(text_width(name, font)) for name, _ in entries]
    total = pad + sum(w + 2 * pad for w in widths) if entries else 2 * pad
    canvas = Image.new("RGB", (total, swatch + 2 * pad), _WHITE)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for (name, color), entry_width in zip(entries, widths, strict=True):
        draw.rectangle([x, pad, x + swatch - 1, pad + swatch - 1], fill=color, outline=(90, 90, 90))
        draw.text((x + swatch + 5, pad - 1), name, fill=_TEXT, font=font)
        x += entry_width + 2 * pad
    return np.asarray(canvas)


def load_font(size: int):
    """Pillow's default font at ``size`` px (the bitmap font where Pillow has no FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def text_width(text: str, font) -> float:
    """Width in pixels of ``text`` drawn in ``font``."""
    left, _, right, _ = font.getbbox(text)
    return float(right - left)


def _fit_text(text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if text_width(text, font) <= width:
        return text
    while len(text) > 1 and text_width(text + "…", font) > width:
        text = text[:-1]
    return text + "…"


#: Outline colours of :func:`match_overlay`, also used for its legend.
MATCH_COLORS: dict[str, Color] = {
    "matched": (40, 200, 60),
    "false positive": (235, 50, 40),
    "missed": (255, 215, 0),
}


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """A distinct-looking colour per instance id: ``(len(ids), 3)`` uint8.

    Hues step by the golden ratio from id to id, so neighbouring ids (often neighbouring objects) differ
    strongly, and an id keeps its colour from picture to picture.
    """
    ids = np.asarray(ids, np.float64)
    hues = (ids * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.65 + 0.35 * ((i * 7) % 3) / 2, 1.0) for h, i in zip(hues, ids)]
    return (np.asarray(rgb, np.float64).reshape(-1, 3) * 255).round().astype(np.uint8)


def instance_overlay(
    image: np.ndarray,
    instances: np.ndarray,
    *,
    colors: Mapping[int, Sequence[int]] | None = None,
    alpha: float = 0.35,
) -> np.ndarray:
    """Fill each object with its own colour (or a given colour per id) and outline it at full opacity.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        instances: ``(H, W)`` integer instance ids, 0 = background.
        colors: instance id -> ``(r, g, b)`` (e.g. the colour of its type); missing ids get
            :func:`instance_colors`.
        alpha: fill weight, 0..1; outlines are always opaque so touching objects stay apart.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from skimage.segmentation import find_boundaries

    rgb = image_to_rgb8(image)
    instances = _check_labels(instances, rgb.shape, "instances")
    present = np.unique(instances)
    present = present[present > 0]
    if present.size == 0:
        return rgb.copy()
    table = instance_colors(present)
    for i, instance_id in enumerate(present.tolist()):
        if colors and instance_id in colors:
            table[i] = _as_color(colors[instance_id])
    index = np.searchsorted(present, instances)
    foreground = instances > 0
    out = rgb.copy()
    blended = (1.0 - alpha) * rgb[foreground] + alpha * table[index[foreground]]
    out[foreground] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    edges = find_boundaries(instances, mode="inner") & foreground
    out[edges] = table[index[edges]]
    return out


def match_overlay(
    image: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    matches: Sequence[tuple[int, int]],
) -> np.ndarray:
    """Object-level errors as outlines over a darkened grey image.

    Matched predictions are outlined green, unmatched predictions (false positives) red, and true objects
    no prediction matched (misses) yellow; see :data:`MATCH_COLORS`.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype.
        y_true: ``(H, W)`` true instance ids.
        y_pred: ``(H, W)`` predicted instance ids.
        matches: ``(true id, predicted id)`` pairs of the matched objects.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from skimage.segmentation import find_boundaries

    rgb = image_to_rgb8(image)
    y_true = _check_labels(y_true, rgb.shape, "y_true")
    y_pred = _check_labels(y_pred, rgb.shape, "y_pred")
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    out = np.repeat(np.round(grey * _BACKGROUND_DIM)[..., None], 3, axis=-1).astype(np.uint8)
    matched_true = np.zeros(int(y_true.max(initial=0)) + 1, bool)
    matched_pred = np.zeros(int(y_pred.max(initial=0)) + 1, bool)
    for true_id, pred_id in matches:
        matched_true[true_id] = matched_pred[pred_id] = True
    missed = ~matched_true[y_true] & (y_true > 0)
    missed_edges = find_boundaries(np.where(missed, y_true, 0), mode="inner") & missed
    pred_edges = find_boundaries(y_pred, mode="inner") & (y_pred > 0)
    out[missed_edges] = MATCH_COLORS["missed"]
    out[pred_edges & matched_pred[y_pred]] = MATCH_COLORS["matched"]
    out[pred_edges & ~matched_pred[y_pred]] = MATCH_COLORS["false positive"]
    return out


def instance_panel(
    image: np.ndarray,
    y_true: np.ndarray | None,
    y_pred: np.ndarray,
    matches: Sequence[tuple[int, int]] = (),
    *,
    caption: str = "",
    max_tile: int | None = 640,
) -> np.ndarray:
    """Side-by-side tiles: image | true objects | predicted objects | matches (see :func:`match_overlay`).

    Without ``y_true``: image | predicted objects. Sizing as :func:`comparison_panel`.
    """
    rgb = image_to_rgb8(image)
    tiles, names = [rgb], ["image"]
    if y_true is not None:
        tiles.append(instance_overlay(rgb, y_true))
        names.append(f"truth ({_count(y_true)})")
    tiles.append(instance_overlay(rgb, y_pred))
    names.append(f"prediction ({_count(y_pred)})")
    if y_true is not None:
        tiles.append(match_overlay(rgb, y_true, y_pred, matches))
        names.append("matched / FP / missed")
    return _compose(tiles, names, caption, max_tile)


def _count(instances: np.ndarray) -> int:
    ids = np.unique(instances)
    return int((ids > 0).sum())
