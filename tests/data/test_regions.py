"""Region labels: parsing dataset.json, membership, and decoding sigmoid outputs into mask values."""

import itertools

import numpy as np
import pytest

from medseg.data.regions import Regions, parse_region_labels

BITMASK = {"large_bowel": [1, 3, 5, 7], "small_bowel": [2, 3, 6, 7], "stomach": [4, 5, 6, 7]}
BRATS = {"whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": [3]}


def test_parse_region_labels_gives_class_ids_in_file_order():
    ids, regions = parse_region_labels({"background": 0, **BITMASK}, "dataset.json")
    assert ids == {"background": 0, "large_bowel": 1, "small_bowel": 2, "stomach": 3}
    assert regions.to_mapping() == BITMASK
    assert parse_region_labels({"background": 0, "cell": 1}, "x") == ({"background": 0, "cell": 1}, None)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"background": 0, "a": [1], "b": 2}, "'b' is 2"),
        ({"a": [1], "b": [2]}, "background entry"),
        ({"background": 0, "a": []}, "must list integer mask values"),
        ({"background": 0, "a": [1.5]}, "must list integer mask values"),
        ({"background": 0, "a": [0, 1]}, "1..65535"),
    ],
)
def test_malformed_region_labels_name_the_file(labels, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_region_labels(labels, "ds/dataset.json")
    assert str(info.value).startswith("ds/dataset.json: ")


def test_members_of_a_bitmask_and_unknown_values():
    regions = Regions.from_mapping(BITMASK)
    mask = np.array([[0, 1, 2, 3], [4, 5, 7, 255]])
    members = regions.members(mask)
    assert members.shape == (3, 2, 4)
    expected = np.array([[(v >> bit) & 1 for v in mask.ravel()] for bit in range(3)], bool).reshape(3, 2, 4)
    expected[:, 1, 3] = False  # 255 (an ignore label) is in no region
    np.testing.assert_array_equal(members, expected)


def test_encode_thresholds_a_bitmask_at_one_half():
    regions = Regions.from_mapping(BITMASK)
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0, 1, (3, 17, 9)).astype(np.float32)
    expected = ((probabilities > 0.5) * np.array([1, 2, 4])[:, None, None]).sum(axis=0)
    np.testing.assert_array_equal(regions.encode(probabilities, rows=4), expected)
    assert regions.encode(probabilities).dtype == np.uint8


def test_encode_of_nested_regions_never_yields_an_impossible_combination():
    regions = Regions.from_mapping(BRATS)
    grid = np.array(list(itertools.product([0.05, 0.3, 0.6, 0.95], repeat=3)), np.float32).T  # (3, 64)
    values = regions.encode(grid[:, None, :])[0]
    assert set(values.tolist()) <= {0, 1, 2, 3}
    # enhancing sure, the rest unsure: the most probable consistent answer keeps the whole nest
    assert regions.encode(np.array([0.6, 0.6, 0.95], np.float32)[:, None, None])[0, 0] == 3
    assert regions.encode(np.array([0.95, 0.1, 0.9], np.float32)[:, None, None])[0, 0] == 1
    # a bruteforce MAP over the stored values agrees everywhere
    table = regions.table
    p = np.clip(grid, 1e-6, 1 - 1e-6)
    loglik = table.astype(float) @ np.log(p) + (~table).astype(float) @ np.log1p(-p)
    np.testing.assert_array_equal(values, regions.mask_values[loglik.argmax(axis=0)])


def test_lookup_and_mask_values():
    regions = Regions.from_mapping(BRATS)
    assert regions.mask_values.tolist() == [0, 1, 2, 3]
    assert regions.lookup().tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_counts_give_each_region_every_pixel_it_holds():
    regions = Regions.from_mapping(BITMASK)
    mask = np.array([[0, 1, 3, 3], [7, 4, 0, 2]], np.uint8)
    assert regions.counts(mask, rows=1).tolist() == [2, 4, 4, 2]  # background, large, small, stomach
    assert regions.dtype is np.uint8
    assert Regions.from_mapping({"a": [300]}).dtype is np.uint16
