"""``medseg export``: a run's network as a self-describing ONNX bundle.

``export_run(RUN)`` writes ``RUN/export/model.onnx`` and ``RUN/export/bundle.json`` (each atomically; the
bundle last, and it holds the onnx file's sha256, so a reader never pairs a bundle with another model).
``medseg predict RUN --backend onnxruntime`` and ``Predictor.from_run(RUN, backend="onnxruntime")`` use
it; a consumer without medseg needs only the bundle to reproduce the prediction:

1. read the image as ``(H, W, C)``; normalise each channel as ``preprocessing.normalization`` says and
   move channels first: ``(C, H, W)`` float32;
2. pad bottom and right to a multiple of ``size_divisor`` (``reflect``; ``replicate`` when the padding is
   not shorter than the side), add a batch axis and run the graph: input ``image`` ``(N, C, H, W)``,
   output ``logits`` ``(N, K, H, W)``; crop back to the image's size;
3. activate each head of ``postprocessing.heads`` over its channels (semantic: softmax over all ``K``
   channels, then argmax = class id, named by ``class_names``). Large images: tile as ``inference`` says.

The export is checked before it is written: ONNX Runtime's logits must match torch fp32 within 1e-4
(relative to the logits' largest magnitude) on a random batch of another size than the traced one.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.errors import ConfigError, MedsegError
from medseg.io import atomic_path, write_json_atomic

FORMATS = ("onnx",)
TOLERANCE = 1e-4


def export_run(
    run_dir: str | Path,
    *,
    format: str = "onnx",
    opset: int | None = None,
    out: str | Path | None = None,
    checkpoint: str = "best",
) -> Path:
    """Export a run's network with dynamic batch/height/width and write its bundle.

    Args:
        run_dir: the run folder.
        format: ``onnx`` (the only format so far).
        opset: ONNX opset; None = :data:`medseg.inference.onnx.DEFAULT_OPSET`.
        out: export folder; None = ``RUN/export`` (the folder ``--backend onnxruntime`` reads).
        checkpoint: ``best`` (falls back to ``last``) or ``last``.

    Returns:
        The path of ``bundle.json``.

    Raises:
        RunError: the folder is not a run or has no checkpoint.
        ConfigError: unknown ``format``, unsupported ``opset``, or onnx/onnxruntime not installed.
        MedsegError: ONNX Runtime's output differs from torch's (an operator the exporter mistranslates).
    """
    import torch

    from medseg.inference.onnx import (
        BUNDLE_FILE,
        BUNDLE_FORMAT,
        BUNDLE_VERSION,
        DEFAULT_OPSET,
        EXPORT_DIR,
        INPUT_NAME,
        MODEL_FILE,
        OUTPUT_NAME,
        OnnxRuntimeBackend,
        export_onnx,
        sha256_file,
    )
    from medseg.inference.predictor import Predictor, find_checkpoint

    if format not in FORMATS:
        raise ConfigError(f"--format: {format!r} is not one of {', '.join(FORMATS)}")
    opset = DEFAULT_OPSET if opset is None else opset
    run = Path(run_dir)
    predictor = Predictor.from_run(run, checkpoint=checkpoint, device="cpu")
    checkpoint_path = find_checkpoint(run, checkpoint)
    config, model = predictor.config, predictor.model
    channels = config.data.in_channels
    export_dir = Path(out) if out is not None else run / EXPORT_DIR
    model_path = export_dir / MODEL_FILE
    with atomic_path(model_path) as tmp:  # replaces model.onnx only once the check has passed
        export_onnx(model, tmp, in_channels=channels, opset=opset)
        sample = _check_input(channels, predictor.divisor)
        with torch.inference_mode():
            expected = model(sample)
        actual = OnnxRuntimeBackend(tmp)(sample)
        difference = float((actual - expected).abs().max())
        scale = max(1.0, float(expected.abs().max()))
        if not difference <= TOLERANCE * scale:
            raise MedsegError(
                f"{run}: the ONNX export's logits differ from torch's by {difference:.3g} "
                f"(> {TOLERANCE:g} x {scale:.3g}) on a {tuple(sample.shape)} input; not written"
            )
    data = config.data
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_file": MODEL_FILE,
        "model_sha256": sha256_file(model_path),
        "opset": opset,
        "task": config.task or "semantic",
        "model": {"name": config.model.name, "params": dict(config.model.params)},
        "in_channels": channels,
        "num_classes": predictor.layout.channels,
        "size_divisor": predictor.divisor,
        "class_names": data.class_names,
        "labels": dict(data.labels),
        "regions": {name: list(values) for name, values in data.regions.items()},
        "colors": {name: list(rgb) for name, rgb in data.colors.items()},
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", channels, "height", "width"],
            "note": "height and width: multiples of size_divisor",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", predictor.layout.channels, "height", "width"],
            "note": "raw logits; activate per postprocessing.heads",
        },
        "preprocessing": {
            "layout": "image (H, W, C) -> (C, H, W), channels first",
            "normalization": {
                "mode": data.normalization,
                "low_percentile": data.norm_low,
                "high_percentile": data.norm_high,
                "per": "image and channel",
                "description": _NORMALIZATION_TEXT.get(data.normalization, ""),
            },
            "padding": {
                "to_multiple_of": predictor.divisor,
                "sides": "bottom, right",
                "mode": "reflect (replicate where the padding is not shorter than the side)",
                "crop": "logits back to the image's height and width",
            },
        },
        "postprocessing": {
            "heads": [
                {"name": name, "channels": count, "activation": _activation(name)}
                for name, count in predictor.layout.heads
            ],
            "labels": _labels_text(config),
        },
        "inference": {
            "tile": config.inference.tile,
            "overlap": config.inference.overlap,
            "blend": "gaussian, sigma = tile / 8 per axis",
            "tta": config.inference.tta,
        },
        "checkpoint": {
            "file": str(checkpoint_path.relative_to(run)),
            "sha256": sha256_file(checkpoint_path),
            "bytes": checkpoint_path.stat().st_size,
        },
        "check": {"input_shape": list(sample.shape), "max_abs_difference": difference},
        "versions": {
            "medseg": __version__,
            "torch": torch.__version__,
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
        },
    }
    bundle_path = export_dir / BUNDLE_FILE
    write_json_atomic(bundle_path, bundle)
    return bundle_path


_NORMALIZATION_TEXT = {
    "percentile": "per channel: clip to the [low, high] percentiles of that channel, scale to [0, 1] "
    "(a channel whose two percentiles are equal becomes 0)",
    "zscore": "per channel: (x - mean) / max(std, 1e-8)",
    "none": "cast to float32; unsigned integers divided by their dtype's maximum (uint8 by 255)",
}


def _labels_text(config) -> str:
    if config.task == "instance":
        return ""
    if config.data.regions:
        return (
            "overlapping regions: sigmoid per regions channel; each pixel's mask value is the value v (0 or "
            "any value listed in regions) maximising sum over regions r containing v of logit r, i.e. every "
            "region with probability > 0.5 when all combinations are listed (a bitmask)"
        )
    return "argmax over the softmax of the classes head"


def _activation(head: str) -> str:
    from medseg.models.heads import HEAD_ACTIVATIONS

    return HEAD_ACTIVATIONS.get(head, "softmax")


def _check_input(channels: int, divisor: int):
    import torch

    # another batch size and a non-square size than the traced (1, C, 64, 64): exercises the dynamic axes
    height, width = divisor * max(1, -(-48 // divisor)), divisor * max(2, -(-80 // divisor))
    generator = torch.Generator().manual_seed(1)
    return torch.rand(2, channels, height, width, generator=generator) * 4 - 2


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
