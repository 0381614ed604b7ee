"""Training-step throughput of `unet` at batch 8 x 256^2: fp32 vs bf16 autocast (and channels_last),
plus the share of step time spent waiting for data with medseg's real input pipeline.

Run: .venv/bin/python benchmarks/train_step.py [--steps 12] [--workers 1]
Prints a table and writes benchmarks/results/train_step.json. Baseline = fp32 eager in the same run.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medseg.data.dataset import load_image, load_label, open_dataset
from medseg.data.phantoms import write_blood_dataset
from medseg.data.samples import EpochSampler, PatchDataset
from medseg.engine.device import cpu_supports_bf16
from medseg.io import write_json_atomic
from medseg.losses import DiceCELoss
from medseg.models import create_model
from medseg.transforms import AugmentConfig, normalize

BATCH, SIZE = 8, 256


def measure(loader, *, bf16: bool, channels_last: bool, steps: int, warmup: int = 2) -> dict:
    torch.manual_seed(0)
    model = create_model("unet", in_channels=3, num_classes=4)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(4)
    wait, compute = [], []
    it = iter(loader)
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            images, labels = next(it)
        except StopIteration:
            it = iter(loader)
            images, labels = next(it)
        t1 = time.perf_counter()
        images = images.to(memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if step >= warmup:
            wait.append(t1 - t0)
            compute.append(t2 - t1)
    step_time = float(np.median(np.add(wait, compute)))
    return {
        "step_s_median": step_time,
        "images_per_s": BATCH / step_time,
        "data_wait_share": float(np.sum(wait) / (np.sum(wait) + np.sum(compute))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = write_blood_dataset(Path(tmp) / "data", 16, size=320, seed=0)
        data = open_dataset(root)
        images = [normalize(load_image(c)) for c in data.cases]
        labels = [load_label(c) for c in data.cases]
    dataset = PatchDataset(images, labels, (SIZE, SIZE), AugmentConfig())
    sampler = EpochSampler(len(images), 10_000, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=sampler,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    variants = [
        ("fp32 (baseline)", False, False),
        ("bf16 autocast", True, False),
        ("bf16 + channels_last", True, True),
    ]
    if not cpu_supports_bf16():
        print("note: this CPU has no native bf16; the bf16 rows show emulated speed")
    rows = {}
    for name, bf16, cl in variants:
        rows[name] = measure(loader, bf16=bf16, channels_last=cl, steps=args.steps)
    base = rows["fp32 (baseline)"]["images_per_s"]
    print(
        f"\nunet, batch {BATCH} x {SIZE}^2, {torch.get_num_threads()} threads, "
        f"{args.workers} data worker(s), "
        f"{args.steps} timed steps"
    )
    print(f"{'variant':<22} {'step s':>8} {'img/s':>8} {'vs fp32':>8} {'data wait':>10}")
    for name, r in rows.items():
        print(
            f"{name:<22} {r['step_s_median']:>8.3f} {r['images_per_s']:>8.2f} "
            f"{r['images_per_s'] / base:>7.2f}x {r['data_wait_share']:>9.1%}"
        )
    result = {
        "benchmark": "train_step",
        "model": "unet",
        "batch": BATCH,
        "size": SIZE,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "steps": args.steps,
        "cpu_bf16": cpu_supports_bf16(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": rows,
        "speedup_bf16_vs_fp32": rows["bf16 autocast"]["images_per_s"] / base,
    }
    out = Path(__file__).parent / "results" / "train_step.json"
    write_json_atomic(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
