"""Predict with a trained run: the same normalisation as training, padding to the model's divisor.

``Predictor.from_run(RUN)`` rebuilds the model from ``RUN/config.yaml`` and ``RUN/checkpoints/best.pt``
(or ``last.pt``); the run folder needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medseg.config import Config, from_dict, read_yaml
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.device import autocast, pick_device, use_bf16
from medseg.errors import DataError, RunError
from medseg.transforms import normalize


@dataclass
class Prediction:
    """Result for one image.

    Attributes:
        labels: ``(H, W)`` int32 class ids.
        probabilities: ``(K, H, W)`` float32 softmax probabilities.
    """

    labels: np.ndarray
    probabilities: np.ndarray


class Predictor:
    """Segment images with a model and the preprocessing recorded in its config.

    Args:
        model: the network (put in eval mode here).
        config: the run's resolved config.
        device: where to run.
    """

    def __init__(self, model: torch.nn.Module, config: Config, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.divisor = int(getattr(model, "size_divisor", 1))
        self.bf16 = use_bf16(config.train.amp, self.device)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> Predictor:
        """Load a run folder.

        Args:
            run_dir: the run folder (``config.yaml`` + ``checkpoints/``).
            checkpoint: ``best`` (falls back to ``last``) or ``last``.
            device: ``auto``, ``cpu`` or ``cuda``.

        Raises:
            RunError: the folder is not a run, or has no usable checkpoint.
        """
        from medseg.models import build_model

        run = Path(run_dir)
        config = load_run_config(run)
        ckpt_dir = run / "checkpoints"
        candidates = ["best.pt", "last.pt"] if checkpoint == "best" else [f"{checkpoint}.pt"]
        path = next((ckpt_dir / c for c in candidates if (ckpt_dir / c).is_file()), None)
        if path is None:
            raise RunError(
                f"{run}: no checkpoint in {ckpt_dir} (train it first: medseg train ... --out {run})"
            )
        state = load_checkpoint(path)
        model = build_model(
            config.model,
            in_channels=config.data.in_channels,
            num_classes=len(config.data.labels),
            pretrained=False,
        )
        model.load_state_dict(state["model"])
        return cls(model, config, pick_device(device))

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return self.config.data.class_names

    def preprocess(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Raw ``(H, W)`` or ``(H, W, C)`` image -> normalised ``(C, H, W)`` float32, checking channels."""
        data = self.config.data
        channels = 1 if image.ndim == 2 else image.shape[-1]
        if channels != data.in_channels:
            if data.in_channels == 3 and channels == 1:
                image = np.repeat(image[..., None] if image.ndim == 2 else image, 3, axis=-1)
            elif data.in_channels == 1 and channels in (3, 4) and image.dtype == np.uint8:
                image = image[..., :3].mean(axis=-1)
            elif channels == 4 and data.in_channels == 3:
                image = image[..., :3]
            else:
                raise DataError(
                    f"{source}: image has {channels} channel(s) but the model expects {data.in_channels}"
                )
        return normalize(image, data.normalization, low=data.norm_low, high=data.norm_high)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` normalised images -> ``(N, K, H, W)`` float32 logits at input size."""
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % self.divisor, (-width) % self.divisor
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
        with autocast(self.device, self.bf16):
            out = self.model(images.to(self.device))
        return out[..., :height, :width].float()

    @torch.inference_mode()
    def predict(self, image: np.ndarray, source: str = "image") -> Prediction:
        """Segment one raw image ``(H, W)`` or ``(H, W, C)``."""
        tensor = torch.from_numpy(self.preprocess(image, source))[None]
        probs = torch.softmax(self.logits(tensor), dim=1)[0].cpu().numpy()
        return Prediction(labels=probs.argmax(0).astype(np.int32), probabilities=probs)


def load_run_config(run_dir: str | Path) -> Config:
    """Read and validate ``RUN/config.yaml``.

    Raises:
        RunError: the folder is missing or is not a medseg run.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"{run}: run folder not found")
    if not (run / "config.yaml").is_file():
        raise RunError(f"{run}: not a medseg run (no config.yaml)")
    return from_dict(read_yaml(run / "config.yaml")).validate()
