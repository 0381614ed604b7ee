"""Import a Cell Tracking Challenge dataset's segmentation ground truth into the native instance layout.

A CTC dataset folder holds sequences ``01``, ``02``, ... of raw frames ``NN/tNNN.tif`` and, for training
sequences, ground truth ``NN_GT/SEG/man_segNNN.tif`` on some of the frames (see :mod:`medseg.io.ctc`).
Every annotated frame becomes one case ``{NN}_t{frame}``: its raw frame as the image, its SEG mask as
instance ids. Frames of one sequence are near-duplicates, so ``dataset.json`` names the regex that groups
a case by its sequence (``medseg.group_by``) for leakage-free splits (pass it as ``data.group_by``).
The dataset is written to a hidden folder beside the destination and renamed into place only when every
case is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.data.importers.common import (
    channel_names_for,
    check_destination,
    safe_case_name,
    staging,
    write_dataset_json,
)
from medseg.errors import DataError, MedsegError
from medseg.io import read_image, read_label, write_image
from medseg.io.ctc import list_frames

CTC_LABELS = {"background": 0, "cell": 1}
CTC_GROUP_BY = r"^(\d+)_t"  # case "01_t005" belongs to sequence "01"
_SEQUENCE = re.compile(r"\d{2,}")
_KEPT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def import_ctc(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    sequences: Sequence[str | int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the annotated frames of a CTC dataset folder into a native instance dataset.

    Writes ``dataset.json``, ``imagesTr/{NN}_t{frame:03d}_0000.tif`` (the raw frame; one file per channel,
    uint8/uint16/float32 kept, other types as float32) and ``labelsTr/{NN}_t{frame:03d}.tif`` (the SEG mask
    as int32 instance ids, 0 = background, ids kept as annotated).

    Args:
        src: the dataset folder holding ``01/``, ``01_GT/``, ``02/``, ...
        dst: dataset folder to create; it must be missing or empty unless ``overwrite``.
        sequences: which sequences to import (``["01"]``, ``[1, 2]``, ``"01,02"``); default every
            sequence with a ``NN_GT/SEG`` folder.
        overwrite: replace an existing non-empty ``dst``.

    Returns:
        ``dst`` as a Path. Its ``dataset.json`` ``medseg`` section records the command, the (largest)
        image size, the mean number of objects per image, the cases per sequence and ``group_by``.

    Raises:
        DataError: ``src`` is missing, holds no SEG annotations, a SEG frame has no raw frame or another
            size, or ``dst`` is not empty.
        MedsegError: a requested sequence is not a sequence name or is missing.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    names = _sequence_names(src, sequences)
    pairs = _annotated_frames(src, names)
    check_destination(src, dst, overwrite, kind="source folder")
    digits = max(3, len(str(max(frame for _, frame, _, _ in pairs))))
    channels, sizes, objects, per_sequence = None, set(), 0, dict.fromkeys(names, 0)
    with staging(dst) as tmp:
        for name, frame, image_path, seg_path in pairs:
            image, labels = read_image(image_path), read_label(seg_path)
            if labels.shape != image.shape[:2]:
                raise DataError(f"{seg_path}: is {_size(labels)} but {image_path} is {_size(image)}")
            planes = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]
            if channels is None:
                channels = len(planes)
            elif len(planes) != channels:
                raise DataError(
                    f"{image_path}: has {len(planes)} channel(s) but earlier frames have {channels}"
                )
            case = f"{name}_t{frame:0{digits}d}"
            for c, plane in enumerate(planes):
                kept = plane if plane.dtype in _KEPT_DTYPES else plane.astype(np.float32)
                write_image(tmp / "imagesTr" / f"{case}_{c:04d}.tif", kept)
            write_image(tmp / "labelsTr" / f"{case}.tif", labels)
            objects += len(np.unique(labels[labels > 0]))
            sizes.add(labels.shape)
            per_sequence[name] += 1
        source = f"medseg data import ctc {src} {dst}"
        source += f" --sequences {','.join(names)}" if sequences is not None else ""
        height, width = max(sizes)
        write_dataset_json(
            tmp,
            name=safe_case_name(src.resolve().name, "ctc"),
            channel_names=channel_names_for(channels),
            labels=dict(CTC_LABELS),
            num_training=len(pairs),
            ending=".tif",
            medseg={
                "task": "instance",
                "source": source,
                "image_size": [height, width],
                "objects_per_image": round(objects / len(pairs), 3),
                "sequences": {name: n for name, n in per_sequence.items() if n},
                "group_by": CTC_GROUP_BY,
                "notes": [
                    "one case per annotated frame (NN_GT/SEG/man_segNNN.tif); group_by keeps sequences whole"
                ],
            },
        )
    return dst


def _sequence_names(src: Path, sequences: Sequence[str | int] | None) -> list[str]:
    """The sequences to import: the requested ones (checked) or every one with a SEG folder."""
    if sequences is None:
        found = sorted(p.name for p in src.iterdir() if p.is_dir() and _SEQUENCE.fullmatch(p.name))
        with_seg = [name for name in found if (src / f"{name}_GT" / "SEG").is_dir()]
        if not with_seg:
            what = (
                f"sequences {', '.join(found)} have"
                if found
                else "it holds no sequence folders (01, 02, ...) and"
            )
            raise DataError(f"{src}: no segmentation annotations to import: {what} no NN_GT/SEG folder")
        return with_seg
    if isinstance(sequences, str):
        sequences = sequences.split(",")
    elif isinstance(sequences, int):
        sequences = [sequences]
    names = []
    for requested in sequences:
        text = str(requested).strip()
        if not text.isdigit():
            raise MedsegError(f"sequence {requested!r} is not a CTC sequence number like 01 or 2")
        name = text.zfill(2)
        if not (src / name).is_dir():
            raise MedsegError(f"{src / name}: sequence {name} not found")
        if not (src / f"{name}_GT" / "SEG").is_dir():
            raise DataError(
                f"{src / f'{name}_GT' / 'SEG'}: folder not found; sequence {name} has no SEG annotations"
            )
        if name not in names:
            names.append(name)
    return names


def _annotated_frames(src: Path, names: list[str]) -> list[tuple[str, int, Path, Path]]:
    """``(sequence, frame, raw frame path, SEG path)`` of every 2D SEG annotation that has its raw frame."""
    pairs = []
    for name in names:
        seg_dir = src / f"{name}_GT" / "SEG"
        annotated = list_frames(seg_dir, "man_seg")
        if not annotated and any(seg_dir.glob("man_seg_*.tif")):
            raise DataError(
                f"{seg_dir}: holds slices of 3D annotations (man_seg_TTT_ZZZ.tif); only 2D is supported"
            )
        images = dict(list_frames(src / name, "t"))
        for frame, seg_path in annotated:
            if frame not in images:
                raise DataError(
                    f"{seg_path}: no raw frame {frame} in {src / name} (expected t{frame:03d}.tif)"
                )
            pairs.append((name, frame, images[frame], seg_path))
    if not pairs:
        raise DataError(f"{src}: no man_segNNN.tif annotations in {', '.join(f'{n}_GT/SEG' for n in names)}")
    return pairs


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]} (WxH)"
