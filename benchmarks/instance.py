"""Deep-watershed post-processing on a 2048 x 2048 frame with ~2,000 cells: medseg's `deep_watershed`
against the plain scikit-image recipe (DeepCell's documented steps), plus the cost of the training
targets; then, when `benchmarks/instance_metrics.py` is present, its instance-metric section.

Run: .venv/bin/python benchmarks/instance.py [--size 2048] [--repeats 3]
Prints a table and writes benchmarks/results/instance.json. The baseline runs in the same process on the
same maps: `peak_local_max` markers on the inner distance, `watershed` of the negative outer distance
within `outer > interior_threshold`, `remove_small_objects`, `relabel_sequential`, no tuning. Times are
the best of `--repeats` runs, wall clock and CPU (`time.process_time`, steadier on a shared machine);
peak memory is tracemalloc's peak (NumPy allocations, traced in a separate run so tracing does not slow
the timed ones). "identical" means both label images induce the same
partition of the pixels (their contingency table is a permutation).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import skimage
from scipy import ndimage

from medseg.io import write_json_atomic
from medseg.postprocess import WatershedParams, deep_watershed
from medseg.transforms.targets import deep_watershed_targets

PARAMS = WatershedParams(
    maxima_threshold=0.1, interior_threshold=0.01, min_distance=10, small_objects_threshold=15
)


def synthetic_cells(size: int, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) int32 instance labels: discs on a jittered grid; where discs overlap, the nearest
    centre wins, so neighbours touch along straight edges (about one object in five touches another)."""
    n = int(size // spacing)
    grid = (
        np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) + 0.5
    ) * spacing
    centres = np.clip(grid + rng.uniform(-0.25, 0.25, grid.shape) * spacing, 0, size - 1).astype(int)
    radii = rng.uniform(0.25, 0.45, len(centres)) * spacing
    seeds = np.zeros((size, size), np.int32)
    seeds[centres[:, 0], centres[:, 1]] = np.arange(1, len(centres) + 1)
    distance, (rows, cols) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[rows, cols]
    return np.where(distance < np.concatenate([[0.0], radii])[nearest], nearest, 0).astype(np.int32)


def network_like(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A target map made to look predicted: blurred, a smooth gain field (std 5 %), faint noise, in [0, 1]."""
    field = ndimage.gaussian_filter(rng.normal(0, 1, target.shape), 8)
    gain = 1 + 0.05 * field / field.std()
    noise = ndimage.gaussian_filter(rng.normal(0, 0.01, target.shape), 1)
    return np.clip(ndimage.gaussian_filter(target, 1.5) * gain + noise, 0, 1).astype(np.float32)


def baseline_watershed(inner: np.ndarray, outer: np.ndarray, params: WatershedParams) -> np.ndarray:
    """DeepCell's documented steps with plain scikit-image calls (the peak_local_max variant)."""
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import relabel_sequential, watershed

    maxima = ndimage.gaussian_filter(inner, params.maxima_smooth) if params.maxima_smooth else inner
    interior = ndimage.gaussian_filter(outer, params.interior_smooth)
    coords = peak_local_max(
        maxima,
        min_distance=params.min_distance,
        threshold_abs=params.maxima_threshold,
        exclude_border=params.exclude_border,
    )
    markers = np.zeros(inner.shape, np.int32)
    markers[tuple(coords.T)] = 1
    markers = label(markers)
    labels = watershed(-interior, markers, mask=interior > params.interior_threshold)
    if params.small_objects_threshold:  # DeepCell: min_size=t, i.e. remove sizes < t
        labels = remove_small_objects(labels, max_size=params.small_objects_threshold - 1)
    return relabel_sequential(labels)[0]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the labels are equal up to renumbering (0 stays 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


def measure(fn: Callable[[], np.ndarray], repeats: int) -> tuple[dict, np.ndarray]:
    """Best and median wall time and best CPU time over ``repeats`` runs, then tracemalloc's peak in one
    more run. CPU time (``time.process_time``) is the steadier number on a shared machine."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    stats = {
        "best_s": min(wall),
        "median_s": float(np.median(wall)),
        "best_cpu_s": min(cpu),
        "peak_mib": peak / 2**20,
    }
    return stats, result


def bench_targets(repeats: int = 5, seed: int = 0) -> dict:
    """Time of `deep_watershed_targets` on a training patch and on a whole image."""
    rng = np.random.default_rng(seed)
    rows = {}
    for size in (256, 1024):
        labels = synthetic_cells(size, 40.0, rng)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            deep_watershed_targets(labels, boundary=True, erosion=1)
            times.append(time.perf_counter() - start)
        rows[f"{size}x{size}"] = {"objects": int(len(np.unique(labels)) - 1), "best_ms": 1e3 * min(times)}
    return rows


def bench_watershed(size: int = 2048, repeats: int = 3, seed: int = 0) -> dict:
    """medseg's `deep_watershed` vs the plain recipe on one synthetic network output."""
    rng = np.random.default_rng(seed)
    truth = synthetic_cells(size, 45.5 * size / 2048, rng)
    targets = deep_watershed_targets(truth)
    inner, outer = network_like(targets["inner"], rng), network_like(targets["outer"], rng)
    base_stats, base = measure(lambda: baseline_watershed(inner, outer, PARAMS), repeats)
    ours_stats, ours = measure(lambda: deep_watershed(inner, outer, **PARAMS.to_dict()), repeats)
    clusters = ndimage.label(truth > 0, structure=np.ones((3, 3)))[1]
    return {
        "size": size,
        "objects_true": int(len(np.unique(truth)) - 1),
        "touching_clusters": int(clusters),
        "params": PARAMS.to_dict(),
        "baseline": {**base_stats, "objects": int(base.max())},
        "medseg": {**ours_stats, "objects": int(ours.max())},
        "speedup": base_stats["best_s"] / ours_stats["best_s"],
        "speedup_cpu": base_stats["best_cpu_s"] / ours_stats["best_cpu_s"],
        "identical": same_partition(base, ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    watershed_rows = bench_watershed(args.size, args.repeats)
    target_rows = bench_targets()
    w = watershed_rows
    print(
        f"\ndeep watershed, {w['size']}x{w['size']} frame, {w['objects_true']} true objects "
        f"({w['touching_clusters']} connected clusters), best of {args.repeats}"
    )
    print(f"{'variant':<12} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'objects':>8}")
    for name in ("baseline", "medseg"):
        r = w[name]
        print(
            f"{name:<12} {r['best_s']:>8.3f} {r['best_cpu_s']:>8.3f} {r['peak_mib']:>9.1f} {r['objects']:>8}"
        )
    print(
        f"speedup {w['speedup']:.2f}x wall, {w['speedup_cpu']:.2f}x cpu; "
        f"identical labels up to renumbering: {w['identical']}"
    )
    print("\ndeep_watershed_targets (boundary=True, erosion=1)")
    for name, r in target_rows.items():
        print(f"{name:<12} {r['objects']:>5} objects {r['best_ms']:>8.1f} ms")

    result = {
        "benchmark": "instance",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # other processes share the CPUs: see the cpu times
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "skimage": skimage.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "watershed": watershed_rows,
        "targets": target_rows,
    }
    # The instance-metrics section lives in its own script beside this one (benchmarks/instance_metrics.py).
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import instance_metrics
    except ModuleNotFoundError as exc:
        if exc.name != "instance_metrics":
            raise
        print("\nbenchmarks/instance_metrics.py not found: metrics section skipped")
    else:
        result["metrics"] = instance_metrics.run()
    out = Path(__file__).parent / "results" / "instance.json"
    write_json_atomic(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
