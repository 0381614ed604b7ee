"""Per-epoch snapshot of predictions on one fixed validation image, and the progress GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.config import Config
from medseg.engine.trainer import Callback, Trainer
from medseg.report import class_colors

MAX_FRAMES = 30
MAX_WIDTH = 560


class Snapshots(Callback):
    """Write ``snapshots/epoch_NNN.png`` after every epoch and ``snapshots/progress.gif`` at the end.

    Args:
        folder: ``RUN/snapshots``.
        config: the run config (colours).
        display: the image as stored ``(H, W[, C])``, shown in the frames.
        image: the same image normalised for the network ``(C, H, W)`` float32.
        label: its label ``(H, W)``.
    """

    def __init__(
        self, folder: Path, config: Config, display: np.ndarray, image: np.ndarray, label: np.ndarray
    ) -> None:
        self.folder = Path(folder)
        self.config = config
        self.display = display
        self.image = image
        self.label = label
        self.colors = class_colors(config.data.labels, config.data.colors)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        import torch

        from medseg.inference.predictor import Predictor
        from medseg.io import write_image
        from medseg.report import snapshot_frame

        predictor = Predictor(trainer.model, self.config, trainer.device)
        predictor.bf16 = trainer.bf16
        with torch.inference_mode():
            logits = predictor.logits(torch.from_numpy(self.image)[None])
        trainer.model.train()
        if self.config.task == "instance":
            frame = self._instance_frame(predictor, logits, trainer.state.epoch, logs.get("val_f1"))
        else:
            pred = predictor.labels_of(predictor.layout.activate(logits)[0].cpu().numpy())
            epoch, score, regions = trainer.state.epoch, logs.get("val_dice"), predictor.regions
            frame = snapshot_frame(
                self.display, self.label, pred, self.colors, epoch=epoch, score=score, regions=regions
            )
        write_image(self.folder / f"epoch_{trainer.state.epoch:03d}.png", frame)

    def _instance_frame(self, predictor, logits, epoch: int, score: float | None) -> np.ndarray:
        from medseg.metrics.instance import match_instances
        from medseg.report import instance_panel
        from medseg.workflows.instance import matched_pairs

        maps = predictor.layout.activate(logits)[0].cpu().numpy()
        pred = predictor.instances_from_maps(maps).labels
        caption = f"epoch {epoch}" + (f"  val F1 {score:.2f}" if score is not None else "")
        pairs = matched_pairs(match_instances(self.label, pred, thresh=0.5))
        return instance_panel(self.display, self.label, pred, pairs, caption=caption)

    def on_fit_end(self, trainer: Trainer) -> None:
        # Built once at the end (from the PNGs, so a resumed run includes the epochs before the
        # interruption): rebuilding it every epoch made the demo's snapshot cost quadratic.
        write_progress_gif(self.folder)


def write_progress_gif(
    folder: Path, *, max_frames: int = MAX_FRAMES, max_width: int = MAX_WIDTH
) -> Path | None:
    """``folder/progress.gif`` from ``folder/epoch_*.png``: at most ``max_frames`` evenly spaced epochs
    (first and last always in), scaled to at most ``max_width`` pixels wide so the report stays light.
    """
    from PIL import Image

    from medseg.io import read_image
    from medseg.report import write_gif

    paths = sorted(Path(folder).glob("epoch_*.png"))
    if not paths:
        return None
    picks = np.unique(np.linspace(0, len(paths) - 1, min(max_frames, len(paths))).round().astype(int))
    frames = []
    for i in picks:
        frame = Image.fromarray(read_image(paths[i]))
        if frame.width > max_width:
            frame = frame.resize((max_width, round(frame.height * max_width / frame.width)), Image.LANCZOS)
        frames.append(np.asarray(frame))
    return write_gif(frames, Path(folder) / "progress.gif")


def pick_snapshot_case(labels: list[np.ndarray]) -> int:
    """Index of the image that shows the most: most foreground classes present, then the largest share of
    its rarest present class (so a small structure is visible in every frame)."""

    def score(label: np.ndarray) -> tuple[int, float]:
        counts = np.bincount(label.ravel().astype(np.int64))[1:]
        present = counts[counts > 0]
        return (len(present), float(present.min() / label.size) if len(present) else 0.0)

    return max(range(len(labels)), key=lambda i: score(labels[i]))
