"""Synthetic widefield fluorescence images of stained nuclei (DAPI/Hoechst-like) with instance labels.

Drawing and rendering are separate steps. :func:`random_nuclei` draws a scene: a list of :class:`Nucleus`
parameters (centre, semi-axes, angle, brightness, outline wobble, chromatin seed) in drawing order, some
placed against an earlier nucleus so that they touch or overlap. :func:`render_nuclei` turns any such list
into a frame: labels from each nucleus' signed distance field (a later nucleus owns the pixels it
overlaps), the image from the same fields anti-aliased over one pixel, then a microscope (:class:`Microscope`:
point spread blur, scattered glow, uneven background, Poisson photon noise and Gaussian read noise). A
time-lapse only needs to move, split or add nuclei between calls to :func:`render_nuclei`; the chromatin
pattern lives in each nucleus' own frame and turns and moves with it.

Sizes are in pixels (radii about 6-14 px at any image size), so a smaller image holds fewer nuclei.

Example:
    >>> frame = nuclei_image(96, rng=0)
    >>> frame.image.dtype, frame.labels.dtype, frame.labels.max() == len(frame.nuclei)
    (dtype('uint16'), dtype('int32'), np.True_)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.phantoms.common import check_overwrite
from medseg.errors import MedsegError
from medseg.io import write_image, write_json_atomic

NUCLEI_LABELS = {"background": 0, "nucleus": 1}
MIN_SIZE = 32
MIN_VISIBLE_FRACTION = 0.3  # a nucleus hidden by more than 70% under later ones is left out entirely
MIN_VISIBLE_PIXELS = 12
_HARMONICS = np.array([2, 3, 4, 5])
_DATASET_NAME = "nuclei_phantom"


@dataclass(frozen=True)
class Nucleus:
    """Everything :func:`render_nuclei` needs to draw one nucleus.

    Attributes:
        row: centre row in pixels (fractional; may lie outside the image).
        col: centre column in pixels.
        radius_major: semi-axis along ``angle``, px, before the wobble.
        radius_minor: the other semi-axis, px.
        angle: direction of the major axis, radians from the column axis towards the row axis.
        brightness: dye intensity relative to an average nucleus (about 0.6-1.7).
        wobble: relative amplitudes of the 2nd-5th harmonics of the outline radius.
        wobble_phase: phases of those harmonics, radians.
        texture: chromatin contrast, 0 = evenly stained.
        texture_seed: seeds the chromatin pattern and nucleoli, drawn in the nucleus' own frame.
        defocus: extra Gaussian blur (sigma, px) of a nucleus lying slightly off the focal plane.
    """

    row: float
    col: float
    radius_major: float
    radius_minor: float
    angle: float
    brightness: float = 1.0
    wobble: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    wobble_phase: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    texture: float = 0.2
    texture_seed: int = 0
    defocus: float = 0.0

    @property
    def reach(self) -> float:
        """Radius (px) of a circle around the centre that holds the whole outline."""
        return self.radius_major * (1 + sum(self.wobble))

    def outline_radius(self, direction: float) -> float:
        """Distance (px) from the centre to the outline along ``direction`` (radians, like ``angle``)."""
        u = math.cos(direction - self.angle) / self.radius_major
        v = math.sin(direction - self.angle) / self.radius_minor
        return float(_wobble(self, np.arctan2(v, u))) / math.hypot(u, v)


@dataclass(frozen=True)
class Microscope:
    """Imaging settings shared by every frame of one acquisition; intensities relative to a nucleus of
    brightness 1.

    Attributes:
        psf_sigma: in-focus blur (Gaussian sigma, px).
        background: mean background level.
        background_variation: relative amplitude of the smooth uneven background (0 = flat).
        background_seed: seeds the shape of the uneven background.
        haze: fraction of nuclear light scattered into a wide glow around the nuclei.
        haze_sigma: width of that glow (Gaussian sigma, px).
        photons: mean photons per pixel from a nucleus of brightness 1 (sets the shot noise).
        gain: camera counts per photon.
        offset: camera baseline, counts.
        read_noise: camera read noise, counts (standard deviation).
    """

    psf_sigma: float = 1.2
    background: float = 0.1
    background_variation: float = 0.4
    background_seed: int = 0
    haze: float = 0.05
    haze_sigma: float = 10.0
    photons: float = 200.0
    gain: float = 1.0
    offset: float = 100.0
    read_noise: float = 3.0


@dataclass
class NucleiImage:
    """One rendered frame and its ground truth.

    Attributes:
        image: ``(H, W)`` uint16 camera counts.
        labels: ``(H, W)`` int32 instance ids, 0 = background, ids 1..K.
        nuclei: the K drawn nuclei, ``nuclei[k - 1]`` is label ``k`` (input order, hidden ones removed).
        microscope: the imaging settings used.
    """

    image: np.ndarray
    labels: np.ndarray
    nuclei: list[Nucleus]
    microscope: Microscope


def nuclei_image(
    size: int = 256, rng: np.random.Generator | int | None = None, *, count: int | None = None
) -> NucleiImage:
    """Draw a random scene and microscope and render it.

    Args:
        size: image height and width in pixels (>= 32).
        rng: generator or seed; every random choice is drawn from it.
        count: number of nuclei to place (default: 15-60 per 256 x 256 pixels). Crowded requests may place
            fewer; nuclei hidden under others are left out.

    Returns:
        The image, its labels and the drawn nuclei.

    Raises:
        MedsegError: ``size`` is too small or ``count`` is negative.
    """
    rng = np.random.default_rng(rng)
    nuclei = random_nuclei(size, rng, count=count)
    return render_nuclei(nuclei, size, random_microscope(rng), rng)


def random_nuclei(
    size: int, rng: np.random.Generator | int | None = None, *, count: int | None = None
) -> list[Nucleus]:
    """Draw nucleus parameters for one ``size`` x ``size`` field of view, in drawing order.

    Centres lie inside the image. A share of the nuclei (varying per image) is placed against an earlier
    one: most just touch, about a third overlap it by up to ~20% of its area (drawn on top). The others
    are dropped where there is free space. Every nucleus keeps at least ~60% of its area visible.

    Args:
        size: image height and width in pixels (>= 32).
        rng: generator or seed.
        count: number of nuclei (default: 15-60 per 256 x 256 pixels).

    Returns:
        The nuclei; later ones lie on top of earlier ones.

    Raises:
        MedsegError: ``size`` is too small or ``count`` is negative.
    """
    rng = np.random.default_rng(rng)
    if size < MIN_SIZE:
        raise MedsegError(f"nuclei phantom size must be at least {MIN_SIZE} px, got {size}")
    if count is not None and count < 0:
        raise MedsegError(f"nuclei count must be >= 0, got {count}")
    if count is None:
        count = max(1, round(rng.uniform(15, 60) * size * size / 256**2))
    clumping = rng.uniform(0.2, 0.6)  # chance that a nucleus is placed against an earlier one
    overlap_share = rng.uniform(0.15, 0.45)  # of those, the share that overlaps rather than touches
    typical_radius = rng.uniform(7.5, 10.5)  # one cell line per image: sizes cluster around it
    owner = np.zeros((size, size), np.int32)  # index + 1 of the top-most nucleus at each pixel
    full_area: list[int] = []
    visible = [0]
    nuclei: list[Nucleus] = []
    for _ in range(40 * count):
        if len(nuclei) >= count:
            break
        shape = _random_shape(rng, typical_radius)
        against = bool(nuclei) and rng.random() < clumping
        if against:
            anchor = nuclei[int(rng.integers(len(nuclei)))]
            direction = rng.uniform(0, 2 * np.pi)
            spacing = rng.uniform(0.72, 0.9) if rng.random() < overlap_share else rng.uniform(0.92, 1.0)
            probe = Nucleus(0.0, 0.0, **shape)
            distance = spacing * (anchor.outline_radius(direction) + probe.outline_radius(direction + np.pi))
            row = anchor.row + distance * math.sin(direction)
            col = anchor.col + distance * math.cos(direction)
        else:
            row, col = rng.uniform(0, size, 2)
        if not (0 <= row < size and 0 <= col < size):
            continue
        nucleus = Nucleus(float(row), float(col), **shape)
        box, dist = _footprint(nucleus, size, 0)
        inside = dist > 0
        under = owner[box][inside]
        covered = np.bincount(under, minlength=len(nuclei) + 1)
        covered[0] = 0
        if covered.sum() and not against:
            continue
        hit = np.flatnonzero(covered)
        if len(hit) > 2 or covered.sum() > 0.25 * inside.sum():
            continue
        if any(visible[j] - covered[j] < 0.6 * full_area[j - 1] for j in hit):
            continue
        for j in hit:
            visible[j] -= covered[j]
        owner[box][inside] = len(nuclei) + 1
        full_area.append(int(inside.sum()))
        visible.append(int(inside.sum()))
        nuclei.append(nucleus)
    return nuclei


def random_microscope(rng: np.random.Generator | int | None = None) -> Microscope:
    """Draw imaging settings: focus, background, glow, brightness and camera noise vary between images."""
    rng = np.random.default_rng(rng)
    return Microscope(
        psf_sigma=float(rng.uniform(0.8, 1.8)),
        background=float(rng.uniform(0.04, 0.2)),
        background_variation=float(rng.uniform(0.2, 0.7)),
        background_seed=int(rng.integers(2**31)),
        haze=float(rng.uniform(0.0, 0.12)),
        haze_sigma=float(rng.uniform(6.0, 14.0)),
        photons=float(np.exp(rng.uniform(np.log(40), np.log(1000)))),
        gain=float(rng.uniform(0.5, 3.0)),
        offset=100.0,
        read_noise=float(rng.uniform(1.5, 6.0)),
    )


def render_nuclei(
    nuclei: Sequence[Nucleus],
    size: int,
    microscope: Microscope | None = None,
    rng: np.random.Generator | int | None = None,
) -> NucleiImage:
    """Render nuclei into a fluorescence image with exact instance labels.

    A nucleus drawn later lies on top: it owns the label of the pixels it shares with earlier ones, while
    the image adds the light of both (the overlap is brighter, as in widefield images). A nucleus that
    keeps less than 30% of its in-image area (or fewer than 12 pixels) visible is left out of both image
    and labels; visible pieces cut off from the rest of their nucleus join the nucleus covering them.

    Args:
        nuclei: the nuclei in drawing order.
        size: image height and width in pixels.
        microscope: imaging settings (default :class:`Microscope`'s defaults).
        rng: generator or seed for the camera noise only: the same nuclei and microscope with another
            ``rng`` give another exposure of the same scene.

    Returns:
        The frame; labels are numbered 1..K in the order of ``nuclei``.
    """
    rng = np.random.default_rng(rng)
    microscope = microscope or Microscope()
    footprints = [_footprint(n, size, math.ceil(3 * n.defocus) + 1) for n in nuclei]
    owner = np.zeros((size, size), np.int32)  # index + 1 of the top-most kept nucleus
    kept: list[int] = []
    for i in reversed(range(len(nuclei))):
        box, dist = footprints[i]
        inside = dist > 0
        free = inside & (owner[box] == 0)
        if free.sum() >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * inside.sum()):
            owner[box][free] = i + 1
            kept.append(i)
    kept.sort()
    for i in kept:
        _merge_cut_off_pieces(owner, footprints[i][0], i + 1)
    lookup = np.zeros(len(nuclei) + 1, np.int32)
    lookup[[i + 1 for i in kept]] = np.arange(1, len(kept) + 1, dtype=np.int32)
    signal = np.zeros((size, size))
    for i in kept:
        box, dist = footprints[i]
        signal[box] += _emission(nuclei[i], box, dist)
    image = _acquire(signal, microscope, rng)
    return NucleiImage(image, lookup[owner], [nuclei[i] for i in kept], microscope)


def write_nuclei_dataset(out: str | Path, n: int, *, size: int = 256, seed: int = 0) -> Path:
    """Write ``n`` nuclei phantoms as a native (nnU-Net v2 raw) instance dataset.

    Layout: ``dataset.json``, ``imagesTr/nuclei_000_0000.tif`` (uint16) and ``labelsTr/nuclei_000.tif``
    (int32 instance ids). Case ``i`` is drawn from a generator seeded with ``(seed, i)``, so files are
    byte-identical for a given seed and a case does not depend on ``n``.

    Args:
        out: dataset folder, created if missing; case files of an earlier nuclei phantom are replaced.
        n: number of cases.
        size: image height and width in pixels.
        seed: non-negative base seed.

    Returns:
        ``out`` as a Path.

    Raises:
        MedsegError: ``n`` or ``seed`` is negative, ``size`` is too small, or ``out`` holds another dataset.
    """
    out = Path(out)
    if n < 0 or seed < 0:
        raise MedsegError(f"nuclei phantom needs n >= 0 and seed >= 0, got n={n}, seed={seed}")
    if size < MIN_SIZE:
        raise MedsegError(f"nuclei phantom size must be at least {MIN_SIZE} px, got {size}")
    check_overwrite(out, _DATASET_NAME)
    digits = max(3, len(str(n - 1)))
    written: set[Path] = set()
    for i in range(n):
        frame = nuclei_image(size, np.random.default_rng([seed, i]))
        case = f"nuclei_{i:0{digits}d}"
        written.add(write_image(out / "imagesTr" / f"{case}_0000.tif", frame.image))
        written.add(write_image(out / "labelsTr" / f"{case}.tif", frame.labels))
    # cases of an earlier, larger phantom in the same folder would silently join this dataset
    for folder in ("imagesTr", "labelsTr"):
        for stale in set((out / folder).glob("nuclei_*")) - written:
            stale.unlink()
    dataset = {
        "name": _DATASET_NAME,
        "channel_names": {"0": "fluorescence"},
        "labels": dict(NUCLEI_LABELS),
        "numTraining": n,
        "file_ending": ".tif",
        "medseg": {
            "task": "instance",
            "source": f"medseg phantom nuclei --n {n} --size {size} --seed {seed}",
        },
    }
    write_json_atomic(out / "dataset.json", dataset)
    return out


def _random_shape(rng: np.random.Generator, typical_radius: float) -> dict:
    """Keyword arguments of :class:`Nucleus` other than the centre."""
    radius = float(np.clip(rng.normal(typical_radius, 1.3), 6.0, 12.5))
    elongation = math.sqrt(rng.uniform(1.0, 1.6))  # major / minor axis up to 1.6
    wobble = rng.uniform(0, [0.05, 0.04, 0.025, 0.015])
    if rng.random() < 0.15:  # a dented, bean-like outline
        wobble[int(rng.integers(2))] += rng.uniform(0.04, 0.08)
    return {
        "radius_major": min(radius * elongation, 14.0),
        "radius_minor": max(radius / elongation, 5.0),
        "angle": float(rng.uniform(0, np.pi)),
        "brightness": float(np.exp(rng.uniform(-0.55, 0.55))),  # a 3x range between nuclei
        "wobble": tuple(float(w) for w in wobble),
        "wobble_phase": tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 4)),
        "texture": float(rng.uniform(0.08, 0.3)),
        "texture_seed": int(rng.integers(2**31)),
        "defocus": float(rng.uniform(0.3, 1.5)) if rng.random() < 0.2 else 0.0,
    }


def _wobble(nucleus: Nucleus, theta: np.ndarray) -> np.ndarray:
    """Relative outline radius at polar angle ``theta`` of the nucleus' own frame."""
    theta = np.asarray(theta, dtype=float)
    terms = np.multiply.outer(theta, _HARMONICS) + np.asarray(nucleus.wobble_phase)
    return 1 + np.cos(terms) @ np.asarray(nucleus.wobble)


def _footprint(nucleus: Nucleus, size: int, margin: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """Box around the nucleus (clipped to the image) and its approximate signed distance (px, > 0 inside)."""
    reach = nucleus.reach + 1 + margin
    # clipped to the image; a nucleus wholly outside it gets an empty box
    y0 = min(max(int(nucleus.row - reach), 0), size)
    x0 = min(max(int(nucleus.col - reach), 0), size)
    y1 = max(min(int(nucleus.row + reach) + 2, size), y0)
    x1 = max(min(int(nucleus.col + reach) + 2, size), x0)
    along, across = _local(nucleus, np.arange(y0, y1)[:, None], np.arange(x0, x1)[None])
    u, v = along / nucleus.radius_major, across / nucleus.radius_minor
    rel = np.hypot(u, v) / _wobble(nucleus, np.arctan2(v, u))
    return (slice(y0, y1), slice(x0, x1)), (1 - rel) * math.sqrt(nucleus.radius_major * nucleus.radius_minor)


def _local(nucleus: Nucleus, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the nucleus' frame: along and across its major axis (px)."""
    dy, dx = rows - nucleus.row, cols - nucleus.col
    c, s = math.cos(nucleus.angle), math.sin(nucleus.angle)
    return dx * c + dy * s, dy * c - dx * s


def _merge_cut_off_pieces(owner: np.ndarray, box: tuple[slice, slice], value: int) -> None:
    """Keep the largest connected piece of label ``value``; give other pieces to their main neighbour."""
    region = owner[box]
    pieces, count = ndimage.label(region == value)
    if count < 2:
        return
    sizes = np.bincount(pieces.ravel())[1:]
    for piece in np.flatnonzero(np.arange(1, count + 1) != np.argmax(sizes) + 1) + 1:
        mask = pieces == piece
        ring = region[ndimage.binary_dilation(mask) & ~mask]
        ring = ring[(ring != value) & (ring != 0)]
        if ring.size:
            region[mask] = np.bincount(ring).argmax()


def _emission(nucleus: Nucleus, box: tuple[slice, slice], dist: np.ndarray) -> np.ndarray:
    """Dye light of one nucleus in its box: a slightly domed body with chromatin texture and nucleoli."""
    rows = np.arange(box[0].start, box[0].stop)[:, None]
    cols = np.arange(box[1].start, box[1].stop)[None]
    along, across = _local(nucleus, rows, cols)
    radius = math.sqrt(nucleus.radius_major * nucleus.radius_minor)
    rel = np.clip(1 - dist / radius, 0, 1)
    body = np.clip(dist + 0.5, 0, 1) * (1 - 0.25 * rel**2)
    chromatin = _chromatin(nucleus, along, across)
    light = nucleus.brightness * body * np.clip(1 + nucleus.texture * chromatin, 0.2, None)
    if nucleus.defocus > 0.05:
        light = ndimage.gaussian_filter(light, nucleus.defocus, mode="constant")
    return light


def _chromatin(nucleus: Nucleus, along: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Texture sampled in the nucleus' own frame: fine and coarse grain, bright spots and dark nucleoli."""
    rng = np.random.default_rng(nucleus.texture_seed)
    half = math.ceil(nucleus.reach) + 3
    side = 2 * half + 1
    fine = ndimage.gaussian_filter(rng.standard_normal((side, side)), 0.9)
    coarse = ndimage.gaussian_filter(rng.standard_normal((side, side)), 2.5)
    field = 0.7 * fine / (fine.std() + 1e-12) + 0.5 * coarse / (coarse.std() + 1e-12)
    grid = np.arange(side) - half
    minor = nucleus.radius_minor
    spots = [(2.0, 0.8, 1.4)] * int(rng.integers(0, 6)) + [(-2.0, 1.4, 2.4)] * int(rng.integers(0, 3))
    for strength, low, high in spots:  # chromocentres (bright) and nucleoli (dark), inside the body
        (cy, cx), sigma = rng.uniform(-0.55, 0.55, 2) * minor, rng.uniform(low, high)
        bump = np.exp(-((grid[:, None] - cy) ** 2 + (grid[None] - cx) ** 2) / (2 * sigma**2))
        field += strength * rng.uniform(0.6, 1.0) * bump
    return ndimage.map_coordinates(field, [across + half, along + half], order=1, mode="nearest")


def _acquire(signal: np.ndarray, microscope: Microscope, rng: np.random.Generator) -> np.ndarray:
    """Blur, glow, background and camera noise: ``(H, W)`` float light to uint16 counts."""
    m = microscope
    light = ndimage.gaussian_filter(signal, m.psf_sigma)
    if m.haze > 0:
        light += m.haze * ndimage.gaussian_filter(signal, m.haze_sigma)
    light += m.background * (1 + m.background_variation * _uneven(signal.shape[0], m.background_seed))
    counts = rng.poisson(np.clip(light, 0, None) * m.photons)
    image = m.offset + m.gain * counts + rng.normal(0, m.read_noise, signal.shape)
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


def _uneven(size: int, seed: int) -> np.ndarray:
    """``(size, size)`` smooth field in [-1, 1]: a tilt and waves of 150-500 px (uneven illumination)."""
    rng = np.random.default_rng(seed)
    rows, cols = (g / 256.0 for g in np.ogrid[0:size, 0:size])
    field = rng.uniform(-1, 1) * rows + rng.uniform(-1, 1) * cols
    for wavelength, direction, phase in rng.uniform([150, 0, 0], [500, np.pi, 2 * np.pi], (3, 3)):
        k = 2 * np.pi * 256.0 / wavelength
        field = field + np.cos(k * (np.sin(direction) * rows + np.cos(direction) * cols) + phase)
    return np.clip(field / 4, -1, 1)
