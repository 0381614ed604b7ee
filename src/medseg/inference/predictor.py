"""Predict with a trained run: the same normalisation as training, padding to the model's divisor.

``Predictor.from_run(RUN)`` rebuilds the model from ``RUN/config.yaml`` and ``RUN/checkpoints/best.pt``
(or ``last.pt``); the run folder needs nothing else. Images larger than ``inference.tile`` are predicted
in overlapping tiles blended with a gaussian (:mod:`medseg.inference.sliding_window`); ``inference.tta``
averages over flips and rotations. Both can be changed per call of :meth:`Predictor.predict`.
Tiled prediction normalises each tile as it is cut and, for semantic runs, reduces the blended probabilities
to class ids band by band, so its memory grows with the tile batch and the image width, not the image area
(see :meth:`Predictor.predict`).
``backend="onnxruntime"`` runs the run's ONNX export (``medseg export RUN``) instead of the torch module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medseg.config import Config, apply_overrides, from_dict, read_yaml
from medseg.data.regions import Regions
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.device import autocast, pick_device, use_bf16
from medseg.errors import ConfigError, DataError, RunError
from medseg.inference.sliding_window import TilePredictor, sliding_window, sliding_window_bands, with_flip_tta
from medseg.models.heads import HeadLayout
from medseg.transforms import normalize
from medseg.transforms.normalize import NormalizedImage, normalize_lazily

BACKENDS = ("torch", "onnxruntime")
# semantic predictions keep their (K, H, W) probabilities up to this many pixels unless asked (4096², i.e.
# 256 MiB for 4 classes); larger tiled images return class ids only, computed band by band
FULL_PROBABILITIES_MAX_PIXELS = 4096 * 4096


@dataclass
class Prediction:
    """Result for one image.

    Attributes:
        labels: ``(H, W)`` int32 class ids (semantic), mask values (a region run: uint8/uint16, see
            :mod:`medseg.data.regions`) or instance ids (instance task, 0 = background).
        probabilities: ``(K, H, W)`` float32 softmax probabilities (semantic), ``(R, H, W)`` sigmoid
            probabilities (a region run), or the activated head maps
            (instance: see :class:`~medseg.models.heads.HeadLayout`); None for a semantic prediction made
            without them (see :meth:`Predictor.predict`'s ``probabilities``).
        types: instance task with typed instances: instance id -> type name; otherwise empty.
        type_probabilities: instance id -> ``(K,)`` mean type probabilities over its pixels.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    types: dict[int, str] = field(default_factory=dict)
    type_probabilities: dict[int, np.ndarray] = field(default_factory=dict)


class Predictor:
    """Segment images with a model and the preprocessing recorded in its config.

    Args:
        model: the network (put in eval mode here).
        config: the run's resolved config.
        device: where to run.
        backend: ``torch`` runs ``model``; ``onnxruntime`` runs ``runtime`` (an exported copy of ``model``)
            on the CPU. Only the network call differs: preprocessing, padding, tiling and TTA are shared.
        runtime: the :class:`~medseg.inference.onnx.OnnxRuntimeBackend` for ``backend="onnxruntime"``.

    Raises:
        ConfigError: unknown ``backend``, or ``onnxruntime`` without a ``runtime``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: Config,
        device: torch.device | str = "cpu",
        *,
        backend: str = "torch",
        runtime: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        if (backend == "onnxruntime") != (runtime is not None):
            raise ConfigError("backend: onnxruntime needs an exported model (Predictor.from_run loads it)")
        self.backend = backend
        self.runtime = runtime
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # a model the Predictor loaded itself runs channels_last (from_run); one it is lent (validation during
        # training) keeps its format, so its parameters are never replaced
        self.memory_format = torch.contiguous_format
        self.config = config
        self.divisor = int(getattr(model, "size_divisor", 1))
        self.bf16 = use_bf16(config.train.amp, self.device)
        self.layout = HeadLayout.for_config(config)
        self.regions = Regions.from_mapping(config.data.regions) if config.data.regions else None
        self.watershed = watershed_params(config, run_dir=None)
        self.typing = typing_params(None)

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        checkpoint: str = "best",
        device: str = "auto",
        overrides: list[str] | None = None,
        backend: str = "torch",
    ) -> Predictor:
        """Load a run folder.

        Args:
            run_dir: the run folder (``config.yaml`` + ``checkpoints/``).
            checkpoint: ``best`` (falls back to ``last``) or ``last``.
            device: ``auto``, ``cpu`` or ``cuda`` (``onnxruntime`` runs on the CPU: ``auto`` means ``cpu``).
            overrides: ``--set`` style changes to the run's config, e.g. ``["inference.tta=true"]``.
            backend: ``torch``, or ``onnxruntime`` to run ``RUN/export/model.onnx`` (written by
                ``medseg export RUN``; never exported on the fly, so predicting writes nothing into the run).

        Raises:
            RunError: the folder is not a run, has no usable checkpoint, or (``onnxruntime``) has no
                export or one made from another checkpoint.
            ConfigError: unknown ``backend``, or ``onnxruntime`` on ``cuda``.
        """
        from medseg.models import build_model

        run = Path(run_dir)
        config = load_run_config(run, overrides)
        path = find_checkpoint(run, checkpoint)
        runtime = None
        if backend == "onnxruntime":
            from medseg.inference.onnx import EXPORT_DIR, load_export

            if device not in ("auto", "cpu"):
                raise ConfigError(f"--backend onnxruntime runs on the CPU; use --device cpu, not {device!r}")
            device = "cpu"
            runtime = load_export(run / EXPORT_DIR, checkpoint=path, rerun=f"medseg export {run}")
        state = load_checkpoint(path)
        model = build_model(
            config.model,
            in_channels=config.data.in_channels,
            num_classes=HeadLayout.for_config(config).channels,
            pretrained=False,
        )
        model.load_state_dict(state["model"])
        # channels_last: faster for segformer_b0 on this CPU, neutral for U-Nets (benchmarks/inference.py)
        model = model.to(memory_format=torch.channels_last)
        predictor = cls(model, config, pick_device(device), backend=backend, runtime=runtime)
        predictor.memory_format = torch.channels_last
        predictor.watershed = watershed_params(config, run_dir=run)
        predictor.typing = typing_params(run)
        return predictor

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return self.config.data.class_names

    def preprocess(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """Raw ``(H, W)`` or ``(H, W, C)`` image -> normalised ``(C, H, W)`` float32, checking channels."""
        data = self.config.data
        image = self._fit_channels(image, source)
        return normalize(image, data.normalization, low=data.norm_low, high=data.norm_high)

    def _preprocess_lazily(self, image: np.ndarray, source: str) -> np.ndarray | NormalizedImage:
        """:meth:`preprocess` deferred to each tile where that is exact (integer images up to 16 bits)."""
        data = self.config.data
        image = self._fit_channels(image, source)
        return normalize_lazily(image, data.normalization, low=data.norm_low, high=data.norm_high)

    def _fit_channels(self, image: np.ndarray, source: str) -> np.ndarray:
        """The raw image with the model's number of channels (grey <-> RGB, RGBA -> RGB)."""
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
        return image

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> padded at the bottom/right to multiples of the model's size divisor
        (reflected, or replicated where the image is too small to reflect)."""
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % self.divisor, (-width) % self.divisor
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
        return images

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` normalised images -> ``(N, K, H, W)`` float32 logits at input size."""
        height, width = images.shape[-2:]
        images = self.pad(images)
        if self.runtime is not None:
            out = self.runtime(images)
        else:
            with autocast(self.device, self.bf16):
                out = self.model(images.to(self.device, memory_format=self.memory_format))
        return out[..., :height, :width].float().contiguous()

    def tile_size(self, tile: int | None = None) -> int:
        """``inference.tile`` (or ``tile``) rounded up to a multiple of the divisor (0 = never tile)."""
        tile = self.config.inference.tile if tile is None else tile
        if tile < 0:
            raise ConfigError(f"inference.tile: must be >= 0 (0 = never tile), got {tile}")
        return -(-tile // self.divisor) * self.divisor

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray,
        source: str = "image",
        *,
        tta: bool | None = None,
        tile: int | None = None,
        probabilities: bool | None = None,
        labels_out: np.ndarray | None = None,
    ) -> Prediction:
        """Segment one raw image ``(H, W)`` or ``(H, W, C)``.

        Args:
            image: the raw image, any dtype.
            source: name used in error messages.
            tta: average over flips (and 90° rotations of square inputs); None = ``inference.tta``.
            tile: tile size for images larger than it in either dimension, 0 = never tile;
                None = ``inference.tile``.
            probabilities: semantic runs: keep the ``(K, H, W)`` probabilities in the result. None = keep
                them for images of at most :data:`FULL_PROBABILITIES_MAX_PIXELS` pixels. Without them, a
                tiled image is reduced to class ids band by band, so memory does not grow with its area
                (an 8192² RGB image fits in well under 2 GB); the class ids are the same either way.
                Instance runs always keep their maps (the watershed needs the whole image).
            labels_out: semantic runs: an ``(H, W)`` integer array (e.g. a uint8 ``numpy.memmap`` of the
                mask file) that receives the class ids, band by band when tiled, and is returned as
                ``labels`` in place of a new int32 array: a 20,000² mask then needs no 1.6 GB int32 copy.

        Raises:
            DataError: the image's channels do not fit the model.
            ValueError: ``labels_out`` has the wrong shape, or is given to an instance run.
        """
        height, width = image.shape[:2]
        if labels_out is not None and (labels_out.shape != (height, width) or self.config.task == "instance"):
            raise ValueError(
                f"labels_out: need a semantic run and shape {(height, width)}, got {labels_out.shape}"
            )
        if self.config.task == "instance":
            return self.instances_from_maps(self.predict_maps(image, source, tta=tta, tile=tile))
        keep = height * width <= FULL_PROBABILITIES_MAX_PIXELS if probabilities is None else probabilities
        tile = self.tile_size(tile)
        if keep or not (tile and (height > tile or width > tile)):
            maps = self.predict_maps(image, source, tta=tta, tile=tile)
            labels = self.labels_of(maps)
            if labels_out is not None:
                labels_out[...] = labels
                labels = labels_out
            return Prediction(labels=labels, probabilities=maps if keep else None)
        normalised = self._preprocess_lazily(image, source)
        labels = np.empty((height, width), np.int32) if labels_out is None else labels_out
        for top, band in sliding_window_bands(normalised, **self._window_args(normalised, tile, tta)):
            labels[top : top + band.shape[1]] = self.labels_of(band)
        return Prediction(labels=labels, probabilities=None)

    def labels_of(self, maps: np.ndarray) -> np.ndarray:
        """Semantic ``(K, H, W)`` probabilities -> ``(H, W)`` class ids (argmax), or for a region run
        ``(R, H, W)`` sigmoid probabilities -> mask values (:meth:`~medseg.data.regions.Regions.encode`)."""
        return class_ids(maps) if self.regions is None else self.regions.encode(maps)

    @torch.inference_mode()
    def predict_maps(
        self, image: np.ndarray, source: str = "image", *, tta: bool | None = None, tile: int | None = None
    ) -> np.ndarray:
        """The network's activated output ``(C, H, W)`` float32 for one raw image (see :meth:`predict`).

        Semantic runs: softmax probabilities. Instance runs: each head's activation (sigmoid distances,
        softmax fgbg and types). Tiles and TTA passes are blended after activation.
        """
        tile = self.tile_size(tile)
        height, width = image.shape[:2]
        if tile and (height > tile or width > tile):
            # instance maps are blended and then cut once, so no object is cut or doubled at a tile seam
            normalised = self._preprocess_lazily(image, source)
            return sliding_window(normalised, **self._window_args(normalised, tile, tta))
        normalised = self.preprocess(image, source)
        return self._tile_predictor(tta)(torch.from_numpy(normalised)[None])[0].cpu().numpy()

    def _tile_predictor(self, tta: bool | None) -> TilePredictor:
        """Normalised ``(N, C, h, w)`` tiles -> activated ``(N, K, h, w)`` maps, with TTA if asked."""
        tta = self.config.inference.tta if tta is None else tta
        activate = self.layout.activate
        if tta:
            return with_flip_tta(self.logits, activation=activate)

        def predict_tiles(batch: torch.Tensor) -> torch.Tensor:
            return activate(self.logits(batch))

        return predict_tiles

    def _window_args(self, normalised: np.ndarray | NormalizedImage, tile: int, tta: bool | None) -> dict:
        """Arguments of :func:`~medseg.inference.sliding_window.sliding_window` (or ``_bands``) after the
        image: the run's inference settings; ``tile`` is already a multiple of the divisor."""
        settings = self.config.inference
        height, width = normalised.shape[-2:]
        # a dimension shorter than the tile needs no tiling: its tiles span it (padded to the divisor)
        shape = (min(tile, self.tile_size(height)), min(tile, self.tile_size(width)))
        return {
            "predictor": self._tile_predictor(tta),
            "tile": shape,
            "overlap": settings.overlap,
            "batch_size": settings.batch_size,
            "softmax": False,
        }

    def instances_from_maps(self, maps: np.ndarray, params=None, typing=None) -> Prediction:
        """Deep watershed on an instance run's activated maps ``(C, H, W)``, typing each object.

        Args:
            maps: output of :meth:`predict_maps`.
            params: :class:`~medseg.postprocess.WatershedParams`; None = the run's (tuned) thresholds.
            typing: :class:`~medseg.postprocess.TypingParams`; None = the run's (tuned) rule.
        """
        from medseg.postprocess import assign_types, deep_watershed

        heads = self.layout.split(maps)
        params = params or self.watershed
        instances = deep_watershed(heads["inner"], heads["outer"], heads["fgbg"][1], **params.to_dict())
        inst = self.config.instance
        if not inst.classes:
            return Prediction(instances, maps)
        instances, types, mean_probs = assign_types(
            instances, heads.get("classes"), inst.classes, inst.differential, typing or self.typing
        )
        return Prediction(instances, maps, types, mean_probs)


def watershed_params(config: Config, run_dir: str | Path | None = None):
    """The deep-watershed thresholds of a run: ``RUN/thresholds.json`` if tuned, else the config's."""
    if config.task != "instance":
        return None
    from medseg.postprocess import WatershedParams

    inst = config.instance
    params = WatershedParams(
        maxima_threshold=inst.maxima_threshold,
        interior_threshold=inst.interior_threshold,
        min_distance=inst.min_distance,
        small_objects_threshold=inst.small_objects_threshold,
    )
    tuned = _tuned(run_dir, "params")
    return (
        params
        if tuned is None
        else _parse_tuned(run_dir, WatershedParams.from_dict, {**params.to_dict(), **tuned})
    )


def typing_params(run_dir: str | Path | None = None):
    """How a typed run assigns types (:class:`~medseg.postprocess.TypingParams`): tuned, else default."""
    from medseg.postprocess import TypingParams

    tuned = _tuned(run_dir, "typing")
    return TypingParams() if tuned is None else _parse_tuned(run_dir, TypingParams.from_dict, tuned)


def _tuned(run_dir: str | Path | None, key: str) -> dict | None:
    """One entry of ``RUN/thresholds.json`` (written by tuning after training), or None."""
    import json

    path = Path(run_dir) / "thresholds.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError) as exc:
        raise RunError(f"{path}: unreadable tuned thresholds ({exc}); delete it for defaults") from None
    return entry


def _parse_tuned(run_dir: str | Path, parse, data):
    try:
        return parse(data)
    except (ValueError, KeyError, TypeError) as exc:
        path = Path(run_dir) / "thresholds.json"
        raise RunError(f"{path}: unreadable tuned thresholds ({exc}); delete it for defaults") from None


def class_ids(probabilities: np.ndarray, rows: int = 256) -> np.ndarray:
    """``(K, H, W)`` probabilities -> ``(H, W)`` int32 argmax, a band of rows at a time.

    NumPy's argmax returns int64; banding keeps that temporary small for very large images.
    """
    labels = np.empty(probabilities.shape[1:], np.int32)
    for top in range(0, labels.shape[0], rows):
        labels[top : top + rows] = probabilities[:, top : top + rows].argmax(0)
    return labels


def find_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The checkpoint file ``Predictor.from_run`` loads: ``best`` (falling back to ``last``) or ``last``.

    Raises:
        RunError: no such checkpoint in ``RUN/checkpoints``.
    """
    run = Path(run_dir)
    ckpt_dir = run / "checkpoints"
    candidates = ["best.pt", "last.pt"] if checkpoint == "best" else [f"{checkpoint}.pt"]
    path = next((ckpt_dir / c for c in candidates if (ckpt_dir / c).is_file()), None)
    if path is None:
        raise RunError(f"{run}: no checkpoint in {ckpt_dir} (train it first: medseg train ... --out {run})")
    return path


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """Read ``RUN/config.yaml``, apply ``--set`` style ``overrides`` and validate.

    Sections missing from older runs (e.g. ``inference``) take their defaults.

    Raises:
        RunError: the folder is missing or is not a medseg run.
        ConfigError: an override names an unknown key or an invalid value.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"{run}: run folder not found")
    if not (run / "config.yaml").is_file():
        raise RunError(f"{run}: not a medseg run (no config.yaml)")
    data = apply_overrides(read_yaml(run / "config.yaml"), overrides or [])
    return from_dict(data).validate()
