"""Deep-watershed post-processing: instance labels from predicted inner/outer distance and fgbg maps.

DeepCell's recipe (``deepcell_toolbox.deep_watershed``, Bannon, Moen, Greenwald et al.), in NumPy, SciPy
and scikit-image only:

1. smooth the maxima map (the inner distance) with a gaussian of ``maxima_smooth`` (0 = none) and the
   interior maps with ``interior_smooth``;
2. markers = local maxima of the inner distance above ``maxima_threshold``, at least ``min_distance``
   apart (``skimage.feature.peak_local_max`` semantics), or, with ``maxima_algorithm="h_maxima"``,
   DeepCell's default ``h_maxima(inner, h=maxima_threshold, footprint=disk(radius))``; markers whose
   pixels touch (8-connected) are one marker;
3. mask = interior map > ``interior_threshold``; flood ``-outer`` from the markers within the mask
   (``skimage.segmentation.watershed``, 4-connected, no watershed line);
4. remove objects of fewer than ``small_objects_threshold`` pixels, fill holes of fewer than
   ``fill_holes_threshold`` pixels, relabel 1..K.

Which map gates the interior: DeepCell floods and thresholds the *same* map, its last model output
(``interior_index=-1``), which for ``[inner, outer, fgbg]`` outputs is the fgbg map; the original 2018
recipe used the outer distance for both. Here the flood surface is always the outer distance: it carries
the shape of each object, whereas a foreground probability is flat (near 1) inside objects, so flooding it
splits touching objects by queue order rather than by shape. The mask comes from ``fgbg`` when given
(as DeepCell's ``interior_index=-1``), else from the outer distance; ``interior_threshold`` applies to
that map (DeepCell's default 0.01 suits the outer distance; a probability map wants ~0.2-0.5).

Other differences from DeepCell, all deliberate: the default marker search is ``peak_local_max`` (DeepCell
switched its default to ``h_maxima``, which took ~15 s on the 2048^2 benchmark frame against ~0.1 s;
both are available); ``exclude_border`` also applies to ``h_maxima`` markers (DeepCell ignores it
there); holes are filled only when enclosed by a single object (DeepCell's ``fill_holes`` works on each
object's bounding box and can also fill small background corners of the box); ``label_erosion`` and
``pixel_expansion`` are not offered.

Speed, with labels identical (up to renumbering) to the plain scikit-image calls above:

- :func:`find_peaks` returns exactly ``peak_local_max``'s peaks without scipy's ``maximum_filter`` over
  the whole image and without its per-peak Python loop: a peak is also a 3 x 3 maximum, so those few
  pixels are found first and only their windows are checked (a sliding maximum by doubling replaces this
  when they are many); the ``min_distance`` spacing rule, which can only drop peaks tied in value, runs
  only over peaks that have a tied neighbour closer than ``min_distance``;
- :func:`watershed_by_component` floods each connected component of the mask separately, because no
  flood crosses from one component to another: a component whose markers carry one label *is* that
  label, without flooding (most isolated cells), and the others are flooded in their bounding boxes,
  packed side by side into strips, where the priority queue stays small. The result equals one
  ``watershed`` call on the whole image, pixel for pixel (see that function for the one exception to
  the speed-up: markers tied in value).

``benchmarks/instance.py`` measures both against the plain recipe on a 2048 x 2048 frame.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError

MAXIMA_ALGORITHMS = ("peak_local_max", "h_maxima")

__all__ = [
    "MAXIMA_ALGORITHMS",
    "WatershedParams",
    "deep_watershed",
    "fill_small_holes",
    "find_peaks",
    "watershed_by_component",
]


@dataclass
class WatershedParams:
    """The thresholds of :func:`deep_watershed`, storable as ``thresholds.json`` (DeepCell's defaults).

    Attributes:
        maxima_threshold: inner-distance level a marker must exceed (``h`` for ``h_maxima``).
        interior_threshold: level of the interior map (fgbg if given, else outer distance) that the mask
            must exceed.
        min_distance: markers are at least this many pixels apart (Chebyshev; ``peak_local_max``'s
            ``min_distance``, DeepCell's ``radius``); also the border width of ``exclude_border``.
        small_objects_threshold: objects with fewer pixels are removed (0 = keep all).
        fill_holes_threshold: background holes with fewer pixels, enclosed by one object, are filled
            (0 = off).
        exclude_border: no markers within ``min_distance`` of the image edge.
        maxima_smooth: gaussian sigma applied to the inner distance before the marker search (0 = none).
        interior_smooth: gaussian sigma applied to the outer distance and fgbg maps (0 = none).
        maxima_algorithm: ``"peak_local_max"`` or ``"h_maxima"`` (see the module docstring).
        radius: radius of the disk footprint of ``h_maxima`` (unused by ``peak_local_max``).
    """

    maxima_threshold: float = 0.1
    interior_threshold: float = 0.01
    min_distance: int = 10
    small_objects_threshold: int = 0
    fill_holes_threshold: int = 0
    exclude_border: bool = False
    maxima_smooth: float = 0.0
    interior_smooth: float = 1.0
    maxima_algorithm: str = "peak_local_max"
    radius: int = 10

    def __post_init__(self) -> None:
        for name in ("maxima_threshold", "interior_threshold", "maxima_smooth", "interior_smooth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"watershed.{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        for name, low in (("min_distance", 1), ("radius", 1), ("small_objects_threshold", 0)):
            self._check_int(name, low)
        self._check_int("fill_holes_threshold", 0)
        if self.maxima_smooth < 0 or self.interior_smooth < 0:
            raise ValueError("watershed.maxima_smooth and watershed.interior_smooth must be >= 0")
        if not isinstance(self.exclude_border, (bool, np.bool_)):
            raise ValueError(f"watershed.exclude_border must be true or false, got {self.exclude_border!r}")
        self.exclude_border = bool(self.exclude_border)
        if self.maxima_algorithm not in MAXIMA_ALGORITHMS:
            raise ValueError(
                f"watershed.maxima_algorithm: {self.maxima_algorithm!r} is not one of "
                f"{', '.join(MAXIMA_ALGORITHMS)}"
            )
        if self.maxima_algorithm == "h_maxima" and self.maxima_threshold <= 0:
            raise ValueError("watershed.maxima_threshold must be > 0 for h_maxima (it is the height h)")

    def _check_int(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer))
            or not math.isfinite(value)
            or value != int(value)
        ):
            raise ValueError(f"watershed.{name} must be an integer >= {low}, got {value!r}")
        if value < low:
            raise ValueError(f"watershed.{name} must be an integer >= {low}, got {value!r}")
        setattr(self, name, int(value))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; ``deep_watershed(inner, outer, **params.to_dict())`` applies it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "thresholds.json") -> WatershedParams:
        """Parameters from a dict such as a loaded ``thresholds.json``; missing keys take the defaults.

        Raises:
            ConfigError: an unknown key (with a "did you mean" hint) or an invalid value, naming ``source``.
        """
        if not isinstance(data, Mapping):
            kind = type(data).__name__
            raise ConfigError(f"{source}: expected a mapping of watershed parameters, got {kind}")
        names = [field.name for field in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
                raise ConfigError(f"{source}: unknown watershed parameter {key!r}{hint}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _sliding_max(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Maximum over windows ``[i, i + size)`` along ``axis``: ``n - size + 1`` results, exact.

    Doubling: after k steps each entry is the maximum of ``2**k`` consecutive values; two overlapping
    power-of-two windows then cover any ``size``.
    """
    values = np.moveaxis(values, axis, 0)
    count = values.shape[0] - size + 1
    width, out = 1, values
    while 2 * width <= size:
        out = np.maximum(out[:-width], out[width:])
        width *= 2
    if width < size:
        out = np.maximum(out[:count], out[size - width : size - width + count])
    return np.moveaxis(out[:count], 0, axis)


def _max3x3(image: np.ndarray) -> np.ndarray:
    """Maximum over each pixel's 3 x 3 neighbourhood (the part inside the image)."""
    vertical = image.copy()
    np.maximum(vertical[1:], image[:-1], out=vertical[1:])
    np.maximum(vertical[:-1], image[1:], out=vertical[:-1])
    out = vertical.copy()
    np.maximum(out[:, 1:], vertical[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], vertical[:, 1:], out=out[:, :-1])
    return out


def find_peaks(
    image: np.ndarray, *, min_distance: int, threshold: float, exclude_border: bool | int = False
) -> np.ndarray:
    """Local maxima of an image; the same peaks, in the same order, as ``skimage.feature.peak_local_max``.

    Equivalent to ``peak_local_max(image, min_distance=min_distance, threshold_abs=threshold,
    exclude_border=exclude_border)``: a peak is a pixel above ``threshold`` equal to the maximum of the
    ``(2 * min_distance + 1)`` square around it (edge values repeated past the image edge), not within
    the excluded border; of peaks closer than ``min_distance`` (Chebyshev), which can only be ties, the
    first in (value descending, row-major) order is kept. A constant image has no peaks.

    Args:
        image: (H, W) real array.
        min_distance: half-width of the window, >= 1.
        threshold: peaks must be strictly greater.
        exclude_border: True = ``min_distance`` pixels, an int = that many pixels, False/0 = none.

    Returns:
        (K, 2) intp (row, col) coordinates, highest peak first (ties in row-major order).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"find_peaks expects an (H, W) image, got shape {image.shape}")
    if int(min_distance) != min_distance or min_distance < 1:
        raise ValueError(f"min_distance must be an integer >= 1, got {min_distance}")
    min_distance = int(min_distance)
    if isinstance(exclude_border, (bool, np.bool_)):
        border = min_distance if exclude_border else 0
    else:
        border = int(exclude_border)
        if border < 0:
            raise ValueError(f"exclude_border must be a bool or an integer >= 0, got {exclude_border}")
    empty = np.empty((0, 2), np.intp)
    if image.size == 0:
        return empty
    # A peak is also the maximum of its 3 x 3 neighbourhood: find those (cheap), then check the full window
    # at them only, unless they are so many that one sliding maximum over the whole image is cheaper.
    candidates = image == _max3x3(image)
    candidates &= image > threshold
    coords = np.argwhere(candidates)
    if len(coords) == image.size and image.min() == image.max():  # a constant image has no peaks
        return empty
    if border:
        height, width = image.shape
        inside = (
            (coords >= border).all(axis=1)
            & (coords[:, 0] < height - border)
            & (coords[:, 1] < width - border)
        )
        coords = coords[inside]
    size = 2 * min_distance + 1
    if len(coords) * size * size <= image.size:
        offsets = np.arange(-min_distance, min_distance + 1)
        rows = np.clip(coords[:, :1] + offsets, 0, image.shape[0] - 1)
        cols = np.clip(coords[:, 1:] + offsets, 0, image.shape[1] - 1)
        window_max = image[rows[:, :, None], cols[:, None, :]].max(axis=(1, 2))
    else:
        padded = np.pad(image, min_distance, mode="edge")
        window_max = _sliding_max(_sliding_max(padded, size, axis=0), size, axis=1)[
            coords[:, 0], coords[:, 1]
        ]
    coords = coords[image[coords[:, 0], coords[:, 1]] == window_max]
    if coords.size == 0:
        return empty
    coords = coords[np.argsort(-image[coords[:, 0], coords[:, 1]], kind="stable")]
    if min_distance > 1 and len(coords) > 1:
        coords = _enforce_spacing(coords, min_distance)
    return coords


def _enforce_spacing(coords: np.ndarray, min_distance: int) -> np.ndarray:
    """Greedy spacing in the given order: drop a point closer than ``min_distance`` to a kept one."""
    from scipy.spatial import cKDTree

    # Integer coordinates: Chebyshev distance < min_distance  <=>  <= min_distance - 1.
    pairs = cKDTree(coords).query_pairs(r=min_distance - 1, p=np.inf, output_type="ndarray")
    if len(pairs) == 0:
        return coords
    pairs = np.sort(pairs, axis=1)  # (earlier, later) in priority order
    neighbours: dict[int, list[int]] = {}
    for first, second in pairs.tolist():
        neighbours.setdefault(first, []).append(second)
    dropped: set[int] = set()
    for index in sorted(neighbours):
        if index not in dropped:
            dropped.update(neighbours[index])
    keep = np.ones(len(coords), bool)
    keep[list(dropped)] = False
    return coords[keep]


def watershed_by_component(surface: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(surface, markers, mask=mask)``, one mask component at a time.

    The result is identical, pixel for pixel: a flood never leaves its 4-connected component of the mask,
    and inside a component the priority queue pops in the same (value, insertion) order either way.
    Components without markers stay 0, a component whose markers all carry one label takes that label
    without flooding, and the rest are flooded in their bounding boxes, several boxes side by side per
    ``watershed`` call.

    One exception: skimage queues all markers with one rank, so two markers of one component at exactly
    equal surface values leave its queue in an order set by the heap layout, i.e. by every marker in the
    call, and no split can reproduce it. When such a tie exists (quantised or clipped maps) this function
    makes the one whole-image call instead: always identical, fast only on continuous maps.

    Args:
        surface: (H, W) real priority map (low floods first).
        markers: (H, W) int marker labels, 0 = none; markers outside ``mask`` are ignored.
        mask: (H, W) bool, the pixels that may be labelled.

    Returns:
        (H, W) int32 labels (the marker labels), 0 outside the flooded components.
    """
    mask = np.asarray(mask, bool)
    markers = np.asarray(markers)
    surface = np.asarray(surface)
    if not (surface.shape == markers.shape == mask.shape) or mask.ndim != 2:
        shapes = f"surface {surface.shape}, markers {markers.shape}, mask {mask.shape}"
        raise ValueError(f"expected three (H, W) arrays of one shape, got {shapes}")
    where = np.flatnonzero(markers)
    return _flood(surface, where, markers.ravel()[where], mask, negate=False)


_STRIP_PIXELS = 60_000


def _flood(
    surface: np.ndarray, seeds: np.ndarray, seed_labels: np.ndarray, mask: np.ndarray, *, negate: bool
) -> np.ndarray:
    """:func:`watershed_by_component` with markers as flat indices + labels; floods ``-surface`` if negate."""
    components, count = ndimage.label(mask)
    out = np.zeros(mask.shape, np.int32)
    keep = mask.ravel()[seeds]
    seeds, seed_labels = seeds[keep], seed_labels[keep].astype(np.int64)
    if seeds.size == 0:
        return out
    component_of = components.ravel()[seeds]
    # Distinct (component, label) pairs -> how many labels each component holds.
    base = int(seed_labels.max()) + 1
    pairs = np.unique(component_of.astype(np.int64) * base + seed_labels)
    pair_component = pairs // base
    labels_in = np.bincount(pair_component, minlength=count + 1)
    lookup = np.zeros(count + 1, np.int32)
    single = labels_in[pair_component] == 1
    lookup[pair_component[single]] = pairs[single] % base
    out = lookup[components]

    # Flood the rest side by side in strips of about _STRIP_PIXELS: one skimage call per strip rather
    # than per component (each call costs ~0.1-0.3 ms of argument checks and padding), while the queue of
    # each call stays small, unlike in one call over the whole image.
    multi = labels_in[component_of] > 1
    order = np.argsort(component_of[multi], kind="stable")
    flood_seeds, flood_labels, component_of = (
        seeds[multi][order],
        seed_labels[multi][order],
        component_of[multi][order],
    )
    # skimage queues all markers with one rank, so markers of one component at exactly equal surface
    # values leave its queue in an order set by the heap layout, i.e. by every marker in the call. Only
    # one call over the whole image reproduces that: take it when such a tie exists (quantised maps).
    values = surface.ravel()[flood_seeds]
    by_value = np.lexsort((values, component_of))
    same = np.diff(component_of[by_value]) == 0
    if (same & (np.diff(values[by_value]) == 0)).any():
        from skimage.segmentation import watershed

        markers = np.zeros(mask.shape, np.int32)
        markers.ravel()[seeds] = seed_labels
        return watershed(np.negative(surface) if negate else surface, markers, mask=mask)
    seeds, seed_labels = flood_seeds, flood_labels
    flooded = np.flatnonzero(labels_in > 1)
    starts = np.searchsorted(component_of, flooded)
    ends = np.searchsorted(component_of, flooded, side="right")
    boxes = ndimage.find_objects(components)
    # Boxes of similar height share a strip, so that little of its canvas is padding.
    heights = np.array([boxes[c - 1][0].stop - boxes[c - 1][0].start for c in flooded.tolist()], np.intp)
    by_height = np.argsort(heights, kind="stable")
    flooded, starts, ends = flooded[by_height], starts[by_height], ends[by_height]
    strip: list[tuple[int, slice]] = []
    area = 0
    for component, start, end in zip(flooded.tolist(), starts.tolist(), ends.tolist()):
        box = boxes[component - 1]
        box_area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        if strip and area + box_area > _STRIP_PIXELS:
            _flood_strip(surface, components, boxes, strip, seeds, seed_labels, out, negate)
            strip, area = [], 0
        strip.append((component, slice(start, end)))
        area += box_area
    if strip:
        _flood_strip(surface, components, boxes, strip, seeds, seed_labels, out, negate)
    return out


def _flood_strip(
    surface: np.ndarray,
    components: np.ndarray,
    boxes: list[tuple[slice, slice]],
    strip: list[tuple[int, slice]],
    seeds: np.ndarray,
    seed_labels: np.ndarray,
    out: np.ndarray,
    negate: bool,
) -> None:
    """Flood mask components side by side in one canvas, a masked-out column between neighbours."""
    from skimage.segmentation import watershed

    heights = [boxes[c - 1][0].stop - boxes[c - 1][0].start for c, _ in strip]
    widths = [boxes[c - 1][1].stop - boxes[c - 1][1].start for c, _ in strip]
    shape = (max(heights), sum(widths) + len(strip) - 1)
    canvas = np.zeros(shape, surface.dtype)
    markers = np.zeros(shape, np.int32)
    allowed = np.zeros(shape, bool)
    places = []
    left = 0
    for (component, own), height, width in zip(strip, heights, widths):
        box = boxes[component - 1]
        place = (slice(0, height), slice(left, left + width))
        inside = components[box] == component
        if negate:
            np.negative(surface[box], out=canvas[place])
        else:
            canvas[place] = surface[box]
        allowed[place] = inside
        rows, cols = np.divmod(seeds[own], surface.shape[1])
        markers[rows - box[0].start, cols - box[1].start + left] = seed_labels[own]
        places.append((box, place, inside))
        left += width + 1
    flooded = watershed(canvas, markers, mask=allowed)
    for box, place, inside in places:
        out[box][inside] = flooded[place][inside]


def fill_small_holes(labels: np.ndarray, max_size: int) -> np.ndarray:
    """Fill background holes of fewer than ``max_size`` pixels that are enclosed by a single object.

    A hole is a 4-connected background component that does not touch the image edge; it is filled with
    the label of its neighbours when all its 4-neighbours belong to one object.

    Args:
        labels: (H, W) int instance labels, 0 = background.
        max_size: holes must have fewer pixels than this.

    Returns:
        (H, W) a filled copy of ``labels`` (same dtype).
    """
    out = np.array(labels, copy=True)
    holes, count = ndimage.label(out == 0)
    if count == 0 or max_size <= 1:
        return out
    sizes = np.bincount(holes.ravel(), minlength=count + 1)
    candidate = sizes < max_size
    candidate[0] = False
    edge = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
    candidate[edge] = False
    if not candidate.any():
        return out
    lowest = np.full(count + 1, np.iinfo(np.int64).max)
    highest = np.zeros(count + 1, np.int64)
    for hole_side, label_side in (
        (holes[:-1], out[1:]),
        (holes[1:], out[:-1]),
        (holes[:, :-1], out[:, 1:]),
        (holes[:, 1:], out[:, :-1]),
    ):
        touching = candidate[hole_side] & (label_side > 0)
        np.minimum.at(lowest, hole_side[touching], label_side[touching])
        np.maximum.at(highest, hole_side[touching], label_side[touching])
    fill = candidate & (lowest == highest)
    if fill.any():
        lookup = np.where(fill, highest, 0)
        fillable = fill[holes]
        out[fillable] = lookup[holes[fillable]]
    return out


def _check_map(name: str, value: np.ndarray | None, shape: tuple[int, ...] | None) -> np.ndarray:
    """The map as an array (integer maps as float32, so smoothing does not truncate), validated."""
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) map, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape} but inner has shape {shape}")
    if not (
        array.dtype == bool
        or np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a real-valued map, got dtype {array.dtype}")
    if array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):  # NaN propagates
        raise ValueError(f"{name} contains NaN or infinite values")
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float32)


def deep_watershed(
    inner: np.ndarray,
    outer: np.ndarray,
    fgbg: np.ndarray | None = None,
    *,
    maxima_threshold: float = 0.1,
    interior_threshold: float = 0.01,
    min_distance: int = 10,
    small_objects_threshold: int = 0,
    fill_holes_threshold: int = 0,
    exclude_border: bool = False,
    maxima_smooth: float = 0.0,
    interior_smooth: float = 1.0,
    maxima_algorithm: str = "peak_local_max",
    radius: int = 10,
) -> np.ndarray:
    """Instance labels from a deep-watershed network's maps (see the module docstring for the recipe).

    Args:
        inner: (H, W) float predicted inner distance in [0, 1], peaking at object centres.
        outer: (H, W) float predicted outer distance in [0, 1]; the flood surface, and the interior map
            when ``fgbg`` is None.
        fgbg: (H, W) float foreground probability, or None; when given it is the interior map.
        maxima_threshold, interior_threshold, min_distance, small_objects_threshold,
        fill_holes_threshold, exclude_border, maxima_smooth, interior_smooth, maxima_algorithm, radius:
            see :class:`WatershedParams` (``**params.to_dict()`` passes a stored set).

    Returns:
        (H, W) int32 instance labels 1..K in row-major order of their markers, 0 = background.

    Raises:
        ValueError: maps of different shapes, not 2-D, not real or not finite; an invalid parameter.

    Example:
        >>> rows, cols = np.mgrid[:32, :64]
        >>> discs = [np.hypot(rows - 16, cols - c) for c in (16, 46)]
        >>> inner = np.maximum(*[np.clip(1 - d / 10, 0, 1) for d in discs])
        >>> labels = deep_watershed(inner, inner, min_distance=5, interior_threshold=0.05)
        >>> labels.dtype, int(labels.max()), int(labels[16, 16]), int(labels[16, 46]), int(labels[0, 0])
        (dtype('int32'), 2, 1, 2, 0)
    """
    params = WatershedParams(
        maxima_threshold=maxima_threshold,
        interior_threshold=interior_threshold,
        min_distance=min_distance,
        small_objects_threshold=small_objects_threshold,
        fill_holes_threshold=fill_holes_threshold,
        exclude_border=exclude_border,
        maxima_smooth=maxima_smooth,
        interior_smooth=interior_smooth,
        maxima_algorithm=maxima_algorithm,
        radius=radius,
    )
    inner = _check_map("inner", inner, None)
    outer = _check_map("outer", outer, inner.shape)
    if fgbg is not None:
        fgbg = _check_map("fgbg", fgbg, inner.shape)

    def smooth(array: np.ndarray, sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(array, sigma) if sigma > 0 else array

    maxima = smooth(inner, params.maxima_smooth)
    surface = smooth(outer, params.interior_smooth)
    interior = surface if fgbg is None else smooth(fgbg, params.interior_smooth)

    width = inner.shape[1]
    if params.maxima_algorithm == "peak_local_max":
        coords = find_peaks(
            maxima,
            min_distance=params.min_distance,
            threshold=params.maxima_threshold,
            exclude_border=params.exclude_border,
        )
        seeds = np.sort(coords[:, 0] * width + coords[:, 1])
        seed_labels = np.arange(1, len(seeds) + 1)  # numbered in row-major order
        if params.min_distance == 1 and len(seeds):  # tied neighbours survive min_distance=1: one marker
            markers = np.zeros(inner.shape, bool)
            markers.ravel()[seeds] = True
            seed_labels = ndimage.label(markers, structure=np.ones((3, 3), bool))[0].ravel()[seeds]
    else:
        from skimage.morphology import disk, h_maxima

        plateaus = h_maxima(maxima, params.maxima_threshold, footprint=disk(params.radius))
        if params.exclude_border:
            edge = params.min_distance
            plateaus[:edge], plateaus[-edge:], plateaus[:, :edge], plateaus[:, -edge:] = 0, 0, 0, 0
        markers = ndimage.label(plateaus, structure=np.ones((3, 3), bool))[0]
        seeds = np.flatnonzero(markers)
        seed_labels = markers.ravel()[seeds]

    labels = _flood(surface, seeds, seed_labels, interior > params.interior_threshold, negate=True)

    # Small objects out, holes filled, then 1..K in the order of the marker labels.
    sizes = np.bincount(labels.ravel(), minlength=1)
    keep = sizes >= max(params.small_objects_threshold, 1)
    keep[0] = False
    if params.fill_holes_threshold > 1:
        labels = fill_small_holes(np.where(keep[labels], labels, 0), params.fill_holes_threshold)
        keep = np.bincount(labels.ravel(), minlength=len(keep)) > 0
        keep[0] = False
    lookup = np.zeros(len(keep), np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]
