"""Per-object tables, majority types and counts."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.postprocess.objects import OBJECT_COLUMNS, count_objects, majority_types, object_table


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
