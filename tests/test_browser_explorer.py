"""End to end: the explorer in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

import convlens as cl
from convlens.web import BackgroundServer

from .conftest import tiny_convnet

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 60_000  # generous: the 2-core CI machine may be busy
expect.set_options(timeout=TIMEOUT_MS)


def grid_size(cell: int, channels: int, per_row: int = 16) -> tuple[int, int]:
    rows = -(-channels // per_row)
    return per_row * (cell + 1) - 1, rows * (cell + 1) - 1


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make browser` installs it"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(default_model):
    tiny = cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit", name="tiny")
    with BackgroundServer({"efficientnet_lite0": default_model, "tiny": tiny}) as running:
        yield running


@pytest.fixture
def page(browser, server) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    expect(page.locator("#samples button")).to_have_count(len(cl.SAMPLES))
    expect(page.locator("#status")).to_have_text("ready")
    yield page
    context.close()


def natural_size(page: Page, selector: str) -> tuple[int, int]:
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i.complete && i.naturalWidth > 0; }",
        arg=selector,
    )
    return tuple(page.eval_on_selector(selector, "i => [i.naturalWidth, i.naturalHeight]"))


def test_upload_predict_browse_layers_and_cam(page: Page, default_model, tmp_path):
    cat = tmp_path / "cat.png"
    Image.fromarray(cl.sample_image("chelsea").astype(np.uint8)).save(cat)
    # The model's own answer for this file (asked before the server shares the model: a model
    # must not run in two threads at once, the server's lock only covers the server's calls).
    top = default_model.predict(str(cat), top=5)[0]
    assert top[0].name in ("Egyptian Mau", "tiger cat")
    page.set_input_files("#upload", str(cat))

    # Predictions: a cat.
    first = page.locator("#predictions li").first
    expect(first).to_contain_text(top[0].name)
    expect(page.locator("#predictions li")).to_have_count(5)
    expect(page.locator("#image-name")).to_have_text("cat.png · 451×300")

    # The default layer's grid, then another layer's, at their natural sizes.
    stem = default_model.layer("_conv_stem").output_shape
    expect(page.locator("#grid")).to_be_visible()
    assert natural_size(page, "#grid") == grid_size(stem[1], stem[3])
    layer = "_blocks.11._depthwise_conv"
    page.select_option("#layer-select", layer)
    page.wait_for_function(f"document.querySelector('#grid').dataset.layer === '{layer}'")
    assert natural_size(page, "#grid") == grid_size(7, 672)
    expect(page.locator("#layer-facts")).to_contain_text("7×7×672")

    # Click the cell of channel 35 (row 2, column 3): it is shown large.
    box = page.locator("#grid").bounding_box()
    width, height = grid_size(7, 672)
    page.mouse.click(box["x"] + (3 * 8 + 4) * box["width"] / width,
                     box["y"] + (2 * 8 + 4) * box["height"] / height)
    expect(page.locator("#channel-caption")).to_contain_text(f"{layer} · channel 35")
    box = page.locator("#grid").bounding_box()  # the panel took room: the grid may be smaller
    mark = page.locator("#grid-mark").bounding_box()  # the cell is outlined on the grid
    assert abs(mark["x"] + 2 - (box["x"] + 3 * 8 * box["width"] / width)) < 1.5
    assert abs(mark["y"] + 2 - (box["y"] + 2 * 8 * box["height"] / height)) < 1.5
    assert abs(mark["width"] - 4 - 7 * box["width"] / width) < 1.5
    assert natural_size(page, "#channel")[0] >= 256

    # CAM: the top class by default; another method gives another picture.
    expect(page.locator("#cam-caption")).to_contain_text(f"gradcam · {top[0].name}")
    gradcam = page.get_attribute("#cam-image", "src")
    page.select_option("#cam-method", "eigencam")
    expect(page.locator("#cam-caption")).to_contain_text(f"eigencam · {top[0].name}")
    assert page.get_attribute("#cam-image", "src") != gradcam
    assert natural_size(page, "#cam-image") == (224, 224)
    page.locator("#predictions li").nth(1).click()  # another class, from the predictions
    expect(page.locator("#cam-caption")).to_contain_text(f"eigencam · {top[1].name}")


def test_sample_then_bad_upload_shows_a_clear_error(page: Page, tmp_path):
    page.click("#samples button >> text=coffee")
    expect(page.locator("#predictions li").first).to_contain_text("espresso")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    page.set_input_files("#upload", str(text))
    expect(page.locator("#status")).to_contain_text("not an image")
    expect(page.locator("#status")).to_have_class("error")
    # The coffee's views finish later; their "ready" must not hide the error.
    expect(page.locator("#cam-caption")).to_contain_text("espresso")
    page.wait_for_function("document.querySelector('#grid').complete")
    expect(page.locator("#status")).to_contain_text("not an image")


def test_filter_gallery_with_progress_on_a_second_model(page: Page):
    page.select_option("#model-select", "tiny")
    expect(page.locator("#model-facts")).to_contain_text("3 classes")
    page.select_option("#filters-layer", "3")
    page.fill("#filters-channels", "4")
    page.click("#filters-run")
    expect(page.locator("#filters-image")).to_be_visible()
    w, h = natural_size(page, "#filters-image")
    assert w == 4 * h + 3 * 5  # four square filters, 5 px margins
    expect(page.locator("#filters-note")).to_contain_text("channels 0–3")


def test_score_cam_runs_as_a_job_from_the_page(page: Page, server):
    page.click("#samples button >> text=coffee")
    expect(page.locator("#cam-caption")).to_contain_text("gradcam · espresso")
    page.select_option("#cam-method", "scorecam")
    expect(page.locator("#cam-caption")).to_contain_text("scorecam · espresso")
    assert any(j.kind == "cam" and j.params["method"] == "scorecam" and j.status == "done"
               for j in server.app.state.jobs.snapshot())
