"""The explorer's server, over real HTTP: uploads, limits, isolation, concurrency, jobs."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens as cl
from convlens.web import BackgroundServer
from convlens.web.jobs import JobQueue
from convlens.web.slots import ModelSlot
from convlens.web.store import LRU, ImageStore

from .conftest import tiny_convnet

LIMIT = 200_000  # a small upload limit, so the oversized upload stays cheap


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def noise(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny() -> cl.Model:
    return cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit", name="tiny")


@pytest.fixture(scope="module")
def server(tiny):
    other = cl.load_model(tiny_convnet(classes=5, seed=1), input_size=(32, 32), preprocess="unit")
    with BackgroundServer({"tiny": tiny, "other": other}, max_upload_bytes=LIMIT,
                          max_upload_pixels=1_000_000) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def upload(client: httpx.Client, data: bytes, name: str = "x.png", kind: str = "image/png"):
    return client.post("/api/images", files={"file": (name, data, kind)})


def test_binds_to_localhost_and_lists_models_and_samples(server, client):
    assert server.host == "127.0.0.1"
    facts = client.get("/api/models").json()
    assert [m["name"] for m in facts["models"]] == ["tiny", "other"]
    assert "gradcam" in facts["cam_methods"] and "chollet" in facts["filter_recipes"]
    assert facts["max_upload_bytes"] == LIMIT
    assert [s["name"] for s in client.get("/api/samples").json()] == list(cl.SAMPLES)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_upload_then_predict_gives_the_models_answer(client, tiny):
    pixels = noise(0)
    info = upload(client, png(pixels), "noise.png").json()
    assert info["name"] == "noise.png" and (info["width"], info["height"]) == (32, 32)
    answer = client.get(f"/api/images/{info['id']}/predictions", params={"top": 3}).json()
    expected = tiny.predict(pixels.astype(np.float32), top=3)[0]
    assert [p["index"] for p in answer["predictions"]] == [p.index for p in expected]
    assert [p["probability"] for p in answer["predictions"]] == pytest.approx(
        [p.probability for p in expected], abs=1e-6
    )
    other = client.get(f"/api/images/{info['id']}/predictions", params={"model": "other"})
    assert len(other.json()["predictions"]) == 5  # the second model: 5 classes


def test_oversized_upload_is_413_with_a_clear_message(client):
    big = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    data = png(big)
    assert len(data) > LIMIT
    response = upload(client, data, "big.png")
    assert response.status_code == 413
    assert "over the" in response.json()["detail"] and "limit" in response.json()["detail"]


def test_oversized_chunked_upload_is_413(server):
    def chunks():  # a well-formed multipart start, then 400 kB, without a Content-Length
        yield (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(40):
            yield b"\0" * 10_000

    with httpx.Client(base_url=server.url) as c:
        response = c.post("/api/images", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_too_many_pixels_is_413(client):
    data = png(np.zeros((1200, 1200, 3), np.uint8))  # compresses to a few kB
    response = upload(client, data, "huge.png")
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


@pytest.mark.parametrize("data, name, kind", [
    (b"%PDF-1.4 not an image at all", "doc.pdf", "application/pdf"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "x.png", "image/png"),  # lying type
    (b"", "empty.png", "image/png"),
])
def test_non_image_upload_is_415_with_a_clear_message(client, data, name, kind):
    response = upload(client, data, name, kind)
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "PNG, JPEG" in detail and ("not an image" in detail or "empty" in detail)


def test_unknown_things_are_404_with_what_to_do(client):
    info = upload(client, png(noise(1))).json()
    missing = client.get("/api/images/nope/predictions")
    assert missing.status_code == 404 and "upload it again" in missing.json()["detail"]
    layer = client.get(f"/api/images/{info['id']}/activations/layer9.png")
    assert layer.status_code == 404 and "no layer named 'layer9'" in layer.json()["detail"]
    model = client.get(f"/api/images/{info['id']}/predictions", params={"model": "vgg"})
    assert model.status_code == 404 and "tiny, other" in model.json()["detail"]
    sample = client.post("/api/images/sample/..%2F..%2Fetc%2Fpasswd")
    assert sample.status_code == 404
    method = client.get(f"/api/images/{info['id']}/cam", params={"method": "magic"})
    assert method.status_code == 400 and "gradcam" in method.json()["detail"]


def test_activation_grid_channel_and_empty_channels(client, tiny):
    pixels = noise(3)
    info = upload(client, png(pixels)).json()
    facts = client.get(f"/api/images/{info['id']}/activations/2").json()  # max pool, 16x16x8
    acts = tiny.activations(pixels.astype(np.float32), layers=["2"])["2"][0]
    assert facts["shape"] == [16, 16, 8] and facts["per_row"] == 8
    assert facts["empty"] == [int(c) for c in np.flatnonzero(~acts.any(axis=(0, 1)))]
    grid = Image.open(io.BytesIO(client.get(facts["grid"]).content))
    assert grid.size == (8 * 17 - 1, 16)
    expected = cl.activation_grid(acts)
    assert np.array_equal(np.asarray(grid), expected)  # palette indices are the grid's values
    channel = client.get(f"/api/images/{info['id']}/activations/2/channels/5.png")
    assert channel.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(channel.content)).size == (256, 256)
    assert client.get(f"/api/images/{info['id']}/activations/2/channels/8.png").status_code == 404


def test_cam_follows_method_and_target(client, tiny):
    pixels = noise(4)
    info = upload(client, png(pixels)).json()
    url = f"/api/images/{info['id']}/cam"
    first = client.get(url, params={"method": "gradcam"}).json()
    top = tiny.predict(pixels.astype(np.float32), top=1)[0][0].index
    assert first["target"] == top and first["method"] == "gradcam"
    assert first["image"].startswith("data:image/jpeg;base64,")
    other = client.get(url, params={"method": "gradcam", "target": (top + 1) % 3}).json()
    assert other["target"] == (top + 1) % 3
    eigen = client.get(url, params={"method": "eigencam"}).json()
    assert eigen["method"] == "eigencam" and eigen["image"] != first["image"]


def test_images_are_private_to_their_random_ids(client):
    a = upload(client, png(noise(5)), "a.png").json()
    b = upload(client, png(noise(6)), "b.png").json()
    assert a["id"] != b["id"] and len(a["id"]) >= 20
    answer_a = client.get(f"/api/images/{a['id']}/predictions").json()
    answer_b = client.get(f"/api/images/{b['id']}/predictions").json()
    assert (answer_a["name"], answer_b["name"]) == ("a.png", "b.png")
    assert answer_a["predictions"] != answer_b["predictions"]


def test_twenty_concurrent_users_get_their_own_correct_answers(server, tiny):
    images = [noise(100 + i) for i in range(20)]
    expected = [tiny.probabilities(img.astype(np.float32))[0].tolist() for img in images]

    async def one_user(client: httpx.AsyncClient, i: int) -> tuple[str, list[float]]:
        info = (await client.post("/api/images", files={"file": (f"{i}.png", png(images[i]))}))
        assert info.status_code == 201
        image_id = info.json()["id"]
        answer = await client.get(f"/api/images/{image_id}/predictions", params={"top": 3})
        assert answer.status_code == 200
        probabilities = [0.0] * 3
        for p in answer.json()["predictions"]:
            probabilities[p["index"]] = p["probability"]
        return image_id, probabilities

    async def everyone():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(one_user(client, i) for i in range(20)))

    results = asyncio.run(everyone())
    assert len({image_id for image_id, _ in results}) == 20
    for (_, got), want in zip(results, expected):
        assert got == pytest.approx(want, abs=1e-6)
    assert len({tuple(round(p, 6) for p in got) for _, got in results}) == 20


class Gate(nn.Module):
    """Blocks every forward pass until the test opens it."""

    def __init__(self):
        super().__init__()
        self.entered, self.open = threading.Event(), threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.open.wait(30)
        return x


def test_the_event_loop_answers_while_a_model_works():
    gate = Gate()
    network = nn.Sequential(tiny_convnet(), gate)
    model = cl.load_model(network, input_size=(32, 32), preprocess="unit")
    gate.open.set()  # let the layer tracing through
    model.layers()
    gate.open.clear()
    with BackgroundServer(model) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        image_id = upload(c, png(noise(7))).json()["id"]
        slow: dict[str, httpx.Response] = {}
        worker = threading.Thread(
            target=lambda: slow.setdefault("r", c.get(f"/api/images/{image_id}/predictions"))
        )
        worker.start()
        assert gate.entered.wait(10)
        quick = c.get("/api/samples")  # answered while the model is still busy
        assert quick.status_code == 200 and "r" not in slow
        gate.open.set()
        worker.join(30)
        assert slow["r"].status_code == 200


def test_filter_job_runs_with_progress_and_is_cached(client):
    job = client.post("/api/filters/3", params={"channels": 3}).json()
    assert job["layer"] == "3" and job["channels"] == [0, 1, 2] and job["total"] > 0
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done" and job["done"] == job["total"], job["error"]
    h, w = job["result"]["size"]
    grid = Image.open(io.BytesIO(client.get(job["grid"]).content))
    assert grid.size == (3 * w + 2 * 5, h)
    again = client.post("/api/filters/3", params={"channels": 3}).json()
    assert again["id"] == job["id"] and again["status"] == "done"
    assert client.get("/api/jobs/unknown").status_code == 404


def test_lru_and_store_forget_the_oldest():
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recent
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and len(lru) == 2
    store = ImageStore(capacity=1)
    first = store.add(np.zeros((4, 4, 3)), "first")
    second = store.add(np.ones((4, 4, 3)), "second")
    assert store.get(first.id) is None and store.get(second.id) is second
    big = store.add(np.zeros((3000, 1500, 3)), "big")
    assert big.pixels.shape == (1024, 512, 3) and big.pixels.dtype == np.uint8


def test_serve_command_starts_the_explorer_on_localhost(tmp_path):
    model_file = tmp_path / "tiny.pt"
    torch.save(tiny_convnet(), model_file)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-c", "import sys; from convlens.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "serve", "--model", str(model_file),
               "--input-size", "32", "--preprocess", "unit", "--port", str(port),
               "--trust-model-file"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                facts = httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=5).json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.2)
        assert [m["name"] for m in facts["models"]] == ["tiny"]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert f"http://127.0.0.1:{port}/" in output


def test_model_lock_is_the_one_the_explorer_holds(server, client, tiny):
    info = upload(client, png(noise(8))).json()
    with server.model_lock("tiny"):
        pending: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: pending.setdefault(
            "r", client.get(f"/api/images/{info['id']}/predictions")))
        worker.start()
        worker.join(1.0)
        assert "r" not in pending  # the explorer waits for the lock
    worker.join(30)
    assert pending["r"].status_code == 200
    assert server.model_lock() is server.model_lock("tiny")


def test_stopping_cancels_a_running_filter_job(tiny):
    jobs, slot = JobQueue(), ModelSlot("tiny", tiny)
    job = jobs.submit("k", "filters", "tiny", {}, total=64 * 30, work=lambda job: (
        slot.filter_gallery("3", "chollet", list(range(64)), None, job.advance)))
    deadline = time.monotonic() + 60
    while job.done == 0 and job.status != "error" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status == "running" and 0 < job.done < job.total
    jobs.close(timeout=30)
    assert job.status == "cancelled" and "stopping" in job.error
    assert not jobs.alive
    with pytest.raises(cl.ConvlensError, match="stopping"):
        jobs.submit("k2", "filters", "tiny", {}, work=lambda job: ({}, None))
