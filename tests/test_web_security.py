"""The explorer obeys only its own page: foreign Origins and unknown Host headers are refused."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

import convlens as cl
from convlens.web import BackgroundServer
from convlens.web.security import allowed_hosts

from .conftest import tiny_convnet

EVIL = "http://evil.example"


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    tiny = cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit", name="tiny")
    with BackgroundServer(tiny) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def counts(server) -> tuple[int, int]:
    explorer = server.app.state.explorer
    return len(explorer.jobs), len(explorer.store)


def start_filters(client, headers):
    return client.post("/api/filters/3", params={"channels": 2}, headers=headers)


def upload(client, headers):
    return client.post("/api/images", files={"file": ("a.png", png_bytes(), "image/png")},
                       headers=headers)


def refused(response, status: int, words: str) -> None:
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail


def test_dns_rebinding_host_is_refused_and_nothing_starts(server, client):
    before = counts(server)
    rebound = {"Host": f"evil.example:{server.port}", "Origin": f"{EVIL}:{server.port}"}
    refused(start_filters(client, rebound), 400, "unknown Host header 'evil.example")
    refused(upload(client, rebound), 400, "--allowed-host")
    refused(client.get("/api/models", headers={"Host": "evil.example"}), 400, "Host")
    refused(client.get("/", headers={"Host": f"evil.example:{server.port}"}), 400, "Host")
    assert counts(server) == before


def test_foreign_origin_is_refused_on_every_change_and_nothing_starts(server, client):
    before = counts(server)
    for origin in (EVIL, "null", f"http://localhost:{server.port + 1}", "file://"):
        refused(start_filters(client, {"Origin": origin}), 403, "cross-origin request refused")
        refused(upload(client, {"Origin": origin}), 403, "use the explorer's own page")
        refused(client.post("/api/images/sample/coffee", headers={"Origin": origin}), 403, "")
        refused(client.delete("/api/jobs/x", headers={"Origin": origin}), 403, "")
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    refused(start_filters(client, cross_site), 403, "cross-site request refused")
    assert counts(server) == before


def test_cross_site_reads_of_the_api_are_refused_but_the_page_opens(client):
    refused(client.get("/api/models", headers={"Origin": EVIL}), 403, "cross-origin")
    refused(client.get("/api/samples", headers={"Sec-Fetch-Site": "cross-site"}), 403, "")
    refused(client.get("/api/samples", headers={"Sec-Fetch-Site": "same-site"}), 403, "")
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert client.get("/", headers=navigate).status_code == 200  # a link to the explorer
    assert client.get("/api/samples", headers={"Sec-Fetch-Site": "same-origin"}).is_success


def test_the_pages_own_origin_and_plain_clients_work(server, client):
    jobs, images = counts(server)
    for origin in (server.url, f"http://localhost:{server.port}"):
        page = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
        assert upload(client, page).status_code == 201
        assert start_filters(client, page).status_code == 202
        assert client.get("/api/models", headers=page).status_code == 200
    assert client.post("/api/images/sample/coffee").status_code == 201  # curl: no Origin
    for host in (f"localhost:{server.port}", f"LOCALHOST:{server.port}"):
        assert client.get("/api/samples", headers={"Host": host}).status_code == 200
    assert counts(server) == (jobs + 1, images + 3)  # same gallery twice: one job


def test_extra_names_and_wildcard_for_lan_use():
    tiny = cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit", name="tiny")
    with BackgroundServer(tiny, allowed_hosts=["lan.box"]) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        lan = {"Host": f"lan.box:{server.port}", "Origin": f"http://lan.box:{server.port}"}
        assert c.post("/api/images/sample/coffee", headers=lan).status_code == 201
        assert c.get("/api/samples", headers={"Host": f"lan.box:{server.port + 1}"}).status_code \
            == 400  # another port is another server
    with BackgroundServer(tiny, allowed_hosts=["*"]) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        anywhere = {"Host": "whatever.example", "Origin": "http://whatever.example"}
        assert c.post("/api/images/sample/coffee", headers=anywhere).status_code == 201
        refused(c.post("/api/images/sample/coffee", headers={"Origin": EVIL}), 403, "")


def test_allowed_hosts_from_the_bound_address():
    assert allowed_hosts("127.0.0.1", 8000) == {
        ("127.0.0.1", 8000), ("localhost", 8000), ("[::1]", 8000)
    }
    assert ("10.0.0.5", 80) in allowed_hosts("10.0.0.5", 80)
    assert ("0.0.0.0", 80) not in allowed_hosts("0.0.0.0", 80)  # a wildcard is no name
    assert allowed_hosts("::1", 9, ["box:7", "::2"]) >= {("box", 7), ("[::2]", 9), ("[::1]", 9)}
    assert allowed_hosts("127.0.0.1", None) >= {("localhost", None)}  # any port
    assert allowed_hosts("127.0.0.1", 1, ["*"]) is None
    with pytest.raises(cl.ConvlensError, match="--allowed-host"):
        allowed_hosts("127.0.0.1", 1, ["a:b"])
