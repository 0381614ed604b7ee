"""Synthetic images with exact ground truth, for demos, tests and benchmarks (NumPy/SciPy only)."""

from medseg.data.phantoms.blood import (
    BLOOD_COLORS,
    BLOOD_LABELS,
    WBC_TYPES,
    BloodSmear,
    blood_smear,
    write_blood_dataset,
)

__all__ = ["BLOOD_COLORS", "BLOOD_LABELS", "WBC_TYPES", "BloodSmear", "blood_smear", "write_blood_dataset"]
