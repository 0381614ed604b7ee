"""Instance metrics speed: medseg's `match_instances` + `aji` vs MONAI's `PanopticQualityMetric`, on the same
synthetic nuclei label images, plus time and peak memory of ours on a 2048x2048 image with ~2,000 objects.

Run: .venv/bin/python benchmarks/instance_metrics.py [--repeats 7] [--no-monai]
Prints a table and writes benchmarks/results/instance_metrics.json. Baseline = MONAI in the same run, same
input. Targets: >= 100x faster than MONAI at 1024x1024 / ~500 objects with PQ equal to 1e-6; <= 0.1 s and
< 300 MB peak at 2048x2048 / ~2,000 objects (MONAI is not run there: it builds one full-size int32 mask per
instance, ~4,000 x 16 MiB = ~64 GiB, more than this machine's memory).

Timings are medians over `--repeats` calls after one warm-up call. "two calls" is what a user writes
(`match_instances(t, p)` then `aji(t, p)`, each one pass over the pixels); "shared table" computes
`overlap_table(t, p)` once and takes both from it. Peak memory is reported two ways: the tracemalloc peak
(NumPy registers its buffers with tracemalloc) and the growth of the process's peak RSS during one call
in a fresh process during its first call (Linux only: VmHWM after resetting it through
/proc/self/clear_refs, minus VmRSS before the call).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy

from medseg.io import write_json_atomic
from medseg.metrics.instance import aji, instance_metrics, match_instances, overlap_table

MIB = 2**20


def synthetic_pair(size: int, n_objects: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A nuclei-like truth and an imperfect prediction, both (size, size) int32 label images.

    Truth: ``n_objects`` discs of radius 7-15 px at random positions (later ones cut into earlier ones).
    Prediction: each disc shifted by up to 2 px with its radius changed by up to 1 px; 4% dropped, 4% split
    in two along a random line, 4% merged with the previous object, and 4% extra false discs.
    """
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), dtype=np.int32)
    pred = np.zeros_like(truth)
    reach = 17
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    label = 0

    def paint(image: np.ndarray, cy: int, cx: int, mask: np.ndarray, value: int) -> None:
        image[cy - reach : cy + reach + 1, cx - reach : cx + reach + 1][mask] = value

    n_extra = int(0.04 * n_objects)
    for k in range(1, n_objects + n_extra + 1):
        cy, cx = rng.integers(reach + 2, size - reach - 2, size=2)
        radius = rng.uniform(7, 15)
        if k <= n_objects:
            paint(truth, cy, cx, yy**2 + xx**2 <= radius**2, k)
        fate = rng.random() if k <= n_objects else 1.0
        if fate < 0.04:
            continue
        dy, dx = rng.integers(-2, 3, size=2)
        disc = (yy - dy) ** 2 + (xx - dx) ** 2 <= (radius + rng.uniform(-1, 1)) ** 2
        if fate < 0.08:
            side = yy * rng.normal() + xx * rng.normal() > 0
            paint(pred, cy, cx, disc & side, label + 1)
            paint(pred, cy, cx, disc & ~side, label + 2)
            label += 2
        elif fate < 0.12 and label > 0:
            paint(pred, cy, cx, disc, label)
        else:
            label += 1
            paint(pred, cy, cx, disc, label)
    return truth, pred


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def tracemalloc_peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_rss_growth_mib(fn: Callable[[], object]) -> float | None:
    """How far the process's peak RSS rises above its current RSS during one call (None off Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    except (OSError, KeyError):
        return None


def fresh_process_rss_growth_mib(size: int, n_objects: int) -> float | None:
    """Peak-RSS growth of the first two-call evaluation in a new process (in a warm one, freed pages stay
    in the allocator's heap and the growth reads ~0)."""
    child = [sys.executable, __file__, "--rss-child", str(size), str(n_objects)]
    out = subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
    return None if out == "None" else float(out)


def _rss_child(size: int, n_objects: int) -> None:
    truth, pred = synthetic_pair(size, n_objects, seed=0)
    print(peak_rss_growth_mib(lambda: (match_instances(truth, pred), aji(truth, pred))))


def monai_panoptic(truth: np.ndarray, pred: np.ndarray) -> tuple[float, dict[str, float]]:
    """(seconds, {"pq", "sq", "rq"}) of one MONAI PanopticQualityMetric call on (1, 2, H, W) int32 input."""
    import torch
    from monai.metrics import PanopticQualityMetric

    def pack(labels: np.ndarray) -> torch.Tensor:  # channel 0: instance ids, channel 1: class (1 = nucleus)
        return torch.from_numpy(np.stack([labels, (labels != 0).astype(np.int32)])[None])

    y, y_pred = pack(truth), pack(pred)
    names = ("pq", "sq", "rq")
    start = time.perf_counter()
    metric = PanopticQualityMetric(num_classes=1, metric_name=names, match_iou_threshold=0.5)
    metric(y_pred=y_pred, y=y)
    values = metric.aggregate()
    seconds = time.perf_counter() - start
    return seconds, {name: float(value[0]) for name, value in zip(names, values)}


def measure_ours(truth: np.ndarray, pred: np.ndarray, repeats: int) -> dict:
    def two_calls() -> tuple:
        return match_instances(truth, pred), aji(truth, pred)

    def shared_table() -> tuple:
        table = overlap_table(truth, pred)
        return table.match(0.5), table.aji()

    match, aji_value = two_calls()
    return {
        "n_true": match.n_true,
        "n_pred": match.n_pred,
        "tp": match.tp,
        "pq": match.pq,
        "sq": match.sq,
        "rq": match.rq,
        "f1": match.f1,
        "aji": aji_value,
        "seconds_two_calls": median_time(two_calls, repeats),
        "seconds_shared_table": median_time(shared_table, repeats),
        "seconds_instance_metrics": median_time(lambda: instance_metrics(truth, pred), repeats),
        "tracemalloc_peak_mib_two_calls": tracemalloc_peak_mib(two_calls),
    }


def run(
    *,
    repeats: int = 7,
    with_monai: bool = True,
    small: tuple[int, int] = (1024, 500),
    large: tuple[int, int] = (2048, 2000),
) -> dict:
    """Time both sizes; MONAI only at the small one. Returns the JSON-ready result (also the table's data).

    Args:
        repeats: timed calls per measurement of ours (median reported), after one warm-up call.
        with_monai: time MONAI's PanopticQualityMetric at the small size (one call: it takes tens of seconds).
        small: (image side, number of objects) compared against MONAI.
        large: (image side, number of objects) measured for ours only.
    """
    results: dict = {}
    for name, (size, n_objects) in (("large", large), ("small", small)):
        truth, pred = synthetic_pair(size, n_objects, seed=0)
        row = {"size": size, "objects_requested": n_objects, **measure_ours(truth, pred, repeats)}
        row["peak_rss_growth_mib_two_calls"] = fresh_process_rss_growth_mib(size, n_objects)
        masks = row["n_true"] + row["n_pred"]
        row["monai_mask_memory_estimate_gib"] = masks * truth.size * 4 / 2**30
        if name == "small" and with_monai:
            seconds, scores = monai_panoptic(truth, pred)
            row["monai_seconds"] = seconds
            row["monai"] = scores
            row["speedup_two_calls"] = seconds / row["seconds_two_calls"]
            row["speedup_shared_table"] = seconds / row["seconds_shared_table"]
            row["pq_abs_diff"] = abs(row["pq"] - scores["pq"])
        results[name] = row
    small_row, large_row = results["small"], results["large"]
    targets = {
        "large_two_calls_le_0.1s": large_row["seconds_two_calls"] <= 0.1,
        "large_tracemalloc_peak_lt_300mib": large_row["tracemalloc_peak_mib_two_calls"] < 300,
    }
    if "monai_seconds" in small_row:
        targets["small_speedup_ge_100x"] = small_row["speedup_two_calls"] >= 100
        targets["small_pq_equal_to_1e-6"] = small_row["pq_abs_diff"] <= 1e-6
    versions = {"numpy": np.__version__, "scipy": scipy.__version__}
    if with_monai:
        import monai
        import torch

        versions.update(
            monai=monai.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads()
        )
    return {
        "benchmark": "instance_metrics",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "repeats": repeats,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
        "targets_met": targets,
    }


def print_table(result: dict) -> None:
    print(f"\ninstance metrics, median of {result['repeats']} calls, {result['cpu_count']} CPUs")
    header = f"{'image':<11} {'true/pred':>11} {'two calls':>10} {'shared':>9} {'all':>9} {'peak MiB':>9}"
    print(header + f" {'MONAI s':>8} {'speedup':>8} {'|dPQ|':>8}")
    for row in (result["results"]["small"], result["results"]["large"]):
        rss = row["peak_rss_growth_mib_two_calls"]
        peak = f"{row['tracemalloc_peak_mib_two_calls']:.0f}" + (f"/{rss:.0f}" if rss is not None else "")
        line = (
            f"{row['size']}x{row['size']:<6} {row['n_true']:>5}/{row['n_pred']:<5} "
            f"{row['seconds_two_calls'] * 1e3:>8.1f}ms {row['seconds_shared_table'] * 1e3:>7.1f}ms "
            f"{row['seconds_instance_metrics'] * 1e3:>7.1f}ms {peak:>9}"
        )
        if "monai_seconds" in row:
            line += (
                f" {row['monai_seconds']:>8.2f} {row['speedup_two_calls']:>7.0f}x {row['pq_abs_diff']:>8.1e}"
            )
        else:
            line += f"  (MONAI skipped: ~{row['monai_mask_memory_estimate_gib']:.0f} GiB of masks)"
        print(line)
    print("peak MiB = tracemalloc peak / peak-RSS growth during one two-call evaluation")
    print("targets met:", ", ".join(f"{k}={v}" for k, v in result["targets_met"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-monai", action="store_true", help="skip the MONAI baseline (no torch needed)")
    parser.add_argument("--rss-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(*args.rss_child)
        return
    result = run(repeats=args.repeats, with_monai=not args.no_monai)
    print_table(result)
    out = Path(__file__).parent / "results" / "instance_metrics.json"
    write_json_atomic(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
