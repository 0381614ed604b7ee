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
    from medseg.workflows.classify import evaluate_classifier, is_classification_run

    if is_classification_run(run_dir):
        return evaluate_classifier(run_dir, dataset, split=split, device=device)
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
    key = "instances" if config.task == "instance" else "label"
    names = [c.name for c in data.cases if getattr(c, key) is not None]
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

    if config.task == "instance":
        return _evaluate_instances(run, predictor, data, names, split, data_path)
    class_names = predictor.class_names
    ignore = config.data.ignore_index
    metrics = SemanticMetrics(len(class_names), spacing=spacing, regions=predictor.regions)
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
    problem = label_values_error(
        case.label, truth, config.data.labels, config.data.ignore_index, config.data.regions
    )
    if problem:
        raise DataError(problem)
    return image, truth, predictor.predict(image, str(case.images[0])).labels


def _write_overlays(folder: Path, predictor, data, rows: list[dict[str, Any]]) -> None:
    """Comparison panels of the N worst and N best cases by mean Dice (re-predicted: only scores are kept
    in memory while evaluating, so evaluation memory does not grow with the dataset)."""
    from medseg.report import class_colors, comparison_panel, display_channels

    config = predictor.config
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    # cases with nothing to score (no class in truth or prediction: Dice NaN) are neither best nor worst
    scored = [r for r in rows if np.isfinite(r["mean_dice"])] or rows
    ranked = sorted(scored, key=lambda r: (np.nan_to_num(r["mean_dice"], nan=-1.0), r["case"]))
    worst = ranked[:N_OVERLAYS]
    best = [r for r in ranked[::-1][:N_OVERLAYS] if r not in worst]
    colors = class_colors(config.data.labels, config.data.colors)
    for tag, picked in (("worst", worst), ("best", best)):
        for rank, row in enumerate(picked, 1):
            image, truth, pred = _predict_case(predictor, data.case(row["case"]))
            if config.data.ignore_index >= 0:  # unannotated pixels are neither right nor wrong
                unannotated = truth == config.data.ignore_index
                truth, pred = np.where(unannotated, 0, truth), np.where(unannotated, 0, pred)
            image = display_channels(image, int(config.data.slicing.get("context", 0)))
            caption = f"{row['case']}   mean dice {row['mean_dice']:.3f}"
            panel = comparison_panel(image, truth, pred, colors, caption=caption, regions=predictor.regions)
            write_image(folder / f"{tag}_{rank}_{row['case']}.png", panel)


def _evaluate_instances(run: Path, predictor, data, names: list[str], split: str, data_path: Path) -> dict:
    """Instance metrics per image and pooled, count errors, type accuracy, and match overlays."""
    from tqdm.auto import tqdm

    from medseg.data.dataset import load_instances
    from medseg.metrics.instance import aggregate_instance_metrics, instance_metrics, match_instances
    from medseg.workflows.instance import matched_pairs

    inst = predictor.config.instance
    group = set(inst.differential)
    rows, results = [], []
    typed_correct = typed_scored = group_correct = group_scored = 0
    for name in tqdm(names, desc="evaluate", unit="image", disable=None, leave=False):
        case = data.case(name)
        image = load_image(case)
        truth, true_types = load_instances(case, image.shape)
        prediction = predictor.predict(image, str(case.images[0]))
        scores = instance_metrics(truth, prediction.labels)
        results.append(scores)
        row: dict[str, Any] = {"case": name, **{k: v for k, v in scores.items() if np.isscalar(v)}}
        row.pop("iou_sum")  # pooling sums, not per-image results
        for key in [k for k in row if k.startswith("aji_") and k.endswith(("_intersection", "_union"))]:
            row.pop(key)
        n_true, n_pred = int(scores["n_true"]), int(scores["n_pred"])
        row["count_error"] = n_pred - n_true
        row["count_relative_error"] = (n_pred - n_true) / n_true if n_true else float("nan")
        if inst.classes:
            pairs = matched_pairs(match_instances(truth, prediction.labels, thresh=0.5))
            scored = [(true_types.get(t), prediction.types.get(p)) for t, p in pairs if t in true_types]
            correct = sum(a == b for a, b in scored)
            typed_correct, typed_scored = typed_correct + correct, typed_scored + len(scored)
            in_group = [(a, b) for a, b in scored if a in group]
            group_correct += sum(a == b for a, b in in_group)
            group_scored += len(in_group)
            row["type_accuracy"] = correct / len(scored) if scored else float("nan")
            if group:
                present = set(np.unique(truth).tolist()) - {0}
                true_group = sum(true_types.get(i) in group for i in present)
                pred_group = sum(t in group for t in prediction.types.values())
                row["differential_count_true"] = true_group
                row["differential_count_pred"] = pred_group
                row["differential_count_exact"] = int(true_group == pred_group)
        rows.append(row)

    pooled = aggregate_instance_metrics(results)
    summary: dict[str, Any] = {
        "dataset": str(data_path.resolve()),
        "split": split,
        "task": "instance",
        "num_images": len(rows),
        "pooled": pooled,
        "count_exact_fraction": float(np.mean([r["count_error"] == 0 for r in rows])),
        "mean_absolute_count_error": float(np.mean([abs(r["count_error"]) for r in rows])),
    }
    if inst.classes:
        summary["type_accuracy"] = typed_correct / typed_scored if typed_scored else float("nan")
        if group:
            summary["differential_type_accuracy"] = (
                group_correct / group_scored if group_scored else float("nan")
            )
            summary["differential_count_exact_fraction"] = float(
                np.mean([r["differential_count_exact"] for r in rows])
            )
    eval_dir = run / "eval"
    write_json_atomic(eval_dir / "metrics.json", summary)
    write_csv_atomic(eval_dir / "per_image.csv", rows)
    _write_instance_overlays(eval_dir / "overlays", predictor, data, rows)
    return summary


def _write_instance_overlays(folder: Path, predictor, data, rows: list[dict[str, Any]]) -> None:
    """Object-level panels (matched green, false positives red, misses yellow) of the worst and best cases
    by F1 at IoU 0.5."""
    from medseg.data.dataset import load_instances
    from medseg.metrics.instance import match_instances
    from medseg.report import instance_panel
    from medseg.workflows.instance import matched_pairs

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    ranked = sorted(rows, key=lambda r: (np.nan_to_num(r["f1@0.5"], nan=-1.0), r["case"]))
    worst = ranked[:N_OVERLAYS]
    best = [r for r in ranked[::-1][:N_OVERLAYS] if r not in worst]
    for tag, picked in (("worst", worst), ("best", best)):
        for rank, row in enumerate(picked, 1):
            case = data.case(row["case"])
            image = load_image(case)
            truth, _ = load_instances(case, image.shape)
            pred = predictor.predict(image, str(case.images[0])).labels
            pairs = matched_pairs(match_instances(truth, pred, thresh=0.5))
            found = f"objects {row['n_true']} true / {row['n_pred']} found"
            caption = f"{row['case']}   F1 {row['f1@0.5']:.3f}   {found}"
            write_image(
                folder / f"{tag}_{rank}_{row['case']}.png",
                instance_panel(image, truth, pred, pairs, caption=caption),
            )
