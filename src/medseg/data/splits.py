"""Deterministic, optionally grouped train/validation splits (no torch)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from medseg.errors import ConfigError


def group_of(name: str, pattern: str) -> str:
    """The group key of case ``name``: the regex's first group, or its whole match, or the name itself."""
    if not pattern:
        return name
    match = re.search(pattern, name)
    if match is None:
        return name
    return match.group(1) if match.groups() else match.group(0)


def make_split(
    case_names: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0, group_by: str = ""
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

    Returns:
        ``{"train": [...], "val": [...], "groups": {case: group}}`` with sorted case lists.
    """
    if group_by:
        try:
            re.compile(group_by)
        except re.error as exc:
            raise ConfigError(f"data.group_by: invalid regex {group_by!r} ({exc})") from None
    names = sorted(set(case_names))
    groups = {name: group_of(name, group_by) for name in names}
    keys = sorted(set(groups.values()))
    order = np.random.default_rng(seed).permutation(len(keys))
    target = val_fraction * len(names)
    val_groups: set[str] = set()
    count = 0
    members: dict[str, list[str]] = defaultdict(list)
    for name in names:
        members[groups[name]].append(name)
    for i in order:
        if count >= target or (len(val_groups) + 1 >= len(keys)):
            break
        if val_fraction <= 0:
            break
        val_groups.add(keys[i])
        count += len(members[keys[i]])
    val = sorted(n for n in names if groups[n] in val_groups)
    train = sorted(n for n in names if groups[n] not in val_groups)
    return {"train": train, "val": val, "groups": groups}
