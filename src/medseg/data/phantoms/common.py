"""What every phantom writer shares."""

from __future__ import annotations

import json
from pathlib import Path

from medseg.errors import MedsegError


def check_overwrite(out: Path, name: str) -> None:
    """Refuse to write phantoms into a folder holding another dataset (a dataset.json not named ``name``)."""
    meta = Path(out) / "dataset.json"
    if meta.is_file():
        try:
            found = json.loads(meta.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            found = None
        if found != name:
            raise MedsegError(f"{out}: holds another dataset (dataset.json); choose an empty --out")


def check_phantom_folder(out: Path, name: str, what: str) -> None:
    """Refuse a folder that exists and is not empty unless it holds an earlier phantom called ``name``
    (its ``phantom.json``), so a phantom never writes over other data.

    Args:
        out: the folder to write.
        name: the ``name`` in the phantom's ``phantom.json``.
        what: the phantom in words, for the error (``"nuclei movie phantom"``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MedsegError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        found = json.loads((out / "phantom.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != name:
        raise MedsegError(f"{out}: folder is not empty and holds no {what}; choose an empty --out")
