"""The app in a real headless browser, as a visitor meets it: Playwright driving Debian's chromium (browser
downloads are impossible here), on the shipped weights in a 1400×900 window."""
from __future__ import annotations

import io
import math
import os
import time

import numpy as np
import psutil
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from app_server import ARTIFACTS, REPO, shared_app
from riid import cost
from riid.pipeline import load_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("RIID_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 120_000
expect.set_options(timeout=WAIT_MS)
LONG = dict(n=8, height=64, steps=100)  # accepted under the limit below, yet long enough to be stopped
TOO_LONG = dict(n=16, height=1024, steps=100)  # refused


@pytest.fixture(scope="module")
def time_limit() -> int:
    """This server's request limit, from riid.cost (whatever its calibration): LONG fits, TOO_LONG does not."""
    pipe = load_pipeline(REPO / "checkpoints")
    seconds = {name: cost.seconds(pipe, r["n"], pipe.settings(r["height"], r["height"], steps=r["steps"]))
               for name, r in (("long", LONG), ("too long", TOO_LONG))}
    limit = math.ceil(1.5 * seconds["long"])
    assert seconds["too long"] > limit, seconds
    return limit


@pytest.fixture(scope="module")
def server(tmp_path_factory, time_limit):
    return shared_app(REPO / "checkpoints", tmp_path_factory.mktemp("browser"), RIID_APP_TIME_LIMIT_S=str(time_limit))


@pytest.fixture(scope="module")
def page(server):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; "
                    "scripts/test.sh does this when run as root) or point RIID_CHROMIUM at a chromium binary")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(server[0], wait_until="domcontentloaded")
            yield page
        finally:
            browser.close()


def gallery(page, count: int) -> list[np.ndarray]:
    """The gallery's images once ``count`` of them are loaded, as the server sent them."""
    page.wait_for_function("n => { const s = [...document.querySelectorAll('#gallery img')];"
                           " return s.length === n && s.every(i => i.complete && i.naturalWidth > 0); }", arg=count)
    sources = page.locator("#gallery img").evaluate_all("s => s.map(i => i.src)")
    return [np.asarray(Image.open(io.BytesIO(page.request.get(src).body()))) for src in sources]


def type_into(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Tab")


def choose_aspect(page, aspect: str) -> None:
    page.locator("#aspect").get_by_text(aspect, exact=True).click()


def request(page, *, height: str, n: str = "1", steps: str = "20", aspect: str = "1:1") -> None:
    choose_aspect(page, aspect)
    type_into(page, "height", height)
    type_into(page, "n-images", n)
    type_into(page, "steps", steps)


def generate(page, summary: str) -> None:
    page.locator("#generate").click()
    expect(page.locator("#summary")).to_contain_text(summary)


def error_toast(page, words: str) -> None:
    toast = page.locator(".toast-body", has_text=words)
    toast.first.wait_for()
    page.locator(".toast-close").evaluate_all("buttons => buttons.forEach(b => b.click())")


def test_first_visit_shows_results_with_generate_above_the_fold(page):
    images = gallery(page, 4)  # the first example, cached: nothing clicked
    assert [i.shape for i in images] == [(32, 32)] * 4 and all(i.std() > 10 for i in images)
    box = page.locator("#generate").bounding_box()
    assert box["y"] + box["height"] <= 900, "Generate is below the fold of a 1400×900 window"
    expect(page.locator("#summary")).to_contain_text("4 image(s) of 32×32 px")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"))
    seed = page.locator("#seed input").input_value()
    page.locator("#new-seed").click()
    expect(page.locator("#seed input")).not_to_have_value(seed)
    type_into(page, "seed", "0")


def test_a_decimal_size_is_rounded_and_an_empty_one_is_refused(page):
    request(page, height="33.7")
    expect(page.locator("#height input")).to_have_value("34")
    expect(page.locator("#width input")).to_have_value("34")
    generate(page, "1 image(s) of 34×34 px")
    assert [i.shape for i in gallery(page, 1)] == [(34, 34)]
    page.locator("#height input").fill("")
    page.locator("#generate").click()
    error_toast(page, "output height is empty: enter a whole number from 1 to 1024")
    assert [i.shape for i in gallery(page, 1)] == [(34, 34)]  # no 1×1 image in its place
    type_into(page, "height", "32")


def test_the_aspect_lock_holds_at_the_size_cap(page):
    choose_aspect(page, "9:16")  # height:width, a wide image
    type_into(page, "height", "1024")
    expect(page.locator("#height input")).to_have_value("576")
    expect(page.locator("#width input")).to_have_value("1024")
    expect(page.locator("#aspect input[value='9:16']")).to_be_checked()


def test_a_long_request_is_refused_naming_the_limit(page, time_limit):
    request(page, **{k: str(v) for k, v in TOO_LONG.items()})
    page.locator("#generate").click()
    error_toast(page, f"above the limit of {time_limit} s")


def test_stop_ends_a_running_request(page, server):
    request(page, **{k: str(v) for k, v in LONG.items()})
    page.locator("#generate").click()
    page.wait_for_function("() => document.body.innerText.includes('sampling step')")
    page.locator("#stop").click()
    expect(page.locator("#summary")).to_have_text("Stopped.")
    process = psutil.Process(server[1].pid)
    process.cpu_percent()
    time.sleep(2)
    assert process.cpu_percent() < 40, "the stopped request is still computing"


def test_tall_and_wide_digits_are_the_digit_asked_for(page):
    """1:3 and 3:1 with the shipped weights, judged by the shipped classifier (the old rule's 20×7 latent did not
    give 3s)."""
    from riid.checkpoint import load_model
    from riid.eval.classifier import prepare
    classifier = load_model(REPO / "checkpoints" / "classifier", "classifier").eval()
    images = []
    for aspect, size in (("3:1", "96×32"), ("1:3", "32×96")):
        request(page, height="96" if aspect == "3:1" else "32", n="2", aspect=aspect)
        generate(page, f"2 image(s) of {size} px (height×width) from {'20×12' if aspect == '3:1' else '12×20'}")
        images += gallery(page, 2)
    assert [i.shape for i in images] == [(96, 32)] * 2 + [(32, 96)] * 2
    with torch.no_grad():  # prepare() crops each digit to its ink and centres it on the classifier's square
        labels = [classifier(prepare(torch.tensor(i).float()[None, None] / 127.5 - 1)).argmax().item()
                  for i in images]
    assert labels == [3, 3, 3, 3]


def test_resample_draws_at_once_and_shows_large_unstretched_results(page):
    page.get_by_role("tab", name="Resample").click()
    canvas = page.locator("#sketch canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    x, top = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    page.mouse.move(x, top)
    page.mouse.down()  # no click on the brush first
    for step in range(1, 11):
        page.mouse.move(x, top + box["height"] * 0.06 * step)
    page.mouse.up()
    type_into(page, "r-height", "40")
    type_into(page, "r-width", "24")
    page.locator("#resample").click()
    expect(page.locator("#r-summary")).to_contain_text("→ 40×24 output")
    riae = page.locator("#r-riae img")
    riae.wait_for()
    assert riae.bounding_box()["height"] >= 200, "a 40×24 result must not be a thumbnail"
    for elem_id in ("r-latent-h", "r-latent-w"):
        expect(page.locator(f"#{elem_id} input[type=number]")).to_be_disabled()
    latent = page.locator("#r-summary").inner_text().split("→")[1].split()[0]  # e.g. "12×12"
    assert min(int(v) for v in latent.split("×")) == 12
    assert page.locator("#r-latent-h input[type=number]").input_value() == latent.split("×")[0]
