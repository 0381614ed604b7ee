"""Evaluation metrics (NumPy/SciPy/scikit-image only: importing this package never imports torch)."""

from medseg.metrics.classification import (
    classification_metrics,
    expected_calibration_error,
    one_vs_rest_auc,
    reliability_bins,
)
from medseg.metrics.instance import (
    DSB_THRESHOLDS,
    MatchResult,
    ObjectErrors,
    OverlapTable,
    aggregate_instance_metrics,
    aji,
    aji_plus,
    instance_metrics,
    match_instances,
    object_errors,
    overlap_table,
)
from medseg.metrics.semantic import (
    METRIC_NAMES,
    SemanticMetrics,
    confusion_matrix,
    hd95,
    per_class_metrics,
    per_region_metrics,
)
from medseg.metrics.tracking import (
    AOGM_WEIGHTS,
    DetectionMatch,
    TrackingScores,
    match_detections,
    tracking_metrics,
)

__all__ = [
    "AOGM_WEIGHTS",
    "DSB_THRESHOLDS",
    "METRIC_NAMES",
    "DetectionMatch",
    "MatchResult",
    "ObjectErrors",
    "OverlapTable",
    "SemanticMetrics",
    "TrackingScores",
    "aggregate_instance_metrics",
    "aji",
    "aji_plus",
    "classification_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "hd95",
    "instance_metrics",
    "match_detections",
    "match_instances",
    "object_errors",
    "one_vs_rest_auc",
    "overlap_table",
    "per_class_metrics",
    "per_region_metrics",
    "reliability_bins",
    "tracking_metrics",
]
