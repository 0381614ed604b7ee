"""One Trainer for every task: the loop, validation, mixed precision, schedule and resumable state.

What differs between tasks is injected, never subclassed: ``step_fn`` computes the loss of a batch
(the default is ``loss_fn(model(images), targets)``), ``validate`` returns the epoch's validation
logs, and callbacks do the side work (checkpoints, early stopping, logs, progress, snapshots).

Under torchrun (an initialised process group, see :mod:`medseg.engine.distributed`) the same Trainer
trains with DistributedDataParallel: forward passes go through ``trainer.network`` (the wrapper), the
loss sees the global batch, rank 0 alone validates and runs the ``main_process_only`` callbacks, and
``trainer.model`` stays the plain module that validation, snapshots and checkpoints use.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medseg.engine.device import autocast
from medseg.engine.distributed import RankShard, current_context, gather_for_loss
from medseg.errors import ConfigError


class Callback:
    """Hooks called by :class:`Trainer`; override the ones you need.

    ``main_process_only = True`` marks callbacks that only write files or print (checkpoints, logs,
    progress): in a distributed run they run on rank 0 alone. Callbacks that change training (early
    stopping, freezing) run on every rank, deciding from state that is the same on all of them.
    """

    main_process_only = False

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before each epoch's first step."""

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        """After each optimiser step, with the step's loss."""

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        """After validation; ``logs`` is the row just appended to ``trainer.state.history``."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, early stop or step budget (not after an exception)."""


@dataclass
class TrainState:
    """Everything about progress that a resume must restore (besides model/optimiser/scheduler)."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


class Trainer:
    """Train ``model`` for ``epochs`` epochs (or ``max_steps`` steps), validating after each epoch.

    Args:
        model: the network.
        optimizer: its optimiser.
        train_loader: iterable of batches; if it has ``sampler.set_epoch`` it is called each epoch.
        loss_fn: ``loss_fn(outputs, targets)`` for the default step.
        step_fn: ``step_fn(trainer, batch) -> loss tensor`` replacing the default step.
        validate: ``validate(trainer) -> dict`` of validation logs (e.g. ``val_loss``, ``val_dice``).
        scheduler: stepped after every optimiser step (LambdaLR etc.), or after validation with the
            monitored value when ``plateau`` is true.
        epochs: epoch budget.
        max_steps: optimiser-step budget (0 = none).
        monitor: log that picks the best checkpoint and drives early stopping and plateau: minimised
            when its name ends in ``loss``, maximised otherwise. Without ``validate`` it is
            ``train_loss``.
        bf16: run forward passes under bf16 autocast.
        grad_clip: max global gradient norm (0 = off).
        callbacks: hooks, called in order.
        device: where the model and batches live (under torchrun: this process's device).

    Attributes:
        model: the plain module (validation, snapshots and checkpoints use it).
        network: what training forward passes go through: ``model``, or under torchrun its
            DistributedDataParallel wrapper (a custom ``step_fn`` must call ``trainer.network``, and pass
            its outputs and targets through :meth:`gather_batch` before the loss).
        distributed: the job (:class:`~medseg.engine.distributed.DistributedContext`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable,
        *,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        step_fn: Callable[[Trainer, Any], torch.Tensor] | None = None,
        validate: Callable[[Trainer], dict[str, float]] | None = None,
        scheduler: Any = None,
        plateau: bool = False,
        epochs: int = 1,
        max_steps: int = 0,
        monitor: str = "val_dice",
        bf16: bool = False,
        grad_clip: float = 0.0,
        callbacks: Sequence[Callback] = (),
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if step_fn is None and loss_fn is None:
            raise ValueError("Trainer needs loss_fn or step_fn")
        self.model = model
        self.network = model
        self.distributed = current_context()
        self._network_for: tuple[bool, ...] | None = None  # trainable flags the wrapper was built for
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.loss_fn = loss_fn
        self.step_fn = step_fn or _default_step
        self.validate = validate
        self.scheduler = scheduler
        self.plateau = plateau
        self.epochs = epochs
        self.max_steps = max_steps
        self.monitor = monitor if validate is not None else "train_loss"
        self.minimize = self.monitor.endswith("loss")
        self.bf16 = bf16
        self.grad_clip = grad_clip
        self.callbacks = list(callbacks)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.state = TrainState(best_metric=math.inf if self.minimize else -math.inf)
        self.should_stop = False
        self.improved = False  # whether the epoch just validated set a new best

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Run until the epoch or step budget is spent or a callback sets ``should_stop``."""
        self.model.to(self.device, memory_format=self.memory_format)
        if self.distributed.enabled:
            sampler = getattr(self.train_loader, "sampler", None)
            if sampler is not None and not isinstance(
                sampler, (RankShard, torch.utils.data.DistributedSampler)
            ):
                raise ValueError(
                    "Trainer: in a distributed run the train_loader's sampler must give each rank its own "
                    "share (wrap it with medseg.engine.distributed.shard_sampler)"
                )
            if self.device.type == "cuda":  # batch statistics over the global batch (NCCL only)
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self._call("on_fit_start")
        self.should_stop = self.state.stopped_early
        try:
            while self.state.epoch < self.epochs and not self._budget_spent() and not self.should_stop:
                self.train_one_epoch()
        finally:
            self._release_network()
        self._call("on_fit_end")
        self.distributed.barrier()  # rank 0's files are complete when fit returns on any rank
        return self.state

    def train_one_epoch(self) -> dict[str, float]:
        """One pass over ``train_loader``, then validation and the epoch-end callbacks."""
        start = time.perf_counter()
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.state.epoch)
        self.model.train()
        self._call("on_epoch_start")
        self._prepare_network()
        total, count = 0.0, 0
        for batch in self.train_loader:
            loss = self.run_step(batch)
            total += loss
            count += 1
            self._call("on_step_end", loss)
            if self._budget_spent():
                break
        self.state.epoch += 1
        (train_loss,) = self.distributed.mean([total / max(count, 1)])
        logs: dict[str, float] = {"epoch": self.state.epoch, "train_loss": train_loss}
        if self.validate is not None:
            validated = None
            if self.distributed.is_main:  # the others wait for its logs
                self.model.eval()
                with torch.inference_mode():
                    validated = self.validate(self)
                self.model.train()
            logs.update(self.distributed.broadcast(validated))
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None and self.plateau and self.monitor in logs:
            self.scheduler.step(logs[self.monitor])
        if self.monitor not in logs:
            raise ConfigError(
                f"train.monitor: {self.monitor!r} is not logged; choose one of {', '.join(sorted(logs))}"
            )
        value = logs[self.monitor]
        better = value < self.state.best_metric if self.minimize else value > self.state.best_metric
        self.improved = not math.isnan(value) and better
        if self.improved:
            self.state.best_metric, self.state.best_epoch = float(value), self.state.epoch
        logs["seconds"] = time.perf_counter() - start
        self.state.history.append(logs)
        self._call("on_epoch_end", logs)
        return logs

    def run_step(self, batch: Any) -> float:
        """Forward, backward and optimiser step on one batch; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.step_fn(self, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {self.state.global_step}; lower train.lr"
            )
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and not self.plateau:
            self.scheduler.step()
        self.state.global_step += 1
        return float(loss.detach())

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a batch tensor to the device (images 4D in the model's memory format)."""
        if tensor.ndim == 4 and tensor.is_floating_point():
            return tensor.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return tensor.to(self.device, non_blocking=True)

    def autocast(self):
        """The autocast context forward passes run under."""
        return autocast(self.device, self.bf16)

    def gather_batch(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch's outputs and targets for the loss (this rank's own when not distributed).

        Args:
            outputs: ``(B, ...)`` this rank's network outputs.
            targets: ``(B, ...)`` this rank's targets.

        Returns:
            ``(B * world_size, ...)`` each; the loss computed on them is the single-process loss of the
            global batch, and so is its gradient (see :func:`~medseg.engine.distributed.gather_for_loss`).
        """
        return gather_for_loss(outputs, self.distributed), gather_for_loss(targets, self.distributed)

    def _prepare_network(self) -> None:
        """(Re)build the DistributedDataParallel wrapper when the set of trainable parameters changed.

        DDP syncs the gradients of the parameters that required grad when it was built, so freezing or
        unfreezing (``model.freeze_encoder``) needs a new wrapper; it also broadcasts rank 0's weights.
        """
        if not self.distributed.enabled:
            self.network = self.model
            return
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable != self._network_for:
            from torch.nn.parallel import DistributedDataParallel

            ids = None
            if self.device.type == "cuda":
                ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
            self.network = DistributedDataParallel(self.model, device_ids=ids)
            self._network_for = trainable

    def _release_network(self) -> None:
        """Drop the DistributedDataParallel wrapper at the end of fit, also after an error.

        Its reducer holds the process group, and a gloo group whose last reference goes away there (with
        the GIL held) can deadlock against its own worker threads (pytorch/pytorch#56297); released here,
        the group is freed by ``destroy_process_group``, which releases the GIL first.
        """
        if self.network is not self.model:
            self.network = self.model
            self._network_for = None
            gc.collect()  # DDP keeps reference cycles

    def _budget_spent(self) -> bool:
        return bool(self.max_steps) and self.state.global_step >= self.max_steps

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            if callback.main_process_only and not self.distributed.is_main:
                continue
            getattr(callback, hook)(self, *args)

    # -- resumable state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, scheduler, progress and RNG state: all a resume needs."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "epoch": self.state.epoch,
            "global_step": self.state.global_step,
            "best_metric": self.state.best_metric,
            "best_epoch": self.state.best_epoch,
            "history": self.state.history,
            "stopped_early": self.state.stopped_early,
            "torch_rng": torch.get_rng_state(),
            "world_size": self.distributed.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.state = TrainState(
            epoch=int(state["epoch"]),
            global_step=int(state["global_step"]),
            best_metric=float(state["best_metric"]),
            best_epoch=int(state["best_epoch"]),
            history=list(state["history"]),
            stopped_early=bool(state.get("stopped_early", False)),
        )
        torch.set_rng_state(state["torch_rng"])


def _default_step(trainer: Trainer, batch: Any) -> torch.Tensor:
    images, targets = batch
    images, targets = trainer.to_device(images), trainer.to_device(targets)
    with trainer.autocast():
        outputs = trainer.network(images)
    loss = trainer.loss_fn(*trainer.gather_batch(outputs, targets))
    # Models with extra training terms (deep supervision, attention regularisation) add them here; they
    # come from this rank's last forward, so under torchrun they are per-rank terms, averaged by DDP.
    auxiliary = getattr(trainer.model, "auxiliary_loss", None)
    extra = auxiliary(targets, trainer.loss_fn) if auxiliary is not None else None
    return loss if extra is None else loss + extra
