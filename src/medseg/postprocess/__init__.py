"""Post-processing of network outputs into instances (NumPy/SciPy/scikit-image only, never torch).

- :mod:`medseg.postprocess.watershed`: DeepCell's deep watershed -- markers from the predicted inner
  distance, a marker-controlled flood of the outer distance, small-object removal, hole filling -- with
  :class:`WatershedParams` for thresholds stored in a run's ``thresholds.json``.
- :mod:`medseg.postprocess.objects`: per-object measurements, types (differential group rule), counts.
- :mod:`medseg.postprocess.tuning`: threshold search on validation images (``thresholds.json``).
"""

from medseg.postprocess.objects import (
    TypingParams,
    assign_types,
    count_objects,
    majority_types,
    object_table,
)
from medseg.postprocess.tuning import TuneResult, tune_typing, tune_watershed
from medseg.postprocess.watershed import (
    MAXIMA_ALGORITHMS,
    WatershedParams,
    deep_watershed,
    fill_small_holes,
    find_peaks,
    watershed_by_component,
)

__all__ = [
    "MAXIMA_ALGORITHMS",
    "TuneResult",
    "TypingParams",
    "WatershedParams",
    "assign_types",
    "count_objects",
    "deep_watershed",
    "fill_small_holes",
    "find_peaks",
    "majority_types",
    "object_table",
    "tune_typing",
    "tune_watershed",
    "watershed_by_component",
]
