"""The app in a real headless browser: Playwright driving Debian's chromium (browser downloads are impossible here)."""
from __future__ import annotations

import os

import pytest
from playwright.sync_api import sync_playwright

from app_server import ARTIFACTS, shared_app

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("RIID_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_page_generates_an_image(tiny_pipeline_dir, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; "
                    "scripts/test.sh does this when run as root) or point RIID_CHROMIUM at a chromium binary")
    url, _ = shared_app(tiny_pipeline_dir, tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            page.locator("#generate").wait_for(timeout=120_000)

            height = page.locator("#height input[type=number]")
            height.fill("48")
            height.press("Enter")
            page.locator("#n-images input[type=number]").fill("1")
            page.locator("#n-images input[type=number]").press("Enter")
            width = int(page.locator("#width input[type=number]").input_value())
            page.locator("#generate").click()

            image = page.locator("#result img")
            image.wait_for(timeout=120_000)
            page.wait_for_function("() => { const i = document.querySelector('#result img');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=120_000)
            natural = image.evaluate("i => [i.naturalHeight, i.naturalWidth]")
            page.locator("#summary").get_by_text("image(s) of").wait_for(timeout=60_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
        finally:
            browser.close()
    assert natural == [48, width]
