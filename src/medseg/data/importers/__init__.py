"""Importers: convert other dataset layouts into the native (nnU-Net v2 raw) layout.

Each importer is ``fn(src, dst, **options) -> Path`` and writes a complete dataset folder at ``dst`` (or
nothing). :data:`IMPORTERS` maps the format names of ``medseg data import FORMAT SRC DST`` to them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.data.importers.deepcell import DEEPCELL_LABELS, import_deepcell
from medseg.errors import ConfigError

IMPORTERS: dict[str, Callable[..., Path]] = {"deepcell": import_deepcell}


def import_dataset(
    format: str, src: str | os.PathLike[str], dst: str | os.PathLike[str], **options: Any
) -> Path:
    """Import the dataset at ``src`` (a file or folder, depending on ``format``) into ``dst``.

    Args:
        format: a key of :data:`IMPORTERS`, e.g. ``"deepcell"``.
        src: what to import.
        dst: the native dataset folder to create.
        **options: keyword options of that importer (see its docstring).

    Returns:
        ``dst`` as a Path.

    Raises:
        ConfigError: unknown format or an option the importer does not take.
        MedsegError: whatever the importer finds wrong with ``src`` or ``dst``.
    """
    if format not in IMPORTERS:
        raise ConfigError(f"unknown import format {format!r}; choose from {', '.join(sorted(IMPORTERS))}")
    importer = IMPORTERS[format]
    try:
        inspect.signature(importer).bind(src, dst, **options)
    except TypeError as exc:
        raise ConfigError(f"{format} import: {exc}") from None
    return importer(src, dst, **options)


__all__ = ["DEEPCELL_LABELS", "IMPORTERS", "import_dataset", "import_deepcell"]
