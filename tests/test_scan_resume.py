"""kill -9 in the middle of `convlens scan`, then --resume: the same tables as one whole run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import convlens as cl
from convlens.scan import scan

from .conftest import tiny_convnet
from .test_scan import write_folder

SHARD = 13


class SlowNet(torch.nn.Module):
    """The tiny convnet, 0.25 s per forward pass: each shard takes at least that long."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_convnet(classes=2, seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.25)
        return self.net(x)


def _cli(root: Path, model: Path, out: Path, *extra: str) -> list[str]:
    code = "import sys; from convlens.cli import main; sys.exit(main(sys.argv[1:]))"
    return [
        sys.executable, "-c", code, "scan", str(root), "--model", str(model), "--input-size", "32",
        "--preprocess", "unit", "--out", str(out), "--shard-size", str(SHARD),
        "--batch-size", str(SHARD), "--top-k", "3", "--no-cam", "--quiet",
        "--trust-model-file", *extra,  # SlowNet is pickled: the test's own file
    ]


def test_kill_then_resume_equals_one_run(tmp_path):
    root = tmp_path / "data"
    good = write_folder(root, per_class=20)
    model_path = tmp_path / "slow.pt"
    torch.save(SlowNet(), model_path)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)])}
    out = tmp_path / "killed"
    first = out / "shards" / "00000.npz"
    proc = subprocess.Popen(_cli(root, model_path, out), env=env, cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert first.exists(), err.decode()[-2000:]
    shards = len(list((out / "shards").glob("*.npz")))
    total = -(-(len(good) + 1) // SHARD)
    assert 1 <= shards < total  # killed in the middle
    assert not (out / "channels.parquet").exists()
    model = cl.load_model(torch.load(model_path, weights_only=False), input_size=(32, 32),
                          preprocess="unit", name="slow")  # as the CLI names it
    options = {"top_k": 3, "cam": False, "shard_size": SHARD, "batch_size": SHARD}
    result = scan(model, root, out, resume=True, **options)  # = `convlens scan ... --resume`
    assert not list(out.rglob("*.tmp"))  # a half-written file of the killed run is gone
    whole = scan(model, root, tmp_path / "whole", **options)
    for name in ("channels", "topk", "images", "classes", "selectivity"):
        pd.testing.assert_frame_equal(getattr(result, name), getattr(whole, name),
                                      check_exact=True)
    assert result.skipped == whole.skipped
