"""``medseg evaluate``: score a run on a labelled dataset, with overlays of the best and worst cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.dataset import label_values_error, load_image, load_label, open_dataset
from medseg.errors import DataError, RunError
from medseg.io import write_csv_atomic, write_image, write_json_atomic

N_OVERLAYS = 3


def evaluate(
    run_dir: str | Path,
    dataset: str | Path | None = None,
    *,
    split: str = "auto",
    spacing: float | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Predict every labelled case of ``dataset`` and score it; writes ``RUN/eval/``.

    Args:
        run_dir: the run folder.
        dataset: a labelled dataset; default the run's training dataset.
        split: ``val`` (the run's validation cases), ``all``, or ``auto``: ``val`` when ``dataset`` is the
            dataset the run was trained on (so training cases never inflate the score), else ``all``.
        spacing: pixel size for HD95 (default 1 pixel).
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The summary written to ``RUN/eval/metrics.json``: ``{"dataset", "split", "num_images",
        "per_class": {class: {metric: mean}}, "mean": {metric: mean over foreground classes}}``.
    """
    from tqdm.auto import tqdm

    from medseg.inference.predictor import Predictor
    from medseg.metrics import SemanticMetrics

    run = Path(run_dir)
    predictor = Predictor.from_run(run, device=device)
    config = predictor.config
    data_path = Path(dataset) if dataset is not None else Path(config.data.path)
    data = open_dataset(data_path, classes=predictor.class_names)
    if data.labels != config.data.labels:
        raise DataError(f"{data_path}: classes {data.labels} differ from the run's {config.data.labels}")
    names = [c.name for c in data.cases if c.label is not None]
    same_dataset = data_path.resolve() == Path(config.data.path).resolve()
    if split == "auto":
        split = "val" if same_dataset else "all"
    if split == "val":
        if not same_dataset:
            raise DataError(f"{data_path}: --split val only applies to the dataset the run was trained on")
        val = set(_read_splits(run)["val"])
        if not val:
            raise RunError(f"{run}: trained without validation cases; use --split all or another dataset")
        names = [n for n in names if n in val]
    if not names:
        raise DataError(f"{data_path}: no labelled cases to evaluate (split {split})")

    class_names = predictor.class_names
    ignore = config.data.ignore_index
    metrics = SemanticMetrics(len(class_names), spacing=spacing)
    rows = []
    for name in tqdm(names, desc="evaluate", unit="image", disable=None, leave=False):
        _, truth, pred = _predict_case(predictor, data.case(name))
        scores = metrics.update(np.where(truth == ignore, -1, truth) if ignore >= 0 else truth, pred)
        row: dict[str, Any] = {"case": name}
        for metric in ("dice", "iou", "hd95"):
            for c, class_name in enumerate(class_names[1:], 1):
                row[f"{metric}_{class_name}"] = float(scores[metric][c])
        fg = scores["dice"][1:]
        row["mean_dice"] = float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")
        rows.append(row)

    summary = {"dataset": str(data_path.resolve()), "split": split, **metrics.aggregate(class_names)}
    eval_dir = run / "eval"
    write_json_atomic(eval_dir / "metrics.json", summary)
    write_csv_atomic(eval_dir / "per_image.csv", rows)
    _write_overlays(eval_dir / "overlays", predictor, data, rows)
    return summary


def _read_splits(run: Path) -> dict[str, list[str]]:
    try:
        return json.loads((run / "splits.json").read_text())
    except (OSError, ValueError) as exc:
        raise RunError(
            f"{run / 'splits.json'}: cannot read the run's split ({exc}); use --split all"
        ) from None


def _predict_case(predictor, case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, checked ground truth and prediction of one case."""
    config = predictor.config
    image = load_image(case)
    truth = load_label(case, image.shape)
    problem = label_values_error(case.label, truth, config.data.labels, config.data.ignore_index)
    if problem:
        raise DataError(problem)
    return image, truth, predictor.predict(image, str(case.images[0])).labels


def _write_overlays(folder: Path, predictor, data, rows: list[dict[str, Any]]) -> None:
    """Comparison panels of the N worst and N best cases by mean Dice (re-predicted: only scores are kept
    in memory while evaluating, so evaluation memory does not grow with the dataset)."""
    from medseg.report import class_colors, comparison_panel

    config = predictor.config
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    ranked = sorted(rows, key=lambda r: (np.nan_to_num(r["mean_dice"], nan=-1.0), r["case"]))
    worst = ranked[:N_OVERLAYS]
    best = [r for r in ranked[::-1][:N_OVERLAYS] if r not in worst]
    colors = class_colors(config.data.labels, config.data.colors)
    for tag, picked in (("worst", worst), ("best", best)):
        for rank, row in enumerate(picked, 1):
            image, truth, pred = _predict_case(predictor, data.case(row["case"]))
            if config.data.ignore_index >= 0:  # unannotated pixels are neither right nor wrong
                unannotated = truth == config.data.ignore_index
                truth, pred = np.where(unannotated, 0, truth), np.where(unannotated, 0, pred)
            caption = f"{row['case']}   mean dice {row['mean_dice']:.3f}"
            panel = comparison_panel(image, truth, pred, colors, caption=caption)
            write_image(folder / f"{tag}_{rank}_{row['case']}.png", panel)
