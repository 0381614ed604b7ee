"""Pieces every importer shares: destination rules, staging, case names, dataset.json, image endings.

An importer writes into a hidden staging folder beside the destination and renames it into place only
when every file is written (:func:`staging`), so a failure part-way leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.splits import group_of
from medseg.errors import ConfigError, DataError, MedsegError
from medseg.io import write_json_atomic

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
INT32_MAX = int(np.iinfo(np.int32).max)
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
# PNG holds 8-bit images with 1-4 channels and 16-bit grey ones; anything else is written as TIFF.
_PNG_CHANNELS = (2, 3, 4)
_PNG_MODES = ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "CMYK", "YCbCr")  # decoded as 8 bit
_PNG16_GREY = ("I;16", "I;16B", "I;16L")


def safe_case_name(text: str, fallback: str = "case") -> str:
    """``text`` made usable as a case name: runs of other characters (``/``, spaces) become ``_``.

    >>> safe_case_name("patient 7/slice 003")
    'patient_7_slice_003'
    """
    name = _UNSAFE_RUN.sub("_", text).lstrip("._-")
    return name or fallback


def check_case_prefix(prefix: str) -> str:
    """``prefix`` if it is letters, digits, ``.``, ``_`` or ``-`` (no path), else a MedsegError."""
    if not SAFE_NAME.match(prefix):
        raise MedsegError(f"case prefix {prefix!r} must be letters, digits, '.', '_' or '-' (no path)")
    return prefix


def unique_case_names(sources: Iterable[tuple[str, Path]]) -> dict[str, Path]:
    """Map case names to the files they come from, refusing two files that would share a name.

    Args:
        sources: ``(case name, source file)`` pairs.

    Raises:
        DataError: two files give the same case name (naming both).
    """
    cases: dict[str, Path] = {}
    for name, path in sources:
        if name in cases:
            raise DataError(f"{path}: gives case name {name!r}, as {cases[name]} does; rename one of them")
        cases[name] = path
    return cases


def check_destination(src: Path, dst: Path, overwrite: bool, *, kind: str = "source") -> None:
    """Refuse a ``dst`` that is a file, or a non-empty folder without ``overwrite``, or one holding ``src``.

    Args:
        src: what is imported (a file or folder).
        dst: the dataset folder to create.
        overwrite: whether a non-empty ``dst`` may be replaced.
        kind: what ``src`` is called in the message ("source archive", "source folder").

    Raises:
        DataError: with the reason and what to do instead.
    """
    if dst.exists() and not dst.is_dir():
        raise DataError(f"{dst}: exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()):
        if not overwrite:
            raise DataError(f"{dst}: folder is not empty; choose another destination or pass --overwrite")
        if src.resolve().is_relative_to(dst.resolve()):
            raise DataError(f"{dst}: holds the {kind} {src.name}; choose another destination")


@contextlib.contextmanager
def staging(dst: Path) -> Iterator[Path]:
    """A hidden folder beside ``dst``; on success it replaces ``dst``, on error it is removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private to the owner
        if dst.exists():  # empty, or overwrite was asked for: swap, then delete the old one
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / dst.name)
            try:
                os.replace(tmp, dst)
            except BaseException:
                os.replace(old / dst.name, dst)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_instance_ids(ids: np.ndarray, where: str) -> np.ndarray:
    """``(H, W)`` int32 instance ids after checking they are non-negative whole numbers.

    Args:
        ids: ``(H, W)`` labels of any numeric dtype.
        where: the file (and item) for the message, e.g. ``"train.npz: y[3]"``.

    Raises:
        DataError: non-integer, negative or too large values.
    """
    if ids.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {ids.dtype}; expected integer instance labels")
    if ids.dtype.kind == "f" and not (np.isfinite(ids).all() and np.all(np.mod(ids, 1) == 0)):
        raise DataError(f"{where} holds non-integer values; expected instance ids")
    if ids.size and ids.min() < 0:
        raise DataError(f"{where} holds negative labels (min {ids.min():g}); expected ids >= 0")
    if ids.size and ids.max() > INT32_MAX:
        raise DataError(f"{where} holds ids above {INT32_MAX}, too large for int32 labels")
    return ids.astype(np.int32)


def channel_names_for(channels: int) -> dict[str, str]:
    """dataset.json ``channel_names`` for an image with ``channels`` channels (grey, RGB, RGBA, ...)."""
    names = {1: ["grey"], 2: ["grey", "alpha"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}.get(channels)
    names = names or [f"channel_{c}" for c in range(channels)]
    return {str(c): name for c, name in enumerate(names)}


def fits_png(image: np.ndarray) -> bool:
    """True when ``image`` (H, W[, C]) can be written as PNG without losing values."""
    if image.dtype == np.uint8 or image.dtype == np.bool_:
        return image.ndim == 2 or image.shape[-1] in _PNG_CHANNELS
    return image.dtype == np.uint16 and image.ndim == 2


def fits_png_file(path: Path) -> bool:
    """Whether the image file will fit PNG (see :func:`fits_png`), judged from its header alone: 8-bit
    PNG, JPEG and BMP images and 16-bit grey PNGs do; TIFFs and 16-bit colour PNGs are kept as TIFF."""
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
        return False
    from PIL import Image

    try:
        with Image.open(path) as img:
            rawmode = img.tile[0][3] if img.format == "PNG" and len(img.tile) == 1 else ""
            return (img.mode in _PNG_MODES and not str(rawmode).endswith(";16B")) or img.mode in _PNG16_GREY
    except Exception:  # unreadable: reading it later names the problem
        return True


def file_ending(all_fit_png: bool, max_label: int) -> str:
    """``.png`` when every image fits PNG and label values fit 16 bits, else ``.tif`` (one per dataset,
    as nnU-Net expects)."""
    return ".png" if all_fit_png and max_label <= np.iinfo(np.uint16).max else ".tif"


def check_group_by(pattern: str | None, names: Iterable[str], source: Path) -> int | None:
    """Check a ``--group-by`` regex against the case names and count the groups it makes.

    Args:
        pattern: regex on the case name whose first group (or whole match) is the group key.
        names: the case names.
        source: what is imported, for messages.

    Returns:
        The number of groups, or None without a pattern.

    Raises:
        ConfigError: the regex is invalid, or it matches none of the names (then it groups nothing).
    """
    if not pattern:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--group-by: invalid regex {pattern!r} ({exc})") from None
    names = list(names)
    if names and not any(compiled.search(name) for name in names):
        raise ConfigError(
            f"{source}: --group-by {pattern!r} matches none of the case names (e.g. {names[0]!r})"
        )
    return len({group_of(name, pattern) for name in names})


def write_dataset_json(
    folder: Path,
    *,
    name: str,
    channel_names: Mapping[str, str],
    labels: Mapping[str, int],
    num_training: int,
    ending: str,
    medseg: Mapping[str, Any],
) -> None:
    """Write ``folder/dataset.json`` in the nnU-Net v2 layout with medseg's own section last."""
    write_json_atomic(
        folder / "dataset.json",
        {
            "name": name,
            "channel_names": dict(channel_names),
            "labels": dict(labels),
            "numTraining": num_training,
            "file_ending": ending,
            "medseg": dict(medseg),
        },
    )
