"""Trainer callbacks: checkpoints, early stopping, CSV/TensorBoard logs, progress bar.

Callbacks keep no state of their own that a resume would need: what they decide is derived from
``trainer.state`` (restored from ``last.pt``), so a resumed run behaves as an uninterrupted one. Those that
only write or print are ``main_process_only``: under torchrun they run on rank 0 alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.trainer import Callback, Trainer
from medseg.io import write_csv_atomic


class Checkpoint(Callback):
    """Write ``last.pt`` (everything to resume) after every epoch and ``best.pt`` when the monitor improves.

    Args:
        folder: ``RUN/checkpoints``.
        extra: stored in both checkpoints (e.g. the resolved config as a plain dict).
    """

    main_process_only = True

    def __init__(self, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.extra = extra or {}

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        # best.pt first: if we are interrupted in between, last.pt still describes the previous epoch and
        # a resume redoes this one, rewriting the same best.pt.
        if trainer.improved:
            save_checkpoint(
                self.folder / "best.pt",
                {
                    "model": trainer.model.state_dict(),
                    "epoch": trainer.state.epoch,
                    "monitor": trainer.monitor,
                    "best_metric": trainer.state.best_metric,
                    **self.extra,
                },
            )
        save_checkpoint(self.folder / "last.pt", {**trainer.state_dict(), **self.extra})


class FreezeEncoder(Callback):
    """Freeze ``model.encoder`` for the first ``epochs`` epochs (-1: always, 0: never).

    Frozen parameters get no gradient, so the optimiser leaves them (and their weight decay) alone; the
    decision depends only on the epoch, so a resumed run freezes exactly as an uninterrupted one.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_start(self, trainer: Trainer) -> None:
        if not self.epochs:
            return
        encoder = getattr(trainer.model, "encoder", None)
        if encoder is None:
            from medseg.errors import ConfigError

            raise ConfigError("model.freeze_encoder: this model does not say which part is its encoder")
        frozen = self.epochs == -1 or trainer.state.epoch < self.epochs
        for parameter in encoder.parameters():
            parameter.requires_grad_(not frozen)


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs (0 = never)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.patience and trainer.state.epoch - trainer.state.best_epoch >= self.patience:
            trainer.should_stop = True
            trainer.state.stopped_early = True


class CSVLogger(Callback):
    """Rewrite ``metrics.csv`` (one row per epoch) atomically from the trainer's history."""

    main_process_only = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        write_csv_atomic(self.path, trainer.state.history)


class TensorBoardLogger(Callback):
    """Scalars to TensorBoard event files (needs ``tensorboard``: pip install 'medseg[tensorboard]')."""

    main_process_only = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from medseg.errors import ConfigError

            raise ConfigError(
                "train.log=tensorboard needs the tensorboard package: pip install 'medseg[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=trainer.state.epoch + 1)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, trainer.state.epoch)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the running loss, then a one-line epoch summary."""

    main_process_only = True

    def __init__(
        self, steps_per_epoch: int, summary_keys: tuple[str, ...] = ("val_loss", "val_dice")
    ) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.summary_keys = summary_keys
        self.bar = None
        self.running = 0.0

    def on_epoch_start(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        self.running = 0.0
        self.bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {trainer.state.epoch + 1}/{trainer.epochs}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=None,  # no bar when stderr is not a terminal (logs, CI)
        )

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        self.running = loss if not self.running else 0.9 * self.running + 0.1 * loss
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.running:.4f}")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        from tqdm.auto import tqdm

        if self.bar is not None:
            self.bar.close()
        parts = [f"epoch {trainer.state.epoch}/{trainer.epochs}", f"loss {logs['train_loss']:.4f}"]
        parts += [f"{k} {logs[k]:.4f}" for k in self.summary_keys if k in logs]
        parts.append(f"{logs['seconds']:.1f}s")
        if trainer.improved:
            parts.append("*best*")
        tqdm.write("  ".join(parts))
