"""Fuzzing the explorer's HTTP API (Hypothesis): random paths, parameters and bodies.

Whatever arrives, the answer is a status below 500 with a one-line JSON detail (never a
traceback), and the server keeps answering. Deterministic (derandomized) and bounded in count.
"""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import convlens as cl
from convlens.web import BackgroundServer

from .conftest import tiny_convnet

EXAMPLES = 250
ROUTES = [  # (method, path template): the API's own routes, and some that are not
    ("GET", "/"), ("GET", "/api/models"), ("GET", "/api/samples"), ("GET", "/api/layers"),
    ("POST", "/api/images"), ("POST", "/api/images/sample/{s}"), ("GET", "/api/images/{id}.jpg"),
    ("GET", "/api/images/{id}/predictions"), ("GET", "/api/images/{id}/activations/{layer}"),
    ("GET", "/api/images/{id}/activations/{layer}.png"),
    ("GET", "/api/images/{id}/activations/{layer}/channels/{n}.png"),
    ("GET", "/api/images/{id}/cam"), ("POST", "/api/images/{id}/cam"),
    ("POST", "/api/filters/{layer}"), ("GET", "/api/jobs/{s}"), ("DELETE", "/api/jobs/{s}"),
    ("GET", "/api/jobs/{s}/grid.png"), ("GET", "/static/{s}"), ("GET", "/api/{s}"),
    ("GET", "{s}"), ("GET", "/api/openapi.json"),
]
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]
KEYS = ["model", "top", "method", "target", "layer", "recipe", "channels", "x"]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
numbers = st.integers(-(2**70), 2**70).map(str)
values = st.one_of(texts, numbers, st.sampled_from(
    ["gradcam", "grad-cam", "GradCAM", "gradcam++", "scorecam", "ablationcam", "eigencam",
     "tiny", "chollet", "lucid", "0", "3", "2", "-1", "1e9", "nan", ""]))


@pytest.fixture(scope="module")
def server():
    tiny = cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit", name="tiny")
    with BackgroundServer(tiny, max_upload_bytes=100_000, job_capacity=4) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def image_id(client) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    return client.post("/api/images", files={"file": ("a.png", buf.getvalue())}).json()["id"]


@st.composite
def requests(draw, image_id: str) -> dict:
    fill = {
        "id": image_id if draw(st.booleans()) else draw(texts),
        "layer": draw(st.sampled_from(["0", "2", "3", "4", "7"])) if draw(st.booleans())
        else draw(texts),
        "s": draw(st.one_of(texts, st.sampled_from(["coffee", "app.js", "..%2F..", "x"]))),
        "n": draw(numbers),
    }
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(METHODS))
    path = template.format(**fill)
    if not path.startswith("/"):
        path = "/" + path
    params = draw(st.dictionaries(st.one_of(st.sampled_from(KEYS), texts), values, max_size=4))
    body = draw(st.one_of(
        st.none(), st.binary(max_size=2000),
        st.dictionaries(st.sampled_from(["method", "target", "layer", "model", "x"]),
                        st.one_of(values, st.integers(), st.none(), st.lists(st.integers())),
                        max_size=4).map(lambda d: json.dumps(d).encode()),
    ))
    multipart = draw(st.booleans())
    return {"method": method, "path": path, "params": params, "body": body,
            "multipart": multipart}


def send(client: httpx.Client, r: dict) -> httpx.Response:
    if r["multipart"] and r["body"] is not None:
        return client.request(r["method"], r["path"], params=r["params"],
                              files={"file": ("f.png", r["body"], "image/png")})
    headers = {"content-type": "application/json"} if r["body"] is not None else {}
    return client.request(r["method"], r["path"], params=r["params"], content=r["body"],
                          headers=headers)


def test_random_requests_never_break_the_explorer(server, client, image_id):
    seen: set[int] = set()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(image_id))
    def one(r: dict) -> None:
        try:
            response = send(client, r)
        except httpx.InvalidURL:
            return  # a URL httpx itself will not send
        seen.add(response.status_code)
        assert response.status_code < 500, (r, response.text[:300])
        assert "Traceback" not in response.text
        if response.status_code >= 400 and r["method"] != "HEAD":
            detail = response.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail, detail

    one()
    assert client.get("/api/samples").status_code == 200  # still answering
    assert {200, 404}.issubset(seen) and any(400 <= s < 500 and s != 404 for s in seen)
