import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import tiny_config

from medseg.config import load_config
from medseg.data.classification import ClassificationDataset, ClassificationItem
from medseg.data.dataset import check_dataset
from medseg.data.splits import (
    assign_folds,
    group_of,
    kfold_split,
    make_split,
    split_cases,
    suggest_group_by,
)
from medseg.errors import ConfigError
from medseg.io import write_image

PATIENTS = [f"patient{p}_slice{s}" for p in range(7) for s in range(1 + p % 3)]  # groups of 1-3 cases
BY_PATIENT = r"^(patient\d+)_"


def test_split_is_deterministic_and_order_independent():
    names = [f"case{i}" for i in range(20)]
    a = make_split(names, val_fraction=0.25, seed=1)
    b = make_split(list(reversed(names)), val_fraction=0.25, seed=1)
    assert a == b
    assert len(a["val"]) == 5
    assert set(a["train"]) | set(a["val"]) == set(names)
    assert not set(a["train"]) & set(a["val"])
    assert make_split(names, val_fraction=0.25, seed=2)["val"] != a["val"]


def test_groups_never_straddle():
    names = [f"patient{p}_slice{s}" for p in range(7) for s in range(5)]
    for seed in range(10):
        split = make_split(names, val_fraction=0.3, seed=seed, group_by=r"^(patient\d+)_")
        train_groups = {group_of(n, r"^(patient\d+)_") for n in split["train"]}
        val_groups = {group_of(n, r"^(patient\d+)_") for n in split["val"]}
        assert not train_groups & val_groups
        assert val_groups and train_groups


def test_group_of_whole_match_and_no_match():
    assert group_of("a12_b", r"a\d+") == "a12"
    assert group_of("zzz", r"a\d+") == "zzz"
    assert group_of("x", "") == "x"


def test_zero_val_fraction_and_single_case():
    assert make_split(["a", "b"], val_fraction=0.0)["val"] == []
    assert make_split(["a"], val_fraction=0.5)["train"] == ["a"]


@pytest.mark.parametrize("group_by", ["", BY_PATIENT])
def test_kfold_covers_every_case_once_and_train_is_the_rest(group_by: str):
    folds = 3
    vals = []
    for fold in range(folds):
        split = kfold_split(PATIENTS, folds=folds, fold=fold, seed=4, group_by=group_by)
        assert split["val"], f"fold {fold} is empty"
        assert sorted(split["train"] + split["val"]) == sorted(PATIENTS)
        assert not set(split["train"]) & set(split["val"])
        assert all(split["fold_of"][name] == fold for name in split["val"])
        vals.append(split["val"])
    every = [name for val in vals for name in val]
    assert sorted(every) == sorted(PATIENTS) and len(every) == len(set(every))


def test_kfold_groups_never_straddle_folds():
    for seed in range(8):
        fold_of = assign_folds(PATIENTS, folds=3, seed=seed, group_by=BY_PATIENT)
        by_group: dict[str, set[int]] = {}
        for name, fold in fold_of.items():
            by_group.setdefault(group_of(name, BY_PATIENT), set()).add(fold)
        assert len(by_group) == 7
        assert all(len(folds) == 1 for folds in by_group.values())


def test_kfold_balances_case_counts():
    # ungrouped: fold sizes differ by at most one
    sizes = np.bincount(list(assign_folds([f"c{i}" for i in range(23)], folds=5, seed=1).values()))
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 23
    # groups of 4, 3, 2, 1 cases: largest first into the lightest fold gives 4+1 and 3+2 for every seed
    names = [f"g{g}_{i}" for g, n in enumerate((4, 3, 2, 1)) for i in range(n)]
    for seed in range(5):
        fold_of = assign_folds(names, folds=2, seed=seed, group_by=r"^(g\d)_")
        assert sorted(np.bincount(list(fold_of.values())).tolist()) == [5, 5]
        assert fold_of["g0_0"] == fold_of["g3_0"] != fold_of["g1_0"] == fold_of["g2_0"]


def test_kfold_is_deterministic_order_independent_and_seeded():
    names = [f"case{i}" for i in range(30)]
    a = kfold_split(names, folds=5, fold=1, seed=7)
    assert a == kfold_split(list(reversed(names)), folds=5, fold=1, seed=7)
    assert a["val"] != kfold_split(names, folds=5, fold=1, seed=8)["val"]


def test_kfold_errors_are_config_errors():
    names = [f"case{i}" for i in range(6)]
    with pytest.raises(ConfigError, match="data.fold: must be in"):
        kfold_split(names, folds=3, fold=3)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        assign_folds(names, folds=1)
    with pytest.raises(ConfigError, match="need at least 4 groups, found 3"):
        assign_folds([f"p{i % 3}_{i}" for i in range(6)], folds=4, group_by=r"^(p\d)_")
    with pytest.raises(ConfigError, match="invalid regex"):
        assign_folds(names, folds=2, group_by="(")


def test_split_cases_kinds_and_record():
    auto = split_cases(PATIENTS, group_by=BY_PATIENT, seed=3)
    assert auto["split"] == "group" and auto["group_by"] == BY_PATIENT
    assert auto["val"] == make_split(PATIENTS, seed=3, group_by=BY_PATIENT)["val"]
    assert split_cases(PATIENTS, seed=3)["split"] == "random"
    random = split_cases(PATIENTS, kind="random", group_by=BY_PATIENT, seed=3)
    assert random["split"] == "random" and random["groups"] == {n: n for n in PATIENTS}
    kfold = split_cases(PATIENTS, kind="kfold", folds=3, fold=2, seed=3, group_by=BY_PATIENT)
    assert (kfold["split"], kfold["folds"], kfold["fold"]) == ("kfold", 3, 2)
    assert kfold["val"] == kfold_split(PATIENTS, folds=3, fold=2, seed=3, group_by=BY_PATIENT)["val"]
    json.dumps(kfold)  # the record is what splits.json holds
    with pytest.raises(ConfigError, match="data.split=group: nothing to group by; set data.group_by"):
        split_cases(PATIENTS, kind="group")
    with pytest.raises(ConfigError, match="data.split: 'bogus' is not one of"):
        split_cases(PATIENTS, kind="bogus")


def test_classification_split_matches_the_dataset_split(tmp_path: Path):
    """Explicit groups (a CSV's group column) give the split ClassificationDataset.split always gave."""
    items = [ClassificationItem(tmp_path / f"img{i}.png", i % 2, f"smear{i % 4}") for i in range(12)]
    data = ClassificationDataset(tmp_path, "csv", ["a", "b"], items, tmp_path / "x.csv")
    names = [item.path.name for item in items]
    groups = {name: item.group for name, item in zip(names, items)}
    for seed in range(4):
        old = data.split(val_fraction=0.3, seed=seed)
        new = split_cases(names, val_fraction=0.3, seed=seed, groups=groups)
        assert new["split"] == "group"
        assert sorted(new["val"]) == sorted(names[i] for i in old["val"])
    folder = {name: name.removesuffix(".png") for name in names}  # a folder set: each image its own group
    assert split_cases(names, groups=folder)["split"] == "random"
    with pytest.raises(ConfigError, match="nothing to group by"):
        split_cases(names, kind="group", groups=folder)


def test_config_validates_split_settings():
    config = load_config(None, ["data.split=kfold", "data.folds=3", "data.fold=2"])
    assert (config.data.split, config.data.folds, config.data.fold) == ("kfold", 3, 2)
    assert load_config(None, []).data.split == "auto"
    for overrides, message in (
        (["data.split=folds"], "data.split: 'folds' is not one of auto, random, group, kfold"),
        (["data.folds=1"], "data.folds/fold: need folds >= 2"),
        (["data.fold=5"], "got folds 5, fold 5"),
        (["data.fold=-1"], "0 <= fold < folds"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


@pytest.mark.parametrize(
    ("names", "pattern", "groups"),
    [
        ([f"case{c}_day{d}_slice_{s:04d}" for c in (1, 2) for d in (3, 4) for s in (1, 2)], r"^(case\d+)", 2),
        ([f"patient{p}_img{i}" for p in range(3) for i in range(2)], r"^(patient\d+)", 3),
        (["P001_01", "P001_02", "P002_01"], r"^([A-Za-z]+\d+)[_-]", 2),
        (["liver_a_z001", "liver_a_z002", "liver_b_z001"], r"^(.+)_z\d+$", 2),
        (["01_t000", "01_t001", "02_t000"], r"^(\d+)_t\d+$", 2),
    ],
)
def test_suggest_group_by_finds_patient_patterns(names: list[str], pattern: str, groups: int):
    suggestion = suggest_group_by(names)
    assert suggestion is not None
    assert (suggestion.pattern, suggestion.groups, suggestion.cases) == (pattern, groups, len(names))


@pytest.mark.parametrize(
    "names",
    [
        [f"blood_{i:03d}" for i in range(10)],  # phantom names: one image each
        [f"patient{p}_img1" for p in range(5)],  # one image per patient: nothing to keep together
        ["case1_a", "case1_b"],  # a single group: no grouped split possible
        ["case1_a", "case1_b", "x", "y", "z"],  # the pattern fits under half of the cases
    ],
)
def test_suggest_group_by_stays_quiet(names: list[str]):
    assert suggest_group_by(names) is None


def _patient_dataset(root: Path) -> Path:
    """Six 8x8 cases, two per patient, in the native layout."""
    for p in range(3):
        for i in range(2):
            write_image(root / "imagesTr" / f"patient{p}_img{i}_0000.png", np.full((8, 8), 40 * p, np.uint8))
            write_image(root / "labelsTr" / f"patient{p}_img{i}.png", np.eye(8, dtype=np.uint8))
    meta = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "x": 1}, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_data_check_warns_until_group_by_is_set(tmp_path: Path, capsys):
    from medseg.cli import main

    root = _patient_dataset(tmp_path / "ds")
    report = check_dataset(root)
    assert report.ok
    assert report.summary["suggested_group_by"] == {"pattern": r"^(patient\d+)", "groups": 3, "cases": 6}
    assert main(["data", "check", str(root)]) == 0  # a warning leaves the exit code alone
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert r"'^(patient\d+)' forms 3 groups of 6 cases" in warnings[0]
    assert r"--set 'data.group_by=^(patient\d+)'" in warnings[0]
    assert "no problems found" in out

    meta = json.loads((root / "dataset.json").read_text())
    meta["medseg"] = {"group_by": r"^(patient\d+)_"}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert "suggested_group_by" not in check_dataset(root).summary
    assert main(["data", "check", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err
    assert r"groups    3 by group_by '^(patient\d+)_'" in out
    assert "suggested_group_by" not in check_dataset(root, group_by="^(patient)").summary
    assert any("not a valid regex" in p for p in check_dataset(root, group_by="(").problems)


def test_kfold_run_saves_its_split_and_evaluate_scores_exactly_its_val_cases(blood_dataset: Path, tmp_path):
    from medseg.cli import main
    from medseg.workflows.train import train

    config = tiny_config(
        "train.epochs=1",
        "train.snapshots=false",
        "data.split=kfold",
        "data.folds=5",
        "data.fold=3",
        "data.split_seed=2",
    )
    run = train(blood_dataset, config, tmp_path / "run")
    splits = json.loads((run / "splits.json").read_text())
    names = [f"blood_{i:03d}" for i in range(10)]
    expected = kfold_split(names, folds=5, fold=3, seed=2)
    assert (splits["split"], splits["folds"], splits["fold"]) == ("kfold", 5, 3)
    assert splits["val"] == expected["val"] and len(splits["val"]) == 2
    assert splits["train"] == expected["train"]
    assert "split: kfold" in (run / "config.yaml").read_text()

    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    with open(run / "eval" / "per_image.csv", newline="") as f:
        scored = sorted(row["case"] for row in csv.DictReader(f))
    assert scored == splits["val"]


def test_group_of_skips_groups_an_alternative_left_out():
    assert group_of("vol3_z001", r"^(case\d+)_|^(vol\d+)_") == "vol3"
