"""Explanations: Grad-CAM / Grad-CAM++ heatmaps (classification and segmentation targets), feature maps.

torch and matplotlib are imported inside the functions, so importing this package stays cheap.
"""

from medseg.explain.features import feature_gallery, feature_maps
from medseg.explain.gradcam import (
    METHODS,
    apply_colormap,
    capture_outputs,
    colormap_lut,
    grad_cam,
    heatmap_overlay,
    resolve_layer,
    segmentation_target,
    tokens_to_map,
)

__all__ = [
    "METHODS",
    "apply_colormap",
    "capture_outputs",
    "colormap_lut",
    "feature_gallery",
    "feature_maps",
    "grad_cam",
    "heatmap_overlay",
    "resolve_layer",
    "segmentation_target",
    "tokens_to_map",
]
