"""The explorer under load, over loopback HTTP, on the default model (``convlens serve``).

1. A Score-CAM job runs while 50 Grad-CAM requests arrive at once; meanwhile quick requests
   (/api/models, /api/samples, /api/layers, the job's status) are timed one after another:
   their p50 / p95 latency (target: p95 <= 100 ms). The server's RSS before the burst (after a
   warm-up that ran every kind of request once) and after it (target: within 10 %).
2. ``--calls`` consecutive Grad-CAM API calls (default 10,000, stopped after ``--max-seconds``):
   the server's RSS every ``--every`` calls and its slope, MB per 1,000 calls (least squares over
   the samples after the first).

The server is a separate process (its RSS is read from /proc), bound to 127.0.0.1 only, and is
stopped at the end whatever happens. Run: ``python -m benchmarks.bench_explorer [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHEAP = ["/api/models", "/api/samples", "/api/layers"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``, MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(port: int) -> subprocess.Popen:
    code = "import sys; from convlens.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the explorer stopped: {process.stderr.read().decode()[-500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=5).is_success:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the explorer did not start within 300 s")


def wait_job(client: httpx.Client, job: dict, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def warm_up(client: httpx.Client) -> str:
    """Every kind of request once (and the heavy-job copy of the model made): an image id."""
    image = client.post("/api/images/sample/chelsea").json()["id"]
    client.get(f"/api/images/{image}/predictions").raise_for_status()
    for _ in range(3):
        client.get(f"/api/images/{image}/cam", params={"method": "gradcam"}).raise_for_status()
    job = client.post(f"/api/images/{image}/cam", json={"method": "scorecam", "target": 1})
    assert wait_job(client, job.json())["status"] == "done"
    for path in CHEAP:
        client.get(path).raise_for_status()
    return image


async def burst(url: str, image: str, count: int) -> dict:
    """A Score-CAM job and ``count`` concurrent Grad-CAMs; quick requests timed meanwhile."""
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=count + 8)) as client:
        job = (await client.post(f"/api/images/{image}/cam",
                                 json={"method": "scorecam", "target": 2})).json()
        cams_url = f"/api/images/{image}/cam"
        start = time.perf_counter()
        cams = asyncio.gather(*(
            client.get(cams_url, params={"method": "gradcam", "target": i % 1000})
            for i in range(count)
        ))
        cams_task = asyncio.ensure_future(cams)
        latencies: list[float] = []
        status = job["status"]
        i = 0
        async with httpx.AsyncClient(base_url=url, timeout=60) as quick:
            while not cams_task.done() or status in ("queued", "running"):
                path = CHEAP[i % len(CHEAP)] if i % 4 else f"/api/jobs/{job['id']}"
                t = time.perf_counter()
                answer = await quick.get(path)
                latencies.append(time.perf_counter() - t)
                answer.raise_for_status()
                if path.startswith("/api/jobs/"):
                    status = answer.json()["status"]
                i += 1
                await asyncio.sleep(0.01)
        answers = await cams_task
        return {
            "ok": sum(a.status_code == 200 for a in answers),
            "seconds": time.perf_counter() - start, "job": status, "latencies": latencies,
        }


def sequential(client: httpx.Client, pid: int, image: str, calls: int, every: int,
               max_seconds: float) -> tuple[int, list[tuple[int, float]], float]:
    """Consecutive Grad-CAM calls; (calls made, [(calls, RSS MB)], seconds)."""
    samples = [(0, rss_mb(pid))]
    start = time.perf_counter()
    made = 0
    while made < calls and time.perf_counter() - start < max_seconds:
        client.get(f"/api/images/{image}/cam",
                   params={"method": "gradcam", "target": made % 1000}).raise_for_status()
        made += 1
        if made % every == 0:
            samples.append((made, rss_mb(pid)))
    return made, samples, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="consecutive Grad-CAM calls")
    parser.add_argument("--every", type=int, default=500, help="RSS sample every N calls")
    parser.add_argument("--max-seconds", type=float, default=600, help="cap of the call phase")
    parser.add_argument("--burst", type=int, default=50, help="concurrent Grad-CAM requests")
    args = parser.parse_args(argv if argv is not None else [])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"bench_explorer: convlens serve on {url}, load average {os.getloadavg()[0]:.1f}")
    server = start_server(port)
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            image = warm_up(client)
            time.sleep(1.0)
            before = rss_mb(server.pid)
            result = asyncio.run(burst(url, image, args.burst))
            time.sleep(1.0)  # the workers hand free memory back once idle
            after = rss_mb(server.pid)
            ms = np.array(result["latencies"]) * 1000
            print(f"\n{args.burst} concurrent Grad-CAMs while a Score-CAM job runs: "
                  f"{result['ok']}/{args.burst} answered in {result['seconds']:.1f} s, "
                  f"job {result['job']}")
            print(f"quick requests during the burst: n={len(ms)}, p50 {np.median(ms):.1f} ms, "
                  f"p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms (target p95 <= 100)")
            print(f"server RSS: {before:.0f} MB before, {after:.0f} MB after "
                  f"({100 * (after / before - 1):+.1f} %, target within 10 %)")
            made, samples, seconds = sequential(client, server.pid, image, args.calls,
                                                args.every, args.max_seconds)
        counts = np.array([c for c, _ in samples[1:]], float)
        memory = np.array([m for _, m in samples[1:]])
        slope = float(np.polyfit(counts, memory, 1)[0] * 1000) if len(counts) >= 2 else float("nan")
        print(f"\n{made:,} consecutive Grad-CAM calls in {seconds:.0f} s "
              f"({1000 * seconds / max(made, 1):.1f} ms per call)"
              + ("" if made == args.calls else f", stopped at the {args.max_seconds:.0f} s cap"))
        print("server RSS (MB) by calls: " + ", ".join(f"{c:,}: {m:.0f}" for c, m in samples))
        print(f"slope after the first {args.every} calls: {slope:+.2f} MB per 1,000 calls "
              f"(median RSS {statistics.median(memory) if len(memory) else float('nan'):.0f} MB)")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
