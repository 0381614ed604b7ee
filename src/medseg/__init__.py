"""medseg: biomedical image segmentation and analysis, from a folder of images to a trained model.

Importing ``medseg`` is cheap: torch and the other heavy libraries load only when a function needs them.
"""

__version__ = "0.1.0"
