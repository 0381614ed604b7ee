"""Synthetic time-lapse of moving, dividing fluorescent nuclei with Cell Tracking Challenge ground truth.

Cells live on a field larger than the camera's (a margin on every side), so they drift in and out of
view. Each frame every cell takes a persistent random step (about 1-4 px, its heading wandering a little),
turns slightly, and is pushed off neighbours it overlaps heavily (a soft repulsion). Now and then a cell
divides: it condenses for two frames (smaller, brighter), then splits along its major axis into two
daughters half its area, a few pixels apart (anaphase), that grow back over about ten frames. Rarely a
nucleus is simply not seen in one frame (out of focus). Every frame is drawn by
:func:`~medseg.data.phantoms.nuclei.render_nuclei` with one microscope for the whole movie and fresh
camera noise.

The ground truth is read off what was rendered, never off the simulation: a cell is present in a frame
when its label is in that frame's label image (the renderer drops nuclei that are hidden, outside the
image or too small). Each unbroken run of presence is one track; a run after an absence (whatever the
reason: an unseen frame, a neighbour on top, a trip outside the field) is a new track whose parent is the
run before it, and a daughter's first track has its mother's last track as parent: the conventions of
CTC's ``man_track.txt``.

Example:
    >>> movie = nuclei_movie(96, frames=4, rng=0)
    >>> movie.images.shape, movie.tracks.dtype, movie.table.shape[1]
    ((4, 96, 96), dtype('int32'), 4)
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medseg.data.phantoms.common import check_phantom_folder
from medseg.data.phantoms.nuclei import (
    MIN_SIZE,
    Microscope,
    Nucleus,
    _random_shape,
    random_microscope,
    random_nuclei,
    render_nuclei,
)
from medseg.errors import MedsegError
from medseg.io import write_json_atomic
from medseg.io.ctc import write_frames, write_track_table

MOVIE_NAME = "nuclei_movie_phantom"
DIVISION_RATE = 0.015  # chance per cell and frame that a grown cell starts to divide
VANISH_RATE = 0.005  # chance per cell and frame that a nucleus is not seen in a frame
_MARGIN = 48  # px of simulated field beyond each image edge: cells enter and leave through it
_MITOSIS_FRAMES = 2  # frames a dividing nucleus spends condensed before it splits
_MIN_DIVISION_AGE = 8  # frames a daughter grows before it can divide again
_DAUGHTER_SCALE = 0.72  # daughters start at about half the area of a grown nucleus
_DAUGHTER_SPACING = 1.3  # daughter centre to mother centre, in daughter radii: a gap of ~0.6 radius
_GROWTH = 0.03  # scale gained per frame until grown
_CROWDING = 1.3  # no divisions once the population exceeds this multiple of the starting one
_SPACING = 0.8  # centres are pushed apart below this fraction of the sum of the two radii
_FRAMES_FILE = re.compile(r"(t|man_track|man_seg)\d+\.tif")


@dataclass
class NucleiMovie:
    """A rendered time-lapse and its tracking ground truth.

    Attributes:
        images: ``(T, H, W)`` uint16 camera counts.
        tracks: ``(T, H, W)`` int32 label movie, pixel value = track label (1..N), 0 = background. Every
            nucleus is a full mask, so it serves as CTC's TRA and SEG ground truth alike.
        table: ``(N, 4)`` int64 track table, rows ``(label, begin, end, parent)`` ordered by label.
        microscope: the imaging settings of every frame.
        nuclei: per frame, track label -> the nucleus drawn with that label.
    """

    images: np.ndarray
    tracks: np.ndarray
    table: np.ndarray
    microscope: Microscope
    nuclei: list[dict[int, Nucleus]]

    @property
    def divisions(self) -> int:
        """Number of tracks with two or more children."""
        children = np.unique(self.table[:, 3][self.table[:, 3] > 0], return_counts=True)[1]
        return int(np.sum(children >= 2))


@dataclass
class _Cell:
    """Simulation state of one cell; ``shape`` is its grown nucleus (centre and angle unused)."""

    ident: int
    mother: int  # ident of the mother, -1 for a cell that was there from the start or came in
    shape: Nucleus
    row: float
    col: float
    angle: float
    heading: float
    speed: float
    turn: float  # persistent rotation, radians per frame
    scale: float = 1.0
    age: int = 0
    mitosis: int = -1  # frames left before the split; -1 = not dividing

    def nucleus(self) -> Nucleus:
        """The nucleus as it looks now."""
        scale, brightness, texture = self.scale, self.shape.brightness, self.shape.texture
        if self.mitosis >= 0:  # condensed chromatin: smaller, brighter, grainier
            scale, brightness, texture = scale * 0.88, brightness * 1.35, texture * 1.5
        return replace(
            self.shape,
            row=self.row,
            col=self.col,
            angle=self.angle,
            radius_major=self.shape.radius_major * scale,
            radius_minor=self.shape.radius_minor * scale,
            brightness=brightness,
            texture=texture,
        )


def nuclei_movie(
    size: int = 256,
    frames: int = 30,
    rng: np.random.Generator | int | None = None,
    *,
    count: int | None = None,
) -> NucleiMovie:
    """Simulate and render a time-lapse of nuclei that move, divide, enter, leave and blink.

    Args:
        size: image height and width in pixels (>= 32).
        frames: number of frames T (>= 1).
        rng: generator or seed; every random choice is drawn from it.
        count: nuclei in view at the start (default: 20-45 per 256 x 256 pixels). Cells off screen in the
            margin are added at the same density; crowded requests may place fewer.

    Returns:
        The movie with exact track ground truth.

    Raises:
        MedsegError: ``size`` is too small, ``frames`` < 1 or ``count`` is negative.
    """
    rng = np.random.default_rng(rng)
    if size < MIN_SIZE:
        raise MedsegError(f"nuclei movie size must be at least {MIN_SIZE} px, got {size}")
    if frames < 1:
        raise MedsegError(f"nuclei movie needs at least 1 frame, got {frames}")
    if count is not None and count < 0:
        raise MedsegError(f"nuclei count must be >= 0, got {count}")
    # separate streams: the camera noise never changes the simulated scene
    simulation, noise = (np.random.default_rng(seed) for seed in rng.integers(2**63, size=2))
    microscope = random_microscope(simulation)
    world = _World(size, simulation, count)
    images = np.empty((frames, size, size), np.uint16)
    frame_labels = np.empty((frames, size, size), np.int32)
    idents: list[np.ndarray] = []  # per frame: frame label -> cell ident
    drawn: list[dict[int, Nucleus]] = []  # per frame: cell ident -> nucleus
    for t in range(frames):
        if t:
            world.step()
        shown = world.visible_nuclei()
        frame = render_nuclei([n for _, n in shown], size, microscope, noise)
        ident_of = {id(n): ident for ident, n in shown}
        kept = np.array([-1] + [ident_of[id(n)] for n in frame.nuclei], dtype=np.int64)
        images[t], frame_labels[t] = frame.image, frame.labels
        idents.append(kept)
        drawn.append({ident_of[id(n)]: n for n in frame.nuclei})
    tracks, table, label_of = _tracks_from_presence(frame_labels, idents, world.mothers)
    nuclei = [
        {label_of[ident, t]: n for ident, n in frame.items() if (ident, t) in label_of}
        for t, frame in enumerate(drawn)
    ]
    return NucleiMovie(images, tracks, table, microscope, nuclei)


def write_nuclei_movie(
    out: str | Path, frames: int, *, size: int = 256, seed: int = 0, sequences: int = 1
) -> Path:
    """Write nuclei movies in the Cell Tracking Challenge layout.

    Layout per sequence ``NN`` (``01``, ``02``, ...): ``NN/tNNN.tif`` (uint16 frames),
    ``NN_GT/TRA/man_trackNNN.tif`` + ``man_track.txt`` and ``NN_GT/SEG/man_segNNN.tif`` (full masks on
    every frame). ``phantom.json`` records the command and what was drawn. Sequence ``s`` is drawn from a
    generator seeded with ``(seed, s)``, so the files are byte-identical for a given seed.

    Args:
        out: folder, created if missing; it must be empty or hold an earlier nuclei movie phantom, whose
            files are replaced (frames and sequences beyond the new ones are removed).
        frames: frames per sequence.
        size: image height and width in pixels.
        seed: non-negative base seed.
        sequences: number of sequences (1-99).

    Returns:
        ``out`` as a Path.

    Raises:
        MedsegError: a bad argument, or ``out`` holds something other than a nuclei movie phantom.
    """
    out = Path(out)
    if frames < 1 or seed < 0 or not 1 <= sequences <= 99:
        raise MedsegError(
            f"nuclei movie needs frames >= 1, seed >= 0 and 1-99 sequences, "
            f"got frames={frames}, seed={seed}, sequences={sequences}"
        )
    if size < MIN_SIZE:
        raise MedsegError(f"nuclei movie size must be at least {MIN_SIZE} px, got {size}")
    _check_movie_folder(out)
    source = f"medseg phantom nuclei --frames {frames} --size {size} --seed {seed}"
    source += f" --sequences {sequences}" if sequences != 1 else ""
    meta = {"name": MOVIE_NAME, "source": source, "frames": frames, "size": size, "seed": seed}
    write_json_atomic(out / "phantom.json", {**meta, "sequences": []})  # claims the folder first
    written: set[Path] = set()
    summary = []
    for s in range(1, sequences + 1):
        movie = nuclei_movie(size, frames, np.random.default_rng([seed, s]))
        name = f"{s:02d}"
        written.update(write_frames(out / name, "t", movie.images))
        written.update(write_frames(out / f"{name}_GT" / "TRA", "man_track", movie.tracks))
        written.update(write_frames(out / f"{name}_GT" / "SEG", "man_seg", movie.tracks))
        written.add(write_track_table(out / f"{name}_GT" / "TRA" / "man_track.txt", movie.table))
        summary.append({"sequence": name, "tracks": len(movie.table), "divisions": movie.divisions})
    _remove_stale(out, written)
    write_json_atomic(out / "phantom.json", {**meta, "sequences": summary})
    return out


class _World:
    """The cells on the simulated field ``[-margin, size + margin)`` and one step of their motion."""

    def __init__(self, size: int, rng: np.random.Generator, count: int | None) -> None:
        self.size, self.rng = size, rng
        extent = size + 2 * _MARGIN
        per_pixel = (count / size**2) if count is not None else rng.uniform(20, 45) / 256**2
        placed = random_nuclei(extent, rng, count=round(per_pixel * extent**2))
        radii = [math.sqrt(n.radius_major * n.radius_minor) for n in placed]
        self.typical_radius = float(np.median(radii)) if radii else 9.0
        self.cells: list[_Cell] = []
        self.mothers: dict[int, int] = {}
        for n in placed:
            shape = replace(n, row=0.0, col=0.0, angle=0.0)
            self._add(shape, n.row - _MARGIN, n.col - _MARGIN, n.angle, mother=-1)
        self.target = max(len(self.cells), 1)

    def _add(
        self,
        shape: Nucleus,
        row: float,
        col: float,
        angle: float,
        *,
        mother: int,
        heading: float | None = None,
        speed: float | None = None,
        scale: float = 1.0,
    ) -> None:
        """Add a cell; one without a mother is at a random point of its cycle (it may divide soon)."""
        rng = self.rng
        ident = len(self.mothers)
        heading = rng.uniform(0, 2 * np.pi) if heading is None else heading
        speed = rng.uniform(0.8, 3.0) if speed is None else speed
        turn = rng.normal(0, 0.04)
        age = int(rng.integers(2 * _MIN_DIVISION_AGE)) if mother < 0 else 0
        self.cells.append(_Cell(ident, mother, shape, row, col, angle, heading, speed, turn, scale, age))
        self.mothers[ident] = mother

    def visible_nuclei(self) -> list[tuple[int, Nucleus]]:
        """``(ident, nucleus)`` in drawing order for the cells that may show in the image this frame."""
        shown = []
        for cell in self.cells:
            if self.rng.random() < VANISH_RATE:
                continue
            n = cell.nucleus()
            # A nucleus wholly above or left of the image is skipped: it cannot be seen, and the renderer
            # only clips boxes that overhang the far edges.
            pad = n.reach + math.ceil(3 * n.defocus) + 2
            if n.row + pad > 0 and n.col + pad > 0 and n.row - pad < self.size and n.col - pad < self.size:
                shown.append((cell.ident, n))
        return shown

    def step(self) -> None:
        """Advance one frame: move, grow, divide, push apart, leave and come in."""
        rng = self.rng
        crowded = len(self.cells) > _CROWDING * self.target
        dividing = [c for c in self.cells if c.mitosis == 0]
        self.cells = [c for c in self.cells if c.mitosis != 0]
        for cell in self.cells:
            if cell.mitosis > 0:
                cell.mitosis -= 1
            elif cell.age >= _MIN_DIVISION_AGE and not crowded and rng.random() < DIVISION_RATE:
                cell.mitosis = _MITOSIS_FRAMES - 1
            cell.heading += rng.normal(0, 0.35)
            cell.speed = float(np.clip(cell.speed + rng.normal(0, 0.2), 0.5, 4.0))
            cell.turn = 0.9 * cell.turn + rng.normal(0, 0.015)
            cell.angle += cell.turn + rng.normal(0, 0.02)
            cell.row += cell.speed * math.sin(cell.heading)
            cell.col += cell.speed * math.cos(cell.heading)
            cell.scale = min(1.0, cell.scale + _GROWTH)
            cell.age += 1
        for mother in dividing:
            self._divide(mother)
        self._repel()
        low, high = -_MARGIN, self.size + _MARGIN
        self.cells = [c for c in self.cells if low <= c.row < high and low <= c.col < high]
        self._come_in()

    def _divide(self, mother: _Cell) -> None:
        """Add two daughters of ``mother`` (already removed) along its major axis, apart and moving apart."""
        rng, axis = self.rng, mother.angle
        for side in (0.0, np.pi):
            grown = _shape(rng, self.typical_radius)
            shape = replace(grown, brightness=mother.shape.brightness * float(rng.uniform(0.85, 1.15)))
            angle = axis + np.pi / 2 + rng.normal(0, 0.3)
            young = replace(
                shape,
                radius_major=shape.radius_major * _DAUGHTER_SCALE,
                radius_minor=shape.radius_minor * _DAUGHTER_SCALE,
                angle=angle,
            )
            # anaphase has pulled the chromatin apart: the daughters start a few pixels from each other
            offset = _DAUGHTER_SPACING * young.outline_radius(axis + side)
            row = mother.row + offset * math.sin(axis + side)
            col = mother.col + offset * math.cos(axis + side)
            self._add(
                shape,
                row,
                col,
                angle,
                mother=mother.ident,
                heading=axis + side,
                speed=1.5,
                scale=_DAUGHTER_SCALE,
            )

    def _repel(self, rounds: int = 3) -> None:
        """Push apart centres closer than ``_SPACING`` times the sum of their radii."""
        if len(self.cells) < 2:
            return
        pos = np.array([(c.row, c.col) for c in self.cells])
        radius = np.array(
            [math.sqrt(c.shape.radius_major * c.shape.radius_minor) * c.scale for c in self.cells]
        )
        closest = _SPACING * (radius[:, None] + radius[None])
        for _ in range(rounds):
            diff = pos[:, None] - pos[None]
            dist = np.hypot(diff[..., 0], diff[..., 1])
            np.fill_diagonal(dist, np.inf)
            overlap = np.clip(closest - dist, 0, None)
            if not overlap.any():
                break
            unit = diff / np.maximum(dist, 1e-6)[..., None]
            pos += 0.5 * np.einsum("ij,ijk->ik", overlap, unit)
        for cell, (row, col) in zip(self.cells, pos):
            cell.row, cell.col = float(row), float(col)

    def _come_in(self) -> None:
        """Keep the population up with newcomers placed in the margin, out of view, off other cells."""
        rng, size = self.rng, self.size
        missing = self.target - len(self.cells)
        for _ in range(int(np.clip(rng.poisson(max(missing, 0) * 0.2), 0, 3))):
            shape = _shape(rng, self.typical_radius)
            hidden = shape.reach + 4  # whole nucleus outside the image
            along = rng.uniform(-_MARGIN, size + _MARGIN)
            across = rng.uniform(hidden, _MARGIN) * (1 if rng.random() < 0.5 else -1)
            across = -across if across < 0 else size + across
            row, col = (along, across) if rng.random() < 0.5 else (across, along)
            radius = math.sqrt(shape.radius_major * shape.radius_minor)
            if all(math.hypot(c.row - row, c.col - col) > radius + 12 for c in self.cells):
                self._add(shape, row, col, shape.angle, mother=-1)


def _shape(rng: np.random.Generator, typical_radius: float) -> Nucleus:
    """A grown nucleus of the movie's cell line, at the origin."""
    return Nucleus(0.0, 0.0, **_random_shape(rng, typical_radius))


def _tracks_from_presence(
    frame_labels: np.ndarray, idents: list[np.ndarray], mothers: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], int]]:
    """Turn per-frame labels of known cells into a CTC label movie and track table.

    Args:
        frame_labels: ``(T, H, W)`` int32 per-frame labels 1..K_t.
        idents: per frame, ``(K_t + 1,)`` cell ident of each frame label (entry 0 unused).
        mothers: cell ident -> mother's ident (-1 = none).

    Returns:
        The label movie, the ``(N, 4)`` table (labels 1..N numbered by begin frame) and
        ``(ident, frame) -> track label`` for every presence.
    """
    runs: dict[int, list[list[int]]] = {}
    for t, (labels, ident_of) in enumerate(zip(frame_labels, idents)):
        present = np.unique(labels)
        for ident in sorted(int(ident_of[k]) for k in present[present > 0]):
            cell_runs = runs.setdefault(ident, [])
            if cell_runs and cell_runs[-1][1] == t - 1:
                cell_runs[-1][1] = t
            else:
                cell_runs.append([t, t])
    keys = sorted(((r[0], ident, i) for ident, rs in runs.items() for i, r in enumerate(rs)))
    label_of_run = {(ident, i): label for label, (_, ident, i) in enumerate(keys, start=1)}
    rows = []
    for (ident, i), label in label_of_run.items():
        begin, end = runs[ident][i]
        if i > 0:
            parent = label_of_run[ident, i - 1]
        else:  # the last track of the nearest ancestor that was ever seen
            ancestor = mothers[ident]
            while ancestor >= 0 and ancestor not in runs:
                ancestor = mothers[ancestor]
            parent = label_of_run[ancestor, len(runs[ancestor]) - 1] if ancestor >= 0 else 0
        rows.append((label, begin, end, parent))
    table = np.array(sorted(rows), dtype=np.int64).reshape(-1, 4)
    label_of: dict[tuple[int, int], int] = {}
    for (ident, i), label in label_of_run.items():
        begin, end = runs[ident][i]
        label_of.update({(ident, t): label for t in range(begin, end + 1)})
    tracks = np.zeros(frame_labels.shape, np.int32)
    for t, (labels, ident_of) in enumerate(zip(frame_labels, idents)):
        lookup = np.array([0] + [label_of.get((int(i), t), 0) for i in ident_of[1:]], dtype=np.int32)
        tracks[t] = lookup[labels]
    return tracks, table, label_of


def _check_movie_folder(out: Path) -> None:
    """Refuse a folder that is not empty and not an earlier nuclei movie phantom."""
    check_phantom_folder(out, MOVIE_NAME, "nuclei movie phantom")


def _remove_stale(out: Path, written: set[Path]) -> None:
    """Delete frames and track tables of an earlier, longer phantom; drop sequence folders left empty."""
    folders = [p for p in out.iterdir() if p.is_dir() and re.fullmatch(r"\d{2}(_GT)?", p.name)]
    for folder in folders:
        for sub in (folder, folder / "TRA", folder / "SEG"):
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                phantom_file = _FRAMES_FILE.fullmatch(path.name) or path.name == "man_track.txt"
                if phantom_file and path not in written:
                    path.unlink()
        for sub in (folder / "TRA", folder / "SEG", folder):
            if sub.is_dir() and not any(sub.iterdir()):
                shutil.rmtree(sub)
