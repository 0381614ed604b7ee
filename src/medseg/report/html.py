"""The self-contained HTML report of a run folder: one file, every picture embedded, works offline.

The report is a list of :class:`Section` objects; each builder takes the :class:`RunFolder` and returns an
HTML fragment, or ``None`` when the section does not apply to this run (it is then left out). Later
features add a section by appending to :data:`SECTIONS` (or by passing ``sections=`` to
:func:`build_report`). Every string read from the run's files goes through :func:`html.escape`.

Helpers for section builders: :func:`note`, :func:`table`, :func:`fmt`, :func:`embed_file`,
:func:`embed_array`; a builder may raise, and the page then shows the error in that section only.
"""

from __future__ import annotations

import base64
import csv
import datetime
import functools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import RunError
from medseg.io import write_text_atomic

_MIMES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_EVAL_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy", "hd95")
_WORST_CASES = 10
_MAX_OVERLAYS = 40


class RunFolder:
    """Read-only view of a run folder for report sections; each file is read once, on first use.

    Missing optional files read as ``None``; unreadable ones raise :class:`RunError` naming the file.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"{self.path}: run folder not found")
        config_path = self.path / "config.yaml"
        if not config_path.is_file():
            raise RunError(f"{self.path}: not a medseg run (no config.yaml)")
        import yaml

        try:
            self.config_text = config_path.read_text(encoding="utf-8")
            config = yaml.safe_load(self.config_text)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunError(f"{config_path}: cannot read the config ({reason})") from exc
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise RunError(f"{config_path}: expected a YAML mapping, got {type(config).__name__}")
        self.config: dict[str, Any] = config

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def file(self, relative: str) -> Path | None:
        """``path / relative`` when it is an existing file, else ``None``."""
        path = self.path / relative
        return path if path.is_file() else None

    def section(self, name: str) -> dict[str, Any]:
        """A config section as a dict (empty when absent or not a mapping)."""
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    @functools.cached_property
    def metrics(self) -> dict[str, np.ndarray] | None:
        """``metrics.csv`` columns (see :func:`~medseg.report.plots.read_metrics_csv`), or ``None``."""
        from medseg.report.plots import read_metrics_csv

        path = self.file("metrics.csv")
        return None if path is None else read_metrics_csv(path)

    @functools.cached_property
    def train_summary(self) -> dict[str, Any] | None:
        return self._json("train_summary.json")

    @functools.cached_property
    def eval_metrics(self) -> dict[str, Any] | None:
        return self._json("eval/metrics.json")

    def _json(self, relative: str) -> dict[str, Any] | None:
        path = self.file(relative)
        if path is None:
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RunError(f"{path}: cannot read JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise RunError(f"{path}: expected a JSON object, got {type(value).__name__}")
        return value

    def class_colors(self) -> tuple[list[str], list[tuple[int, int, int]]]:
        """Class names and colours indexed by class id, from ``data.labels`` / ``data.colors``."""
        from medseg.report.overlays import class_colors

        data = self.section("data")
        labels = data.get("labels") if isinstance(data.get("labels"), dict) else {}
        labels = {str(k): int(v) for k, v in labels.items() if isinstance(v, int) and v >= 0}
        if not labels:
            return [], []
        colors = data.get("colors") if isinstance(data.get("colors"), dict) else {}
        table = class_colors(labels, colors)
        names = [""] * len(table)
        for name, class_id in labels.items():
            names[class_id] = name
        return names, table


@dataclass(frozen=True)
class Section:
    """One report section: ``build(run)`` returns its HTML body, or ``None`` to leave it out."""

    id: str
    title: str
    build: Callable[[RunFolder], str | None]


# ---------------------------------------------------------------- small HTML helpers


def note(text: str, *, kind: str = "note") -> str:
    """A highlighted one-line note; ``text`` is HTML (escape file content before passing it)."""
    return f'<p class="{kind}">{text}</p>'


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure(src: str, *, alt: str, caption: str = "", css_class: str = "") -> str:
    """An ``<img>`` in a ``<figure>``; ``alt`` and ``caption`` are plain text (escaped here)."""
    cls = f' class="{css_class}"' if css_class else ""
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure{cls}><img src="{src}" alt="{escape(alt)}">{caption_html}</figure>'


def embed_file(path: Path, *, alt: str, caption: str = "", css_class: str = "") -> str:
    mime = _MIMES.get(path.suffix.lower(), "application/octet-stream")
    return figure(data_uri(path.read_bytes(), mime), alt=alt, caption=caption, css_class=css_class)


def _inline_png(image: np.ndarray, alt: str) -> str:
    return f'<img src="{data_uri(_png_bytes(image), "image/png")}" alt="{escape(alt)}">'


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def embed_array(image: np.ndarray, *, alt: str, caption: str = "", css_class: str = "") -> str:
    """Embed an ``(H, W, 3)`` uint8 array as a PNG."""
    return figure(data_uri(_png_bytes(image), "image/png"), alt=alt, caption=caption, css_class=css_class)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, row_classes: Sequence[str] = ()) -> str:
    """A plain table; cells are HTML (escape them first). Cells that look numeric are right-aligned."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = []
    for index, row in enumerate(rows):
        cls = row_classes[index] if index < len(row_classes) and row_classes[index] else ""
        cells = "".join(
            f'<td class="num">{cell}</td>' if _looks_numeric(cell) else f"<td>{cell}</td>" for cell in row
        )
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table_html}</div>'


def key_value_table(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column summary table: plain-text keys, HTML values."""
    body = "".join(f"<tr><th>{escape(key)}</th><td>{value}</td></tr>" for key, value in rows)
    return f'<table class="summary"><tbody>{body}</tbody></table>'


def _looks_numeric(cell: str) -> bool:
    return cell == "—" or re.fullmatch(r"-?[\d.,]+(e-?\d+)?", cell) is not None


def fmt(value: Any, digits: int = 3) -> str:
    """A value from a file as escaped text: numbers to ``digits`` decimals, null/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.{digits}f}"
    return escape(str(value))


def _compact(value: Any) -> str:
    """Config values in a table cell: ``0.001`` rather than ``0.001000``."""
    return f"{value:g}" if isinstance(value, float) else fmt(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _file_size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def _swatch(color: Sequence[int]) -> str:
    r, g, b = (int(c) for c in color)
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def _code(text: str) -> str:
    return f"<code>{escape(text)}</code>"


# ---------------------------------------------------------------- sections


def summary_section(run: RunFolder) -> str:
    data, model, train = run.section("data"), run.section("model"), run.section("train")
    problems: list[str] = []
    summary = _read_or_note(run, "train_summary", problems) or {}
    metrics = _read_or_note(run, "metrics", problems)
    evaluation = _read_or_note(run, "eval_metrics", problems)
    rows: list[tuple[str, str]] = [
        ("run", escape(run.name)),
        ("task", fmt(run.config.get("task"))),
        ("dataset", fmt(data.get("path"))),
        ("model", fmt(model.get("name"))),
    ]
    names, colors = run.class_colors()
    instance = run.config.get("instance") if run.config.get("task") == "instance" else None
    if isinstance(instance, dict):
        types = instance.get("classes") or []
        names, colors = [], []
        rows.append(("objects", escape(", ".join(map(str, types))) if types else "untyped"))
    classify = run.section("classify") if run.config.get("task") == "classify" else None
    if classify is not None:  # one class per image: no colours, but how many training images each had
        counts = summary.get("train_class_counts")
        counts = counts if isinstance(counts, dict) else {}
        listed = [escape(n) + (f"&nbsp;({fmt(counts[n])})" if n in counts else "") for n in names if n]
        rows.append(("classes" + (" (training images)" if counts else ""), " · ".join(listed)))
        names, colors = [], []
    if names:
        rows.append(
            (
                "classes",
                " ".join(
                    f"{_swatch(c) if i else ''}{escape(n)}&nbsp;({i})"
                    for i, (n, c) in enumerate(zip(names, colors, strict=True))
                    if n
                ),
            )
        )
    settings = [f"{key} {_compact(train[key])}" for key in ("lr", "batch_size") if key in train]
    loss = run.config.get("loss")
    if isinstance(instance, dict):
        heads = [("inner", "inner_weight"), ("outer", "outer_weight"), ("fgbg", "fgbg_weight")]
        if instance.get("classes"):
            heads.append(("types", "class_weight"))
        terms = " + ".join(f"{_compact(instance.get(key))}·{name}" for name, key in heads)
        settings.insert(0, f"deep watershed loss {terms}")
    elif classify is not None:
        weights = classify.get("class_weights", "none")
        loss_text = "cross-entropy" + ("" if weights in ("none", None) else f", class weights {fmt(weights)}")
        if classify.get("balanced_sampling"):
            loss_text += ", balanced sampling"
        settings.insert(0, loss_text)
        settings.append(f"input {fmt(classify.get('image_size'))} px ({fmt(classify.get('fit'))})")
        settings.append(f"transfer {fmt(classify.get('transfer'))}")
    elif isinstance(loss, dict) and {"dice_weight", "ce_weight"} <= set(loss):
        settings.insert(0, f"loss {_compact(loss['dice_weight'])}·Dice + {_compact(loss['ce_weight'])}·CE")
    if settings:
        rows.append(("training", " · ".join(settings)))

    epochs_done = summary.get("epochs_run")
    if epochs_done is None and metrics is not None:
        epochs_done = int(np.isfinite(metrics["epoch"]).sum())
    planned = train.get("epochs")
    if epochs_done is not None or planned is not None:
        text = fmt(epochs_done) if epochs_done is not None else "0"
        rows.append(("epochs trained", text + (f" of {fmt(planned)} planned" if planned is not None else "")))
    if summary.get("best_epoch") is not None:
        monitor = fmt(summary.get("monitor") or "metric")
        rows.append(
            ("best", f"epoch {fmt(summary['best_epoch'])}: {monitor} {fmt(summary.get('best_metric'))}")
        )
    elif metrics is not None:
        from medseg.report.plots import best_epoch

        best = best_epoch(metrics)
        if best is not None:
            rows.append(("best", f"epoch {best[0]}: {escape(best[1])} {best[2]:.3f} (from metrics.csv)"))
    if "stopped_early" in summary:
        rows.append(("stopped early", fmt(summary["stopped_early"])))
    if summary.get("seconds") is not None:
        rows.append(("training time", _duration(summary["seconds"])))
    if summary.get("device") is not None:
        amp = " (bf16 mixed precision)" if summary.get("amp") == "bf16" else ""
        rows.append(("device", fmt(summary["device"]) + amp))
    checkpoints = [
        f"{name} {_file_size(path)}"
        for name in ("best.pt", "last.pt")
        if (path := run.file(f"checkpoints/{name}")) is not None
    ]
    rows.append(("checkpoints", " · ".join(checkpoints) if checkpoints else "none yet"))
    if evaluation is not None and evaluation.get("task") == "classify":
        scores = f", balanced accuracy {fmt(evaluation.get('balanced_accuracy'))}"
        rows.append(("evaluated on", _evaluation_line(evaluation) + scores))
    elif evaluation is not None and evaluation.get("task") == "instance":
        pooled = evaluation.get("pooled") if isinstance(evaluation.get("pooled"), dict) else {}
        scores = f", F1@0.5 {fmt(pooled.get('f1@0.5'))}, PQ {fmt(pooled.get('pq'))}"
        rows.append(("evaluated on", _evaluation_line(evaluation) + scores))
    elif evaluation is not None:
        mean = evaluation.get("mean") if isinstance(evaluation.get("mean"), dict) else {}
        rows.append(("evaluated on", _evaluation_line(evaluation) + f", mean dice {fmt(mean.get('dice'))}"))

    warnings = "".join(note(escape(p), kind="note section-error") for p in problems)
    return (
        f"{key_value_table(rows)}{warnings}"
        f"<details><summary>full config (config.yaml)</summary><pre>{escape(run.config_text)}</pre>"
        "</details>"
    )


def _read_or_note(run: RunFolder, attribute: str, problems: list[str]) -> Any:
    """``getattr(run, attribute)``, or ``None`` with the reason appended to ``problems`` when unreadable."""
    try:
        return getattr(run, attribute)
    except RunError as exc:
        problems.append(str(exc))
        return None


def curves_section(run: RunFolder) -> str:
    if run.file("metrics.csv") is None:
        return note(
            f"not trained yet: no metrics.csv. Run {_code('medseg train DATASET --out ' + str(run.path))}."
        )
    from medseg.report.plots import plot_training_curves

    metrics = run.metrics or {}
    if metrics["epoch"].size == 0:
        return note("metrics.csv has no epochs yet.")
    png = plot_training_curves(run.path / "metrics.csv", run.path / "plots" / "training_curves.png")
    last = {key: values[-1] for key, values in metrics.items()}
    parts = [
        f"{key.replace('_', ' ')} {last[key]:.3f}"
        for key in ("train_loss", "val_loss", "val_dice", "val_balanced_accuracy")
        if key in last and math.isfinite(last[key])
    ]
    count = metrics["epoch"].size
    caption = f"{count} epoch{'s' if count != 1 else ''}" + (
        f"; last epoch: {', '.join(parts)}" if parts else ""
    )
    return embed_file(png, alt="training curves", caption=caption)


def evaluation_section(run: RunFolder) -> str:
    evaluation = run.eval_metrics
    if evaluation is None:
        return note(f"not evaluated yet: run {_code(f'medseg evaluate {run.path} DATASET')}.")
    if evaluation.get("task") == "instance":
        return _instance_evaluation(run, evaluation)
    if evaluation.get("task") == "classify":
        return _classification_evaluation(run, evaluation)
    per_class = evaluation.get("per_class") or {}
    mean = evaluation.get("mean") or {}
    present = [m for entry in [*per_class.values(), mean] if isinstance(entry, dict) for m in entry]
    columns = [m for m in _EVAL_METRICS if m in present]
    columns += [m for m in dict.fromkeys(present) if m not in columns]
    rows = [
        [escape(str(name)), *(fmt((entry or {}).get(m)) for m in columns)]
        for name, entry in per_class.items()
    ]
    classes = ["" for _ in rows]
    if mean:
        rows.append(["<strong>mean</strong>", *(fmt(mean.get(m)) for m in columns)])
        classes.append("mean")
    parts = [f"<p>evaluated on {_evaluation_line(evaluation)}.</p>"]
    parts.append(
        table(["class", *map(escape, columns)], rows, row_classes=classes)
        if rows
        else note("eval/metrics.json holds no per-class metrics.")
    )
    if any(_finite(e.get(m)) for e in per_class.values() if isinstance(e, dict) for m in ("dice", "iou")):
        from medseg.report.plots import plot_per_class_bars

        png = plot_per_class_bars(evaluation, run.path / "plots" / "per_class_bars.png")
        parts.append(embed_file(png, alt="per-class dice and IoU"))
    parts.append(_worst_cases(run))
    return "".join(parts)


_INSTANCE_ROWS = (
    ("objects (true / found)", None),
    ("F1 at IoU 0.5", "f1@0.5"),
    ("precision / recall at IoU 0.5", None),
    ("panoptic quality (SQ x RQ)", "pq"),
    ("segmentation quality (mean matched IoU)", "sq"),
    ("AJI / AJI+", None),
    ("DSB average precision, IoU 0.5:0.95", "ap_dsb"),
)


def _instance_evaluation(run: RunFolder, evaluation: dict[str, Any]) -> str:
    """Pooled object metrics, count errors, type accuracy and the worst images by F1."""
    pooled = evaluation.get("pooled") or {}
    rows = []
    for title, key in _INSTANCE_ROWS:
        if key is not None:
            value = fmt(pooled.get(key))
        elif title.startswith("objects"):
            value = f"{fmt(pooled.get('n_true'))} / {fmt(pooled.get('n_pred'))}"
        elif title.startswith("precision"):
            value = f"{fmt(pooled.get('precision@0.5'))} / {fmt(pooled.get('recall@0.5'))}"
        else:
            value = f"{fmt(pooled.get('aji'))} / {fmt(pooled.get('aji_plus'))}"
        rows.append([escape(title), value])
    errors = ", ".join(
        f"{fmt(pooled.get(k))} {k}" for k in ("split", "merge", "catastrophe", "missed", "gained")
    )
    rows.append(["object errors (DeepCell)", escape(errors)])
    exact = evaluation.get("count_exact_fraction")
    rows.append(
        [
            "images with the exact object count",
            f"{fmt(exact)} (mean |error| {fmt(evaluation.get('mean_absolute_count_error'))})",
        ]
    )
    if "type_accuracy" in evaluation:
        rows.append(["type accuracy of matched objects", fmt(evaluation.get("type_accuracy"))])
    if "differential_type_accuracy" in evaluation:
        rows.append(
            ["type accuracy of matched differential objects", fmt(evaluation["differential_type_accuracy"])]
        )
    if "differential_count_exact_fraction" in evaluation:
        rows.append(
            ["images with the exact differential count", fmt(evaluation["differential_count_exact_fraction"])]
        )
    parts = [
        f"<p>evaluated on {_evaluation_line(evaluation)}; scores pooled over images "
        "(true/false positives summed first).</p>",
        table(["metric", "value"], [[k, f"<span>{v}</span>"] for k, v in rows]),
        _worst_cases(run),
    ]
    return "".join(parts)


_CLASSIFICATION_ROWS = (
    ("accuracy", "accuracy"),
    ("balanced accuracy (mean recall)", "balanced_accuracy"),
    ("macro precision / recall / F1", None),
    ("macro AUC (one vs rest)", "macro_auc"),
    ("expected calibration error", "ece"),
)
_MISTAKES_SHOWN = 12


def _classification_evaluation(run: RunFolder, evaluation: dict[str, Any]) -> str:
    """Overall and per-class scores, the confusion matrix and reliability plots, the surest mistakes."""
    from medseg.report.plots import plot_confusion_matrix, plot_reliability

    rows = []
    for title, key in _CLASSIFICATION_ROWS:
        if key is None:
            keys = ("macro_precision", "macro_recall", "macro_f1")
            value = " / ".join(fmt(evaluation.get(k)) for k in keys)
        else:
            value = fmt(evaluation.get(key))
        rows.append([escape(title), f"<span>{value}</span>"])
    per_class = evaluation.get("per_class") if isinstance(evaluation.get("per_class"), dict) else {}
    columns = ("precision", "recall", "f1", "auc", "support")
    class_rows = [
        [escape(str(name)), *(fmt((entry or {}).get(c)) for c in columns)]
        for name, entry in per_class.items()
    ]
    parts = [
        f"<p>evaluated on {_evaluation_line(evaluation)} (split {fmt(evaluation.get('split'))}).</p>",
        table(["metric", "value"], rows),
        table(["class", *columns], class_rows) if class_rows else note("no per-class metrics."),
        '<div class="figures">',
    ]
    if evaluation.get("confusion_matrix"):
        png = plot_confusion_matrix(evaluation, run.path / "plots" / "confusion_matrix.png")
        parts.append(embed_file(png, alt="confusion matrix", caption="rows: true class, columns: predicted"))
    if evaluation.get("reliability"):
        png = plot_reliability(evaluation, run.path / "plots" / "reliability.png")
        parts.append(embed_file(png, alt="reliability diagram", caption="top-label confidence per bin"))
    parts.append("</div>")
    parts.append(_classification_mistakes(run, evaluation))
    return "".join(parts)


def _classification_mistakes(run: RunFolder, evaluation: dict[str, Any]) -> str:
    """The misclassified images the model was surest about (from ``eval/per_image.csv``), as thumbnails
    when the evaluated dataset is still where it was."""
    path = run.file("eval/per_image.csv")
    if path is None:
        return note("no per-image predictions (eval/per_image.csv).")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: cannot read CSV ({exc})") from exc
    wrong = [r for r in records if r.get("correct") == "0"]
    if not wrong:
        return note(f"no misclassified image among the {len(records)} evaluated.")
    wrong.sort(key=lambda r: -_number(r.get("probability")))
    dataset = Path(str(evaluation.get("dataset") or ""))
    root = dataset.parent if dataset.suffix.lower() == ".csv" else dataset
    from medseg.errors import DataError
    from medseg.io import read_image
    from medseg.report.overlays import image_to_rgb8

    figures = []
    for record in wrong[:_MISTAKES_SHOWN]:
        caption = (
            f"{record.get('true')} → {record.get('predicted')} ({_number(record.get('probability')):.2f})"
        )
        file = root / str(record.get("file") or "")
        try:
            thumbnail = _thumbnail(image_to_rgb8(read_image(file)))
        except (DataError, ValueError, OSError):
            figures.append(
                f'<figure class="missing"><figcaption>{escape(caption)}<br>'
                f"{escape(str(record.get('file')))}</figcaption></figure>"
            )
            continue
        figures.append(embed_array(thumbnail, alt=str(record.get("file")), caption=caption))
    title = (
        f"<h3>{min(len(wrong), _MISTAKES_SHOWN)} of {len(wrong)} misclassified images, surest first "
        "(true → predicted, probability)</h3>"
    )
    return title + f'<div class="thumbs">{"".join(figures)}</div>'


def _thumbnail(image: np.ndarray, side: int = 128) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image scaled (nearest neighbour when enlarging) to ``side`` on its long side."""
    from PIL import Image

    picture = Image.fromarray(image)
    scale = side / max(picture.size)
    size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return np.asarray(picture.resize(size, resample))


def _evaluation_line(evaluation: dict[str, Any]) -> str:
    """``"Dataset001 (imagesTs), 14 images"`` with whatever of the two fields is present."""
    parts = []
    if evaluation.get("dataset") is not None:
        parts.append(fmt(evaluation["dataset"]))
    if evaluation.get("num_images") is not None:
        parts.append(f"{fmt(evaluation['num_images'])} images")
    return ", ".join(parts) or "an unnamed dataset"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _worst_cases(run: RunFolder) -> str:
    path = run.file("eval/per_image.csv")
    if path is None:
        return note("no per-image scores (eval/per_image.csv).")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            records = list(reader)
            fields = [f for f in (reader.fieldnames or []) if f]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunError(f"{path}: cannot read CSV ({exc})") from exc
    if not records or not fields:
        return note("eval/per_image.csv lists no images.")
    key = "case" if "case" in fields else fields[0]

    dice_columns = [c for c in ("dice", "mean_dice", "dice_mean", "f1@0.5") if c in fields] or [
        c for c in fields if c.startswith("dice")
    ]
    scores = [_nanmean([_number(r.get(c)) for c in dice_columns]) for r in records]
    order = sorted(range(len(records)), key=lambda i: (math.isnan(scores[i]), scores[i]))[:_WORST_CASES]
    others = [c for c in fields if c != key]
    header = ["#", escape(key), *map(escape, others)]
    rows = [
        [str(rank), escape(records[i].get(key) or ""), *(_csv_cell(records[i].get(c)) for c in others)]
        for rank, i in enumerate(order, start=1)
    ]
    shown = min(_WORST_CASES, len(records))
    by = "F1" if "f1@0.5" in dice_columns else "mean dice"
    title = (
        f"<h3>{shown} worst of {len(records)} images, by {by}</h3>"
        if dice_columns
        else f"<h3>first {shown} of {len(records)} images (no dice column to rank by)</h3>"
    )
    return title + table(header, rows)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _csv_cell(value: str | None) -> str:
    """A CSV cell as HTML: integers as is, other numbers to 3 decimals, empty/NaN as an em dash."""
    text = (value or "").strip()
    if re.fullmatch(r"-?\d+", text):
        return text
    number = _number(text) if text else math.nan
    if text and math.isnan(number) and text.lower() not in ("nan", "none", "null"):
        return escape(text)
    return fmt(number)


def _overlay_order(path: Path) -> tuple[int, int, str]:
    match = re.match(r"(worst|best)_(\d+)_", path.stem)
    if match is None:
        return (2, 0, path.name)
    return (0 if match.group(1) == "worst" else 1, int(match.group(2)), path.name)


def _overlay_caption(path: Path) -> str:
    match = re.match(r"(worst|best)_(\d+)_(.+)", path.stem)
    return f"{match.group(1)} {match.group(2)}: {match.group(3)}" if match else path.stem


def overlays_section(run: RunFolder) -> str | None:
    if run.config.get("task") == "classify":
        return None  # no masks to overlay: the evaluation section shows the misclassified images
    folder = run.path / "eval" / "overlays"
    files = (
        sorted((p for p in folder.glob("*") if p.suffix.lower() in _MIMES), key=_overlay_order)
        if folder.is_dir()
        else []
    )
    if not files:
        return note(
            f"no overlays yet: {_code(f'medseg evaluate {run.path} DATASET')} writes them to eval/overlays/."
        )
    from medseg.report.overlays import ERROR_COLORS, legend_image

    names, colors = run.class_colors()
    parts = []
    classes = [(n, c) for i, (n, c) in enumerate(zip(names, colors, strict=True)) if n and i > 0]
    if classes:
        strip = legend_image([n for n, _ in classes], [c for _, c in classes])
        parts.append(f'<div class="key"><span>classes</span>{_inline_png(strip, "class colours")}</div>')
    errors = legend_image(list(ERROR_COLORS), list(ERROR_COLORS.values()))
    parts.append(f'<div class="key"><span>errors tile</span>{_inline_png(errors, "error colours")}</div>')
    shown = files[:_MAX_OVERLAYS]
    parts.extend(embed_file(p, alt=_overlay_caption(p), caption=_overlay_caption(p)) for p in shown)
    if len(files) > len(shown):
        parts.append(note(f"{len(files) - len(shown)} more overlays in eval/overlays/ are not shown."))
    return "".join(parts)


def progress_section(run: RunFolder) -> str | None:
    if run.config.get("task") == "classify":
        return None  # classification runs write no snapshots
    gif = run.file("snapshots/progress.gif")
    if gif is None:
        return note("no progress animation: training writes snapshots/progress.gif when snapshots are on.")
    return embed_file(
        gif,
        alt="training progress",
        caption="predictions on a fixed validation image after each epoch (the last frame is held longer)",
    )


SECTIONS: list[Section] = [
    Section("summary", "Summary", summary_section),
    Section("training", "Training curves", curves_section),
    Section("evaluation", "Evaluation", evaluation_section),
    Section("overlays", "Overlays", overlays_section),
    Section("progress", "Progress", progress_section),
]


# ---------------------------------------------------------------- the page


def build_report(run_dir: str | os.PathLike[str], *, sections: Sequence[Section] | None = None) -> Path:
    """Write ``run_dir/report.html``: a single self-contained page (pictures as data: URIs, inline CSS).

    Figures are also saved under ``run_dir/plots/``. A missing optional file gives a short note in its
    section; a file that cannot be read gives a visible error note in that section, not a failed report.

    Args:
        run_dir: a run folder (needs ``config.yaml``; everything else is optional).
        sections: sections to render, in order; default :data:`SECTIONS`.

    Returns:
        The path of ``report.html``.

    Raises:
        RunError: ``run_dir`` is missing, has no ``config.yaml``, or the config cannot be parsed.
    """
    run = RunFolder(run_dir)
    rendered = []
    for section in SECTIONS if sections is None else sections:
        try:
            body = section.build(run)
        except Exception as exc:  # one unreadable file must not cost the user the rest of the report
            body = note(
                f"could not build this section: {escape(type(exc).__name__)}: {escape(str(exc))}",
                kind="note section-error",
            )
        if body is not None:
            rendered.append((section, body))
    out = run.path / "report.html"
    write_text_atomic(out, render_page(f"medseg report: {run.name}", run.name, run.path, rendered))
    return out


def render_page(title: str, name: str, path: Path, sections: Sequence[tuple[Any, str]]) -> str:
    """The self-contained HTML page of a report: header, navigation, and ``(section, body)`` pairs.

    Args:
        title: the browser tab's title (plain text).
        name: the page heading (plain text).
        path: the folder the page describes (shown under the heading).
        sections: objects with ``id`` and ``title`` and their HTML bodies, in order.
    """
    nav = " · ".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s, _ in sections)
    content = "\n".join(
        f'<section id="{s.id}"><h2>{escape(s.title)}</h2>\n{body}</section>' for s, body in sections
    )
    return _PAGE.format(
        title=escape(title),
        name=escape(name),
        path=escape(str(Path(path).resolve())),
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        nav=nav,
        content=content,
        css=_CSS,
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="medseg">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{name}</h1>
<p class="meta">medseg report · generated {generated} · <code>{path}</code></p>
<nav>{nav}</nav>
</header>
<main>
{content}
</main>
</body>
</html>
"""

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px 28px 60px; color: #1d1d1f; background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { border-bottom: 2px solid #e3e3e8; margin-bottom: 8px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 20px; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 1px solid #ececf0; }
h3 { font-size: 15px; margin: 22px 0 8px; }
.meta { color: #6e6e73; margin: 0 0 8px; font-size: 13px; }
nav a { color: #0b62c4; text-decoration: none; }
nav a:hover { text-decoration: underline; }
code, pre { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
pre { background: #f6f6f8; border: 1px solid #e3e3e8; border-radius: 6px; padding: 10px 12px;
  overflow-x: auto; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 14px; }
th, td { border: 1px solid #e0e0e6; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #f4f4f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.mean td { background: #f7f9fc; font-weight: 600; }
table.summary th { background: #f7f7f9; font-weight: 600; width: 170px; }
table.summary { min-width: 60%; }
.swatch { display: inline-block; width: 11px; height: 11px; border: 1px solid #777; margin: 0 4px 0 8px;
  vertical-align: -1px; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #0b62c4; }
figure { margin: 10px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #ececf0; }
.figures { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.figures figure { margin: 6px 0 12px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; }
.thumbs figure { margin: 0; width: 140px; }
.thumbs figure.missing { border: 1px dashed #c8c8d0; padding: 6px; }
.key { display: flex; align-items: center; gap: 6px; margin: 2px 0; }
.key span { width: 90px; color: #6e6e73; font-size: 13px; }
figcaption { color: #6e6e73; font-size: 13px; margin-top: 3px; }
.note { background: #f5f7fb; border-left: 4px solid #9db4d6; padding: 8px 12px; margin: 8px 0; }
.section-error { background: #fdf3f2; border-left-color: #d9534f; }
"""
