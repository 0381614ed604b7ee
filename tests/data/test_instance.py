"""Instance datasets: discovery, sidecar types, checks, and training targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.data.dataset import check_dataset, load_instances, open_dataset
from medseg.data.instance import InstanceTargets, type_lookup
from medseg.errors import DataError
from medseg.io import write_image


def _instance_dataset(root: Path, *, types: dict | None = None) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    image = np.zeros((32, 32), np.uint16)
    ids = np.zeros((32, 32), np.int32)
    ids[4:12, 4:12], ids[16:28, 10:20] = 3, 7
    write_image(root / "imagesTr" / "a_0000.tif", image)
    write_image(root / "labelsTr" / "a.tif", ids)
    if types is not None:
        (root / "labelsTr" / "a.json").write_text(json.dumps(types))
    meta = {
        "channel_names": {"0": "dapi"},
        "labels": {"background": 0, "nucleus": 1},
        "file_ending": ".tif",
        "medseg": {"task": "instance", "instance_classes": ["round", "long"], "differential": ["round"]},
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_instance_dataset_reads_ids_and_types(tmp_path: Path):
    root = _instance_dataset(tmp_path / "d", types={"3": "round", "7": "long"})
    data = open_dataset(root)
    assert data.task == "instance" and data.instance_classes == ["round", "long"]
    assert data.differential == ["round"]
    (case,) = data.cases
    assert case.instances == case.label == root / "labelsTr" / "a.tif"
    ids, types = load_instances(case, (32, 32))
    assert ids.dtype == np.int32 and set(np.unique(ids)) == {0, 3, 7}
    assert types == {3: "round", 7: "long"}
    report = check_dataset(root)
    assert report.ok, report.problems
    assert report.summary["objects"] == {"long": 1, "round": 1}
    assert set(report.summary["class_fractions"]) == {"background", "nucleus"}


def test_instance_checks_name_the_sidecar(tmp_path: Path):
    root = _instance_dataset(tmp_path / "d", types={"3": "square"})
    problems = check_dataset(root).problems
    assert any("a.json" in p and "square" in p for p in problems)
    assert any("a.json" in p and "instances [7] have no type" in p for p in problems)
    (root / "labelsTr" / "a.json").write_text("[1, 2]")
    assert any("a.json: expected a JSON object" in p for p in check_dataset(root).problems)
    with pytest.raises(DataError, match="label is 32x32 but a_0000.tif is 16x16"):
        load_instances(open_dataset(root).cases[0], (16, 16))


def test_blood_phantom_carries_instances_beside_its_classes(blood_dataset: Path):
    data = open_dataset(blood_dataset)
    assert data.task == "semantic" and data.instance_classes[0] == "red_cell"
    assert "neutrophil" in data.differential and "red_cell" not in data.differential
    case = data.cases[0]
    assert case.label.parent.name == "labelsTr" and case.instances.parent.name == "instancesTr"
    ids, types = load_instances(case)
    assert set(types) == set(np.unique(ids).tolist()) - {0}


def test_type_lookup_maps_ids_to_class_indices():
    lookup = type_lookup({2: "b", 5: "a"}, ["a", "b"])
    np.testing.assert_array_equal(lookup, [-1, -1, 1, -1, -1, 0])
    with pytest.raises(DataError, match="x.json: instance type 'c' is not one of"):
        type_lookup({1: "c"}, ["a", "b"], "x.json")


def test_instance_targets_stack_distances_fgbg_and_types():
    ids = np.zeros((40, 40), np.int32)
    ids[5:20, 5:20], ids[20:35, 8:30] = 1, 2
    make = InstanceTargets([np.array([-1, 1, 0], np.int32), None])
    target = make(ids, 0)
    assert target.shape == (4, 40, 40) and target.dtype == np.float32
    inner, outer, fgbg, types = target
    assert inner[ids == 0].max() == 0 and outer[ids == 0].max() == 0
    assert 0 < inner.max() <= 1 and 0 < outer.max() <= 1
    assert inner[12, 12] > inner[6, 6]  # peaks towards the centre
    np.testing.assert_array_equal(fgbg, (ids > 0).astype(np.float32))
    assert set(np.unique(types[ids == 1])) == {1} and set(np.unique(types[ids == 2])) == {0}
    assert set(np.unique(types[ids == 0])) == {-1}
    assert set(np.unique(make(ids, 1)[3])) == {-1}  # untyped case
    assert make.full(ids, 0) is make.full(ids, 0)  # cached
    boundary = InstanceTargets([None], boundary=True)(ids, 0)[2]
    assert set(np.unique(boundary)) == {0, 1, 2}
