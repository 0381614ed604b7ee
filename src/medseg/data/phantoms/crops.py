"""White-cell crops of the blood smear phantoms: a leukocyte-type classification set with exact labels.

Each white cell of a smear becomes one square RGB crop centred on the cell (the centroid of its
instance mask), labelled with its type. Where a crop reaches past the smear's edge it is filled with the
smear's background colour (the median of its unlabelled pixels), not mirrored: a reflection would draw
a second, fake half cell.

Example:
    >>> crops = wbc_crops(blood_smear(128, rng=0, wbc_types=["monocyte"]), crop=64)
    >>> [(c.cell_type, c.image.shape, bool(c.mask[32, 32])) for c in crops]
    [('monocyte', (64, 64, 3), True)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.phantoms.blood import MIN_SIZE, WBC_TYPES, BloodSmear, blood_smear
from medseg.errors import MedsegError
from medseg.io import write_csv_atomic, write_image, write_text_atomic

CROP_SIZE = 64  # the largest white cell (radius <= 20 px, outline wobble <= 12%) is <= 45 px across
MIN_CROP = 16


@dataclass
class WbcCrop:
    """One white cell cut out of a smear.

    Attributes:
        image: ``(crop, crop, 3)`` uint8 RGB, the cell's centroid at ``(crop // 2, crop // 2)``.
        mask: ``(crop, crop)`` bool, the pixels of this cell's instance.
        cell_type: one of :data:`~medseg.data.phantoms.blood.WBC_TYPES`.
        instance_id: the cell's id in the smear's ``instances``.
        centre: ``(row, col)`` of the crop centre in the smear.
    """

    image: np.ndarray
    mask: np.ndarray
    cell_type: str
    instance_id: int
    centre: tuple[int, int]


def wbc_crops(smear: BloodSmear, crop: int = CROP_SIZE) -> list[WbcCrop]:
    """Cut one crop per white cell of a smear, in instance id order.

    Args:
        smear: a smear from :func:`~medseg.data.phantoms.blood.blood_smear`.
        crop: crop side in pixels (>= 16); the default fits every white cell whole.

    Returns:
        One :class:`WbcCrop` per white cell; red cells are skipped.

    Raises:
        MedsegError: ``crop`` is smaller than 16.
    """
    if crop < MIN_CROP:
        raise MedsegError(f"white-cell crop size must be at least {MIN_CROP} px, got {crop}")
    white = sorted(i for i, kind in smear.cell_types.items() if kind in WBC_TYPES)
    if not white:
        return []
    background = smear.semantic == 0
    fill = np.median(smear.image[background], axis=0) if background.any() else np.full(3, 255.0)
    centres = ndimage.center_of_mass(np.ones(smear.instances.shape), smear.instances, white)
    crops = []
    for cell_id, (cy, cx) in zip(white, centres):
        row, col = int(np.rint(cy)), int(np.rint(cx))
        top, left = row - crop // 2, col - crop // 2
        image = _cut(smear.image, top, left, crop, fill.round().astype(np.uint8))
        mask = _cut(smear.instances == cell_id, top, left, crop, False)
        crops.append(WbcCrop(image, mask, smear.cell_types[cell_id], cell_id, (row, col)))
    return crops


def _cut(array: np.ndarray, top: int, left: int, size: int, fill: np.ndarray | bool) -> np.ndarray:
    """``array[top:top+size, left:left+size]``, the part outside the array set to ``fill``."""
    out = np.empty((size, size, *array.shape[2:]), array.dtype)
    out[...] = fill
    h, w = array.shape[:2]
    y0, y1, x0, x1 = max(top, 0), min(top + size, h), max(left, 0), min(left + size, w)
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return out


def write_wbc_crops(
    out: str | Path, n_smears: int, *, size: int = 256, crop: int = CROP_SIZE, seed: int = 0
) -> Path:
    """Write the white cells of ``n_smears`` blood smear phantoms as a class-per-folder crop set.

    Layout: ``out/<type>/smear_000_cell00.png`` for each of the five types (a folder per type even when
    it is empty, so the class list never depends on ``n_smears``) and ``out/labels.csv`` with columns
    ``path,label,group``, ``group`` being the smear (``smear_000``) so a grouped split keeps the cells
    of one smear together. Smear ``i`` is the one :func:`~medseg.data.phantoms.blood.write_blood_dataset`
    writes as case ``i`` for the same ``size`` and ``seed``; ``cellJJ`` numbers its white cells in
    instance id order. Files are byte-identical for a given seed, and crops of an earlier, larger set in
    the same folder are removed.

    Args:
        out: output folder, created if missing.
        n_smears: number of smears to render (each holds 1-3 white cells of uniformly drawn types).
        size: smear height and width in pixels.
        crop: crop side in pixels.
        seed: non-negative base seed.

    Returns:
        ``out`` as a Path.

    Raises:
        MedsegError: ``n_smears`` or ``seed`` is negative, ``size`` or ``crop`` is too small, or ``out``
            holds a segmentation dataset.
    """
    out = Path(out)
    if n_smears < 0 or seed < 0:
        raise MedsegError(f"white-cell crops need n_smears >= 0 and seed >= 0, got {n_smears}, {seed}")
    if size < MIN_SIZE:
        raise MedsegError(f"blood phantom size must be at least {MIN_SIZE} px, got {size}")
    if crop < MIN_CROP:
        raise MedsegError(f"white-cell crop size must be at least {MIN_CROP} px, got {crop}")
    if (out / "dataset.json").is_file():
        raise MedsegError(f"{out}: holds a segmentation dataset (dataset.json); choose another --out")
    digits = max(3, len(str(n_smears - 1)))
    rows: list[dict[str, str]] = []
    written: set[Path] = set()
    for i in range(n_smears):
        smear = blood_smear(size, np.random.default_rng([seed, i]))
        group = f"smear_{i:0{digits}d}"
        for j, cell in enumerate(wbc_crops(smear, crop)):
            rel = f"{cell.cell_type}/{group}_cell{j:02d}.png"
            written.add(write_image(out / rel, cell.image))
            rows.append({"path": rel, "label": cell.cell_type, "group": group})
    for kind in WBC_TYPES:
        (out / kind).mkdir(parents=True, exist_ok=True)
        for stale in set((out / kind).glob("smear_*")) - written:
            stale.unlink()
    if not rows:  # write_csv_atomic takes its columns from the rows
        write_text_atomic(out / "labels.csv", "path,label,group\n")
    else:
        write_csv_atomic(out / "labels.csv", rows)
    return out
