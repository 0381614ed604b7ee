"""Import a DeepCell npz dataset (DynamicNuclearNet, TissueNet, ...) into the native instance layout.

The archive holds ``X``: ``(N, H, W, C)`` (or ``(N, H, W)``) images and ``y``: ``(N, H, W, 1 | 2)`` integer
instance labels (TissueNet's two label channels are whole cells and nuclei). Arrays are read from the
archive one image at a time, so a multi-gigabyte file imports in bounded memory; the dataset is written to
a hidden folder beside the destination and renamed into place only when every case is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from medseg.data.importers.common import (
    check_case_prefix,
    check_destination,
    check_instance_ids,
    safe_case_name,
    staging,
)
from medseg.errors import DataError, MedsegError
from medseg.io import write_image, write_json_atomic

DEEPCELL_LABELS = {"background": 0, "cell": 1}
_KEPT_DTYPES = (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.uint16))


def import_deepcell(
    src_npz: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    y_channel: int = 0,
    channel_names: Sequence[str] | None = None,
    prefix: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a DeepCell npz archive into a native instance dataset.

    Writes ``dataset.json``, ``imagesTr/{prefix}_{i:04d}_{c:04d}.tif`` (one file per channel of ``X[i]``)
    and ``labelsTr/{prefix}_{i:04d}.tif`` (``y[i, ..., y_channel]`` as int32 instance ids, 0 = background).
    Images keep a float32, uint8 or uint16 dtype; other types become float32 (exact for float64 values
    representable in float32 and for integers below 2**24). All cases go to ``imagesTr``/``labelsTr``:
    the archive's own train/val/test split is its file, so import each file as its own dataset.

    Args:
        src_npz: the ``.npz`` archive with arrays ``X`` and ``y``.
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        y_channel: which channel of ``y`` holds the labels to import (TissueNet: 0 cells, 1 nuclei).
        channel_names: one name per channel of ``X`` (default ``fluorescence`` for one channel, else
            ``channel_0``, ``channel_1``, ...).
        prefix: case name prefix (default: the archive's file name without ``.npz``).
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path. Its ``dataset.json`` ``medseg`` section records the command, the image size
        and the mean number of objects per image.

    Raises:
        DataError: the archive is missing, not an npz, lacks ``X`` or ``y``, their shapes disagree, ``y``
            holds negative or non-integer values, or ``dst`` is not empty.
        MedsegError: ``y_channel``, ``channel_names`` or ``prefix`` do not fit the archive.
    """
    src, dst = Path(src_npz), Path(dst)
    prefix = _case_prefix(src, prefix)
    check_destination(src, dst, overwrite, kind="source archive")
    with _NpzReader(src) as npz:
        images, labels = npz.array("X"), npz.array("y")
        n, height, width, channels = _check_shapes(src, images.shape, labels.shape, y_channel)
        _check_dtypes(src, images.dtype, labels.dtype)
        names = _channel_names(src, channel_names, channels)
        objects = 0
        with staging(dst) as tmp:
            for i, (x, y) in enumerate(zip(images.items(), labels.items())):
                case = f"{prefix}_{i:0{max(4, len(str(n - 1)))}d}"
                x = x.reshape(height, width, channels)
                for c in range(channels):
                    write_image(tmp / "imagesTr" / f"{case}_{c:04d}.tif", _image_plane(src, i, x[..., c]))
                ids = check_instance_ids(y.reshape(height, width, -1)[..., y_channel], f"{src}: y[{i}]")
                objects += len(np.unique(ids)) - (1 if (ids == 0).any() else 0)
                write_image(tmp / "labelsTr" / f"{case}.tif", ids)
            source = f"medseg data import deepcell {src} {dst}"
            source += f" --y-channel {y_channel}" if y_channel else ""
            source += f" --channel-names {','.join(channel_names)}" if channel_names else ""
            source += f" --prefix {prefix}" if prefix != _default_prefix(src) else ""
            dataset = {
                "name": prefix,
                "channel_names": {str(c): name for c, name in enumerate(names)},
                "labels": dict(DEEPCELL_LABELS),
                "numTraining": n,
                "file_ending": ".tif",
                "medseg": {
                    "task": "instance",
                    "source": source,
                    "image_size": [height, width],
                    "objects_per_image": round(objects / n, 3),
                },
            }
            write_json_atomic(tmp / "dataset.json", dataset)
    return dst


class _LazyArray:
    """An array stored in an npz archive, read one item of its first axis at a time, in order."""

    def __init__(
        self,
        src: Path,
        key: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        stream: IO[bytes] | None = None,
        whole: np.ndarray | None = None,
    ) -> None:
        self.src, self.key, self.shape, self.dtype = src, key, shape, dtype
        self._stream, self._whole = stream, whole

    def items(self) -> Iterator[np.ndarray]:
        """Yield ``array[0]``, ``array[1]``, ...; a truncated archive raises DataError."""
        if self._whole is not None:
            yield from self._whole
            return
        nbytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        for i in range(self.shape[0]):
            try:
                data = self._stream.read(nbytes)
            except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:  # bad CRC, broken deflate
                raise DataError(f"{self.src}: cannot read {self.key}[{i}] ({exc})") from exc
            if len(data) != nbytes:
                raise DataError(f"{self.src}: array {self.key!r} is truncated at item {i}")
            yield np.frombuffer(data, self.dtype).reshape(self.shape[1:])


class _NpzReader(contextlib.AbstractContextManager):
    """Open an npz archive and give :class:`_LazyArray` views of its arrays (no pickled objects)."""

    def __init__(self, src: Path) -> None:
        if not src.is_file():
            raise DataError(f"{src}: file not found")
        self.src = src
        try:
            self._zip = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(
                f"{src}: not an npz archive ({exc}); expected np.savez output with X and y"
            ) from exc
        self._members = {name.removesuffix(".npy"): name for name in self._zip.namelist()}
        self._streams: list[IO[bytes]] = []

    def array(self, key: str) -> _LazyArray:
        """The array stored under ``key``."""
        if key not in self._members:
            found = ", ".join(repr(k) for k in sorted(self._members)) or "nothing"
            raise DataError(f"{self.src}: missing key {key!r} (the archive holds {found})")
        try:
            stream = self._zip.open(self._members[key])
            self._streams.append(stream)
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                shape, fortran_order, dtype = (), True, None  # rare header versions: let np.load parse
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{self.src}: cannot read array {key!r} ({exc})") from exc
        if dtype is not None and dtype.hasobject:
            raise DataError(f"{self.src}: {key!r} holds Python objects, not numbers")
        if fortran_order and len(shape) != 1:
            return self._load_whole(key)
        return _LazyArray(self.src, key, tuple(shape), dtype, stream=stream)

    def _load_whole(self, key: str) -> _LazyArray:
        """Column-major or unusual arrays cannot be streamed item by item: read the whole array."""
        try:
            with np.load(self.src, allow_pickle=False) as npz:
                whole = npz[key]
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{self.src}: cannot read array {key!r} ({exc})") from exc
        return _LazyArray(self.src, key, whole.shape, whole.dtype, whole=whole)

    def __exit__(self, *exc_info: object) -> None:
        for stream in self._streams:
            stream.close()
        self._zip.close()


def _default_prefix(src: Path) -> str:
    return safe_case_name(src.stem)


def _case_prefix(src: Path, prefix: str | None) -> str:
    return _default_prefix(src) if prefix is None else check_case_prefix(prefix)


def _check_shapes(
    src: Path, x_shape: tuple[int, ...], y_shape: tuple[int, ...], y_channel: int
) -> tuple[int, int, int, int]:
    """``(N, H, W, C)`` of the images, after checking that ``X``, ``y`` and ``y_channel`` agree."""
    if len(x_shape) not in (3, 4):
        hint = " (a time-lapse tracking archive is not supported)" if len(x_shape) == 5 else ""
        raise DataError(f"{src}: X has shape {x_shape}; expected (N, H, W, C) or (N, H, W){hint}")
    if len(y_shape) not in (3, 4):
        raise DataError(f"{src}: y has shape {y_shape}; expected (N, H, W, 1), (N, H, W, 2) or (N, H, W)")
    if x_shape[:3] != y_shape[:3]:
        raise DataError(f"{src}: X has shape {x_shape} but y has shape {y_shape}; N, H and W must agree")
    if 0 in x_shape or (len(y_shape) == 4 and y_shape[3] == 0):
        raise DataError(f"{src}: X {x_shape} or y {y_shape} holds no data")
    y_channels = y_shape[3] if len(y_shape) == 4 else 1
    if not 0 <= y_channel < y_channels:
        raise MedsegError(f"{src}: y has {y_channels} channel(s); --y-channel {y_channel} does not exist")
    return (*x_shape[:3], x_shape[3] if len(x_shape) == 4 else 1)


def _check_dtypes(src: Path, x_dtype: np.dtype, y_dtype: np.dtype) -> None:
    if x_dtype.kind not in "biuf":
        raise DataError(f"{src}: X has dtype {x_dtype}; expected numbers")
    if y_dtype.kind not in "biuf":
        raise DataError(f"{src}: y has dtype {y_dtype}; expected integer instance labels")


def _channel_names(src: Path, names: Sequence[str] | None, channels: int) -> list[str]:
    if names is None:
        return ["fluorescence"] if channels == 1 else [f"channel_{c}" for c in range(channels)]
    names = [str(name) for name in names]
    if len(names) != channels:
        raise MedsegError(f"{src}: X has {channels} channel(s) but {len(names)} channel name(s) were given")
    return names


def _image_plane(src: Path, i: int, plane: np.ndarray) -> np.ndarray:
    """``(H, W)`` image of one channel in a dtype the dataset keeps (float32, uint8 or uint16)."""
    if plane.dtype.kind == "f" and not np.isfinite(plane).all():
        raise DataError(f"{src}: X[{i}] holds NaN or infinite values")
    if plane.dtype in _KEPT_DTYPES:
        return plane
    return plane.astype(np.uint8 if plane.dtype == np.bool_ else np.float32)
