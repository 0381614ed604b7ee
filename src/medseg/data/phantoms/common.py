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
