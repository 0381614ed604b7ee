"""Feature maps: the activations of chosen layers for one image, and a labelled gallery of them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError
from medseg.explain.gradcam import apply_colormap, capture_outputs, single_output, tokens_to_map

if TYPE_CHECKING:
    import torch
    from torch import nn

_LABEL_SIZE = 13
_GAP = 4
_WHITE = (255, 255, 255)
_TEXT = (30, 30, 30)


def feature_maps(
    model: nn.Module,
    image: torch.Tensor,
    layers: Sequence[str],
    *,
    token_grid: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """The activations of ``layers`` for one image, in eval mode and without gradients.

    Args:
        model: any network; its train/eval mode is restored afterwards.
        image: ``(1, C, H, W)`` float tensor, normalised as the model expects.
        layers: dotted module names (see :func:`medseg.explain.gradcam.resolve_layer`).
        token_grid: ``(rows, cols)`` patch grid for layers that output transformer tokens ``(1, L, D)``;
            default: the model's ``token_grid`` attribute.

    Returns:
        ``{layer: (C, h, w) float32}`` in the order of ``layers``.

    Raises:
        ConfigError: an unknown layer, a layer that never runs or runs twice, or an output that is no
            feature map.
    """
    import torch

    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image as a (1, C, H, W) tensor, got shape {tuple(image.shape)}")
    if not layers:
        raise ConfigError("feature maps need at least one layer name")
    parameter = next(model.parameters(), None)
    x = image.detach().float().to(parameter.device if parameter is not None else image.device)
    was_training = model.training
    model.eval()
    try:
        with capture_outputs(model, list(layers)) as captured, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    maps: dict[str, np.ndarray] = {}
    for name in layers:
        output = single_output(captured, name, model)
        if output.ndim == 3:
            grid = token_grid or getattr(model, "token_grid", None)
            if grid is None:
                raise ConfigError(
                    f"layer {name!r} outputs tokens {tuple(output.shape)}, not a (N, C, h, w) feature map; "
                    "give token_grid=(rows, cols)"
                )
            output = tokens_to_map(output, grid)
        if output.ndim != 4:
            raise ConfigError(f"layer {name!r} outputs shape {tuple(output.shape)}, not (N, C, h, w)")
        maps[name] = output[0].float().cpu().numpy()
    return maps


def feature_gallery(
    maps: Mapping[str, np.ndarray], k: int = 16, *, tile: int = 64, colormap: str = "viridis"
) -> np.ndarray:
    """A grid of the first ``k`` channels of each layer: one labelled row per layer.

    Each channel is scaled to [0, 1] on its own (min to max; a constant channel is shown as 0) and
    coloured with ``colormap``. Tiles are ``tile`` pixels on their long side (nearest-neighbour when
    enlarging, so single activations stay visible; smooth when shrinking). A header numbers the channels.

    Args:
        maps: ``{layer: (C, h, w)}`` as returned by :func:`feature_maps`.
        k: channels shown per layer (fewer when a layer has fewer).
        tile: tile size in pixels.
        colormap: a matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8 on a white background, ready for :func:`medseg.io.write_image`.
    """
    from PIL import Image, ImageDraw

    from medseg.report.overlays import load_font, text_width

    if not maps:
        raise ValueError("no feature maps to show")
    if k < 1 or tile < 4:
        raise ValueError(f"k must be >= 1 and tile >= 4, got k={k}, tile={tile}")
    rows = []
    for name, array in maps.items():
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(f"feature map {name!r} must be (C, h, w), got shape {array.shape}")
        rows.append((name, array))
    font = load_font(_LABEL_SIZE)
    labels = [f"{name}  ({array.shape[0]} ch, {array.shape[1]}x{array.shape[2]})" for name, array in rows]
    label_w = max(math.ceil(text_width(label, font)) for label in labels) + 2 * _GAP
    columns = min(k, max(array.shape[0] for _, array in rows))
    header_h = _LABEL_SIZE + 2 * _GAP
    canvas = Image.new(
        "RGB",
        (label_w + columns * (tile + _GAP) + _GAP, header_h + len(rows) * (tile + _GAP) + _GAP),
        _WHITE,
    )
    draw = ImageDraw.Draw(canvas)
    for column in range(columns):
        text = str(column)
        left = label_w + column * (tile + _GAP)
        draw.text((left + (tile - text_width(text, font)) / 2, _GAP), text, fill=_TEXT, font=font)
    for row, ((_, array), label) in enumerate(zip(rows, labels, strict=True)):
        top = header_h + row * (tile + _GAP)
        draw.text((_GAP, top + (tile - _LABEL_SIZE) / 2), label, fill=_TEXT, font=font)
        for column in range(min(columns, array.shape[0])):
            picture = Image.fromarray(apply_colormap(_scaled(array[column]), colormap))
            height, width = array.shape[1:]
            size = (
                (tile, max(1, round(tile * height / width)))
                if width >= height
                else (
                    max(1, round(tile * width / height)),
                    tile,
                )
            )
            enlarge = size[0] >= width
            picture = picture.resize(size, Image.Resampling.NEAREST if enlarge else Image.Resampling.BILINEAR)
            left = label_w + column * (tile + _GAP)
            canvas.paste(picture, (left + (tile - size[0]) // 2, top + (tile - size[1]) // 2))
    return np.asarray(canvas)


def _scaled(channel: np.ndarray) -> np.ndarray:
    """One channel scaled to [0, 1] by its own finite min and max (constant or empty: zeros)."""
    values = np.nan_to_num(channel.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape)
    return (values - low) / (high - low)
