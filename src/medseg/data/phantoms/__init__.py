"""Synthetic images with exact ground truth, for demos, tests and benchmarks (NumPy/SciPy only)."""

from medseg.data.phantoms.blood import (
    BLOOD_COLORS,
    BLOOD_LABELS,
    WBC_TYPES,
    BloodSmear,
    blood_smear,
    write_blood_dataset,
)
from medseg.data.phantoms.crops import CROP_SIZE, WbcCrop, wbc_crops, write_wbc_crops
from medseg.data.phantoms.nuclei import (
    NUCLEI_LABELS,
    Microscope,
    NucleiImage,
    Nucleus,
    nuclei_image,
    random_microscope,
    random_nuclei,
    render_nuclei,
    write_nuclei_dataset,
)
from medseg.data.phantoms.timelapse import NucleiMovie, nuclei_movie, write_nuclei_movie

__all__ = [
    "BLOOD_COLORS",
    "BLOOD_LABELS",
    "CROP_SIZE",
    "NUCLEI_LABELS",
    "WBC_TYPES",
    "BloodSmear",
    "Microscope",
    "NucleiImage",
    "NucleiMovie",
    "Nucleus",
    "WbcCrop",
    "blood_smear",
    "nuclei_image",
    "nuclei_movie",
    "random_microscope",
    "random_nuclei",
    "render_nuclei",
    "wbc_crops",
    "write_blood_dataset",
    "write_nuclei_dataset",
    "write_nuclei_movie",
    "write_wbc_crops",
]
