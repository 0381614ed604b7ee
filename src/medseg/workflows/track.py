"""`medseg track` and `medseg evaluate-tracking`: segment a movie, link cells over time, score the tracks.

Output folder of :func:`track` (a Cell Tracking Challenge result, plus pictures)::

    OUT/mask000.tif ...   frames relabelled by track (uint16), as CTC's ``01_RES``
    OUT/res_track.txt     one line per track: ``L B E P`` (label, begin, end, parent)
    OUT/tracks.csv        one row per track and frame: track, frame, centroid, area, parent
    OUT/tracking.json     what was tracked, with which settings, and the track counts
    OUT/tracks.gif        the movie with outlines coloured by track and track ids drawn
    OUT/lineage.png       the lineage forest (tracks over time, divisions as forks)
    OUT/metrics.json      DET/SEG/TRA and division scores, when ground truth was given
    OUT/report.html       all of the above on one self-contained page
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, DataError, RunError

_MASK_NAME = re.compile(r"mask\d+\.tif")


def track(
    out: str | os.PathLike[str],
    *,
    run: str | os.PathLike[str] | None = None,
    frames: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    params: Any = None,
    gt: str | os.PathLike[str] | None = None,
    device: str = "auto",
    backend: str = "torch",
) -> dict[str, Any]:
    """Track the cells of a movie: segment every frame with an instance run (or read label images), link.

    Args:
        out: output folder (see the module docstring); files of an earlier tracking there are replaced.
        run: an instance run folder that segments each frame. Exclusive with ``masks``.
        frames: the movie: a CTC frame folder (``t000.tif`` ...) or a multi-page TIFF ``(T, H, W)``.
            Needed with ``run``; optional with ``masks`` (then the pictures show the movie behind the tracks).
        masks: per-frame label images instead of a run: a folder of ``*NNN.tif`` (e.g. ``mask000.tif`` or
            ``man_seg000.tif``) or a multi-page TIFF; labels need not agree between frames.
        params: :class:`~medseg.tracking.TrackingParams` (None = defaults).
        gt: a CTC ground-truth folder (``01_GT``) to score the result against (see
            :func:`evaluate_tracking`).
        device: ``auto``, ``cpu`` or ``cuda`` for the run.
        backend: ``torch`` or ``onnxruntime`` (needs ``medseg export RUN``).

    Returns:
        The summary written to ``tracking.json`` (with ``metrics`` when ``gt`` was given).

    Raises:
        ConfigError: neither or both of ``run`` and ``masks``, or ``run`` without ``frames``.
        DataError: unreadable frames or masks, or frames and masks of different sizes.
        RunError: ``run`` is not an instance run.
    """
    from medseg.io import write_csv_atomic, write_json_atomic
    from medseg.io.ctc import read_frames, write_ctc_result
    from medseg.report.tracking import plot_lineage, write_track_gif
    from medseg.tracking import TrackingParams, track_labels

    if (run is None) == (masks is None):
        raise ConfigError("track: give an instance run (RUN FRAMES) or --masks, not both and not neither")
    if run is not None and frames is None:
        raise ConfigError("track: RUN needs the movie to segment (a CTC frame folder or a TIFF stack)")
    params = params or TrackingParams()
    out = Path(out)
    images = read_frames(frames) if frames is not None else None
    if run is not None:
        labels = segment_movie(run, images, source=str(frames), device=device, backend=backend)
    else:
        labels = read_label_movie(masks)
        if images is not None and images.shape[:3] != labels.shape:
            raise DataError(
                f"{masks}: label movie is {_shape(labels.shape)} but {frames} is {_shape(images.shape[:3])}"
            )
    tracks = track_labels(labels, params)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_masks(out, tracks.masks.shape[0])
    write_ctc_result(out, tracks.masks, tracks.table)
    rows = track_rows(tracks.masks, tracks.table)
    write_csv_atomic(out / "tracks.csv", rows, fieldnames=list(rows[0]) if rows else _TRACK_COLUMNS)
    background = images if images is not None else np.zeros(tracks.masks.shape, np.uint8)
    write_track_gif(background, tracks.masks, out / "tracks.gif")
    plot_lineage(tracks.table, out / "lineage.png")
    lengths = tracks.table[:, 2] - tracks.table[:, 1] + 1 if len(tracks.table) else np.zeros(0)
    summary: dict[str, Any] = {
        "segmentation": {"run": str(run)} if run is not None else {"masks": str(masks)},
        "frames_source": str(frames) if frames is not None else None,
        "frames": int(tracks.masks.shape[0]),
        "size": [int(s) for s in tracks.masks.shape[1:]],
        "objects_per_frame": float(np.mean([np.count_nonzero(np.unique(f)) for f in labels])),
        "tracks": len(tracks.table),
        "divisions": len(tracks.divisions),
        "mean_track_length": float(lengths.mean()) if lengths.size else 0.0,
        "params": params.to_dict(),
    }
    write_json_atomic(out / "tracking.json", summary)
    if gt is not None:
        summary["metrics"] = evaluate_tracking(out, gt, write_report=False)
    write_tracking_report(out)
    return summary


def segment_movie(
    run: str | os.PathLike[str],
    images: np.ndarray,
    *,
    source: str = "movie",
    device: str = "auto",
    backend: str = "torch",
) -> np.ndarray:
    """Instance-segment every frame of a movie with an instance run.

    Args:
        run: the run folder.
        images: ``(T, H, W)`` or ``(T, H, W, C)`` frames.
        source: name of the movie in error messages.
        device: ``auto``, ``cpu`` or ``cuda``.
        backend: ``torch`` or ``onnxruntime``.

    Returns:
        ``(T, H, W)`` int32 labels, independent per frame.
    """
    from tqdm import tqdm

    from medseg.inference.predictor import Predictor

    predictor = Predictor.from_run(run, device=device, backend=backend)
    if predictor.config.task != "instance":
        raise RunError(
            f"{run}: a {predictor.config.task} run; tracking needs an instance run "
            f"(medseg train DATA --task instance) or --masks"
        )
    labels = np.zeros(images.shape[:3], np.int32)
    for t in tqdm(range(images.shape[0]), desc="segment", unit="frame", disable=None, leave=False):
        labels[t] = predictor.predict(images[t], source=f"{source} frame {t}").labels
    return labels


def read_label_movie(source: str | os.PathLike[str]) -> np.ndarray:
    """A ``(T, H, W)`` int32 label movie from a multi-page TIFF or a folder of ``PREFIXNNN.tif`` files.

    The folder's files must share one prefix (``mask``, ``man_seg``, ``man_track``, ...) and number the
    frames 0..T-1 without gaps.
    """
    from medseg.io.ctc import list_frames, read_frames, read_label_frames

    path = Path(source)
    if path.is_file():
        movie = read_frames(path)
        if movie.ndim != 3 or not np.issubdtype(movie.dtype, np.integer):
            raise DataError(
                f"{path}: expected a (T, H, W) integer label stack, got {movie.dtype} {movie.shape}"
            )
        return movie.astype(np.int32)
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    prefixes = {m[1] for f in path.iterdir() if (m := re.fullmatch(r"(.*?)\d+\.tiff?", f.name))}
    if len(prefixes) != 1:
        found = ", ".join(sorted(prefixes)) or "none"
        raise DataError(
            f"{path}: expected label frames PREFIXNNN.tif with one prefix, found prefixes: {found}"
        )
    prefix = prefixes.pop()
    if not list_frames(path, prefix):
        raise DataError(f"{path}: no label frames")
    return read_label_frames(path, prefix)


def evaluate_tracking(
    result: str | os.PathLike[str],
    gt: str | os.PathLike[str],
    *,
    division_tolerance: int = 0,
    write_report: bool = True,
) -> dict[str, Any]:
    """Score a CTC result folder against CTC ground truth: DET, SEG, TRA, divisions, ID switches.

    Args:
        result: a folder with ``mask000.tif ...`` and ``res_track.txt`` (``medseg track``'s output, or
            any CTC ``01_RES``).
        gt: the ground truth folder ``01_GT`` (``TRA/`` with ``man_track.txt``; ``SEG/`` optional: without
            it SEG is scored against the TRA masks, which is right only when they are full masks).
        division_tolerance: a division found this many frames early or late still counts.
        write_report: rewrite ``result/report.html`` with the scores when ``medseg track`` made it.

    Returns:
        The scores (see :class:`~medseg.metrics.tracking.TrackingScores`), also written to
        ``result/metrics.json``.
    """
    from medseg.io import write_json_atomic
    from medseg.io.ctc import check_tracks, read_ctc_ground_truth, read_label_frames, read_track_table
    from medseg.metrics.tracking import tracking_metrics

    result, gt = Path(result), Path(gt)
    truth = read_ctc_ground_truth(gt)
    masks = read_label_frames(result, "mask")
    table = read_track_table(result / "res_track.txt")
    if masks.shape != truth.tra.shape:
        raise DataError(
            f"{result}: result movie is {_shape(masks.shape)} "
            f"but the ground truth {gt} is {_shape(truth.tra.shape)}"
        )
    check_tracks(masks, table, name=str(result))
    scores = tracking_metrics(
        truth.tra, truth.table, masks, table, gt_seg=truth.seg or None, division_tolerance=division_tolerance
    )
    metrics = {"ground_truth": str(gt), "seg_frames": len(truth.seg) or int(truth.tra.shape[0])}
    metrics.update(scores.as_dict())
    write_json_atomic(result / "metrics.json", metrics)
    if write_report and (result / "tracking.json").is_file():
        write_tracking_report(result)
    return metrics


def track_rows(masks: np.ndarray, table: np.ndarray) -> list[dict[str, Any]]:
    """One row per track and frame: ``track, frame, centroid_y, centroid_x, area, parent``.

    Args:
        masks: ``(T, H, W)`` label movie (pixel value = track label).
        table: ``(N, 4)`` track table.
    """
    parent = dict(zip(table[:, 0].tolist(), table[:, 3].tolist()))
    rows = []
    height, width = masks.shape[1:]
    rr, cc = np.mgrid[0:height, 0:width]
    for t, frame in enumerate(masks):
        flat = frame.ravel()
        present = np.unique(flat)
        present = present[present > 0]
        if present.size == 0:
            continue
        index = np.searchsorted(present, flat)
        inside = flat > 0
        area = np.bincount(index[inside], minlength=present.size)
        row_sum = np.bincount(index[inside], weights=rr.ravel()[inside], minlength=present.size)
        col_sum = np.bincount(index[inside], weights=cc.ravel()[inside], minlength=present.size)
        for k, label in enumerate(present.tolist()):
            rows.append(
                {
                    "track": label,
                    "frame": t,
                    "centroid_y": round(row_sum[k] / area[k], 2),
                    "centroid_x": round(col_sum[k] / area[k], 2),
                    "area": int(area[k]),
                    "parent": int(parent.get(label, 0)),
                }
            )
    rows.sort(key=lambda r: (r["track"], r["frame"]))
    return rows


_TRACK_COLUMNS = ["track", "frame", "centroid_y", "centroid_x", "area", "parent"]


def write_tracking_report(folder: str | os.PathLike[str]) -> Path:
    """``folder/report.html`` from the files :func:`track` (and :func:`evaluate_tracking`) wrote there."""
    import json
    from html import escape
    from types import SimpleNamespace

    from medseg.io import write_text_atomic
    from medseg.report.html import embed_file, fmt, key_value_table, note, render_page, table

    folder = Path(folder)
    summary = json.loads((folder / "tracking.json").read_text(encoding="utf-8"))
    segmentation = summary["segmentation"]
    made_by = (
        f"instance run {segmentation['run']}" if "run" in segmentation else f"masks {segmentation['masks']}"
    )
    rows = [
        ["segmentation", escape(made_by)],
        ["movie", escape(str(summary.get("frames_source") or "—"))],
        ["frames", fmt(summary["frames"])],
        ["size (H x W)", " x ".join(str(s) for s in summary["size"])],
        ["objects per frame", fmt(summary["objects_per_frame"], 1)],
        ["tracks", fmt(summary["tracks"])],
        ["divisions", fmt(summary["divisions"])],
        ["mean track length", f"{fmt(summary['mean_track_length'], 1)} frames"],
        ["settings", escape(", ".join(f"{k}={v}" for k, v in summary["params"].items()))],
    ]
    sections = [(SimpleNamespace(id="summary", title="Summary"), key_value_table(rows))]
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        m = json.loads(metrics_path.read_text(encoding="utf-8"))
        score_rows = [
            [
                "TRA",
                fmt(m["tra"]),
                f"AOGM {fmt(m['aogm'], 1)} of {fmt(m['aogm_0'], 1)} to build from scratch",
            ],
            ["DET", fmt(m["det"]), f"{m['fn']} missed, {m['fp']} false, {m['ns']} merged (to split)"],
            ["SEG", fmt(m["seg"]), f"mean IoU over {m['seg_objects']} annotated objects"],
            [
                "division F1",
                fmt(m["division_f1"]),
                f"{m['divisions_matched']} of {m['divisions_true']} true divisions found, "
                f"{m['divisions_predicted']} predicted (precision {fmt(m['division_precision'])}, "
                f"recall {fmt(m['division_recall'])}, tolerance {m['division_tolerance']} frames)",
            ],
            ["ID switches", fmt(m["id_switches"]), "track label changes along a true track"],
            [
                "edge errors",
                fmt(m["ed"] + m["ea"] + m["ec"]),
                f"{m['ed']} to delete, {m['ea']} to add, {m['ec']} with the wrong meaning",
            ],
        ]
        body = table(["score", "value", ""], score_rows) + note(
            f"Against {escape(m['ground_truth'])}: Cell Tracking Challenge definitions (AOGM weights NS 5, "
            "FN 10, FP 1, ED 1, EA 1.5, EC 1)."
        )
        sections.append((SimpleNamespace(id="scores", title="Scores"), body))
    if (folder / "tracks.gif").is_file():
        gif = embed_file(
            folder / "tracks.gif", alt="tracked movie", caption="outlines and ids: one colour per track"
        )
        sections.append((SimpleNamespace(id="movie", title="Tracked movie"), gif))
    if (folder / "lineage.png").is_file():
        tree = embed_file(
            folder / "lineage.png",
            alt="lineage tree",
            caption="each bar is a track; grey lines join parents to children",
        )
        sections.append((SimpleNamespace(id="lineage", title="Lineage"), tree))
    page = render_page(f"medseg tracking: {folder.name}", f"Tracks: {folder.name}", folder, sections)
    return write_text_atomic(folder / "report.html", page)


def parse_params(pairs: list[str]) -> Any:
    """:class:`~medseg.tracking.TrackingParams` from ``key=value`` strings (``--set max_gap=2``)."""
    import yaml

    from medseg.tracking import TrackingParams

    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. max_gap=2")
        values[key.strip()] = yaml.safe_load(value)
    return TrackingParams.from_dict(values)


def _remove_stale_masks(out: Path, frames: int) -> None:
    """Mask files of an earlier, longer tracking in ``out`` would join this result's movie."""
    for path in out.iterdir():
        if _MASK_NAME.fullmatch(path.name) and int(path.name[4:-4]) >= frames:
            path.unlink()


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def print_scores(metrics: dict[str, Any]) -> None:
    """The headline scores on one screen (stderr is kept for progress)."""
    print(
        f"TRA {metrics['tra']:.4f}   DET {metrics['det']:.4f}   SEG {metrics['seg']:.4f}   "
        f"divisions: F1 {metrics['division_f1']:.3f} "
        f"({metrics['divisions_matched']}/{metrics['divisions_true']} found, "
        f"{metrics['divisions_predicted']} predicted)   ID switches {metrics['id_switches']}",
        file=sys.stdout,
    )
