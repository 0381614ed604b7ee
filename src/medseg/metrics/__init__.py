"""Evaluation metrics (NumPy/SciPy/scikit-image only: importing this package never imports torch)."""

from medseg.metrics.semantic import (
    METRIC_NAMES,
    SemanticMetrics,
    confusion_matrix,
    hd95,
    per_class_metrics,
)

__all__ = ["METRIC_NAMES", "SemanticMetrics", "confusion_matrix", "hd95", "per_class_metrics"]
