"""Kaggle run-length encoding of binary masks (UW-Madison GI tract ``train.csv`` and similar).

A mask is written as ``"start length start length ..."``: 1-based start positions over the mask flattened
in row-major (C) order, each followed by the length of the run of foreground pixels it begins; the empty
mask is the empty string. Starts must increase and runs may not overlap or leave the image.

This is not the COCO RLE (column-major, alternating background/foreground counts); that one lives in
:mod:`medseg.data.importers.coco`. NumPy only.
"""

from __future__ import annotations

import re

import numpy as np

from medseg.errors import DataError

_INTEGERS = re.compile(r"\s*-?[0-9]+(?:\s+-?[0-9]+)*\s*", re.ASCII)
_MAX_DIGITS = 18  # every such number fits int64


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a 2D mask, Kaggle style.

    Args:
        mask: ``(H, W)`` mask; any nonzero value is foreground.

    Returns:
        ``"start length ..."`` with 1-based starts over the row-major flattened mask, runs as long as
        possible (adjacent foreground pixels always share one run); ``""`` for an empty mask.

    Raises:
        ValueError: ``mask`` is not 2D.

    >>> rle_encode(np.array([[0, 1, 1], [1, 0, 1]]))
    '2 3 6 1'
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode: expected an (H, W) mask, got shape {mask.shape}")
    padded = np.zeros(mask.size + 2, dtype=np.int8)
    padded[1:-1] = mask.reshape(-1) != 0
    edges = np.flatnonzero(np.diff(padded))  # alternating run starts and ends (0-based, end exclusive)
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.stack([starts + 1, ends - starts], axis=1).reshape(-1)
    return " ".join(map(str, pairs.tolist()))


def rle_decode(text: str, shape: tuple[int, int], source: str = "rle") -> np.ndarray:
    """Decode a Kaggle run-length string into a mask.

    Args:
        text: ``"start length start length ..."`` (1-based starts, row-major); empty or blank = no pixel.
        shape: ``(H, W)`` of the mask.
        source: where ``text`` comes from, for error messages (e.g. ``"train.csv line 7"``).

    Returns:
        ``(H, W)`` bool mask.

    Raises:
        DataError: naming ``source``: an odd number of values, a value that is not a whole number, a
            start below 1, a length below 1, a run past the end of the ``H x W`` image, or runs that
            overlap or are not in increasing order.

    >>> rle_decode("2 3 6 1", (2, 3)).astype(int).tolist()
    [[0, 1, 1], [1, 0, 1]]
    """
    height, width = (int(s) for s in shape)
    size = height * width
    if not _INTEGERS.fullmatch(text):
        if not text.strip():
            return np.zeros((height, width), dtype=bool)
        bad = next(t for t in text.split() if not re.fullmatch(r"-?[0-9]+", t, re.ASCII))
        raise DataError(f"{source}: RLE value {bad[:20]!r} is not a whole number")
    tokens = text.split()
    if len(tokens) % 2:
        raise DataError(f"{source}: RLE has {len(tokens)} values, an odd count; expected start length pairs")
    too_long = next((t for t in tokens if len(t.lstrip("-")) > _MAX_DIGITS), None)
    if too_long is not None:
        raise DataError(f"{source}: RLE value {too_long[:20]}... is too large for a {height}x{width} image")
    numbers = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    starts, lengths = numbers[:, 0] - 1, numbers[:, 1]  # 0-based starts
    _check_runs(starts, lengths, size, height, width, source)
    # Each run adds +1 at its start and -1 at its end; the running sum is 1 inside a run, 0 outside.
    steps = np.bincount(starts, minlength=size + 1) - np.bincount(starts + lengths, minlength=size + 1)
    return (np.cumsum(steps[:size]) > 0).reshape(height, width)


def _check_runs(
    starts: np.ndarray, lengths: np.ndarray, size: int, height: int, width: int, source: str
) -> None:
    """Refuse runs that start before pixel 1, are empty, leave the image, overlap or go backwards."""
    bad = np.flatnonzero(starts < 0)
    if bad.size:
        raise DataError(f"{source}: RLE run {bad[0] + 1} starts at {starts[bad[0]] + 1}; starts must be >= 1")
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        raise DataError(f"{source}: RLE run {bad[0] + 1} has length {lengths[bad[0]]}; lengths must be >= 1")
    ends = starts + lengths  # exclusive
    bad = np.flatnonzero(ends > size)
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{source}: RLE run {i + 1} ({starts[i] + 1} {lengths[i]}) ends at pixel {ends[i]}, past the "
            f"{size} pixels of a {height}x{width} (HxW) image"
        )
    bad = np.flatnonzero(starts[1:] < ends[:-1])
    if bad.size:
        i = bad[0]
        what = "overlaps" if starts[i + 1] > starts[i] else "does not come after"
        raise DataError(
            f"{source}: RLE run {i + 2} (start {starts[i + 1] + 1}) {what} run {i + 1} "
            f"(pixels {starts[i] + 1}..{ends[i]}); runs must be increasing and disjoint"
        )
