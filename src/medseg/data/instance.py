"""Instance-task training data: instance ids + types -> stacked deep-watershed targets (no torch).

Targets are made from the *augmented* label patch (:class:`InstanceTargets` is the ``target_fn`` of
:class:`~medseg.data.samples.PatchDataset`), because distance maps do not survive resampling: an
interpolated distance map is not the distance map of the interpolated objects. On a 128-256 px patch this
costs a few milliseconds, well inside a data-loader worker's budget. Whole validation images are not
augmented, so their targets are computed once and kept (:meth:`InstanceTargets.full`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import DataError


class InstanceTargets:
    """Make ``(4, H, W)`` float32 targets: inner distance, outer distance, fgbg class, type id (-1 = none).

    Args:
        types: per case, an int32 lookup ``type_of[instance_id]`` (-1 = untyped), or None for untyped data.
        alpha: inner-distance alpha ("auto" or a number, see :func:`deep_watershed_targets`).
        beta: inner-distance beta.
        erosion: pixels to erode objects by before the outer distance.
        boundary: add a boundary class (2) to fgbg.
    """

    def __init__(
        self,
        types: Sequence[np.ndarray | None],
        *,
        alpha: str | float = "auto",
        beta: float = 1.0,
        erosion: int = 0,
        boundary: bool = False,
    ) -> None:
        self.types = list(types)
        self.alpha = alpha if alpha == "auto" else float(alpha)
        self.beta = beta
        self.erosion = erosion
        self.boundary = boundary
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, instances: np.ndarray, case_index: int) -> np.ndarray:
        """Targets of an ``(H, W)`` instance-id patch of case ``case_index``."""
        from medseg.transforms.targets import deep_watershed_targets

        maps = deep_watershed_targets(
            instances, alpha=self.alpha, beta=self.beta, erosion=self.erosion, boundary=self.boundary
        )
        out = np.empty((4, *instances.shape), np.float32)
        out[0], out[1], out[2] = maps["inner"], maps["outer"], maps["fgbg"]
        lookup = self.types[case_index]
        if lookup is None:
            out[3] = -1
        else:
            ids = np.clip(instances, 0, len(lookup) - 1)
            out[3] = np.where(instances > 0, lookup[ids], -1)
        return out

    def full(self, instances: np.ndarray, case_index: int) -> np.ndarray:
        """Targets of a whole (unaugmented) image, computed once per case."""
        if case_index not in self._cache:
            self._cache[case_index] = self(instances, case_index)
        return self._cache[case_index]


def type_lookup(types: dict[int, str], classes: Sequence[str], source: str = "instances") -> np.ndarray:
    """An int32 array mapping instance id -> index into ``classes`` (-1 for ids without a type).

    Raises:
        DataError: a type is not one of ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    lookup = np.full(max(types, default=0) + 1, -1, np.int32)
    for instance_id, name in types.items():
        if name not in index:
            raise DataError(f"{source}: instance type {name!r} is not one of {list(classes)}")
        lookup[instance_id] = index[name]
    return lookup
