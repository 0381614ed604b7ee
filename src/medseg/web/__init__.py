"""The browser app (``medseg serve``): a FastAPI backend and a plain HTML/CSS/JS page, served locally.

Importing this package imports FastAPI; the command line imports it only for ``medseg serve``.
"""

from medseg.web.app import create_app, serve
from medseg.web.uploads import UploadError, decode_upload

__all__ = ["UploadError", "create_app", "decode_upload", "serve"]
