"""Deep-watershed training targets from instance labels: inner distance, outer distance, fgbg.

The recipe is DeepCell's (``deepcell.utils.transform_utils`` and ``deepcell_toolbox.utils.erode_edges``,
Bannon, Moen, Greenwald et al.), computed for all objects at once with ``np.bincount`` over the
foreground pixels instead of a ``regionprops`` loop; the one exact Euclidean distance transform (scipy)
is most of the cost (about 10 ms for a 256 x 256 patch, 0.2-0.3 s for 1024 x 1024):

- objects: DeepCell relabels the (optionally eroded) mask with ``skimage.measure.label`` (8-connected,
  one value per component), so an id whose pixels fall apart into pieces -- typically an object cut by a
  patch border or by augmentation -- gives one object per piece, each with its own centre. Same here.
- erosion: ``erosion`` rounds of "set the inner boundary pixels of every object to 0"
  (``find_boundaries(mode="inner")``, here :func:`inner_boundaries`), which also opens a gap between
  touching objects.
- outer distance: the Euclidean distance of every object pixel to the nearest background pixel (one EDT
  of the eroded foreground), divided by its object's maximum, so each object peaks at 1. As in DeepCell
  this is the distance to the *background*, not to the neighbouring object: two touching objects are
  told apart by the per-object normalisation (and by ``erosion``), not by a valley at their contact.
- inner distance: ``1 / (1 + beta * alpha * d2)`` where ``d2`` is the *squared* Euclidean distance of
  the pixel to its object's centre (DeepCell's docstring says "distance", its code squares it) and the
  centre is the centroid weighted by the outer (unnormalised) distance, so it sits in the thick part of
  the object. ``alpha="auto"`` uses ``1 / sqrt(area)`` per object, making the peak width scale with
  object size. Values lie in ``(0, 1]``; the maximum is 1 only when the centre falls on a pixel centre.
- fgbg: 1 on objects, 0 on background; with ``boundary=True`` the inner boundary pixels of every object
  (``find_boundaries(mode="inner")`` of the *uneroded* labels: against the background and against
  touching objects alike, as DeepCell's ``pixelwise_transform``) become class 2, so touching objects are
  separated by a boundary line in the foreground class. ``erosion`` does not change fgbg.

Patch borders: the array edge is not background. ``scipy.ndimage.distance_transform_edt`` measures the
distance to zero pixels inside the array only, so an object cut by the patch edge keeps growing towards
the edge: its outer distance may peak on the edge, and its inner-distance centre is the centre of its
visible part, not of the whole object. Objects well clear of the edge get the targets they would get in
the full image. This is what DeepCell does too (its generators compute targets on the cropped, augmented
patch) and it matches tiled prediction, where the network sees only the tile. A patch with no background
pixel at all has no distance to measure; there (only) the outside of the array counts as background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["deep_watershed_targets", "erode_instances", "inner_boundaries"]


def _check_instances(instances: np.ndarray) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"instances must be an (H, W) label image, got shape {instances.shape}")
    if not (np.issubdtype(instances.dtype, np.integer) or instances.dtype == bool):
        raise ValueError(f"instances must hold integer ids, got dtype {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"instances must be >= 0 (0 = background), found id {instances.min()}")
    return instances


def inner_boundaries(instances: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another value; ``find_boundaries(mode="inner")``, faster.

    Args:
        instances: (H, W) int instance ids, 0 = background.

    Returns:
        (H, W) bool; the array edge is not a boundary (as skimage's default ``reflect`` border).
    """
    boundary = np.zeros(instances.shape, bool)
    vertical = instances[1:] != instances[:-1]
    boundary[1:] |= vertical
    boundary[:-1] |= vertical
    horizontal = instances[:, 1:] != instances[:, :-1]
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    return boundary & (instances != 0)


def erode_instances(instances: np.ndarray, erosion: int) -> np.ndarray:
    """Remove the ``erosion`` outermost pixel layers of every object (DeepCell's ``erode_edges``).

    Each round zeroes the pixels on the inner boundary of every object, i.e. those with a 4-neighbour of
    another value, so touching objects lose their shared edge on both sides. The array edge is not a
    boundary.

    Args:
        instances: (H, W) int instance ids, 0 = background.
        erosion: number of rounds, >= 0.

    Returns:
        (H, W) a copy of ``instances`` (same dtype) with the eroded pixels set to 0.
    """
    if int(erosion) != erosion or erosion < 0:
        raise ValueError(f"erosion must be an integer >= 0, got {erosion}")
    out = np.array(instances, copy=True)
    for _ in range(int(erosion)):
        out[inner_boundaries(out)] = 0
    return out


def deep_watershed_targets(
    instances: np.ndarray,
    *,
    alpha: str | float = "auto",
    beta: float = 1.0,
    erosion: int = 0,
    boundary: bool = False,
) -> dict[str, np.ndarray]:
    """DeepCell's inner distance, outer distance and foreground/background targets of one label image.

    See the module docstring for the exact definitions and the treatment of patch borders.

    Args:
        instances: (H, W) int instance ids, 0 = background; ids need not be consecutive and objects may
            touch.
        alpha: ``"auto"`` (``1 / sqrt(area)`` per object) or a positive number: how fast the inner
            distance falls off with the squared distance to the object's centre.
        beta: positive scale of the inner-distance fall-off (multiplies ``alpha``).
        erosion: rounds of object erosion before both distance maps (see :func:`erode_instances`).
        boundary: add the boundary class 2 to ``fgbg``.

    Returns:
        ``{"inner": (H, W) float32 in [0, 1], "outer": (H, W) float32 in [0, 1], "fgbg": (H, W) uint8}``
        with fgbg 0 = background, 1 = foreground, 2 = object boundary (only with ``boundary=True``).
        Both distances are 0 on the background and on eroded pixels.

    Raises:
        ValueError: ``instances`` is not a 2-D non-negative integer array, or a parameter is out of range.

    Example:
        >>> labels = np.zeros((5, 9), np.int32)
        >>> labels[1:4, 1:4], labels[1:4, 5:8] = 3, 9
        >>> maps = deep_watershed_targets(labels, boundary=True)
        >>> maps["fgbg"][2].tolist()
        [0, 2, 1, 2, 0, 2, 1, 2, 0]
        >>> maps["outer"][2, :5].tolist(), float(maps["inner"][2, 6])
        ([0.0, 0.5, 1.0, 0.5, 0.0], 1.0)
    """
    instances = _check_instances(instances)
    auto = isinstance(alpha, str)
    if auto and alpha != "auto":
        raise ValueError(f"alpha must be 'auto' or a positive number, got {alpha!r}")
    if not auto and not float(alpha) > 0:
        raise ValueError(f"alpha must be 'auto' or a positive number, got {alpha!r}")
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta}")

    shape = instances.shape
    fgbg = (instances > 0).astype(np.uint8)
    if boundary and instances.size:
        fgbg[inner_boundaries(instances)] = 2
    inner = np.zeros(shape, np.float32)
    outer = np.zeros(shape, np.float32)
    if not fgbg.any():
        return {"inner": inner, "outer": outer, "fgbg": fgbg}

    from skimage.measure import label

    eroded = erode_instances(instances, erosion) if erosion else instances
    objects = label(eroded, background=0, connectivity=2)
    foreground = objects > 0
    if foreground.all():
        # No background pixel: let the outside of the array be background (see the module docstring).
        distance = ndimage.distance_transform_edt(np.pad(foreground, 1))[1:-1, 1:-1]
    else:
        distance = ndimage.distance_transform_edt(foreground)

    pixels = np.flatnonzero(foreground)
    if pixels.size == 0:  # everything eroded away
        return {"inner": inner, "outer": outer, "fgbg": fgbg}
    ids = objects.ravel()[pixels]
    dist = distance.ravel()[pixels]
    rows, cols = np.divmod(pixels, shape[1])
    count = int(ids.max()) + 1

    peak = np.ones(count)
    np.maximum.at(peak, ids, dist)  # every object pixel is >= 1 from the background
    outer.ravel()[pixels] = dist / peak[ids]

    weight = np.bincount(ids, weights=dist, minlength=count)
    weight[0] = 1.0
    centre_row = np.bincount(ids, weights=dist * rows, minlength=count) / weight
    centre_col = np.bincount(ids, weights=dist * cols, minlength=count) / weight
    squared = (rows - centre_row[ids]) ** 2 + (cols - centre_col[ids]) ** 2
    if auto:
        area = np.bincount(ids, minlength=count).astype(np.float64)
        area[0] = 1.0
        rate = float(beta) / np.sqrt(area)[ids]
    else:
        rate = float(beta) * float(alpha)
    inner.ravel()[pixels] = 1.0 / (1.0 + rate * squared)
    return {"inner": inner, "outer": outer, "fgbg": fgbg}
