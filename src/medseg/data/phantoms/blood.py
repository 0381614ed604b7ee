"""Synthetic May-Grünwald-Giemsa / Wright stained thin blood smears with exact ground truth.

Every cell is a signed distance field (pixels, > 0 inside): the labels are the fields thresholded at 0 and
the image uses the same fields anti-aliased over one pixel, so label boundaries match the drawn cells
exactly. Colours mix by Beer-Lambert (stain optical densities add), which darkens overlapping red cells and
lets a per-image stain jitter shift hues the way another staining batch would. Sizes are in pixels (red
cells have a radius of about 9-12 px at any image size), so a smaller image holds fewer cells.

Example:
    >>> smear = blood_smear(128, rng=0, wbc_types=["lymphocyte"])
    >>> smear.image.shape, smear.semantic.dtype, sorted(set(smear.cell_types.values()))
    ((128, 128, 3), dtype('uint8'), ['lymphocyte', 'red_cell'])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.phantoms.common import check_overwrite
from medseg.errors import MedsegError
from medseg.io import write_image, write_json_atomic

WBC_TYPES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
BLOOD_LABELS = {"background": 0, "red_cell": 1, "wbc_cytoplasm": 2, "wbc_nucleus": 3}
BLOOD_COLORS = {
    "background": (0, 0, 0),
    "red_cell": (230, 60, 60),
    "wbc_cytoplasm": (60, 160, 230),
    "wbc_nucleus": (150, 60, 200),
}
MIN_SIZE = 32  # the largest white cell is ~40 px across
_Placed = tuple[str, float, float, float]  # white cell (type, row, col, radius)


@dataclass
class BloodSmear:
    """One synthetic smear and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        semantic: ``(H, W)`` uint8 class ids, values in :data:`BLOOD_LABELS`.
        instances: ``(H, W)`` int32, 0 = background, one id per visible cell (red and white), ids 1..K.
        cell_types: instance id -> ``"red_cell"`` or one of :data:`WBC_TYPES`.
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    cell_types: dict[int, str]


def _od(r: float, g: float, b: float) -> np.ndarray:
    """Optical density ``-ln(I / 255)`` of a colour seen against white: what one unit of stain absorbs."""
    return -np.log(np.array([r, g, b]) / 255.0)


# Colours picked by eye from public Wright/MGG smear photos. "eosin" stains are the pink/orange family,
# "azure" the blue/purple one; jittering the two groups apart mimics a pinker or bluer staining batch.
_STAINS = {
    "plasma": ("eosin", _od(243, 233, 226)),
    "red_cell": ("eosin", _od(212, 128, 136)),
    "platelet": ("azure", _od(175, 140, 200)),
    "nucleus": ("azure", _od(88, 38, 130)),
    "neutrophil": ("eosin", _od(226, 200, 216)),
    "lymphocyte": ("azure", _od(168, 190, 232)),
    "monocyte": ("azure", _od(180, 178, 208)),
    "eosinophil": ("eosin", _od(232, 208, 206)),
    "basophil": ("azure", _od(212, 190, 222)),
    "eosin_granule": ("eosin", _od(232, 112, 66)),
    "basophil_granule": ("azure", _od(58, 22, 92)),
}
# white cell type -> (radius range in px, nucleus stain density, chromatin texture amplitude)
_WBC = {
    "neutrophil": ((15.0, 18.0), 0.95, 0.15),
    "lymphocyte": ((12.5, 14.5), 1.0, 0.15),
    "monocyte": ((17.5, 20.0), 0.75, 0.25),  # largest cell, paler lacy chromatin
    "eosinophil": ((15.0, 18.0), 0.9, 0.15),
    "basophil": ((14.0, 16.5), 1.05, 0.15),
}


def blood_smear(
    size: int = 256,
    rng: np.random.Generator | int | None = None,
    *,
    n_wbc: int | None = None,
    wbc_types: Sequence[str] | None = None,
) -> BloodSmear:
    """Render one stained thin blood smear with red cells, 1-3 white cells and its ground truth.

    Args:
        size: image height and width in pixels (>= 32).
        rng: generator or seed; every random choice is drawn from it.
        n_wbc: number of white cells (default: 1-3, or ``len(wbc_types)`` when types are given).
        wbc_types: white cell types. Without ``n_wbc`` the image holds exactly these cells, one per entry;
            with ``n_wbc`` each cell's type is drawn uniformly from them. Default: uniform over
            :data:`WBC_TYPES` (balanced, unlike the ~60% neutrophils of real blood).

    Returns:
        The image and its labels. White cells lie on top of red cells (their pixels win); a basophil's
        nucleus is labelled nucleus even where granules hide it. Small lilac platelets are background.

    Raises:
        MedsegError: ``size`` is too small, ``n_wbc`` is negative or a type is unknown.
    """
    rng = np.random.default_rng(rng)
    if size < MIN_SIZE:
        raise MedsegError(f"blood phantom size must be at least {MIN_SIZE} px, got {size}")
    if n_wbc is not None and n_wbc < 0:
        raise MedsegError(f"n_wbc must be >= 0, got {n_wbc}")
    pool = WBC_TYPES if wbc_types is None else tuple(wbc_types)
    unknown = sorted(set(pool) - set(WBC_TYPES))
    if unknown:
        raise MedsegError(
            f"unknown white cell type(s) {', '.join(unknown)}; choose from {', '.join(WBC_TYPES)}"
        )
    if n_wbc is None and wbc_types is not None:
        types = list(pool)
    else:
        count = int(rng.integers(1, 4)) if n_wbc is None else n_wbc
        if count and not pool:
            raise MedsegError(f"n_wbc={count} white cells requested but wbc_types is empty")
        types = [str(t) for t in rng.choice(pool, size=count)] if count else []

    canvas = _Canvas(rng, size)
    wbcs = _place_white_cells(rng, size, types)
    for cy, cx, radius in _place_red_cells(rng, size, wbcs):
        canvas.red_cell(cy, cx, radius)
    canvas.od += canvas.red[..., None] * canvas.stains["red_cell"]
    canvas.od += _platelets(rng, size)[..., None] * canvas.stains["platelet"]
    for kind, cy, cx, radius in wbcs:
        canvas.white_cell(kind, cy, cx, radius)
    return canvas.finish()


def write_blood_dataset(out: str | Path, n: int, *, size: int = 256, seed: int = 0) -> Path:
    """Write ``n`` blood smear phantoms as an nnU-Net v2 raw dataset with instance sidecars.

    Layout: ``dataset.json``, ``imagesTr/blood_000_0000.png`` (RGB), ``labelsTr/blood_000.png`` (class
    ids), ``instancesTr/blood_000.tif`` (int32 instance ids) and ``instancesTr/blood_000.json`` (instance
    id -> cell type). Case ``i`` is drawn from a generator seeded with ``(seed, i)``, so files are
    byte-identical for a given seed and a case does not depend on ``n``.

    Args:
        out: dataset folder, created if missing; existing case files are overwritten, others left alone.
        n: number of cases.
        size: image height and width in pixels.
        seed: non-negative base seed.

    Returns:
        ``out`` as a Path.

    Raises:
        MedsegError: ``n`` or ``seed`` is negative, or ``size`` is too small.
    """
    out = Path(out)
    if n < 0 or seed < 0:
        raise MedsegError(f"blood phantom needs n >= 0 and seed >= 0, got n={n}, seed={seed}")
    if size < MIN_SIZE:
        raise MedsegError(f"blood phantom size must be at least {MIN_SIZE} px, got {size}")
    check_overwrite(out, "blood_phantom")
    digits = max(3, len(str(n - 1)))
    written: set[Path] = set()
    for i in range(n):
        smear = blood_smear(size, np.random.default_rng([seed, i]))
        case = f"blood_{i:0{digits}d}"
        written |= {
            write_image(out / "imagesTr" / f"{case}_0000.png", smear.image),
            write_image(out / "labelsTr" / f"{case}.png", smear.semantic),
            write_image(out / "instancesTr" / f"{case}.tif", smear.instances),
            out / "instancesTr" / f"{case}.json",
        }
        write_json_atomic(
            out / "instancesTr" / f"{case}.json", {str(k): v for k, v in smear.cell_types.items()}
        )
    # cases of an earlier, larger phantom in the same folder would silently join this dataset
    for folder in ("imagesTr", "labelsTr", "instancesTr"):
        for stale in set((out / folder).glob("blood_*")) - written:
            stale.unlink()
    medseg = {
        "task": "semantic",
        "colors": {name: list(rgb) for name, rgb in BLOOD_COLORS.items()},
        "instances": "instancesTr",
        "instance_classes": ["red_cell", *WBC_TYPES],
        "differential": list(WBC_TYPES),
        "source": f"medseg phantom blood --n {n} --size {size} --seed {seed}",
    }
    dataset = {"name": "blood_phantom", "channel_names": {"0": "R", "1": "G", "2": "B"}}
    dataset.update(labels=dict(BLOOD_LABELS), numTraining=n, file_ending=".png", medseg=medseg)
    write_json_atomic(out / "dataset.json", dataset)
    return out


class _Canvas:
    """Optical density and label maps of one image, filled cell by cell."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.size = rng, size
        self.stains = _jitter_stains(rng)
        self.fine = _smooth_noise(rng, size, 0.8)  # chromatin and granular texture
        self.coarse = _smooth_noise(rng, size, 2.5)  # uneven stain uptake within a cell
        self.od = (0.85 + 0.3 * _low_frequency(rng, size))[..., None] * self.stains["plasma"]
        self.red = np.zeros((size, size))  # summed red cell stain density: overlaps come out darker
        self.instances = np.zeros((size, size), np.int32)
        self.semantic = np.zeros((size, size), np.uint8)
        self.kinds: list[str] = []

    def _box(self, cy: float, cx: float, reach: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """Bounding box around a centre; ``(h, 1)`` row and ``(1, w)`` column offsets from the centre."""
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, self.size)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, self.size)
        return (slice(y0, y1), slice(x0, x1)), np.arange(y0, y1)[:, None] - cy, np.arange(x0, x1)[None] - cx

    def red_cell(self, cy: float, cx: float, radius: float) -> None:
        """A slightly elliptical disc with a thicker rim and a pale centre (the biconcave shape)."""
        rng = self.rng
        box, yy, xx = self._box(cy, cx, radius * 1.2 + 1)
        stretch = rng.uniform(1.0, 1.12)
        dist, rel = _ellipse(rng, yy, xx, radius / stretch, radius * stretch, rng.uniform(0, np.pi), 0.025)
        pallor = rng.uniform(0.45, 0.75) * np.exp(-((rel / rng.uniform(0.4, 0.55)) ** 2))
        profile = 1 - pallor + 0.12 * np.exp(-(((rel - 0.85) / 0.15) ** 2))
        alpha = np.clip(dist + 0.5, 0, 1)
        self.red[box] += alpha * profile * rng.uniform(0.85, 1.15) * (1 + 0.08 * self.coarse[box])
        self.kinds.append("red_cell")
        self.instances[box][dist > 0] = len(self.kinds)
        self.semantic[box][dist > 0] = BLOOD_LABELS["red_cell"]

    def white_cell(self, kind: str, cy: float, cx: float, radius: float) -> None:
        """Composite one white cell over everything drawn so far and write its labels."""
        rng, stains = self.rng, self.stains
        box, yy, xx = self._box(cy, cx, radius * 1.2 + 1)
        cell = _ellipse(rng, yy, xx, radius, radius * rng.uniform(0.92, 1.0), rng.uniform(0, np.pi), 0.04)[0]
        # >= 1.5 px of cytoplasm around the nucleus, so every white cell shows both classes
        nucleus = np.minimum(_nucleus(rng, kind, radius, yy, xx), cell - 1.5)
        a_cell = np.clip(cell + 0.5, 0, 1)[..., None]
        a_nuc = np.clip(nucleus + 0.5, 0, 1)[..., None]
        fine, coarse = self.fine[box][..., None], self.coarse[box][..., None]
        _, density, texture = _WBC[kind]
        cytoplasm = rng.uniform(0.85, 1.15) * (1 + 0.12 * coarse + 0.08 * fine) * stains[kind]
        chromatin = density * (1 + texture * fine + 0.1 * coarse) * stains["nucleus"]
        inner = stains["plasma"] + (1 - a_nuc) * cytoplasm + a_nuc * chromatin
        if kind == "eosinophil":  # granules lie over the cytoplasm; the two lobes stay visible
            granules = _granules(rng, cell, rng.uniform(5.5, 7.5), 0.75, 1.3) * (1 - 0.85 * a_nuc[..., 0])
            inner = inner + granules[..., None] * stains["eosin_granule"]
        elif kind == "basophil":  # coarse granules over cytoplasm and, thinner, over the darker nucleus
            granules = _granules(rng, cell, rng.uniform(9.0, 14.0), rng.uniform(1.0, 1.3), 0.9)
            granules = granules * (1 - 0.8 * a_nuc[..., 0])
            inner = inner + granules[..., None] * stains["basophil_granule"]
        self.od[box] = (1 - a_cell) * self.od[box] + a_cell * inner
        self.kinds.append(kind)
        self.instances[box][cell > 0] = len(self.kinds)
        self.semantic[box][cell > 0] = BLOOD_LABELS["wbc_cytoplasm"]
        self.semantic[box][nucleus > 0] = BLOOD_LABELS["wbc_nucleus"]

    def finish(self) -> BloodSmear:
        """Photograph the slide and renumber instances 1..K (cells hidden under white cells leave no gap)."""
        image = _photograph(self.rng, self.od)
        present = np.unique(self.instances)
        present = present[present > 0]
        lookup = np.zeros(len(self.kinds) + 1, np.int32)
        lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
        cell_types = {int(lookup[old]): self.kinds[old - 1] for old in present}
        return BloodSmear(image, self.semantic, lookup[self.instances], cell_types)


def _place_white_cells(rng: np.random.Generator, size: int, types: list[str]) -> list[_Placed]:
    """Centres >= 0.6 radius inside the image, apart from each other when there is room."""
    placed: list[_Placed] = []
    for kind in types:
        radius = rng.uniform(*_WBC[kind][0])
        margin = min(0.6 * radius, size / 2)
        for attempt in range(200):
            cy, cx = rng.uniform(margin, size - margin, 2)
            slack = max(0.0, 1.0 - attempt / 150)  # relax the spacing so crowded requests still finish
            if all(np.hypot(cy - y, cx - x) > (radius + r + 2) * slack for _, y, x, r in placed):
                break
        placed.append((kind, cy, cx, radius))
    return placed


def _place_red_cells(rng: np.random.Generator, size: int, wbcs: list[_Placed]) -> np.ndarray:
    """``(N, 3)`` rows of ``(row, col, radius)`` dart-thrown to a random coverage; ~1 in 5 may overlap."""
    target = rng.uniform(0.3, 0.55) * size * size / (np.pi * 10.5**2)
    cells = np.empty((0, 3))
    for _ in range(int(target * 4)):
        if len(cells) >= target:
            break
        radius = rng.uniform(9.0, 12.0)
        cy, cx = rng.uniform(-0.5 * radius, size + 0.5 * radius, 2)
        # white cells push red cells aside but may cover their edges
        if any(np.hypot(cy - y, cx - x) < r + 0.3 * radius for _, y, x, r in wbcs):
            continue
        overlap = 0.65 if rng.random() < 0.2 else 0.97
        if np.all(np.hypot(cells[:, 0] - cy, cells[:, 1] - cx) >= overlap * (cells[:, 2] + radius)):
            cells = np.vstack([cells, [cy, cx, radius]])
    return cells


def _wobble(rng: np.random.Generator, theta: np.ndarray, amount: float) -> np.ndarray:
    """Relative radius ``1 + small harmonics of theta``, so outlines are not perfect ellipses."""
    eps, phase = rng.uniform(0, amount, 3), rng.uniform(0, 2 * np.pi, 3)
    return 1 + sum(e * np.cos(k * theta + p) for k, e, p in zip((2, 3, 5), eps, phase, strict=True))


def _ellipse(
    rng: np.random.Generator,
    yy: np.ndarray,
    xx: np.ndarray,
    ry: float,
    rx: float,
    angle: float,
    wobble: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate signed distance (px, > 0 inside) of a wobbly ellipse, and relative radius (0 = centre)."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx * c + yy * s) / rx, (yy * c - xx * s) / ry
    rel = np.hypot(u, v) / _wobble(rng, np.arctan2(v, u), wobble)
    return (1 - rel) * np.sqrt(rx * ry), rel


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return r - np.hypot(yy - cy, xx - cx)


def _strand(yy: np.ndarray, xx: np.ndarray, p: np.ndarray, q: np.ndarray, r: float) -> np.ndarray:
    """Signed distance of a capsule of radius ``r`` from ``p`` to ``q`` (row, col): a chromatin bridge."""
    d = q - p
    t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
    return r - np.hypot(yy - p[0] - t * d[0], xx - p[1] - t * d[1])


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Intersection of two shapes with its corners rounded over ~``k`` px (polynomial smooth minimum)."""
    h = np.clip(k - np.abs(a - b), 0, None) / k
    return np.minimum(a, b) - h * h * k / 4


def _nucleus(
    rng: np.random.Generator, kind: str, radius: float, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """Signed distance (px, > 0 inside) of the nucleus of a white cell centred at the origin."""
    if kind == "neutrophil":
        # 2-5 sausage-shaped lobes on an arc, far enough apart that only thin strands join them
        lobes = int(rng.choice([2, 3, 3, 3, 4, 4, 5]))
        thick = radius * rng.uniform(0.25, 0.3)
        arc = radius - thick - rng.uniform(1.8, 2.6)
        gap, length = rng.uniform(1.5, 2.3), radius * rng.uniform(0.32, 0.42)
        # the arc must not close on itself, or the first and last lobes would merge
        step = min(2 * np.arcsin(min((2 * length + gap) / (2 * arc), 1.0)), 2 * np.pi / (lobes + 0.6))
        length = min(length, arc * np.sin(step / 2) - gap / 2)
        angles = rng.uniform(0, 2 * np.pi) + step * np.arange(lobes)
        centres = np.stack([arc * np.sin(angles), arc * np.cos(angles)], 1) + rng.normal(0, 0.4, (lobes, 2))
        parts = [
            _ellipse(rng, yy - y, xx - x, thick, length * rng.uniform(0.85, 1.0), a + np.pi / 2, 0.04)[0]
            for (y, x), a in zip(centres, angles, strict=True)
        ]
        parts += [_strand(yy, xx, p, q, rng.uniform(0.55, 0.75)) for p, q in itertools.pairwise(centres)]
        return np.max(parts, axis=0)
    if kind == "lymphocyte":
        # round, dense, nearly filling the cell, often eccentric
        nuc_r = radius * rng.uniform(0.82, 0.9)
        oy, ox = rng.normal(0, 1, 2) * (radius - nuc_r) * 0.4
        return _ellipse(
            rng, yy - oy, xx - ox, nuc_r, nuc_r * rng.uniform(0.92, 1.0), rng.uniform(0, np.pi), 0.03
        )[0]
    if kind == "monocyte":
        # an ellipse with a bite out of one long side: kidney-shaped, or horseshoe when the bite is deep
        angle = rng.uniform(0, 2 * np.pi)
        a, b = radius * rng.uniform(0.68, 0.76), radius * rng.uniform(0.52, 0.6)
        normal = np.array([np.cos(angle), -np.sin(angle)])  # (row, col) along the ellipse's minor axis
        oy, ox = normal * radius * rng.uniform(0.05, 0.15)
        body = _ellipse(rng, yy - oy, xx - ox, b, a, angle, 0.05)[0]
        by, bx = np.array([oy, ox]) - normal * b * rng.uniform(0.95, 1.2)
        return _smooth_min(body, -_disc(yy, xx, by, bx, b * rng.uniform(0.55, 0.85)), 3.0)
    if kind == "eosinophil":
        # bilobed "spectacles"
        angle = rng.uniform(0, 2 * np.pi)
        r1, r2 = radius * rng.uniform(0.27, 0.32), radius * rng.uniform(0.25, 0.32)
        half = (r1 + r2 + rng.uniform(3.0, 4.5)) / 2  # a visible gap bridged by a thin band
        p, q = (np.array([np.sin(angle), np.cos(angle)]) * half * sign for sign in (1, -1))
        lobes = np.maximum(_disc(yy, xx, *p, r1), _disc(yy, xx, *q, r2))
        return np.maximum(lobes, _strand(yy, xx, p, q, rng.uniform(0.6, 0.85)))
    # basophil: a compact irregular clump of 2-3 overlapping lobes under the granules
    centres = rng.normal(0, radius * 0.18, (int(rng.integers(2, 4)), 2))
    return np.max([_disc(yy, xx, y, x, radius * rng.uniform(0.32, 0.42)) for y, x in centres], axis=0)


def _granules(
    rng: np.random.Generator, cell: np.ndarray, area: float, sigma: float, peak: float
) -> np.ndarray:
    """Granule density in a cell's box: one granule per ``area`` px of cell, blurred into dots."""
    inside = np.flatnonzero(cell.ravel() > 1.0)
    if inside.size == 0:  # a sliver of a cell at the image border
        return np.zeros(cell.shape)
    picks = rng.choice(inside, size=max(1, int(len(inside) / area)))
    impulses = np.zeros(cell.shape)
    np.add.at(impulses.ravel(), picks, rng.uniform(0.6, 1.4, len(picks)))
    blobs = ndimage.gaussian_filter(impulses, sigma) * (2 * np.pi * sigma**2)
    # saturate where granules pile up, and keep them off the outline so they never poke past the label
    return peak * (1 - np.exp(-1.5 * blobs)) * np.clip(cell - 0.5, 0, 1)


def _platelets(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size)`` density of a few small lilac platelet clumps: unlabelled purple distractors."""
    impulses = np.zeros((size, size))
    for cy, cx in rng.uniform(0, size, (rng.poisson(1.5 * size * size / 256**2), 2)):
        pts = np.round(rng.normal([cy, cx], 1.2, (int(rng.integers(2, 6)), 2))).astype(int)
        np.add.at(impulses, tuple(np.clip(pts, 0, size - 1).T), 1.0)
    return np.clip(ndimage.gaussian_filter(impulses, 0.9) * 5.0, 0, 0.8)


def _photograph(rng: np.random.Generator, od: np.ndarray) -> np.ndarray:
    """Light through the slide: uneven illumination, defocus blur and sensor noise. ``(H, W, 3)`` uint8."""
    size = od.shape[0]
    yy, xx = (g / size - 0.5 for g in np.ogrid[0:size, 0:size])
    gy, gx = rng.uniform(-0.12, 0.12, 2)
    light = 1 + gy * yy + gx * xx - rng.uniform(0, 0.35) * (yy**2 + xx**2)  # tilt and vignetting
    white_balance = rng.uniform(0.96, 1.0, 3) * rng.uniform(0.93, 1.03)
    image = 255.0 * light[..., None] * white_balance * np.exp(-od)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.1:
        image = ndimage.gaussian_filter(image, (sigma, sigma, 0))
    image += rng.normal(0, rng.uniform(1.0, 4.0), image.shape) * np.sqrt(image / 128.0)  # shot-like noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _jitter_stains(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image optical densities: a colour cast, a pinker or bluer batch, and per-stain hue jitter."""
    cast = np.exp(rng.normal(0, 0.06, 3))
    group = {"eosin": np.exp(rng.normal(0, 0.12)), "azure": np.exp(rng.normal(0, 0.1))}
    return {name: od * cast * group[g] * np.exp(rng.normal(0, 0.05, 3)) for name, (g, od) in _STAINS.items()}


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` Gaussian-filtered white noise rescaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return noise / (noise.std() + 1e-12)


def _low_frequency(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size)`` smooth field in [0, 1] with wavelengths of 120-400 px: uneven smear thickness."""
    rows, cols = np.arange(size)[:, None], np.arange(size)[None]
    field = np.zeros((size, size))
    for wavelength, direction, phase in rng.uniform([120, 0, 0], [400, np.pi, 2 * np.pi], (3, 3)):
        k = 2 * np.pi / wavelength
        field += np.cos(k * np.sin(direction) * rows + k * np.cos(direction) * cols + phase)
    return (field + 3) / 6
