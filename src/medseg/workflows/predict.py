"""``medseg predict``: segment image files or folders with a trained run."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io import is_image_file, read_image, write_csv_atomic, write_image


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (their image files, not recursive) into a sorted, de-duplicated list.

    Raises:
        DataError: an input does not exist, or nothing to predict was found.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")
            )
            if not found:
                raise DataError(f"{item}: folder holds no image files")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise DataError("predict: no input images")
    return unique


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    mask_format: str = "png",
    device: str = "auto",
) -> Path:
    """Segment images and write ``masks/``, ``overlays/`` and ``summary.csv`` under ``out``.

    Masks have the input's size and hold class ids (PNG, or TIFF with ``mask_format="tif"``); overlays
    show the classes in the run's colours; ``summary.csv`` has each file's size and per-class pixel
    fractions. A file that cannot be read is reported and skipped; the others are still written.

    Returns:
        The path of ``summary.csv``.

    Raises:
        DataError: unreadable inputs (after writing everything else), or no inputs.
    """
    from medseg.inference.predictor import Predictor
    from medseg.report import class_colors, color_overlay

    if mask_format not in ("png", "tif"):
        raise DataError(f"--format: {mask_format!r} is not png or tif")
    files = collect_inputs(inputs)
    predictor = Predictor.from_run(run_dir, device=device)
    config = predictor.config
    colors = class_colors(config.data.labels, config.data.colors)
    names = predictor.class_names
    out = Path(out)
    stems = _unique_stems(files)
    rows, problems = [], []
    from tqdm.auto import tqdm

    for path, stem in tqdm(list(zip(files, stems)), desc="predict", unit="image", disable=None, leave=False):
        try:
            image = read_image(path)
            result = predictor.predict(image, str(path))
        except DataError as exc:
            problems.append(str(exc))
            continue
        labels = result.labels
        write_image(
            out / "masks" / f"{stem}.{mask_format}",
            labels.astype(np.uint8 if len(names) < 256 else np.uint16),
        )
        write_image(out / "overlays" / f"{stem}.png", color_overlay(image, labels, colors))
        counts = np.bincount(labels.ravel(), minlength=len(names))
        row = {
            "file": str(path),
            "mask": f"masks/{stem}.{mask_format}",
            "height": labels.shape[0],
            "width": labels.shape[1],
        }
        row.update({f"fraction_{n}": c / labels.size for n, c in zip(names, counts)})
        rows.append(row)
    summary = out / "summary.csv"
    if rows:
        write_csv_atomic(summary, rows)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; {len(rows)} other image(s) were written to {out}")
    return summary


def _unique_stems(files: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for path in files:
        # nnU-Net names channel files CASE_0000.png; its predictions are named CASE.png
        stem = re.sub(r"_0000$", "", path.stem)
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems
