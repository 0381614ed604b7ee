"""Intensity normalisation and joint image + mask augmentation (NumPy/SciPy only, no torch).

Every random draw comes from a ``np.random.Generator`` passed in per sample, so runs are reproducible
and resumable exactly; see :mod:`medseg.transforms.augment`.
"""

from medseg.transforms.augment import AugmentConfig, augment, center_crop_or_pad, random_crop
from medseg.transforms.normalize import NORMALIZATIONS, normalize, to_channels_first
from medseg.transforms.targets import deep_watershed_targets

__all__ = [
    "NORMALIZATIONS",
    "AugmentConfig",
    "augment",
    "center_crop_or_pad",
    "deep_watershed_targets",
    "normalize",
    "random_crop",
    "to_channels_first",
]
