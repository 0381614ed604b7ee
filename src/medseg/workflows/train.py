"""``medseg train``: dataset folder -> run folder (config, split, checkpoints, logs, snapshots).

Under ``torchrun --nproc_per_node N -m medseg train ...`` every process runs this same function: each
loads the dataset and builds the same model, trains on its share of every epoch (``train.batch_size`` per
process), and rank 0 alone writes the run folder (see ``docs/distributed.md``).
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.config import Config, from_dict, read_yaml, save_config
from medseg.data.dataset import Dataset, load_image, load_label, open_dataset
from medseg.data.splits import split_cases
from medseg.errors import ConfigError, DataError, RunError
from medseg.io import write_json_atomic
from medseg.transforms import normalize


def train(
    dataset: str | Path | None,
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    classes: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
) -> Path:
    """Train a segmentation model (or a classifier: ``workflows.classify``) and write the run folder.

    Args:
        dataset: dataset folder (native layout or images/ + masks/); with ``resume`` may be None to reuse
            the run's.
        config: the run config (ignored on resume except for ``overrides``, which apply on top of the
            saved config, e.g. ``train.epochs=80`` to train longer).
        out: run folder to create (or to resume).
        resume: continue from ``out/checkpoints/last.pt``.
        classes: class names for an images/ + masks/ dataset.
        overrides: ``--set`` overrides (only used on resume; otherwise already in ``config``).
        device: ``auto``, ``cpu`` or ``cuda`` (under torchrun: each process's own GPU).

    Returns:
        The run folder.

    Raises:
        MedsegError: bad dataset, config or run folder (one line naming the problem).
    """
    from medseg.engine.distributed import distributed_session
    from medseg.workflows.classify import train_classifier, wants_classifier

    with distributed_session(device) as job:
        if wants_classifier(dataset, config, out, resume):  # class-per-folder or CSV set, or task classify
            return train_classifier(
                dataset,
                config,
                out,
                resume=resume,
                classes=classes,
                overrides=overrides,
                device=str(job.device),
            )
        return _train_segmentation(
            dataset, config, Path(out), job, resume=resume, classes=classes, overrides=overrides
        )


def _train_segmentation(
    dataset: str | Path | None,
    config: Config,
    run: Path,
    job,
    *,
    resume: bool,
    classes: Sequence[str] | None,
    overrides: Sequence[str],
) -> Path:
    from medseg.engine.device import seed_everything, use_bf16

    if resume:
        config = _resume_config(run, overrides)
        if dataset is not None:
            config.data.path = str(Path(dataset).resolve())
    elif (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("*.pt")):
        raise RunError(
            f"{run}: already holds a trained run; use --resume to continue it or choose another --out"
        )
    else:
        if dataset is None:
            raise DataError("train: a DATASET folder is required")
        config = copy.deepcopy(config)
        config.data.path = str(Path(dataset).resolve())

    data = open_dataset(config.data.path, classes=classes or _classes_from_config(config))
    _fill_data_config(config, data)
    config.validate()
    splits = _load_or_make_split(run, data, config, resume, write=job.is_main)
    val_cases = splits["val"]
    images, labels, types = _load_cases(data, splits["train"] + val_cases, config)
    n_train = len(splits["train"])
    train_images, train_labels = images[:n_train], labels[:n_train]
    val_images, val_labels = images[n_train:], labels[n_train:]
    config.data.in_channels = train_images[0].shape[0]

    device = job.device
    seed_everything(config.train.seed)
    cases = LoadedCases(
        train_images, train_labels, val_cases, val_images, val_labels, types[:n_train], types[n_train:]
    )
    # a resume loads last.pt over the weights: no hub or folder needed
    trainer = _build_trainer(config, run, device, data, cases, pretrained=not resume)
    if resume and not resume_trainer(trainer, run, config):
        return run
    amp = "bf16" if use_bf16(config.train.amp, device) else "off"
    if job.is_main:
        save_config(config, run / "config.yaml")
        print(
            f"training {config.model.name} on {len(train_images)} cases (val {len(val_images)}), "
            f"{config.train.epochs} epochs, device {device.type}, amp {amp}{_processes(job, config)}",
            file=sys.stderr,
        )
    trainer.fit()
    if job.is_main and config.task == "instance" and config.instance.tune != "off" and val_images:
        from medseg.workflows.instance import tune_run_thresholds

        tune_run_thresholds(run, config, cases, device)
    write_train_summary(run, trainer, device, amp, len(train_images), len(val_images))
    return run


def _processes(job, config: Config) -> str:
    if not job.enabled:
        return ""
    batch = config.train.batch_size
    return (
        f", {job.world_size} processes (global batch {batch} x {job.world_size} = {batch * job.world_size})"
    )


def resume_trainer(trainer, run: Path, config: Config) -> bool:
    """Load ``RUN/checkpoints/last.pt`` into ``trainer``; False when the run has nothing left to train.

    Raises:
        RunError: no checkpoint, or one that does not fit the model/optimiser.
    """
    from medseg.engine.checkpoint import load_checkpoint

    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        raise RunError(f"{run}: --resume but there is no checkpoint at {last}")
    state = load_checkpoint(last)  # on every rank: each process restores the same state
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160]
        raise RunError(
            f"{last}: does not fit this run's model/optimiser (was model.* changed?): {reason}"
        ) from None
    saved_world, world = int(state.get("world_size", 1)), trainer.distributed.world_size
    if saved_world != world and trainer.distributed.is_main:
        print(
            f"{run}: resuming with {world} process(es) where {saved_world} trained so far: the global batch "
            f"and steps per epoch change from here on",
            file=sys.stderr,
        )
    if trainer.state.epoch >= config.train.epochs or trainer.state.stopped_early:
        why = "stopped early" if trainer.state.stopped_early else f"trained for {trainer.state.epoch} epochs"
        if trainer.distributed.is_main:
            print(f"{run}: already {why}; nothing to do (raise train.epochs to continue)", file=sys.stderr)
        return False
    return True


def write_train_summary(run: Path, trainer, device, amp: str, n_train: int, n_val: int, **extra) -> None:
    """``RUN/train_summary.json``: best epoch and metric, budget used, time, device, processes, split sizes.

    Written by the main process only (a no-op on the other ranks of a distributed run).
    """
    if not trainer.distributed.is_main:
        return
    state = trainer.state
    summary = {
        "best_epoch": state.best_epoch,
        "best_metric": state.best_metric if math.isfinite(state.best_metric) else None,
        "monitor": trainer.monitor,
        "epochs_run": state.epoch,
        "steps": state.global_step,
        "seconds": round(sum(row["seconds"] for row in state.history), 2),
        "stopped_early": state.stopped_early,
        "device": device.type,
        "processes": trainer.distributed.world_size,
        "amp": amp,
        "train_cases": n_train,
        "val_cases": n_val,
    }
    write_json_atomic(run / "train_summary.json", {**summary, **extra})


def _resume_config(run: Path, overrides: Sequence[str]) -> Config:
    from medseg.config import apply_overrides

    if not (run / "config.yaml").is_file():
        raise RunError(f"{run}: --resume but this is not a medseg run (no config.yaml)")
    data = apply_overrides(read_yaml(run / "config.yaml"), list(overrides))
    return from_dict(data).validate()


def _classes_from_config(config: Config) -> list[str] | None:
    return config.data.class_names or None


def _fill_data_config(config: Config, data: Dataset) -> None:
    if not config.task:
        config.task = data.task
    if config.task == "instance":
        _fill_instance_config(config, data)
    if config.data.labels and config.data.labels != data.labels:
        raise DataError(f"{data.root}: classes {data.labels} differ from the run's {config.data.labels}")
    if len(data.labels) < 2:
        raise DataError(
            f"{data.root}: needs at least two classes (background and one more), got {data.labels}"
        )
    config.data.labels = dict(data.labels)
    if config.data.regions and config.data.regions != data.regions:
        raise DataError(f"{data.root}: regions {data.regions} differ from the run's {config.data.regions}")
    config.data.regions = {k: list(v) for k, v in data.regions.items()}
    if data.regions and config.task != "semantic":
        raise DataError(f"{data.root}: overlapping regions need --task semantic, not {config.task}")
    if data.ignore_label is not None and config.data.ignore_index < 0:
        config.data.ignore_index = data.ignore_label
    if not config.data.group_by and data.group_by:  # e.g. an importer's "one sequence per group"
        config.data.group_by = data.group_by
    if data.slicing:  # the run folder must cut a volume as the training slices were, on its own
        config.data.slicing = dict(data.slicing)
    if data.colors:
        config.data.colors = {k: list(v) for k, v in data.colors.items()}
    ids = sorted(data.labels.values())
    if ids != list(range(len(ids))):
        raise DataError(f"{data.root}: class ids must be 0..K-1 without gaps, got {ids}")


def _fill_instance_config(config: Config, data: Dataset) -> None:
    if not any(case.instances is not None for case in data.cases):
        raise DataError(
            f"{data.root}: --task instance needs instance labels (labelsTr of an instance dataset, or "
            f"the folder named by dataset.json's medseg.instances); none found"
        )
    inst = config.instance
    if not inst.classes and data.instance_classes:
        inst.classes = list(data.instance_classes)
        inst.differential = inst.differential or list(data.differential)


def _load_or_make_split(
    run: Path, data: Dataset, config: Config, resume: bool, *, write: bool = True
) -> dict[str, list[str]]:
    """The saved split on resume, else a new one as ``data.split`` asks (the same on every rank: it is
    seeded), written when ``write`` (rank 0); ``medseg evaluate`` scores the saved ``val`` cases."""
    path = run / "splits.json"
    key = "instances" if config.task == "instance" else "label"
    labelled = [c.name for c in data.cases if getattr(c, key) is not None]
    if not labelled:
        raise DataError(
            f"{data.root}: no labelled cases to train on (check it: medseg data check {data.root})"
        )
    if resume and path.is_file():
        splits = json.loads(path.read_text())
        missing = sorted(set(splits["train"] + splits["val"]) - set(labelled))
        if missing:
            raise DataError(f"{data.root}: cases of the saved split are missing: {', '.join(missing[:5])}")
        return splits
    d = config.data
    splits = split_cases(
        labelled,
        kind=d.split,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        group_by=d.group_by,
        folds=d.folds,
        fold=d.fold,
    )
    if write:
        run.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, splits)
    return splits


@dataclass
class LoadedCases:
    """The split's cases in memory: normalised images ``(C, H, W)`` and labels ``(H, W)``.

    Instance task: labels are instance ids, and ``*_types`` hold each case's id -> type index lookup
    (None for untyped cases; see :func:`medseg.data.instance.type_lookup`).
    """

    train_images: list[np.ndarray]
    train_labels: list[np.ndarray]
    val_names: list[str]
    val_images: list[np.ndarray]
    val_labels: list[np.ndarray]
    train_types: list[np.ndarray | None] = field(default_factory=list)
    val_types: list[np.ndarray | None] = field(default_factory=list)


def _load_cases(
    data: Dataset, names: Sequence[str], config: Config
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """Read, check and normalise cases into memory: images ``(C, H, W)`` float32, labels ``(H, W)`` int,
    and for typed instances each case's id -> type lookup (else None)."""
    from medseg.data.dataset import label_values_error, load_instances
    from medseg.data.instance import type_lookup

    images, labels, types = [], [], []
    first = None
    for name in names:
        case = data.case(name)
        image = load_image(case)
        if config.task == "instance":
            label, names_of = load_instances(case, image.shape)
            classes = config.instance.classes
            types.append(type_lookup(names_of, classes, str(case.instances)) if classes else None)
            if classes and set(np.unique(label).tolist()) - {0} - set(names_of):
                raise DataError(f"{case.instances}: some instances have no type in its .json sidecar")
        else:
            label = load_label(case, image.shape)
            types.append(None)
            problem = label_values_error(
                case.label, label, config.data.labels, config.data.ignore_index, config.data.regions
            )
            if problem:
                raise DataError(problem)
        d = config.data
        normalised = normalize(image, d.normalization, low=d.norm_low, high=d.norm_high)
        if first is not None and normalised.shape[0] != images[0].shape[0]:
            raise DataError(
                f"{case.images[0]}: image has {normalised.shape[0]} channel(s) but {first.name} has "
                f"{images[0].shape[0]} (check it: medseg data check {data.root})"
            )
        first = first or case.images[0]
        images.append(normalised)
        labels.append(label.astype(np.int16 if label.max(initial=0) < 2**15 else np.int32))
    return images, labels, types


def _build_trainer(config, run, device, data, cases: LoadedCases, *, pretrained=True):
    from medseg.data.samples import EpochSampler, PatchDataset
    from medseg.engine import callbacks as cb
    from medseg.engine.distributed import current_context
    from medseg.losses import DeepWatershedLoss, DiceCELoss
    from medseg.models import build_model
    from medseg.models.heads import HeadLayout

    layout = HeadLayout.for_config(config)
    num_classes = len(config.data.labels)
    t = config.train
    model = build_model(
        config.model, in_channels=config.data.in_channels, num_classes=layout.channels, pretrained=pretrained
    )
    divisor = int(getattr(model, "size_divisor", 1))
    if any(size % divisor for size in config.data.patch_size):
        raise ConfigError(
            f"data.patch_size: {config.data.patch_size} must be multiples of {divisor} "
            f"for {config.model.name}"
        )
    weighted = list(config.data.regions) or config.data.class_names  # regions: one weight per region
    if config.loss.class_weights and len(config.loss.class_weights) != len(weighted):
        raise ConfigError(
            f"loss.class_weights: {len(config.loss.class_weights)} values for {len(weighted)} "
            f"{'regions' if config.data.regions else 'classes'} ({', '.join(weighted)})"
        )
    instance = config.task == "instance"
    pad_label = config.data.ignore_index if config.data.ignore_index >= 0 and not instance else 0
    target_fn = None
    if instance:
        from medseg.data.instance import InstanceTargets

        inst = config.instance
        target_fn = InstanceTargets(
            cases.train_types, alpha=inst.alpha, beta=inst.beta, erosion=inst.erosion, boundary=inst.boundary
        )
    sample_masks = None
    if instance and config.instance.classes:
        # centre patches on a random *type*, not a random cell: rare types (white cells among hundreds of
        # red cells) are then seen as often as common ones
        sample_masks = [
            None
            if lookup is None
            else (np.append(lookup, -1)[np.where(ids > 0, ids, -1)] + 1).astype(np.int8)
            for ids, lookup in zip(cases.train_labels, cases.train_types)
        ]
    patches = PatchDataset(
        cases.train_images,
        cases.train_labels,
        tuple(config.data.patch_size),
        config.augment,
        pad_label=pad_label,
        target_fn=target_fn,
        sample_masks=sample_masks,
    )
    samples = config.data.samples_per_epoch or len(cases.train_images)
    sampler = EpochSampler(len(cases.train_images), samples, t.seed)
    if instance:
        inst = config.instance
        weights = {
            "inner": inst.inner_weight,
            "outer": inst.outer_weight,
            "fgbg": inst.fgbg_weight,
            "classes": inst.class_weight,
        }
        loss_fn = DeepWatershedLoss(layout, weights).to(device)
    elif config.data.regions:
        from medseg.data.regions import Regions
        from medseg.losses import RegionDiceBCELoss

        loss_fn = RegionDiceBCELoss(
            Regions.from_mapping(config.data.regions).lookup(),
            dice_weight=config.loss.dice_weight,
            bce_weight=config.loss.ce_weight,
            region_weights=config.loss.class_weights,
            ignore_index=config.data.ignore_index,
        ).to(device)
    else:
        loss_fn = DiceCELoss(
            num_classes,
            dice_weight=config.loss.dice_weight,
            ce_weight=config.loss.ce_weight,
            class_weights=config.loss.class_weights,
            ignore_index=config.data.ignore_index,
            include_background=config.loss.dice_include_background,
        ).to(device)
    validate = None
    if cases.val_images and instance:
        from medseg.workflows.instance import InstanceValidation

        validate = InstanceValidation(config, cases, loss_fn)
    elif cases.val_images:
        validate = SemanticValidation(config, cases.val_images, cases.val_labels, loss_fn)
    snapshots = []
    if cases.val_images and t.snapshots and current_context().is_main:
        from medseg.report import display_channels
        from medseg.workflows.snapshots import Snapshots, pick_snapshot_case

        i = pick_snapshot_case(cases.val_labels)
        display = display_channels(
            load_image(data.case(cases.val_names[i])), int(config.data.slicing.get("context", 0))
        )
        snapshots.append(
            Snapshots(run / "snapshots", config, display, cases.val_images[i], cases.val_labels[i])
        )
    return assemble_trainer(
        config,
        run,
        model,
        _param_groups(model, t.lr, config.model.encoder_lr_ratio),
        patches,
        sampler,
        loss_fn,
        validate,
        device,
        callbacks_before=[cb.FreezeEncoder(config.model.freeze_encoder)],
        callbacks_after=snapshots,
    )


def assemble_trainer(
    config: Config,
    run: Path,
    model,
    param_groups: list[dict],
    samples,
    sampler,
    loss_fn,
    validate,
    device,
    *,
    callbacks_before: Sequence = (),
    callbacks_after: Sequence = (),
    progress_keys: tuple[str, ...] | None = None,
):
    """What every task's training shares around its model, data and loss: the loader over this rank's
    share of each epoch, optimiser, schedule, early stopping, checkpoints, logs, progress, the Trainer.

    Args:
        config: the resolved run config (``train`` section).
        run: the run folder (checkpoints, metrics.csv, tensorboard).
        model: the network.
        param_groups: optimiser parameter groups (e.g. :func:`_param_groups`).
        samples: the training ``Dataset``; ``sampler`` draws its indices for one global epoch.
        sampler: sampler of the whole epoch (sharded here under torchrun).
        loss_fn: the loss.
        validate: per-epoch validation, or None (then ``train_loss`` is monitored).
        device: the training device.
        callbacks_before: callbacks that run before early stopping (e.g. freezing the encoder).
        callbacks_after: callbacks after the standard ones (e.g. snapshots).
        progress_keys: validation logs the progress bar shows (default: its own).
    """
    import torch

    from medseg.engine import callbacks as cb
    from medseg.engine.device import use_bf16
    from medseg.engine.distributed import shard_sampler
    from medseg.engine.trainer import Trainer

    t = config.train
    sampler = shard_sampler(sampler)  # under torchrun: this rank's share of the same global epoch
    workers = max(0, config.data.num_workers)
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=t.batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=len(sampler) >= 2 * t.batch_size,  # a batch of one breaks batch norm
    )
    steps_per_epoch = len(loader)
    total_steps = t.epochs * steps_per_epoch
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    optim_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = optim_cls(param_groups, weight_decay=t.weight_decay)
    monitor = t.monitor if validate is not None else "train_loss"
    scheduler, plateau = _scheduler(optimizer, config, monitor, steps_per_epoch, total_steps)
    callbacks: list = [
        *callbacks_before,
        cb.EarlyStopping(t.early_stopping),  # before Checkpoint, so last.pt records an early stop
        cb.Checkpoint(run / "checkpoints", {"config": config.to_dict()}),
        cb.CSVLogger(run / "metrics.csv"),
    ]
    if t.log == "tensorboard":
        callbacks.append(cb.TensorBoardLogger(run / "tensorboard"))
    if t.progress:
        progress = {"summary_keys": progress_keys} if progress_keys else {}
        callbacks.append(cb.ProgressBar(steps_per_epoch, **progress))
    callbacks.extend(callbacks_after)
    return Trainer(
        model,
        optimizer,
        loader,
        loss_fn=loss_fn,
        validate=validate,
        scheduler=scheduler,
        plateau=plateau,
        epochs=t.epochs,
        max_steps=t.max_steps,
        monitor=monitor,
        bf16=use_bf16(t.amp, device),
        grad_clip=t.grad_clip,
        callbacks=callbacks,
        device=device,
        channels_last=t.channels_last,
    )


def _param_groups(model, lr: float, encoder_lr_ratio: float) -> list[dict]:
    """Encoder parameters at ``lr * encoder_lr_ratio``, the rest at ``lr`` (one group when the ratio is 1)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or encoder_lr_ratio == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    encoder_ids = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    return [
        {"params": list(encoder.parameters()), "lr": lr * encoder_lr_ratio, "name": "encoder"},
        {"params": rest, "lr": lr, "name": "decoder"},
    ]


def _scheduler(optimizer, config: Config, monitor: str, steps_per_epoch: int, total_steps: int):
    import torch

    t = config.train
    if t.schedule == "plateau":
        mode = "min" if monitor.endswith("loss") else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=5), True
    warmup = t.warmup_epochs * steps_per_epoch
    if t.schedule == "none" and not warmup:
        return None, False

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t.schedule == "none":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), False


class SemanticValidation:
    """Validation on whole images: loss, and Dice per class averaged over images (NaN-skipping).

    Returns logs ``val_loss``, ``val_dice`` (mean over foreground classes) and ``val_dice_<class>``.
    """

    def __init__(self, config: Config, images, labels, loss_fn) -> None:
        self.config = config
        self.images = images
        self.labels = labels
        self.loss_fn = loss_fn

    def __call__(self, trainer) -> dict[str, float]:
        import torch

        from medseg.inference.predictor import Predictor
        from medseg.metrics import SemanticMetrics

        names = self.config.data.class_names
        ignore = self.config.data.ignore_index
        predictor = Predictor(trainer.model, self.config, trainer.device)
        predictor.bf16 = trainer.bf16
        metrics = SemanticMetrics(len(names), hd95=False, regions=predictor.regions)
        losses = []
        for image, label in zip(self.images, self.labels):
            logits = predictor.logits(torch.from_numpy(image)[None])
            target = torch.from_numpy(label.astype(np.int64))[None].to(trainer.device)
            losses.append(float(self.loss_fn(logits, target)))
            truth = np.where(label == ignore, -1, label) if ignore >= 0 else label  # -1: not scored
            # class ids (argmax) or, for a region run, mask values decoded from the sigmoids
            metrics.update(truth, predictor.labels_of(predictor.layout.activate(logits)[0].cpu().numpy()))
        summary = metrics.aggregate(names)
        dice = summary["mean"]["dice"]
        logs = {"val_loss": float(np.mean(losses)), "val_dice": dice if math.isfinite(dice) else 0.0}
        for name in names[1:]:
            logs[f"val_dice_{name}"] = summary["per_class"][name]["dice"]
        return logs
