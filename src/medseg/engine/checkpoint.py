"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.errors import RunError
from medseg.io import atomic_path

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (never unpickles arbitrary objects).

    Raises:
        RunError: the file is missing, corrupt, or of an unknown format version.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: cannot load checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a medseg checkpoint of format {CHECKPOINT_FORMAT}")
    return state
