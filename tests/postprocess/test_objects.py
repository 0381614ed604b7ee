"""Per-object tables, majority types and counts."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.postprocess.objects import (
    OBJECT_COLUMNS,
    TypingParams,
    assign_types,
    count_objects,
    majority_types,
    object_table,
)
from medseg.postprocess.tuning import tune_typing


def _two_objects() -> np.ndarray:
    instances = np.zeros((20, 30), np.int32)
    instances[2:6, 3:9] = 4  # 4 x 6 rectangle
    instances[10:19, 10:19] = 9  # 9 x 9 square
    return instances


def test_object_table_measures_each_object():
    instances = _two_objects()
    image = np.zeros((20, 30, 3), np.uint8)
    image[instances == 9] = (30, 60, 90)
    rows = object_table(instances, image, {4: "small", 9: "big"})
    assert [r["label"] for r in rows] == [4, 9] and set(rows[0]) == set(OBJECT_COLUMNS)
    small, big = rows
    assert (small["class"], small["area"], big["area"]) == ("small", 24, 81)
    assert (small["centroid_y"], small["centroid_x"]) == (3.5, 5.5)
    assert big["mean_intensity"] == pytest.approx(60.0) and small["mean_intensity"] == 0.0
    assert big["eccentricity"] == pytest.approx(0.0, abs=1e-6) and 0.5 < small["eccentricity"] < 1
    assert object_table(np.zeros((5, 5), np.int32)) == []
    assert object_table(instances)[0]["mean_intensity"] == ""


def test_majority_types_average_probabilities_inside_each_object():
    instances = _two_objects()
    probs = np.zeros((3, 20, 30), np.float32)
    probs[0] = 1.0
    probs[:, 10:19, 10:19] = 0
    probs[2, 10:19, 10:19] = 0.7  # object 9: type 2 on most pixels ...
    probs[1, 10:19, 10:19] = 0.3
    probs[:, 10:12, 10:19] = [[[0.0]], [[1.0]], [[0.0]]]  # ... type 1 on a strip
    means = majority_types(instances, probs)
    assert sorted(means) == [4, 9]
    assert int(means[4].argmax()) == 0 and int(means[9].argmax()) == 2
    np.testing.assert_allclose(means[9].sum(), 1.0, rtol=1e-6)
    assert majority_types(instances, None) == {}
    assert majority_types(np.zeros((3, 3), np.int32), np.ones((2, 3, 3))) == {}


def test_counts_give_the_differential_over_the_chosen_types():
    types = ["red_cell"] * 30 + ["neutrophil"] * 3 + ["lymphocyte"]
    rows = count_objects(
        types, ["red_cell", "neutrophil", "lymphocyte", "monocyte"], ["neutrophil", "lymphocyte", "monocyte"]
    )
    table = {r["class"]: (r["count"], r["percent"]) for r in rows}
    assert table == {
        "red_cell": (30, ""),
        "neutrophil": (3, 75.0),
        "lymphocyte": (1, 25.0),
        "monocyte": (0, 0.0),
        "total": (34, ""),
    }
    untyped = count_objects(["", "", ""])
    assert untyped == [
        {"class": "objects", "count": 3, "percent": ""},
        {"class": "total", "count": 3, "percent": ""},
    ]
    assert count_objects([])[0] == {"class": "objects", "count": 0, "percent": ""}


CLASSES = ["red_cell", "lymphocyte", "monocyte"]
WHITE = ["lymphocyte", "monocyte"]


def _typed_scene() -> tuple[np.ndarray, np.ndarray]:
    """Objects 1+2: a lymphocyte cut in two touching pieces; 3: a red cell; 4: a doubtful monocyte."""
    instances = np.zeros((20, 40), np.int32)
    instances[2:10, 2:8], instances[2:10, 8:10] = 1, 2
    instances[12:18, 2:8] = 3
    instances[2:10, 20:28] = 4
    probs = np.zeros((3, 20, 40), np.float32)
    probs[:, instances == 1] = np.array([[0.1], [0.8], [0.1]])
    probs[:, instances == 2] = np.array([[0.2], [0.5], [0.3]])
    probs[:, instances == 3] = np.array([[0.9], [0.05], [0.05]])
    probs[:, instances == 4] = np.array([[0.35], [0.05], [0.6]])  # white cell at 0.65: doubtful
    return instances, probs


def test_assign_types_merges_touching_fragments_of_one_group_type():
    instances, probs = _typed_scene()
    plain = TypingParams(group_threshold=0.5, merge_touching=False)
    same, types, _ = assign_types(instances, probs, CLASSES, WHITE, plain)
    assert same is instances and types == {1: "lymphocyte", 2: "lymphocyte", 3: "red_cell", 4: "monocyte"}
    merged, types, means = assign_types(instances, probs, CLASSES, WHITE, TypingParams(0.5, True))
    assert set(np.unique(merged).tolist()) == {0, 1, 3, 4} and (merged[instances == 2] == 1).all()
    assert types == {1: "lymphocyte", 3: "red_cell", 4: "monocyte"}
    assert means[1] == pytest.approx((48 * np.array([0.1, 0.8, 0.1]) + 16 * np.array([0.2, 0.5, 0.3])) / 64)
    # a red cell touching a white cell is never merged into it
    instances[10:12, 2:8] = 3
    merged, types, _ = assign_types(instances, probs, CLASSES, WHITE, TypingParams(0.5, True))
    assert types[3] == "red_cell" and (merged == 3).sum() == (instances == 3).sum()


def test_assign_types_group_threshold_decides_membership_before_the_type():
    instances, probs = _typed_scene()
    _, types, _ = assign_types(instances, probs, CLASSES, WHITE, TypingParams(0.7, False))
    assert types[4] == "red_cell"  # 0.65 white-cell probability is below 0.7: the best other type
    assert types[2] == "lymphocyte"  # 0.8 in the group: the group's best type, not the overall argmax
    _, untyped, _ = assign_types(instances, None, CLASSES, WHITE)
    assert untyped == {}
    _, no_group, _ = assign_types(instances, probs, CLASSES, (), TypingParams(0.99, True))
    assert no_group[4] == "monocyte" and len(no_group) == 4  # no group: plain argmax, nothing merged


def test_typing_params_round_trip_and_reject_bad_values():
    params = TypingParams(0.8, False)
    assert TypingParams.from_dict(params.to_dict()) == params
    assert TypingParams.from_dict({}) == TypingParams()
    for bad in ({"group_threshold": 1.5}, {"merge_touching": "yes"}):
        with pytest.raises(ValueError):
            TypingParams.from_dict(bad)


def test_tune_typing_finds_the_rule_that_counts_white_cells_exactly():
    instances, probs = _typed_scene()
    truth = np.zeros_like(instances)
    truth[2:10, 2:10] = 7  # one true lymphocyte; object 4 is a red-cell clump the network doubted
    result = tune_typing([instances], [probs], [truth], CLASSES, WHITE)
    assert result.start_score == 0.0  # default rule: merged lymphocyte + doubtful monocyte = 2 white cells
    assert result.score == 1.0 and result.params.merge_touching and result.params.group_threshold > 0.65
    assert len(result.trials) == 12 and {"exact", "count_error", "f1"} <= set(result.trials[0])
    with pytest.raises(ValueError):
        tune_typing([instances], [probs, probs], [truth], CLASSES, WHITE)
