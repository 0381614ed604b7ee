"""Per-object measurements, instance types by majority vote, and counts (NumPy/scikit-image only).

``objects.csv`` and ``counts.csv`` of ``medseg predict`` come from here; for typed cells the counts over
``differential`` types are the differential count (each type as a percentage of those cells).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OBJECT_COLUMNS = (
    "label",
    "class",
    "area",
    "centroid_y",
    "centroid_x",
    "mean_intensity",
    "eccentricity",
)


def majority_types(instances: np.ndarray, type_probabilities: np.ndarray | None) -> dict[int, np.ndarray]:
    """Mean type probabilities over each instance's pixels; its type is their argmax.

    Averaging probabilities (soft voting) rather than counting per-pixel argmax votes breaks ties by
    confidence; on objects with a clear majority both agree.

    Args:
        instances: ``(H, W)`` int instance ids, 0 = background.
        type_probabilities: ``(K, H, W)`` per-pixel type probabilities, or None (untyped).

    Returns:
        instance id -> ``(K,)`` float32 mean probabilities; empty when untyped or without instances.
    """
    if type_probabilities is None:
        return {}
    ids = instances.ravel()
    inside = ids > 0
    present = np.unique(ids[inside])
    if present.size == 0:
        return {}
    inverse = np.searchsorted(present, ids[inside])
    sums = np.stack(
        [
            np.bincount(inverse, weights=channel.ravel()[inside], minlength=present.size)
            for channel in type_probabilities
        ],
        axis=1,
    )
    means = sums / np.bincount(inverse, minlength=present.size)[:, None]
    return {int(i): row.astype(np.float32) for i, row in zip(present, means)}


def object_table(
    instances: np.ndarray,
    image: np.ndarray | None = None,
    types: dict[int, str] | None = None,
) -> list[dict]:
    """One row per object: label, class, area, centroid, mean intensity, eccentricity.

    Args:
        instances: ``(H, W)`` int instance ids, 0 = background.
        image: ``(H, W)`` or ``(H, W, C)`` intensities for ``mean_intensity`` (mean over channels), or None.
        types: instance id -> type name ("" for untyped objects).

    Returns:
        Rows (dicts keyed by :data:`OBJECT_COLUMNS`) in label order.
    """
    from skimage.measure import regionprops_table

    properties = ["label", "area", "centroid", "eccentricity"]
    intensity = None
    if image is not None:
        intensity = image.astype(np.float32)
        if intensity.ndim == 3:
            intensity = intensity.mean(axis=-1)
        properties.append("intensity_mean")
    table = regionprops_table(instances.astype(np.int32), intensity_image=intensity, properties=properties)
    types = types or {}
    rows = []
    for i, label in enumerate(table["label"].tolist()):
        mean = round(float(table["intensity_mean"][i]), 4) if intensity is not None else ""
        rows.append(
            {
                "label": int(label),
                "class": types.get(int(label), ""),
                "area": int(table["area"][i]),
                "centroid_y": round(float(table["centroid-0"][i]), 2),
                "centroid_x": round(float(table["centroid-1"][i]), 2),
                "mean_intensity": mean,
                "eccentricity": round(float(table["eccentricity"][i]), 4),
            }
        )
    return rows


def count_objects(
    types: Sequence[str], classes: Sequence[str] = (), differential: Sequence[str] = ()
) -> list[dict]:
    """Counts per class of one image's objects, with percentages over the ``differential`` classes.

    Args:
        types: each object's type name ("" = untyped).
        classes: all type names, so that absent types get a 0 row (untyped runs: empty).
        differential: the types a differential count is over (e.g. the white-cell types); their
            ``percent`` is the share among them, other rows have an empty percent.

    Returns:
        Rows ``{"class", "count", "percent"}``: one per class (an untyped run: one ``objects`` row), then
        ``total`` (all objects).
    """
    counts = {name: 0 for name in classes}
    for name in types:
        key = name or "objects"
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        counts["objects"] = 0
    among = sum(counts.get(name, 0) for name in differential)
    rows = []
    for name, count in counts.items():
        percent = round(100.0 * count / among, 2) if name in differential and among else ""
        rows.append({"class": name, "count": count, "percent": percent})
    rows.append({"class": "total", "count": len(types), "percent": ""})
    return rows
