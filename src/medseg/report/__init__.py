"""Pictures and reports: overlays (TP/FP/FN), training curves, progress GIFs, the self-contained HTML report.

No torch here; matplotlib is imported only inside the plotting functions (Agg canvas, no display needed).
"""

from medseg.report.gif import snapshot_frame, write_gif
from medseg.report.html import SECTIONS, RunFolder, Section, build_report
from medseg.report.overlays import (
    ERROR_COLORS,
    MATCH_COLORS,
    class_colors,
    color_overlay,
    comparison_panel,
    default_colors,
    display_channels,
    error_overlay,
    image_to_rgb8,
    instance_overlay,
    instance_panel,
    legend_image,
    match_overlay,
)
from medseg.report.plots import plot_per_class_bars, plot_training_curves, read_metrics_csv

__all__ = [
    "ERROR_COLORS",
    "MATCH_COLORS",
    "SECTIONS",
    "RunFolder",
    "Section",
    "build_report",
    "class_colors",
    "color_overlay",
    "comparison_panel",
    "default_colors",
    "display_channels",
    "error_overlay",
    "image_to_rgb8",
    "instance_overlay",
    "instance_panel",
    "legend_image",
    "match_overlay",
    "plot_per_class_bars",
    "plot_training_curves",
    "read_metrics_csv",
    "snapshot_frame",
    "write_gif",
]
