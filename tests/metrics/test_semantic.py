"""Tests for medseg.metrics.semantic: hand-computed cases, a naive reference and MONAI cross-checks."""

from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from medseg.metrics import semantic
from medseg.metrics.semantic import (
    METRIC_NAMES,
    SemanticMetrics,
    confusion_matrix,
    hd95,
    per_class_metrics,
)

NAN = math.nan


def assert_metrics(got: dict[str, np.ndarray], expected: dict[str, list[float]]) -> None:
    assert set(got) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-12, atol=1e-12, err_msg=name)


def noisy_labels(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Blobby truth (smoothed noise, thresholded) and a prediction with ~25% of pixels relabelled."""
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), sigma=2)
    y_true = np.digitize(smooth, np.quantile(smooth, np.linspace(0, 1, k + 1)[1:-1])).astype(np.int64)
    y_pred = y_true.copy()
    flip = rng.random(shape) < 0.25
    y_pred[flip] = rng.integers(0, k, size=int(flip.sum()))
    return y_true, y_pred


# ---------------------------------------------------------------- hand-computed cases


def test_2x2_every_metric():
    y_true = np.array([[0, 1], [1, 1]])
    y_pred = np.array([[0, 1], [0, 1]])
    # class 0: TP 1, FP 1, FN 0, TN 2; class 1: TP 2, FP 0, FN 1, TN 1.
    # hd95 class 0: pred boundary {(0,0),(1,0)} -> distances [0, 1] -> 0.95; truth -> [0].
    # hd95 class 1: truth boundary distances [0, 1, 0] -> sorted [0, 0, 1], 95th pct = 0.9.
    assert_metrics(
        per_class_metrics(y_true, y_pred, 2),
        {
            "dice": [2 / 3, 4 / 5],
            "iou": [1 / 2, 2 / 3],
            "sensitivity": [1.0, 2 / 3],
            "specificity": [2 / 3, 1.0],
            "precision": [1 / 2, 1.0],
            "accuracy": [3 / 4, 3 / 4],
            "hd95": [0.95, 0.9],
        },
    )


def test_4x4_with_class_predicted_but_absent():
    y_true = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    y_pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 2]])
    # class 0: TP 10, FP 0, FN 2, TN 4; class 1: TP 4, FP 1, FN 0, TN 11; class 2: TP 0, FP 1, FN 0, TN 15.
    # hd95 class 0: truth boundary = 11 px (all but (2,1)), two of them 1 px from the prediction -> 1.0.
    # hd95 class 1: extra predicted pixel (0,1) is 1 px away, 5 values [0,0,0,0,1] -> 0.8.
    # hd95 class 2: truth empty, prediction not -> diagonal of the 4x4 image = sqrt(32).
    assert_metrics(
        per_class_metrics(y_true, y_pred, 3),
        {
            "dice": [10 / 11, 8 / 9, 0.0],
            "iou": [5 / 6, 4 / 5, 0.0],
            "sensitivity": [5 / 6, 1.0, NAN],
            "specificity": [1.0, 11 / 12, 15 / 16],
            "precision": [1.0, 4 / 5, 0.0],
            "accuracy": [7 / 8, 15 / 16, 15 / 16],
            "hd95": [1.0, 0.8, math.sqrt(32)],
        },
    )


def test_class_absent_everywhere_is_nan_except_specificity_and_accuracy():
    y = np.array([[0, 1], [1, 0]])
    got = per_class_metrics(y, y, 3)
    for name in ("dice", "iou", "sensitivity", "precision", "hd95"):
        assert math.isnan(got[name][2]), name
    assert got["specificity"][2] == 1.0
    assert got["accuracy"][2] == 1.0


def test_hd95_false_leaves_key_out():
    y = np.array([[0, 1], [1, 0]])
    assert "hd95" not in per_class_metrics(y, y, 2, hd95=False)


# ---------------------------------------------------------------- confusion matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y_true = rng.integers(0, k, size=(9, 11))
    y_true[rng.random(y_true.shape) < 0.1] = 255
    y_pred = rng.integers(0, k, size=(9, 11))
    expected = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true.ravel(), y_pred.ravel(), strict=True):
        if t < k:
            expected[t, p] += 1
    got = confusion_matrix(y_true, y_pred, k)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == int((y_true != 255).sum())


def test_confusion_matrix_excludes_ignore_and_negative_truth():
    y_true = np.array([[0, 1, 255], [-1, 1, 0]])
    y_pred = np.array([[0, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 2), [[2, 0], [1, 1]])


@pytest.mark.parametrize(
    ("y_pred", "dtype"),
    [([[0, 2]], np.int64), ([[0, -1]], np.int64), ([[0, 1]], np.float32), ([[0, 1, 1]], np.int64)],
)
def test_confusion_matrix_rejects_bad_prediction(y_pred, dtype):
    with pytest.raises(ValueError):
        confusion_matrix(np.array([[0, 1]]), np.array(y_pred, dtype=dtype), 2)


def test_ignored_pixels_do_not_count_anywhere():
    rng = np.random.default_rng(3)
    y_true, y_pred = noisy_labels(rng, (24, 24), 3)
    y_true[5:12, 5:12] = 255
    y_pred_a, y_pred_b = y_pred.copy(), y_pred.copy()
    y_pred_a[5:12, 5:12] = 1
    y_pred_b[5:12, 5:12] = 2
    a = per_class_metrics(y_true, y_pred_a, 3)
    b = per_class_metrics(y_true, y_pred_b, 3)
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---------------------------------------------------------------- MONAI cross-check


def _monai_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int, spacing) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")

    def one_hot(y):
        return torch.nn.functional.one_hot(torch.from_numpy(y), k).movedim(-1, 0)[None].float()

    t, p = one_hot(y_true), one_hot(y_pred)
    out = {
        "dice": metrics.DiceMetric(include_background=True, reduction="none")(y_pred=p, y=t),
        "iou": metrics.MeanIoU(include_background=True, reduction="none")(y_pred=p, y=t),
        "hd95": metrics.HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
            y_pred=p, y=t, spacing=spacing
        ),
    }
    names = ("sensitivity", "specificity", "precision")
    cm_metric = metrics.ConfusionMatrixMetric(include_background=True, metric_name=names, reduction="none")
    cm_metric(y_pred=p, y=t)
    out.update(zip(names, cm_metric.aggregate(), strict=True))
    return {name: value[0].numpy().astype(np.float64) for name, value in out.items()}


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI calling itself
@pytest.mark.parametrize(
    ("seed", "shape", "spacing"),
    [
        (0, (32, 32), None),
        (1, (32, 32), (2.0, 1.0)),
        (2, (32, 32), (0.5, 1.5)),
        (3, (8, 16, 16), None),
        (4, (8, 16, 16), (3.0, 1.0, 0.7)),
    ],
)
def test_matches_monai_on_random_masks(seed, shape, spacing):
    rng = np.random.default_rng(seed)
    y_true, y_pred = noisy_labels(rng, shape, 3)
    ours = per_class_metrics(y_true, y_pred, 3, spacing=spacing)
    reference = _monai_scores(y_true, y_pred, 3, spacing)
    for name, expected in reference.items():
        # MONAI computes in float32, hence a relative tolerance.
        np.testing.assert_allclose(ours[name], expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_edge_cases_where_monai_convention_differs():
    """Class 1 is predicted but absent from the truth; class 2 is absent from both.

    MONAI's DiceMetric/MeanIoU (ignore_empty=True) return NaN whenever the truth is empty; we follow
    nnU-Net and score a hallucinated class 0 (what MONAI gives with ignore_empty=False), while an absent-in-
    both class is NaN in both. With exactly one mask empty MONAI's HD95 is NaN; ours is the image diagonal.
    """
    metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    y_true = np.zeros((6, 6), dtype=np.int64)
    y_pred = y_true.copy()
    y_pred[1:3, 1:3] = 1
    ours = per_class_metrics(y_true, y_pred, 3)

    t = torch.nn.functional.one_hot(torch.from_numpy(y_true), 3).movedim(-1, 0)[None].float()
    p = torch.nn.functional.one_hot(torch.from_numpy(y_pred), 3).movedim(-1, 0)[None].float()
    skip_empty = metrics.DiceMetric(include_background=True, reduction="none")
    keep_empty = metrics.DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    hd95_metric = metrics.HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    hd_metric = metrics.HausdorffDistanceMetric(include_background=True, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about the empty masks
        dice_skip, dice_keep = skip_empty(y_pred=p, y=t)[0], keep_empty(y_pred=p, y=t)[0]
        hd95_monai, hd_monai = hd95_metric(y_pred=p, y=t)[0], hd_metric(y_pred=p, y=t)[0]

    assert ours["dice"][1] == 0.0 and math.isnan(dice_skip[1]) and dice_keep[1] == 0.0
    assert math.isnan(ours["dice"][2]) and math.isnan(dice_skip[2])
    # MONAI: the missed structure is inf for the plain Hausdorff distance and NaN for HD95 (torch.quantile
    # of all-inf distances), so MONAI's HD95 mean silently drops it; ours scores the 6x6 diagonal.
    assert ours["hd95"][1] == pytest.approx(math.sqrt(72))
    assert math.isinf(hd_monai[1]) and math.isnan(hd95_monai[1])
    assert math.isnan(ours["hd95"][2]) and math.isnan(hd95_monai[2])


# ---------------------------------------------------------------- HD95


def brute_force_hd95(mask_true: np.ndarray, mask_pred: np.ndarray, spacing) -> float:
    """All-pairs distances between boundary pixels (same boundary definition, independent distances)."""
    points = [np.argwhere(m ^ ndimage.binary_erosion(m)) * spacing for m in (mask_true, mask_pred)]
    d = cdist(points[0], points[1])
    return float(max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95)))


def test_hd95_shifted_square_with_anisotropic_spacing():
    mask_true = np.zeros((12, 12), dtype=bool)
    mask_true[2:4, 2:4] = True
    mask_pred = np.roll(mask_true, 3, axis=0)  # rows 5:7; row distances [2, 2, 3, 3] each way -> 3 rows
    assert hd95(mask_true, mask_pred) == pytest.approx(3.0)
    assert hd95(mask_true, mask_pred, spacing=(2, 1)) == pytest.approx(6.0)
    assert hd95(mask_true, mask_pred, spacing=(1, 2)) == pytest.approx(3.0)
    assert hd95(mask_true, mask_pred, spacing=0.5) == pytest.approx(1.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (20, 24) if seed % 2 == 0 else (6, 10, 12)
    spacing = rng.uniform(0.3, 3.0, size=len(shape))
    smooth = ndimage.gaussian_filter(rng.normal(size=(2, *shape)), sigma=(0, *[1.5] * len(shape)))
    mask_true, mask_pred = smooth[0] > 0.1, smooth[1] > 0.1
    expected = brute_force_hd95(mask_true, mask_pred, spacing)
    assert hd95(mask_true, mask_pred, spacing=spacing) == pytest.approx(expected, rel=1e-12)


def test_hd95_crop_does_not_change_the_result_at_the_image_border():
    mask_true = np.zeros((10, 10), dtype=bool)
    mask_true[0:4, 6:10] = True  # touches two image borders
    mask_pred = np.zeros_like(mask_true)
    mask_pred[1:6, 5:10] = True
    assert hd95(mask_true, mask_pred) == pytest.approx(brute_force_hd95(mask_true, mask_pred, np.ones(2)))


def test_hd95_empty_cases():
    empty = np.zeros((4, 6, 8), dtype=bool)
    full = empty.copy()
    full[1, 2, 3] = True
    assert math.isnan(hd95(empty, empty))
    assert hd95(full, empty) == pytest.approx(math.sqrt(16 + 36 + 64))
    assert hd95(empty, full, spacing=(2, 1, 0.5)) == pytest.approx(math.sqrt(64 + 36 + 16))


# ---------------------------------------------------------------- accumulator


def test_aggregate_skips_nan_and_excludes_background():
    metrics = SemanticMetrics(3)
    metrics.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 0]]))
    # second image: class 2 absent from truth and prediction -> NaN for it, skipped in the mean
    metrics.update(np.array([[0, 0], [1, 1]]), np.array([[0, 1], [1, 1]]))
    summary = metrics.aggregate(["background", "a", "b"])
    json.dumps(summary)
    assert summary["num_images"] == 2
    dice = {name: summary["per_class"][name]["dice"] for name in ("background", "a", "b")}
    # image 1 dice: [2/3, 1, 2/3]; image 2 dice: [2/3, 4/5, NaN]
    assert dice == pytest.approx({"background": 2 / 3, "a": 0.9, "b": 2 / 3})
    assert summary["mean"]["dice"] == pytest.approx((0.9 + 2 / 3) / 2)
    # hd95 of class b: 0.95 on image 1, NaN (both empty) on image 2
    assert summary["per_class"]["b"]["hd95"] == pytest.approx(0.95)
    assert all(type(v) is float for v in summary["mean"].values())
    assert set(summary["mean"]) == set(METRIC_NAMES)


def test_aggregate_nan_when_nothing_defined():
    metrics = SemanticMetrics(2, hd95=False)
    empty = metrics.aggregate(["background", "cell"])
    assert empty["num_images"] == 0 and math.isnan(empty["mean"]["dice"])
    metrics.update(np.zeros((3, 3), dtype=np.uint8), np.zeros((3, 3), dtype=np.uint8))
    summary = metrics.aggregate(["background", "cell"])
    assert "hd95" not in summary["mean"]
    assert math.isnan(summary["per_class"]["cell"]["dice"]) and math.isnan(summary["mean"]["dice"])
    assert summary["per_class"]["background"]["dice"] == 1.0
    with pytest.raises(ValueError):
        metrics.aggregate(["only_one"])
    metrics.reset()
    assert metrics.aggregate(["background", "cell"])["num_images"] == 0


# ---------------------------------------------------------------- packaging


def test_docstring_examples():
    assert doctest.testmod(semantic).failed == 0


def test_module_does_not_import_torch():
    code = "import medseg.metrics.semantic, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_per_region_metrics_score_each_overlapping_region_as_a_binary_mask():
    from medseg.data.regions import Regions
    from medseg.metrics import per_class_metrics, per_region_metrics

    regions = Regions.from_mapping({"a": [1, 3], "b": [2, 3]})
    truth = np.array([[0, 1, 3, 3], [2, 2, 0, 255]])
    pred = np.array([[0, 3, 3, 1], [2, 0, 0, 0]])
    scores = per_region_metrics(truth, pred, regions, hd95=False)
    # a: truth {(0,1),(0,2),(0,3)}, pred {(0,1),(0,2),(0,3)} -> perfect; b: truth {(0,2),(0,3),(1,0),(1,1)},
    # pred {(0,1),(0,2),(1,0)} -> tp 2, fp 1, fn 2; background: truth {(0,0),(1,2)}, pred {(0,0),(1,1),(1,2)}
    # (255 is not scored anywhere)
    np.testing.assert_allclose(scores["dice"], [2 * 2 / (2 * 2 + 1), 1.0, 2 * 2 / (2 * 2 + 1 + 2)])
    np.testing.assert_allclose(scores["accuracy"][2], 4 / 7)
    # without overlap the region scores equal the one-label scores
    plain = Regions.from_mapping({"a": [1], "b": [2]})
    y_true, y_pred = np.array([[0, 1, 2, 2]]), np.array([[1, 1, 2, 0]])
    region_scores = per_region_metrics(y_true, y_pred, plain, hd95=True)
    class_scores = per_class_metrics(y_true, y_pred, 3, hd95=True)
    for name in region_scores:
        np.testing.assert_allclose(region_scores[name], class_scores[name], equal_nan=True)
