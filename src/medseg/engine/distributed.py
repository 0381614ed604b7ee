"""Several processes, one run: ``torchrun`` / DistributedDataParallel training and sharded prediction.

``torchrun --nproc_per_node N -m medseg train ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`distributed_session` turns that into one
process group (NCCL on GPUs, gloo on the CPU), gives each process its device (``cuda:LOCAL_RANK``) and
tears the group down at the end, also after an error. Without those variables everything here is a
no-op and the code runs as one process.

What training does with the group (see :class:`~medseg.engine.trainer.Trainer`):

- every rank draws a disjoint share of the same global epoch (:class:`RankShard` over the run's sampler),
  so ``train.batch_size`` is the per-rank batch and the global batch is ``batch_size x world_size``;
- the loss is computed on the global batch (:func:`gather_for_loss`), so batch-level losses (batch soft
  Dice, class-weighted cross-entropy, ignored pixels) and the gradient equal a single process's with the
  same global batch;
- rank 0 alone validates, logs, snapshots and writes checkpoints; the other ranks receive its logs.

Heavy imports (torch) happen inside the functions, so the CLI can import this module cheaply to ask
:func:`is_main_process` (e.g. to print its closing message once).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from medseg.errors import ConfigError

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# Long enough for rank 0's validation, snapshots and threshold tuning, during which the others wait.
TIMEOUT = datetime.timedelta(minutes=60)


def launched_by_torchrun() -> bool:
    """True when a launcher (``torchrun``) set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def is_main_process() -> bool:
    """True on rank 0 of a distributed job, and in a plain single process.

    Reads the initialised process group if there is one, else the launcher's ``RANK`` variable, so it
    answers the same before the group exists and after it is destroyed (the CLI's final message).
    """
    dist = sys.modules.get("torch.distributed")  # not imported: no group can exist, and none is started
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the job, and the collectives the workflows need.

    Attributes:
        rank: global rank, 0..world_size-1 (0 = the main process that writes shared files).
        world_size: number of processes (1 = not distributed).
        local_rank: rank on this node (picks the GPU).
        device: where this process computes.
        backend: ``nccl``, ``gloo``, or ``""`` when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = None
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and combined CSVs."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op in a single process)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(**self._device_ids())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects; identity in a single process)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: Sequence[float]) -> list[float]:
        """Element-wise mean of ``values`` over ranks (``values`` itself in a single process)."""
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()

    def shard(self, items: Sequence[Any]) -> list[tuple[int, Any]]:
        """This rank's share of ``items``: every ``world_size``-th one from ``rank``, with its index."""
        return [(i, items[i]) for i in range(self.rank, len(items), self.world_size)]

    def merge(self, indexed: Sequence[tuple[int, Any]]) -> list[Any]:
        """Gather every rank's ``(index, value)`` pairs (from :meth:`shard`) and return the values in index
        order on every rank: what one process looping over all items would have produced."""
        pairs = [pair for part in self.all_gather(list(indexed)) for pair in part]
        return [value for _, value in sorted(pairs, key=lambda pair: pair[0])]

    def _collective_device(self):
        import torch

        # NCCL moves object collectives' tensors through the GPU; gloo through the CPU
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def _device_ids(self) -> dict[str, Any]:
        return {"device_ids": [self.device.index]} if self.backend == "nccl" else {}


def current_context() -> DistributedContext:
    """The context of the initialised process group, or a single-process context when there is none."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext(device=torch.device("cpu"))
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistributedContext]:
    """The process group for one command: created when launched by torchrun, destroyed on the way out.

    Outside torchrun (or with ``WORLD_SIZE=1``) it yields a single-process context on
    :func:`~medseg.engine.device.pick_device`'s device. Under torchrun it initialises the default group
    once (NCCL when the device is CUDA, gloo otherwise), pins this process to ``cuda:LOCAL_RANK``, and on
    exit waits for every rank (on success) and destroys the group (always). A group that already exists
    (a caller's own) is reused and left alone.

    Args:
        device: ``auto``, ``cpu`` or ``cuda`` (under torchrun ``cuda`` means this process's GPU).

    Raises:
        ConfigError: more processes on this node than GPUs.
    """
    import torch
    import torch.distributed as dist

    from medseg.engine.device import pick_device

    if dist.is_available() and dist.is_initialized():
        yield current_context()
        return
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        yield DistributedContext(device=pick_device(device))
        return
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    chosen = pick_device(device)
    if chosen.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            local_world = os.environ.get("LOCAL_WORLD_SIZE", "?")
            raise ConfigError(
                f"torchrun started {local_world} processes on this node but it has {gpus} GPU(s); "
                f"use --nproc_per_node {gpus} (or --device cpu)"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=rank, world_size=world_size, timeout=TIMEOUT, **_bound_device(backend, chosen)
    )
    context = DistributedContext(rank, world_size, local_rank, chosen, backend)
    try:
        yield context
        context.barrier()  # shared files are complete when any rank returns
    finally:
        # Let gloo's worker threads drop their finished work (which needs the GIL) before the group goes:
        # an error can leave the last reference to it with objects freed later while holding the GIL,
        # and its destructor would then wait for those threads forever (pytorch/pytorch#56297).
        time.sleep(0.05)
        dist.destroy_process_group()


def _bound_device(backend: str, device) -> dict[str, Any]:
    # binding NCCL to this process's GPU lets it set up communicators eagerly (and silences a warning)
    return {"device_id": device} if backend == "nccl" else {}


class RankShard:
    """This rank's disjoint share of a sampler's epoch: keys ``rank, rank + W, rank + 2W, ...``.

    The epoch is padded (by repeating its first keys) to a multiple of the world size ``W`` so every rank
    takes the same number of steps. Interleaving keeps each global batch intact: with a per-rank batch
    ``B``, step ``s`` on all ranks together covers keys ``s*B*W .. (s+1)*B*W - 1`` of the epoch, the
    batch one process with batch ``B*W`` would take at step ``s``.

    Args:
        sampler: anything iterable with ``len`` (and optionally ``set_epoch``), e.g.
            :class:`~medseg.data.samples.EpochSampler`; every rank must build it identically.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, sampler, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the wrapped sampler."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.world_size)

    def __iter__(self) -> Iterator[Any]:
        keys = list(self.sampler)
        total = len(self) * self.world_size
        while keys and len(keys) < total:
            keys += keys[: total - len(keys)]
        return iter(keys[self.rank : total : self.world_size])


def shard_sampler(sampler, context: DistributedContext | None = None):
    """``sampler`` wrapped in :class:`RankShard` when distributed, else ``sampler`` itself.

    Args:
        sampler: the run's epoch sampler.
        context: the job; None = :func:`current_context`.
    """
    context = context or current_context()
    return RankShard(sampler, context.rank, context.world_size) if context.enabled else sampler


def gather_for_loss(tensor, context: DistributedContext | None = None):
    """Concatenate every rank's ``tensor`` (same shape on each) along dim 0, differentiably.

    Every rank then computes the same loss on the global batch. Backward returns this rank's slice of the
    gradient times ``world_size``: summed over the ranks that is the gradient of that one loss, and
    DistributedDataParallel's averaging divides by ``world_size`` again, so each parameter gets exactly
    the single-process gradient of the global batch.

    Args:
        tensor: ``(B, ...)`` outputs or targets of this rank's batch.
        context: the job; None = :func:`current_context`.

    Returns:
        ``(B * world_size, ...)``, rank 0's rows first; ``tensor`` itself when not distributed.
    """
    context = context or current_context()
    if not context.enabled:
        return tensor
    return _gather_function().apply(tensor, context.rank, context.world_size)


@functools.cache
def _gather_function():
    # built on first use, so importing this module does not import torch
    import torch
    import torch.distributed as dist

    class GatherForLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, tensor, rank: int, world_size: int):
            tensor = tensor.contiguous()
            parts = [torch.empty_like(tensor) for _ in range(world_size)]
            dist.all_gather(parts, tensor)
            ctx.rank, ctx.world_size, ctx.rows = rank, world_size, tensor.shape[0]
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad):
            start = ctx.rank * ctx.rows
            return grad[start : start + ctx.rows] * ctx.world_size, None, None

    return GatherForLoss
