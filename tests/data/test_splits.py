from medseg.data.splits import group_of, make_split


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
