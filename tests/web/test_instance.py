"""Instance runs in the web app: object counts, the differential count, objects.csv and the colour layer."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.io import read_image


def _post(client, path: Path, **form):
    files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
    return client.post("/api/predict", files=files, data=form)


def _decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def expected(instance_run: Path, phantom_path: Path):
    """What ``segment_image`` gives for the phantom with the instance run."""
    from medseg.inference.predictor import Predictor
    from medseg.workflows.predict import segment_image

    predictor = Predictor.from_run(instance_run, device="cpu")
    return segment_image(predictor, read_image(phantom_path), str(phantom_path))


@pytest.fixture(scope="module")
def answer(instance_client, phantom_path: Path) -> dict:
    response = _post(instance_client, phantom_path)
    assert response.status_code == 200, response.text
    return response.json()


def test_models_describe_instance_types_and_differential(instance_client, instance_run, trained_run):
    models = {m["name"]: m for m in instance_client.get("/api/models").json()["models"]}
    cells = models[instance_run.name]
    assert cells["task"] == "instance" and cells["typed"] is True
    types = ["red_cell", "neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"]
    assert [c["name"] for c in cells["classes"]] == ["background", *types]
    assert [c["id"] for c in cells["classes"]] == list(range(7))
    assert cells["classes"][1]["color"] == "#e63c3c"  # the dataset's red_cell colour, kept by name
    assert cells["differential"] == types[1:]
    semantic = models[trained_run.name]
    assert "differential" not in semantic and semantic["classes"][1]["name"] == "red_cell"


def test_predict_answers_the_counts_of_segment_image(answer: dict, expected):
    assert answer["task"] == "instance" and answer["typed"] is True
    assert answer["objects"] == len(expected.objects) > 0
    assert answer["counts"] == expected.counts
    assert answer["counts"][-1] == {"class": "total", "count": len(expected.objects), "percent": ""}
    percents = [r["percent"] for r in answer["counts"] if r["class"] in answer["differential"]]
    if any(r["count"] for r in answer["counts"] if r["class"] in answer["differential"]):
        assert sum(percents) == pytest.approx(100, abs=0.05)
    assert [(c["name"], c["pixels"]) for c in answer["classes"]] == [
        (c.name, c.pixels) for c in expected.classes
    ]
    mask = _decode_png(answer["mask_png_base64"])
    assert mask.dtype == np.uint16 and np.array_equal(mask, expected.labels)
    assert set(answer["downloads"]) == {"mask_png", "mask_tiff", "overlay_png", "counts_csv", "objects_csv"}


def test_color_layer_shows_each_object_in_its_type_colour(answer: dict, expected):
    from skimage.segmentation import find_boundaries

    layer = _decode_png(answer["color_mask_png_base64"])
    labels = expected.labels
    assert layer.shape == (*labels.shape, 4)
    assert np.array_equal(layer[..., 3] > 0, labels > 0)
    colors = {c["name"]: tuple(int(c["color"][i : i + 2], 16) for i in (1, 3, 5)) for c in answer["classes"]}
    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    assert (layer[edges, 3] == 255).all()
    for row in expected.objects:
        inside = (labels == row["label"]) & ~edges
        outline = (labels == row["label"]) & edges
        color = np.array(colors[row["class"]])
        assert (layer[inside, :3] == color).all() and (layer[inside, 3] < 255).all()
        assert (layer[outline, :3].astype(int) <= color).all()  # darker, so touching objects stay apart


def test_downloads_equal_the_files_of_medseg_predict(
    instance_client, answer, instance_run, phantom_path, tmp_path
):
    from medseg.cli import main

    tif_out, png_out = tmp_path / "tif", tmp_path / "png"
    args = ["predict", str(instance_run), str(phantom_path), "--out"]
    assert main([*args, str(tif_out)]) == 0
    assert main([*args, str(png_out), "--format", "png"]) == 0
    links = answer["downloads"]

    cli_tif = read_image(tif_out / "masks" / "blood_000.tif")
    tif = tifffile.imread(io.BytesIO(instance_client.get(links["mask_tiff"]).content))
    assert tif.dtype == cli_tif.dtype == np.uint16 and np.array_equal(tif, cli_tif)
    png = instance_client.get(links["mask_png"])
    assert png.headers["content-disposition"] == 'attachment; filename="blood_000_0000_mask.png"'
    png_mask = np.asarray(Image.open(io.BytesIO(png.content)))
    # medseg predict stores a PNG mask with fewer than 256 objects as 8-bit; the ids are the same
    assert png_mask.dtype == np.uint16
    assert np.array_equal(png_mask, read_image(png_out / "masks" / "blood_000.png"))
    overlay = np.asarray(Image.open(io.BytesIO(instance_client.get(links["overlay_png"]).content)))
    assert np.array_equal(overlay, read_image(tif_out / "overlays" / "blood_000.png"))

    def without_image(path: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k != "image"} for row in _csv_rows(path.read_text())]

    counts = instance_client.get(links["counts_csv"])
    assert counts.headers["content-type"].startswith("text/csv")
    assert _csv_rows(counts.text) == without_image(tif_out / "counts.csv")
    objects = instance_client.get(links["objects_csv"])
    assert objects.headers["content-disposition"] == 'attachment; filename="blood_000_0000_objects.csv"'
    rows = _csv_rows(objects.text)
    assert rows == without_image(tif_out / "objects.csv")
    assert len(rows) == answer["objects"]
    assert {int(r["label"]) for r in rows} == set(np.unique(tif).tolist()) - {0}


def test_semantic_results_have_no_objects_csv(instance_client, trained_run, phantom_path):
    body = _post(instance_client, phantom_path, model=trained_run.name).json()
    assert body["task"] == "semantic" and "objects" not in body and "counts" not in body
    assert "objects_csv" not in body["downloads"]
    response = instance_client.get(f"/api/results/{body['id']}/objects.csv")
    assert response.status_code == 404
    assert response.json()["detail"] == (
        f"objects.csv: {trained_run.name} is not an instance model, so its results have no objects"
    )
    rows = _csv_rows(instance_client.get(body["downloads"]["counts_csv"]).text)
    assert list(rows[0]) == ["class_id", "class", "pixels", "fraction"]  # semantic counts.csv unchanged


def test_more_objects_than_a_png_holds_are_offered_as_tiff(instance_client, phantom_path, monkeypatch):
    from medseg.workflows import predict as predict_module
    from medseg.workflows.predict import ClassCount, Segmentation

    labels = np.zeros((64, 64), np.int32)
    labels[:10, :10], labels[:10, 10:20], labels[30:40, 30:40] = 70_000, 70_001, 80_000

    def many_objects(predictor, image, source="image"):
        rows = [{"label": i, "class": "", "area": 100} for i in (70_000, 70_001, 80_000)]
        classes = [
            ClassCount(0, "background", (0, 0, 0), 3796, 0.93),
            ClassCount(1, "objects", (9, 9, 9), 300, 0.07),
        ]
        counts = [{"class": name, "count": 3, "percent": ""} for name in ("objects", "total")]
        return Segmentation(labels, image[..., :3], classes, instances=True, objects=rows, counts=counts)

    monkeypatch.setattr(predict_module, "segment_image", many_objects)
    body = _post(instance_client, phantom_path).json()
    assert body["mask_png_base64"] is None and "mask_png" not in body["downloads"]
    response = instance_client.get(f"/api/results/{body['id']}/mask.png")
    assert response.status_code == 404 and "take mask.tif" in response.json()["detail"]
    tif = tifffile.imread(io.BytesIO(instance_client.get(body["downloads"]["mask_tiff"]).content))
    assert tif.dtype == np.int32 and np.array_equal(tif, labels)


def test_color_layer_of_untyped_objects_gives_each_its_own_colour():
    from medseg.report.overlays import instance_colors
    from medseg.web.app import color_layer
    from medseg.workflows.predict import ClassCount, Segmentation

    labels = np.zeros((12, 12), np.int32)
    labels[2:10, 1:6], labels[2:10, 6:11] = 3, 8  # two touching objects
    objects = [{"label": 3, "class": ""}, {"label": 8, "class": ""}]
    classes = [
        ClassCount(0, "background", (0, 0, 0), 64, 0.4),
        ClassCount(1, "objects", (230, 159, 0), 80, 0.5),
    ]
    segmentation = Segmentation(labels, np.zeros((12, 12, 3), np.uint8), classes, True, objects, [])
    layer = color_layer(segmentation)
    assert (layer[labels == 0] == 0).all()
    own = instance_colors(np.array([3, 8]))
    assert (layer[5, 2, :3] == own[0]).all() and (layer[5, 9, :3] == own[1]).all()
    assert layer[5, 2, 3] == layer[5, 9, 3] < 255
    # where the objects touch, both sides are outlined: opaque and darker than the fills
    for column, color in ((5, own[0]), (6, own[1])):
        outline = layer[5, column, :3].astype(int)
        assert layer[5, column, 3] == 255 and (outline <= color).all() and outline.sum() < color.sum()
