"""``medseg evaluate``: score a run on a labelled dataset, with overlays of the best and worst cases."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.dataset import load_image, load_label, open_dataset
from medseg.errors import DataError
from medseg.io import write_image, write_json_atomic, write_text_atomic

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
    from medseg.inference.predictor import Predictor
    from medseg.metrics import SemanticMetrics
    from medseg.report import class_colors, comparison_panel

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
        import json

        val = set(json.loads((run / "splits.json").read_text())["val"])
        names = [n for n in names if n in val]
    if not names:
        raise DataError(f"{data_path}: no labelled cases to evaluate (split {split})")

    class_names = predictor.class_names
    metrics = SemanticMetrics(len(class_names), spacing=spacing)
    ignore = config.data.ignore_index
    rows, kept = [], []
    from tqdm.auto import tqdm

    for name in tqdm(names, desc="evaluate", unit="image", disable=None, leave=False):
        case = data.case(name)
        image = load_image(case)
        truth = load_label(case, image.shape)
        unknown = sorted(set(np.unique(truth).tolist()) - set(range(len(class_names))) - {ignore})
        if unknown:
            raise DataError(f"{case.label}: label values {unknown} are not classes of this run")
        pred = predictor.predict(image, str(case.images[0])).labels
        scored_truth = np.where(truth == ignore, -1, truth) if ignore >= 0 else truth
        scores = metrics.update(scored_truth, pred)
        row: dict[str, Any] = {"case": name}
        for metric in ("dice", "iou", "hd95"):
            for c, class_name in enumerate(class_names[1:], 1):
                row[f"{metric}_{class_name}"] = float(scores[metric][c])
        fg = scores["dice"][1:]
        row["mean_dice"] = float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")
        rows.append(row)
        kept.append((name, image, truth, pred, row["mean_dice"]))

    summary = {"dataset": str(data_path.resolve()), "split": split, **metrics.aggregate(class_names)}
    eval_dir = run / "eval"
    write_json_atomic(eval_dir / "metrics.json", summary)
    write_text_atomic(eval_dir / "per_image.csv", _csv(rows))

    overlay_dir = eval_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    for old in overlay_dir.glob("*.png"):
        old.unlink()
    colors = class_colors(config.data.labels, config.data.colors)
    ranked = sorted(kept, key=lambda k: (np.nan_to_num(k[4], nan=-1.0), k[0]))
    picks = [("worst", i, k) for i, k in enumerate(ranked[:N_OVERLAYS], 1)]
    picks += [
        ("best", i, k) for i, k in enumerate(ranked[::-1][:N_OVERLAYS], 1) if k not in ranked[:N_OVERLAYS]
    ]
    for tag, rank, (name, image, truth, pred, score) in picks:
        panel = comparison_panel(image, truth, pred, colors, caption=f"{name}   mean dice {score:.3f}")
        write_image(overlay_dir / f"{tag}_{rank}_{name}.png", panel)
    return summary


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: (f"{v:.6g}" if isinstance(v, float) and v == v else ("" if isinstance(v, float) else v))
                for k, v in row.items()
            }
        )
    return buffer.getvalue()
