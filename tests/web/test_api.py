"""The JSON API with TestClient: good and bad uploads, limits, downloads, concurrency, the report."""

from __future__ import annotations

import base64
import csv
import io
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.io import read_image, read_label, write_image


def _post(client, data: bytes, name: str = "image.png", **form):
    return client.post("/api/predict", files={"file": (name, data, "application/octet-stream")}, data=form)


def _decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels but carries almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_healthz_and_models(client, trained_run: Path):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/api/models").json()
    assert info["default"] == trained_run.name
    (model,) = info["models"]
    assert model["task"] == "semantic" and model["architecture"] == "unet_tiny" and model["in_channels"] == 3
    assert [c["name"] for c in model["classes"]] == ["background", "red_cell", "wbc_cytoplasm", "wbc_nucleus"]
    assert all(c["color"].startswith("#") and len(c["color"]) == 7 for c in model["classes"])
    assert info["limits"]["max_upload_mb"] == 50


def test_page_and_docs_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and "https://" not in response.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/predict" in docs.text and "<script" not in docs.text
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_good_image(client, phantom_path: Path):
    response = _post(client, phantom_path.read_bytes(), "blood_000_0000.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["channels"]) == (64, 64, 3)
    assert body["task"] == "semantic" and body["filename"] == "blood_000_0000.png"
    assert sum(c["pixels"] for c in body["classes"]) == 64 * 64
    assert sum(c["fraction"] for c in body["classes"]) == pytest.approx(1.0)
    mask = _decode_png(body["mask_png_base64"])
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    assert [int((mask == c["id"]).sum()) for c in body["classes"]] == [c["pixels"] for c in body["classes"]]
    assert _decode_png(body["overlay_png_base64"]).shape == (64, 64, 3)
    assert _decode_png(body["image_png_base64"]).shape == (64, 64, 3)
    layer = _decode_png(body["color_mask_png_base64"])
    assert layer.shape == (64, 64, 4) and np.array_equal(layer[..., 3] > 0, mask > 0)


def test_api_mask_equals_cli_predict(client, trained_run: Path, phantom_path: Path, tmp_path: Path):
    from medseg.cli import main

    assert main(["predict", str(trained_run), str(phantom_path), "--out", str(tmp_path / "p")]) == 0
    body = _post(client, phantom_path.read_bytes(), "x.png").json()
    cli_mask = read_label(tmp_path / "p" / "masks" / "blood_000.png")
    assert np.array_equal(_decode_png(body["mask_png_base64"]), cli_mask)
    cli_overlay = read_image(tmp_path / "p" / "overlays" / "blood_000.png")
    assert np.array_equal(_decode_png(body["overlay_png_base64"]), cli_overlay)
    with open(tmp_path / "p" / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    for c in body["classes"]:
        assert float(row[f"fraction_{c['name']}"]) == pytest.approx(c["fraction"], abs=1e-6)


def test_downloads(client, phantom_path: Path):
    body = _post(client, phantom_path.read_bytes(), "../../etc/blood 1.png").json()
    assert body["filename"] == "blood_1.png"
    mask = _decode_png(body["mask_png_base64"])
    links = body["downloads"]
    png = client.get(links["mask_png"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"] == 'attachment; filename="blood_1_mask.png"'
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), mask)
    tif = client.get(links["mask_tiff"])
    assert np.array_equal(tifffile.imread(io.BytesIO(tif.content)), mask)
    overlay = client.get(links["overlay_png"])
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(overlay.content))), _decode_png(body["overlay_png_base64"])
    )
    rows = list(csv.DictReader(io.StringIO(client.get(links["counts_csv"]).text)))
    assert [r["class"] for r in rows] == [c["name"] for c in body["classes"]]
    assert [int(r["pixels"]) for r in rows] == [c["pixels"] for c in body["classes"]]
    assert client.get(f"/api/results/{body['id']}/secret.txt").status_code == 404
    assert client.get("/api/results/not-an-id/mask.png").status_code == 404


def _channels2_tiff() -> bytes:
    return _tiff_bytes(np.zeros((32, 32, 2), np.uint8), photometric="minisblack", metadata={"axes": "YXC"})


BAD_UPLOADS = {
    "text": (b"name,value\na,1\n", 415, "not an image"),
    "empty": (b"", 422, "empty"),
    "truncated png": (None, 422, "cannot read image"),
    "pdf": (b"%PDF-1.4\n" + b"\0" * 200, 415, "not an image"),
    "decompression bomb": (_png_header_only(50_000, 50_000), 422, "too many pixels"),
    "too many pixels": (_png_header_only(8_000, 6_000), 422, "8000x6000 = 48,000,000 pixels"),
    "two channels": (_channels2_tiff(), 422, "2 channel(s) but the model expects 3"),
    "z stack": (
        _tiff_bytes(np.zeros((5, 4, 32, 32), np.uint8), photometric="minisblack"),
        422,
        "expected a 2D image",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_are_one_line_messages(client, phantom_path: Path, kind: str):
    data, status, needle = BAD_UPLOADS[kind]
    if data is None:
        data = phantom_path.read_bytes()[:300]
    response = _post(client, data, "upload.png")
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert needle in detail and "\n" not in detail and "Traceback" not in detail


def test_dicom_upload_is_rescaled_and_segmented(client):
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # 128x128 CT, intercept -1024
    response = client.post("/api/predict", files={"file": ("ct.dcm", data, "application/dicom")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (128, 128)
    assert sum(c["pixels"] for c in body["classes"]) == 128 * 128


def test_unknown_model_and_missing_file(client, phantom_path: Path, trained_run: Path):
    response = _post(client, phantom_path.read_bytes(), model="nope")
    assert response.status_code == 404 and trained_run.name in response.json()["detail"]
    response = client.post("/api/predict", data={"model": trained_run.name})
    assert response.status_code == 422 and "file" in response.json()["detail"]


@pytest.fixture(scope="module")
def strict_client(trained_run: Path):
    from fastapi.testclient import TestClient

    from medseg.web import create_app

    app = create_app([trained_run, trained_run], max_upload_mb=0.01, max_pixels=1000, device="cpu")
    with TestClient(app) as test_client:
        yield test_client


def test_configured_limits(strict_client, trained_run: Path):
    names = [m["name"] for m in strict_client.get("/api/models").json()["models"]]
    assert names == [trained_run.name, f"{trained_run.name}_2"]
    noise = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    response = _post(strict_client, _png_bytes(noise))  # about 19 KB > 10 KB
    assert response.status_code == 413 and "0.01 MB" in response.json()["detail"]
    response = _post(strict_client, _tiff_bytes(noise[:40, :40]), "small.tif")  # 1600 px > 1000
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "small.tif: the image is 40x40 = 1,600 pixels; this server accepts at most 1,000 (--max-pixels)"
    )
    response = _post(strict_client, _png_bytes(noise[:30, :30]), model=f"{trained_run.name}_2")
    assert response.status_code == 200 and response.json()["model"] == f"{trained_run.name}_2"


def test_streamed_body_over_the_limit_is_413(strict_client):
    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    response = strict_client.post(
        "/api/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413


def test_concurrent_requests_give_identical_masks(client, phantom_path: Path):
    data = phantom_path.read_bytes()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _post(client, data), range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.json()["mask_png_base64"] for r in responses}) == 1
    assert len({r.json()["id"] for r in responses}) == 8


def test_report_is_built_when_missing_and_served_as_is(trained_run: Path, tmp_path: Path):
    from fastapi.testclient import TestClient

    from medseg.web import create_app

    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "report.html").unlink(missing_ok=True)
    with TestClient(create_app([run], device="cpu")) as test_client:
        response = test_client.get("/report/run")
        assert response.status_code == 200 and "wbc_nucleus" in response.text
        assert response.text == (run / "report.html").read_text(encoding="utf-8")
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert test_client.get("/report/other").status_code == 404


@pytest.mark.parametrize(
    "array, suffix",
    [
        (np.arange(24 * 20 * 3, dtype=np.uint8).reshape(24, 20, 3), ".png"),
        (np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 97, ".png"),
        (np.dstack([np.full((24, 20, 3), 90, np.uint8), np.full((24, 20), 255, np.uint8)]), ".png"),
        (np.arange(24 * 20 * 3, dtype=np.uint8).reshape(24, 20, 3), ".jpg"),
        (np.arange(24 * 20 * 3, dtype=np.uint8).reshape(24, 20, 3), ".bmp"),
        (np.linspace(0, 1, 24 * 20 * 2, dtype=np.float32).reshape(24, 20, 2), ".tif"),
    ],
)
def test_upload_decodes_like_read_image(tmp_path: Path, array: np.ndarray, suffix: str):
    from medseg.web import decode_upload

    path = write_image(tmp_path / f"image{suffix}", array)
    assert np.array_equal(decode_upload(path.read_bytes(), "image"), read_image(path))


def test_planar_tiff_decodes_like_read_image(tmp_path: Path):
    from medseg.web import decode_upload

    path = tmp_path / "planar.tif"
    planes = np.arange(3 * 30 * 40, dtype=np.uint16).reshape(3, 30, 40)
    tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")
    decoded = decode_upload(path.read_bytes())
    assert decoded.shape == (30, 40, 3) and np.array_equal(decoded, read_image(path))


def test_serve_command_reports_a_bad_run_in_one_line(tmp_path: Path, capsys):
    from medseg.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_palette_png_decodes_like_read_image(tmp_path: Path):
    from medseg.web import decode_upload

    image = Image.fromarray(np.arange(24 * 20, dtype=np.uint8).reshape(24, 20) % 7, mode="L").convert("P")
    image.putpalette([value for i in range(256) for value in (i, 255 - i, 40)])
    image.save(tmp_path / "palette.png")
    decoded = decode_upload((tmp_path / "palette.png").read_bytes())
    assert decoded.shape == (24, 20, 3) and np.array_equal(decoded, read_image(tmp_path / "palette.png"))
