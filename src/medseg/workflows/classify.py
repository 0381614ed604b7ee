"""Image classification runs (``task: classify``): train, evaluate and predict one label per image.

A classification run is a run folder like any other (``config.yaml``, ``splits.json``, ``checkpoints/``,
``metrics.csv``, ``train_summary.json``, ``eval/``) trained by the one ``Trainer``;
what differs is the data (:mod:`medseg.data.classification`: class-per-folder or a ``path,label[,group]``
CSV), the network (a registered classifier, :mod:`medseg.models.classifiers`) and the metrics
(:func:`medseg.metrics.classification_metrics`).

Preprocessing is one function, :func:`prepare_image`, at training, validation and prediction time: the
image's channels are matched to the model (grey repeated to RGB, an RGB(A) uint8 image averaged to grey,
alpha dropped), normalised per image with ``data.normalization``, then fitted to ``classify.image_size``
(``classify.fit``: ``resize`` scales the whole image bilinearly, ``crop`` centre-crops or zero-pads it
without rescaling). Training images are augmented with :func:`medseg.transforms.augment` (flips, 90 degree
rotations, affine, intensity), each sample seeded by ``(seed, epoch, draw)`` so a resumed run sees the
same samples as an uninterrupted one.

Segmentation-guided classification: with ``data.mask_with=SEG_RUN`` a segmentation run predicts a region
of every image (e.g. the lungs) that crops and/or masks it after normalisation, at training and prediction
time (:class:`SegmentationGuide`); the run keeps a copy of the segmentation run in ``RUN/mask_run``.

Class imbalance: ``classify.class_weights=auto`` weighs the cross-entropy by inverse class frequency
(``n / (k * n_c)``, scikit-learn's "balanced"), or takes one weight per class; ``classify.balanced_sampling``
draws training images with equal probability per class instead.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config
from medseg.data.classification import ClassificationDataset, open_classification_dataset
from medseg.data.splits import group_of, split_cases
from medseg.errors import ConfigError, DataError, RunError
from medseg.io import read_image, write_csv_atomic, write_json_atomic
from medseg.transforms import AugmentConfig, augment, center_crop_or_pad, normalize

CACHE_BYTES = 2 * 1024**3  # prepared training images are kept in memory up to this size, else re-read
EVAL_BATCH = 32
SEGMENTATION_FOLDERS = ("images", "masks", "imagesTr", "labelsTr")  # a folder with these is no class set
MASK_RUN = "mask_run"  # a guided run's copy of its segmentation run (data.mask_with)


# ------------------------------------------------------------------------------------ what is what


def is_classification_dataset(path: str | Path) -> bool:
    """True for a ``.csv`` file, or a folder of class folders: no ``dataset.json`` and none of the
    segmentation layouts' ``images/``, ``masks/``, ``imagesTr/``, ``labelsTr/`` folders."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir() or (path / "dataset.json").is_file():
        return False
    if any((path / name).is_dir() for name in SEGMENTATION_FOLDERS):
        return False
    return any(child.is_dir() and not child.name.startswith(".") for child in path.iterdir())


def is_classification_run(run_dir: str | Path) -> bool:
    """True when ``RUN/config.yaml`` says ``task: classify`` (False for a missing or unreadable config)."""
    import yaml

    try:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and config.get("task") == "classify"


def wants_classifier(dataset: str | Path | None, config: Config, run: str | Path, resume: bool) -> bool:
    """Whether ``medseg train`` should train a classifier: the resumed run is one, ``task`` is
    ``classify``, or no task is given and ``dataset`` is a classification set."""
    if resume:
        return is_classification_run(run)
    if config.task:
        return config.task == "classify"
    return dataset is not None and is_classification_dataset(dataset)


# ------------------------------------------------------------------------------------ preprocessing


def match_channels(image: np.ndarray, in_channels: int, source: str = "image") -> np.ndarray:
    """Adapt a raw ``(H, W)`` or ``(H, W, C)`` image to ``in_channels`` as prediction does for segmentation:
    grey -> repeated RGB, RGB(A) uint8 -> grey mean, RGBA -> RGB.

    Raises:
        DataError: any other channel mismatch (names ``source``).
    """
    channels = 1 if image.ndim == 2 else image.shape[-1]
    if image.ndim not in (2, 3):
        raise DataError(f"{source}: expected a 2D image (H, W) or (H, W, C), got shape {image.shape}")
    if channels == in_channels:
        return image
    if in_channels == 3 and channels == 1:
        return np.repeat(image[..., None] if image.ndim == 2 else image, 3, axis=-1)
    if in_channels == 1 and channels in (3, 4) and image.dtype == np.uint8:
        return image[..., :3].mean(axis=-1)
    if in_channels == 3 and channels == 4:
        return image[..., :3]
    raise DataError(f"{source}: image has {channels} channel(s) but the model expects {in_channels}")


def fit_image(image: np.ndarray, size: int, mode: str = "resize") -> np.ndarray:
    """``(C, H, W)`` float32 -> ``(C, size, size)`` float32: bilinear ``resize`` (anti-aliased when
    shrinking) or ``crop`` (centre crop / zero pad, no rescaling)."""
    if image.shape[-2:] == (size, size):
        return np.ascontiguousarray(image, dtype=np.float32)
    if mode == "crop":
        return center_crop_or_pad(image, None, (size, size))[0].astype(np.float32, copy=False)
    from skimage.transform import resize

    shrink = min(image.shape[-2:]) > size
    out = resize(image, (image.shape[0], size, size), order=1, anti_aliasing=shrink, preserve_range=True)
    return out.astype(np.float32)


def unfit_map(values: np.ndarray, shape: tuple[int, int], mode: str = "resize") -> np.ndarray:
    """Map an ``(S, S)`` map on the fitted image back onto the original ``(H, W)`` image (the inverse of
    :func:`fit_image`); with ``crop``, pixels the network never saw are 0."""
    if values.shape == tuple(shape):
        return values.astype(np.float32, copy=False)
    if mode == "resize":
        from skimage.transform import resize

        return resize(values, shape, order=1, preserve_range=True).astype(np.float32)
    out = np.zeros(shape, np.float32)
    spans = []
    for have, size in zip(shape, values.shape, strict=True):
        # center_crop_or_pad pads (size - have) // 2 before, then crops (max(have, size) - size) // 2
        shift = max(size - have, 0) // 2 - (max(have, size) - size) // 2  # fitted index - original index
        start = max(0, -shift)
        stop = min(have, size - shift)
        spans.append((slice(start, stop), slice(start + shift, stop + shift)))
    (rows, fitted_rows), (cols, fitted_cols) = spans
    out[rows, cols] = values[fitted_rows, fitted_cols]
    return out


def prepare_image(
    image: np.ndarray, config: Config, source: str = "image", guide: SegmentationGuide | None = None
) -> np.ndarray:
    """A raw ``(H, W)`` or ``(H, W, C)`` image as the network sees it: ``(C, S, S)`` float32, ``S`` =
    ``classify.image_size``, channels matched, normalised, cropped/masked by ``guide`` (``data.mask_with``)
    and fitted (see the module docstring)."""
    return prepare_with_box(image, config, source, guide)[0]


def prepare_with_box(
    image: np.ndarray, config: Config, source: str = "image", guide: SegmentationGuide | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """:func:`prepare_image` and the box ``(top, left, height, width)`` of the original image that was
    fitted (the whole image unless ``guide`` crops it)."""
    d, c = config.data, config.classify
    image = np.asarray(image)
    matched = match_channels(image, d.in_channels, source)
    normalised = normalize(matched, d.normalization, low=d.norm_low, high=d.norm_high)
    box = (0, 0, *normalised.shape[-2:])
    if guide is not None:
        normalised, box = guide.apply(normalised, guide.region(image, source))
    return fit_image(normalised, c.image_size, c.fit), box


class SegmentationGuide:
    """Segmentation-guided classification (``data.mask_with``): a segmentation run predicts a region of
    each image (its ``classify.mask_classes``, default every foreground class; instance runs: every
    object), which crops the normalised image to the region's bounding box widened by
    ``classify.mask_margin`` (``mask_mode`` ``crop``), sets the pixels outside it to 0 (``mask``), or both.
    An image where nothing is predicted is used whole (``empty`` counts them).

    Args:
        predictor: the segmentation run's :class:`~medseg.inference.predictor.Predictor` (anything with
            ``predict(image, source).labels``, ``class_names`` and ``config.task``).
        classes: class names forming the region; empty = all but the background.
        mode: ``crop``, ``mask`` or ``both``.
        margin: fraction of the box's height/width added on each side when cropping.

    Raises:
        ConfigError: a class the segmentation run does not have.
    """

    def __init__(self, predictor, classes: Sequence[str] = (), mode: str = "crop", margin: float = 0.1):
        self.predictor = predictor
        self.mode = mode
        self.margin = margin
        self.empty = 0
        if predictor.config.task == "instance":
            if classes:
                raise ConfigError("classify.mask_classes: an instance run's region is all of its objects")
            self.ids = None
            return
        names = list(predictor.class_names)
        unknown = [name for name in classes if name not in names]
        if unknown:
            raise ConfigError(
                f"classify.mask_classes: {', '.join(unknown)} not among the classes of the mask run "
                f"({', '.join(names)})"
            )
        self.ids = [names.index(name) for name in classes] if classes else list(range(1, len(names)))

    @classmethod
    def for_run(
        cls, config: Config, run: Path | None = None, device: Any = "cpu"
    ) -> SegmentationGuide | None:
        """The guide of ``config`` (None without ``data.mask_with``), loaded from the classification run's
        own copy ``RUN/mask_run`` when there is one, else from ``data.mask_with``."""
        if not config.data.mask_with:
            return None
        from medseg.inference.predictor import Predictor

        source = (
            run / MASK_RUN if run is not None and (run / MASK_RUN).is_dir() else Path(config.data.mask_with)
        )
        predictor = Predictor.from_run(source, device=str(device))
        c = config.classify
        return cls(predictor, c.mask_classes, c.mask_mode, c.mask_margin)

    def region(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """``(H, W)`` bool: the pixels of the raw image predicted as one of the guide's classes."""
        labels = self.predictor.predict(image, source).labels
        return labels > 0 if self.ids is None else np.isin(labels, self.ids)

    def apply(
        self, normalised: np.ndarray, region: np.ndarray
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Crop and/or mask a normalised ``(C, H, W)`` image by ``region`` ``(H, W)``; returns the result
        and its box ``(top, left, height, width)`` in the image."""
        height, width = normalised.shape[-2:]
        if not region.any():
            self.empty += 1
            return normalised, (0, 0, height, width)
        if self.mode in ("mask", "both"):
            normalised = np.where(region, normalised, np.float32(0)).astype(np.float32)
        if self.mode == "mask":
            return normalised, (0, 0, height, width)
        rows = np.flatnonzero(region.any(axis=1)).tolist()
        cols = np.flatnonzero(region.any(axis=0)).tolist()
        pad_rows = round(self.margin * (rows[-1] - rows[0] + 1))
        pad_cols = round(self.margin * (cols[-1] - cols[0] + 1))
        top, bottom = max(0, rows[0] - pad_rows), min(height, rows[-1] + 1 + pad_rows)
        left, right = max(0, cols[0] - pad_cols), min(width, cols[-1] + 1 + pad_cols)
        return normalised[:, top:bottom, left:right], (top, left, bottom - top, right - left)


def copy_mask_run(source: str | Path, run: Path) -> Path:
    """Copy what a segmentation run needs to predict (config, best or last checkpoint, tuned thresholds)
    into ``RUN/mask_run``, so a guided classification run keeps working without the original folder."""
    import shutil

    from medseg.inference.predictor import find_checkpoint

    source = Path(source)
    if not (source / "config.yaml").is_file():
        raise RunError(f"data.mask_with: {source} is not a medseg run (no config.yaml)")
    checkpoint = find_checkpoint(source)
    target = run / MASK_RUN
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "config.yaml", target / "config.yaml")
    shutil.copyfile(checkpoint, target / "checkpoints" / "best.pt")
    if (source / "thresholds.json").is_file():
        shutil.copyfile(source / "thresholds.json", target / "thresholds.json")
    return target


class PreparedImages(Sequence):
    """The prepared images (:func:`prepare_image`) of image files, by index.

    Held in memory when all of them fit in ``cache_bytes``, else read and prepared again on each access
    (then a DataLoader's workers do the reading).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        config: Config,
        *,
        guide: SegmentationGuide | None = None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.paths = list(paths)
        self.config = config
        self.guide = guide
        side = config.classify.image_size
        self.cached: list[np.ndarray] | None = None
        if len(self.paths) * config.data.in_channels * side * side * 4 <= cache_bytes:
            self.cached = [self._load(i) for i in range(len(self.paths))]

    def _load(self, index: int) -> np.ndarray:
        path = self.paths[index]
        return prepare_image(read_image(path), self.config, str(path), self.guide)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # Sequence's signature: int -> (C, S, S) float32
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.cached[index] if self.cached is not None else self._load(index)


# ------------------------------------------------------------------------------------ training data


class ClassificationSamples:
    """Augmented training samples for ``torch.utils.data.DataLoader`` (map-style, NumPy only).

    Keys are ``(index, sample_seed)`` from :class:`~medseg.data.samples.EpochSampler` or
    :class:`BalancedSampler`, so every random draw comes from the sample's own seed.
    """

    def __init__(self, images: Sequence[np.ndarray], labels: np.ndarray, augment_config: AugmentConfig):
        if len(images) != len(labels) or not len(images):
            raise ValueError("ClassificationSamples needs one label per image, and at least one image")
        self.images = images
        self.labels = np.asarray(labels, np.int64)
        self.augment_config = augment_config

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.int64]:
        """``(index, seed)`` -> augmented image ``(C, S, S)`` float32 and its class id."""
        index, seed = key
        image, _ = augment(self.images[index], None, self.augment_config, np.random.default_rng(seed))
        return np.ascontiguousarray(image, dtype=np.float32), self.labels[index]


class BalancedSampler:
    """Yields ``samples_per_epoch`` keys ``(index, sample_seed)`` per epoch, each class equally likely.

    Images are drawn with replacement with probability ``1 / (classes present * images of its class)``,
    seeded by ``(seed, epoch)``; call :meth:`set_epoch` before iterating (the Trainer does).
    """

    def __init__(self, labels: Sequence[int], samples_per_epoch: int, seed: int) -> None:
        labels = np.asarray(labels, np.int64)
        counts = np.bincount(labels)
        present = int((counts > 0).sum())
        self.weights = 1.0 / (present * counts[labels])
        self.samples_per_epoch = samples_per_epoch or len(labels)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws to yield."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        order = rng.choice(len(self.weights), size=self.samples_per_epoch, p=self.weights)
        seeds = rng.integers(0, 2**63 - 1, size=self.samples_per_epoch)
        return iter(zip(order.tolist(), seeds.tolist()))


def class_weights(config: Config, train_labels: np.ndarray) -> list[float] | None:
    """Cross-entropy weights from ``classify.class_weights``: None (uniform), the given list, or for
    ``auto`` ``n / (k * n_c)`` over the k classes present in training (0 for an absent class)."""
    setting = config.classify.class_weights
    if setting == "none":
        return None
    if isinstance(setting, list):
        return [float(w) for w in setting]
    counts = np.bincount(train_labels, minlength=len(config.data.labels)).astype(np.float64)
    present = int((counts > 0).sum())
    return [float(len(train_labels) / (present * n)) if n else 0.0 for n in counts]


def item_name(path: Path, root: Path) -> str:
    """How an image is named in ``splits.json`` and CSVs: its path relative to the dataset, POSIX style."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ------------------------------------------------------------------------------------ training


def train_classifier(
    dataset: str | Path | None,
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    classes: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
) -> Path:
    """Train an image classifier and write the run folder (what ``medseg train --task classify`` does).

    Args:
        dataset: a class-per-folder dataset or a ``path,label[,group]`` CSV; with ``resume`` may be None
            to reuse the run's.
        config: the run config (on resume only ``overrides`` apply, on top of the saved config).
        out: run folder to create (or to resume).
        resume: continue from ``out/checkpoints/last.pt``.
        classes: class names in id order (default: the sorted names found).
        overrides: ``--set`` overrides (only used on resume).
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The run folder: ``config.yaml``, ``splits.json`` (image paths relative to the dataset),
        ``checkpoints/``, ``metrics.csv``, ``train_summary.json``.

    Raises:
        MedsegError: bad dataset, config or run folder (one line naming the problem).
    """
    from medseg.engine.device import pick_device, seed_everything, use_bf16
    from medseg.workflows.train import _resume_config, resume_trainer, write_train_summary

    run = Path(out)
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
            raise DataError("train: a DATASET folder or CSV is required")
        config = copy.deepcopy(config)
        config.data.path = str(Path(dataset).resolve())
    config.task = "classify"
    data = open_classification_dataset(config.data.path, classes=classes or config.data.class_names or None)
    _fill_classify_config(config, data)
    config.validate()
    splits = _load_or_make_split(run, data, config, resume)
    index = {item_name(item.path, data.root): i for i, item in enumerate(data.items)}
    train_items = [data.items[index[name]] for name in splits["train"]]
    val_items = [data.items[index[name]] for name in splits["val"]]
    if not config.data.in_channels:
        first = read_image(train_items[0].path)
        channels = 1 if first.ndim == 2 else first.shape[-1]
        config.data.in_channels = 3 if channels == 4 else channels
    train_labels = np.array([item.label for item in train_items], np.int64)
    missing = [n for i, n in enumerate(config.data.class_names) if not (train_labels == i).any()]
    if missing:
        print(f"warning: no training images of class {', '.join(missing)}", file=sys.stderr)
    device = pick_device(device)
    guide = None
    if config.data.mask_with:
        from medseg.engine.distributed import current_context

        job = current_context()  # under torchrun rank 0 decides and copies, the others wait
        if job.broadcast(not (run / MASK_RUN).is_dir()):
            config.data.mask_with = str(Path(config.data.mask_with).resolve())
            if job.is_main:
                copy_mask_run(config.data.mask_with, run)
            job.barrier()
        guide = SegmentationGuide.for_run(config, run, device)
    train_images = PreparedImages([item.path for item in train_items], config, guide=guide)
    val_images = PreparedImages([item.path for item in val_items], config, guide=guide)
    val_labels = np.array([item.label for item in val_items], np.int64)
    if guide is not None and guide.empty:
        print(
            f"warning: {config.data.mask_with} predicts no region in {guide.empty} of "
            f"{len(train_images) + len(val_images)} images; they are classified whole",
            file=sys.stderr,
        )
    seed_everything(config.train.seed)
    trainer = _build_classifier_trainer(
        config, run, device, train_images, train_labels, val_images, val_labels, pretrained=not resume
    )
    if resume and not resume_trainer(trainer, run, config):
        return run
    from medseg.config import save_config

    save_config(config, run / "config.yaml")
    amp = "bf16" if use_bf16(config.train.amp, device) else "off"
    print(
        f"training classifier {config.model.name} on {len(train_images)} images (val {len(val_images)}), "
        f"{len(config.data.labels)} classes, {config.train.epochs} epochs, device {device.type}, amp {amp}",
        file=sys.stderr,
    )
    trainer.fit()
    counts = {name: int((train_labels == i).sum()) for i, name in enumerate(config.data.class_names)}
    write_train_summary(
        run, trainer, device, amp, len(train_images), len(val_images), train_class_counts=counts
    )
    return run


def _fill_classify_config(config: Config, data: ClassificationDataset) -> None:
    labels = {name: i for i, name in enumerate(data.class_names)}
    if config.data.labels and config.data.labels != labels:
        raise DataError(f"{data.source}: classes {labels} differ from the run's {config.data.labels}")
    if len(labels) < 2:
        raise DataError(f"{data.source}: a classifier needs at least two classes, found {data.class_names}")
    if not data.items:
        raise DataError(f"{data.source}: no images to train on")
    config.data.labels = labels


def _load_or_make_split(
    run: Path, data: ClassificationDataset, config: Config, resume: bool
) -> dict[str, list[str]]:
    path = run / "splits.json"
    names = [item_name(item.path, data.root) for item in data.items]
    if resume and path.is_file():
        splits = json.loads(path.read_text())
        missing = sorted(set(splits["train"] + splits["val"]) - set(names))
        if missing:
            raise DataError(f"{data.source}: images of the saved split are missing: {', '.join(missing[:5])}")
        return splits
    d = config.data
    # groups as ClassificationDataset.split forms them: group_by on the file stem, else the item's group
    groups = {
        name: group_of(item.path.stem, d.group_by) if d.group_by else item.group
        for name, item in zip(names, data.items)
    }
    splits = split_cases(
        names,
        kind=d.split,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        folds=d.folds,
        fold=d.fold,
        groups=groups,
    )
    splits["group_by"] = d.group_by
    if not splits["train"]:
        raise DataError(f"{data.source}: no images left for training after the validation split")
    run.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, splits)
    return splits


def build_classifier(config: Config, *, pretrained: bool = True):
    """The classifier a run's config describes (``model.*`` and ``classify.*``).

    Raises:
        ConfigError: ``model.name`` is not a classifier, or ``classify.image_size`` does not fit it.
    """
    import torch

    from medseg.models.classifiers import create_classifier, list_classifiers

    c = config.classify
    if config.model.name not in list_classifiers():
        raise ConfigError(
            f"model.name: {config.model.name!r} is not a classifier; --task classify needs one of "
            f"{', '.join(list_classifiers())} (e.g. --model simple_cnn)"
        )
    model = create_classifier(
        config.model.name,
        in_channels=config.data.in_channels,
        num_classes=len(config.data.labels),
        transfer=c.transfer,
        unfreeze_blocks=None if c.unfreeze_blocks < 0 else c.unfreeze_blocks,
        pretrained=config.model.pretrained if pretrained else None,
        head_hidden=c.head_hidden or None,
        **config.model.params,
    )
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, config.data.in_channels, c.image_size, c.image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"classify.image_size: {c.image_size} px inputs do not fit {config.model.name} ({reason})"
        ) from None
    return model


def _build_classifier_trainer(
    config: Config, run: Path, device, train_images, train_labels, val_images, val_labels, *, pretrained
):
    import torch

    from medseg.data.samples import EpochSampler
    from medseg.workflows.train import _param_groups, assemble_trainer

    t = config.train
    model = build_classifier(config, pretrained=pretrained)
    samples = config.data.samples_per_epoch or len(train_images)
    if config.classify.balanced_sampling:
        sampler = BalancedSampler(train_labels, samples, t.seed)
    else:
        sampler = EpochSampler(len(train_images), samples, t.seed)
    groups = []
    for group in _param_groups(model, t.lr, config.model.encoder_lr_ratio):
        trainable = [p for p in group["params"] if p.requires_grad]  # frozen blocks stay out
        if trainable:
            groups.append({**group, "params": trainable})
    weights = class_weights(config, train_labels)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32),
        label_smoothing=config.classify.label_smoothing,
    ).to(device)
    validate = None
    if len(val_images):
        validate = ClassificationValidation(config, val_images, val_labels, loss_fn)
    return assemble_trainer(
        config,
        run,
        model,
        groups,
        ClassificationSamples(train_images, train_labels, config.augment),
        sampler,
        loss_fn,
        validate,
        device,
        progress_keys=("val_loss", "val_balanced_accuracy"),
    )


def batched_logits(model, images: Sequence[np.ndarray], device, bf16: bool, batch_size: int = EVAL_BATCH):
    """Logits ``(N, K)`` float32 tensor (on the CPU) of prepared images ``(C, S, S)``, in batches."""
    import torch

    from medseg.engine.device import autocast

    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[start : start + batch_size])).to(device)
        with autocast(torch.device(device), bf16):
            out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


class ClassificationValidation:
    """Validation of a classifier: loss and accuracy, balanced accuracy and macro F1 of the argmax.

    Returns logs ``val_loss``, ``val_accuracy``, ``val_balanced_accuracy``, ``val_macro_f1``.
    """

    def __init__(self, config: Config, images: Sequence[np.ndarray], labels: np.ndarray, loss_fn) -> None:
        self.config = config
        self.images = images
        self.labels = np.asarray(labels, np.int64)
        self.loss_fn = loss_fn

    def __call__(self, trainer) -> dict[str, float]:
        import torch

        from medseg.metrics.classification import classification_metrics

        logits = batched_logits(trainer.model, self.images, trainer.device, trainer.bf16)
        loss = self.loss_fn(logits.to(trainer.device), torch.from_numpy(self.labels).to(trainer.device))
        probabilities = torch.softmax(logits, dim=1).double().numpy()
        m = classification_metrics(self.labels, probabilities, self.config.data.class_names)
        return {
            "val_loss": float(loss),
            "val_accuracy": m["accuracy"],
            "val_balanced_accuracy": m["balanced_accuracy"],
            "val_macro_f1": m["macro_f1"],
        }


# ------------------------------------------------------------------------------------ prediction


@dataclass
class ClassPrediction:
    """A classifier's answer for one image.

    Attributes:
        index: predicted class id (argmax; the lowest id wins a tie).
        name: predicted class name.
        probabilities: ``(K,)`` float64 softmax probabilities in class id order.
    """

    index: int
    name: str
    probabilities: np.ndarray

    @property
    def confidence(self) -> float:
        """The predicted class's probability."""
        return float(self.probabilities[self.index])


class ClassificationPredictor:
    """Classify images with a trained model and the preprocessing recorded in its config.

    Args:
        model: a :class:`~medseg.models.classifiers.Classifier` (put in eval mode here).
        config: the run's resolved config (``task: classify``).
        device: where to run.
    """

    def __init__(
        self, model, config: Config, device: Any = "cpu", *, guide: SegmentationGuide | None = None
    ) -> None:
        import torch

        from medseg.engine.device import use_bf16

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.bf16 = use_bf16(config.train.amp, self.device)
        self.guide = guide

    @classmethod
    def from_run(
        cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto", overrides=None
    ) -> ClassificationPredictor:
        """Load a classification run folder (``config.yaml`` + ``checkpoints/best.pt``, else ``last.pt``).

        Raises:
            RunError: not a run, not a classification run, or no usable checkpoint.
        """
        from medseg.engine.checkpoint import load_checkpoint
        from medseg.engine.device import pick_device
        from medseg.inference.predictor import find_checkpoint, load_run_config

        run = Path(run_dir)
        config = load_run_config(run, list(overrides or []))
        if config.task != "classify":
            raise RunError(f"{run}: a {config.task or 'semantic'} run, not a classification run")
        path = find_checkpoint(run, checkpoint)
        model = build_classifier(config, pretrained=False)
        try:
            model.load_state_dict(load_checkpoint(path)["model"])
        except (RuntimeError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0][:160]
            raise RunError(f"{path}: does not fit the run's classifier: {reason}") from None
        device = pick_device(device)
        return cls(model, config, device, guide=SegmentationGuide.for_run(config, run, device))

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return self.config.data.class_names

    def preprocess(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Raw ``(H, W)`` or ``(H, W, C)`` image -> ``(C, S, S)`` float32 network input."""
        return prepare_image(image, self.config, source, self.guide)

    def probabilities(self, images: Sequence[np.ndarray], *, tta: bool | None = None) -> np.ndarray:
        """Softmax probabilities ``(N, K)`` float64 of prepared images ``(C, S, S)``.

        With ``tta`` (default ``inference.tta``) they are averaged over the 8 flips and 90 degree
        rotations of each image.
        """
        import torch

        tta = self.config.inference.tta if tta is None else tta
        batch = max(1, self.config.inference.batch_size * 8)
        views = [lambda x: x]
        if tta:
            views = [
                lambda x, k=k, f=f: np.rot90(x[..., ::-1] if f else x, k, axes=(-2, -1)).copy()
                for f in (False, True)
                for k in range(4)
            ]
        total = None
        with torch.inference_mode():
            for view in views:
                logits = batched_logits(self.model, [view(x) for x in images], self.device, self.bf16, batch)
                probs = torch.softmax(logits, dim=1).double().numpy()
                total = probs if total is None else total + probs
        return total / len(views)

    def predict(self, image: np.ndarray, source: str = "image") -> ClassPrediction:
        """Classify one raw image ``(H, W)`` or ``(H, W, C)``."""
        probabilities = self.probabilities([self.preprocess(image, source)])[0]
        index = int(probabilities.argmax())
        return ClassPrediction(index, self.class_names[index], probabilities)


def prediction_row(name: str, probabilities: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """One CSV row: ``file, class, probability`` and ``p_<class>`` for every class."""
    index = int(np.argmax(probabilities))
    row: dict[str, Any] = {
        "file": name,
        "class": class_names[index],
        "probability": round(float(probabilities[index]), 6),
    }
    row.update({f"p_{c}": round(float(p), 6) for c, p in zip(class_names, probabilities, strict=True)})
    return row


def predict_classifier(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    device: str = "auto",
    overrides: Sequence[str] = (),
    explain: bool = False,
    method: str = "gradcam",
) -> Path:
    """Classify image files or folders and write ``out/predictions.csv``.

    Columns: ``file``, ``class`` (predicted), ``probability`` (of that class) and ``p_<class>`` for every
    class. With ``explain``, a Grad-CAM overlay for the predicted class of each image goes to
    ``out/heatmaps/<stem>.png`` (column ``heatmap``). An unreadable file is reported after the others are
    written. Under torchrun each process classifies every N-th file and rank 0 writes the CSV.

    Raises:
        DataError: unreadable inputs (after writing everything else), or no inputs.
    """
    from medseg.engine.distributed import distributed_session

    with distributed_session(device) as job:
        return _predict_classifier(run_dir, inputs, Path(out), job, device, overrides, explain, method)


def _predict_classifier(run_dir, inputs, out: Path, job, device, overrides, explain, method) -> Path:
    from tqdm.auto import tqdm

    from medseg.io import write_image
    from medseg.workflows.predict import _unique_stems, collect_inputs

    files = collect_inputs(inputs)
    predictor = ClassificationPredictor.from_run(run_dir, device=device, overrides=overrides)
    names = predictor.class_names
    rows, problems = [], []
    mine = job.shard(list(zip(files, _unique_stems(files))))
    bar = tqdm(mine, desc="predict", unit="image", disable=None if job.is_main else True, leave=False)
    for index, (path, stem) in bar:
        try:
            image = read_image(path)
            prepared = predictor.preprocess(image, str(path))
        except DataError as exc:
            problems.append((index, str(exc)))
            continue
        probabilities = predictor.probabilities([prepared])[0]
        row = prediction_row(str(path), probabilities, names)
        if explain:
            from medseg.workflows.explain import classification_heatmap

            # explain the class reported in predictions.csv (with TTA it can differ from a plain pass's)
            predicted = names[int(np.argmax(probabilities))]
            heat = classification_heatmap(predictor, image, str(path), class_name=predicted, method=method)
            write_image(out / "heatmaps" / f"{stem}.png", heat.overlay)
            row["heatmap"] = f"heatmaps/{stem}.png"
        rows.append((index, row))
    return write_sharded_rows(job, rows, problems, out / "predictions.csv")


def write_sharded_rows(job, rows: list, problems: list, path: Path) -> Path:
    """Gather every rank's ``(index, row)`` pairs and ``(index, problem)`` lines; rank 0 writes the rows as
    the CSV ``path``, then the first problem (if any) is raised on every rank.

    Raises:
        DataError: some input could not be read (after the others were written).
    """
    rows, problems = job.merge(rows), job.merge(problems)
    if rows and job.is_main:
        write_csv_atomic(path, rows)
    if problems:
        job.barrier()  # the CSV is written before any rank reports the problem
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; {len(rows)} other image(s) were written to {path.parent}")
    return path


# ------------------------------------------------------------------------------------ evaluation


def evaluate_classifier(
    run_dir: str | Path, dataset: str | Path | None = None, *, split: str = "auto", device: str = "auto"
) -> dict[str, Any]:
    """Classify every image of a labelled classification set and score it; writes ``RUN/eval/``.

    Args:
        run_dir: a classification run.
        dataset: a class-per-folder set or CSV; default the run's training dataset.
        split: ``val`` (the run's validation images), ``all``, or ``auto``: ``val`` on the training
            dataset, else ``all``.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        The summary written to ``eval/metrics.json``: ``{"task": "classify", "dataset", "split",
        "num_images", **classification_metrics(...)}``; ``eval/per_image.csv`` holds each image's true and
        predicted class and probabilities.
    """
    from medseg.metrics.classification import classification_metrics
    from medseg.workflows.evaluate import _read_splits

    run = Path(run_dir)
    predictor = ClassificationPredictor.from_run(run, device=device)
    config = predictor.config
    data_path = Path(dataset) if dataset is not None else Path(config.data.path)
    data = open_classification_dataset(data_path, classes=predictor.class_names)
    same_dataset = data_path.resolve() == Path(config.data.path).resolve()
    if split == "auto":
        split = "val" if same_dataset else "all"
    items = list(data.items)
    if split == "val":
        if not same_dataset:
            raise DataError(f"{data_path}: --split val only applies to the dataset the run was trained on")
        val = set(_read_splits(run)["val"])
        if not val:
            raise RunError(f"{run}: trained without validation images; use --split all or another dataset")
        items = [item for item in items if item_name(item.path, data.root) in val]
    if not items:
        raise DataError(f"{data_path}: no labelled images to evaluate (split {split})")
    images = PreparedImages([item.path for item in items], config, guide=predictor.guide)
    probabilities = np.concatenate(
        [
            predictor.probabilities(images[start : start + EVAL_BATCH * 8])
            for start in range(0, len(images), EVAL_BATCH * 8)
        ]
    )
    truth = np.array([item.label for item in items], np.int64)
    names = predictor.class_names
    metrics = classification_metrics(truth, probabilities, names)
    summary = {
        "task": "classify",
        "dataset": str(data_path.resolve()),
        "split": split,
        "num_images": len(items),
        **metrics,
    }
    rows = []
    for item, probs in zip(items, probabilities, strict=True):
        row = prediction_row(item_name(item.path, data.root), probs, names)
        predicted = row.pop("class")
        rows.append(
            {
                "file": row.pop("file"),
                "true": names[item.label],
                "predicted": predicted,
                "correct": int(predicted == names[item.label]),
                **row,
            }
        )
    eval_dir = run / "eval"
    write_json_atomic(eval_dir / "metrics.json", summary)
    write_csv_atomic(eval_dir / "per_image.csv", rows)
    return summary
