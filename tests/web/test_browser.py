"""The page in a real headless chromium driven by Playwright: upload a phantom, see the overlay and counts."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"{CHROMIUM} not found (`make test` installs Debian's chromium with apt-get when it can)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_upload_shows_overlay_counts_and_downloads(browser, live_server: str, phantom_path: Path, tmp_path):
    from PIL import Image
    from playwright import sync_api

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(phantom_path))
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)
    # the page's CSP forbids eval, so no wait_for_function; expect() polls without it
    sync_api.expect(page.locator("#overlay")).to_have_js_property("naturalWidth", 64)

    rows = page.locator("#counts tbody tr")
    assert rows.count() == 4
    table = [[cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()] for i in range(4)]
    assert [row[0] for row in table] == ["background", "red_cell", "wbc_cytoplasm", "wbc_nucleus"]
    pixels = [int(row[1].replace(",", "")) for row in table]
    assert sum(pixels) == 64 * 64
    assert all(row[2].endswith("%") for row in table)
    assert page.locator("#legend li").count() == 3
    assert page.get_attribute("#dl-mask-tiff", "href").endswith("/mask.tif")
    assert page.is_hidden("#dl-objects") and page.is_hidden("#differential")

    page.locator("#opacity").fill("20")
    assert page.locator("#overlay").evaluate("el => getComputedStyle(el).opacity") == "0.2"

    shot = tmp_path / "result.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels_rgb = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=np.float64)
    assert pixels_rgb.std() > 20, "the screenshot looks blank"
    assert errors == []
    page.close()


def test_instance_run_shows_object_counts_and_differential(
    browser, instance_live_server: str, instance_run: Path, trained_run: Path, phantom_path: Path, tmp_path
):
    from PIL import Image
    from playwright import sync_api

    from medseg.inference.predictor import Predictor
    from medseg.io import read_image
    from medseg.workflows.predict import segment_image

    expected = segment_image(Predictor.from_run(instance_run, device="cpu"), read_image(phantom_path))
    counts = {row["class"]: row for row in expected.counts}
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(instance_live_server)
    page.wait_for_selector("#model option", state="attached")
    assert page.input_value("#model") == instance_run.name
    assert "6 types" in page.inner_text("#model option:checked")
    page.set_input_files("#file", str(phantom_path))
    page.wait_for_selector("#counts tfoot tr.total", timeout=15_000)
    sync_api.expect(page.locator("#overlay")).to_have_js_property("naturalWidth", 64)

    assert page.inner_text("#counts-title") == "Objects"
    header = [h.strip() for h in page.locator("#counts thead th").all_inner_texts()]
    assert header == ["Class", "Count", "%"]
    total = [t.strip() for t in page.locator("#counts tfoot td").all_inner_texts()]
    assert total[:2] == ["Total objects", str(len(expected.objects))]
    # the most frequent white-cell type: its count and its share of the differential
    name = max(expected.counts[1:-1], key=lambda row: row["count"])["class"]
    row = [t.strip() for t in page.locator(f'#counts tbody tr[data-class="{name}"] td').all_inner_texts()]
    assert row[:2] == [name, str(counts[name]["count"])]
    if counts[name]["percent"] == "":  # no white cells found at all
        assert row[2] == "–"
    else:
        assert row[2].endswith(" %") and float(row[2][:-2]) == pytest.approx(
            counts[name]["percent"], abs=0.051
        )
    red = [t.strip() for t in page.locator('#counts tbody tr[data-class="red_cell"] td').all_inner_texts()]
    assert red == ["red_cell", str(counts["red_cell"]["count"]), "–"]  # not a white cell
    assert page.locator("#counts tbody tr").count() == 6
    assert page.inner_text("#differential-title") == "Differential white-cell count"
    assert page.locator("#differential-bars li").count() == 5
    assert [t.strip() for t in page.locator("#legend li").all_inner_texts()] == [
        c.name for c in expected.classes[1:]
    ]
    assert page.get_attribute("#dl-objects", "href").endswith("/objects.csv")
    assert page.is_visible("#dl-objects")

    shot = tmp_path / "instance.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels_rgb = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=np.float64)
    assert pixels_rgb.std() > 20, "the screenshot looks blank"

    # switching to the semantic model segments the image again and brings back the pixel table
    page.select_option("#model", trained_run.name)
    sync_api.expect(page.locator("#counts-title")).to_have_text("Counts", timeout=15_000)
    sync_api.expect(page.locator("#counts tbody tr")).to_have_count(4)
    header = [h.strip() for h in page.locator("#counts thead th").all_inner_texts()]
    assert header[:3] == ["Class", "Pixels", "Fraction"]
    assert page.locator("#counts tfoot tr").count() == 0
    assert page.is_hidden("#dl-objects") and page.is_hidden("#differential")
    assert errors == []
    page.close()


def test_bad_file_shows_a_message_not_a_trace(browser, live_server: str, tmp_path: Path):
    notes = tmp_path / "notes.png"
    notes.write_text("not really a picture")
    page = browser.new_page()
    page.goto(live_server)
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    message = page.inner_text("#error")
    assert "not an image medseg can read" in message and "Traceback" not in message
    assert page.is_hidden("#result")
    page.close()


def test_classification_run_shows_prediction_and_grad_cam(
    browser, classify_live_server: str, classify_run: Path, trained_run: Path, crop_path: Path, tmp_path
):
    from PIL import Image
    from playwright import sync_api

    from medseg.io import read_image
    from medseg.workflows.classify import ClassificationPredictor

    predictor = ClassificationPredictor.from_run(classify_run, device="cpu")
    expected = predictor.predict(read_image(crop_path), str(crop_path))
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(classify_live_server)
    page.wait_for_selector("#model option", state="attached")
    assert page.input_value("#model") == classify_run.name
    assert "classifier, 5 classes" in page.inner_text("#model option:checked")
    assert page.locator("#empty-classes li").count() == 5  # the first class is a class, not a background
    page.set_input_files("#file", str(crop_path))
    page.wait_for_selector("#prediction-card:not([hidden])", timeout=15_000)
    sync_api.expect(page.locator("#overlay")).to_have_js_property("naturalWidth", 32)

    assert page.inner_text("#predicted-class") == expected.name
    shown = page.inner_text("#predicted .predicted-probability")
    assert float(shown.rstrip(" %")) == pytest.approx(100 * expected.confidence, abs=0.051)
    bars = page.locator("#probability-bars li")
    assert bars.count() == 5
    assert [bars.nth(i).get_attribute("data-class") for i in range(5)] == predictor.class_names
    assert page.get_attribute("#probability-bars li.top", "data-class") == expected.name
    assert page.inner_text("#overlay-caption") == f"Grad-CAM · {expected.name}"
    assert page.is_hidden("#counts-card") and page.is_hidden("#legend") and page.is_visible("#heat-scale")
    assert page.get_attribute("#dl-heatmap", "href").endswith("/heatmap.png")
    assert page.get_attribute("#dl-predictions", "href").endswith("/predictions.csv")
    for link in ("#dl-mask-png", "#dl-mask-tiff", "#dl-overlay", "#dl-csv", "#dl-objects"):
        assert page.is_hidden(link)

    page.locator("#opacity").fill("0")
    assert page.locator("#overlay").evaluate("el => getComputedStyle(el).opacity") == "0"
    page.locator("#opacity").fill("50")
    shot = tmp_path / "classify.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels_rgb = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=np.float64)
    assert pixels_rgb.std() > 20, "the screenshot looks blank"

    # the semantic model beside it segments the same image: the pixel table is back, the prediction gone
    page.select_option("#model", trained_run.name)
    sync_api.expect(page.locator("#counts-title")).to_have_text("Counts", timeout=15_000)
    sync_api.expect(page.locator("#counts tbody tr")).to_have_count(4)
    assert page.is_hidden("#prediction-card") and page.is_hidden("#heat-scale") and page.is_visible("#legend")
    assert page.is_hidden("#dl-heatmap") and page.is_visible("#dl-mask-png")
    assert page.inner_text("#overlay-caption") == "Overlay"
    assert errors == []
    page.close()
