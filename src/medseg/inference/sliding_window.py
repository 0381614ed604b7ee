"""Sliding-window prediction with gaussian blending, and flip/rotation test-time augmentation.

``sliding_window`` takes any predictor callable (tensor of tiles in, per-tile logits out), so it serves the
:class:`~medseg.inference.predictor.Predictor`, a bare ``nn.Module`` or an ONNX session wrapper alike.
Memory: each tile is cut from the image (or normalised from the raw image by a
:class:`~medseg.transforms.normalize.NormalizedImage`) as its batch is filled, never via a whole-image copy;
the weight map is never formed (it is an outer product of two axis profiles). :func:`sliding_window` returns
the ``(K, H, W)`` float32 blend; :func:`sliding_window_bands` yields it as row bands as soon as they are
final, holding only ``O(K x tile x W)`` sums, so a caller that reduces each band (argmax) needs memory that
grows with the tile and the width, not with the image.

Written here rather than calling MONAI's ``sliding_window_inference`` because that pads the whole input
with ``torch.nn.functional.pad``, whose reflect mode fails when an image is less than half the tile, and
works on (and returns) torch tensors in the input's batch layout; here NumPy goes in and comes out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from medseg.errors import ConfigError
from medseg.transforms.normalize import NormalizedImage

TilePredictor = Callable[[torch.Tensor], torch.Tensor]
BLENDS = ("gaussian", "constant")
_FINISH_ROWS = 256


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Evenly spaced tile offsets along one axis, the first at 0 and the last flush with the end.

    Consecutive tiles overlap by at least ``overlap * tile`` pixels (as nnU-Net places them).

    >>> tile_starts(300, 128, 0.25)
    [0, 86, 172]
    >>> tile_starts(100, 128, 0.25)
    [0]
    """
    if size <= tile:
        return [0]
    step = max(1.0, tile * (1 - overlap))
    count = math.ceil((size - tile) / step) + 1
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def axis_weights(size: int, blend: str = "gaussian") -> np.ndarray:
    """``(size,)`` float32 weights along one axis of a tile; a tile's weights are their outer product.

    ``gaussian``: centred, sigma = size / 8 (nnU-Net), peak ~1, so tile borders, where the network sees
    the least context, count least; the smallest value is exp(-8) ~ 3e-4, never 0, so every pixel a
    tile covers gets weight. ``constant``: all ones (plain averaging).
    """
    if blend not in BLENDS:
        raise ConfigError(f"blend: {blend!r} is not one of {', '.join(BLENDS)}")
    if blend == "constant":
        return np.ones(size, np.float32)
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.exp(-0.5 * (offsets / (size / 8)) ** 2).astype(np.float32)


def importance_map(tile: tuple[int, int], blend: str = "gaussian") -> np.ndarray:
    """``(h, w)`` float32 per-pixel weights of one tile's prediction, all > 0 (see :func:`axis_weights`)."""
    return np.outer(axis_weights(tile[0], blend), axis_weights(tile[1], blend))


def sliding_window(
    image: np.ndarray | NormalizedImage,
    predictor: TilePredictor,
    tile: int | Sequence[int],
    *,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    softmax: bool = True,
) -> np.ndarray:
    """Predict a large image tile by tile and blend the tiles' probabilities.

    Args:
        image: ``(C, H, W)`` float32 normalised image (other dtypes are cast tile by tile), or a
            :class:`~medseg.transforms.normalize.NormalizedImage` that normalises each tile as it is cut.
        predictor: maps a ``(N, C, h, w)`` float32 tensor of tiles to ``(N, K, h, w)`` logits (or
            probabilities with ``softmax=False``), on any device.
        tile: tile size ``(h, w)`` or one int for square tiles. A dimension of the image smaller than the
            tile is reflect-padded to it within each tile and cropped back.
        overlap: fraction of the tile that neighbouring tiles share, in ``[0, 1)``.
        blend: ``gaussian`` (centre-weighted, nnU-Net) or ``constant``.
        batch_size: tiles per call to ``predictor``; changes speed and memory, not the result.
        softmax: apply a softmax over ``K`` to each tile before blending (nnU-Net averages probabilities).

    Returns:
        ``(K, H, W)`` float32 weighted mean of the tiles' probabilities: the bands of
        :func:`sliding_window_bands` put together.

    Raises:
        ConfigError: invalid ``overlap``, ``blend``, ``batch_size`` or ``tile``.
    """
    output: np.ndarray | None = None
    bands = sliding_window_bands(
        image, predictor, tile, overlap=overlap, blend=blend, batch_size=batch_size, softmax=softmax
    )
    for top, band in bands:
        if output is None:
            output = np.empty((band.shape[0], *image.shape[1:]), np.float32)
        output[:, top : top + band.shape[1]] = band
    assert output is not None  # the bands cover every row
    return output


def sliding_window_bands(
    image: np.ndarray | NormalizedImage,
    predictor: TilePredictor,
    tile: int | Sequence[int],
    *,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch_size: int = 4,
    softmax: bool = True,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`sliding_window`, yielding its result as row bands, top to bottom, as soon as each is final.

    Tiles are predicted row of tiles by row of tiles; once every tile overlapping some rows has been added,
    those rows are divided by their summed weights and yielded, and their sums dropped. Float buffers are
    therefore ``O(K x tile x W)``, not ``O(K x H x W)``: reduce each band (e.g. argmax to class ids) to
    predict an image whose probabilities would not fit in memory. The values are identical to
    :func:`sliding_window`'s (the same tiles, batches and summation order).

    Args:
        image, predictor, tile, overlap, blend, batch_size, softmax: as for :func:`sliding_window`.

    Yields:
        ``(top, band)``: ``band`` is the ``(K, rows, W)`` float32 result for image rows
        ``top : top + rows``; consecutive bands cover all ``H`` rows once, in order. A band is a new array
        the caller may keep.

    Raises:
        ConfigError: invalid ``overlap``, ``blend``, ``batch_size`` or ``tile``.
    """
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W), got shape {image.shape}")
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    if min(tile_h, tile_w) < 1 or not 0 <= overlap < 1 or batch_size < 1:
        raise ConfigError(
            f"sliding window: need tile >= 1, 0 <= overlap < 1 and batch_size >= 1; got tile "
            f"{(tile_h, tile_w)}, overlap {overlap}, batch_size {batch_size}"
        )
    weights_tile = importance_map((tile_h, tile_w), blend)
    channels, height, width = image.shape
    rows, cols = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    corners = [(y, x) for y in rows for x in cols]
    # tiles lie on a grid and their weights are outer products, so the summed weight of pixel (y, x) is
    # row_weights[y] * col_weights[x]: no (H, W) weight map is needed
    row_weights = _summed_weights(height, rows, axis_weights(tile_h, blend))
    col_weights = _summed_weights(width, cols, axis_weights(tile_w, blend))
    # sums of the rows [top, top + tile_h) that the current row of tiles (starting at top) touches
    sums: np.ndarray | None = None
    top = 0
    batch = np.empty((min(batch_size, len(corners)), channels, tile_h, tile_w), np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        for i, (y, x) in enumerate(chunk):
            crop = image[:, y : y + tile_h, x : x + tile_w]
            pad_h, pad_w = tile_h - crop.shape[1], tile_w - crop.shape[2]
            if pad_h or pad_w:
                crop = np.pad(crop, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
            batch[i] = crop
        with torch.inference_mode():
            result = predictor(torch.from_numpy(batch[: len(chunk)]))
            if softmax:
                result = torch.softmax(result.float(), dim=1)
            probs = result.float().cpu().numpy()
        if sums is None:
            sums = np.zeros((probs.shape[1], min(tile_h, height), width), np.float32)
        for (y, x), tile_probs in zip(chunk, probs):
            if y != top:  # a new row of tiles: the rows above it are final
                yield top, _finish(sums[:, : y - top], row_weights[top:y], col_weights)
                kept = sums[:, y - top :]
                sums = np.zeros_like(sums)
                sums[:, : kept.shape[1]] = kept
                top = y
            h, w = min(tile_h, height - y), min(tile_w, width - x)
            sums[:, y - top : y - top + h, x : x + w] += tile_probs[:, :h, :w] * weights_tile[:h, :w]
    assert sums is not None  # at least one tile
    yield top, _finish(sums[:, : height - top], row_weights[top:], col_weights)


def _finish(sums: np.ndarray, row_weights: np.ndarray, col_weights: np.ndarray) -> np.ndarray:
    """``(K, rows, W)`` weighted sums -> their weighted mean (a new array), a few rows at a time so the
    ``(rows, W)`` weight temporary stays small."""
    out = np.empty_like(sums)
    for start in range(0, sums.shape[1], _FINISH_ROWS):
        stop = start + _FINISH_ROWS
        np.divide(sums[:, start:stop], np.outer(row_weights[start:stop], col_weights), out=out[:, start:stop])
    return out


def _summed_weights(size: int, starts: list[int], weights: np.ndarray) -> np.ndarray:
    total = np.zeros(size, np.float32)
    for start in starts:
        end = min(start + len(weights), size)
        total[start:end] += weights[: end - start]
    return total


def with_flip_tta(
    predictor: TilePredictor,
    *,
    rotations: bool = True,
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TilePredictor:
    """Wrap a tile predictor to average its activated output over flips (and 90° rotations of square tiles).

    The returned callable maps ``(N, C, h, w)`` images to ``(N, K, h, w)`` float32 activated maps (softmax
    probabilities by default), so pass ``softmax=False`` when it feeds :func:`sliding_window`. Flips: none,
    rows, columns, both (4 passes); square inputs with ``rotations`` also get the transposes, i.e. all 8
    flips and 90° rotations. Averaging is right for any output that flips with the image: probabilities,
    and distance maps alike.
    """
    if activation is None:

        def activation(logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(logits.float(), dim=1)

    def augmented(images: torch.Tensor) -> torch.Tensor:
        square = rotations and images.shape[-1] == images.shape[-2]
        total = None
        count = 0
        for transpose in (False, True) if square else (False,):
            for dims in ((), (-2,), (-1,), (-2, -1)):
                view = images.transpose(-2, -1) if transpose else images
                view = torch.flip(view, dims) if dims else view
                probs = activation(predictor(view))
                probs = torch.flip(probs, dims) if dims else probs
                probs = probs.transpose(-2, -1) if transpose else probs
                total = probs if total is None else total + probs
                count += 1
        return total / count

    return augmented
