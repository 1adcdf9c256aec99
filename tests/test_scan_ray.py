"""--engine ray: the same tables as the local engine, in this process and joining a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    """`convlens scan --engine ray --ray-address ADDR` (another process joining this session's
    Ray) gives the local engine's tables."""
    root = tmp_path / "data"
    write_folder(root, per_class=12)
    net = tiny_convnet(classes=2, seed=2)
    model = cl.load_model(net, input_size=(32, 32), preprocess="unit", name="tiny")
    local = scan(model, root, tmp_path / "local", top_k=4, shard_size=16, batch_size=8)

    model_path = tmp_path / "tiny.pt"
    torch.save(net, model_path)  # the actors get the model by pickling: a trusted pickle
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)])}
    code = "import sys; from convlens.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "scan", str(root), "--model", str(model_path),
         "--input-size", "32", "--preprocess", "unit", "--out", str(tmp_path / "ray"),
         "--top-k", "4", "--shard-size", "16", "--batch-size", "4", "--quiet", "--trust-model-file",
         "--engine", "ray", "--ray-address", ray_cluster],
        env=env, cwd=repo, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = ScanResult(tmp_path / "ray")
    assert on_ray.manifest["engine"] == "ray"
    assert on_ray.manifest["model"]["fingerprint"] == local.manifest["model"]["fingerprint"]
    same_tables(local, on_ray)


def test_parts_merge_in_data_order_whatever_order_they_arrive():
    """The driver merges a shard's parts in row order as they come, so the actors' finishing
    order cannot change a single bit of the tables."""
    from convlens.scan.aggregate import Scanner
    from convlens.scan.ray_engine import _InOrder, _pack

    model = cl.load_model(tiny_convnet(classes=2, seed=2), input_size=(16, 16),
                          preprocess="unit", name="tiny")
    layers = [i for i in model.resolve("conv") if i.spatial and i.channels]
    scanner = Scanner(model, layers, top_k=3, rank="max", classes=2, cam=False)
    pixels = torch.rand(12, 16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255
    labels = np.array([0, 1] * 6)
    cuts = [(0, 5), (5, 7), (7, 12)]  # three parts of 5, 2 and 5 rows
    parts = [scanner.batch(pixels[a:b], np.arange(a, b), labels[a:b]) for a, b in cuts]
    in_order = scanner.empty()
    for part in parts:
        in_order = in_order.merge(part)
    position = {i: i for i in range(12)}
    merging = _InOrder(scanner, 0, position)
    for index in (2, 0, 1):
        a, b = cuts[index]
        merging.add(a, b - a, _pack(parts[index]))
        assert merging.next == (0 if index == 2 else cuts[index][1] if index == 0 else 12)
    got = merging.result().to_arrays()
    for key, value in in_order.to_arrays().items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_an_actor_call_gives_one_part_per_run_of_consecutive_rows():
    """Rows of two shards and two separate runs (as two blocks handed over at once would be):
    each part covers consecutive ids, so the driver can merge parts in row order."""
    from convlens.scan.aggregate import Scanner
    from convlens.scan.ray_engine import ScanActor, _unpack

    model = cl.load_model(tiny_convnet(classes=2, seed=2), input_size=(16, 16),
                          preprocess="unit", name="tiny")
    layers = [i for i in model.resolve("conv") if i.spatial and i.channels]
    actor = ScanActor(Scanner(model, layers, top_k=2, rank="max", classes=2, cam=False))
    ids = np.array([8, 9, 2, 3, 4, 10])  # shard 0: 2-4 and 8-9; shard 1: 10
    batch = {
        "id": ids, "shard": np.where(ids >= 10, 1, 0), "label": ids % 2,
        "path": np.array([f"{i}.png" for i in ids], dtype=object),
        "pixels": np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype(np.float32),
        "error": np.array(["", "", "", "broken", "", ""], dtype=object),
    }
    out = actor(batch)
    assert out["shard"].tolist() == [0, 0, 1]
    assert out["first"].tolist() == [2, 8, 10]
    assert out["count"].tolist() == [3, 2, 1]
    parts = [_unpack(blob) for blob in out["blob"]]
    assert [p.image_id.tolist() for p in parts] == [[2, 4], [8, 9], [10]]
    assert parts[0].skipped == [(3, "3.png", "broken")]
