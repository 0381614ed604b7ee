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
from medseg.data.phantoms.gi import (
    GI_PHANTOM_NAME,
    Abdomen,
    GiVolume,
    next_scan_day,
    random_abdomen,
    render_abdomen,
    write_gi_dataset,
)
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
    "GI_PHANTOM_NAME",
    "NUCLEI_LABELS",
    "WBC_TYPES",
    "Abdomen",
    "BloodSmear",
    "GiVolume",
    "Microscope",
    "NucleiImage",
    "NucleiMovie",
    "Nucleus",
    "WbcCrop",
    "blood_smear",
    "next_scan_day",
    "nuclei_image",
    "nuclei_movie",
    "random_abdomen",
    "random_microscope",
    "random_nuclei",
    "render_abdomen",
    "render_nuclei",
    "wbc_crops",
    "write_blood_dataset",
    "write_gi_dataset",
    "write_nuclei_dataset",
    "write_nuclei_movie",
    "write_wbc_crops",
]
