"""Inference speed and memory on this CPU: one 512² image through segformer_b0 and unet, and large images.

1. The network alone on a normalised (1, 3, 512, 512) batch: the baseline is torch fp32 eager with the
   network as its library ships it (for SegFormer, transformers' decode head; medseg's prediction folds
   that head, see ``SegFormer._decode_folded``), then medseg's fp32 eager, bf16 autocast, channels_last
   (fp32 and bf16; channels_last bf16 is what ``Predictor`` runs), ONNX Runtime fp32 (graph optimisation
   ALL; BASIC and none for comparison), with one thread per core (the default; 2 here) and with 1; all
   variants timed round-robin.
   Floor = the model's FLOPs (torch.utils.flop_counter: convolutions, matmuls, attention; 1 multiply-add =
   2 FLOPs) / the peak GFLOP/s of a large matmul in the same precision on this CPU; time/floor says how
   far each variant is from compute-bound.
2. The whole Predictor (normalise, pad, network, softmax, argmax) on a 512² uint8 image: fp32 torch with
   the network as shipped (the baseline), medseg's default (``Predictor.from_run(RUN)``: torch,
   channels_last, bf16 autocast where the CPU has bf16, SegFormer's folded head) and
   ``backend="onnxruntime"``.
3. Large images (unet, 4 classes, tiles of 512 with 25% overlap), each size in a fresh process:
   1024², 2048², 4096², 8192²: seconds, seconds per megapixel and peak RSS (VmHWM from /proc/self/status;
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is recorded beside it, but Linux carries the parent's
   high-water mark across exec into it, so VmHWM is the number). ``Predictor.predict`` (the default path:
   each tile normalised as it is cut, class ids finalised band by band, no (K, H, W) map kept above 4096²)
   and, for ``--before-sizes`` (8192² by default), the whole-image path it replaced (the image normalised
   into one float32 copy, the whole (K, H, W) blend, then argmax), measured in the same run.

The machine's 1-minute load average before and after is recorded: on a shared machine other processes
slow every row, which is why each row is the best of ``--repeats`` calls (the median is kept beside it).
Models are untrained (random weights, saved as a real run folder): speed does not depend on the weights.

Run: .venv/bin/python benchmarks/inference.py [--repeats 7] [--sizes 1024 2048 4096 8192]
       [--before-sizes 8192] [--large-only]
Prints tables and writes benchmarks/results/inference.json. Every baseline is measured in the same run.
``--large-only`` measures part 3 only and replaces just its entry in the JSON (the other parts keep the
values and timestamp of the run that measured them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medseg.config import load_config, save_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.device import cpu_supports_bf16
from medseg.inference.onnx import OnnxRuntimeBackend
from medseg.inference.predictor import Predictor, class_ids
from medseg.inference.sliding_window import sliding_window, tile_starts
from medseg.io import write_json_atomic
from medseg.models import build_model
from medseg.models.segformer import SegFormer
from medseg.workflows.export import export_run

MODELS = ("segformer_b0", "unet")
THREADS = torch.get_num_threads()  # torch's default: one per core
SIZE = 512
LABELS = "{background: 0, red_cell: 1, white_cell: 2, nucleus: 3}"


def make_run(folder: Path, model: str) -> Path:
    """A run folder as training leaves it (config.yaml + checkpoints/best.pt), untrained weights."""
    config = load_config(None, [f"model.name={model}", "data.in_channels=3", f"data.labels={LABELS}"])
    torch.manual_seed(0)
    network = build_model(config.model, in_channels=3, num_classes=4, pretrained=False)
    save_config(config, folder / "config.yaml")
    save_checkpoint(folder / "checkpoints" / "best.pt", {"model": network.state_dict(), "epoch": 0})
    return folder


def interleaved(calls: dict[str, tuple], repeats: int) -> dict[str, dict[str, float]]:
    """Time ``{name: (fn, threads)}`` round-robin, one call of each per round after one warm-up call each.

    Interleaving exposes every variant to the same background load. ``seconds`` is the best round, the
    one least disturbed by other processes (what the ratios use); ``median_seconds`` shows the noise.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, (fn, threads) in calls.items():
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
                fn()  # untimed: the first call after a thread-count change pays for the pool's change
            start = time.perf_counter()
            fn()
            if round_:  # round 0 warms up (allocators, oneDNN primitives, ORT arenas)
                times[name].append(time.perf_counter() - start)
    torch.set_num_threads(THREADS)
    return {n: {"seconds": float(np.min(t)), "median_seconds": float(np.median(t))} for n, t in times.items()}


def matmul_peak_gflops(dtype: torch.dtype, threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` by ``n x n`` matmul (2 n³ FLOPs)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_flops(model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(batch)
    return counter.get_total_flops()


def as_shipped(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network's forward as its library ships it: for SegFormer, transformers' decode head (medseg folds
    it when predicting); every other model is its own forward."""
    if not isinstance(model, SegFormer):
        return model

    def forward(x: torch.Tensor) -> torch.Tensor:
        features = model.encoder(x, output_hidden_states=True, return_dict=True).hidden_states
        logits = model.decode_head(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return forward


class ShippedPredictor(Predictor):
    """The pipeline baseline: fp32, contiguous tensors, the network as shipped (:func:`as_shipped`)."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        return as_shipped(self.model)(self.pad(images).contiguous())[..., :height, :width].float()


def network_variants(run: Path, repeats: int) -> dict[str, dict]:
    """Seconds per (1, 3, 512, 512) forward of each variant, with 2 and 1 threads."""
    predictor = Predictor.from_run(run, device="cpu")
    model = _contiguous_copy(run)
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    batch = torch.from_numpy(predictor.preprocess(image))[None]
    batch_cl = batch.contiguous(memory_format=torch.channels_last)
    model_cl = predictor.model  # the Predictor keeps its network channels_last
    ort = {t: OnnxRuntimeBackend(run / "export" / "model.onnx", threads=t) for t in (THREADS, 1)}

    def torch_call(network, x, bf16):
        def call():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                network(x)

        return call

    calls = {}
    for threads in (THREADS, 1):
        shipped = torch_call(as_shipped(model), batch, False)
        calls[f"as shipped fp32 eager, {threads} thr"] = (shipped, threads)
        calls[f"torch fp32 eager, {threads} thr"] = (torch_call(model, batch, False), threads)
        calls[f"torch bf16 autocast, {threads} thr"] = (torch_call(model, batch, True), threads)
        if threads == THREADS:
            calls[f"channels_last fp32, {threads} thr"] = (torch_call(model_cl, batch_cl, False), threads)
            calls[f"channels_last bf16, {threads} thr"] = (torch_call(model_cl, batch_cl, True), threads)
        runtime = ort[threads]
        calls[f"onnxruntime fp32, {threads} thr"] = (lambda runtime=runtime: runtime(batch), THREADS)
    for level in ("basic", "disabled"):  # what graph optimisation ALL (the default) adds
        runtime = OnnxRuntimeBackend(run / "export" / "model.onnx", optimization=level)
        calls[f"onnxruntime opt {level}, {THREADS} thr"] = (lambda runtime=runtime: runtime(batch), THREADS)
    rows = interleaved(calls, repeats)
    for name, row in rows.items():
        row["threads"] = int(name.rsplit(", ", 1)[1].split()[0])
        row["precision"] = "bf16" if "bf16" in name else "fp32"
    return rows


def _contiguous_copy(run: Path) -> torch.nn.Module:
    model = Predictor.from_run(run, device="cpu").model
    return model.to(memory_format=torch.contiguous_format)


def pipeline_variants(run: Path, repeats: int) -> dict[str, dict]:
    """Seconds per ``Predictor.predict`` of one 512² uint8 image (normalise ... argmax)."""
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    shipped = ShippedPredictor.from_run(run, device="cpu")
    shipped.model = _contiguous_copy(run)
    shipped.bf16 = False
    default = Predictor.from_run(run)
    onnx = Predictor.from_run(run, backend="onnxruntime")
    predictors = {
        "torch fp32 as shipped (baseline)": shipped,
        f"medseg default (torch, bf16 {'on' if default.bf16 else 'off'}, channels_last)": default,
        "medseg --backend onnxruntime": onnx,
    }
    calls = {name: (lambda p=p: p.predict(image), THREADS) for name, p in predictors.items()}
    return interleaved(calls, repeats)


def child_predict(run: str, size: int, path: str) -> None:
    """Entry of the large-image subprocess: one ``size``² image through the default Predictor
    (``path="default"``) or through the whole-image path it replaced (``"whole-image"``)."""
    image = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    predictor = Predictor.from_run(run)
    start = time.perf_counter()
    labels = predictor.predict(image).labels if path == "default" else whole_image_predict(predictor, image)
    seconds = time.perf_counter() - start
    assert labels.shape == (size, size)
    status = Path("/proc/self/status").read_text()
    vmhwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "vmhwm_mib": vmhwm_kb / 1024, "maxrss_mib": maxrss_kb / 1024}))


def whole_image_predict(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """Tiled prediction as medseg did it before bounded memory: a float32 copy of the whole normalised
    image, the whole ``(K, H, W)`` blend, then the class ids (same tiles, batches and network calls)."""
    settings = predictor.config.inference
    tile = predictor.tile_size()

    def predict_tiles(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(predictor.logits(batch), dim=1)

    normalised = predictor.preprocess(image)
    height, width = normalised.shape[-2:]
    shape = (min(tile, predictor.tile_size(height)), min(tile, predictor.tile_size(width)))
    maps = sliding_window(
        normalised,
        predict_tiles,
        shape,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        softmax=False,
    )
    return class_ids(maps)


def large_images(run: Path, sizes: list[int], path: str = "default") -> dict[str, dict]:
    rows = {}
    for size in sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(run), str(size), path],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["seconds_per_megapixel"] = row["seconds"] / (size * size / 1e6)
        row["tiles"] = len(tile_starts(size, 512, 0.25)) ** 2  # time follows tiles, not exactly area
        row["seconds_per_tile"] = row["seconds"] / row["tiles"]
        rows[f"{size}x{size}"] = row
        print(
            f"  {path:<11} {size:>5}²  {row['seconds']:7.1f} s  {row['seconds_per_megapixel']:.3f} s/MP  "
            f"{row['tiles']:>4} tiles  {row['seconds_per_tile']:.3f} s/tile  "
            f"peak RSS {row['vmhwm_mib']:.0f} MiB",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per variant (best of)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096, 8192])
    parser.add_argument(
        "--before-sizes", type=int, nargs="*", default=[8192], help="sizes also run through the old path"
    )
    parser.add_argument("--large-only", action="store_true", help="measure only the large images")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "SIZE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_predict(args.child[0], int(args.child[1]), args.child[2])
        return
    if args.large_only:
        large_only(args.sizes, args.before_sizes)
        return

    started = time.perf_counter()
    load_before = os.getloadavg()
    threads = THREADS
    print(f"load average before: {load_before[0]:.1f} on {os.cpu_count()} cores (others slow every row)")
    peaks = {
        f"{dtype_name}, {t} thr": matmul_peak_gflops(dtype, t)
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        for t in (threads, 1)
    }
    torch.set_num_threads(threads)
    print("peak matmul GFLOP/s (2048³): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in MODELS:
            runs[name] = make_run(Path(tmp) / name, name)
            export_run(runs[name])
        for name in MODELS:
            model = _contiguous_copy(runs[name])
            flops = model_flops(model, torch.rand(1, 3, SIZE, SIZE))
            shipped_flops = model_flops(as_shipped(model), torch.rand(1, 3, SIZE, SIZE))
            network = network_variants(runs[name], args.repeats)
            base = network[f"as shipped fp32 eager, {threads} thr"]["seconds"]
            for variant, row in network.items():
                peak = peaks[f"{row['precision']}, {row['threads']} thr"]
                row["floor_seconds"] = (shipped_flops if "shipped" in variant else flops) / (peak * 1e9)
                row["time_over_floor"] = row["seconds"] / row["floor_seconds"]
                row["speedup_vs_fp32_eager"] = base / row["seconds"]
            pipeline = pipeline_variants(runs[name], args.repeats)
            pipe_base = pipeline["torch fp32 as shipped (baseline)"]["seconds"]
            for row in pipeline.values():
                row["speedup_vs_fp32"] = pipe_base / row["seconds"]
            results[name] = {
                "gflops": flops / 1e9,
                "gflops_as_shipped": shipped_flops / 1e9,
                "network": network,
                "predict": pipeline,
            }
            _print_model(name, flops, shipped_flops, network, pipeline)
        large = large_images_section(runs["unet"], args.sizes, args.before_sizes)
    result = {
        "benchmark": "inference",
        "size": SIZE,
        "threads": threads,
        "repeats": args.repeats,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "cpu_bf16": cpu_supports_bf16(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "peak_matmul_gflops": peaks,
        "models": results,
        "large_images": large,
        "benchmark_seconds": time.perf_counter() - started,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    out = Path(__file__).parent / "results" / "inference.json"
    write_json_atomic(out, result)
    print(f"\n{time.perf_counter() - started:.0f} s in all; written to {out}")


def large_images_section(run: Path, sizes: list[int], before_sizes: list[int]) -> dict:
    """Part 3: the default path at ``sizes`` and the replaced whole-image path at ``before_sizes``."""
    print("\nlarge images: unet, 4 classes, tiles 512, overlap 0.25 (fresh process each)")
    section = {
        "model": "unet",
        "tile": 512,
        "overlap": 0.25,
        "rss": "VmHWM",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average_1min_before": os.getloadavg()[0],
        "sizes": large_images(run, sizes),
        "whole_image_path_before": large_images(run, before_sizes, "whole-image"),
    }
    section["load_average_1min_after"] = os.getloadavg()[0]
    return section


def large_only(sizes: list[int], before_sizes: list[int]) -> None:
    """``--large-only``: measure part 3 and replace only its entry in the results JSON."""
    out = Path(__file__).parent / "results" / "inference.json"
    result = json.loads(out.read_text()) if out.is_file() else {"benchmark": "inference"}
    with tempfile.TemporaryDirectory() as tmp:
        result["large_images"] = large_images_section(
            make_run(Path(tmp) / "unet", "unet"), sizes, before_sizes
        )
    write_json_atomic(out, result)
    print(f"written to {out} (large_images only)")


def _print_model(name: str, flops: int, shipped_flops: int, network: dict, pipeline: dict) -> None:
    print(f"\n{name}: {flops / 1e9:.2f} GFLOP per 512² forward ({shipped_flops / 1e9:.2f} as shipped)")
    print(
        f"{'network variant':<36} {'best ms':>8} {'median':>8} {'vs fp32':>8} {'floor ms':>9} {'x floor':>8}"
    )
    for variant, row in network.items():
        print(
            f"{variant:<36} {row['seconds'] * 1e3:>8.1f} {row['median_seconds'] * 1e3:>8.1f} "
            f"{row['speedup_vs_fp32_eager']:>7.2f}x {row['floor_seconds'] * 1e3:>9.1f} "
            f"{row['time_over_floor']:>7.1f}x"
        )
    print(f"{'Predictor.predict, 512² uint8':<56} {'best ms':>8} {'median':>8} {'vs fp32':>8}")
    for variant, row in pipeline.items():
        print(
            f"{variant:<56} {row['seconds'] * 1e3:>8.1f} {row['median_seconds'] * 1e3:>8.1f} "
            f"{row['speedup_vs_fp32']:>7.2f}x"
        )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
