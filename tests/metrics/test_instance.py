"""Tests for medseg.metrics.instance: a slow per-object-mask reference, MONAI's PanopticQualityMetric and
hand-made cases (split, merge, catastrophe, missed, gained, empty images, odd labels and dtypes)."""

from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from medseg.metrics import instance
from medseg.metrics.instance import (
    DSB_THRESHOLDS,
    ERROR_TYPES,
    aggregate_instance_metrics,
    aji,
    aji_plus,
    instance_metrics,
    match_instances,
    object_errors,
    overlap_table,
)

# ---------------------------------------------------------------- random label images


def random_balls(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """n discs (balls in 3D) of radius 3-8 painted in turn, so later ones cut into earlier ones."""
    grid = np.indices(shape)
    labels = np.zeros(shape, dtype=np.int64)
    for label in range(1, n + 1):
        center = rng.uniform(0, shape)
        radius = rng.uniform(3, 8)
        labels[sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2] = label
    return labels


def perturb(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A prediction: each object shifted by up to 1 pixel per axis, 10% dropped, 10% split in two along a
    random plane through the centroid, 10% merged into the previous object, plus 3 false objects."""
    grid = np.indices(truth.shape)
    pred = np.zeros_like(truth)
    label = 0
    for k in np.unique(truth[truth != 0]):
        shift = rng.integers(-1, 2, size=truth.ndim)
        mask = np.roll(truth == k, shift, axis=tuple(range(truth.ndim)))
        fate = rng.random()
        if fate < 0.1 or not mask.any():
            continue
        if fate < 0.2:
            centroid = [g[mask].mean() for g in grid]
            side = sum((g - c) * d for g, c, d in zip(grid, centroid, rng.normal(size=truth.ndim))) > 0
            pred[mask & side], pred[mask & ~side] = label + 1, label + 2
            label += 2
        elif fate < 0.3 and label > 0:
            pred[mask] = label
        else:
            label += 1
            pred[mask] = label
    extra = random_balls(rng, truth.shape, 3)
    pred[extra != 0] = extra[extra != 0] + label
    return pred


def scramble(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Give every object a random, non-consecutive label (0 stays background)."""
    lut = np.concatenate([[0], rng.choice(np.arange(1, 10**6), size=int(labels.max()), replace=False)])
    return lut[labels]


def random_pair(seed: int, shape: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = random_balls(rng, shape, n)
    return scramble(rng, truth), scramble(rng, perturb(rng, truth))


# ---------------------------------------------------------------- slow, obviously correct reference


def reference_overlaps(y_true: np.ndarray, y_pred: np.ndarray):
    """Labels, areas and dense (T, P) intersection/union/IoU matrices from one boolean mask per object."""
    true_ids = [v for v in np.unique(y_true) if v != 0]
    pred_ids = [v for v in np.unique(y_pred) if v != 0]
    inter = np.zeros((len(true_ids), len(pred_ids)), dtype=np.int64)
    union = np.zeros_like(inter)
    for i, t in enumerate(true_ids):
        true_mask = y_true == t
        for j, p in enumerate(pred_ids):
            pred_mask = y_pred == p
            inter[i, j] = np.sum(true_mask & pred_mask)
            union[i, j] = np.sum(true_mask | pred_mask)
    true_areas = np.array([np.sum(y_true == t) for t in true_ids], dtype=np.int64)
    pred_areas = np.array([np.sum(y_pred == p) for p in pred_ids], dtype=np.int64)
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    return true_ids, pred_ids, true_areas, pred_areas, inter, union, iou


def reference_matching(iou: np.ndarray, thresh: float) -> list[tuple[int, int]]:
    """Pairs with IoU > thresh; below 0.5 the maximum-cardinality, then maximum-IoU, matching."""
    if thresh >= 0.5:
        return [(i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1]) if iou[i, j] > thresh]
    graph = nx.Graph()
    for i in range(iou.shape[0]):
        for j in range(iou.shape[1]):
            if iou[i, j] > thresh:
                graph.add_edge(("t", i), ("p", j), weight=iou[i, j])
    pairs = []
    for a, b in nx.max_weight_matching(graph, maxcardinality=True):
        (_, i), (_, j) = sorted([a, b], key=lambda node: node[0] == "p")
        pairs.append((i, j))
    return pairs


def reference_aji(inter: np.ndarray, union: np.ndarray, iou: np.ndarray, true_areas, pred_areas) -> float:
    """Kumar et al.'s AJI, written as HoVer-Net's loop: each true object takes its best-IoU prediction."""
    c = u = 0
    used = set()
    for i in range(len(true_areas)):
        if iou.shape[1] and iou[i].max() > 0:
            j = int(np.argmax(iou[i]))  # first maximum: the lowest predicted label
            c += inter[i, j]
            u += union[i, j]
            used.add(j)
        else:
            u += true_areas[i]
    u += sum(pred_areas[j] for j in range(len(pred_areas)) if j not in used)
    return c / u if u else math.nan


def reference_aji_plus(inter, union, iou, true_areas, pred_areas) -> float:
    """AJI+ as HoVer-Net: one dense linear_sum_assignment on -IoU, pairs with IoU > 0 kept."""
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    c = inter[rows, cols].sum()
    u = union[rows, cols].sum()
    u += np.delete(true_areas, rows).sum() + np.delete(pred_areas, cols).sum()
    return c / u if u else math.nan


def reference_errors(y_true: np.ndarray, y_pred: np.ndarray, cutoff: float = 0.1) -> dict[str, int]:
    """DeepCell's ObjectAccuracy graph step, transcribed: link the unmatched objects, then classify each
    connected component by its highest-degree node."""
    true_ids, pred_ids, true_areas, pred_areas, inter, _, iou = reference_overlaps(y_true, y_pred)
    matched = reference_matching(iou, 0.5)
    lone_true = [i for i in range(len(true_ids)) if i not in {m[0] for m in matched}]
    lone_pred = [j for j in range(len(pred_ids)) if j not in {m[1] for m in matched}]
    graph = nx.Graph()
    graph.add_nodes_from([("true", i) for i in lone_true] + [("pred", j) for j in lone_pred])
    for i in lone_true:
        for j in lone_pred:
            if iou[i, j] >= cutoff or inter[i, j] > 0.5 * min(true_areas[i], pred_areas[j]):
                graph.add_edge(("true", i), ("pred", j))
    counts = dict.fromkeys(("missed", "gained", "split", "merge", "catastrophe"), 0)
    counts["correct"] = len(matched)
    for nodes in nx.connected_components(graph):
        sub = graph.subgraph(nodes)
        hub = max(sub.nodes, key=sub.degree)
        if sub.degree(hub) <= 1:
            for kind, _ in sub.nodes:
                counts["missed" if kind == "true" else "gained"] += 1
        elif sum(node[0] == hub[0] for node in sub.nodes) == 1:
            counts["split" if hub[0] == "true" else "merge"] += 1
        else:
            counts["catastrophe"] += 1
    return counts


RANDOM_CASES = [(0, (96, 96), 25), (1, (64, 80), 40), (7, (16, 32, 32), 15), (3, (48, 48), 30)]


@pytest.mark.parametrize(("seed", "shape", "n"), RANDOM_CASES)
def test_overlap_table_matches_reference(seed, shape, n):
    y_true, y_pred = random_pair(seed, shape, n)
    true_ids, pred_ids, true_areas, pred_areas, inter, _, iou = reference_overlaps(y_true, y_pred)
    table = overlap_table(y_true, y_pred)
    assert table.true_labels.tolist() == true_ids and table.pred_labels.tolist() == pred_ids
    np.testing.assert_array_equal(table.true_areas, true_areas)
    np.testing.assert_array_equal(table.pred_areas, pred_areas)
    dense = np.zeros_like(inter)
    dense[table.true_index, table.pred_index] = table.intersection
    np.testing.assert_array_equal(dense, inter)
    assert np.all(table.intersection > 0)
    np.testing.assert_allclose(table.iou, iou[table.true_index, table.pred_index], rtol=1e-15)


@pytest.mark.parametrize(("seed", "shape", "n"), RANDOM_CASES)
def test_matching_and_aji_match_reference(seed, shape, n):
    y_true, y_pred = random_pair(seed, shape, n)
    true_ids, pred_ids, true_areas, pred_areas, inter, union, iou = reference_overlaps(y_true, y_pred)
    table = overlap_table(y_true, y_pred)
    for thresh in (0.0, 0.1, 0.3, 0.5, 0.75, 0.9):
        pairs = reference_matching(iou, thresh)
        tp, iou_sum = len(pairs), float(sum(iou[i, j] for i, j in pairs))
        fp, fn = len(pred_ids) - tp, len(true_ids) - tp
        got = table.match(thresh)
        assert (got.tp, got.fp, got.fn) == (tp, fp, fn), thresh
        assert got.iou_sum == pytest.approx(iou_sum, abs=1e-12)
        assert got.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-15)
        assert got.pq == pytest.approx(iou_sum / (tp + fp / 2 + fn / 2), abs=1e-12)
        if tp:
            assert got.sq == pytest.approx(iou_sum / tp, abs=1e-12) and got.mean_matched_iou == got.sq
            assert got.pq == pytest.approx(got.sq * got.rq, abs=1e-12)
        else:
            assert math.isnan(got.sq) and got.pq == 0.0
        assert got.precision == tp / (tp + fp) and got.recall == tp / (tp + fn)
        # Every reported pair is a real pair with the reported IoU, and no object is used twice.
        lookup = {
            (true_ids[i], pred_ids[j]): iou[i, j] for i in range(len(true_ids)) for j in range(len(pred_ids))
        }
        for t, p, value in zip(got.matched_true, got.matched_pred, got.matched_iou):
            assert lookup[(t, p)] == pytest.approx(value) and value > thresh
        assert len(set(got.matched_true)) == len(set(got.matched_pred)) == got.tp
        if thresh >= 0.5:  # the matching is unique there
            assert sorted(zip(got.matched_true, got.matched_pred)) == sorted(
                (true_ids[i], pred_ids[j]) for i, j in pairs
            )
    assert table.aji() == pytest.approx(reference_aji(inter, union, iou, true_areas, pred_areas), abs=1e-12)
    expected_plus = reference_aji_plus(inter, union, iou, true_areas, pred_areas)
    assert table.aji_plus() == pytest.approx(expected_plus, abs=1e-12)
    assert aji(y_true, y_pred) == table.aji() and aji_plus(y_true, y_pred) == table.aji_plus()


@pytest.mark.parametrize(("seed", "shape", "n"), RANDOM_CASES)
def test_error_types_match_deepcell_rules(seed, shape, n):
    y_true, y_pred = random_pair(seed, shape, n)
    got = object_errors(y_true, y_pred)
    expected = reference_errors(y_true, y_pred)
    assert {name: got.counts()[name] for name in expected} == expected
    assert np.sum(got.true_error != "correct") == match_instances(y_true, y_pred).fn
    assert np.sum(got.pred_error == "correct") == got.correct


# ---------------------------------------------------------------- MONAI cross-check


def monai_panoptic(y_true: np.ndarray, y_pred: np.ndarray, thresh: float) -> dict[str, float]:
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")

    def pack(labels: np.ndarray):  # (1, 2, *spatial): instance ids, then class ids (1 = object)
        return torch.from_numpy(np.stack([labels, labels != 0])[None].astype(np.int32))

    names = ("pq", "sq", "rq")
    metric = metrics.PanopticQualityMetric(num_classes=1, metric_name=names, match_iou_threshold=thresh)
    metric(y_pred=pack(y_pred), y=pack(y_true))
    scores = {name: float(value[0]) for name, value in zip(names, metric.aggregate())}
    counts = metrics.PanopticQualityMetric(
        num_classes=1, match_iou_threshold=thresh, return_confusion_matrix=True
    )
    counts(y_pred=pack(y_pred), y=pack(y_true))
    tp, fp, fn, iou_sum = counts.aggregate()[0].tolist()
    return {**scores, "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou_sum}


@pytest.mark.parametrize(("seed", "shape", "n"), RANDOM_CASES)
@pytest.mark.parametrize("thresh", [0.5, 0.75])
def test_panoptic_quality_matches_monai(seed, shape, n, thresh):
    y_true, y_pred = random_pair(seed, shape, n)
    ours = match_instances(y_true, y_pred, thresh=thresh)
    reference = monai_panoptic(y_true, y_pred, thresh)
    assert (ours.tp, ours.fp, ours.fn) == (reference["tp"], reference["fp"], reference["fn"])
    for name in ("pq", "sq", "rq"):
        if name == "sq" and ours.tp == 0:  # no matched pair: we say NaN (undefined), MONAI's smoothing 0
            assert math.isnan(ours.sq) and reference["sq"] == 0.0
            continue
        # MONAI sums IoUs in float32 and adds 1e-6 to the denominators: agreement to 1e-6, not exactly.
        assert getattr(ours, name) == pytest.approx(reference[name], abs=1e-6), name


# ---------------------------------------------------------------- hand-made cases


def strip(*labels: int) -> np.ndarray:
    """A 1-pixel-high label image."""
    return np.array([labels], dtype=np.int64)


def test_identical_images_score_one():
    y_true, _ = random_pair(4, (64, 64), 20)
    result = instance_metrics(y_true, y_true)
    n = len(np.unique(y_true)) - 1
    assert (result["tp"], result["fp"], result["fn"], result["n_true"], result["count_error"]) == (
        n,
        0,
        0,
        n,
        0,
    )
    for name in ("precision@0.5", "recall@0.5", "f1@0.5", "pq", "sq", "rq", "aji", "aji_plus", "ap_dsb"):
        assert result[name] == 1.0, name
    assert result["f1_by_threshold"] == [1.0] * len(DSB_THRESHOLDS)
    assert (result["correct"], result["missed"], result["gained"], result["split"], result["merge"]) == (
        n,
        0,
        0,
        0,
        0,
    )


def error_zoo() -> tuple[np.ndarray, np.ndarray]:
    """One of each: correct, split, two merges (one through the containment rule), missed, gained,
    catastrophe, and a weak one-to-one overlap (counted as missed + gained, as DeepCell does)."""
    t = np.zeros((40, 16), dtype=np.int64)
    p = np.zeros_like(t)
    t[0:4, 0:4], p[0:4, 0:4] = 1, 11  # correct
    t[0:4, 6:14], p[0:4, 6:10], p[0:4, 10:14] = 2, 12, 13  # split: each half has IoU exactly 0.5
    t[6:10, 0:4], t[6:10, 4:8], p[6:10, 0:8] = 3, 4, 14  # merge
    t[12:15, 0:3] = 5  # missed
    p[12:15, 6:9] = 15  # gained
    t[18:22, 0:4], t[18:22, 4:8], p[18:20, 0:8], p[20:22, 0:8] = 6, 7, 16, 17  # catastrophe: IoUs 1/3
    t[24:28, 0:4], p[24:28, 3:7] = 8, 18  # IoU 4/28: linked but too weak to match
    t[30:38, 0:8], t[30:38, 8:16], t[38:40, 0:2], p[30:40, 0:16] = 10, 11, 12, 20  # merge; 12 only contained
    return t, p


def test_error_types_on_hand_made_image():
    y_true, y_pred = error_zoo()
    errors = object_errors(y_true, y_pred)
    assert errors.counts() == {
        "correct": 1,
        "missed": 2,
        "gained": 2,
        "split": 1,
        "merge": 2,
        "catastrophe": 1,
        "gained_from_split": 1,
        "missed_from_merge": 3,
        "true_in_catastrophe": 2,
        "pred_in_catastrophe": 2,
    }
    true_kind = dict(zip(errors.true_labels.tolist(), errors.true_error.tolist()))
    assert true_kind == {
        1: "correct",
        2: "split",
        3: "merge",
        4: "merge",
        5: "missed",
        6: "catastrophe",
        7: "catastrophe",
        8: "missed",
        10: "merge",
        11: "merge",
        12: "merge",
    }
    pred_kind = dict(zip(errors.pred_labels.tolist(), errors.pred_error.tolist()))
    assert pred_kind == {
        11: "correct",
        12: "split",
        13: "split",
        14: "merge",
        15: "gained",
        16: "catastrophe",
        17: "catastrophe",
        18: "gained",
        20: "merge",
    }
    assert reference_errors(y_true, y_pred) == {k: v for k, v in errors.counts().items() if k in ERROR_TYPES}
    # A higher cutoff drops the weak links: the catastrophe (IoU 1/3) falls apart into lone objects.
    assert object_errors(y_true, y_pred, cutoff=0.4).catastrophe == 0


def test_threshold_is_strict():
    y_true, y_pred = strip(1, 1, 1, 1), strip(2, 2, 3, 3)  # both predictions: IoU exactly 0.5
    assert match_instances(y_true, y_pred).tp == 0
    low = match_instances(y_true, y_pred, thresh=0.49)
    assert (low.tp, low.fp, low.fn, low.iou_sum) == (1, 1, 0, 0.5)
    with pytest.raises(ValueError, match="thresh"):
        match_instances(y_true, y_pred, thresh=1.0)


def test_low_threshold_maximises_the_number_of_matches():
    # True A = 1 (10 px) overlaps prediction 5 (IoU 9/12) and 6 (IoU 1/10); true B = 2 overlaps only 5
    # (IoU 2/12). Maximising the IoU total (MONAI) pairs A-5 alone; StarDist's objective pairs A-6, B-5.
    y_true = strip(*[1] * 10, 2, 2, 2)
    y_pred = strip(6, *[5] * 11, 0)
    result = match_instances(y_true, y_pred, thresh=0.05)
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    assert sorted(zip(result.matched_true.tolist(), result.matched_pred.tolist())) == [(1, 6), (2, 5)]
    assert result.iou_sum == pytest.approx(1 / 10 + 2 / 12)
    assert match_instances(y_true, y_pred, thresh=0.5).tp == 1


def test_aji_counts_a_merge_twice_and_aji_plus_once():
    y_true, y_pred = strip(1, 1, 1, 1, 2, 2, 2, 2), strip(*[9] * 8)
    assert aji(y_true, y_pred) == 8 / 16  # both objects pair with 9: C = 4 + 4, U = 8 + 8
    assert aji_plus(y_true, y_pred) == 4 / 12  # one pair (C 4, U 8), the other object adds 4 to U
    # Ties go to the lowest predicted label; either way: C = 2, U = 4 + the other half (2).
    assert aji(strip(1, 1, 1, 1), strip(2, 2, 3, 3)) == 2 / 6


def assert_same_metrics(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        # Relabelling reorders the pairs, so float sums may differ in the last bit.
        np.testing.assert_allclose(got[name], value, rtol=1e-12, err_msg=name)


def test_labels_and_dtypes_do_not_change_results():
    y_true, y_pred = random_pair(5, (48, 48), 15)
    expected = instance_metrics(y_true, y_pred)
    small_true = np.unique(y_true, return_inverse=True)[1].reshape(y_true.shape)
    small_pred = np.unique(y_pred, return_inverse=True)[1].reshape(y_pred.shape)
    rng = np.random.default_rng(0)

    def huge(y: np.ndarray) -> np.ndarray:
        return np.where(y != 0, y * 7919 + 2**40, 0)

    variants = [
        (small_true.astype(np.uint8), small_pred.astype(np.uint16)),
        (small_true.astype(np.int32), small_pred.astype(np.uint64)),
        (scramble(rng, small_true).astype(np.uint32), small_pred.astype(np.int8)),
        (huge(y_true), y_pred),  # int64 keys
        (huge(y_true), huge(y_pred)),  # keys would overflow int64: relabelled first
        (huge(y_true), -y_pred),  # negative labels: relabelled first
    ]
    for a, b in variants:
        assert_same_metrics(instance_metrics(a, b), expected)
    # Reported labels are the input's own.
    match = match_instances(huge(y_true), -y_pred)
    assert set(match.matched_true.tolist()) <= set(np.unique(huge(y_true)).tolist())
    assert match.tp > 0 and np.all(match.matched_pred < 0)
    # bool: one object each.
    mask_true, mask_pred = y_true != 0, y_pred != 0
    assert_same_metrics(
        instance_metrics(mask_true, mask_pred),
        instance_metrics(mask_true.astype(np.uint8), mask_pred.astype(np.uint8)),
    )
    assert instance_metrics(mask_true, mask_pred)["n_true"] == 1


def test_3d_matches_reference():
    y_true, y_pred = random_pair(6, (6, 24, 24), 12)
    _, _, true_areas, pred_areas, inter, union, iou = reference_overlaps(y_true, y_pred)
    assert match_instances(y_true, y_pred).tp == len(reference_matching(iou, 0.5))
    assert aji(y_true, y_pred) == pytest.approx(reference_aji(inter, union, iou, true_areas, pred_areas))


def test_empty_images():
    empty = np.zeros((8, 8), dtype=np.uint16)
    some = np.zeros((8, 8), dtype=np.uint16)
    some[1:3, 1:3], some[5:7, 5:7] = 4, 9
    both = instance_metrics(empty, empty)
    assert (both["tp"], both["fp"], both["fn"], both["n_true"], both["n_pred"]) == (0, 0, 0, 0, 0)
    for name in ("precision@0.5", "recall@0.5", "f1@0.5", "pq", "sq", "rq", "aji", "aji_plus", "ap_dsb"):
        assert math.isnan(both[name]), name
    missed_all = instance_metrics(some, empty)
    assert (missed_all["fn"], missed_all["missed"], missed_all["count_error"]) == (2, 2, -2)
    assert missed_all["f1@0.5"] == missed_all["pq"] == missed_all["aji"] == missed_all["ap_dsb"] == 0.0
    assert missed_all["recall@0.5"] == 0.0 and math.isnan(missed_all["precision@0.5"])
    assert math.isnan(missed_all["sq"])
    gained_all = instance_metrics(empty, some)
    assert (gained_all["fp"], gained_all["gained"], gained_all["f1@0.5"], gained_all["aji_plus"]) == (
        2,
        2,
        0,
        0,
    )
    assert gained_all["precision@0.5"] == 0.0 and math.isnan(gained_all["recall@0.5"])
    zero_size = np.zeros((0, 5), dtype=np.int64)
    assert match_instances(zero_size, zero_size).tp == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(4, 4\).*shape \(4, 5\)"):
        match_instances(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer instance labels"):
        aji(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="thresholds"):
        instance_metrics(np.zeros((4, 4), int), np.zeros((4, 4), int), thresholds=[])


def test_instance_metrics_values_and_json():
    y_true, y_pred = error_zoo()
    result = instance_metrics(y_true, y_pred)
    json.loads(json.dumps(result))  # plain Python values only
    assert (result["n_true"], result["n_pred"], result["count_error"]) == (11, 9, -2)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 8, 10)
    assert result["f1@0.5"] == 2 / (2 + 8 + 10) == result["rq"]
    ap = [
        tp / (tp + fp + fn) for tp, fp, fn in zip(*(result[f"{k}_by_threshold"] for k in ("tp", "fp", "fn")))
    ]
    assert result["ap_by_threshold"] == ap and result["ap_dsb"] == pytest.approx(np.mean(ap))
    # Only the exact match survives every threshold; nothing else reaches IoU 0.5.
    assert result["tp_by_threshold"] == [1] * 10 and result["ap_dsb"] == pytest.approx(1 / 19)
    assert result["split"] == 1 and result["merge"] == 2 and result["catastrophe"] == 1
    table = overlap_table(y_true, y_pred)
    assert result["aji"] == table.aji() and result["aji_plus"] == table.aji_plus()


def test_aggregate_pools_counts():
    perfect = strip(1, 1, 0, 0, 0, 0)
    crowd = strip(1, 0, 2, 0, 3, 0)
    results = [instance_metrics(perfect, perfect), instance_metrics(crowd, np.zeros_like(crowd))]
    pooled = aggregate_instance_metrics(results)
    assert pooled["num_images"] == 2 and (pooled["tp"], pooled["fp"], pooled["fn"]) == (1, 0, 3)
    assert pooled["f1@0.5"] == 2 / (2 + 3)  # pooled: 0.4
    assert pooled["image_mean_f1@0.5"] == 0.5  # per image: (1 + 0) / 2
    assert pooled["aji"] == 2 / (2 + 3)  # ΣC / ΣU
    assert pooled["ap_dsb"] == 1 / 4 and pooled["image_mean_ap_dsb"] == 0.5
    assert pooled["missed"] == 3 and pooled["image_mean_abs_count_error"] == 1.5
    # Undefined per-image scores (precision with nothing predicted) are skipped in image means.
    assert pooled["image_mean_precision@0.5"] == 1.0
    empty = aggregate_instance_metrics([])
    assert empty["num_images"] == 0 and math.isnan(empty["f1@0.5"]) and math.isnan(empty["image_mean_pq"])
    other = instance_metrics(perfect, perfect, thresholds=[0.5, 0.7])
    with pytest.raises(ValueError, match="thresholds"):
        aggregate_instance_metrics([results[0], other])


# ---------------------------------------------------------------- packaging


def test_docstring_examples():
    assert doctest.testmod(instance).failed == 0


def test_module_does_not_import_torch():
    code = "import medseg.metrics.instance, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
