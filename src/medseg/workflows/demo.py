"""``medseg demo``: the main job end to end on built-in phantom data.

Generates stained blood smear phantoms, trains a U-Net on 2 CPU cores for a few minutes, evaluates it
on held-out phantoms, segments them, writes the report and says what to run next.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from medseg.io import write_json_atomic

# Measured on the 2-core CI machine (README "Demo"): these settings train in about 3 minutes.
FULL = {"n_train": 60, "n_test": 20, "size": 256, "epochs": 100, "patch": 128, "samples_per_epoch": 64}
QUICK = {"n_train": 6, "n_test": 2, "size": 64, "epochs": 2, "patch": 48, "samples_per_epoch": 8}
TRAIN_SEED, TEST_SEED = 0, 10_000


def demo(out: str | Path = "runs/demo", *, quick: bool = False) -> dict:
    """Run phantom -> train -> evaluate -> predict -> report under ``out``; returns the held-out metrics.

    Args:
        out: folder for ``data/``, ``run/`` and ``predictions/`` (a previous demo there is replaced).
        quick: tiny settings for smoke tests (seconds; the numbers mean nothing).
    """
    from medseg.config import load_config
    from medseg.data.phantoms import write_blood_dataset
    from medseg.report import build_report
    from medseg.workflows.evaluate import evaluate
    from medseg.workflows.predict import predict
    from medseg.workflows.train import train

    s = QUICK if quick else FULL
    out = Path(out)
    for sub in ("data", "run", "predictions"):
        shutil.rmtree(out / sub, ignore_errors=True)
    start = time.perf_counter()
    _say(
        f"1/5 writing {s['n_train']} training and {s['n_test']} held-out blood smear phantoms "
        f"({s['size']} px)"
    )
    train_data = write_blood_dataset(out / "data" / "train", s["n_train"], size=s["size"], seed=TRAIN_SEED)
    test_data = write_blood_dataset(out / "data" / "test", s["n_test"], size=s["size"], seed=TEST_SEED)

    _say(f"2/5 training unet for {s['epochs']} epochs")
    model = "unet_tiny" if quick else "unet"
    config = load_config(
        None,
        [
            f"model.name={model}",
            f"train.epochs={s['epochs']}",
            f"data.patch_size=[{s['patch']},{s['patch']}]",
            f"data.samples_per_epoch={s['samples_per_epoch']}",
            "data.val_fraction=0.15",
            "train.batch_size=8",
            "train.lr=3e-3",
            f"train.progress={str(not quick).lower()}",
        ],
    )
    run = train(train_data, config, out / "run")
    trained = time.perf_counter()

    _say("3/5 evaluating on the held-out phantoms")
    metrics = evaluate(run, test_data)
    _say("4/5 segmenting the held-out phantoms")
    predict(run, [test_data / "imagesTr"], out / "predictions")
    _say("5/5 writing the report")
    build_report(run)
    total = time.perf_counter() - start

    dice = {name: m["dice"] for name, m in metrics["per_class"].items() if name != "background"}
    result = {
        "seconds_total": round(total, 1),
        "seconds_training": round(trained - start, 1),
        "held_out_images": metrics["num_images"],
        "dice": dice,
        "mean_dice": metrics["mean"]["dice"],
    }
    write_json_atomic(out / "demo_summary.json", result)
    print(
        f"\nheld-out dice ({metrics['num_images']} images): "
        + ", ".join(f"{k} {v:.3f}" for k, v in dice.items())
        + f"  |  {total / 60:.1f} min in all"
    )
    medseg = _command()
    print(f"""
everything is in {out}/
  data/train, data/test     phantom datasets (nnU-Net layout)
  run/                      the trained model: config, checkpoints, metrics.csv, snapshots/progress.gif
  run/eval/                 metrics.json, per_image.csv, overlays of the best and worst cases
  run/report.html           the report: open it in a browser
  predictions/              masks, overlays and summary.csv for the held-out images
next:
  {medseg} predict {run} YOUR_IMAGES --out predictions
  {medseg} train YOUR_DATASET --model unet --epochs 50 --out runs/mine
  {medseg} data check YOUR_DATASET""")
    return result


def _command() -> str:
    """How to call medseg from here: ``medseg`` when it is on PATH, else the venv's script (make demo)."""
    if shutil.which("medseg"):
        return "medseg"
    script = Path(sys.executable).parent / "medseg"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
