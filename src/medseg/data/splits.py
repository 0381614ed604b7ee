"""Deterministic train/validation splits: random, grouped and k-fold (no torch).

A *group* is the set of cases that must stay on one side of a split (one patient's slices, one
sequence's frames). Groups come from a regex on the case name (``data.group_by``) or, for
classification sets, from an explicit case -> group mapping (a CSV's ``group`` column).

Every split here depends only on the case names, the groups and the seed, never on file order.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError

SPLIT_KINDS = ("auto", "random", "group", "kfold")

# case-name patterns that usually mean "several images of one patient/volume/sequence", most specific first
GROUP_PATTERNS = (
    r"^(case\d+)",  # case12_day3_slice_0040 (UW-Madison GI tract)
    r"^(patient\d+)",  # patient7_img2
    r"^([A-Za-z]+\d+)[_-]",  # P001_02, s12-3
    r"^(.+)_z\d+$",  # volume_z012 (slices of a 3D volume)
    r"^(\d+)_t\d+$",  # 01_t003 (frames of a sequence)
)


def group_of(name: str, pattern: str) -> str:
    """The group key of case ``name``: the regex's first group that took part in the match (alternatives
    may leave some out), or its whole match, or the name itself when it does not match."""
    if not pattern:
        return name
    match = re.search(pattern, name)
    if match is None:
        return name
    return next((group for group in match.groups() if group is not None), match.group(0))


def _check_regex(group_by: str) -> None:
    if group_by:
        try:
            re.compile(group_by)
        except re.error as exc:
            raise ConfigError(f"data.group_by: invalid regex {group_by!r} ({exc})") from None


def _group_map(names: list[str], group_by: str, groups: Mapping[str, str] | None) -> dict[str, str]:
    """Case -> group key: ``groups`` when given, else the ``group_by`` regex (each case alone when empty)."""
    _check_regex(group_by)
    if groups is not None:
        missing = [name for name in names if name not in groups]
        if missing:
            raise ConfigError(f"split: no group given for case(s) {', '.join(missing[:5])}")
        return {name: str(groups[name]) for name in names}
    return {name: group_of(name, group_by) for name in names}


def make_split(
    case_names: Sequence[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_by: str = "",
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split cases into train and val so that no group straddles the two.

    Groups are shuffled with ``seed`` and taken for validation until at least ``val_fraction`` of the
    cases are in it (at least one group when there are two or more groups and val_fraction > 0).
    The result depends only on the names, the fraction, the seed and the pattern, not on file order.

    Args:
        case_names: all case names.
        val_fraction: target fraction of cases for validation, in [0, 1).
        seed: split seed.
        group_by: regex on the case name (``r"^(case\\d+)_"`` keeps one patient's slices together).
        groups: case -> group key, used instead of ``group_by`` (e.g. a CSV's group column).

    Returns:
        ``{"train": [...], "val": [...], "groups": {case: group}}`` with sorted case lists.
    """
    names = sorted(set(case_names))
    group_map = _group_map(names, group_by, groups)
    keys = sorted(set(group_map.values()))
    order = np.random.default_rng(seed).permutation(len(keys))
    target = val_fraction * len(names)
    val_groups: set[str] = set()
    count = 0
    members: dict[str, list[str]] = defaultdict(list)
    for name in names:
        members[group_map[name]].append(name)
    for i in order:
        if count >= target or (len(val_groups) + 1 >= len(keys)):
            break
        if val_fraction <= 0:
            break
        val_groups.add(keys[i])
        count += len(members[keys[i]])
    val = sorted(n for n in names if group_map[n] in val_groups)
    train = sorted(n for n in names if group_map[n] not in val_groups)
    return {"train": train, "val": val, "groups": group_map}


def assign_folds(
    case_names: Sequence[str],
    *,
    folds: int = 5,
    seed: int = 0,
    group_by: str = "",
    groups: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Deal whole groups (or single cases) into ``folds`` folds of near-equal case counts.

    Groups are shuffled with ``seed``, then placed largest first, each into the fold holding the fewest
    cases so far (lowest index on ties). Without groups the folds differ in size by at most one case.

    Args:
        case_names: all case names.
        folds: number of folds, >= 2.
        seed: shuffle seed (which groups end up together).
        group_by: regex on the case name whose first group (or whole match) is the group key.
        groups: case -> group key, used instead of ``group_by``.

    Returns:
        ``{case: fold index}`` for every case.

    Raises:
        ConfigError: ``folds`` < 2, fewer groups than folds, or an invalid ``group_by``.
    """
    if folds < 2:
        raise ConfigError(f"data.folds: need at least 2 folds, got {folds}")
    names = sorted(set(case_names))
    group_map = _group_map(names, group_by, groups)
    sizes = Counter(group_map.values())
    keys = sorted(sizes)
    if len(keys) < folds:
        unit = "groups" if len(keys) < len(names) else "cases"
        raise ConfigError(
            f"data.folds: {folds} folds need at least {folds} {unit}, found {len(keys)}; lower data.folds"
        )
    shuffled = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    shuffled.sort(key=lambda key: -sizes[key])  # stable: equal sizes keep the seeded order
    load = [0] * folds
    fold_of_group: dict[str, int] = {}
    for key in shuffled:
        target = load.index(min(load))
        fold_of_group[key] = target
        load[target] += sizes[key]
    return {name: fold_of_group[group_map[name]] for name in names}


def kfold_split(
    case_names: Sequence[str],
    *,
    folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    group_by: str = "",
    groups: Mapping[str, str] | None = None,
) -> dict:
    """Fold ``fold`` of a k-fold split: its cases are val, the other folds' cases train.

    Args:
        case_names: all case names.
        folds: number of folds, >= 2.
        fold: the validation fold, in [0, folds).
        seed: shuffle seed (see :func:`assign_folds`).
        group_by: regex on the case name; a group never straddles two folds.
        groups: case -> group key, used instead of ``group_by``.

    Returns:
        ``{"train": [...], "val": [...], "groups": {case: group}, "fold_of": {case: fold}}``, case
        lists sorted.

    Raises:
        ConfigError: ``fold`` outside [0, folds), or see :func:`assign_folds`.
    """
    if not 0 <= fold < max(folds, 1):
        raise ConfigError(f"data.fold: must be in [0, {folds}) for {folds} folds, got {fold}")
    fold_of = assign_folds(case_names, folds=folds, seed=seed, group_by=group_by, groups=groups)
    names = sorted(fold_of)
    return {
        "train": [n for n in names if fold_of[n] != fold],
        "val": [n for n in names if fold_of[n] == fold],
        "groups": _group_map(names, group_by, groups),
        "fold_of": fold_of,
    }


def split_cases(
    case_names: Sequence[str],
    *,
    kind: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    group_by: str = "",
    folds: int = 5,
    fold: int = 0,
    groups: Mapping[str, str] | None = None,
) -> dict:
    """The split ``data.split`` asks for, as the record a run saves in ``splits.json``.

    Kinds: ``random`` (each case alone, ``group_by`` ignored), ``group`` (random over groups; needs
    ``group_by`` or ``groups``), ``kfold`` (fold ``fold`` of ``folds``, grouped when groups are set),
    ``auto`` (``group`` when groups are set, else ``random``).

    Args:
        case_names: all case names.
        kind: one of :data:`SPLIT_KINDS`.
        val_fraction: validation fraction (random and group).
        seed: split seed.
        group_by: regex on the case name whose first group (or whole match) is the group key.
        folds: number of folds (kfold).
        fold: validation fold (kfold).
        groups: case -> group key, used instead of ``group_by`` (classification CSV groups).

    Returns:
        ``{"train", "val", "groups", "split", "val_fraction", "seed", "group_by"}`` plus ``"folds"``,
        ``"fold"`` and ``"fold_of"`` for kfold; ``split`` is the kind actually used (never ``auto``).

    Raises:
        ConfigError: an unknown kind, ``group`` with nothing to group by, or bad fold settings.
    """
    if kind not in SPLIT_KINDS:
        raise ConfigError(f"data.split: {kind!r} is not one of {', '.join(SPLIT_KINDS)}")
    names = sorted(set(case_names))
    grouped = bool(group_by) or (
        groups is not None and len(set(groups[n] for n in names if n in groups)) < len(names)
    )
    if kind == "group" and not grouped:
        raise ConfigError(
            "data.split=group: nothing to group by; set data.group_by to a regex on the case name "
            "(e.g. data.group_by='^(patient\\d+)_') or use data.split=random"
        )
    if kind == "auto":
        kind = "group" if grouped else "random"
    record: dict = {"split": kind, "val_fraction": val_fraction, "seed": seed, "group_by": group_by}
    if kind == "random":
        # ungrouped keys (e.g. a folder set's per-image groups) only order the shuffle: keep them so that
        # the split stays the one classification runs made before data.split existed
        keys = groups if groups is not None and not grouped else None
        parts = make_split(names, val_fraction=val_fraction, seed=seed, groups=keys)
    elif kind == "group":
        parts = make_split(names, val_fraction=val_fraction, seed=seed, group_by=group_by, groups=groups)
    else:
        parts = kfold_split(names, folds=folds, fold=fold, seed=seed, group_by=group_by, groups=groups)
        record.update(folds=folds, fold=fold)
    return {**parts, **record}


@dataclass(frozen=True)
class GroupSuggestion:
    """A ``group_by`` regex that case names seem to follow, and what it would do."""

    pattern: str
    groups: int  # distinct groups it forms (cases it does not match count alone)
    cases: int  # all cases


def suggest_group_by(case_names: Sequence[str]) -> GroupSuggestion | None:
    """A common patient/volume/sequence naming pattern that several cases share, if any.

    A pattern of :data:`GROUP_PATTERNS` is suggested when it matches at least half of the cases, some
    group holds two or more cases, and it forms at least two groups (so that a grouped split is possible).

    Args:
        case_names: all case names.

    Returns:
        The first such pattern with its group and case counts, or None.
    """
    names = sorted(set(case_names))
    for pattern in GROUP_PATTERNS:
        compiled = re.compile(pattern)
        matched = [name for name in names if compiled.search(name)]
        if len(matched) < 2 or 2 * len(matched) < len(names):
            continue
        keys = Counter(group_of(name, pattern) for name in names)
        if max(keys.values()) >= 2 and len(keys) >= 2:
            return GroupSuggestion(pattern, len(keys), len(names))
    return None
