"""Per-tile classification of large images: a patch classifier run over a grid of tiles.

A classification run (``task: classify``) classifies a whole image resized to ``classify.image_size``. On a
large slide the question is rather which class (tumour, stroma, ...) each region is: :func:`classify_tiles`
cuts the image into tiles of the classifier's input size (``classify.image_size``, or another ``tile``,
then fitted as ``classify.fit`` says), classifies each one exactly as
:meth:`~medseg.workflows.classify.ClassificationPredictor.predict` classifies a whole image of that size
(same channel matching, per-image normalisation, segmentation guide, fitting and TTA), and returns a
``(K, rows, cols)`` probability grid (:class:`TileClassification`) that maps back onto the pixels.

Grid: tiles start every ``stride`` pixels (default ``tile``: no overlap); when the image is not a multiple
of the stride the tiles are spread evenly so that the first starts at 0 and the last ends flush with the
image (the placement of :func:`medseg.inference.sliding_window.tile_starts`), so no tile leaves the image
and none is padded. An image smaller than a tile along an axis gets one tile along it, cut to the image and
fitted as a small whole image would be. Each pixel belongs to the tile whose centre is nearest (in
overlaps: the nearer centre), which is how the grid is drawn as a class map.

Memory: tiles are read one at a time from the image, which may be a memory map
(:func:`medseg.io.open_image_lazily`), and only ``batch_size`` prepared tiles are held at once, so memory
follows the batch, never the image (no full-size float copy is made).

:func:`predict_tile_classes` is ``medseg predict CLS_RUN IMAGES --out DIR --tiles [SIZE]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medseg.workflows.classify import ClassificationPredictor

TILE_BATCH = 32  # prepared tiles per call into the network: 32 x 3 x 224² float32 is 19 MB
GRID_COLOR = (40, 40, 40)
OVERLAY_ALPHA = 0.4


def grid_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: ``ceil((size - tile) / stride) + 1`` tiles, the first at 0, the last
    flush with the end, evenly spaced (at most ``stride`` apart).

    The placement of :func:`~medseg.inference.sliding_window.tile_starts` with an exact integer stride
    (its ``overlap`` fraction would need ``1 - stride / tile``, whose rounding can add a tile).

    >>> grid_starts(100, 32, 32)
    [0, 23, 45, 68]
    >>> grid_starts(96, 32, 32), grid_starts(20, 32, 32)
    ([0, 32, 64], [0])
    """
    if size <= tile:
        return [0]
    count = -(-(size - tile) // stride) + 1
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _nearest_tile(size: int, starts: Sequence[int], tile: int, step: int) -> np.ndarray:
    """For pixels ``0, step, 2 step, ...`` of an axis of ``size`` pixels: the index of the tile whose
    centre is nearest, ``(ceil(size / step),)`` int64."""
    centres = np.asarray(starts, np.float64) + min(tile, size) / 2
    borders = (centres[:-1] + centres[1:]) / 2
    pixel_centres = np.arange(0, size, step, dtype=np.float64) + 0.5
    return np.searchsorted(borders, pixel_centres, side="left").astype(np.int64)


@dataclass
class TileClassification:
    """A classifier's answer for every tile of one image.

    Attributes:
        probabilities: ``(K, R, C)`` float32 softmax probabilities, ``K`` classes, ``R x C`` tiles.
        starts: ``(row_starts, col_starts)``: the pixel origin of tile ``(r, c)`` is
            ``(row_starts[r], col_starts[c])``; ``len(row_starts) == R``, ``len(col_starts) == C``.
        tile: tile side in pixels (tiles of an image smaller than that are cut to the image).
        stride: the largest distance between consecutive tile origins.
        class_names: ``K`` names in class id order.
        image_shape: ``(H, W)`` of the classified image.
    """

    probabilities: np.ndarray
    starts: tuple[list[int], list[int]]
    tile: int
    stride: int
    class_names: list[str]
    image_shape: tuple[int, int]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(R, C)``: tiles per column and per row."""
        return (len(self.starts[0]), len(self.starts[1]))

    @property
    def classes(self) -> np.ndarray:
        """``(R, C)`` int64 predicted class id per tile (argmax; the lowest id wins a tie)."""
        return self.probabilities.argmax(axis=0)

    def fractions(self) -> dict[str, float]:
        """Fraction of the tiles predicted as each class, by class name."""
        counts = np.bincount(self.classes.ravel(), minlength=len(self.class_names))
        return {name: float(n / self.classes.size) for name, n in zip(self.class_names, counts, strict=True)}

    def pixel_tiles(self, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The tile each pixel belongs to (the one with the nearest centre), on every ``step``-th pixel.

        Returns:
            ``(rows, cols)``: ``(ceil(H / step),)`` and ``(ceil(W / step),)`` int64 grid indices, so the
            tile of pixel ``(i * step, j * step)`` is ``(rows[i], cols[j])``.
        """
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        height, width = self.image_shape
        return (
            _nearest_tile(height, self.starts[0], self.tile, step),
            _nearest_tile(width, self.starts[1], self.tile, step),
        )

    def class_map(self, step: int = 1) -> np.ndarray:
        """``(ceil(H / step), ceil(W / step))`` class ids of the tiles, uint8 (uint16 above 255 classes):
        the grid upsampled to the image (``step=1``) or to every ``step``-th pixel of it."""
        rows, cols = self.pixel_tiles(step)
        dtype = np.uint8 if len(self.class_names) <= 256 else np.uint16
        return self.classes.astype(dtype)[rows[:, None], cols[None, :]]

    def probability_map(self, step: int = 1) -> np.ndarray:
        """``(K, ceil(H / step), ceil(W / step))`` float32 per-class probabilities of each pixel's tile."""
        rows, cols = self.pixel_tiles(step)
        return self.probabilities[:, rows[:, None], cols[None, :]]

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per tile, row-major: ``row, col, y, x, class, probability, p_<class>...``."""
        names = self.class_names
        classes = self.classes
        out = []
        for r, y in enumerate(self.starts[0]):
            for c, x in enumerate(self.starts[1]):
                index = int(classes[r, c])
                row: dict[str, Any] = {
                    "row": r,
                    "col": c,
                    "y": y,
                    "x": x,
                    "class": names[index],
                    "probability": round(float(self.probabilities[index, r, c]), 6),
                }
                row.update({f"p_{n}": round(float(p), 6) for n, p in zip(names, self.probabilities[:, r, c])})
                out.append(row)
        return out


def check_tile_size(tile: Any, stride: Any = None) -> tuple[int, int | None]:
    """Validate a tile size and stride (``None``: the defaults); returns them as ints.

    Raises:
        ConfigError: not a whole number of pixels, below 1, or a stride above the tile (pixels no tile
            would see).
    """
    checked = []
    for name, value in (("tile size", tile), ("tile stride", stride)):
        if value is None:
            checked.append(None)
            continue
        if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
            raise ConfigError(f"{name}: must be a whole number of pixels >= 1, got {value!r}")
        checked.append(int(value))
    tile, stride = checked
    if tile is not None and stride is not None and stride > tile:
        raise ConfigError(f"tile stride: {stride} is larger than the tile ({tile}); pixels would be skipped")
    return tile, stride


def classify_tiles(
    predictor: ClassificationPredictor,
    image: np.ndarray,
    *,
    tile: int | None = None,
    stride: int | None = None,
    batch_size: int = TILE_BATCH,
    source: str = "image",
) -> TileClassification:
    """Classify every tile of a grid over one image.

    Args:
        predictor: a :class:`~medseg.workflows.classify.ClassificationPredictor` (anything with
            ``preprocess(image, source)``, ``probabilities(prepared)``, ``class_names`` and ``config``).
        image: ``(H, W)`` or ``(H, W, C)`` raw image, any dtype; a memory map is read tile by tile.
        tile: tile side in pixels; default the classifier's input size ``classify.image_size`` (another
            size is fitted to it as ``classify.fit`` says, as any image is).
        stride: largest distance between tile origins, ``1..tile``; default ``tile`` (no overlap).
        batch_size: tiles prepared and passed through the network at a time (memory grows with it).
        source: name used in error messages.

    Returns:
        The :class:`TileClassification`.

    Raises:
        ConfigError: a bad ``tile``, ``stride`` or ``batch_size``.
        DataError: the image is not 2D, is empty, or its channels do not fit the model.
    """
    tile, stride = check_tile_size(tile, stride)
    if tile is None:
        tile = int(predictor.config.classify.image_size)
    stride = tile if stride is None else stride
    if stride > tile:
        raise ConfigError(f"tile stride: {stride} is larger than the tile ({tile}); pixels would be skipped")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch size: must be a whole number >= 1, got {batch_size!r}")
    if image.ndim not in (2, 3):
        raise DataError(f"{source}: expected a 2D image (H, W) or (H, W, C), got shape {image.shape}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise DataError(f"{source}: the image is empty ({height}x{width})")
    row_starts, col_starts = grid_starts(height, tile, stride), grid_starts(width, tile, stride)
    names = list(predictor.class_names)
    probabilities = np.zeros((len(names), len(row_starts), len(col_starts)), np.float32)
    places = [(r, c) for r in range(len(row_starts)) for c in range(len(col_starts))]
    for first in range(0, len(places), batch_size):
        batch = places[first : first + batch_size]
        prepared = [
            predictor.preprocess(
                np.asarray(image[row_starts[r] : row_starts[r] + tile, col_starts[c] : col_starts[c] + tile]),
                source,
            )
            for r, c in batch
        ]
        values = predictor.probabilities(prepared)
        rows, cols = zip(*batch, strict=True)
        probabilities[:, list(rows), list(cols)] = np.asarray(values, np.float32).T
    return TileClassification(
        probabilities=probabilities,
        starts=(row_starts, col_starts),
        tile=tile,
        stride=stride,
        class_names=names,
        image_shape=(height, width),
    )


# ------------------------------------------------------------------------------------ pictures


def tile_colors(class_names: Sequence[str], colors: dict[str, Sequence[int]] | None = None) -> list:
    """One ``(r, g, b)`` per class, in id order: the run's ``data.colors`` by name, else the default
    palette (every class coloured: a classifier has no background class)."""
    from medseg.report.overlays import default_colors

    palette = default_colors(len(class_names) + 1)[1:]
    chosen = colors or {}
    return [
        tuple(int(np.clip(v, 0, 255)) for v in chosen[name][:3]) if name in chosen else palette[i]
        for i, name in enumerate(class_names)
    ]


def tile_overlay(
    image: np.ndarray,
    result: TileClassification,
    *,
    step: int = 1,
    colors: Sequence[Sequence[int]] | None = None,
    alpha: float = OVERLAY_ALPHA,
    legend: bool = True,
) -> np.ndarray:
    """The image with each tile tinted in its class's colour, grid lines between tiles and a legend.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``: the classified image (every ``step``-th pixel of it is drawn).
        result: its :class:`TileClassification`.
        step: draw every ``step``-th row and column (a smaller picture of a huge image).
        colors: ``(r, g, b)`` per class; default :func:`tile_colors`.
        alpha: colour weight, 0..1.
        legend: append a strip of class swatches below the picture.

    Returns:
        ``(h, w, 3)`` uint8, ``h >= ceil(H / step)`` (the legend adds rows).
    """
    from medseg.report.overlays import image_to_rgb8, legend_image

    rgb = image_to_rgb8(np.asarray(image[::step, ::step])).astype(np.float32)
    table = np.asarray(colors or tile_colors(result.class_names), np.float32)[:, :3]
    rows, cols = result.pixel_tiles(step)
    labels = result.classes[rows[:, None], cols[None, :]]
    out = np.round((1 - alpha) * rgb + alpha * table[labels]).clip(0, 255).astype(np.uint8)
    out[np.flatnonzero(np.diff(rows)) + 1, :] = GRID_COLOR
    out[:, np.flatnonzero(np.diff(cols)) + 1] = GRID_COLOR
    if not legend:
        return out
    key = legend_image(result.class_names, table.astype(np.uint8).tolist())
    width = max(out.shape[1], key.shape[1])
    canvas = np.full((out.shape[0] + key.shape[0], width, 3), 255, np.uint8)
    canvas[: out.shape[0], : out.shape[1]] = out
    canvas[out.shape[0] :, : key.shape[1]] = key
    return canvas


# ------------------------------------------------------------------------------------ command line


def predict_tile_classes(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    tile: int | None = None,
    stride: int | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
) -> Path:
    """Classify the tiles of image files or folders with a classification run; writes under ``out``:

    - ``tiles/<stem>.csv``: one row per tile (``row, col, y, x, class, probability, p_<class>...``);
    - ``tiles/<stem>_map.png``: the tiles' class ids at the image's size (an image above
      :data:`~medseg.workflows.predict.LARGE_IMAGE_PIXELS`: every k-th pixel, at most
      :data:`~medseg.workflows.predict.OVERLAY_MAX_SIDE` a side);
    - ``tiles/<stem>_overlay.png``: the image (at most ``OVERLAY_MAX_SIDE`` a side) tinted by tile class,
      with grid lines and a legend;
    - ``predictions.csv``: per image ``file, height, width, tile, stride, tiles, grid_rows, grid_cols``,
      ``fraction_<class>`` (of its tiles) and ``tiles_csv``.

    Uncompressed TIFFs are memory-mapped and read tile by tile. An unreadable file is reported after the
    others are written. Under torchrun each process classifies every N-th file; rank 0 writes the CSV.

    Raises:
        ConfigError: a bad tile size or stride.
        DataError: unreadable inputs (after writing everything else), or no inputs.
        RunError: not a classification run.
    """
    from medseg.engine.distributed import distributed_session

    tile, stride = check_tile_size(tile, stride)
    with distributed_session(device) as job:
        return _predict_tiles(run_dir, inputs, Path(out), job, tile, stride, device, overrides)


def _predict_tiles(run_dir, inputs, out: Path, job, tile, stride, device, overrides) -> Path:
    from tqdm.auto import tqdm

    from medseg.io import open_image_lazily, write_csv_atomic, write_image
    from medseg.workflows.classify import ClassificationPredictor, write_sharded_rows
    from medseg.workflows.predict import LARGE_IMAGE_PIXELS, OVERLAY_MAX_SIDE, _unique_stems, collect_inputs
    from medseg.workflows.volume import is_volume_input

    files = collect_inputs(inputs)
    predictor = ClassificationPredictor.from_run(run_dir, device=device, overrides=overrides)
    colors = tile_colors(predictor.class_names, predictor.config.data.colors)
    rows, problems = [], []
    mine = job.shard(list(zip(files, _unique_stems(files), strict=True)))
    bar = tqdm(mine, desc="tiles", unit="image", disable=None if job.is_main else True, leave=False)
    for index, (path, stem) in bar:
        try:
            if is_volume_input(path):
                raise DataError(f"{path}: a volume; --tiles classifies 2D images")
            image = open_image_lazily(path)
            result = classify_tiles(predictor, image, tile=tile, stride=stride, source=str(path))
        except DataError as exc:
            problems.append((index, str(exc)))
            continue
        height, width = result.image_shape
        folder = out / "tiles"
        write_csv_atomic(folder / f"{stem}.csv", result.rows())
        map_step = (
            1 if height * width <= LARGE_IMAGE_PIXELS else math.ceil(max(height, width) / OVERLAY_MAX_SIDE)
        )
        write_image(folder / f"{stem}_map.png", result.class_map(map_step))
        overlay_step = math.ceil(max(height, width) / OVERLAY_MAX_SIDE)
        write_image(
            folder / f"{stem}_overlay.png", tile_overlay(image, result, step=overlay_step, colors=colors)
        )
        row: dict[str, Any] = {
            "file": str(path),
            "height": height,
            "width": width,
            "tile": result.tile,
            "stride": result.stride,
            "tiles": result.classes.size,
            "grid_rows": result.grid_shape[0],
            "grid_cols": result.grid_shape[1],
        }
        row.update({f"fraction_{name}": round(f, 6) for name, f in result.fractions().items()})
        row["tiles_csv"] = f"tiles/{stem}.csv"
        rows.append((index, row))
    return write_sharded_rows(job, rows, problems, out / "predictions.csv")
