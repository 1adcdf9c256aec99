"""End to end: the generated report opens in Chromium with the network off, every picture loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

import convlens as cl
from convlens.render import colormap_lut
from convlens.report import ReportOptions, build_report

pytestmark = pytest.mark.browser
TIMEOUT_MS = 60_000  # generous: the 2-core CI machine may be busy
expect.set_options(timeout=TIMEOUT_MS)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def report_file(default_model, tmp_path_factory) -> tuple[Path, int]:
    options = ReportOptions(
        cam_methods=["gradcam", "eigencam"], cam_classes=2, metric_steps=3,
        activation_layers=["_conv_stem", "_blocks.11._depthwise_conv", "_conv_head"],
        filter_layers=["_conv_stem"], filter_channels=4, filter_steps=2, progress=False,
    )
    report = build_report(default_model, ["chelsea"], options)
    return report.save(tmp_path_factory.mktemp("report")), len(report.pictures)


def test_report_opens_offline_and_every_image_loads(report_file, default_model):
    path, pictures = report_file
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make browser` installs it"
    asked: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_offline(True)

        def block(route):
            asked.append(route.request.url)
            route.abort()

        context.route(lambda url: not url.startswith(("file:", "data:")), block)
        page = context.new_page()
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "all => all.map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        assert len(images) == pictures  # one <img> per picture: photo, 2 + 2 CAM, 3 grids, filters
        broken = [alt for complete, width, alt in images if not (complete and width > 0)]
        assert broken == []
        assert asked == []  # nothing was fetched from anywhere

        # Click channel 21 (row 1, column 5) of the stem's grid: it opens large.
        grid = page.locator('img.grid[data-layer="_conv_stem"]')
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        natural = grid.evaluate("i => [i.naturalWidth, i.naturalHeight]")
        assert natural == [16 * 113 - 1, 2 * 113 - 1]
        page.mouse.click(box["x"] + (5 * 113 + 50) * box["width"] / natural[0],
                         box["y"] + (1 * 113 + 50) * box["height"] / natural[1])
        expect(page.locator("#channel")).to_be_visible()
        expect(page.locator("#channel-title")).to_have_text("_conv_stem · channel 21")
        drawn = page.evaluate(
            "() => { const c = document.getElementById('channel-canvas');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " return [c.width, c.height, Array.from(d.filter((_, i) => i % 4 < 3))]; }"
        )
        browser.close()
    assert drawn[:2] == [112, 112]
    # The canvas shows channel 21 itself: its standardized values through viridis.
    acts = default_model.activations(["chelsea"], layers=["_conv_stem"])["_conv_stem"][0]
    cell = cl.activation_grid(acts)[113 : 113 + 112, 5 * 113 : 5 * 113 + 112]
    expected = colormap_lut("viridis")[cell]
    assert np.array_equal(np.array(drawn[2], dtype=np.uint8).reshape(112, 112, 3), expected)
