"""Model zoo on this machine, same run: parameters, training throughput (fp32 / bf16), 512^2 inference
latency, peak RSS, validation Dice after a fixed training budget, and medseg's training step against a
bare PyTorch loop on identical batches.

Run: .venv/bin/python benchmarks/models.py [--models unet,segformer_b0] [--budget-steps 160]
Each model runs in its own subprocess so its peak RSS is its own. Prints a table and writes
benchmarks/results/models.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = [
    "unet",
    "attention_unet",
    "attention_unet_gct",
    "attention_unet_srm",
    "segformer_b0",
    "segformer_b2",
]
BATCH, SIZE, INFER_SIZE = 8, 256, 512
RESULTS = Path(__file__).parent / "results" / "models.json"


def _batches(n: int, seed: int = 0):
    """``n`` identical-for-everyone training batches (8 x 3 x 256^2 phantom patches, augmented)."""
    import torch

    from medseg.data.dataset import load_image, load_label, open_dataset
    from medseg.data.phantoms import write_blood_dataset
    from medseg.data.samples import EpochSampler, PatchDataset
    from medseg.transforms import AugmentConfig, normalize

    with tempfile.TemporaryDirectory() as tmp:
        data = open_dataset(write_blood_dataset(Path(tmp) / "d", 8, size=320, seed=seed))
        images = [normalize(load_image(c)) for c in data.cases]
        labels = [load_label(c) for c in data.cases]
    patches = PatchDataset(images, labels, (SIZE, SIZE), AugmentConfig())
    keys = list(EpochSampler(len(images), n * BATCH, seed))
    out = []
    for i in range(n):
        items = [patches[k] for k in keys[i * BATCH : (i + 1) * BATCH]]
        out.append(
            (
                torch.from_numpy(np.stack([a for a, _ in items])),
                torch.from_numpy(np.stack([b for _, b in items])),
            )
        )
    return out


def _reference_step(model):
    """A bare PyTorch training step: cross-entropy + MONAI Dice, AdamW, gradient clipping."""
    import torch
    import torch.nn.functional as F
    from monai.losses import DiceLoss

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dice = DiceLoss(include_background=False, softmax=True, batch=True)

    def step(batch):
        images, labels = batch
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        onehot = F.one_hot(labels.long(), 4).permute(0, 3, 1, 2).float()
        loss = F.cross_entropy(logits, labels.long()) + dice(logits, onehot)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def measure_one(name: str, steps: int, budget_steps: int) -> dict:
    """All numbers for one model (runs inside its own process)."""
    import torch

    from medseg.engine.trainer import Trainer
    from medseg.losses import DiceCELoss
    from medseg.models import count_parameters, create_model

    batches = _batches(steps + 2)
    result: dict = {"model": name}

    def fresh(seed: int = 0):
        torch.manual_seed(seed)
        return create_model(name, in_channels=3, num_classes=4)

    result["parameters"] = count_parameters(fresh())

    # medseg's step (the Trainer's own run_step: loss, auxiliary terms, grad clipping) in fp32 and bf16, and a
    # reference: the same network and optimiser in a bare PyTorch loop (no medseg code), fp32. The three are
    # warmed up, then interleaved batch by batch so machine noise hits them alike.
    steppers = {}
    for precision in ("fp32", "bf16"):
        model = fresh().train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        trainer = Trainer(
            model, optimizer, [], loss_fn=DiceCELoss(4), bf16=precision == "bf16", grad_clip=1.0
        )
        steppers[f"medseg_{precision}"] = trainer.run_step
    steppers["reference_fp32"] = _reference_step(fresh().train())
    times: dict[str, list[float]] = {key: [] for key in steppers}
    for i, batch in enumerate(batches):
        order = list(steppers)[i % 3 :] + list(steppers)[: i % 3]
        for key in order:
            start = time.perf_counter()
            steppers[key](batch)
            if i >= 2:
                times[key].append(time.perf_counter() - start)
    for key, values in times.items():
        result[f"{key}_images_per_s"] = BATCH / float(np.median(values))
    result["overhead_fp32"] = result["reference_fp32_images_per_s"] / result["medseg_fp32_images_per_s"] - 1
    result["medseg_bf16_vs_reference_fp32"] = (
        result["medseg_bf16_images_per_s"] / result["reference_fp32_images_per_s"]
    )

    # inference latency, one 512^2 image through the Predictor (default path: bf16 where supported)
    from medseg.config import load_config
    from medseg.inference.predictor import Predictor

    config = load_config(None, ["data.in_channels=3", "data.labels={background: 0, a: 1, b: 2, c: 3}"])
    predictor = Predictor(fresh().eval(), config)
    image = np.random.default_rng(0).integers(0, 255, (INFER_SIZE, INFER_SIZE, 3), dtype=np.uint8)
    predictor.predict(image)
    latencies = []
    for _ in range(5):
        start = time.perf_counter()
        predictor.predict(image)
        latencies.append(time.perf_counter() - start)
    result["infer_512_s"] = float(np.median(latencies))

    # validation Dice after the same fixed budget on the phantom blood set (fixed seed)
    result.update(_budget_run(name, budget_steps))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _budget_run(name: str, budget_steps: int) -> dict:
    from medseg.config import load_config
    from medseg.data.phantoms import write_blood_dataset
    from medseg.workflows.train import train

    with tempfile.TemporaryDirectory() as tmp:
        data = write_blood_dataset(Path(tmp) / "data", 40, size=192, seed=1)
        epochs = budget_steps // 8
        config = load_config(
            None,
            [
                f"model.name={name}",
                f"train.epochs={epochs}",
                "data.samples_per_epoch=64",
                "train.batch_size=8",
                "data.patch_size=[128,128]",
                "train.lr=3e-3",
                "train.progress=false",
                "train.snapshots=false",
                "data.val_fraction=0.25",
            ],
        )
        start = time.perf_counter()
        run = train(data, config, Path(tmp) / "run")
        seconds = time.perf_counter() - start
        summary = json.loads((run / "train_summary.json").read_text())
        rows = (run / "metrics.csv").read_text().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        final = dict(zip(header, last))
    return {
        "budget_steps": summary["steps"],
        "budget_seconds": seconds,
        "val_dice_final": float(final["val_dice"]),
        "val_dice_nucleus_final": float(final.get("val_dice_wbc_nucleus") or "nan"),
        "val_dice_best": summary["best_metric"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per precision")
    parser.add_argument("--budget-steps", type=int, default=160, help="training steps for the Dice column")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.steps, args.budget_steps)))
        return
    rows = []
    for name in args.models.split(","):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                name,
                "--steps",
                str(args.steps),
                "--budget-steps",
                str(args.budget_steps),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    print(
        f"\nbatch {BATCH} x {SIZE}^2 training, {INFER_SIZE}^2 inference, {torch.get_num_threads()} threads; "
        f"Dice after {args.budget_steps} steps of 128^2 patches on phantom blood (seed 1)"
    )
    head = (
        f"{'model':<20} {'params':>10} {'fp32 img/s':>10} {'bf16 img/s':>10} {'ref fp32':>9} {'overhead':>9} "
        f"{'512^2 s':>8} {'RSS MB':>7} {'val dice':>8} {'nucleus':>8}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['model']:<20} {r['parameters']:>10,} {r['medseg_fp32_images_per_s']:>10.2f} "
            f"{r['medseg_bf16_images_per_s']:>10.2f} {r['reference_fp32_images_per_s']:>9.2f} "
            f"{r['overhead_fp32']:>8.1%} {r['infer_512_s']:>8.3f} {r['peak_rss_mb']:>7.0f} "
            f"{r['val_dice_final']:>8.3f} {r['val_dice_nucleus_final']:>8.3f}"
        )
    from medseg.io import write_json_atomic

    write_json_atomic(
        RESULTS,
        {
            "benchmark": "models",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "batch": BATCH,
            "size": SIZE,
            "infer_size": INFER_SIZE,
            "threads": torch.get_num_threads(),
            "budget_steps": args.budget_steps,
            "torch": torch.__version__,
            "results": rows,
        },
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
