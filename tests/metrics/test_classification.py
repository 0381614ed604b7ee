"""Tests for the classification metrics: hand-computed cases, slow reference implementations written here,
and scikit-learn as an optional second reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg.io import write_json_atomic
from medseg.metrics.classification import (
    classification_metrics,
    expected_calibration_error,
    one_vs_rest_auc,
    reliability_bins,
)


def _probs_for(y_pred: list[int], k: int, peak: float = 0.7) -> np.ndarray:
    """(N, K) rows that sum to 1 with their maximum at ``y_pred``."""
    probs = np.full((len(y_pred), k), (1 - peak) / (k - 1))
    probs[np.arange(len(y_pred)), y_pred] = peak
    return probs


def _random_case(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and softmax-like probabilities that are informative but far from perfect."""
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.0
    probs = np.exp(logits)
    return y, probs / probs.sum(axis=1, keepdims=True)


# --- slow references: direct transcriptions of the definitions --------------------------------------


def _reference_auc(y: np.ndarray, scores: np.ndarray, c: int) -> float:
    """Fraction of (positive, negative) pairs ordered correctly, ties counting one half."""
    pos, neg = scores[y == c], scores[y != c]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def _reference_ece(y: np.ndarray, probs: np.ndarray, n_bins: int) -> float:
    total = 0.0
    for b in range(n_bins):
        lower, upper = b / n_bins, (b + 1) / n_bins
        members = [
            i for i in range(len(y)) if (lower < probs[i].max() <= upper) or (b == 0 and probs[i].max() == 0)
        ]
        if members:
            confidence = np.mean([probs[i].max() for i in members])
            accuracy = np.mean([int(np.argmax(probs[i])) == y[i] for i in members])
            total += len(members) / len(y) * abs(accuracy - confidence)
    return total


def _reference_per_class(y: np.ndarray, probs: np.ndarray) -> dict[str, list[float]]:
    k = probs.shape[1]
    pred = [int(np.argmax(row)) for row in probs]
    out: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for c in range(k):
        tp = sum(1 for t, p in zip(y, pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y, pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y, pred) if t == c and p != c)
        out["precision"].append(tp / (tp + fp) if tp + fp else math.nan)
        out["recall"].append(tp / (tp + fn) if tp + fn else math.nan)
        out["f1"].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    return out


# --- hand-computed cases ------------------------------------------------------------------------------


def test_three_class_case_computed_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0, 1]
    m = classification_metrics(y_true, _probs_for(y_pred, 3), ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 1, 3]]
    assert m["num_samples"] == 10
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 5) / 3)
    assert m["balanced_accuracy"] == m["macro_recall"]
    expected = {
        "a": (2 / 3, 2 / 3, 4 / 6, 3),
        "b": (1 / 3, 1 / 2, 2 / 5, 2),
        "c": (3 / 4, 3 / 5, 6 / 9, 5),
    }
    for name, (precision, recall, f1, support) in expected.items():
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision, recall, f1))
        assert row["support"] == support
    assert m["macro_f1"] == pytest.approx((4 / 6 + 2 / 5 + 6 / 9) / 3)
    assert m["macro_precision"] == pytest.approx((2 / 3 + 1 / 3 + 3 / 4) / 3)
    assert m["class_names"] == ["a", "b", "c"]


def test_auc_by_hand_with_ties() -> None:
    y = np.array([0, 0, 1, 1])
    # class 1 scores: positives 0.5, 0.8; negatives 0.5, 0.1 -> pairs: tie, win, win, win = 3.5 / 4
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    assert one_vs_rest_auc(y, probs).tolist() == [0.875, 0.875]


def test_perfect_classifier_scores_one() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    m = classification_metrics(y, _probs_for(y.tolist(), 3, peak=1.0), ["a", "b", "c"])
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == m["macro_auc"] == 1.0
    assert m["ece"] == 0.0
    assert np.array_equal(np.diag(m["confusion_matrix"]), np.bincount(y))


def test_constant_probabilities_give_auc_one_half() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    probs = np.full((7, 3), 1 / 3)
    assert one_vs_rest_auc(y, probs) == pytest.approx([0.5, 0.5, 0.5])
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 0, 0], [2, 0, 0], [3, 0, 0]]  # a tie goes to the lowest id
    assert m["macro_auc"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3)


def test_reversed_scores_give_auc_zero() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1]])
    assert one_vs_rest_auc(y, probs).tolist() == [0.0, 0.0]


def test_single_class_present() -> None:
    y = np.zeros(4, dtype=int)
    probs = _probs_for([0, 0, 1, 2], 3)
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == m["balanced_accuracy"] == 0.5  # the mean recall over present classes only
    assert math.isnan(m["per_class"]["b"]["recall"]) and math.isnan(m["per_class"]["c"]["recall"])
    assert m["per_class"]["b"]["precision"] == 0.0 and m["per_class"]["b"]["f1"] == 0.0  # predicted, absent
    assert math.isnan(m["macro_auc"])  # no class has both positives and negatives
    assert all(math.isnan(row["auc"]) for row in m["per_class"].values())
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)


def test_class_absent_from_truth_and_prediction_is_skipped() -> None:
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.2, 0.6, 0.2]])
    m = classification_metrics(y, probs, ["a", "b", "never"])
    never = m["per_class"]["never"]
    assert math.isnan(never["precision"]) and math.isnan(never["recall"]) and math.isnan(never["f1"])
    assert math.isnan(never["auc"]) and never["support"] == 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["macro_auc"] == pytest.approx(np.mean(one_vs_rest_auc(y, probs)[:2]))


def test_ece_is_zero_when_every_bin_is_calibrated() -> None:
    # 10 samples at confidence 0.8 with 8 right, 5 at 0.6 with 3 right (different bins of 15)
    probs = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 5)
    y = np.array([0] * 8 + [1] * 2 + [0] * 3 + [1] * 2)
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(y, probs)
    filled = np.flatnonzero(bins["count"])
    assert filled.tolist() == [8, 11]  # 0.6 in (8/15, 9/15], 0.8 in (11/15, 12/15]
    assert bins["accuracy"][filled] == pytest.approx([0.6, 0.8])
    assert bins["count"][filled].tolist() == [5, 10]
    assert bins["confidence"][filled] == pytest.approx([0.6, 0.8])
    assert np.isnan(bins["accuracy"][0]) and np.isnan(bins["confidence"][0])


def test_ece_of_an_overconfident_classifier() -> None:
    probs = np.array([[1.0, 0.0]] * 4)
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.5)
    # two bins: 0.9 with 1 of 2 right (gap 0.4), 0.55 with both right (gap 0.45)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.45, 0.55]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.5 * 0.4 + 0.5 * 0.45)


def test_bins_are_closed_on_the_right() -> None:
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.4, 0.6], [1.0, 0.0]])
    bins = reliability_bins(np.array([1, 0, 1, 0]), probs, n_bins=5)
    assert bins["count"].tolist() == [0, 0, 2, 1, 1]  # 0.6 -> (0.4, 0.6], 0.8 -> (0.6, 0.8], 1.0 -> last
    assert bins["lower"].tolist() == [0.0, 0.2, 0.4, 0.6, 0.8]
    zero = reliability_bins(np.array([0]), np.array([[0.0, 0.0]]), n_bins=5)
    assert zero["count"].tolist() == [1, 0, 0, 0, 0]


# --- random inputs against the slow references --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_references_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, probs = _random_case(rng, 120, 4)
    if seed == 2:
        probs = np.round(probs, 1)  # many ties in the scores and confidences on bin edges
        probs = np.clip(probs, 0, 1)
    m = classification_metrics(y, probs, list("abcd"))
    reference = _reference_per_class(y, probs)
    for c, name in enumerate("abcd"):
        for metric in ("precision", "recall", "f1"):
            assert m["per_class"][name][metric] == pytest.approx(reference[metric][c], nan_ok=True)
        assert m["per_class"][name]["auc"] == pytest.approx(_reference_auc(y, probs[:, c], c))
    assert m["ece"] == pytest.approx(_reference_ece(y, probs, 15))
    assert expected_calibration_error(y, probs, n_bins=7) == pytest.approx(_reference_ece(y, probs, 7))
    pred = probs.argmax(axis=1)
    cm = [[int(np.sum((y == t) & (pred == p))) for p in range(4)] for t in range(4)]
    assert m["confusion_matrix"] == cm
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert sum(row["count"] for row in m["reliability"]) == 120


def test_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    y, probs = _random_case(rng, 300, 5)
    m = classification_metrics(y, probs, list("abcde"))
    pred = probs.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(metrics.f1_score(y, pred, average="macro"))
    assert m["macro_auc"] == pytest.approx(
        metrics.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert m["confusion_matrix"] == metrics.confusion_matrix(y, pred, labels=range(5)).tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(y, pred, labels=range(5))
    for c, name in enumerate("abcde"):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[c], recall[c], f1[c]))
        assert row["support"] == support[c]
    # tied scores: each class against the rest as a binary problem
    tied = np.round(probs, 1)
    for c in range(5):
        expected = metrics.roc_auc_score(y == c, tied[:, c])
        assert one_vs_rest_auc(y, tied)[c] == pytest.approx(expected)


def test_undefined_values_follow_scikit_learn_zero_division_nan() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 0, 1, 1, 1, 0])
    pred = [0, 2, 1, 1, 0, 0]  # class 2 predicted but absent from the truth, class 3 neither
    m = classification_metrics(y, _probs_for(pred, 4), list("abcd"))
    kwargs = {"labels": range(4), "average": "macro", "zero_division": np.nan}
    assert m["macro_f1"] == pytest.approx(metrics.f1_score(y, pred, **kwargs))
    assert m["macro_precision"] == pytest.approx(metrics.precision_score(y, pred, **kwargs))
    assert m["macro_recall"] == pytest.approx(metrics.recall_score(y, pred, **kwargs))


# --- output format and input checks -------------------------------------------------------------------


def test_result_is_json_ready(tmp_path) -> None:
    y, probs = _random_case(np.random.default_rng(3), 20, 3)
    m = classification_metrics(y, probs, ["x", "y", "z"], n_bins=10)
    write_json_atomic(tmp_path / "metrics.json", m)
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["confusion_matrix"] == m["confusion_matrix"]
    assert len(loaded["reliability"]) == 10
    assert {"lower", "upper", "count", "confidence", "accuracy"} == set(loaded["reliability"][0])
    empty = [row for row in loaded["reliability"] if row["count"] == 0]
    assert empty and all(row["accuracy"] is None for row in empty)  # NaN becomes null


@pytest.mark.parametrize(
    ("y", "probs", "message"),
    [
        (np.array([0, 1]), np.full((3, 2), 0.5), "shape"),
        (np.array([0, 2]), np.full((2, 2), 0.5), "class id 2"),
        (np.array([0, -1]), np.full((2, 2), 0.5), "class id -1"),
        (np.array([0.0, 1.0]), np.full((2, 2), 0.5), "integer"),
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 0.5]]), "softmax"),
        (np.array([0, 1]), np.array([[np.nan, 0.5], [0.5, 0.5]]), "finite"),
        (np.array([], dtype=int), np.zeros((0, 2)), "no samples"),
        (np.array([0, 1]), np.full(2, 0.5), r"\(N, K\)"),
    ],
)
def test_bad_inputs_raise(y: np.ndarray, probs: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(y, probs, ["a", "b"][: probs.shape[-1]] if probs.ndim == 2 else ["a", "b"])


def test_class_names_must_match_columns() -> None:
    with pytest.raises(ValueError, match="3 class names for 2"):
        classification_metrics(np.array([0, 1]), np.full((2, 2), 0.5), ["a", "b", "c"])
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(np.array([0, 1]), np.full((2, 2), 0.5), n_bins=0)
