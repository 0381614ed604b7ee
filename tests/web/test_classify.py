"""Classification runs in the web app: predicted class, probabilities, Grad-CAM, downloads, and the CLI
giving the same answer for the same image."""

from __future__ import annotations

import base64
import csv
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.io import read_image

CLASSES = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


def _post(client, data: bytes, name: str = "cell.png", **form):
    return client.post("/api/predict", files={"file": (name, data, "application/octet-stream")}, data=form)


def _decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def answer(classify_client, crop_path: Path) -> dict:
    response = _post(classify_client, crop_path.read_bytes(), crop_path.name)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def cli_prediction(classify_run: Path, crop_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``medseg predict RUN CROP --explain``: its predictions.csv row and Grad-CAM overlay."""
    from medseg.cli import main

    out = tmp_path_factory.mktemp("predict")
    assert main(["predict", str(classify_run), str(crop_path), "--out", str(out), "--explain"]) == 0
    (row,) = _csv_rows((out / "predictions.csv").read_text())
    return row, read_image(out / row["heatmap"])


def test_models_describe_the_classifier(classify_client, classify_run: Path, trained_run: Path):
    info = classify_client.get("/api/models").json()
    assert info["default"] == classify_run.name
    models = {m["name"]: m for m in info["models"]}
    model = models[classify_run.name]
    assert model["task"] == "classify" and model["architecture"] == "simple_cnn_tiny"
    assert model["in_channels"] == 3 and model["image_size"] == 24
    assert [c["name"] for c in model["classes"]] == CLASSES
    assert [c["id"] for c in model["classes"]] == list(range(5))
    colors = [c["color"] for c in model["classes"]]
    assert all(c.startswith("#") and len(c) == 7 for c in colors)
    assert len(set(colors)) == 5 and "#000000" not in colors  # class 0 is a class, not a black background
    assert models[trained_run.name]["task"] == "semantic"


def test_answer_has_class_probabilities_and_grad_cam(answer, classify_run: Path, crop_path: Path):
    from medseg.workflows.classify import ClassificationPredictor

    assert answer["task"] == "classify" and answer["model"] == classify_run.name
    assert (answer["width"], answer["height"], answer["channels"]) == (32, 32, 3)
    probabilities = answer["probabilities"]
    assert [p["name"] for p in probabilities] == CLASSES
    assert [p["id"] for p in probabilities] == list(range(5))
    values = np.array([p["probability"] for p in probabilities])
    assert values.sum() == pytest.approx(1.0) and (values >= 0).all()
    prediction = answer["prediction"]
    assert prediction["class"] == CLASSES[int(values.argmax())] == CLASSES[prediction["id"]]
    assert prediction["probability"] == values.max()
    assert answer["heatmap"]["class"] == prediction["class"] and answer["heatmap"]["method"] == "gradcam"
    # the same numbers as the run's own predictor
    expected = ClassificationPredictor.from_run(classify_run, device="cpu").predict(read_image(crop_path))
    np.testing.assert_allclose(values, expected.probabilities, atol=1e-6)

    original = _decode_png(answer["image_png_base64"])
    np.testing.assert_array_equal(original, read_image(crop_path))
    overlay = _decode_png(answer["overlay_png_base64"])
    heatmap = _decode_png(answer["heatmap_png_base64"])
    assert overlay.shape == heatmap.shape == (32, 32, 3)
    # the overlay is the heatmap blended half-and-half over the image (heatmap_overlay's default)
    blended = 0.5 * original.astype(float) + 0.5 * heatmap.astype(float)
    assert np.abs(overlay - blended).max() <= 1.0
    assert "classes" not in answer and "mask_png_base64" not in answer


def test_api_equals_cli_predict_explain(classify_client, answer, cli_prediction):
    row, cli_overlay = cli_prediction
    assert answer["prediction"]["class"] == row["class"]
    assert float(row["probability"]) == round(answer["prediction"]["probability"], 6)
    for p in answer["probabilities"]:
        assert float(row[f"p_{p['name']}"]) == round(p["probability"], 6)
    np.testing.assert_array_equal(_decode_png(answer["overlay_png_base64"]), cli_overlay)

    links = answer["downloads"]
    assert set(links) == {"heatmap_png", "predictions_csv"}
    heat = classify_client.get(links["heatmap_png"])
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(heat.content))), cli_overlay)
    table = classify_client.get(links["predictions_csv"])
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    stem = answer["filename"].rsplit(".", 1)[0]
    assert table.headers["content-disposition"] == f'attachment; filename="{stem}_predictions.csv"'
    (downloaded,) = _csv_rows(table.text)
    expected = {k: v for k, v in row.items() if k != "heatmap"}
    assert list(downloaded) == list(expected)  # file, class, probability, p_<class>...
    assert {**downloaded, "file": ""} == {**expected, "file": ""}
    assert downloaded["file"] == answer["filename"]


def test_segmentation_downloads_do_not_exist_for_classifiers(
    classify_client, answer, phantom_path: Path, trained_run: Path
):
    for name in ("mask.png", "mask.tif", "overlay.png", "counts.csv", "objects.csv"):
        response = classify_client.get(f"/api/results/{answer['id']}/{name}")
        assert response.status_code == 404
        assert "is a classification model" in response.json()["detail"]
        assert "heatmap.png and predictions.csv" in response.json()["detail"]
    semantic = _post(classify_client, phantom_path.read_bytes(), "blood.png", model=trained_run.name).json()
    assert semantic["task"] == "semantic" and "heatmap_png" not in semantic["downloads"]
    response = classify_client.get(f"/api/results/{semantic['id']}/heatmap.png")
    assert response.status_code == 404 and "is a segmentation model" in response.json()["detail"]


def test_bad_uploads_to_a_classifier_are_one_line_4xx(classify_client):
    two = io.BytesIO()
    tifffile.imwrite(two, np.zeros((32, 32, 2), np.uint8), photometric="minisblack", metadata={"axes": "YXC"})
    for data, status, needle in [
        (b"name,value\na,1\n", 415, "not an image"),
        (b"", 422, "empty"),
        (two.getvalue(), 422, "2 channel(s) but the model expects 3"),
    ]:
        response = _post(classify_client, data, "upload.tif")
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert needle in detail and "\n" not in detail and "Traceback" not in detail


def test_grey_image_is_classified_as_repeated_rgb(classify_client, crop_path: Path):
    grey = read_image(crop_path).mean(axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    as_grey = _post(classify_client, buffer.getvalue()).json()
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(buffer, format="PNG")
    as_rgb = _post(classify_client, buffer.getvalue()).json()
    assert as_grey["channels"] == 1 and as_rgb["channels"] == 3
    assert as_grey["probabilities"] == as_rgb["probabilities"]


def test_concurrent_requests_give_identical_answers(classify_client, crop_path: Path):
    data = crop_path.read_bytes()
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: _post(classify_client, data), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    bodies = [r.json() for r in responses]
    assert len({str(b["probabilities"]) for b in bodies}) == 1
    assert len({b["overlay_png_base64"] for b in bodies}) == 1
    assert len({b["id"] for b in bodies}) == 6


def test_classification_runs_need_the_torch_backend(classify_run: Path):
    from medseg.errors import MedsegError
    from medseg.web import create_app

    with pytest.raises(MedsegError, match="classification runs predict with torch"):
        create_app([classify_run], device="cpu", backend="onnxruntime")
