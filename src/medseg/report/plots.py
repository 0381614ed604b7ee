"""Matplotlib figures for runs: training curves from ``metrics.csv`` and per-class evaluation bars.

matplotlib is imported inside the functions and drawn with the Agg canvas (no pyplot, no display), so
importing this module is cheap and works on headless servers.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import RunError
from medseg.io import atomic_path

_TRAIN_COLOR, _VAL_COLOR, _MEAN_COLOR = "#1f77b4", "#ff7f0e", "#222222"
_DPI = 100


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a run's ``metrics.csv`` into float columns.

    Args:
        path: CSV with a header row (``epoch, train_loss, val_loss, val_dice, lr, seconds, ...``).

    Returns:
        ``{column: (N,) float64}`` in file order; empty or non-numeric cells are NaN. A missing
        ``epoch`` column (or cell) is filled with the row number, 1..N.

    Raises:
        RunError: the file is missing, unreadable, or has no header.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            fields = [name for name in (reader.fieldnames or []) if name]
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: cannot read CSV ({exc})") from exc
    if not fields:
        raise RunError(f"{path}: no header row")
    columns = {
        name: np.array([_to_float(row.get(name)) for row in rows], dtype=np.float64) for name in fields
    }
    row_numbers = np.arange(1, len(rows) + 1, dtype=np.float64)
    if "epoch" not in columns:
        columns = {"epoch": row_numbers, **columns}
    columns["epoch"] = np.where(np.isfinite(columns["epoch"]), columns["epoch"], row_numbers)
    return columns


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def metric_columns(columns: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Split validation metric columns (``val_*``, not losses) into (means, per-class).

    A column is per-class when another metric column is its prefix: ``val_dice_nucleus`` belongs to
    ``val_dice``.
    """
    metrics = [name for name in columns if name.startswith("val_") and "loss" not in name]
    per_class = [name for name in metrics if any(name.startswith(m + "_") for m in metrics if m != name)]
    means = [name for name in metrics if name not in per_class]
    return means, per_class


def best_epoch(columns: Mapping[str, np.ndarray]) -> tuple[int, str, float] | None:
    """``(epoch, column, value)`` of the best validation epoch: highest ``val_dice`` (classifiers:
    ``val_balanced_accuracy``), else lowest ``val_loss``; ``None`` when no such column holds a number."""
    picks = (("val_dice", np.nanargmax), ("val_balanced_accuracy", np.nanargmax), ("val_loss", np.nanargmin))
    for name, pick in picks:
        values = columns.get(name)
        if values is not None and np.isfinite(values).any():
            index = int(pick(np.where(np.isfinite(values), values, np.nan)))
            return int(columns["epoch"][index]), name, float(values[index])
    return None


def plot_training_curves(metrics_csv: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Plot losses, validation metrics and learning rate per epoch into one PNG (about 10x4 in, 100 dpi).

    Panels: train vs validation loss (every ``*loss*`` column); validation metrics (every ``val_*``
    column that is not a loss: means bold, per-class thin; metrics outside 0..1 such as ``val_hd95`` on
    a right-hand axis); learning rate (log scale when it spans more than 20x), when logged. The best
    epoch is marked with a dotted line.

    Args:
        metrics_csv: a run's ``metrics.csv``.
        out_png: the PNG to write (atomically; parent folders are created).

    Returns:
        ``out_png`` as a Path.

    Raises:
        RunError: the CSV is missing, unreadable, or has no rows yet.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = read_metrics_csv(metrics_csv)
    epochs = columns["epoch"]
    if epochs.size == 0:
        raise RunError(f"{metrics_csv}: no epochs logged yet")
    losses = [name for name in columns if "loss" in name and np.isfinite(columns[name]).any()]
    means, per_class = metric_columns(columns)
    means = [name for name in means if np.isfinite(columns[name]).any()]
    per_class = [name for name in per_class if np.isfinite(columns[name]).any()]
    has_lr = "lr" in columns and np.isfinite(columns["lr"]).any()
    marker = {"marker": "o", "markersize": 3} if epochs.size <= 30 else {}

    fig = Figure(figsize=(10, 4), dpi=_DPI, layout="constrained")
    grid = fig.add_gridspec(1, 3 if has_lr else 2, width_ratios=[1, 1, 0.45] if has_lr else [1, 1])
    ax_loss = fig.add_subplot(grid[0, 0])
    ax_metric = fig.add_subplot(grid[0, 1], sharex=ax_loss)
    best = best_epoch(columns)

    other_colors = iter(["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"])
    for name in losses:
        color = {"train_loss": _TRAIN_COLOR, "val_loss": _VAL_COLOR}.get(name) or next(other_colors, None)
        ax_loss.plot(epochs, columns[name], label=_pretty(name), color=color, linewidth=1.8, **marker)
    _finish_axes(ax_loss, "loss", MaxNLocator, legend=True, empty=not losses)

    ax_far = None  # metrics on another scale (distances in pixels)
    class_colors = iter(_cycle_colors(len(per_class)))
    for name in means + per_class:
        values = columns[name]
        is_mean = name in means
        style = {
            "linewidth": 2.4 if is_mean else 1.1,
            "color": _MEAN_COLOR if is_mean and name == "val_dice" else None,
            "alpha": 1.0 if is_mean else 0.85,
        }
        if not is_mean:
            style["color"] = next(class_colors)
            style["linestyle"] = "-" if name.startswith("val_dice_") else "--"
        axis = ax_metric
        if np.nanmax(values) > 1.0 + 1e-6 or np.nanmin(values) < -1e-6:
            ax_far = ax_far or ax_metric.twinx()
            axis, style["linestyle"] = ax_far, ":"
        label = _pretty(name) + (
            " (mean)" if is_mean and any(p.startswith(name + "_") for p in per_class) else ""
        )
        axis.plot(epochs, values, label=label, **style, **marker)
    if best is not None and best[1] != "val_loss":
        ax_metric.plot(
            [best[0]],
            [best[2]],
            marker="*",
            markersize=12,
            color="#d62728",
            linestyle="none",
            label=f"best {best[2]:.3f} @ {best[0]}",
            zorder=5,
        )
    _finish_axes(
        ax_metric,
        "validation metrics",
        MaxNLocator,
        legend=True,
        empty=not (means or per_class),
        extra=ax_far,
    )
    if best is not None:
        for axis in (ax_loss, ax_metric):
            axis.axvline(best[0], color="#999999", linestyle=":", linewidth=1)

    if has_lr:
        ax_lr = fig.add_subplot(grid[0, 2], sharex=ax_loss)
        lr = columns["lr"]
        positive = lr[np.isfinite(lr) & (lr > 0)]
        title = "learning rate"
        if positive.size and positive.max() / positive.min() > 20:
            ax_lr.set_yscale("log")
        elif positive.size and not 1e-2 <= positive.max() < 1e3:
            # the scale goes in the title: matplotlib's offset text would collide with it
            exponent = math.floor(math.log10(positive.max()))
            lr, title = lr / 10.0**exponent, f"learning rate (×1e{exponent})"
        ax_lr.plot(epochs, lr, color="#2ca02c", linewidth=1.6, **marker)
        _finish_axes(ax_lr, title, MaxNLocator, legend=False)
        ax_lr.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # narrow panel

    first, last = np.nanmin(epochs), np.nanmax(epochs)
    if last - first < 2:  # a single point: keep integer ticks instead of 0.995, 1.000, 1.005
        ax_loss.set_xlim(first - 1, last + 1)
    return _save(fig, out_png)


def _finish_axes(axis, title: str, locator, *, legend: bool, empty: bool = False, extra=None) -> None:
    axis.set_title(title, fontsize=11)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(locator(integer=True))
    axis.grid(True, color="#e5e5e5", linewidth=0.8)
    axis.tick_params(labelsize=9)
    if empty:
        axis.text(
            0.5, 0.5, "nothing logged", ha="center", va="center", transform=axis.transAxes, color="#888888"
        )
    elif legend:
        handles, labels = axis.get_legend_handles_labels()
        if extra is not None:
            more_handles, more_labels = extra.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        axis.legend(
            handles, labels, fontsize=8, loc="best", ncol=2 if len(labels) > 6 else 1, framealpha=0.85
        )


def _pretty(name: str) -> str:
    """``val_dice_nucleus`` -> ``dice nucleus``; ``train_loss`` -> ``train loss``."""
    if name.startswith("val_") and "loss" not in name:
        name = name[4:]
    return name.replace("_", " ")


def _cycle_colors(count: int) -> list[str]:
    base = [
        "#e69f00",
        "#56b4e9",
        "#009e73",
        "#0072b2",
        "#d55e00",
        "#cc79a7",
        "#9467bd",
        "#8c564b",
        "#bcbd22",
        "#17becf",
        "#7f7f7f",
        "#f0e442",
    ]
    return [base[i % len(base)] for i in range(count)]


def _save(fig, out_png: str | os.PathLike[str]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return out_png


def plot_per_class_bars(metrics_json_dict: Mapping[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """Grouped bars of dice and IoU per class (and the mean) from evaluation metrics.

    Args:
        metrics_json_dict: the content of ``eval/metrics.json``: ``{"per_class": {class: {"dice": ..,
            "iou": .., ...}}, "mean": {...}, "dataset": .., "num_images": ..}``; null values leave a gap
            labelled "n/a".
        out_png: the PNG to write (atomically).

    Returns:
        ``out_png`` as a Path.

    Raises:
        ValueError: there is no per-class entry with a dice or IoU value.
    """
    from matplotlib.figure import Figure

    per_class = dict(metrics_json_dict.get("per_class") or {})
    mean = metrics_json_dict.get("mean") or {}
    if mean:
        per_class["mean"] = mean
    names = list(per_class)
    metrics = [
        m for m in ("dice", "iou") if any(isinstance(v, Mapping) and m in v for v in per_class.values())
    ]
    if not names or not metrics:
        raise ValueError("evaluation metrics hold no per-class dice or iou values to plot")

    width = min(14.0, max(5.0, 1.1 * len(names) + 2.0))
    fig = Figure(figsize=(width, 3.6), dpi=_DPI, layout="constrained")
    axis = fig.add_subplot()
    bar_width = 0.8 / len(metrics)
    colors = {"dice": "#0072b2", "iou": "#56b4e9"}
    positions = np.arange(len(names), dtype=np.float64)
    if mean:
        positions[-1] += 0.4  # set the mean apart from the classes
    for offset, metric in enumerate(metrics):
        values = [_to_float((per_class[name] or {}).get(metric)) for name in names]
        xs = positions + (offset - (len(metrics) - 1) / 2) * bar_width
        bars = axis.bar(
            xs,
            np.nan_to_num(values, nan=0.0),
            bar_width * 0.95,
            label=metric,
            color=colors.get(metric),
            edgecolor="white",
        )
        if mean:
            bars[-1].set_hatch("//")
        for x, value in zip(xs, values, strict=True):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            axis.text(x, 0.0 if math.isnan(value) else value, text, ha="center", va="bottom", fontsize=8)
    axis.set_xticks(positions, names, fontsize=9, rotation=30 if len(names) > 8 else 0)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("score")
    axis.grid(True, axis="y", color="#e5e5e5", linewidth=0.8)
    axis.set_axisbelow(True)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = "per-class scores"
    if metrics_json_dict.get("dataset"):
        title += f" on {metrics_json_dict['dataset']}"
    if metrics_json_dict.get("num_images") is not None:
        title += f" ({metrics_json_dict['num_images']} images)"
    axis.set_title(title, fontsize=11)
    return _save(fig, out_png)


def plot_confusion_matrix(metrics_json_dict: Mapping[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """The confusion matrix of a classification evaluation: counts in the cells, each row coloured by
    the fraction of its true class (so a small class is as visible as a large one).

    Args:
        metrics_json_dict: ``eval/metrics.json`` of a classification run: ``{"confusion_matrix": K lists
            of K counts (rows = true), "class_names": K names, ...}``.
        out_png: the PNG to write (atomically).

    Raises:
        ValueError: no K x K matrix with K class names.
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(metrics_json_dict.get("confusion_matrix") or [], dtype=np.int64)
    names = [str(n) for n in metrics_json_dict.get("class_names") or []]
    if matrix.ndim != 2 or matrix.shape != (len(names), len(names)) or not names:
        raise ValueError("evaluation metrics hold no K x K confusion matrix with K class names")
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = min(11.0, max(3.4, 0.55 * len(names) + 2.0))
    fig = Figure(figsize=(side + 0.9, side), dpi=_DPI, layout="constrained")
    axis = fig.add_subplot()
    shown = axis.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    if len(names) <= 20:
        for (row, col), count in np.ndenumerate(matrix):
            color = "white" if fractions[row, col] > 0.55 else "#1d1d1f"
            axis.text(col, row, str(count), ha="center", va="center", fontsize=9, color=color)
    ticks = np.arange(len(names))
    axis.set_xticks(
        ticks, names, rotation=35 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center"
    )
    axis.set_yticks(ticks, names)
    axis.tick_params(labelsize=9)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(f"confusion matrix ({int(matrix.sum())} images)", fontsize=11)
    fig.colorbar(shown, ax=axis, shrink=0.8, label="fraction of the true class")
    return _save(fig, out_png)


def plot_reliability(metrics_json_dict: Mapping[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """Reliability diagram of a classification evaluation: accuracy against mean top-label confidence
    per confidence bin, with the diagonal of perfect calibration and the number of images per bin.

    Args:
        metrics_json_dict: ``eval/metrics.json`` of a classification run: ``{"reliability": [{"lower",
            "upper", "count", "confidence", "accuracy"}, ...], "ece": ..., ...}``.
        out_png: the PNG to write (atomically).

    Raises:
        ValueError: no reliability bins.
    """
    from matplotlib.figure import Figure

    bins = [b for b in metrics_json_dict.get("reliability") or [] if isinstance(b, Mapping)]
    if not bins:
        raise ValueError("evaluation metrics hold no reliability bins")
    lower = np.array([_to_float(b.get("lower")) for b in bins])
    upper = np.array([_to_float(b.get("upper")) for b in bins])
    count = np.array([_to_float(b.get("count")) for b in bins])
    accuracy = np.array([_to_float(b.get("accuracy")) for b in bins])
    confidence = np.array([_to_float(b.get("confidence")) for b in bins])
    filled = count > 0
    fig = Figure(figsize=(4.3, 4.4), dpi=_DPI, layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    axis = fig.add_subplot(grid[0])
    widths = upper - lower
    axis.bar(
        lower[filled],
        accuracy[filled],
        widths[filled],
        align="edge",
        color="#0072b2",
        alpha=0.85,
        edgecolor="white",
        label="accuracy",
    )
    axis.plot(
        ((lower + upper) / 2)[filled],
        confidence[filled],
        linestyle="none",
        marker="_",
        markersize=11,
        markeredgewidth=2.5,
        color="#d55e00",
        label="mean confidence",
    )
    axis.plot([0, 1], [0, 1], linestyle="--", color="#555555", linewidth=1, label="perfect calibration")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    ece = _to_float(metrics_json_dict.get("ece"))
    axis.set_title("reliability" + ("" if math.isnan(ece) else f" (ECE {ece:.3f})"), fontsize=11)
    axis.legend(fontsize=8, loc="upper left")
    axis.grid(True, color="#e5e5e5", linewidth=0.8)
    axis.tick_params(labelsize=9, labelbottom=False)
    counts = fig.add_subplot(grid[1], sharex=axis)
    counts.bar(lower, count, widths, align="edge", color="#7f7f7f", edgecolor="white")
    counts.set_xlabel("top-label confidence")
    counts.set_ylabel("images")
    counts.tick_params(labelsize=9)
    return _save(fig, out_png)
