"""``medseg predict``: segment image files or folders with a trained run."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.data.regions import Regions
from medseg.errors import DataError
from medseg.io import atomic_path, is_image_file, write_csv_atomic, write_image
from medseg.io.lazy import open_image_lazily

if TYPE_CHECKING:
    from medseg.inference.predictor import Predictor

# Images with more pixels than this (4096², where Predictor.predict stops keeping probabilities) get their
# class ids written straight into the mask's own uint8/uint16 array (a memory-mapped file for TIFF masks),
# never an int32 copy. Overlays are drawn at most OVERLAY_MAX_SIDE pixels per side, every k-th pixel of
# larger images: a 20,000² RGB overlay would be 1.2 GB, and color_overlay's float64 blend of a 4096²
# overlay alone peaks above 1 GB
LARGE_IMAGE_PIXELS = 4096 * 4096
OVERLAY_MAX_SIDE = 2048
_COUNT_ROWS = 1024  # rows counted at a time: bincount's intp copy of a huge mask would be 8 bytes/pixel


@dataclass(frozen=True)
class ClassCount:
    """How much of one image a class covers.

    Attributes:
        id: class id (the value in the label mask).
        name: class name from the run's config.
        color: ``(r, g, b)`` display colour of the class.
        pixels: number of pixels predicted as this class.
        fraction: ``pixels`` / pixels in the image, 0..1.
    """

    id: int
    name: str
    color: tuple[int, int, int]
    pixels: int
    fraction: float


@dataclass
class Segmentation:
    """Everything ``medseg predict`` and the web app show for one image.

    Attributes:
        labels: ``(H, W)`` int32 class ids (instance runs: instance ids), the input's size.
        overlay: ``(H, W, 3)`` uint8 RGB, the classes' colours blended over the image (instance runs: each
            object filled and outlined, in its type's colour when typed). Semantic images with a side
            above :data:`OVERLAY_MAX_SIDE` get a downsampled overlay: every k-th row and column, with the
            smallest k that fits.
        classes: one :class:`ClassCount` per class, in id order (background included); instance runs: per
            type (untyped: one ``objects`` class), counting the pixels of its objects.
        instances: whether ``labels`` are instance ids.
        objects: instance runs: one row per object (:func:`medseg.postprocess.objects.object_table`).
        counts: instance runs: objects per type with differential percentages
            (:func:`medseg.postprocess.objects.count_objects`).
        regions: region runs (overlapping classes): ``labels`` are mask values, and each class's pixels
            count every pixel in that region, so fractions can sum to more than 1.
    """

    labels: np.ndarray
    overlay: np.ndarray
    classes: list[ClassCount]
    instances: bool = False
    objects: list[dict] = field(default_factory=list)
    counts: list[dict] = field(default_factory=list)
    regions: Regions | None = None

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` label mask as stored on disk: class ids as uint8 (uint16 with 256 classes or more),
        region runs' mask values as predicted; instance ids as uint16, or int32 beyond 65,535 objects."""
        if self.instances:
            return self.labels.astype(np.uint16 if self.labels.max(initial=0) < 2**16 else np.int32)
        if self.regions is not None:  # mask values, up to the largest a region holds
            return self.labels.astype(self.regions.dtype, copy=False)
        return self.labels.astype(mask_dtype(len(self.classes)), copy=False)


def mask_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """Smallest dtype of a semantic mask file: uint8, or uint16 with 256 classes or more."""
    return np.uint8 if num_classes < 256 else np.uint16


def segment_image(
    predictor: Predictor, image: np.ndarray, source: str = "image", *, labels_out: np.ndarray | None = None
) -> Segmentation:
    """Segment one image: class ids, the colour overlay and per-class pixel counts.

    The one per-image step of ``medseg predict`` and of the web app, so both give identical masks.

    Args:
        predictor: a loaded run (anything with ``predict(image, source)`` and ``config``).
        image: ``(H, W)`` or ``(H, W, C)`` raw image, any dtype (as :func:`medseg.io.read_image` returns,
            or a memory map from :func:`medseg.io.lazy.open_image_lazily`).
        source: name used in error messages.
        labels_out: semantic runs: ``(H, W)`` integer array that receives the class ids and becomes
            ``labels`` (see :meth:`~medseg.inference.predictor.Predictor.predict`).

    Raises:
        DataError: the image's channels do not fit the model.
    """
    from medseg.report import class_colors, color_overlay, display_channels

    if predictor.config.task == "instance":
        return _segment_instances(predictor, image, source)
    data = predictor.config.data
    names = data.class_names
    colors = class_colors(data.labels, data.colors)
    if labels_out is None:
        labels = predictor.predict(image, source).labels
    else:
        labels = predictor.predict(image, source, labels_out=labels_out).labels
    regions = Regions.from_mapping(data.regions) if data.regions else None
    if regions is not None:  # a pixel in two regions counts for both
        counts = regions.counts(labels, rows=_COUNT_ROWS)
    else:
        counts = np.zeros(len(names), np.int64)
        for top in range(0, labels.shape[0], _COUNT_ROWS):
            counts += np.bincount(labels[top : top + _COUNT_ROWS].ravel(), minlength=len(names))[: len(names)]
    classes = [
        ClassCount(i, name, colors[i], pixels=int(counts[i]), fraction=float(counts[i] / labels.size))
        for i, name in enumerate(names)
    ]
    step = -(-max(labels.shape) // OVERLAY_MAX_SIDE)
    shown = display_channels(image[::step, ::step], int(data.slicing.get("context", 0)))
    overlay = color_overlay(shown, labels[::step, ::step], colors, regions=regions)
    return Segmentation(labels=labels, overlay=overlay, classes=classes, regions=regions)


def type_colors(names: Sequence[str], colors: dict | None = None) -> list[tuple[int, int, int]]:
    """Display colours of instance types, index 0 = background: a configured colour by name, else the
    palette."""
    from medseg.report import class_colors

    return class_colors({"background": 0, **{n: i + 1 for i, n in enumerate(names)}}, colors or {})


def _segment_instances(predictor: Predictor, image: np.ndarray, source: str) -> Segmentation:
    from medseg.postprocess.objects import count_objects, object_table
    from medseg.report import instance_overlay

    inst = predictor.config.instance
    prediction = predictor.predict(image, source)
    instances = prediction.labels
    names = list(inst.classes) or ["objects"]
    palette = type_colors(names, predictor.config.data.colors)
    index = {name: i + 1 for i, name in enumerate(names)}
    by_id = {i: palette[index[t]] for i, t in prediction.types.items()} if inst.classes else None
    objects = object_table(instances, image, prediction.types)
    type_of = np.zeros(int(instances.max(initial=0)) + 1, np.int64)
    for row in objects:
        type_of[row["label"]] = index.get(row["class"] or "objects", 0)
    pixels = np.bincount(type_of[instances].ravel(), minlength=len(names) + 1)
    classes = [
        ClassCount(i, name, palette[i], int(pixels[i]), float(pixels[i] / instances.size))
        for i, name in enumerate(["background", *names])
    ]
    counts = count_objects([row["class"] for row in objects], inst.classes, inst.differential)
    return Segmentation(
        labels=instances,
        overlay=instance_overlay(image, instances, colors=by_id),
        classes=classes,
        instances=True,
        objects=objects,
        counts=counts,
    )


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (their image, NIfTI and DICOM files, not recursive) into a sorted,
    de-duplicated list. A folder that holds only DICOM files is a series: one input, read as a volume.

    Raises:
        DataError: an input does not exist, or nothing to predict was found.
    """
    from medseg.io.dicom import is_dicom_file, is_dicom_series
    from medseg.io.nifti import is_nifti_file

    files: list[Path] = []
    for item in map(Path, inputs):
        if is_dicom_series(item):
            files.append(item)
        elif item.is_dir():
            found = sorted(
                p
                for p in item.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and (is_image_file(p) or is_nifti_file(p) or is_dicom_file(p))
            )
            if not found:
                raise DataError(f"{item}: folder holds no image files")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise DataError("predict: no input images")
    return unique


def predict(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    mask_format: str | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
    backend: str = "torch",
) -> Path:
    """Segment images and write ``masks/``, ``overlays/`` and ``summary.csv`` under ``out``.

    Masks have the input's size and hold class ids (PNG, or TIFF with ``mask_format="tif"``); overlays
    show the classes in the run's colours; ``summary.csv`` has each file's size and per-class pixel
    fractions. Instance runs write instance-id masks (TIFF by default), overlays with every object
    outlined, ``objects.csv`` (one row per object: image, label, class, area, centroid, mean intensity,
    eccentricity) and ``counts.csv`` (per image and class: count, and the percentage among the run's
    ``instance.differential`` types, e.g. a differential white-cell count). A file that cannot be read
    is reported and skipped; the others are still written.

    Large images: uncompressed TIFF/OME-TIFF inputs are memory-mapped, not read
    (:func:`medseg.io.lazy.open_image_lazily`), and predicted tile by tile. A semantic image above
    :data:`LARGE_IMAGE_PIXELS` has its class ids written straight into a uint8 mask (with ``tif``: an
    uncompressed, memory-mapped TIFF filled band by band) and gets an overlay downsampled to at most
    :data:`OVERLAY_MAX_SIDE` pixels a side. A 20,000² RGB slide so needs about 1.1 GB of memory of its
    own; the mapped slide and mask pages it touches are page cache the kernel can drop (see
    ``benchmarks/large_slide.py``).

    Volumes (``.nii``/``.nii.gz`` files, folders of one DICOM series) given to a run trained on sliced
    volumes (``medseg data import msd|nnunet``) are cut, predicted and stacked as the training slices
    were (:func:`medseg.workflows.volume.predict_volume`): ``masks/NAME_seg.nii.gz`` with the input's
    affine, a row in ``summary.csv`` and one in ``volumes.csv`` (per-class voxels and millilitres).
    Single DICOM files are read with their rescale slope/intercept; for such a run they are also
    windowed as its training slices were.

    Under ``torchrun --nproc_per_node N -m medseg predict ...`` each process predicts every N-th file
    and writes its masks and overlays; rank 0 writes the CSVs, identical to a single process's.

    Args:
        run_dir: the run folder.
        inputs: image files or folders.
        out: output folder.
        mask_format: ``png`` or ``tif``; None = png (semantic) or tif (instance).
        device: ``auto``, ``cpu`` or ``cuda``.
        overrides: ``--set`` changes to the run's inference settings, e.g. ``inference.tta=true``.
        backend: ``torch``, or ``onnxruntime`` to run ``RUN/export`` (written by ``medseg export RUN``).

    Returns:
        The path of ``summary.csv``.

    Raises:
        DataError: unreadable inputs (after writing everything else), or no inputs.
    """
    from medseg.engine.distributed import distributed_session

    # onnxruntime predicts on the CPU: no GPU (and no NCCL) for its process group either
    with distributed_session("cpu" if backend == "onnxruntime" and device == "auto" else device) as job:
        return _predict(run_dir, inputs, Path(out), job, mask_format, device, overrides, backend)


def _predict(run_dir, inputs, out: Path, job, mask_format, device, overrides, backend) -> Path:
    """:func:`predict` within a (possibly distributed) session: this rank's every N-th file, then rank 0
    writes the combined CSVs from every rank's rows, in input order."""
    from medseg.workflows.classify import is_classification_run, predict_classifier

    if is_classification_run(run_dir):  # predictions.csv instead of masks
        if backend != "torch":
            raise DataError(f"--backend {backend}: classification runs predict with torch only")
        return predict_classifier(run_dir, inputs, out, device=device, overrides=overrides)
    from tqdm.auto import tqdm

    from medseg.inference.predictor import Predictor
    from medseg.workflows.volume import is_volume_input, predict_volume

    if mask_format not in (None, "png", "tif"):
        raise DataError(f"--format: {mask_format!r} is not png or tif")
    files = collect_inputs(inputs)
    # "auto"/"cuda" is this process's GPU under torchrun: the session made it the current device
    predictor = Predictor.from_run(run_dir, device=device, overrides=list(overrides), backend=backend)
    instance = predictor.config.task == "instance"
    mask_format = mask_format or ("tif" if instance else "png")
    mine = job.shard(list(zip(files, _unique_stems(files))))
    done, failed = [], []  # (file index, what one process would have appended)
    bar = tqdm(mine, desc="predict", unit="image", disable=None if job.is_main else True, leave=False)
    settings = _LazySliceSettings(predictor)
    for index, (path, stem) in bar:
        try:
            if is_volume_input(path):
                volume = predict_volume(predictor, path, out, stem=stem, settings=settings.get())
                mask = f"masks/{volume.mask_path.name}"
                row = {"file": str(path), "mask": mask, "height": None, "width": None}  # see volumes.csv
                row.update({f"fraction_{c.name}": c.fraction for c in volume.classes})
                done.append((index, (row, [], [], volume.row(path, mask))))
                continue
            image = _read_input(path, settings)
            mask_path = out / "masks" / f"{stem}.{mask_format}"
            if not instance and image.shape[0] * image.shape[1] > LARGE_IMAGE_PIXELS:
                result = _segment_large(predictor, image, str(path), mask_path)
            else:
                result = segment_image(predictor, image, str(path))
                write_image(mask_path, result.mask)
        except DataError as exc:
            failed.append((index, str(exc)))
            continue
        write_image(out / "overlays" / f"{stem}.png", result.overlay)
        row = {
            "file": str(path),
            "mask": f"masks/{stem}.{mask_format}",
            "height": result.labels.shape[0],
            "width": result.labels.shape[1],
        }
        objects, counts = [], []
        if instance:
            row["objects"] = len(result.objects)
            objects = [{"image": stem, **o} for o in result.objects]
            counts = [{"image": stem, **c} for c in result.counts]
        row.update({f"fraction_{c.name}": c.fraction for c in result.classes})
        done.append((index, (row, objects, counts, None)))
    done, problems = job.merge(done), job.merge(failed)
    rows = [row for row, _, _, _ in done]
    summary = out / "summary.csv"
    if job.is_main and rows:
        write_csv_atomic(summary, rows)
        volume_rows = [volume for _, _, _, volume in done if volume is not None]
        if volume_rows:
            write_csv_atomic(out / "volumes.csv", volume_rows)
        if instance:
            from medseg.postprocess.objects import OBJECT_COLUMNS

            objects = [o for _, image_objects, _, _ in done for o in image_objects]
            write_csv_atomic(out / "objects.csv", objects, fieldnames=["image", *OBJECT_COLUMNS])
            write_csv_atomic(out / "counts.csv", [c for _, _, image_counts, _ in done for c in image_counts])
    if problems:
        job.barrier()  # the CSVs above are written before any rank reports the problem
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; {len(rows)} other image(s) were written to {out}")
    return summary


class _LazySliceSettings:
    """The run's volume slicing, looked up on first use (only volumes and DICOM files need it)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.value = None
        self.error: DataError | None = None

    def get(self):
        """:func:`medseg.workflows.volume.slice_settings` of the run (the same error every time)."""
        from medseg.workflows.volume import slice_settings

        if self.value is None and self.error is None:
            try:
                self.value = slice_settings(self.predictor.config)
            except DataError as exc:
                self.error = exc
        if self.error is not None:
            raise DataError(str(self.error))
        return self.value

    def get_optional(self):
        """The settings, or None when the run was not trained on sliced volumes."""
        try:
            return self.get()
        except DataError:
            return None


def _segment_large(predictor: Predictor, image: np.ndarray, source: str, mask_path: Path) -> Segmentation:
    """:func:`segment_image` for an image above :data:`LARGE_IMAGE_PIXELS`, writing its mask as it goes.

    The class ids go straight into the mask's dtype: a TIFF mask is a memory-mapped, uncompressed file
    filled band by band (so not even the uint8 mask is held in memory), a PNG mask one uint8/uint16
    array that is then encoded.
    """
    data = predictor.config.data
    dtype = Regions.from_mapping(data.regions).dtype if data.regions else mask_dtype(len(data.class_names))
    shape = image.shape[:2]
    if mask_path.suffix.lower() != ".tif":
        result = segment_image(predictor, image, source, labels_out=np.empty(shape, dtype))
        write_image(mask_path, result.mask)
        return result
    import tifffile

    with atomic_path(mask_path) as tmp:
        labels = tifffile.memmap(
            tmp, shape=shape, dtype=dtype, photometric="minisblack", metadata={"axes": "YX"}
        )
        result = segment_image(predictor, image, source, labels_out=labels)
        labels.flush()
    return result


def _read_input(path: Path, settings: _LazySliceSettings) -> np.ndarray:
    """A 2D input file as ``segment_image`` takes it (an uncompressed TIFF memory-mapped, not read: see
    :func:`medseg.io.lazy.open_image_lazily`); a DICOM file with its rescale applied and, for a run
    trained on sliced volumes, the training window and context channels."""
    from medseg.io.dicom import is_dicom_file, read_dicom

    if not is_dicom_file(path):
        return open_image_lazily(path)
    image = read_dicom(path)
    sliced = settings.get_optional() if image.ndim == 2 else None
    if sliced is None:
        return image
    from medseg.workflows.volume import prepare_dicom_image

    return prepare_dicom_image(image, sliced)


def _unique_stems(files: Sequence[Path]) -> list[str]:
    from medseg.workflows.volume import volume_name

    seen: dict[str, int] = {}
    stems = []
    for path in files:
        # nnU-Net names channel files CASE_0000.png (volumes CASE_0000.nii.gz); predictions are named CASE
        stem = re.sub(r"_0000$", "", volume_name(path))
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems
