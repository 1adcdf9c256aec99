"""Keras on TensorFlow and JAX gives what Keras on torch gives: every view, same numbers.

Keras picks its backend once per process, so each backend runs ``tests/keras_views.py`` in a
subprocess of its own (one per backend for the whole session); this process (Keras on torch, set
by conftest) runs the same code as the reference. Both load the same ``.keras`` files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convlens as cl

from . import keras_views
from .keras_views import FILTERS, METHODS

BACKENDS = ("tensorflow", "jax")
VIEWS = ("predictions", "activations", *(f"cam/{m}" for m in METHODS),
         *(f"filters/{r}" for r in FILTERS), "metrics", "sanity", "report", "explorer",
         "subclassed")
HERE = Path(__file__).parent


def _subprocess_env(backend: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    source = str(Path(cl.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


@pytest.fixture(scope="session")
def small_keras_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keras-small") / "small.keras"
    keras_views.small_keras_model().save(path)
    return str(path)


@pytest.fixture(scope="session")
def workers(seed_keras_path, small_keras_path, tmp_path_factory):
    """One subprocess per backend, all started at once (they run while this process works)."""
    started = {}
    for backend in BACKENDS:
        folder = tmp_path_factory.mktemp(f"keras-{backend}")
        # TensorFlow: KERAS_BACKEND unset, so Keras takes its own default, as in Colab
        env = _subprocess_env(None if backend == "tensorflow" else backend)
        log = open(folder / "log.txt", "w+")  # noqa: SIM115 (closed when the worker is read)
        process = subprocess.Popen(
            [sys.executable, str(HERE / "keras_views.py"), str(folder / "results.npz"),
             seed_keras_path, small_keras_path],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        started[backend] = (process, folder, log)
    yield started
    for process, _, log in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def torch_results(workers, seed_keras_path, small_keras_path):
    out, errors = keras_views.compute(seed_keras_path, small_keras_path)
    assert not errors, "\n".join(errors.values())
    return out


@pytest.fixture(scope="session", params=BACKENDS)
def backend_results(request, workers, torch_results):
    backend = request.param
    process, folder, log = workers[backend]
    code = process.wait(timeout=900)
    log.seek(0)
    assert code == 0, log.read()[-4000:]
    with np.load(folder / "results.npz") as data:
        results = {key: data[key] for key in data.files}
    facts = json.loads(str(results.pop("facts")))
    return backend, facts, results


def test_importing_keras_first_keeps_its_backend(backend_results):
    backend, facts, _ = backend_results
    assert facts["backend_before"] == facts["backend_after"] == backend
    assert facts["environment"] == (None if backend == "tensorflow" else backend)
    assert facts["adapter"] == {"tensorflow": "KerasTensorFlowModel", "jax": "KerasJaxModel"}[
        backend
    ]
    assert facts["first_gradcam_shape"] == [1, keras_views.SMALL_SIZE, keras_views.SMALL_SIZE]


def test_importing_convlens_leaves_the_backend_to_the_user():
    code = "import os, sys, convlens; print('keras' in sys.modules, os.getenv('KERAS_BACKEND'))"
    done = subprocess.run([sys.executable, "-c", code], env=_subprocess_env(None),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "None"]


def _close(ours: np.ndarray, reference: np.ndarray, relative: float) -> None:
    scale = float(np.abs(reference).max()) or 1.0
    np.testing.assert_allclose(ours, reference, rtol=0, atol=relative * scale)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_seed_convnet_parity(backend_results, torch_results):
    _, facts, ours = backend_results
    assert "seed" not in facts["errors"], facts["errors"].get("seed")
    names = [k for k in torch_results if k.startswith("seed/act/")]
    assert len(names) == 9 and sorted(names) == sorted(k for k in ours if k.startswith("seed/act/"))
    for key in names:
        _close(ours[key], torch_results[key], 1e-5)
    assert _correlation(ours["seed/gradcam/raw"], torch_results["seed/gradcam/raw"]) >= 0.9999
    assert _correlation(
        ours["seed/gradcam/heatmap"], torch_results["seed/gradcam/heatmap"]
    ) >= 0.9999
    reached, reference = ours["seed/filters/activation"], torch_results["seed/filters/activation"]
    assert reached.shape == (4,) and np.all(reference > 0)
    np.testing.assert_allclose(reached, reference, rtol=0.02)


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_matches_the_torch_backend(backend_results, torch_results, view):
    _, facts, ours = backend_results
    assert view not in facts["errors"], facts["errors"].get(view)
    keys = [k for k in torch_results if k.startswith(view + "/")]
    assert keys and sorted(keys) == sorted(k for k in ours if k.startswith(view + "/"))
    for key in keys:
        mine, reference = ours[key], torch_results[key]
        assert mine.shape == reference.shape, key
        if key == "sanity/correlations":  # each backend draws its own random weights
            assert np.all(np.abs(mine) <= 1 + 1e-6), key
        elif key.startswith("filters/") and key.endswith("/images"):
            assert mine.dtype == np.uint8, key
            assert np.abs(mine.astype(int) - reference).mean() < 8, key
        elif key.startswith("filters/"):
            np.testing.assert_allclose(mine, reference, rtol=0.02, err_msg=key)
        elif mine.dtype.kind in "fc":
            _close(mine, reference, 1e-4)
        else:
            assert np.array_equal(mine, reference), key
