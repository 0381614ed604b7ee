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

    page.locator("#opacity").fill("20")
    assert page.locator("#overlay").evaluate("el => getComputedStyle(el).opacity") == "0.2"

    shot = tmp_path / "result.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels_rgb = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), dtype=np.float64)
    assert pixels_rgb.std() > 20, "the screenshot looks blank"
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
