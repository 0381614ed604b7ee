"""Synthetic abdominal MR scans written as the Kaggle "UW-Madison GI Tract" competition folder.

The real data cannot be downloaded offline, so this phantom writes a folder shaped exactly like the
download (``train.csv`` of Kaggle RLEs, ``train/caseN/caseN_dayM/scans/slice_NNNN_W_H_1.50_1.50.png``
16-bit scans) for ``medseg data import uw-madison-gi`` -> ``medseg train`` -> ``medseg evaluate``.

Each patient is an :class:`Abdomen`, drawn by :func:`random_abdomen` in body-normalised coordinates (the
body outline at radius 1, angle 0 pointing to the top of the image): a body with a subcutaneous fat ring,
muscle wall, liver, kidneys and spine, and the three labelled organs. The large bowel is a thick curve
framing the abdomen (ascending and descending colon on the sides, joined across the top at the level of
the transverse colon) with haustral bulges and folds; the small bowel is a cluster of fluid-filled loops
in the centre of the lower slices, some of them pressed into the colon so that the two masks share a
band a few pixels wide, as the Kaggle annotators drew them; the stomach is a blob with an air cap and
rugae in the upper slices, on the image right, sometimes touching the colon. Every organ is a signed
distance field (pixels, > 0 inside) that varies smoothly along the slice axis: masks are the fields
thresholded at 0, and the image blends the organs' appearances with one-pixel anti-aliasing (a mix of
both where two overlap). :func:`render_abdomen` adds a bias field, a per-patient intensity gain (so
percentile normalisation matters) and Rician noise. Scan days of one patient share the anatomy up to a
small change of pose, size and intensity.

Example:
    >>> volume = render_abdomen(random_abdomen(0), 12, (64, 80), rng=0)
    >>> volume.image.shape, volume.image.dtype, volume.masks.shape
    ((12, 64, 80), dtype('uint16'), (12, 3, 64, 80))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.importers.uwmadison import UWMADISON_CLASSES
from medseg.data.phantoms.common import check_phantom_folder
from medseg.errors import MedsegError
from medseg.io import atomic_path, write_csv_atomic, write_json_atomic
from medseg.io.rle import rle_encode

GI_PHANTOM_NAME = "gi_phantom"
MIN_SIZE = 32
PIXEL_SPACING = "1.50"  # mm, as written in the scan names
_WALL = 0.05  # abdominal muscle wall thickness, fraction of the body radius
_HALF_PI = math.pi / 2


@dataclass(frozen=True)
class Abdomen:
    """One patient on one scan day: anatomy in body-normalised units and the scanner's intensity settings.

    Positions ``(u, v)`` are fractions of the body semi-axes (``u`` towards the image right, ``v`` down);
    angles are measured from the top of the image towards the right; ``z`` values of organs are
    fractions of the organ-bearing stretch ``organ_range`` of the scan (0 = its first slice).

    Attributes:
        centre: body centre (row, col), fractions of the image height and width.
        semi_axes: body semi-axes (rows, cols), fractions of the image's shorter side.
        angle: rotation of the body in the image, radians.
        outline: amplitudes and phases of the 2nd-4th harmonics of the body outline, ``(3, 2)``.
        fat: subcutaneous fat thickness, fraction of the body radius.
        organ_range: first and last fraction of the scan (0..1 along the slices) holding organs.
        colon_radius: radius of the colon's centreline.
        colon_half_width: half thickness of the colon, fraction of the body radius.
        haustra: number of haustral bulges around a full turn and their phase.
        transverse: ``(z, width)`` of the transverse colon joining the two sides.
        colon_sides: ``(2, 2)``: ``(z0, z1)`` of the ascending (image left) and descending (image right)
            colon.
        stomach: ``(u, v, radius_u, radius_v, z_end)``; the radii are fractions of the body radius.
        loops: small-bowel loops ``(n, 7)``: u, v, drift of u and v per unit z, radius (fraction of the
            body radius), z of the widest section, half extent in z.
        gain: intensity of fat, the brightest tissue, in scanner units.
        bias: coefficients of the bias field (x, y, xy, r², z).
        noise: Rician noise sigma, fraction of ``gain``.
    """

    centre: tuple[float, float]
    semi_axes: tuple[float, float]
    angle: float
    outline: np.ndarray
    fat: float
    organ_range: tuple[float, float]
    colon_radius: float
    colon_half_width: float
    haustra: tuple[int, float]
    transverse: tuple[float, float]
    colon_sides: np.ndarray
    stomach: tuple[float, float, float, float, float]
    loops: np.ndarray
    gain: float
    bias: np.ndarray
    noise: float


@dataclass(frozen=True)
class GiVolume:
    """One scan day.

    Attributes:
        image: ``(S, H, W)`` uint16 MR slices.
        masks: ``(S, 3, H, W)`` bool, one mask per organ in :data:`UWMADISON_CLASSES` order; they overlap.
    """

    image: np.ndarray
    masks: np.ndarray


def random_abdomen(rng: np.random.Generator | int) -> Abdomen:
    """Draw one patient's anatomy and scanner settings."""
    rng = np.random.default_rng(rng)
    fat = float(rng.uniform(0.08, 0.16))
    colon_half = float(rng.uniform(0.085, 0.11))
    colon_radius = min(float(rng.uniform(0.62, 0.7)), 1 - 1.3 * fat - _WALL - colon_half - 0.03)
    transverse_z = float(rng.uniform(0.2, 0.35))
    sides = np.array(
        [
            [transverse_z - rng.uniform(0.05, 0.1), rng.uniform(0.85, 1.0)],  # ascending, image left
            [transverse_z - rng.uniform(0.1, 0.2), rng.uniform(0.7, 0.9)],  # descending, image right
        ]
    )
    # The stomach's outer edge ends near the colon's inner edge: a few patients' stomachs overlap it.
    stomach_radius = rng.uniform(0.2, 0.26, size=2)
    stomach_angle = rng.uniform(0.55, 0.95)
    reach = colon_radius - colon_half - float(stomach_radius.mean()) + rng.uniform(-0.08, 0.04)
    stomach = (
        float(reach * math.sin(stomach_angle)),
        float(-reach * math.cos(stomach_angle)),
        float(stomach_radius[0]),
        float(stomach_radius[1]),
        float(rng.uniform(0.3, 0.5)),
    )
    return Abdomen(
        centre=(float(rng.uniform(0.46, 0.54)), float(rng.uniform(0.46, 0.54))),
        semi_axes=(float(rng.uniform(0.33, 0.4)), float(rng.uniform(0.42, 0.48))),
        angle=float(rng.uniform(-0.12, 0.12)),
        outline=np.stack([rng.uniform(0, 0.035, 3), rng.uniform(0, 2 * math.pi, 3)], axis=1),
        fat=fat,
        organ_range=(float(rng.uniform(0.12, 0.28)), float(rng.uniform(0.72, 0.88))),
        colon_radius=colon_radius,
        colon_half_width=colon_half,
        haustra=(int(rng.integers(16, 24)), float(rng.uniform(0, 2 * math.pi))),
        transverse=(transverse_z, float(rng.uniform(0.06, 0.1))),
        colon_sides=sides,
        stomach=stomach,
        loops=_random_loops(rng, colon_radius, colon_half),
        gain=float(np.exp(rng.uniform(math.log(900), math.log(3000)))),
        bias=rng.uniform([-0.25, -0.25, -0.2, -0.2, -0.15], [0.25, 0.25, 0.2, 0.1, 0.15]),
        noise=float(rng.uniform(0.015, 0.035)),
    )


def _random_loops(rng: np.random.Generator, colon_radius: float, colon_half: float) -> np.ndarray:
    """Small-bowel loops ``(n, 7)``: a cluster in the centre and a few pressed into the colon's sides."""
    count = int(rng.integers(10, 17))
    centre = rng.uniform([-0.1, 0.0], [0.1, 0.15])
    angle = rng.uniform(0, 2 * math.pi, count)
    distance = 0.3 * np.sqrt(rng.uniform(0, 1, count))
    loops = np.empty((count, 7))
    loops[:, 0] = centre[0] + distance * np.sin(angle)
    loops[:, 1] = centre[1] - distance * np.cos(angle)
    loops[:, 2:4] = rng.normal(0, 0.3, (count, 2))
    loops[:, 4] = rng.uniform(0.09, 0.15, count)
    loops[:, 5] = rng.uniform(0.35, 1.0, count)
    loops[:, 6] = rng.uniform(0.12, 0.25, count)
    for row, side in zip(range(int(rng.integers(1, 4))), rng.permutation([-1, 1, -1, 1])):
        # Its edge a few pixels (~0.03-0.08 of the body radius) into the colon band.
        theta = side * (_HALF_PI + rng.uniform(-0.15, 0.3))
        reach = colon_radius - colon_half - loops[row, 4] + rng.uniform(0.03, 0.08)
        loops[row, :4] = [reach * math.sin(theta), -reach * math.cos(theta), 0.0, 0.0]
        loops[row, 5] = rng.uniform(0.45, 0.9)
    return loops


def next_scan_day(abdomen: Abdomen, rng: np.random.Generator | int) -> Abdomen:
    """The same patient on another day: small changes of pose, size, bowel filling and intensity."""
    rng = np.random.default_rng(rng)
    loops = abdomen.loops.copy()
    loops[:, :2] += rng.normal(0, 0.015, (len(loops), 2))
    loops[:, 4] *= rng.uniform(0.92, 1.08, len(loops))
    u, v, ru, rv, z_end = abdomen.stomach
    filling = rng.uniform(0.92, 1.05)
    shift = rng.uniform(-0.03, 0.03)
    return replace(
        abdomen,
        centre=tuple(c + rng.uniform(-0.015, 0.015) for c in abdomen.centre),
        semi_axes=tuple(a * rng.uniform(0.97, 1.03) for a in abdomen.semi_axes),
        angle=abdomen.angle + rng.uniform(-0.03, 0.03),
        organ_range=(abdomen.organ_range[0] + shift, abdomen.organ_range[1] + shift),
        stomach=(u, v, ru * filling, rv * filling, z_end),
        loops=loops,
        gain=abdomen.gain * rng.uniform(0.9, 1.1),
        bias=abdomen.bias + rng.uniform(-0.05, 0.05, len(abdomen.bias)),
    )


class _Frame:
    """Pixel coordinates of one slice in the patient's frame: rotated, centred on the body, in pixels
    (``x`` to the image right, ``y`` down) and body-normalised (``rho``, ``theta``)."""

    def __init__(self, abdomen: Abdomen, z: float, height: int, width: int) -> None:
        short = min(height, width)
        breathe = 1 + 0.04 * math.cos(math.pi * z)  # the body is widest in the middle of the scan
        self.ay = abdomen.semi_axes[0] * short * breathe
        self.ax = min(abdomen.semi_axes[1] * short, 0.47 * width) * breathe
        self.radius = math.sqrt(self.ax * self.ay)
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        dr, dc = rows + 0.5 - abdomen.centre[0] * height, cols + 0.5 - abdomen.centre[1] * width
        cos, sin = math.cos(abdomen.angle), math.sin(abdomen.angle)
        self.x, self.y = dc * cos + dr * sin, -dc * sin + dr * cos
        u, v = self.x / self.ax, self.y / self.ay
        self.rho = np.hypot(u, v)
        self.theta = np.arctan2(u, -v)
        # pixels per unit of rho along the ray at theta
        self.scale = np.hypot(np.sin(self.theta) * self.ax, np.cos(self.theta) * self.ay)
        harmonics = enumerate(abdomen.outline)
        self.outline = 1 + sum(a * np.cos((k + 2) * self.theta + p) for k, (a, p) in harmonics)
        fat = abdomen.fat * (1 + 0.3 * np.cos(self.theta))  # more fat in front
        self.body = (self.outline - self.rho) * self.scale
        self.muscle = (self.outline - fat - self.rho) * self.scale
        self.cavity = self.muscle - _WALL * self.scale

    def point(self, u: float, v: float) -> tuple[float, float]:
        return u * self.ax, v * self.ay

    def ellipse(
        self, u: float, v: float, ru: float, rv: float, wobble: np.ndarray | float = 1.0
    ) -> np.ndarray:
        """Approximate signed distance (px, > 0 inside) of an ellipse with radii in body radii, its outline
        scaled by ``wobble`` (per pixel, by direction)."""
        x0, y0 = self.point(u, v)
        a, b = max(ru * self.radius, 1e-3), max(rv * self.radius, 1e-3)
        q = np.hypot((self.x - x0) / a, (self.y - y0) / b) / wobble
        return (1 - q) * math.sqrt(a * b)


def _soft(sdf: np.ndarray) -> np.ndarray:
    return np.clip(sdf + 0.5, 0.0, 1.0)


def _taper(z: float, start: float, end: float, ramp: float = 0.07) -> float:
    """1 inside ``[start, end]`` away from its ends, falling smoothly to 0 at them."""
    return math.sqrt(min(max(min(z - start, end - z) / ramp, 0.0), 1.0))


def _colon(frame: _Frame, abdomen: Abdomen, zr: float) -> np.ndarray:
    """Large bowel signed distance (px): two arcs along the abdominal wall joined across the top near the
    transverse colon's level; their thickness bulges with the haustra."""
    count, phase = abdomen.haustra
    half = abdomen.colon_half_width * frame.radius * (1 + 0.18 * np.cos(count * frame.theta + phase))
    rc = abdomen.colon_radius
    join = math.exp(-(((zr - abdomen.transverse[0]) / abdomen.transverse[1]) ** 2))
    reach = 0.35 + join * (_HALF_PI - 0.35)  # how far each side reaches towards the top
    arcs = (
        (-_HALF_PI - 0.5, -_HALF_PI + reach, _taper(zr, *abdomen.colon_sides[0])),
        (_HALF_PI - reach, _HALF_PI + 0.5, _taper(zr, *abdomen.colon_sides[1])),
    )
    sdf = np.full(frame.rho.shape, -1e3)
    along = np.abs(frame.rho - rc) * frame.scale
    for lo, hi, size in arcs:
        if size <= 0:
            continue
        ends = [
            np.hypot(frame.x - ex, frame.y - ey)
            for ex, ey in (_on_ring(frame, rc, lo), _on_ring(frame, rc, hi))
        ]
        inside = (frame.theta >= lo) & (frame.theta <= hi)
        sdf = np.maximum(sdf, half * size - np.where(inside, along, np.minimum(*ends)))
    return sdf


def _on_ring(frame: _Frame, rho: float, theta: float) -> tuple[float, float]:
    return frame.point(rho * math.sin(theta), -rho * math.cos(theta))


def _small_bowel(frame: _Frame, abdomen: Abdomen, zr: float) -> tuple[np.ndarray, np.ndarray]:
    """Small bowel signed distance (px) and its lumen's (the inside less a 1.6 px wall)."""
    sdf = np.full(frame.rho.shape, -1e3)
    lumen = sdf.copy()
    for u, v, du, dv, radius, zc, zh in abdomen.loops:
        size = 1 - ((zr - zc) / zh) ** 2
        if size <= 0:
            continue
        x0, y0 = frame.point(u + du * (zr - zc), v + dv * (zr - zc))
        loop = radius * math.sqrt(size) * frame.radius - np.hypot(frame.x - x0, frame.y - y0)
        sdf = np.maximum(sdf, loop)
        lumen = np.maximum(lumen, loop - 1.6)
    return sdf, lumen


def _stomach(frame: _Frame, abdomen: Abdomen, zr: float) -> np.ndarray:
    u, v, ru, rv, z_end = abdomen.stomach
    size = 1 - ((zr - z_end / 2) / (z_end / 2 + 0.06)) ** 2
    if size <= 0:
        return np.full(frame.rho.shape, -1e3)
    size = math.sqrt(size)
    wobble = 1 + 0.06 * np.cos(3 * frame.theta + 10 * u)
    return frame.ellipse(u, v + 0.1 * (zr - z_end / 2), ru * size, rv * size, wobble)


def _tissue(frame: _Frame, abdomen: Abdomen, z: float, fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Everything but the three organs, relative intensity (fat ~0.9): air, fat, muscle, cavity, liver,
    kidneys, spine."""
    zr = (z - abdomen.organ_range[0]) / (abdomen.organ_range[1] - abdomen.organ_range[0])
    image = 0.92 * (1 + 0.04 * fine) * _soft(frame.body)
    image = _blend(image, 0.27, frame.muscle)
    cavity = frame.cavity
    image = _blend(image, 0.52 + 0.08 * coarse + 0.03 * fine, cavity)
    liver = 1 - ((zr + 0.3) / 0.85) ** 2
    if liver > 0:
        sdf = frame.ellipse(-0.42, -0.12, 0.52 * math.sqrt(liver), 0.62 * math.sqrt(liver))
        image = _blend(image, 0.33 + 0.03 * coarse, np.minimum(sdf, cavity))
    kidney = _taper(zr, 0.05, 0.75, 0.15)
    for side in (-1, 1):
        if kidney > 0:
            sdf = frame.ellipse(side * 0.42, 0.5, 0.13 * kidney, 0.19 * kidney)
            image = _blend(image, 0.62, sdf)
            image = _blend(image, 0.4, sdf - 2.0)
        image = _blend(image, 0.25 + 0.02 * fine, frame.ellipse(side * 0.25, 0.8, 0.2, 0.12))  # back muscles
    vertebra = frame.ellipse(0, 0.68, 0.16, 0.16)
    image = _blend(image, 0.6, vertebra)
    image = _blend(image, 0.2 + 0.03 * fine, vertebra - 1.5)
    return _blend(image, 0.9, frame.ellipse(0, 0.9, 0.06, 0.06))  # spinal canal (CSF)


def _blend(image: np.ndarray, value: np.ndarray | float, sdf: np.ndarray) -> np.ndarray:
    weight = _soft(sdf)
    return image + weight * (value - image)


def render_abdomen(
    abdomen: Abdomen, slices: int, size: tuple[int, int], rng: np.random.Generator | int
) -> GiVolume:
    """Render one scan day.

    Args:
        abdomen: the patient (:func:`random_abdomen`, :func:`next_scan_day`).
        slices: number of axial slices ``S``; the organs fill the stretch ``abdomen.organ_range``.
        size: ``(H, W)`` of a slice in pixels, each at least :data:`MIN_SIZE`.
        rng: generator (or seed) of the texture and noise.

    Returns:
        The :class:`GiVolume`: ``(S, H, W)`` uint16 image and ``(S, 3, H, W)`` bool organ masks.
    """
    rng = np.random.default_rng(rng)
    height, width = size
    fine = _smooth_noise(rng, (slices, height, width), (0.8, 1.2, 1.2))
    coarse = _smooth_noise(rng, (slices, height, width), (1.5, 4.0, 4.0))
    rows, cols = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    image = np.empty((slices, height, width), np.uint16)
    masks = np.zeros((slices, len(UWMADISON_CLASSES), height, width), bool)
    for k in range(slices):
        z = (k + 0.5) / slices
        frame = _Frame(abdomen, z, height, width)
        zr = (z - abdomen.organ_range[0]) / (abdomen.organ_range[1] - abdomen.organ_range[0])
        tissue = _tissue(frame, abdomen, z, fine[k], coarse[k])
        cavity = frame.cavity
        colon = np.minimum(_colon(frame, abdomen, zr), cavity)
        small, lumen = _small_bowel(frame, abdomen, zr)
        small = np.minimum(small, cavity)
        stomach = np.minimum(_stomach(frame, abdomen, zr), cavity)
        count, phase = abdomen.haustra
        folds = 0.09 * np.cos(2 * count * frame.theta + phase)
        looks = (
            np.where(fine[k] > 1.3, 0.07, 0.27 + folds + 0.05 * fine[k]),  # stool with gas pockets
            0.38 + 0.34 * _soft(lumen) + 0.04 * fine[k],  # fluid-filled loops with a darker wall
            _stomach_look(frame, abdomen, zr, stomach),
        )
        weights = [_soft(colon), _soft(small), _soft(stomach)]
        total = sum(weights)
        mixed = sum(w * look for w, look in zip(weights, looks)) / np.maximum(total, 1e-6)
        alpha = np.minimum(total, 1.0)
        relative = ndimage.gaussian_filter(tissue + alpha * (mixed - tissue), 0.5)
        b = abdomen.bias
        bias = np.exp(b[0] * cols + b[1] * rows + b[2] * rows * cols + b[3] * (rows**2 + cols**2) + b[4] * z)
        signal = relative * bias * abdomen.gain
        sigma = abdomen.noise * abdomen.gain
        noisy = np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))
        image[k] = np.clip(np.rint(noisy), 0, 65535)
        masks[k] = np.stack([colon > 0, small > 0, stomach > 0])
    return GiVolume(image, masks)


def _stomach_look(frame: _Frame, abdomen: Abdomen, zr: float, sdf: np.ndarray) -> np.ndarray:
    """Bright fluid with dark rugal folds near the wall and an air cap in front (towards the image top)."""
    u, v, _, rv, z_end = abdomen.stomach
    y0 = frame.point(u, v + 0.1 * (zr - z_end / 2))[1]
    rugae = (np.cos(0.9 * (frame.x + 0.5 * frame.y)) > 0.6) & (sdf < 4)
    look = np.where(rugae, 0.55, 0.82)
    return np.where(frame.y - y0 < -0.55 * rv * frame.radius, 0.04, look)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return noise / max(float(noise.std()), 1e-12)


def write_gi_dataset(
    out: str | Path,
    *,
    cases: int = 4,
    days: int = 2,
    slices: int = 24,
    size: tuple[int, int] = (96, 112),
    seed: int = 0,
) -> Path:
    """Write a phantom competition folder in the Kaggle UW-Madison GI Tract layout.

    Layout: ``train.csv`` (``id,class,segmentation``: three rows per slice id, in the order large_bowel,
    small_bowel, stomach; Kaggle RLE or empty), ``train/caseN/caseN_dayM/scans/slice_NNNN_W_H_1.50_1.50.png``
    (16-bit grey ``(H, W)``, slices numbered from 0001) and ``phantom.json`` (seed, options, counts).
    Patients are ``case1 .. caseN``; their day numbers are drawn (as in the real data, e.g. ``day0``,
    ``day13``). Patient ``i`` is drawn from a generator seeded with ``(seed, i)`` and day ``j`` from
    ``(seed, i, j)``, so the files are byte-identical for a given seed.

    Args:
        out: folder, created if missing; it must be empty or hold an earlier GI phantom, whose scans are
            replaced.
        cases: number of patients.
        days: scan days per patient.
        slices: slices per scan day.
        size: ``(H, W)`` of a slice in pixels, each at least :data:`MIN_SIZE`.
        seed: non-negative base seed.

    Returns:
        ``out`` as a Path.

    Raises:
        MedsegError: a bad argument, or ``out`` holds something other than a GI phantom.
    """
    out = Path(out)
    height, width = (int(s) for s in size)
    if cases < 1 or days < 1 or slices < 1 or seed < 0:
        raise MedsegError(
            f"GI phantom needs cases, days and slices >= 1 and seed >= 0, got cases={cases}, days={days}, "
            f"slices={slices}, seed={seed}"
        )
    if min(height, width) < MIN_SIZE or max(height, width) > 4096:
        raise MedsegError(
            f"GI phantom slices must be {MIN_SIZE}..4096 px per side, got {height}x{width} (HxW)"
        )
    _check_folder(out)
    options = {"cases": cases, "days": days, "slices": slices, "size": [height, width], "seed": seed}
    meta: dict[str, Any] = {
        "name": GI_PHANTOM_NAME,
        "synthetic": True,
        "note": "synthetic abdominal MR phantom in the Kaggle UW-Madison GI Tract layout; not patient data",
        "source": f"medseg phantom gi --out {out} --cases {cases} --days {days} --slices {slices} "
        f"--size {height},{width} --seed {seed}",
        "options": options,
    }
    write_json_atomic(out / "phantom.json", meta)  # claims the folder first
    rows: list[dict[str, str]] = []
    written: set[Path] = set()
    counts = dict.fromkeys(("slices", "slices_with_organ", *UWMADISON_CLASSES), 0)
    counts.update(large_small_bowel_overlap=0, stomach_large_bowel_overlap=0)
    scan_days = []
    for i in range(1, cases + 1):
        case_rng = np.random.default_rng([seed, i])
        patient = random_abdomen(case_rng)
        numbers = np.sort(case_rng.choice(max(40, 2 * days), size=days, replace=False))
        for j, number in enumerate(numbers.tolist()):
            day_rng = np.random.default_rng([seed, i, j])
            day = f"case{i}_day{number}"
            volume = render_abdomen(next_scan_day(patient, day_rng), slices, (height, width), day_rng)
            scans = out / "train" / f"case{i}" / day / "scans"
            for k in range(slices):
                name = f"slice_{k + 1:04d}_{width}_{height}_{PIXEL_SPACING}_{PIXEL_SPACING}.png"
                written.add(_write_png16(scans / name, volume.image[k]))
                masks = volume.masks[k]
                for organ, mask in zip(UWMADISON_CLASSES, masks):
                    rows.append(
                        {"id": f"{day}_slice_{k + 1:04d}", "class": organ, "segmentation": rle_encode(mask)}
                    )
                    counts[organ] += bool(mask.any())
                counts["slices"] += 1
                counts["slices_with_organ"] += bool(masks.any())
                counts["large_small_bowel_overlap"] += bool((masks[0] & masks[1]).any())
                counts["stomach_large_bowel_overlap"] += bool((masks[0] & masks[2]).any())
            scan_days.append(day)
    write_csv_atomic(out / "train.csv", rows, fieldnames=("id", "class", "segmentation"))
    _remove_stale(out, written)
    write_json_atomic(out / "phantom.json", {**meta, "scan_days": scan_days, "counts": counts})
    return out


def _write_png16(path: Path, image: np.ndarray) -> Path:
    """Write ``(H, W)`` uint16 as a 16-bit grey PNG whatever its maximum (as the Kaggle scans are)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint16)).save(
            tmp, format="PNG", compress_level=1
        )
    return path


def _check_folder(out: Path) -> None:
    """Refuse a folder that is not empty and not an earlier GI phantom."""
    check_phantom_folder(out, GI_PHANTOM_NAME, "GI phantom")


def _remove_stale(out: Path, written: set[Path]) -> None:
    """Delete scans of an earlier, larger phantom in the same folder and the folders they leave empty."""
    for path in sorted((out / "train").glob("case*/case*_day*/scans/slice_*.png")):
        if path not in written:
            path.unlink()
    for folder in sorted((out / "train").glob("case*/**/"), key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
