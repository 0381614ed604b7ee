"""Tracking: medseg's `track_labels` against laptrack's `LapTrack` on the same synthetic detections.

Run: .venv/bin/python benchmarks/tracking.py [--frames 100] [--size 1024] [--cells 500] [--repeats 1]
     [--motion 1.0] [--max-distance 15] [--cross-check] [--out benchmarks/results/tracking.json]
Prints a table and writes benchmarks/results/tracking.json.

Ground truth (seeded): `--cells` discs (radius 7-10 px) on a jittered grid in a `--size` square, moving
as a persistent random walk (about 2.5 px per frame, moves that would make two cells overlap are
undone), drawn so that a pixel goes to the nearest centre within its radius (neighbours touch along
straight edges). Each frame a cell divides with probability 0.2 % (about one division per frame, some
80-100 in all: two daughters of half the area, r/2 either side of the mother's centre, touching, then
growing back); cells whose centre leaves the image end; new cells enter from the edges at about the
rate cells leave. The GT is in CTC form (a division ends the mother; daughters have it as parent).
Detections = the GT movie with labels shuffled independently in every frame, 1 % of objects missing for
one frame (a GT cell without a detection), and one spurious 3 px blob per frame on average.

Both trackers get the same detections and comparable cut-offs: D = `--max-distance` frame-to-frame,
gaps of one missing frame (laptrack: gap_closing_max_frame_count=2, cut-off 2D; medseg: max_gap=1,
reach 2D), divisions within D (laptrack: splitting_cutoff; medseg also requires the daughters' area
cue, and that they share less border than 0.9 x the smaller one's diameter: these touching daughters
share about 0.7). medseg's merge cutting (`split_merges`) runs too; these detections hold no merges.
One difference to know when D is too small for the motion (`--motion 3`, ~7.5 px per frame, with
D = 15): laptrack's gap closing also joins a track end at t to a start at t + 1 (frame gap 1) within 2D,
a second chance medseg does not give, so there laptrack's TRA is higher; with D suited to the motion
(D = 25) medseg's TRA is higher again.
Timed, end to end from the label movie to a CTC result (relabelled (T, H, W) int32 masks + table):
- medseg: `track_labels` (features from bincounts, IoU + distance costs, sparse LAPs, relabelling);
- laptrack: centroids with `skimage.measure.regionprops_table` per frame ("features"), `LapTrack.predict`
  ("link"), and `medseg.tracking.build_tracks` on its links ("export", the same converter medseg uses).
Times are the best of `--repeats` runs (wall and CPU); peak memory is tracemalloc's peak in one more run
(it includes the 400 MiB output movie both produce). Scores: `medseg.metrics.tracking.tracking_metrics`
(TRA, DET, division F1 with tolerance 0); `--cross-check` recomputes TRA with py-ctcmetrics from CTC
folders written to a temporary directory (slow: ~1 min per result).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
from scipy.spatial import cKDTree

from medseg.io import write_json_atomic
from medseg.metrics.tracking import tracking_metrics
from medseg.tracking import TrackingParams, Tracks, build_tracks, track_labels


class _Cells:
    """The simulated population: one row per live cell."""

    def __init__(self, rng: np.random.Generator, size: int, count: int) -> None:
        n = int(np.ceil(np.sqrt(count)))
        spacing = size / n
        grid = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) + 0.5
        grid = grid[rng.permutation(len(grid))[:count]] * spacing
        self.pos = grid + rng.uniform(-0.2, 0.2, grid.shape) * spacing
        self.vel = rng.normal(0, 2.0, (count, 2))
        self.radius = rng.uniform(7, 10, count)
        self.full = self.radius.copy()
        self.track = np.arange(1, count + 1)
        self.age = rng.integers(0, 30, count)


def _draw(shape: tuple[int, int], pos: np.ndarray, radius: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W) int32: each pixel to the nearest centre whose disc covers it (one patch per cell)."""
    out = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    for (r, c), rad, label in zip(pos, radius, labels):
        r0, r1 = max(int(r - rad), 0), min(int(r + rad) + 2, shape[0])
        c0, c1 = max(int(c - rad), 0), min(int(c + rad) + 2, shape[1])
        rows, cols = np.ogrid[r0:r1, c0:c1]
        d = np.hypot(rows - r, cols - c).astype(np.float32)
        inside = (d < rad) & (d < best[r0:r1, c0:c1])
        best[r0:r1, c0:c1][inside] = d[inside]
        out[r0:r1, c0:c1][inside] = label
    return out


def simulate(
    frames: int, size: int, cells: int, seed: int = 0, motion: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: (T, size, size) int32 CTC label movie and its (N, 4) int64 track table; ``motion``
    scales the random-walk noise (1 = about 2.5 px per frame)."""
    rng = np.random.default_rng(seed)
    pop = _Cells(rng, size, cells)
    movie = np.zeros((frames, size, size), np.int32)
    rows: dict[int, list[int]] = {int(k): [int(k), 0, 0, 0] for k in pop.track}
    next_label = int(pop.track.max()) + 1
    for t in range(frames):
        movie[t] = _draw((size, size), pop.pos, pop.radius, pop.track)
        for k in pop.track:
            rows[int(k)][2] = t
        # Divisions: the mother ends at t, two daughters begin at t + 1.
        divide = (rng.random(len(pop.track)) < 0.002) & (pop.age > 10)
        keep = ~divide
        angle = rng.uniform(0, np.pi, divide.sum())
        axis = np.stack([np.cos(angle), np.sin(angle)], 1) * (pop.radius[divide] / 2)[:, None]
        kids = len(axis) * 2
        kid_labels = np.arange(next_label, next_label + kids)
        next_label += kids
        for label, mother in zip(kid_labels, np.repeat(pop.track[divide], 2)):
            rows[int(label)] = [int(label), t + 1, t + 1, int(mother)]
        mother_pos = np.repeat(pop.pos[divide], 2, 0)
        sign = np.tile([1.0, -1.0], len(axis))[:, None]
        kid_pos = mother_pos + sign * np.repeat(axis, 2, 0)
        kid_radius = np.repeat(pop.radius[divide], 2) / np.sqrt(2)
        kid_full = np.repeat(pop.full[divide], 2)
        kid_vel = np.repeat(pop.vel[divide], 2, 0) + sign * np.repeat(axis, 2, 0) * 0.2
        # Entering cells: from a random edge, heading inwards.
        entering = rng.poisson(0.8)
        edge_pos = rng.uniform(0, size, (entering, 2))
        side = rng.integers(0, 4, entering)
        edge_pos[side == 0, 0], edge_pos[side == 1, 0] = 1, size - 2
        edge_pos[side == 2, 1], edge_pos[side == 3, 1] = 1, size - 2
        edge_vel = (size / 2 - edge_pos) / size * 6 + rng.normal(0, 0.5, (entering, 2))
        new_labels = np.arange(next_label, next_label + entering)
        next_label += entering
        for label in new_labels:
            rows[int(label)] = [int(label), t + 1, t + 1, 0]
        enter_radius = rng.uniform(7, 10, entering)
        pop.pos = np.concatenate([pop.pos[keep], kid_pos, edge_pos])
        pop.vel = np.concatenate([pop.vel[keep], kid_vel, edge_vel])
        pop.radius = np.concatenate([pop.radius[keep], kid_radius, enter_radius])
        pop.full = np.concatenate([pop.full[keep], kid_full, enter_radius])
        pop.track = np.concatenate([pop.track[keep], kid_labels, new_labels])
        pop.age = np.concatenate([pop.age[keep] + 1, np.zeros(kids + entering, int)])
        # Motion: persistent random walk. A move that brings two cells closer while they overlap by more
        # than 10 % of their radii is undone (sisters, born overlapping, may still move apart).
        pop.vel = 0.8 * pop.vel + rng.normal(0, 1.2 * motion, pop.vel.shape)
        pop.radius = np.minimum(pop.radius + 0.05, pop.full)
        proposal = pop.pos + pop.vel
        pairs = cKDTree(proposal).query_pairs(20.0, output_type="ndarray")
        i, j = pairs.T
        new_distance = np.hypot(*(proposal[i] - proposal[j]).T)
        old_distance = np.hypot(*(pop.pos[i] - pop.pos[j]).T)
        clash = (new_distance < 0.9 * (pop.radius[i] + pop.radius[j])) & (new_distance < old_distance)
        stuck = np.zeros(len(proposal), bool)
        stuck[pairs[clash].ravel()] = True
        proposal[stuck] = pop.pos[stuck]
        pop.vel[stuck] *= -0.5
        pop.pos = proposal
        inside = np.all((pop.pos >= 0) & (pop.pos < size), axis=1)
        for label in pop.track[~inside]:
            if rows[int(label)][1] == t + 1:  # left before it was ever drawn: not a track
                del rows[int(label)]
        for name in ("pos", "vel", "radius", "full", "track", "age"):
            setattr(pop, name, getattr(pop, name)[inside])
    # Cells whose first frame is never drawn (born or entering after the last frame) are not tracks.
    table = np.array([row for row in rows.values() if row[1] < frames], np.int64)
    present = {(t, int(k)) for t in range(frames) for k in np.unique(movie[t])[1:]}
    for label, begin, end, _ in table:
        missing = [t for t in range(begin, end + 1) if (t, label) not in present]
        assert not missing, f"simulated track {label} lost its pixels in frames {missing}"
    return movie, table


def detections(gt: np.ndarray, seed: int = 1) -> np.ndarray:
    """(T, H, W) uint16 per-frame segmentation: shuffled labels, 1 % missed objects, spurious blobs."""
    rng = np.random.default_rng(seed)
    out = np.zeros(gt.shape, np.uint16)
    size = gt.shape[1]
    for t, frame in enumerate(gt):
        labels = np.unique(frame)[1:]
        lookup = np.zeros(int(labels.max()) + 1, np.uint16)
        new = rng.permutation(len(labels)) + 1
        new[rng.random(len(labels)) < 0.01] = 0
        lookup[labels] = new
        out[t] = lookup[frame]
        for k in range(rng.poisson(1.0)):
            r, c = rng.integers(4, size - 4, 2)
            blob = np.s_[r - 2 : r + 3, c - 2 : c + 3]
            if not gt[t][blob].any():
                out[t][blob] = len(labels) + 1 + k
    return out


def laptrack_pipeline(
    movie: np.ndarray, params: TrackingParams, stage_times: dict[str, float] | None = None
) -> Tracks:
    """Centroids by regionprops_table, LapTrack.predict, CTC export by medseg.tracking.build_tracks; the
    cut-offs are taken from ``params`` (gap closing reaches 2 x max_distance, as medseg's for one frame)."""
    from laptrack import LapTrack
    from skimage.measure import regionprops_table

    clock = time.perf_counter()
    labels, coords = [], []
    for frame in movie:
        props = regionprops_table(frame, properties=("label", "centroid"))
        labels.append(props["label"])
        coords.append(np.stack([props["centroid-0"], props["centroid-1"]], 1))
    features = time.perf_counter()
    tracker = LapTrack(
        metric="sqeuclidean",
        cutoff=params.max_distance**2,
        gap_closing_metric="sqeuclidean",
        gap_closing_cutoff=(2 * params.max_distance) ** 2,
        gap_closing_max_frame_count=params.max_gap + 1,
        splitting_metric="sqeuclidean",
        splitting_cutoff=params.max_distance**2,
        merging_cutoff=False,
    )
    graph = tracker.predict(coords)
    linked = time.perf_counter()
    links = np.array(
        [[a[0], labels[a[0]][a[1]], b[0], labels[b[0]][b[1]]] for a, b in graph.edges()], np.int64
    ).reshape(-1, 4)
    result = build_tracks(movie, links)
    if stage_times is not None:
        stage_times.update(
            features_s=features - clock, link_s=linked - features, export_s=time.perf_counter() - linked
        )
    return result


def measure(
    fn: Callable[[], Tracks], repeats: int, stage_times: dict[str, float] | None = None
) -> tuple[dict, Tracks]:
    """Best wall and CPU time over ``repeats`` runs, then tracemalloc's peak in one more run (tracing
    slows Python-heavy code a lot, so ``stage_times``, filled by ``fn``, is read from the last timed run)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    stats = {"best_s": min(wall), "best_cpu_s": min(cpu)}
    if stage_times is not None:
        stats["stages_s"] = dict(stage_times)
    tracemalloc.start()
    fn()
    stats["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return stats, result


def scores(gt: np.ndarray, gt_table: np.ndarray, result: Tracks) -> dict:
    s = tracking_metrics(gt, gt_table, result.masks, result.table)
    return {
        "tra": s.tra,
        "det": s.det,
        "aogm": s.aogm,
        "errors": {k: int(getattr(s, k)) for k in ("ns", "fn", "fp", "ed", "ea", "ec")},
        "division_precision": s.division_precision,
        "division_recall": s.division_recall,
        "division_f1": s.division_f1,
        "divisions_predicted": int(s.divisions_predicted),
        "id_switches": int(s.id_switches),
        "tracks": len(result.table),
    }


def ctc_cross_check(gt: np.ndarray, gt_table: np.ndarray, results: dict[str, Tracks]) -> dict[str, float]:
    """TRA by py-ctcmetrics' evaluate_sequence on CTC folders written to a temporary directory."""
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    from medseg.io.ctc import write_ctc_result, write_frames, write_track_table

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir = Path(tmp) / "01_GT"
        write_frames(gt_dir / "TRA", "man_track", gt)
        write_track_table(gt_dir / "TRA" / "man_track.txt", gt_table)
        for name, result in results.items():
            res_dir = write_ctc_result(Path(tmp) / f"01_RES_{name}", result.masks, result.table)
            metrics = evaluate_sequence(str(res_dir), str(gt_dir), ["TRA"], threads=1)
            out[name] = float(metrics["TRA"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--motion", type=float, default=1.0, help="scale of the random-walk noise")
    parser.add_argument("--max-distance", type=float, default=15.0, help="frame-to-frame cut-off, px")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tracking.json")
    parser.add_argument("--cross-check", action="store_true", help="TRA by py-ctcmetrics as well (slow)")
    args = parser.parse_args()

    start = time.perf_counter()
    params = TrackingParams(max_distance=args.max_distance, max_gap=1)
    gt, gt_table = simulate(args.frames, args.size, args.cells, motion=args.motion)
    movie = detections(gt)
    simulated_s = time.perf_counter() - start
    counts = [len(np.unique(frame)) - 1 for frame in movie]
    gt_divisions = int((np.bincount(gt_table[:, 3])[1:] >= 2).sum())
    print(
        f"synthetic movie: {args.frames} frames {args.size}x{args.size}, {np.mean(counts):.0f} detections "
        f"per frame ({min(counts)}-{max(counts)}), {len(gt_table)} GT tracks, {gt_divisions} divisions "
        f"(simulated in {simulated_s:.1f} s)"
    )
    import laptrack  # imported before timing: pandas, networkx and pydantic take seconds to load

    ours_stats, ours = measure(lambda: track_labels(movie, params), args.repeats)
    stages: dict[str, float] = {}
    lap_stats, lap = measure(lambda: laptrack_pipeline(movie, params, stages), args.repeats, stages)
    rows = {
        "medseg": {**ours_stats, **scores(gt, gt_table, ours)},
        "laptrack": {**lap_stats, **scores(gt, gt_table, lap)},
    }
    if args.cross_check:
        for name, tra in ctc_cross_check(gt, gt_table, {"medseg": ours, "laptrack": lap}).items():
            rows[name]["tra_py_ctcmetrics"] = tra

    print(
        f"\n{'tracker':<10} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'TRA':>8} {'AOGM':>8} {'DET':>7} "
        f"{'div F1':>7} {'div P':>6} {'div R':>6} {'tracks':>7}"
    )
    for name, r in rows.items():
        print(
            f"{name:<10} {r['best_s']:>8.2f} {r['best_cpu_s']:>8.2f} {r['peak_mib']:>9.0f} {r['tra']:>8.5f} "
            f"{r['aogm']:>8.1f} {r['det']:>7.4f} {r['division_f1']:>7.3f} {r['division_precision']:>6.3f} "
            f"{r['division_recall']:>6.3f} {r['tracks']:>7}"
        )
    ratio = rows["laptrack"]["best_s"] / rows["medseg"]["best_s"]
    print(
        f"medseg is {ratio:.1f}x faster than laptrack (wall, end to end); TRA medseg - laptrack "
        f"{rows['medseg']['tra'] - rows['laptrack']['tra']:+.5f}"
    )
    lap_stages = rows["laptrack"]["stages_s"]
    print("laptrack stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in lap_stages.items()))
    if args.cross_check:
        print("py-ctcmetrics TRA: " + ", ".join(f"{k} {r['tra_py_ctcmetrics']:.5f}" for k, r in rows.items()))

    result = {
        "benchmark": "tracking",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "laptrack": laptrack.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "data": {
            "frames": args.frames,
            "size": args.size,
            "motion": args.motion,
            "detections_per_frame_mean": float(np.mean(counts)),
            "gt_tracks": len(gt_table),
            "gt_divisions": gt_divisions,
            "seed": 0,
        },
        "params": params.to_dict(),
        "repeats": args.repeats,
        "results": rows,
        "speedup_wall": ratio,
        "speedup_cpu": rows["laptrack"]["best_cpu_s"] / rows["medseg"]["best_cpu_s"],
    }
    write_json_atomic(args.out, result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
