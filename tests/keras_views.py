"""Every view on two Keras models, on whatever backend Keras runs: the same code on every backend.

``tests/test_keras_backends.py`` runs :func:`compute` in its own process (Keras on torch) and, as
``python tests/keras_views.py OUT.npz SEED.keras SMALL.keras``, in a subprocess per backend
(TensorFlow, JAX), then compares the two. The script imports Keras before convlens, as a
notebook does, and records which backend Keras kept.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

#: The small live model's image: random pixels, fixed.
SMALL_SIZE = 32
METHODS = (
    "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "scorecam", "ablationcam",
    "eigencam",
)
#: how long each check took, in this process (printed by the worker, to keep the tests quick)
SECONDS: dict[str, float] = {}
FILTERS = {"chollet": {"size": 32, "steps": 6}, "lucid": {"size": 32, "steps": 6}}


def small_keras_model() -> Any:
    """A functional model with a nested Sequential block and a softmax head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    features = keras.Sequential(
        [layers.Conv2D(8, 3, activation="relu", name="c1"), layers.MaxPooling2D(name="p1")],
        name="features",
    )
    inputs = keras.Input((SMALL_SIZE, SMALL_SIZE, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = features(x)
    x = layers.Conv2D(16, 3, activation="relu", name="c2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="small")


def subclassed_models() -> tuple[Any, Any]:
    """Two subclassed models: one calling its layers, one doing everything with raw ops."""
    import keras
    from keras import layers

    class WithLayers(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="with_layers")
            self.conv = layers.Conv2D(4, 3, activation="relu", name="conv")
            self.pool = layers.GlobalAveragePooling2D(name="pool")
            self.head = layers.Dense(2, name="head")

        def call(self, x: Any) -> Any:
            return self.head(self.pool(self.conv(x)))

    class OpsOnly(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="ops_only")
            self.kernel = self.add_weight(shape=(3, 2), initializer="ones")

        def call(self, x: Any) -> Any:
            return keras.ops.matmul(keras.ops.mean(x, axis=(1, 2)), self.kernel)

    return WithLayers(), OpsOnly()


def small_image() -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 255, (SMALL_SIZE, SMALL_SIZE, 3)).astype(np.float32)


def _seed_parity(cl: Any, seed_path: str, out: dict[str, Any]) -> None:
    model = cl.load_model(seed_path)
    image = cl.load_image("chelsea", size=(180, 180))
    for name, value in model.activations(image).items():
        out[f"seed/act/{name}"] = np.asarray(value)
    cams = model.cam(image, method="gradcam")
    out["seed/gradcam/heatmap"] = cams.heatmap
    out["seed/gradcam/raw"] = cams.raw
    fv = model.filters("conv2d_1", channels=range(4), steps=4)
    out["seed/filters/activation"] = fv.activation


def _views(cl: Any, small_path: str) -> dict[str, Callable[[dict[str, Any]], None]]:
    """One function per view, each filling its own entries of the result."""
    from convlens.cam.metrics import faithfulness
    from convlens.cam.sanity import randomization_check
    from convlens.report import ReportOptions, build_report, render_html

    model = cl.load_model(small_path)
    image = small_image()

    def predictions(out: dict[str, Any]) -> None:
        out["predictions/probabilities"] = model.probabilities(image).numpy()
        out["predictions/layers"] = np.array([i.name for i in model.layers()])

    def activations(out: dict[str, Any]) -> None:
        for name, value in model.activations(image).items():
            out[f"activations/{name}"] = np.asarray(value)

    def cam(method: str) -> Callable[[dict[str, Any]], None]:
        def run(out: dict[str, Any]) -> None:
            result = model.cam(image, method=method, target=1)
            out[f"cam/{method}/heatmap"] = result.heatmap
            out[f"cam/{method}/score"] = result.score

        return run

    def filters(recipe: str) -> Callable[[dict[str, Any]], None]:
        def run(out: dict[str, Any]) -> None:
            fv = model.filters("c2", channels=[0, 1, 2], recipe=recipe, **FILTERS[recipe])
            out[f"filters/{recipe}/activation"] = fv.activation
            out[f"filters/{recipe}/images"] = fv.images

        return run

    def metrics(out: dict[str, Any]) -> None:
        found = faithfulness(model, model.cam(image, target=1), steps=4)
        for key, value in found.items():
            out[f"metrics/{key}"] = np.asarray(value)

    def sanity(out: dict[str, Any]) -> None:
        before = [w.copy() for w in model.network.get_weights()]
        result = randomization_check(model, image, target=1, stages=2)
        after = model.network.get_weights()
        out["sanity/stages"] = np.array(result.stages)
        out["sanity/correlations"] = result.correlations
        out["sanity/unchanged"] = np.array(all(np.array_equal(a, b) for a, b in zip(before, after)))

    def report(out: dict[str, Any]) -> None:
        options = ReportOptions(
            cam_methods=["gradcam"], cam_classes=1, metric_steps=3, filter_steps=2,
            filter_channels=2, filter_size=32, filter_layers=1, progress=False,
        )
        html = render_html(build_report(model, [image], options))
        out["report/has_sections"] = np.array(
            [marker in html for marker in ("Grad-CAM", "<img", "small")]
        )
        out["report/image_count"] = np.array(html.count("<img"))

    def explorer(out: dict[str, Any]) -> None:
        import io

        import httpx
        from PIL import Image

        from convlens.web import BackgroundServer

        png = io.BytesIO()
        Image.fromarray(image.round().astype(np.uint8)).save(png, format="PNG")
        with BackgroundServer(model) as server, httpx.Client(
            base_url=server.url, timeout=300
        ) as client:
            upload = client.post("/api/images", files={"file": ("small.png", png.getvalue())})
            url = f"/api/images/{upload.json()['id']}"
            answer = client.get(f"{url}/predictions", params={"top": 3}).json()
            grid = client.get(f"{url}/activations/c2.png")
            cam = client.get(f"{url}/cam", params={"method": "gradcam", "target": 1})
            job = client.post(f"{url}/cam", json={"method": "scorecam", "target": 1}).json()
            while job["status"] in ("queued", "running"):
                time.sleep(0.05)
                job = client.get(f"/api/jobs/{job['id']}").json()
        out["explorer/statuses"] = np.array([upload.status_code, grid.status_code, cam.status_code])
        out["explorer/scorecam_job"] = np.array(job["status"])
        out["explorer/probabilities"] = np.array(
            sorted(p["probability"] for p in answer["predictions"])
        )

    def subclassed(out: dict[str, Any]) -> None:
        with_layers, ops_only = subclassed_models()
        tapped = cl.load_model(with_layers, input_size=(SMALL_SIZE, SMALL_SIZE))
        out["subclassed/layers"] = np.array([i.name for i in tapped.layers()])
        out["subclassed/shapes"] = np.array(
            [a.shape for a in tapped.activations(image, layers="conv").values()]
        )
        untapped = cl.load_model(ops_only, input_size=(SMALL_SIZE, SMALL_SIZE))
        out["subclassed/predictions"] = np.array(untapped.probabilities(image).shape)
        try:
            untapped.activations(image)
        except cl.ModelError as err:
            out["subclassed/error"] = np.array(str(err).split(";")[0].replace("'", ""))

    views: dict[str, Callable[[dict[str, Any]], None]] = {
        "predictions": predictions, "activations": activations, "metrics": metrics,
        "sanity": sanity, "report": report, "explorer": explorer, "subclassed": subclassed,
    }
    views.update({f"cam/{m}": cam(m) for m in METHODS})
    views.update({f"filters/{r}": filters(r) for r in FILTERS})
    return views


def compute(seed_path: str, small_path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(arrays by key, error by view name) of every check, on the current Keras backend."""
    import convlens as cl

    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    start = time.perf_counter()
    try:
        _seed_parity(cl, seed_path, out)
    except Exception:
        errors["seed"] = traceback.format_exc()
    SECONDS["seed"] = time.perf_counter() - start
    for name, view in _views(cl, small_path).items():
        start = time.perf_counter()
        try:
            view(out)
        except Exception:
            errors[name] = traceback.format_exc()
        SECONDS[name] = time.perf_counter() - start
    return out, errors


def main(target: str, seed_path: str, small_path: str) -> None:
    import keras  # first, as a notebook does; then convlens

    backend_before = keras.config.backend()
    import convlens as cl

    m = cl.load_model(small_path)
    cams = m.cam(small_image())  # a Grad-CAM works right after the imports
    out, errors = compute(seed_path, small_path)
    out["facts"] = np.array(json.dumps({
        "backend_before": backend_before,
        "backend_after": keras.config.backend(),
        "environment": os.environ.get("KERAS_BACKEND"),
        "adapter": type(m).__name__,
        "first_gradcam_shape": list(cams.heatmap.shape),
        "errors": errors,
    }))
    np.savez(target, **out)
    print(json.dumps({k: round(v, 2) for k, v in SECONDS.items()}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
