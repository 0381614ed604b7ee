"""Run configuration: nested dataclasses <-> YAML, with ``--set a.b=c`` overrides.

Unknown keys are rejected with a "did you mean" hint; the fully resolved config (dataset labels,
channels and normalisation included) is saved to ``RUN/config.yaml`` so a run folder rebuilds its
model and preprocessing with nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.transforms.augment import AugmentConfig

TASKS = ("semantic", "instance", "classify")
DEFAULT_MONITOR = {"semantic": "val_dice", "instance": "val_f1", "classify": "val_balanced_accuracy"}


@dataclass
class DataConfig:
    """Where the data is and how it is read, split and normalised."""

    path: str = ""
    labels: dict[str, int] = field(default_factory=dict)  # class name -> id, from dataset.json or --classes
    colors: dict[str, list[int]] = field(default_factory=dict)  # class name -> display RGB
    # overlapping classes: region name -> the mask values that belong to it (nnU-Net region labels, see
    # medseg.data.regions); regions are classes 1..R of ``labels`` in order, one sigmoid channel each
    regions: dict[str, list[int]] = field(default_factory=dict)
    in_channels: int = 0  # filled in from the dataset
    normalization: str = "percentile"  # percentile | zscore | none (per image, so prediction reproduces it)
    norm_low: float = 0.5
    norm_high: float = 99.5
    patch_size: list[int] = field(default_factory=lambda: [128, 128])  # training crop (rows, cols)
    val_fraction: float = 0.2
    group_by: str = ""  # regex on the case name; cases sharing the match (or its first group) stay together
    split_seed: int = 0
    split: str = "auto"  # auto (group when group_by is set, else random) | random | group | kfold
    folds: int = 5  # kfold: number of folds; whole groups go to one fold
    fold: int = 0  # kfold: the validation fold, 0..folds-1
    ignore_index: int = -1  # label value excluded from loss and metrics (-1: none)
    num_workers: int = 1
    samples_per_epoch: int = 0  # training crops per epoch; 0 = one per training case
    mask_with: str = ""  # classify: segmentation run whose predicted region crops/masks each image
    slicing: dict[str, Any] = field(
        default_factory=dict
    )  # sliced volumes: filled from dataset.json (predict)

    @property
    def class_names(self) -> list[str]:
        """Class names ordered by id."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]


@dataclass
class ModelConfig:
    """Which network, and its constructor arguments beyond channels/classes."""

    name: str = "unet"
    params: dict[str, Any] = field(default_factory=dict)  # architecture arguments, see `medseg models`
    pretrained: str = ""  # hub id or local folder to initialise the encoder from (models that support it)
    freeze_encoder: int = 0  # freeze the encoder for the first K epochs; -1 = always; 0 = never
    encoder_lr_ratio: float = 1.0  # encoder learning rate = train.lr * ratio (e.g. 0.1 when fine-tuning)


@dataclass
class LossConfig:
    """Dice + cross-entropy."""

    dice_weight: float = 1.0
    ce_weight: float = 1.0
    class_weights: list[float] = field(default_factory=list)  # per class for CE; empty = uniform
    dice_include_background: bool = False


@dataclass
class TrainConfig:
    """Optimisation, schedule, budget and logging."""

    epochs: int = 50
    max_steps: int = 0  # stop after this many optimiser steps in total (0 = no step budget)
    batch_size: int = 8
    optimizer: str = "adamw"  # adam | adamw
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | plateau | none
    warmup_epochs: int = 0
    monitor: str = ""  # picks best.pt, drives early stopping/plateau; "" = the task's (DEFAULT_MONITOR)
    early_stopping: int = 0  # patience in epochs (0 = off)
    amp: str = "auto"  # auto (bf16 when the CPU supports it, on GPU always) | bf16 | off
    channels_last: bool = False  # measured: no gain on CPU here (benchmarks/train_step.py)
    seed: int = 0
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    log: str = "csv"  # csv | tensorboard (csv is always written)
    snapshots: bool = True  # per-epoch prediction on a fixed validation image + progress.gif
    progress: bool = True  # progress bar


@dataclass
class InferenceConfig:
    """How ``Predictor.predict`` runs: tiling of large images and test-time augmentation."""

    tile: int = 512  # images larger in either dimension are predicted in tiles of this size (0 = never tile)
    overlap: float = 0.25  # fraction of a tile shared with its neighbours
    batch_size: int = 4  # tiles per forward pass (memory grows with it, not with the image)
    tta: bool = False  # average over flips (and 90 degree rotations of square tiles); 4-8x slower


@dataclass
class InstanceConfig:
    """Deep-watershed instance segmentation (``task: instance``): targets, head weights, post-processing.

    The network predicts an inner distance (peaks at object centres), an outer distance (per-object
    normalised distance to the background), foreground/background (with an optional boundary class) and,
    when the dataset types its instances, per-pixel class logits; see :mod:`medseg.models.heads`.
    """

    classes: list[str] = field(default_factory=list)  # instance types (class head); empty = untyped
    differential: list[str] = field(default_factory=list)  # types a differential count is over (in %)
    alpha: str = "auto"  # inner-distance alpha: "auto" (from each object's size) or a number
    beta: float = 1.0  # inner-distance beta
    erosion: int = 0  # erode object edges by this many pixels before the distance transforms
    boundary: bool = False  # fgbg head with a third, boundary class
    inner_weight: float = 1.0  # loss weights per head (MSE for distances, weighted CE for fgbg/classes)
    outer_weight: float = 1.0
    fgbg_weight: float = 1.0
    class_weight: float = 1.0
    tune: str = "f1"  # after training, tune watershed thresholds on validation: f1 | pq | off
    maxima_threshold: float = 0.3  # post-processing defaults (tuned values go to RUN/thresholds.json)
    interior_threshold: float = 0.5
    min_distance: int = 5
    small_objects_threshold: int = 25


@dataclass
class ClassifyConfig:
    """Image classification (``task: classify``): input size, transfer learning and class imbalance.

    The model is a registered classifier (``medseg.models.list_classifiers``); ``model.pretrained``
    initialises its encoder. Images go through ``data.normalization`` and are then fitted to
    ``image_size`` the same way at training and at prediction time.
    """

    image_size: int = 64  # network input side in pixels
    fit: str = "resize"  # resize (bilinear, whole image) | crop (centre crop or zero-pad, no rescaling)
    transfer: str = "finetune"  # finetune | frozen | head (see medseg.models.classifiers)
    unfreeze_blocks: int = -1  # last K encoder blocks that train; -1: all (finetune) or none (head)
    head_hidden: int = 0  # hidden units of the two-layer head of transfer=head (0 = default)
    class_weights: Any = "none"  # cross-entropy weights: none | auto (inverse frequency) | one per class
    balanced_sampling: bool = False  # draw training images with equal probability per class
    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 1)
    mask_classes: list[str] = field(default_factory=list)  # data.mask_with classes forming the region
    mask_mode: str = "crop"  # crop (to the region's box) | mask (zero outside) | both
    mask_margin: float = 0.1  # crop: widen the box by this fraction of its size on each side


@dataclass
class Config:
    """Everything a run needs; saved as RUN/config.yaml."""

    task: str = ""  # semantic | instance | classify; "" = from the dataset (dataset.json, else semantic)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-ready: tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def validate(self) -> Config:
        """Check values that types alone cannot; returns self."""
        if self.task and self.task not in TASKS:
            raise ConfigError(f"task: unknown task {self.task!r}; choices: {', '.join(TASKS)}")
        if self.task and not self.train.monitor:
            self.train.monitor = DEFAULT_MONITOR[self.task]
        _check_instance(self.instance)
        _check_classify(self)
        choices = {
            "data.normalization": (self.data.normalization, ("percentile", "zscore", "none")),
            "data.split": (self.data.split, ("auto", "random", "group", "kfold")),
            "train.optimizer": (self.train.optimizer, ("adam", "adamw")),
            "train.schedule": (self.train.schedule, ("cosine", "plateau", "none")),
            "train.amp": (self.train.amp, ("auto", "bf16", "off")),
            "train.log": (self.train.log, ("csv", "tensorboard")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
        if len(self.data.patch_size) != 2 or min(self.data.patch_size) < 16:
            raise ConfigError(f"data.patch_size: expected two sizes >= 16, got {self.data.patch_size}")
        if not 0 <= self.data.norm_low < self.data.norm_high <= 100:
            raise ConfigError(
                f"data.norm_low/norm_high: need 0 <= low < high <= 100, got {self.data.norm_low}, "
                f"{self.data.norm_high}"
            )
        if self.model.freeze_encoder < -1 or self.model.encoder_lr_ratio < 0:
            raise ConfigError("model.freeze_encoder must be >= -1 and model.encoder_lr_ratio >= 0")
        if self.train.early_stopping < 0 or self.train.max_steps < 0:
            raise ConfigError("train.early_stopping and train.max_steps must be >= 0")
        if self.data.ignore_index in self.data.labels.values() and not self.data.regions:
            raise ConfigError(f"data.ignore_index: {self.data.ignore_index} is the id of a class")
        if self.data.regions:
            _check_regions(self)
        if not 0 <= self.data.val_fraction < 1:
            raise ConfigError(f"data.val_fraction: must be in [0, 1), got {self.data.val_fraction}")
        if self.data.folds < 2 or not 0 <= self.data.fold < self.data.folds:
            raise ConfigError(
                f"data.folds/fold: need folds >= 2 and 0 <= fold < folds, got folds {self.data.folds}, "
                f"fold {self.data.fold}"
            )
        if self.train.epochs < 1 or self.train.batch_size < 1 or self.train.lr <= 0:
            raise ConfigError("train.epochs and train.batch_size must be >= 1 and train.lr > 0")
        inference = self.inference
        if inference.tile < 0 or inference.batch_size < 1 or not 0 <= inference.overlap < 1:
            raise ConfigError(
                "inference: need tile >= 0 (0 = never tile), batch_size >= 1 and 0 <= overlap < 1; got "
                f"tile {inference.tile}, batch_size {inference.batch_size}, overlap {inference.overlap}"
            )
        return self


def _check_regions(config: Config) -> None:
    from medseg.data.regions import Regions

    data = config.data
    try:
        regions = Regions.from_mapping(data.regions)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"data.regions: {exc}") from None
    expected = {name: r + 1 for r, name in enumerate(regions.names)}
    if data.labels and {k: v for k, v in data.labels.items() if v} != expected:
        raise ConfigError(
            f"data.regions: regions {list(regions.names)} must be classes 1..{len(regions)} of data.labels "
            f"in order, got {data.labels}"
        )
    if config.task and config.task != "semantic":
        raise ConfigError(f"data.regions: overlapping regions are a semantic task, not {config.task!r}")
    if data.ignore_index >= 0 and data.ignore_index in regions.mask_values.tolist():
        raise ConfigError(f"data.ignore_index: {data.ignore_index} is a mask value of a region")


def _check_classify(config: Config) -> None:
    c = config.classify
    if c.image_size < 8:
        raise ConfigError(f"classify.image_size: must be >= 8 pixels, got {c.image_size}")
    for key, value, allowed in (
        ("fit", c.fit, ("resize", "crop")),
        ("transfer", c.transfer, ("finetune", "frozen", "head")),
    ):
        if value not in allowed:
            raise ConfigError(f"classify.{key}: {value!r} is not one of {', '.join(allowed)}")
    if c.unfreeze_blocks < -1 or c.head_hidden < 0 or not 0 <= c.label_smoothing < 1:
        raise ConfigError(
            "classify: need unfreeze_blocks >= -1 (-1 = default), head_hidden >= 0, 0 <= label_smoothing < 1"
        )
    if c.transfer == "frozen" and c.unfreeze_blocks > 0:
        raise ConfigError("classify.unfreeze_blocks: transfer=frozen trains no encoder block; use finetune")
    weights = c.class_weights
    if isinstance(weights, str):
        if weights not in ("none", "auto"):
            raise ConfigError(
                f"classify.class_weights: 'none', 'auto' or one number per class, not {weights!r}"
            )
    elif not (
        isinstance(weights, list)
        and weights
        and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
    ):
        raise ConfigError(
            f"classify.class_weights: 'none', 'auto' or a list of non-negative numbers, got {weights!r}"
        )
    elif config.data.labels and len(weights) != len(config.data.labels):
        raise ConfigError(
            f"classify.class_weights: {len(weights)} values for {len(config.data.labels)} classes "
            f"({', '.join(config.data.class_names)})"
        )
    if c.mask_mode not in ("crop", "mask", "both") or c.mask_margin < 0:
        raise ConfigError(
            f"classify.mask_mode: crop, mask or both (got {c.mask_mode!r}); classify.mask_margin >= 0"
        )
    if config.data.mask_with and config.task not in ("", "classify"):
        raise ConfigError(
            f"data.mask_with: only a classify run is guided by a segmentation run, not {config.task}"
        )
    if config.task == "classify" and config.model.freeze_encoder:
        raise ConfigError("model.freeze_encoder: a classify run freezes its encoder with classify.transfer")
    if config.task == "classify" and config.loss.class_weights:
        raise ConfigError("loss.class_weights: a classify run takes its weights from classify.class_weights")


def _check_instance(instance: InstanceConfig) -> None:
    if instance.alpha != "auto":
        try:
            alpha = float(instance.alpha)
        except ValueError:
            alpha = -1.0
        if not alpha > 0:
            raise ConfigError(f"instance.alpha: 'auto' or a positive number, got {instance.alpha!r}")
    if instance.tune not in ("f1", "pq", "off"):
        raise ConfigError(f"instance.tune: {instance.tune!r} is not one of f1, pq, off")
    weights = [instance.inner_weight, instance.outer_weight, instance.fgbg_weight, instance.class_weight]
    if min(weights) < 0 or instance.beta <= 0 or instance.erosion < 0:
        raise ConfigError("instance: loss weights and erosion must be >= 0 and beta > 0")
    if len(set(instance.classes)) != len(instance.classes):
        raise ConfigError(f"instance.classes: duplicate names in {instance.classes}")
    unknown = sorted(set(instance.differential) - set(instance.classes))
    if unknown:
        raise ConfigError(f"instance.differential: {unknown} are not instance.classes {instance.classes}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(data: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key(prefix + str(key), list(fields), prefix))
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own validation (e.g. AugmentConfig.__post_init__)
        raise ConfigError(str(exc)) from None


def _unknown_key(key: str, choices: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], choices, n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(choices)}"
    return f"unknown config key {key!r}{hint}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(value or {}, hint, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in (
                "true",
                "false",
                "yes",
                "no",
                "1",
                "0",
                "on",
                "off",
            ):
                return value.lower() in ("true", "yes", "1", "on")
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            if isinstance(value, bool):  # YAML 1.1 reads a bare off/on/no/yes as a boolean
                return "on" if value else "off"
            return "" if value is None else str(value)
        if origin is list:
            if value is None:
                return []
            if not isinstance(value, (list, tuple)):
                value = [value]
            (item,) = typing.get_args(hint)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is tuple:
            items = typing.get_args(hint)
            if not isinstance(value, (list, tuple)) or len(value) != len(items):
                raise ValueError(value)
            return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
        if origin is dict:
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ValueError(value)
            _, item = typing.get_args(hint)
            return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
        if hint is Any:
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot use {value!r} as {_type_name(hint)}") from None
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover - programming error


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"train.lr=3e-4"`` into (["train", "lr"], 3e-4); the value is parsed as YAML."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # keep "off"/"no" as words; a bool field still accepts them
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a nested dict in place and return it."""
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults), apply ``--set`` overrides and validate.

    Args:
        path: YAML file with any subset of the config's sections, or None for the defaults.
        overrides: ``["train.lr=3e-4", "model.name=unet_tiny"]``.

    Raises:
        ConfigError: the file is unreadable or invalid, or a key does not exist.
    """
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    return from_dict(data).validate()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; problems become one-line ConfigErrors naming the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: cannot read config ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML atomically."""
    import yaml

    from medseg.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
