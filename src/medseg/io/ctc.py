"""Cell Tracking Challenge (CTC) folders: frame files, track tables, ground truth and results. No torch.

Layout (celltrackingchallenge.net, "naming and file content conventions")::

    01/t000.tif ...                      raw frames (3 digits, 4 when a sequence has over 1000 frames)
    01_GT/TRA/man_track000.tif ...       tracking ground truth: every frame, pixel value = track label
    01_GT/TRA/man_track.txt              one line per track: ``L B E P``
    01_GT/SEG/man_seg000.tif ...         segmentation ground truth, possibly on some frames only
    01_RES/mask000.tif + res_track.txt   a result, same format as TRA

Array contract at this boundary:

- a **track table** is ``(N, 4)`` int64 with rows ``(label, begin, end, parent)``; a track is present in
  every frame from ``begin`` to ``end`` (inclusive); ``parent`` is 0 or the label of a track that ends
  before this one begins. An object missing from some frames continues as a new track whose parent is the
  track before the gap; a division is a parent followed by two (or more) children.
- a **label movie** is ``(T, H, W)`` int32, pixel value = track label, 0 = background.

Every read failure raises :class:`~medseg.errors.DataError` naming the file (and line, for text files);
every write is atomic. TIFFs are written uncompressed, as the challenge's own files are.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.atomic import atomic_path, write_text_atomic
from medseg.io.images import read_image, read_label

_TIFF_NAME = r"(\d+)\.tiff?"
_UINT16_MAX = np.iinfo(np.uint16).max


@dataclass
class CtcGroundTruth:
    """The ground truth of one sequence (``01_GT``).

    Attributes:
        tra: ``(T, H, W)`` int32 tracking labels (markers or full masks), pixel value = track label.
        table: ``(N, 4)`` int64 track table from ``TRA/man_track.txt``.
        seg: frame index -> ``(H, W)`` int32 segmentation ground truth (``SEG/man_segNNN.tif``), often on a
            few frames only; empty when there is no ``SEG`` folder.
    """

    tra: np.ndarray
    table: np.ndarray
    seg: dict[int, np.ndarray] = field(default_factory=dict)


def list_frames(folder: str | os.PathLike[str], prefix: str) -> list[tuple[int, Path]]:
    """Frame files ``{prefix}NNN.tif`` of a folder, by frame index.

    Args:
        folder: e.g. ``01`` (prefix ``"t"``), ``01_GT/TRA`` (``"man_track"``), ``01_GT/SEG``
            (``"man_seg"``) or ``01_RES`` (``"mask"``).
        prefix: the file name before the digits. Any number of digits is read (``t000.tif``,
            ``t0000.tif``); ``.tif`` and ``.tiff`` both count. Other files are ignored.

    Returns:
        ``(frame index, path)`` pairs sorted by index (possibly empty).

    Raises:
        DataError: the folder is missing, or two files hold the same frame (``t001.tif`` and ``t0001.tif``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    pattern = re.compile(re.escape(prefix) + _TIFF_NAME, re.IGNORECASE)
    frames: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        index = int(match.group(1))
        if index in frames:
            raise DataError(f"{folder}: {frames[index].name} and {path.name} both hold frame {index}")
        frames[index] = path
    return sorted(frames.items())


def read_frames(source: str | os.PathLike[str], *, prefix: str = "t") -> np.ndarray:
    """Read a time-lapse from a CTC frame folder or a multi-page TIFF stack.

    Args:
        source: a folder of ``{prefix}NNN.tif`` frames numbered 0..T-1 (CTC's ``01``), or one TIFF file
            holding a ``(T, H, W)`` stack (ImageJ, OME or plain tifffile pages). A single 2D TIFF is a
            one-frame movie.
        prefix: frame file prefix in a folder.

    Returns:
        ``(T, H, W)`` or ``(T, H, W, C)`` array in the stored dtype.

    Raises:
        DataError: nothing to read, frames missing from 0..T-1, frames of different size or dtype, or a
            file that is not a time-lapse.
    """
    source = Path(source)
    if source.is_dir():
        paths = _contiguous(source, prefix)
        return _stack([read_image(p) for p in paths], paths)
    if not source.is_file():
        raise DataError(f"{source}: no such file or folder")
    return _read_stack(source)


def read_label_frames(folder: str | os.PathLike[str], prefix: str) -> np.ndarray:
    """Read a label movie from ``{prefix}NNN.tif`` files numbered 0..T-1.

    Returns:
        ``(T, H, W)`` int32, 0 = background.

    Raises:
        DataError: no frames, a frame missing from 0..T-1, frames of different size, or a file that is not
            a label mask.
    """
    paths = _contiguous(Path(folder), prefix)
    return _stack([read_label(p) for p in paths], paths)


def read_track_table(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``man_track.txt`` / ``res_track.txt``: one ``L B E P`` line per track, blank lines ignored.

    Returns:
        ``(N, 4)`` int64 rows ``(label, begin, end, parent)`` in file order (``(0, 4)`` for an empty file).

    Raises:
        DataError: naming ``file:line`` for a row that is not four non-negative integers, a label of 0, an
            end before the begin, a track that is its own parent or a label listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read track table ({exc})") from None
    rows: list[tuple[int, int, int, int]] = []
    first_line: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 4 or not all(f.isascii() and f.isdigit() for f in fields):
            raise DataError(f"{where}: expected four non-negative integers 'L B E P', got {line.strip()!r}")
        label, begin, end, parent = (int(f) for f in fields)
        if label == 0:
            raise DataError(f"{where}: track label 0 is the background; labels start at 1")
        if end < begin:
            raise DataError(f"{where}: track {label} ends in frame {end}, before it begins in frame {begin}")
        if parent == label:
            raise DataError(f"{where}: track {label} is its own parent")
        if label in first_line:
            raise DataError(f"{where}: track {label} is already listed on line {first_line[label]}")
        first_line[label] = number
        rows.append((label, begin, end, parent))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def write_track_table(path: str | os.PathLike[str], table: np.ndarray) -> Path:
    """Write a track table as ``L B E P`` lines (space separated, one per track) atomically.

    Args:
        path: e.g. ``01_RES/res_track.txt``.
        table: ``(N, 4)`` integer rows ``(label, begin, end, parent)``.

    Returns:
        ``path`` as a Path.

    Raises:
        DataError: ``table`` is not ``(N, 4)`` non-negative integers.
    """
    path = Path(path)
    table = _as_table(table, path)
    write_text_atomic(path, "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in table.tolist()))
    return path


def read_ctc_ground_truth(gt_dir: str | os.PathLike[str], *, check: bool = True) -> CtcGroundTruth:
    """Read one sequence's ground truth folder (``01_GT``).

    Args:
        gt_dir: folder holding ``TRA/`` (required) and ``SEG/`` (optional).
        check: verify that ``TRA``'s label movie and ``man_track.txt`` agree (:func:`check_tracks`).

    Raises:
        DataError: ``TRA`` frames or table missing or malformed, they disagree, or a ``SEG`` frame has
            another size than the ``TRA`` frames or lies beyond the last one.
    """
    gt_dir = Path(gt_dir)
    tra_dir = gt_dir / "TRA"
    tra = read_label_frames(tra_dir, "man_track")
    table = read_track_table(tra_dir / "man_track.txt")
    if check:
        check_tracks(tra, table, name=str(tra_dir))
    seg: dict[int, np.ndarray] = {}
    if (gt_dir / "SEG").is_dir():
        for index, path in list_frames(gt_dir / "SEG", "man_seg"):
            if index >= len(tra):
                raise DataError(f"{path}: frame {index} is beyond the last TRA frame ({len(tra) - 1})")
            labels = read_label(path)
            if labels.shape != tra.shape[1:]:
                raise DataError(f"{path}: is {_size(labels)} but the TRA frames are {_size(tra[0])}")
            seg[index] = labels
    return CtcGroundTruth(tra=tra, table=table, seg=seg)


def write_frames(folder: str | os.PathLike[str], prefix: str, frames: np.ndarray) -> list[Path]:
    """Write a movie as ``{prefix}NNN.tif`` files (3 digits, 4 when there are more than 1000 frames).

    Args:
        folder: created if missing; other files in it are left alone.
        prefix: e.g. ``"t"``, ``"mask"``, ``"man_track"``, ``"man_seg"``.
        frames: ``(T, H, W)`` or ``(T, H, W, C)``. Integer labels (any signed or unsigned integer type)
            are stored as uint16 when they fit, else uint32, as CTC tools expect; other dtypes are kept.

    Returns:
        The written paths in frame order.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise DataError(f"{folder}: expected a (T, H, W) movie, got an array of shape {frames.shape}")
    digits = 3 if len(frames) <= 1000 else 4
    if frames.dtype.kind == "i" or (frames.dtype.kind == "u" and frames.dtype.itemsize > 2):
        if frames.size and frames.min() < 0:
            raise DataError(f"{folder}: labels must be >= 0, found {frames.min()}")
        frames = frames.astype(np.uint16 if frames.max(initial=0) <= _UINT16_MAX else np.uint32)
    folder = Path(folder)
    return [_write_tiff(folder / f"{prefix}{t:0{digits}d}.tif", frame) for t, frame in enumerate(frames)]


def write_ctc_result(out_dir: str | os.PathLike[str], masks: np.ndarray, table: np.ndarray) -> Path:
    """Write a tracking result in CTC format: ``maskNNN.tif`` frames and ``res_track.txt``.

    Args:
        out_dir: e.g. ``01_RES``; created if missing.
        masks: ``(T, H, W)`` label movie, pixel value = track label.
        table: ``(N, 4)`` track table that agrees with ``masks``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DataError: ``masks`` and ``table`` disagree (see :func:`check_tracks`); nothing is written then.
    """
    out_dir = Path(out_dir)
    check_tracks(masks, table, name=str(out_dir))
    write_frames(out_dir, "mask", masks)
    write_track_table(out_dir / "res_track.txt", table)
    return out_dir


def check_tracks(masks: np.ndarray, table: np.ndarray, *, name: str) -> None:
    """Check that a label movie and its track table agree, as the CTC evaluation requires.

    Every label in the movie is a track of the table, present in each frame from its begin to its end and
    in no other; every parent is a track that ends before its child begins.

    Args:
        masks: ``(T, H, W)`` integer label movie.
        table: ``(N, 4)`` track table.
        name: what to call the pair in the message (e.g. the folder).

    Raises:
        DataError: one line naming the first problem and how many more there are.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.dtype.kind not in "iu":
        raise DataError(f"{name}: expected a (T, H, W) integer label movie, got {masks.dtype} {masks.shape}")
    table = _as_table(table, name)
    problems: list[str] = []
    labels, begins, ends, parents = table.T
    unique, counts = np.unique(labels, return_counts=True)
    problems += [f"track {label} is listed twice" for label in unique[counts > 1]]
    problems += [
        f"track {label} ends in frame {end} before it begins in frame {begin}"
        for label, begin, end in table[ends < begins, :3].tolist()
    ]
    frame_count = len(masks)
    problems += [
        f"track {label} ends in frame {end} but the movie has {frame_count} frames"
        for label, end in table[ends >= frame_count][:, [0, 2]].tolist()
    ]
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    present = np.zeros((len(table), frame_count), dtype=bool)
    for t, frame in enumerate(masks):
        ids = np.unique(frame)
        ids = ids[ids != 0].astype(np.int64)
        pos = np.minimum(np.searchsorted(sorted_labels, ids), max(len(table) - 1, 0))
        known = (sorted_labels[pos] == ids) if len(table) else np.zeros(len(ids), dtype=bool)
        problems += [f"label {label} in frame {t} is not in the track table" for label in ids[~known]]
        present[order[pos[known]], t] = True
    frames = np.arange(frame_count)
    expected = (frames >= begins[:, None]) & (frames <= ends[:, None])
    for row, t in zip(*np.nonzero(present & ~expected)):
        problems.append(f"label {labels[row]} is in frame {t}, outside its track {begins[row]}-{ends[row]}")
    for row, t in zip(*np.nonzero(expected & ~present)):
        problems.append(
            f"label {labels[row]} is missing from frame {t}, inside its track {begins[row]}-{ends[row]}"
        )
    end_of = dict(zip(labels.tolist(), ends.tolist()))
    for label, begin, parent in table[parents != 0][:, [0, 1, 3]].tolist():
        if parent not in end_of:
            problems.append(f"track {label} has parent {parent}, which is not in the track table")
        elif end_of[parent] >= begin:
            problems.append(
                f"track {label} begins in frame {begin} but its parent {parent} ends in frame "
                f"{end_of[parent]} (a parent must end before its children begin)"
            )
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{name}: {problems[0]}{more}")


def _as_table(table: np.ndarray, name: str | os.PathLike[str]) -> np.ndarray:
    """``table`` as ``(N, 4)`` int64 after checking shape, type and sign."""
    table = np.asarray(table)
    if table.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 4 or table.dtype.kind not in "iu":
        raise DataError(
            f"{name}: a track table is (N, 4) integers 'L B E P', got {table.dtype} {table.shape}"
        )
    if table.min() < 0:
        raise DataError(f"{name}: track table holds negative values")
    return table.astype(np.int64)


def _contiguous(folder: Path, prefix: str) -> list[Path]:
    """The paths of frames 0..T-1 in order, refusing gaps and an empty folder."""
    frames = list_frames(folder, prefix)
    if not frames:
        raise DataError(f"{folder}: no {prefix}NNN.tif frames found")
    for expected, (index, path) in enumerate(frames):
        if index != expected:
            raise DataError(
                f"{folder}: frame {expected} ({prefix}{expected:03d}.tif) is missing before {path.name}; "
                "frames must be numbered 0..T-1"
            )
    return [path for _, path in frames]


def _stack(arrays: list[np.ndarray], paths: list[Path]) -> np.ndarray:
    for path, array in zip(paths[1:], arrays[1:]):
        if array.shape != arrays[0].shape or array.dtype != arrays[0].dtype:
            raise DataError(
                f"{path}: is {_describe(array)} but {paths[0].name} is {_describe(arrays[0])}; "
                "all frames must match"
            )
    return np.stack(arrays)


def _read_stack(path: Path) -> np.ndarray:
    """A TIFF file as ``(T, H, W)`` or ``(T, H, W, C)``."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array, axes = np.asarray(series.asarray()), series.axes
    except Exception as exc:  # tifffile raises many types for broken files
        raise DataError(f"{path}: cannot read TIFF stack ({str(exc).strip().splitlines()[0]})") from exc
    channel_axes = [i for i, code in enumerate(axes) if code in "CS"]
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3 and not channel_axes:
        return array
    if array.ndim == 3 and len(channel_axes) == 1:
        return np.moveaxis(array, channel_axes[0], -1)[None]
    if array.ndim == 4 and len(channel_axes) == 1 and channel_axes[0] != 0:
        return np.moveaxis(array, channel_axes[0], -1)
    raise DataError(f"{path}: expected a (T, H, W) stack, got shape {array.shape} (axes {axes})")


def _write_tiff(path: Path, array: np.ndarray) -> Path:
    import tifffile

    with atomic_path(path) as tmp:
        axes = "YXS"[: array.ndim]
        tifffile.imwrite(tmp, np.ascontiguousarray(array), metadata={"axes": axes})
    return path


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]} (WxH)"


def _describe(array: np.ndarray) -> str:
    return f"{'x'.join(map(str, array.shape))} {array.dtype}"
