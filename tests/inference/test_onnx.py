"""ONNX export and the ONNX Runtime backend: same outputs as torch, a self-describing bundle, no stale use."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.config import load_config, save_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.errors import ConfigError, MedsegError, RunError
from medseg.inference.onnx import OnnxRuntimeBackend, export_onnx, load_export, sha256_file
from medseg.inference.predictor import Predictor
from medseg.io import read_label, write_image
from medseg.models import build_model, create_model
from medseg.workflows.export import export_run

CLASSES = "{background: 0, cell: 1, nucleus: 2}"
ATOL = 1e-4


def make_run(folder: Path, model: str = "unet_tiny", seed: int = 0) -> Path:
    """A run folder as training leaves it (config.yaml + checkpoints/best.pt), with untrained weights.

    ``train.amp=off`` so the torch backend runs in fp32, the precision the export is compared with.
    """
    config = load_config(
        None, [f"model.name={model}", "train.amp=off", "data.in_channels=3", f"data.labels={CLASSES}"]
    )
    torch.manual_seed(seed)
    network = build_model(config.model, in_channels=3, num_classes=3)
    save_config(config, folder / "config.yaml")
    save_checkpoint(folder / "checkpoints" / "best.pt", {"model": network.state_dict(), "epoch": 1})
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """unet_tiny and segformer_tiny runs with their exports (read-only)."""
    runs = {}
    for name in ("unet_tiny", "segformer_tiny"):
        run = make_run(tmp_path_factory.mktemp(name), model=name)
        export_run(run)
        runs[name] = run
    return runs


def image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["unet_tiny", "segformer_tiny", "attention_unet_tiny"])
def test_exported_graph_has_dynamic_axes_and_matches_torch(name: str, tmp_path: Path):
    import onnx

    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=4)
    path = export_onnx(model, tmp_path / "m.onnx", in_channels=3)
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    runtime = OnnxRuntimeBackend(path)
    assert runtime.threads == torch.get_num_threads()
    d = model.size_divisor
    for shape in [(1, 3, 64, 64), (3, 3, 2 * d, 3 * d)]:  # batch, height and width all vary
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            expected = model(x)
        actual = runtime(x)
        assert actual.shape == expected.shape and actual.dtype == torch.float32
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=ATOL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_export_run_writes_a_self_describing_bundle(exported: dict[str, Path]):
    run = exported["segformer_tiny"]
    bundle = json.loads((run / "export" / "bundle.json").read_text())
    assert bundle["format"] == "medseg-onnx-bundle" and bundle["format_version"] == 1
    assert bundle["model_sha256"] == sha256_file(run / "export" / "model.onnx")
    assert bundle["checkpoint"] == {
        "file": "checkpoints/best.pt",
        "sha256": sha256_file(run / "checkpoints" / "best.pt"),
        "bytes": (run / "checkpoints" / "best.pt").stat().st_size,
    }
    assert (bundle["in_channels"], bundle["num_classes"], bundle["size_divisor"]) == (3, 3, 32)
    assert bundle["class_names"] == ["background", "cell", "nucleus"]
    assert bundle["input"]["name"] == "image" and bundle["output"]["name"] == "logits"
    assert bundle["opset"] == 17
    norm = bundle["preprocessing"]["normalization"]
    assert (norm["mode"], norm["low_percentile"], norm["high_percentile"]) == ("percentile", 0.5, 99.5)
    assert bundle["postprocessing"]["heads"] == [{"name": "classes", "channels": 3, "activation": "softmax"}]
    assert bundle["check"]["max_abs_difference"] <= ATOL
    assert {"medseg", "torch", "onnx", "onnxruntime"} <= set(bundle["versions"])
    assert sorted(p.name for p in (run / "export").iterdir()) == ["bundle.json", "model.onnx"]


@pytest.mark.parametrize(
    ("name", "shape", "settings"),
    [
        ("unet_tiny", (37, 53), {}),  # odd size: padded to the divisor and cropped back
        ("unet_tiny", (150, 101), {"tile": 64}),  # tiled: 3 x 2 tiles, the last ones padded in the window
        ("unet_tiny", (40, 40), {"tta": True}),  # square: 8 flips and rotations
        ("unet_tiny", (70, 45), {"tile": 64, "tta": True}),
        ("segformer_tiny", (37, 53), {}),
        ("segformer_tiny", (100, 70), {"tile": 64}),
        ("segformer_tiny", (30, 50), {"tta": True}),  # not square: 4 flips
    ],
)
def test_onnxruntime_backend_matches_torch(exported: dict[str, Path], name: str, shape, settings):
    run = exported[name]
    torch_predictor = Predictor.from_run(run, device="cpu")
    onnx_predictor = Predictor.from_run(run, backend="onnxruntime")
    assert not torch_predictor.bf16 and onnx_predictor.backend == "onnxruntime"

    def no_torch(*_):
        raise AssertionError("the torch model ran under the onnxruntime backend")

    onnx_predictor.model.forward = no_torch
    raw = image(shape)
    expected = torch_predictor.predict(raw, **settings)
    actual = onnx_predictor.predict(raw, **settings)
    assert actual.probabilities.shape == (3, *shape)
    np.testing.assert_allclose(actual.probabilities, expected.probabilities, atol=ATOL)
    # labels agree except where two classes are tied within the tolerance
    top2 = np.sort(expected.probabilities, axis=0)[-2:]
    decided = top2[1] - top2[0] > 2 * ATOL
    np.testing.assert_array_equal(actual.labels[decided], expected.labels[decided])


def test_missing_stale_or_replaced_export_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "run")
    with pytest.raises(RunError, match=r"no ONNX export \(create it with: medseg export .*run\)"):
        Predictor.from_run(run, backend="onnxruntime")
    export_run(run)
    Predictor.from_run(run, backend="onnxruntime")

    # retrained: the checkpoint is no longer the one exported
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(run / "checkpoints" / "best.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(RunError, match=r"stale export.*best\.pt changed.*re-export with: medseg export"):
        Predictor.from_run(run, backend="onnxruntime")
    export_run(run)
    Predictor.from_run(run, backend="onnxruntime")

    # a different model.onnx dropped into the folder
    onnx_file = run / "export" / "model.onnx"
    export_onnx(create_model("unet_tiny", in_channels=3, num_classes=3), onnx_file, in_channels=3)
    with pytest.raises(RunError, match="model.onnx: does not match the sha256 in bundle.json"):
        Predictor.from_run(run, backend="onnxruntime")


def test_bundle_and_backend_errors(exported: dict[str, Path], tmp_path: Path):
    run = exported["unet_tiny"]
    with pytest.raises(ConfigError, match="backend: 'tvm' is not one of torch, onnxruntime"):
        Predictor.from_run(run, backend="tvm")
    with pytest.raises(ConfigError, match="runs on the CPU; use --device cpu"):
        Predictor.from_run(run, backend="onnxruntime", device="cuda")
    predictor = Predictor.from_run(run, device="cpu")
    with pytest.raises(ConfigError, match="onnxruntime needs an exported model"):
        Predictor(predictor.model, predictor.config, backend="onnxruntime")
    folder = tmp_path / "export"
    shutil.copytree(run / "export", folder)
    bundle = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**bundle, "format_version": 99}))
    with pytest.raises(RunError, match="bundle format 99 is newer"):
        load_export(folder)
    (folder / "bundle.json").write_text("{not json")
    with pytest.raises(RunError, match="bundle.json: unreadable"):
        load_export(folder)
    (folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(RunError, match="ONNX Runtime cannot load it"):
        OnnxRuntimeBackend(folder / "model.onnx")
    with pytest.raises(ConfigError, match="--opset: 3 is outside"):
        export_run(run, opset=3)
    with pytest.raises(ConfigError, match="--format: 'tflite'"):
        export_run(run, format="tflite")


def test_a_failed_check_keeps_the_previous_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = make_run(tmp_path / "run")
    export_run(run)
    before = {p.name: p.read_bytes() for p in (run / "export").iterdir()}
    real_call = OnnxRuntimeBackend.__call__
    monkeypatch.setattr(OnnxRuntimeBackend, "__call__", lambda self, x: real_call(self, x) + 1e-2)
    with pytest.raises(MedsegError, match="logits differ from torch's by 0.01.*not written"):
        export_run(run, opset=18)
    assert {p.name: p.read_bytes() for p in (run / "export").iterdir()} == before


def test_cli_export_then_predict_with_onnxruntime(tmp_path: Path, capsys: pytest.CaptureFixture):
    run = make_run(tmp_path / "run")
    images = tmp_path / "images"
    write_image(images / "a.png", image((45, 61), seed=1))
    write_image(images / "b.png", image((64, 64), seed=2))
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(images), "--out", str(out), "--backend", "onnxruntime"]) == 2
    assert f"medseg export {run}" in capsys.readouterr().err

    assert main(["export", str(run), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert "model.onnx" in printed and "opset 18" in printed and "--backend onnxruntime" in printed
    assert json.loads((run / "export" / "bundle.json").read_text())["opset"] == 18

    assert main(["predict", str(run), str(images), "--out", str(out), "--backend", "onnxruntime"]) == 0
    predictor = Predictor.from_run(run, backend="onnxruntime")
    for name, seed, shape in [("a", 1, (45, 61)), ("b", 2, (64, 64))]:
        expected = predictor.predict(image(shape, seed)).labels
        np.testing.assert_array_equal(read_label(out / "masks" / f"{name}.png"), expected)

    elsewhere = tmp_path / "bundle"
    assert main(["export", str(run), "--out", str(elsewhere)]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["bundle.json", "model.onnx"]


def test_web_app_serves_the_onnx_export(exported: dict[str, Path]):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from medseg.web.app import create_app
    from medseg.workflows.predict import segment_image

    run = exported["unet_tiny"]
    picture = image((40, 52), seed=3)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    with TestClient(create_app([run], backend="onnxruntime")) as client:
        answer = client.post("/api/predict", files={"file": ("a.png", buffer.getvalue(), "image/png")})
        assert answer.status_code == 200, answer.text
        mask = client.get(answer.json()["downloads"]["mask_png"])
    expected = segment_image(Predictor.from_run(run, backend="onnxruntime"), picture)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(mask.content))), expected.labels)
