"""Training samples: random patches with augmentation, reproducible per (seed, epoch, draw).

No torch here: a map-style dataset returning NumPy arrays works with ``torch.utils.data.DataLoader``,
whose default collate turns them into tensors. The sampler yields ``(case_index, sample_seed)`` keys,
so every random draw of a sample comes from its own seed: a resumed run sees exactly the patches an
uninterrupted run would, whichever worker process builds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from medseg.transforms import AugmentConfig, augment, random_crop


class PatchDataset:
    """Augmented training patches cut from in-memory images.

    Args:
        images: per case ``(C, H, W)`` float32, already normalised.
        labels: per case ``(H, W)`` integer class ids.
        patch_size: ``(rows, cols)`` of each patch.
        augment_config: augmentation settings.
        pad_label: label value for padding when an image is smaller than the patch.
        target_fn: ``target_fn(label_patch, case_index) -> (T, h, w) float32`` training targets made from
            the augmented label patch (e.g. deep-watershed distance maps from instance ids); None = the
            label patch itself.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: tuple[int, int],
        augment_config: AugmentConfig,
        *,
        pad_label: int = 0,
        target_fn: Callable[[np.ndarray, int], np.ndarray] | None = None,
        sample_masks: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        if len(images) != len(labels) or not images:
            raise ValueError("PatchDataset needs as many labels as images, and at least one")
        self.images = list(images)
        self.labels = list(labels)
        self.patch_size = tuple(patch_size)
        self.augment_config = augment_config
        self.pad_label = pad_label
        self.target_fn = target_fn
        self.sample_masks = list(sample_masks) if sample_masks is not None else [None] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``key = (case_index, sample_seed)`` -> image ``(C, h, w)`` float32, label ``(h, w)`` int64.

        With ``target_fn`` the second item is its ``(T, h, w)`` float32 targets instead.
        """
        index, seed = key
        rng = np.random.default_rng(seed)
        image, label = random_crop(
            self.images[index],
            self.labels[index],
            self.patch_size,
            rng,
            pad_value_mask=self.pad_label,
            sample_mask=self.sample_masks[index],
        )
        image, label = augment(image, label, self.augment_config, rng)
        if self.target_fn is not None:
            target = self.target_fn(label, index)
            return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(target, np.float32)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.int64)


class EpochSampler:
    """Yields ``samples_per_epoch`` keys ``(case_index, sample_seed)`` per epoch, seeded by (seed, epoch).

    Cases are drawn as successive random permutations, so every case is seen once before any is seen
    twice. Call :meth:`set_epoch` before iterating (the Trainer does).
    """

    def __init__(self, num_cases: int, samples_per_epoch: int, seed: int) -> None:
        self.num_cases = num_cases
        self.samples_per_epoch = samples_per_epoch or num_cases
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws to yield."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        repeats = -(-self.samples_per_epoch // self.num_cases)
        order = np.concatenate([rng.permutation(self.num_cases) for _ in range(repeats)])
        seeds = rng.integers(0, 2**63 - 1, size=self.samples_per_epoch)
        return iter(zip(order[: self.samples_per_epoch].tolist(), seeds.tolist()))
