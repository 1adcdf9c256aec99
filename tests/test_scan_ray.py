"""--engine ray: the same tables as the local engine, in this process and joining a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch

import convlens as cl
from convlens.scan import ScanResult, scan

from .conftest import tiny_convnet
from .test_scan import write_folder

STATS = ["layer", "channel", "images", "firing_rate", "mean", "std", "max", "dead"]
TOPK = ["layer", "channel", "rank", "image", "path", "value", "y", "x", "x0", "y0", "x1", "y1"]


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session: 2 CPUs, as on the CI machine."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def same_tables(a: ScanResult, b: ScanResult) -> None:
    pd.testing.assert_frame_equal(a.channels[STATS], b.channels[STATS], check_exact=False,
                                  rtol=1e-5)
    pd.testing.assert_frame_equal(a.topk[TOPK], b.topk[TOPK], check_exact=False, rtol=1e-5)
    pd.testing.assert_frame_equal(a.images, b.images, check_exact=False, rtol=1e-5)
    pd.testing.assert_frame_equal(a.classes, b.classes, check_exact=False, rtol=1e-5)
    assert a.skipped == b.skipped


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")
def test_ray_engine_equals_local(ray_cluster, tmp_path):
    root = tmp_path / "data"
    write_folder(root, per_class=20)
    net = tiny_convnet(classes=2, seed=2)
    model = cl.load_model(net, input_size=(32, 32), preprocess="unit")
    options = {"top_k": 4, "shard_size": 16, "batch_size": 8}
    local = scan(model, root, tmp_path / "local", **options)
    on_ray = scan(model, root, tmp_path / "ray", engine="ray", **options)
    assert on_ray.manifest["engine"] == "ray"
    same_tables(local, on_ray)

    # the CLI in another process joins this cluster with --ray-address
    model_path = tmp_path / "tiny.pt"
    torch.save(net, model_path)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)])}
    code = "import sys; from convlens.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "scan", str(root), "--model", str(model_path),
         "--input-size", "32", "--preprocess", "unit", "--out", str(tmp_path / "joined"),
         "--top-k", "4", "--shard-size", "16", "--batch-size", "8", "--no-cam", "--quiet",
         "--engine", "ray", "--ray-address", ray_cluster],
        env=env, cwd=repo, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    joined = ScanResult(tmp_path / "joined")
    pd.testing.assert_frame_equal(joined.channels[STATS], local.channels[STATS],
                                  check_exact=False, rtol=1e-5)
    pd.testing.assert_frame_equal(joined.topk[TOPK], local.topk[TOPK], check_exact=False,
                                  rtol=1e-5)
