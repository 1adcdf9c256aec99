"""The explorer under load: heavy work in a bounded, cancellable job queue; quick requests
never wait for it; model calls on one bounded worker per model; CAM names as cam() takes them."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens as cl
from convlens.cam import METHODS, make_method
from convlens.cli import main
from convlens.web import BackgroundServer
from convlens.web.slots import ModelSlot
from convlens.web.workers import Busy, Worker

from .conftest import tiny_convnet


class Gate(nn.Module):
    """Identity; its deep copies (the explorer's heavy-job copy) block until the test opens."""

    def __init__(self, blocking: bool = False):
        super().__init__()
        self.blocking = blocking
        self.entered, self.open = threading.Event(), threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blocking:
            self.entered.set()
            assert self.open.wait(60)
        return x

    def __deepcopy__(self, memo: dict) -> Gate:
        twin = Gate(blocking=True)
        twin.entered, twin.open = self.entered, self.open
        return twin


def wide_convnet() -> nn.Sequential:
    """A 64-channel last conv layer: Faster Score-CAM scores only 32 of them."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 3),
    ).eval()


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def add_image(client: httpx.Client, seed: int = 0) -> str:
    response = client.post("/api/images", files={"file": ("x.png", png(seed), "image/png")})
    assert response.status_code == 201
    return response.json()["id"]


def wait(client: httpx.Client, job: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


@pytest.fixture(scope="module")
def gate() -> Gate:
    gate = Gate()
    gate.open.set()  # closed by the tests that need a job to block
    return gate


def close(gate: Gate) -> None:
    gate.open.clear()
    gate.entered.clear()


@pytest.fixture(scope="module")
def server(gate):
    tiny = cl.load_model(nn.Sequential(gate, tiny_convnet()), input_size=(32, 32),
                         preprocess="unit", name="tiny")
    wide = cl.load_model(wide_convnet(), input_size=(32, 32), preprocess="unit", name="wide")
    with BackgroundServer({"tiny": tiny, "wide": wide}, job_capacity=2) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_quick_requests_never_wait_for_a_heavy_job(server, client, gate):
    close(gate)
    image = add_image(client)
    job = client.post(f"/api/images/{image}/cam", json={"method": "scorecam"}).json()
    assert job["status"] in ("queued", "running") and job["kind"] == "cam"
    assert gate.entered.wait(30)  # the job is inside the model (its private copy) and blocked
    try:
        assert client.get("/api/models").status_code == 200
        assert client.get("/api/layers").status_code == 200
        assert client.get(f"/api/images/{image}/predictions").status_code == 200
        assert client.get(f"/api/images/{image}/activations/1.2.png").status_code == 200
        cam = client.get(f"/api/images/{image}/cam", params={"method": "gradcam"})
        assert cam.status_code == 200 and cam.json()["method"] == "gradcam"
        assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"
    finally:
        gate.open.set()
    job = wait(client, job)
    assert job["status"] == "done" and job["result"]["method"] == "scorecam"
    assert job["result"]["image"].startswith("data:image/jpeg;base64,")


def test_model_facts_and_layers_never_take_the_model_lock(server, client):
    with server.model_lock("tiny"), server.model_lock("wide"):
        facts = client.get("/api/models").json()
        assert [m["name"] for m in facts["models"]] == ["tiny", "wide"]
        assert facts["cam_jobs"] == ["scorecam", "ablationcam"]
        assert client.get("/api/layers", params={"model": "wide"}).json()[0]["channels"] == 64


def test_heavy_cams_are_jobs_with_the_reports_options(server, client):
    image = add_image(client, 1)
    url = f"/api/images/{image}/cam"
    conflict = client.get(url, params={"method": "Score-CAM", "model": "wide"})
    assert conflict.status_code == 409 and url in conflict.json()["detail"]
    assert "as a job" in conflict.json()["detail"]
    job = wait(client, client.post(url, json={"method": "scorecam", "model": "wide"}).json())
    top_k = METHODS["scorecam"].quick_options["top_k"]
    assert job["status"] == "done" and job["done"] == top_k == 32
    wide = server.app.state.slots["wide"]
    pixels = wide.pixels(server.app.state.explorer.store.get(image))
    expected = wide.model.cam(pixels, method="scorecam", **METHODS["scorecam"].quick_options)
    assert job["result"]["target"] == int(expected.target[0])
    assert job["result"]["score"] == pytest.approx(float(expected.score[0]))
    assert job["result"]["box"] == [int(v) for v in expected.boxes[0]]
    ablation = wait(client, client.post(url, json={"method": "Ablation-CAM"}).json())
    assert ablation["status"] == "done", ablation["error"]
    assert ablation["result"]["method"] == "ablationcam"
    again = client.post(url, json={"method": "ablationcam"}).json()
    assert again["id"] == ablation["id"]  # the same request: the cached job


@pytest.mark.parametrize("name", ["gradcam", "grad-cam", "GradCAM", "Grad_CAM", "gradcam++",
                                  "Grad-CAM++", "gradcampp", "EigenCAM", "hirescam"])
def test_cam_names_and_aliases_as_cam_takes_them(client, name):
    image = add_image(client, 2)
    expected = make_method(name, {}).name
    answer = client.get(f"/api/images/{image}/cam", params={"method": name})
    assert answer.status_code == 200 and answer.json()["method"] == expected
    raw = client.get(f"/api/images/{image}/cam?method={name}")  # "+" unencoded, as typed
    assert raw.status_code == 200 and raw.json()["method"] == expected


def test_unknown_method_and_target_are_refused_before_any_work(client):
    image = add_image(client, 3)
    with pytest.raises(cl.ConvlensError) as api_error:
        make_method("gradcamm", {})
    for send in (lambda p: client.get(f"/api/images/{image}/cam", params=p),
                 lambda p: client.post(f"/api/images/{image}/cam", json=p)):
        answer = send({"method": "gradcamm"})
        assert answer.status_code == 400 and answer.json()["detail"] == str(api_error.value)
        answer = send({"method": "scorecam", "target": 3})
        assert answer.status_code == 400 and "0..2" in answer.json()["detail"]
        answer = send({"method": "scorecam", "layer": "nope"})
        assert answer.status_code == 404 and "nope" in answer.json()["detail"]


def test_jobs_can_be_cancelled_and_the_queue_is_bounded(server, client, gate):
    close(gate)
    try:
        image = add_image(client, 4)
        running = client.post(f"/api/images/{image}/cam", json={"method": "ablationcam"}).json()
        assert gate.entered.wait(30)
        queued = client.post("/api/filters/0", params={"model": "wide", "channels": 4}).json()
        assert queued["status"] == "queued"
        full = client.post("/api/filters/0", params={"model": "wide", "channels": 5})
        assert full.status_code == 429 and "queue is full" in full.json()["detail"]
        assert "DELETE /api/jobs/ID" in full.json()["detail"]
        cancelled = client.delete(f"/api/jobs/{queued['id']}").json()
        assert cancelled["status"] == "cancelled"
        room = client.post("/api/filters/0", params={"model": "wide", "channels": 5})
        assert room.status_code == 202  # room again
        for job in (running, room.json()):
            assert client.delete(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    finally:
        gate.open.set()
    assert client.delete("/api/jobs/unknown").status_code == 404
    for job in (running, queued, room.json()):
        assert server.app.state.jobs.get(job["id"]).finished.wait(60)
        job = client.get(f"/api/jobs/{job['id']}").json()
        assert job["status"] == "cancelled" and job["done"] == 0 and job["result"] is None


def test_a_running_filter_job_stops_at_its_next_step_when_cancelled(server, client, gate):
    close(gate)
    try:
        job = client.post("/api/filters/1.0", params={"channels": 8}).json()
        assert gate.entered.wait(30)  # in the first step's forward pass
        assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "running"
        assert client.delete(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    finally:
        gate.open.set()
    assert server.app.state.jobs.get(job["id"]).finished.wait(60)
    done = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "cancelled" and done["done"] == 0 < done["total"]


def test_fifty_concurrent_cams_run_on_one_worker_thread(server):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            image = (await client.post("/api/images/sample/coffee")).json()["id"]
            url = f"/api/images/{image}/cam"
            return await asyncio.gather(*(
                client.get(url, params={"method": "gradcam", "target": i % 3}) for i in range(50)
            ))

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 50
    assert [a.json()["target"] for a in answers] == [i % 3 for i in range(50)]
    names = [t.name for t in threading.enumerate()]
    assert sum(name.startswith("convlens-tiny") for name in names) == 1


def test_a_worker_refuses_work_beyond_its_bound():
    release = threading.Event()

    async def scenario() -> None:
        worker = Worker("w", max_pending=1)
        first = asyncio.ensure_future(worker.run(release.wait, 30))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="busy"):
            await worker.run(lambda: None)
        release.set()
        assert await first is True
        assert await worker.run(lambda: 7) == 7
        worker.close()

    asyncio.run(scenario())


def test_the_heavy_copy_is_a_separate_model(server):
    slot = server.app.state.slots["wide"]
    model, lock = slot.heavy()
    assert model is not slot.model and lock is not slot.lock
    assert model.network[0].weight is not slot.model.network[0].weight
    assert torch.equal(model.network[0].weight, slot.model.network[0].weight)


class Uncopyable(nn.Module):
    def __init__(self):
        super().__init__()
        self.handle = threading.Lock()  # deepcopy cannot copy a lock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_model_that_cannot_be_copied_shares_its_lock_with_jobs():
    network = nn.Sequential(Uncopyable(), tiny_convnet())
    slot = ModelSlot("u", cl.load_model(network, input_size=(32, 32), preprocess="unit"))
    try:
        assert slot.heavy() == (slot.model, slot.lock)
    finally:
        slot.worker.close()


def test_serve_reports_a_port_in_use_before_any_url(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        f"convlens: error: port {port} on 127.0.0.1 is already in use (another explorer?); "
        "pass another --port, or stop the program using it"
    ]
