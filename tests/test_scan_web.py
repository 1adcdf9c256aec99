"""The channel atlas in the explorer (`convlens serve --scan`) and on the command line: pages,
JSON facts, strips, filter pictures drawn as jobs, safety, and bad arguments."""

from __future__ import annotations

import io
import json
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from convlens.cli import main
from convlens.report.atlas import AtlasPages, filter_pictures
from convlens.scan import scan
from convlens.web import BackgroundServer

from .conftest import save_exported, tiny_convnet
from .test_scan import DEAD, dead_channel_model, write_folder

HOSTILE = "<img src=x onerror=alert(1)>.png"  # a file name that is also HTML


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A scan of a small ImageFolder (one corrupt file named like an HTML tag) and its model."""
    root = tmp_path_factory.mktemp("data")
    write_folder(root, per_class=6)
    (root / "cats" / HOSTILE).write_bytes(b"not an image")
    model = dead_channel_model()
    result = scan(model, root, root.parent / "scan", top_k=3, cam=False)
    return result, model


@pytest.fixture(scope="module")
def served(scanned):
    result, model = scanned
    with BackgroundServer({"tiny": model}, scan=result.folder, scan_model="tiny") as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def wait_for(client: httpx.Client, job: dict) -> dict:
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def jpeg(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)


def test_summary_census_and_pages_say_what_the_tables_say(scanned, served):
    result, _ = scanned
    facts = served.get("/api/scan").json()
    assert facts["images"] == len(result.images) == 12
    assert facts["skipped"] == 2 and facts["filters"] is True  # broken.png and HOSTILE
    assert facts["accuracy"] == pytest.approx(result.accuracy)
    channels = result.channels
    for row in facts["layers"]:
        mine = channels[channels["layer"] == row["name"]]
        assert (row["channels"], row["dead"], row["rare"]) == (
            len(mine), int(mine["dead"].sum()), int(mine["rare"].sum()))
        assert row["page"] == f"/scan/layers/{row['index']}.html"
    assert [c["name"] for c in facts["classes"]] == ["cats", "dogs"]

    index = served.get("/scan/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert 'href="/scan/layers/1.html"' in index.text
    assert HOSTILE not in index.text and "&lt;img src=x onerror=alert(1)&gt;.png" in index.text
    page = served.get("/scan/layers/0.html").text
    assert page.count(' id="c') == 8  # a card per channel of the first conv
    assert 'href="/scan/"' in page and "/static/scan.js" in page  # its filters can be drawn


def test_cards_and_strips_are_the_atlas_ones(scanned, served):
    result, _ = scanned
    layer = served.get("/api/scan/layers/1").json()
    assert layer["layer"]["name"] == "3" and len(layer["cards"]) == 16
    card = layer["cards"][4]
    top = result.top_images("3", 4)
    assert card["values"] == pytest.approx(top["value"].tolist())
    strip = served.get(card["strip"])
    assert strip.status_code == 200 and strip.headers["content-type"] == "image/jpeg"
    picture = jpeg(strip.content)
    assert picture.shape == (64, 3 * 66 - 2, 3)  # three 64 px patches, 2 px gaps
    offline = jpeg(AtlasPages(result).strip(1, 4))
    np.testing.assert_array_equal(picture, offline)  # the offline atlas's strip, byte for byte
    assert card["filter"] is None  # not drawn yet
    # no filter for a dead channel by default
    assert DEAD not in served.get("/api/scan/layers/0").json()["filter_choice"]


def test_bad_layers_and_channels_are_one_line_404s(served):
    for path in ("/api/scan/layers/2", "/scan/layers/9.html",
                 "/api/scan/layers/0/channels/8/strip.jpg",
                 "/api/scan/layers/-1/channels/0/strip.jpg"):
        answer = served.get(path)
        assert answer.status_code == 404, path
        assert "\n" not in answer.json()["detail"]
    assert served.get("/api/scan/layers/zero").status_code == 422
    missing = served.get("/api/scan/layers/0/channels/1/filter.jpg")
    assert missing.status_code == 404 and "POST" in missing.json()["detail"]


def test_filters_are_drawn_as_a_job_on_the_scans_model(scanned, served):
    _, model = scanned
    job = served.post("/api/scan/layers/0/filters", params={"channels": [1, 2]})
    assert job.status_code == 202 and job.json()["kind"] == "filters"
    done = wait_for(served, job.json())
    assert done["status"] == "done", done
    assert done["result"]["channels"] == [1, 2] and done["grid"]
    picture = served.get("/api/scan/layers/0/channels/2/filter.jpg")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    _, expected = filter_pictures(model, "0", [1, 2])  # same seed: the same pictures
    assert np.abs(jpeg(picture.content) - jpeg(expected[2])).mean() < 2
    cards = served.get("/api/scan/layers/0").json()["cards"]
    assert [c["channel"] for c in cards if c["filter"]] == [1, 2]
    page = served.get("/scan/layers/0.html").text
    assert 'src="/api/scan/layers/0/channels/2/filter.jpg"' in page
    # the same request is the same job
    assert served.post("/api/scan/layers/0/filters",
                       params={"channels": [2, 1]}).json()["id"] == done["id"]


def test_host_and_origin_are_checked(served):
    assert served.get("/api/scan", headers={"Host": "evil.example"}).status_code == 400
    foreign = served.post("/api/scan/layers/0/filters", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403


def test_a_scan_without_its_model_says_so(scanned):
    result, _ = scanned
    # no model: only the atlas (no default model is loaded)
    with BackgroundServer(scan=result.folder) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        home = client.get("/")
        assert home.status_code in (302, 307) and home.headers["location"] == "/scan/"
        facts = client.get("/api/scan").json()
        assert facts["filters"] is False and "came from Python" in facts["filter_note"]
        refused = client.post("/api/scan/layers/0/filters")
        assert refused.status_code == 409 and "came from Python" in refused.json()["detail"]
        page = client.get("/scan/layers/0.html").text
        assert "scan.js" not in page and "no filter picture" in page
        assert client.get("/api/models").json()["models"] == []
        assert server.app.state.slots == {}
    with BackgroundServer({"tiny": dead_channel_model()}) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/api/scan").status_code == 404


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


def test_serve_refuses_a_bad_scan_folder_before_it_starts(scanned, tmp_path, capsys):
    result, _ = scanned
    with socket.socket() as probe:  # a free port, which must stay free
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    for argv, words in (
        (["serve", "--scan", str(tmp_path / "nope"), "--port", port], "not a scan folder"),
        (["serve", "--scan", str(result.folder), "--port", port, "--model", "a.pt",
          "--model", "b.pt"], "one --model"),
    ):
        code, err = run_cli(argv, capsys)
        assert code == 2 and words in err and len(err.splitlines()) == 1, err
    with socket.socket() as again:
        again.bind(("127.0.0.1", int(port)))  # nothing listens there


def test_report_scan_bad_arguments_write_nothing(scanned, tmp_path, capsys):
    result, _ = scanned
    other = save_exported(tiny_convnet(classes=2, seed=7), tmp_path / "other.pt2")
    out = tmp_path / "atlas"
    cases = [
        (["--scan", str(tmp_path / "nope")], "not a scan folder"),
        (["--scan", str(result.folder), "chelsea"], "IMAGE arguments"),
        (["--scan", str(result.folder), "--model", other, "--input-size", "32",
          "--preprocess", "unit"], "not the model the scan ran"),
        (["--scan", str(result.folder), "--model", str(tmp_path / "missing.pt")], "missing.pt"),
    ]
    for argv, words in cases:
        code, err = run_cli(["report", *argv, "--out", str(out), "--quiet"], capsys)
        assert code == 2 and words in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    with pytest.raises(SystemExit) as parsed:
        main(["report", "--scan", str(result.folder), "--out", str(out), "--filter-channels",
              "-1"])
    assert parsed.value.code == 2 and "0 or more" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt2"]  # no staging left


def test_scan_cli_checks_source_and_out_before_the_model(scanned, tmp_path, capsys):
    result, _ = scanned
    missing_model = str(tmp_path / "missing.pt")
    code, err = run_cli(["scan", str(tmp_path / "nowhere"), "--model", missing_model,
                         "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "nowhere" in err and "missing.pt" not in err
    code, err = run_cli(["scan", str(result.manifest["data"]["root"]), "--model", missing_model,
                         "--out", str(result.folder)], capsys)
    assert code == 2 and "already holds a scan" in err
    assert not (tmp_path / "s").exists()


def test_report_draws_filters_with_the_model_the_scan_recorded(scanned, tmp_path, capsys):
    result, _ = scanned
    root = result.manifest["data"]["root"]
    model_file = save_exported(tiny_convnet(classes=2, seed=3), tmp_path / "tiny.pt2")
    scan_dir, atlas = tmp_path / "scan", tmp_path / "atlas"
    code, _ = run_cli(["scan", str(root), "--model", model_file, "--input-size", "32",
                       "--preprocess", "unit", "--out", str(scan_dir), "--top-k", "2",
                       "--no-cam", "--quiet"], capsys)
    assert code == 0
    source = json.loads((scan_dir / "manifest.json").read_text())["model"]["source"]
    assert source == {"path": model_file, "preprocess": "unit", "input_size": [32, 32]}
    code, _ = run_cli(["report", "--scan", str(scan_dir), "--out", str(atlas),
                       "--filter-channels", "3", "--filter-steps", "2", "--filter-size", "32",
                       "--quiet"], capsys)
    assert code == 0
    pages = AtlasPages(scan_dir)
    for index in range(2):
        chosen = pages.filter_choice(index, 3)
        assert len(chosen) == 3
        drawn = sorted(int(p.stem.split("-")[1])
                       for p in (atlas / "layers" / f"{index:03d}").glob("filter-*.jpg"))
        assert drawn == chosen
        page = (atlas / "layers" / f"{index:03d}.html").read_text()
        assert page.count('class="filter"') == 3 and page.count("no filter picture") == (
            pages.census[index]["channels"] - 3)
    # the model file gone: the atlas is still written, and its cards say why there are no filters
    (tmp_path / "tiny.pt2").rename(tmp_path / "moved.pt2")
    code, _ = run_cli(["report", "--scan", str(scan_dir), "--out", str(atlas), "--quiet"],
                      capsys)
    assert code == 0
    assert not list(atlas.rglob("filter-*.jpg"))
    page = (atlas / "layers" / "000.html").read_text()
    assert "cannot be loaded" in page and "no filter picture" in page


def test_the_digits_demo_records_its_model_for_the_atlas(tmp_path, capsys, one_thread):
    """`make demo`: the demo scans the built-in digits convnet, which the manifest names; the
    atlas loads it again by name (no file, nothing to trust) and draws filters, or says per
    layer why not."""
    from convlens.scan.demo import main as demo

    assert demo([str(tmp_path / "demo")]) == 0
    scan_dir = tmp_path / "demo" / "scan"
    source = json.loads((scan_dir / "manifest.json").read_text())["model"]["source"]
    assert source == {"path": "digits_convnet"}
    atlas = tmp_path / "atlas"
    code, _ = run_cli(["report", "--scan", str(scan_dir), "--out", str(atlas), "--quiet",
                       "--filter-channels", "1", "--filter-steps", "1"], capsys)
    assert code == 0
    assert len(list((atlas / "layers" / "000").glob("filter-*.jpg"))) == 1
    assert len(list((atlas / "layers" / "001").glob("filter-*.jpg"))) == 1
    assert "no filter pictures for this layer" in (atlas / "layers" / "002.html").read_text()
