"""Instance-task pieces of the train workflow: per-epoch validation and threshold tuning after training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from medseg.config import Config


class InstanceValidation:
    """Validation on whole images: loss, and object F1 / PQ at IoU 0.5 pooled over the images.

    The watershed runs with the config's thresholds (tuning happens once, after training). Returns logs
    ``val_loss``, ``val_f1``, ``val_pq`` and, for typed instances, ``val_type_accuracy`` (share of matched
    objects given the right type).
    """

    def __init__(self, config: Config, cases, loss_fn) -> None:
        from medseg.data.instance import InstanceTargets

        inst = config.instance
        self.config = config
        self.images = cases.val_images
        self.labels = cases.val_labels
        self.loss_fn = loss_fn
        self.targets = InstanceTargets(
            cases.val_types, alpha=inst.alpha, beta=inst.beta, erosion=inst.erosion, boundary=inst.boundary
        )
        self.types = cases.val_types

    def __call__(self, trainer) -> dict[str, float]:
        import torch

        from medseg.inference.predictor import Predictor

        predictor = Predictor(trainer.model, self.config, trainer.device)
        predictor.bf16 = trainer.bf16
        losses, results = [], []
        for index, (image, label) in enumerate(zip(self.images, self.labels)):
            logits = predictor.logits(torch.from_numpy(image)[None])
            target = torch.from_numpy(self.targets.full(label, index))[None].to(trainer.device)
            losses.append(float(self.loss_fn(logits, target)))
            maps = predictor.layout.activate(logits)[0].cpu().numpy()
            prediction = predictor.instances_from_maps(maps)
            results.append(score_instances(label, prediction, self.types[index], self.config))
        logs = {"val_loss": float(np.mean(losses)), **pooled_scores(results)}
        return {k: (v if math.isfinite(v) else 0.0) for k, v in logs.items()}


def score_instances(truth: np.ndarray, prediction, type_lookup: np.ndarray | None, config: Config) -> dict:
    """Counts for pooling: tp, fp, fn, summed matched IoU, and typed-match counts.

    Args:
        truth: ``(H, W)`` true instance ids.
        prediction: a :class:`~medseg.inference.predictor.Prediction` of an instance run.
        type_lookup: true id -> type index (-1 = untyped), or None.
        config: the run config (type names).
    """
    from medseg.metrics.instance import match_instances

    match = match_instances(truth, prediction.labels, thresh=0.5)
    out = {"tp": match.tp, "fp": match.fp, "fn": match.fn, "iou_sum": match.sq * match.tp}
    names = config.instance.classes
    if names and type_lookup is not None:
        index = {name: i for i, name in enumerate(names)}
        correct = scored = 0
        for true_id, pred_id in matched_pairs(match):
            true_type = type_lookup[true_id] if true_id < len(type_lookup) else -1
            if true_type < 0 or pred_id not in prediction.types:
                continue
            scored += 1
            correct += int(index[prediction.types[pred_id]] == true_type)
        out.update(type_correct=correct, type_scored=scored)
    return out


def matched_pairs(match) -> list[tuple[int, int]]:
    """(true id, predicted id) of the matched objects of a ``match_instances`` result."""
    return [(int(t), int(p)) for t, p in zip(match.matched_true, match.matched_pred)]


def pooled_scores(results: list[dict]) -> dict[str, float]:
    """Dataset-level F1 and PQ from pooled counts (as StarDist's ``matching_dataset``), type accuracy."""
    tp = sum(r["tp"] for r in results)
    fp = sum(r["fp"] for r in results)
    fn = sum(r["fn"] for r in results)
    denominator = tp + 0.5 * (fp + fn)
    f1 = tp / denominator if denominator else float("nan")
    sq = sum(r["iou_sum"] for r in results) / tp if tp else 0.0
    logs = {"val_f1": f1, "val_pq": f1 * sq if denominator else float("nan")}
    scored = sum(r.get("type_scored", 0) for r in results)
    if any("type_scored" in r for r in results):
        logs["val_type_accuracy"] = sum(r["type_correct"] for r in results) / scored if scored else 0.0
    return logs


def tune_run_thresholds(run: Path, config: Config, cases, device) -> dict:
    """Tune the watershed thresholds of a trained run on its validation images; write thresholds.json.

    Uses the best checkpoint, predicts each validation image once, then searches the thresholds (see
    :func:`medseg.postprocess.tune_watershed`) maximising pooled object F1 at IoU 0.5 (or PQ with
    ``instance.tune: pq``).

    Returns:
        What was written: ``{"metric", "score", "default_score", "params", "trials"}``.
    """
    import torch

    from medseg.inference.predictor import Predictor
    from medseg.io import write_json_atomic
    from medseg.postprocess import deep_watershed
    from medseg.postprocess.tuning import tune_typing, tune_watershed

    predictor = Predictor.from_run(run, device=device.type)
    inst = config.instance
    # with a differential, its types' objects also drive the score (see tune_watershed's focus)
    focus_types = [inst.classes.index(name) for name in inst.differential]
    heads, focus = [], []
    for image, truth, lookup in zip(cases.val_images, cases.val_labels, cases.val_types):
        with torch.inference_mode():
            logits = predictor.logits(torch.from_numpy(image)[None])
            maps = predictor.layout.activate(logits)[0].cpu().numpy()
        split = predictor.layout.split(maps)
        heads.append((split["inner"], split["outer"], split["fgbg"][1]))
        if focus_types and lookup is not None:
            in_focus = np.isin(np.append(lookup, -1)[np.where(truth > 0, truth, -1)], focus_types)
            focus.append((split["classes"], np.where(in_focus, truth, 0)))
    result = tune_watershed(
        heads,
        cases.val_labels,
        metric=inst.tune,
        start=predictor.watershed,
        focus=focus if len(focus) == len(heads) and focus else None,
        focus_types=focus_types,
    )
    summary = {
        "metric": config.instance.tune
        + (f" (mean with F1 of {', '.join(inst.differential)})" if focus else ""),
        "score": result.score,
        "default_score": result.start_score,
        "params": result.params.to_dict(),
        "images": len(heads),
        "trials": result.trials,
    }
    if focus and len(focus) == len(heads):
        # the count of the differential group also depends on how objects are typed: tune that rule
        # on the same images, with the watershed thresholds just found
        instances = [deep_watershed(*maps, **result.params.to_dict()) for maps in heads]
        typing = tune_typing(
            instances, [f[0] for f in focus], [f[1] for f in focus], inst.classes, inst.differential
        )
        summary["typing"] = typing.params.to_dict()
        summary["typing_score"] = {
            "metric": "differential count exact",
            "score": typing.score,
            "default_score": typing.start_score,
            "trials": typing.trials,
        }
    write_json_atomic(run / "thresholds.json", summary)
    print(
        f"tuned watershed thresholds on {len(heads)} validation images: {config.instance.tune} "
        f"{result.start_score:.3f} -> {result.score:.3f} ({result.params.to_dict()})",
        file=sys.stderr,
    )
    if "typing" in summary:
        print(
            f"tuned typing of {', '.join(inst.differential)}: count exact in "
            f"{typing.start_score:.0%} -> {typing.score:.0%} of images ({summary['typing']})",
            file=sys.stderr,
        )
    return summary
