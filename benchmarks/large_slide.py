"""Predicting a huge slide tile by tile: memory and time with the lazy (memory-mapped) reader vs a whole read.

A synthetic uncompressed RGB TIFF (20,000 x 20,000 by default, 1.2 GB; smaller if the disk has less than
three times that free) is written band by band from tiled blood-smear phantoms, never whole in memory. An
untrained ``unet_tiny`` run (4 classes, random weights: the point is memory, not accuracy) predicts it with
:func:`medseg.workflows.predict.predict` (``medseg predict RUN slide.tif --out DIR --format tif``) in a
fresh child process per variant, in the same run:

- ``lazy``: the default: :func:`medseg.io.lazy.open_image_lazily` memory-maps the TIFF;
- ``whole``: the same call with the reader swapped for :func:`medseg.io.read_image` (the whole image read
  into memory first), i.e. what ``medseg predict`` did before;
- ``tiled``: the same slide written tiled 512 x 512 with deflate (zlib) compression, as whole-slide images
  are stored, which :func:`medseg.io.lazy.open_image_lazily` opens as a
  :class:`~medseg.io.lazy.LazyTiffImage` (tiles decoded as they are indexed; the normalisation's
  statistics come from one banded pass over it, and each prediction tile decodes only its own tiles).

Both write the mask as a memory-mapped uint8 TIFF filled band by band and a downsampled overlay. Peak
memory is the child's VmHWM (peak resident set, which includes the file-backed pages of the memory-mapped
slide that the kernel has not yet dropped) and, sampled every 0.1 s, the peak of RssAnon (anonymous
memory: what the process itself allocated) and RssFile (mapped file pages, reclaimable under pressure).

Run: .venv/bin/python benchmarks/large_slide.py [--side 20000] [--whole-side N] [--set inference.overlap=0]
       [--only READER] [--append]
Prints a table and writes benchmarks/results/large_slide.json (``--append`` adds this run's rows to it; the
default plan is lazy, whole and tiled at ``--whole-side``, then lazy at ``--side``; ``--only
whole`` runs just the whole read at ``--side``). Every row records a hash of its mask: the readers must
agree (deflate is lossless).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "large_slide.json"
LABELS = "{background: 0, red_cell: 1, white_cell: 2, nucleus: 3}"
PHANTOM = 512  # side of the phantom tile the slide repeats
BAND_ROWS = PHANTOM  # rows written at a time: 30 MB for a 20,000-pixel-wide RGB band
TILE = 512  # TIFF tile side of the compressed slide
READERS = ("lazy", "whole", "tiled")


def write_slide(path: Path, side: int) -> Path:
    """An uncompressed ``side`` x ``side`` RGB uint8 TIFF of repeated blood phantoms, written band by band."""
    import tifffile

    from medseg.data.phantoms.blood import blood_smear

    tiles = [blood_smear(PHANTOM, rng=seed).image for seed in range(4)]
    row_of_tiles = [
        np.concatenate([tiles[(r + c) % 4] for c in range(-(-side // PHANTOM))], axis=1) for r in range(4)
    ]
    slide = tifffile.memmap(path, shape=(side, side, 3), dtype=np.uint8, photometric="rgb")
    for band, top in enumerate(range(0, side, BAND_ROWS)):
        rows = min(BAND_ROWS, side - top)
        slide[top : top + rows] = row_of_tiles[band % 4][:rows, :side]
    slide.flush()
    del slide
    return path


def write_tiled(source: Path, path: Path) -> Path:
    """``source`` (an uncompressed slide) rewritten tiled 512 x 512 with deflate, one tile at a time."""
    import tifffile

    slide = tifffile.memmap(source, mode="r")
    height, width = slide.shape[:2]

    def tiles():
        for top in range(0, height, TILE):
            for left in range(0, width, TILE):
                tile = np.zeros((TILE, TILE, 3), np.uint8)
                part = slide[top : top + TILE, left : left + TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile

    tifffile.imwrite(
        path,
        tiles(),
        shape=slide.shape,
        dtype=np.uint8,
        tile=(TILE, TILE),
        compression="zlib",
        photometric="rgb",
        bigtiff=True,
    )
    return path


def make_run(folder: Path) -> Path:
    """An untrained unet_tiny run folder (config.yaml + checkpoints/best.pt)."""
    import torch

    from medseg.config import load_config, save_config
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.models import build_model

    config = load_config(None, ["model.name=unet_tiny", "data.in_channels=3", f"data.labels={LABELS}"])
    torch.manual_seed(0)
    network = build_model(config.model, in_channels=3, num_classes=4, pretrained=False)
    save_config(config, folder / "config.yaml")
    save_checkpoint(folder / "checkpoints" / "best.pt", {"model": network.state_dict(), "epoch": 0})
    return folder


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(next(line.split()[1] for line in handle if line.startswith(field + ":")))


def child(mode: str, run: str, slide: str, out: str, overrides: list[str]) -> None:
    """Entry of the measured subprocess: one ``predict`` call; prints its numbers as JSON."""
    from medseg.io import read_image
    from medseg.workflows import predict as predict_module

    if mode == "whole":
        predict_module.open_image_lazily = read_image
    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            for field in peaks:
                peaks[field] = max(peaks[field], _status_kb(field))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    predict_module.predict(run, [slide], out, mask_format="tif", device="cpu", overrides=overrides)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    result = {
        "seconds": seconds,
        "peak_rss_mib": _status_kb("VmHWM") / 1024,
        "peak_anon_mib": peaks["RssAnon"] / 1024,
        "peak_file_mib": peaks["RssFile"] / 1024,
    }
    print(json.dumps(result))


def measure(mode: str, run: Path, slide: Path, out: Path, overrides: list[str]) -> dict:
    """Run :func:`child` in a fresh interpreter and check the mask it wrote."""
    import tifffile

    command = [sys.executable, __file__, "--child", mode, str(run), str(slide), str(out), *overrides]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with tifffile.TiffFile(out / "masks" / f"{slide.stem}.tif") as mask, tifffile.TiffFile(slide) as image:
        side = image.series[0].shape[0]
        found = mask.series[0].shape, mask.series[0].dtype
    assert found == ((side, side), np.uint8), found
    result["mask_mib_on_disk"] = (out / "masks" / f"{slide.stem}.tif").stat().st_size / 2**20
    mask = tifffile.memmap(out / "masks" / f"{slide.stem}.tif", mode="r")
    result["mask_sha1"] = hashlib.sha1(np.ascontiguousarray(mask)).hexdigest()[:12]  # pixels, not header
    del mask
    result["seconds_per_megapixel"] = result["seconds"] / (side * side / 1e6)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000, help="slide side for the lazy reader")
    parser.add_argument(
        "--whole-side", type=int, default=None, help="slide side for the whole read (= --side)"
    )
    parser.add_argument("--only", choices=READERS, help="one reader, at --side")
    parser.add_argument("--append", action="store_true", help="keep the rows already in the JSON")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="inference.* override")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, run, slide, out, *overrides = args.child
        child(mode, run, slide, out, overrides)
        return
    with tempfile.TemporaryDirectory(prefix="medseg-large-slide-") as tmp:
        folder = Path(tmp)
        side = args.side
        free = shutil.disk_usage(folder).free
        # the slide, its uint8 mask and headroom: 3 bytes + 1 byte per pixel, twice over
        while side > 4096 and 8 * side * side > free:
            side = side // 2
        whole_side = min(args.whole_side or side, side)
        run = make_run(folder / "run")
        load = os.getloadavg()[0]
        rows: dict[str, dict] = json.loads(RESULTS.read_text())["rows"] if args.append else {}
        # like for like at the whole read's size first, then the lazy reader on the full slide; the JSON is
        # rewritten after every row
        plan = (
            [(args.only, side)]
            if args.only
            else [(reader, whole_side) for reader in READERS]
            + ([("lazy", side)] if side != whole_side else [])
        )
        for mode, mode_side in plan:
            slide = folder / f"slide_{mode_side}.tif"
            if not slide.exists():
                write_slide(slide, mode_side)
            if mode == "tiled":
                plain, slide = slide, folder / "tiled" / slide.name  # the same stem: masks compare by name
                if not slide.exists():
                    slide.parent.mkdir(exist_ok=True)
                    started = time.perf_counter()
                    write_tiled(plain, slide)
                    print(f"wrote {slide.name} tiled + deflate in {time.perf_counter() - started:.0f} s")
            result = measure(mode, run, slide, folder / f"out_{mode}_{mode_side}", args.overrides)
            rows[f"{mode} {mode_side}"] = {
                "reader": mode,
                "side": mode_side,
                "slide_mib_on_disk": slide.stat().st_size / 2**20,
                **result,
            }
            print(f"{mode} {mode_side}: {result}", flush=True)
            _write_report(args.overrides, load, free, rows)
    print(
        f"\n{'reader':<10}{'side':>8}{'seconds':>10}{'s/MP':>8}{'peak RSS MiB':>14}"
        f"{'anon MiB':>10}{'file MiB':>10}{'slide MiB':>11}  mask sha1"
    )
    for row in rows.values():
        print(
            f"{row['reader']:<10}{row['side']:>8}{row['seconds']:>10.1f}{row['seconds_per_megapixel']:>8.3f}"
            f"{row['peak_rss_mib']:>14.0f}{row['peak_anon_mib']:>10.0f}{row['peak_file_mib']:>10.0f}"
            f"{row['slide_mib_on_disk']:>11.0f}  {row.get('mask_sha1', '')}"
        )


def _write_report(overrides: list[str], load: float, free: int, rows: dict) -> None:
    from medseg.io import write_json_atomic

    report = {
        "benchmark": "large_slide",
        "model": "unet_tiny (untrained), 4 classes",
        "overrides": overrides,
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": load,
        "load_average_after": os.getloadavg()[0],
        "disk_free_gib_before": free / 2**30,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "rows": rows,
    }
    write_json_atomic(RESULTS, report)


if __name__ == "__main__":
    main()
