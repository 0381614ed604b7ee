"""Tests for the Kaggle run-length codec (1-based starts, row-major pixels)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import DataError
from medseg.io.rle import rle_decode, rle_encode


def _loop_encode(mask: np.ndarray) -> str:
    """Reference encoder written pixel by pixel: walk the rows in order, open a run at each foreground
    pixel after a background one, close it at the next background pixel."""
    pairs, start = [], None
    pixels = [bool(v) for row in mask.tolist() for v in row] + [False]
    for index, on in enumerate(pixels):
        if on and start is None:
            start = index
        elif not on and start is not None:
            pairs += [start + 1, index - start]
            start = None
    return " ".join(map(str, pairs))


def test_hand_written_example() -> None:
    # Pixels numbered 1..12 along the rows of a 3x4 image; "2 3 7 1 12 1" is 2,3,4 then 7 then 12.
    expected = np.array(
        [
            [0, 1, 1, 1],
            [0, 0, 1, 0],
            [0, 0, 0, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(rle_decode("2 3 7 1 12 1", (3, 4)), expected)
    assert rle_encode(expected) == "2 3 7 1 12 1"
    # A run wraps from the end of one row to the start of the next (row-major, not column-major).
    wrapped = rle_decode("4 2", (3, 4))
    assert wrapped[0, 3] and wrapped[1, 0] and wrapped.sum() == 2
    assert rle_encode(np.array([[0, 0, 0, 5], [7, 0, 0, 0]])) == "4 2"  # any nonzero is foreground


def test_decode_returns_bool_of_requested_shape() -> None:
    mask = rle_decode("1 1", (2, 5))
    assert mask.dtype == np.bool_ and mask.shape == (2, 5) and mask.sum() == 1
    assert not rle_decode("", (3, 2)).any() and rle_decode("  ", (3, 2)).shape == (3, 2)
    assert rle_decode(" 1  2\t4 1\n", (2, 3)).tolist() == [[True, True, False], [True, False, False]]


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 7), bool),
        np.ones((5, 7), bool),
        np.eye(1, 35, 0, dtype=bool).reshape(5, 7),  # first pixel only
        np.eye(1, 35, 34, dtype=bool).reshape(5, 7),  # last pixel only
        np.eye(1, 35, 17, dtype=bool).reshape(5, 7),
        np.ones((1, 1), bool),
        np.zeros((1, 1), bool),
    ],
    ids=["empty", "full", "first", "last", "middle", "1x1-on", "1x1-off"],
)
def test_edge_masks_round_trip(mask: np.ndarray) -> None:
    text = rle_encode(mask)
    assert text == _loop_encode(mask)
    np.testing.assert_array_equal(rle_decode(text, mask.shape), mask)


def test_random_masks_round_trip(rng: np.random.Generator) -> None:
    for _ in range(40):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        mask = rng.random(shape) < rng.uniform(0.05, 0.95)
        text = rle_encode(mask)
        assert text == _loop_encode(mask)
        np.testing.assert_array_equal(rle_decode(text, shape), mask)


def test_random_strings_round_trip(rng: np.random.Generator) -> None:
    height, width = 31, 23
    for _ in range(40):
        runs, position = [], 1
        while True:  # canonical: runs at least one pixel apart, so none merge on re-encoding
            position += int(rng.integers(0 if not runs else 1, 30))
            length = int(rng.integers(1, 40))
            if position + length - 1 > height * width or len(runs) >= 20:
                break
            runs += [position, length]
            position += length
        text = " ".join(map(str, runs))
        assert rle_encode(rle_decode(text, (height, width))) == text


def test_adjacent_runs_are_accepted_and_merge() -> None:
    mask = rle_decode("1 2 3 1", (2, 3))
    assert mask.tolist() == [[True, True, True], [False, False, False]]
    assert rle_encode(mask) == "1 3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 2 5", r"3 values, an odd count"),
        ("1 2.5", r"value '2\.5' is not a whole number"),
        ("1 two", r"value 'two' is not a whole number"),
        ("1 +2", r"value '\+2' is not a whole number"),
        ("0 3", r"run 1 starts at 0; starts must be >= 1"),
        ("-4 3", r"run 1 starts at -4"),
        ("3 1 5 0", r"run 2 has length 0; lengths must be >= 1"),
        ("10 3", r"run 1 \(10 3\) ends at pixel 12, past the 11 pixels of a 1x11 \(HxW\) image"),
        ("12 1", r"ends at pixel 12, past the 11 pixels"),
        ("1 4 3 2", r"run 2 \(start 3\) overlaps run 1 \(pixels 1\.\.4\)"),
        ("6 2 2 1", r"run 2 \(start 2\) does not come after run 1"),
        ("5 1 5 1", r"run 2 \(start 5\) does not come after run 1"),
        ("1 123456789012345678901234", r"too large"),
    ],
)
def test_malformed_strings_name_the_source(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        rle_decode(text, (1, 11), source="train.csv line 9")
    assert str(info.value).startswith("train.csv line 9: ") and "\n" not in str(info.value)


def test_encode_refuses_non_2d() -> None:
    with pytest.raises(ValueError, match=r"\(H, W\) mask"):
        rle_encode(np.zeros((2, 3, 3), bool))


def test_large_mask_round_trips(rng: np.random.Generator) -> None:
    mask = rng.random((512, 512)) < 0.5  # ~65k runs: a per-pixel Python loop would be far slower
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)
