"""Import Cellpose ``*_seg.npy`` annotations into the native instance layout.

Cellpose's GUI and ``io.masks_flows_to_seg`` save one ``IMAGE_seg.npy`` per image: ``np.save`` of a dict
(``masks`` instance ids, ``outlines``, ``filename``, ``flows``, ``chan_choose``, ``ismanual``,
``diameter``, ...), which NumPy stores as a pickle. Unpickling runs whatever the file names, so these
files are read with :class:`SafeSegUnpickler`, which can build NumPy arrays, dtypes and scalars and
Python containers, and nothing else (see there why that is safe).

The image of each ``IMAGE_seg.npy`` is the sibling file ``IMAGE.<ext>`` in the same folder, else the
file the ``filename`` key names (by its base name in the same folder, then as the path written).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.importers.common import (
    channel_names_for,
    check_destination,
    check_group_by,
    check_instance_ids,
    safe_case_name,
    staging,
    unique_case_names,
    write_dataset_json,
)
from medseg.errors import DataError
from medseg.io import IMAGE_SUFFIXES, read_image, write_image

CELLPOSE_LABELS = {"background": 0, "cell": 1}
SEG_SUFFIX = "_seg.npy"


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a seg file's pickle may name: NumPy's array, dtype and scalar rebuilders
    (under their NumPy 1 and NumPy 2 module names) and a few plain builtin types."""
    try:
        from numpy._core import multiarray, numeric  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "complex"): complex,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "bytearray"): bytearray,
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeSegUnpickler(pickle.Unpickler):
    """Unpickle NumPy data (arrays, dtypes, scalars, dicts, lists, strings, numbers) and nothing else.

    Why this is safe: a pickle can only run code by naming a callable (the GLOBAL / STACK_GLOBAL and
    extension-registry opcodes, all of which go through :meth:`find_class`) and then calling it (REDUCE,
    NEWOBJ, BUILD -> ``__setstate__``). ``find_class`` here returns objects from a fixed table and never
    imports anything, so the only callables a file can reach are ``ndarray``/``dtype`` constructors and
    ``_reconstruct``/``scalar``/``_frombuffer``, which allocate arrays and copy bytes into them, and a few
    builtin container types; none of them touches files, imports modules or evaluates code, whatever
    arguments it is given. Object arrays can nest further pickled values, which pass through the same
    ``find_class``. ``persistent_load`` is not defined, so persistent ids are refused too.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed NumPy or builtin callable; refuse everything else."""
        if SafeSegUnpickler._ALLOWED is None:
            SafeSegUnpickler._ALLOWED = _numpy_globals()
        try:
            return SafeSegUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def load_seg_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Cellpose ``*_seg.npy`` file without running code from it.

    Args:
        path: the ``_seg.npy`` file.

    Returns:
        Its dict (``masks``, ``filename``, ...). A plain ``.npy`` array (not a dict) comes back as
        ``{"masks": array}``.

    Raises:
        DataError: the file is missing, not a ``.npy`` file, names anything but NumPy data, or does not
            hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version in ((2, 0), (3, 0)):
                _, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            if not dtype.hasobject:
                return {"masks": np.load(path, allow_pickle=False)}
            # np.save wrote a 0-d object array holding the dict: the rest of the file is its pickle
            loaded = SafeSegUnpickler(stream, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: not plain Cellpose data ({exc})") from None
    except (ValueError, OSError, EOFError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(
            f"{path}: cannot read .npy file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    if isinstance(loaded, np.ndarray) and loaded.dtype.hasobject and loaded.size == 1:
        loaded = loaded.reshape(()).item()
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: holds {type(loaded).__name__}, not a Cellpose seg dict")
    return loaded


def import_cellpose(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    group_by: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a folder of Cellpose ``*_seg.npy`` files (and their images) into a native instance dataset.

    Writes ``imagesTr/{case}_0000.tif`` (the image as stored: all channels, its dtype) and
    ``labelsTr/{case}.tif`` (``masks`` as int32 instance ids), where the case is the image's stem made
    safe for file names. TIFF keeps 16-bit and multi-channel microscopy images as they are.

    Args:
        src: a folder holding ``*_seg.npy`` files (not searched recursively), or one such file.
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        group_by: regex on the case name whose first group keeps related images together in splits;
            recorded as ``medseg.group_by`` in dataset.json.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path; dataset.json's ``medseg`` section records the command and objects per image.

    Raises:
        DataError: no seg files, a seg file that is unsafe or malformed or lacks ``masks``, 3D masks,
            an image that cannot be found, or masks whose size differs from the image's.
        ConfigError: ``group_by`` is not a valid regex or matches no case name.
    """
    src, dst = Path(src), Path(dst)
    seg_files = _seg_files(src)
    images = {seg: _find_image(seg) for seg in seg_files}
    cases = unique_case_names((safe_case_name(image.stem), seg) for seg, image in images.items())
    groups = check_group_by(group_by, cases, src)
    check_destination(src, dst, overwrite, kind="source")
    objects = 0
    channels: dict[int, Path] = {}
    with staging(dst) as tmp:
        for case, seg in cases.items():
            image_path = images[seg]
            masks = _masks(seg, load_seg_file(seg))
            image = read_image(image_path)
            if masks.shape != image.shape[:2]:
                raise DataError(
                    f"{seg}: masks are {masks.shape[1]}x{masks.shape[0]} but image {image_path} is "
                    f"{image.shape[1]}x{image.shape[0]} (WxH)"
                )
            channels.setdefault(1 if image.ndim == 2 else image.shape[-1], image_path)
            objects += len(np.unique(masks)) - (1 if (masks == 0).any() else 0)
            write_image(tmp / "imagesTr" / f"{case}_0000.tif", image)
            write_image(tmp / "labelsTr" / f"{case}.tif", masks)
        if len(channels) > 1:
            shown = ", ".join(f"{path} has {c}" for c, path in sorted(channels.items()))
            raise DataError(f"{src}: images disagree on channel count ({shown})")
        medseg: dict = {
            "task": "instance",
            "source": f"medseg data import cellpose {src} {dst}"
            + (f" --group-by '{group_by}'" if group_by else ""),
            "objects_per_image": round(objects / len(cases), 3),
        }
        notes = ["images found beside each _seg.npy file (or by its 'filename' key)"]
        if group_by:
            medseg["group_by"] = group_by
            notes.append(f"{groups} groups by --group-by '{group_by}'")
        medseg["notes"] = notes
        write_dataset_json(
            tmp,
            name=safe_case_name((src if src.is_dir() else src.parent).resolve().name, "cellpose"),
            channel_names=channel_names_for(next(iter(channels))),
            labels=dict(CELLPOSE_LABELS),
            num_training=len(cases),
            ending=".tif",
            medseg=medseg,
        )
    return dst


def _seg_files(src: Path) -> list[Path]:
    if src.is_file():
        if not src.name.endswith(SEG_SUFFIX):
            raise DataError(f"{src}: not a Cellpose {SEG_SUFFIX} file")
        return [src]
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    found = sorted(
        f for f in src.iterdir() if f.is_file() and f.name.endswith(SEG_SUFFIX) and not f.name.startswith(".")
    )
    if not found:
        raise DataError(f"{src}: no Cellpose *{SEG_SUFFIX} files")
    return found


def _find_image(seg: Path) -> Path:
    """The image a seg file belongs to (see the module docstring for the search order)."""
    stem = seg.name[: -len(SEG_SUFFIX)]
    siblings = [
        seg.with_name(stem + suffix) for suffix in _suffixes() if seg.with_name(stem + suffix).is_file()
    ]
    if len(siblings) == 1:
        return siblings[0]
    named = _filename_key(seg)
    if siblings:  # several files share the stem: the seg file's own record decides
        match = [s for s in siblings if named is not None and s.name == Path(named).name]
        if len(match) == 1:
            return match[0]
        raise DataError(f"{seg}: several images could be its image: {', '.join(s.name for s in siblings)}")
    if named:
        for candidate in (seg.with_name(Path(named).name), Path(named)):
            if candidate.is_file() and candidate.suffix.lower() in IMAGE_SUFFIXES:
                return candidate
    raise DataError(
        f"{seg}: image not found (looked for {stem}.png/.tif/... beside it"
        + (f" and for {named}" if named else "")
        + ")"
    )


def _suffixes() -> Sequence[str]:
    return [*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)]


def _filename_key(seg: Path) -> str | None:
    name = load_seg_file(seg).get("filename")
    return name if isinstance(name, str) and name.strip() else None


def _masks(seg: Path, data: dict) -> np.ndarray:
    """``(H, W)`` int32 instance ids from a seg dict."""
    if "masks" not in data:
        raise DataError(f"{seg}: no 'masks' key (found {', '.join(map(str, data)) or 'nothing'})")
    masks = data["masks"]
    if not isinstance(masks, np.ndarray):
        raise DataError(f"{seg}: 'masks' is {type(masks).__name__}, not an array")
    masks = np.squeeze(masks)
    if masks.ndim != 2:
        raise DataError(f"{seg}: 'masks' has shape {masks.shape}; only 2D masks are supported (no Z stacks)")
    return check_instance_ids(masks, f"{seg}: 'masks'")
