"""ONNX export of a network and the ONNX Runtime backend of :class:`~medseg.inference.predictor.Predictor`.

The exported graph maps a normalised, padded ``(N, C, H, W)`` float32 batch to ``(N, K, H, W)`` float32
logits, with batch, height and width dynamic (any multiple of the model's ``size_divisor``). It is traced
by torch's TorchScript-based exporter (``dynamo=False``): the dynamo exporter would need ``onnxscript``, and
the traced graph runs every registered network. The export is fp32; bf16 stays a torch-backend option.

A run's export is a folder, ``RUN/export/``, with ``model.onnx`` and ``bundle.json``. The bundle says
everything a consumer without medseg needs to pre- and post-process (see
:func:`medseg.workflows.export.export_run`), plus the sha256 of the onnx file and of the checkpoint it was
exported from, so :func:`load_export` refuses a stale export (checkpoint retrained since) or a replaced
``model.onnx`` instead of silently predicting with other weights.

ONNX Runtime is run on the CPU with graph optimisation level ALL and ``torch.get_num_threads()`` intra-op
threads (``benchmarks/inference.py`` measures both knobs).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError, RunError
from medseg.io import atomic_path

BUNDLE_FORMAT = "medseg-onnx-bundle"
BUNDLE_VERSION = 1
DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXPORT_DIR = "export"
MODEL_FILE = "model.onnx"
BUNDLE_FILE = "bundle.json"
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    in_channels: int,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` to an ONNX file with dynamic batch, height and width, written atomically.

    Args:
        model: a network following the :mod:`medseg.models` contract (``size_divisor`` attribute); it is
            moved to the CPU in fp32 and put in eval mode (in place).
        path: the ``.onnx`` file to write.
        in_channels: image channels of the model's input.
        opset: ONNX opset version (the legacy exporter supports 7..20).

    Returns:
        ``path``.

    Raises:
        ConfigError: ``opset`` outside what the exporter supports, or ``onnx`` is not installed.
    """
    if not 7 <= opset <= 20:
        raise ConfigError(f"--opset: {opset} is outside 7..20, the opsets torch's ONNX exporter writes")
    _require("onnx")
    model = model.to("cpu", torch.float32).eval()
    divisor = int(getattr(model, "size_divisor", 1))
    side = divisor * math.ceil(64 / divisor)  # the traced size; every other size works through dynamic axes
    sample = torch.rand(1, in_channels, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = Path(path)
    # no_grad: traced as prediction runs it (SegFormer's folded decode head, see SegFormer.forward)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter warns that it is legacy, and the tracer about Python-side shape checks
        # (instance norm's, attention's is_causal) that do not depend on the traced size
        for category in (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        torch.onnx.export(
            model,
            (sample,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: _DYNAMIC_AXES, OUTPUT_NAME: _DYNAMIC_AXES},
        )
        import onnx

        onnx.checker.check_model(str(tmp))
    return path


class OnnxRuntimeBackend:
    """An ONNX Runtime session as a tile predictor: ``(N, C, H, W)`` float32 -> ``(N, K, H, W)`` logits.

    Args:
        path: the ``.onnx`` file (one float32 input, one float32 output).
        threads: intra-op threads; None = ``torch.get_num_threads()``, so both backends use the same cores.
        optimization: ONNX Runtime graph optimisation level: ``all`` (default), ``extended``, ``basic`` or
            ``disabled``.
        bundle: the export's ``bundle.json`` content, kept for callers (empty when loaded bare).

    Raises:
        RunError: the file is not a model ONNX Runtime can load.
        ConfigError: unknown ``optimization``, or ``onnxruntime`` is not installed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        optimization: str = "all",
        bundle: dict[str, Any] | None = None,
    ) -> None:
        ort = _require("onnxruntime")
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        if optimization not in levels:
            raise ConfigError(f"optimization: {optimization!r} is not one of {', '.join(levels)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # one request at a time: parallelism is within operators
        options.log_severity_level = 3  # errors only: no "removing initializer" chatter
        # idle ORT threads otherwise spin for a while after each call, taking the cores from the NumPy
        # blending/post-processing (and torch) that runs between tiles
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind types (Fail, InvalidProtobuf, ...)
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise RunError(f"{path}: ONNX Runtime cannot load it ({reason})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.threads = options.intra_op_num_threads
        self.bundle = bundle or {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Run the graph on a ``(N, C, H, W)`` batch (any float dtype/device) -> CPU float32 logits."""
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(logits)


def read_bundle(export_dir: str | Path) -> dict[str, Any]:
    """Read and check ``EXPORT/bundle.json``.

    Raises:
        RunError: missing, unreadable, of another format or of a newer format version.
    """
    path = Path(export_dir) / BUNDLE_FILE
    if not path.is_file():
        raise RunError(f"{path}: not found")
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise RunError(f"{path}: not a medseg ONNX bundle")
    if bundle.get("format_version", 0) > BUNDLE_VERSION:
        raise RunError(
            f"{path}: bundle format {bundle.get('format_version')} is newer than this medseg reads "
            f"({BUNDLE_VERSION}); upgrade medseg or re-export"
        )
    return bundle


def load_export(
    export_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    threads: int | None = None,
    rerun: str = "medseg export RUN",
) -> OnnxRuntimeBackend:
    """Load an export folder as an ONNX Runtime backend, refusing a stale or tampered export.

    Args:
        export_dir: folder with ``bundle.json`` and the onnx file it names.
        checkpoint: the checkpoint the caller would otherwise load; its sha256 must be the one the
            export was made from. None skips that check (a bundle used without its run).
        threads: intra-op threads (see :class:`OnnxRuntimeBackend`).
        rerun: the command that re-exports, quoted in error messages.

    Raises:
        RunError: no export, an unreadable bundle, an onnx file whose sha256 differs from the bundle's,
            or a checkpoint that changed since the export.
    """
    export_dir = Path(export_dir)
    if not (export_dir / BUNDLE_FILE).is_file():
        raise RunError(f"{export_dir}: no ONNX export (create it with: {rerun})")
    bundle = read_bundle(export_dir)
    model_path = export_dir / str(bundle.get("model_file", MODEL_FILE))
    if not model_path.is_file():
        raise RunError(f"{model_path}: missing (re-export with: {rerun})")
    if sha256_file(model_path) != bundle.get("model_sha256"):
        raise RunError(f"{model_path}: does not match the sha256 in {BUNDLE_FILE} (re-export with: {rerun})")
    if checkpoint is not None:
        exported_from = bundle.get("checkpoint", {})
        if sha256_file(checkpoint) != exported_from.get("sha256"):
            raise RunError(
                f"{export_dir}: stale export, {checkpoint} changed since it was exported from "
                f"{exported_from.get('file', '?')} at {bundle.get('created', '?')} (re-export with: {rerun})"
            )
    return OnnxRuntimeBackend(model_path, threads=threads, bundle=bundle)


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"ONNX export and --backend onnxruntime need {module}: pip install {module}"
        ) from exc
