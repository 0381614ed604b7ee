"""Overlapping classes as nnU-Net-style regions: which mask values belong to which region.

A multi-label dataset (organs that overlap, nested tumour sub-regions) stores one integer label image per
case, as any other, and names its classes in ``dataset.json`` as *regions*: lists of the mask values that
belong to each one (nnU-Net v2's region-based training)::

    "labels": {"background": 0, "large_bowel": [1, 3, 5, 7], "small_bowel": [2, 3, 6, 7],
               "stomach": [4, 5, 6, 7]}

Here the mask is a bitmask (bit r set = region r present), so every overlap is stored and a pixel can be
large *and* small bowel. BraTS-style nested regions (``"whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
"enhancing": [3]``) work the same way. The network predicts one sigmoid channel per region; a pixel's
predicted mask value is the stored value whose regions best explain the channels (:meth:`Regions.encode`),
which for a bitmask is simply "every region whose probability exceeds 0.5".

NumPy only, so metrics and reports can use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_MAX_VALUE = 65535  # mask values are stored in uint8/uint16 images


@dataclass(frozen=True)
class Regions:
    """Region names (the network's channel order) and the mask values that belong to each.

    Attributes:
        names: R region names, in channel order.
        values: for each region, the sorted mask values that belong to it.
    """

    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.values):
            raise ValueError("regions: need one non-empty list of mask values per region name")
        for name, values in zip(self.names, self.values, strict=True):
            if not values or any(not 0 < v <= _MAX_VALUE for v in values):
                raise ValueError(f"region {name!r}: mask values must be integers in 1..{_MAX_VALUE}")

    @classmethod
    def from_mapping(cls, regions: Mapping[str, Sequence[int]]) -> Regions:
        """``{name: [mask values]}`` (``data.regions``) -> Regions, channel order = mapping order."""
        return cls(
            tuple(str(name) for name in regions),
            tuple(tuple(sorted({int(v) for v in values})) for values in regions.values()),
        )

    def to_mapping(self) -> dict[str, list[int]]:
        """The ``{name: [mask values]}`` form kept in configs and dataset.json."""
        return {name: list(values) for name, values in zip(self.names, self.values, strict=True)}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def mask_values(self) -> np.ndarray:
        """``(V,)`` every value a mask may hold: 0 and every value of any region, sorted."""
        return np.array(sorted({0}.union(*map(set, self.values))), dtype=np.int64)

    @property
    def table(self) -> np.ndarray:
        """``(V, R)`` bool: which regions each of :attr:`mask_values` belongs to."""
        values = self.mask_values
        return np.stack([np.isin(values, list(region)) for region in self.values], axis=1)

    def lookup(self, size: int | None = None) -> np.ndarray:
        """``(size, R)`` bool: row v = the regions mask value v belongs to (all False for other values)."""
        size = int(self.mask_values.max()) + 1 if size is None else size
        lut = np.zeros((size, len(self)), dtype=bool)
        for r, region in enumerate(self.values):
            lut[[v for v in region if v < size], r] = True
        return lut

    def members(self, mask: np.ndarray) -> np.ndarray:
        """Mask values ``(H, W[, D])`` -> ``(R, H, W[, D])`` bool region membership.

        Values outside every region (background, the ignore label) belong to none.
        """
        mask = np.asarray(mask)
        if mask.size == 0:
            return np.zeros((len(self), *mask.shape), dtype=bool)
        lut = self.lookup(max(int(mask.max()), int(self.mask_values.max())) + 1)
        flat = np.clip(mask, 0, None).astype(np.intp, copy=False)
        return np.moveaxis(lut[flat], -1, 0)

    def counts(self, mask: np.ndarray, rows: int = 1024) -> np.ndarray:
        """``(R + 1,)`` int64 pixel counts of a mask of values: background (value 0) first, then each
        region's pixels (a pixel in two regions counts for both), a band of rows at a time."""
        size = int(self.mask_values.max()) + 1
        values = np.zeros(size, np.int64)
        for top in range(0, mask.shape[0], rows):
            band = np.asarray(mask[top : top + rows]).ravel()
            values += np.bincount(band[(band >= 0) & (band < size)], minlength=size)
        return np.concatenate([values[:1], values @ self.lookup(size)])

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        """Smallest dtype of a mask file holding every region value: uint8 or uint16."""
        return np.uint8 if self.mask_values.max() <= 255 else np.uint16

    def encode(self, probabilities: np.ndarray, rows: int = 256) -> np.ndarray:
        """``(R, H, W)`` region probabilities -> ``(H, W)`` mask values, a band of rows at a time.

        Each pixel gets the stored value whose region membership is most probable under independent
        sigmoids: the value v maximising ``sum_r table[v, r] * logit(p_r)``, where ``table`` is
        :attr:`table`. For a bitmask (every combination stored) that is thresholding each region at 0.5;
        for nested regions it never yields a combination the dataset cannot hold (enhancing tumour
        outside the tumour core). Ties go to the smaller value, so p = 0.5 everywhere is background.

        Returns:
            uint8 mask values when they fit, else uint16.
        """
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 3 or probabilities.shape[0] != len(self):
            raise ValueError(f"probabilities: expected ({len(self)}, H, W), got {probabilities.shape}")
        values = self.mask_values
        weights = self.table.astype(np.float32)  # (V, R)
        height, width = probabilities.shape[1:]
        out = np.empty((height, width), dtype=self.dtype)
        for top in range(0, height, rows):
            band = np.clip(probabilities[:, top : top + rows].astype(np.float32), 1e-6, 1 - 1e-6)
            logits = np.log(band) - np.log1p(-band)  # (R, h, W)
            scores = np.tensordot(weights, logits, axes=(1, 0))  # (V, h, W)
            out[top : top + rows] = values[scores.argmax(axis=0)]
        return out


def parse_region_labels(labels: Mapping[str, object], source: str) -> tuple[dict[str, int], Regions | None]:
    """dataset.json ``labels`` -> (class ids, regions or None).

    Without list values this is the plain ``{name: id}`` mapping and no regions. With them (nnU-Net
    region labels) the integer entries must be background ``0`` (and nnU-Net's ``ignore``, handled by the
    caller); the list entries become regions in file order and class ids ``1..R`` (0 = background).

    Raises:
        ValueError: a malformed entry, naming ``source``.
    """
    if not any(isinstance(v, list | tuple) for v in labels.values()):
        return dict(labels), None  # type: ignore[arg-type]
    ids: dict[str, int] = {}
    regions: dict[str, list[int]] = {}
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{source}: region {name!r} must list integer mask values, got {value!r}")
            regions[name] = list(value)
        elif isinstance(value, int) and value == 0:
            ids[name] = 0
        else:
            raise ValueError(
                f"{source}: with region labels (lists) the only integer label is background 0; "
                f"{name!r} is {value!r}"
            )
    if not ids:
        raise ValueError(f'{source}: region labels need a background entry, e.g. "background": 0')
    try:
        parsed = Regions.from_mapping(regions)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    ids.update({name: r + 1 for r, name in enumerate(parsed.names)})
    return ids, parsed
