"""Keras on every backend: Grad-CAM and activation capture against the backend's own forward pass.

Targets (issue 13), per backend: Grad-CAM per image ≤ 1.3x a plain forward pass
(``model(x, training=False)`` on that backend), activation capture ≤ 1.2x. Keras picks its
backend once per process, so each backend runs in a subprocess of its own
(``python -m benchmarks.bench_keras BACKEND``) on the seed's cats-vs-dogs convnet, batch 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .timing import print_table

BACKENDS = ("torch", "tensorflow", "jax")
ROOT = Path(__file__).resolve().parents[1]


def seed_convnet():
    """The book's cats-vs-dogs convnet (augmentation included, off at inference), seeded."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(180, 180, 3))
    x = keras.Sequential(
        [layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.2)]
    )(inputs)
    x = layers.Rescaling(1.0 / 255)(x)
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(256, 3, activation="relu")(x)
    x = layers.Dropout(0.5)(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))


def measure(backend: str) -> dict[str, float]:
    """Median seconds of the plain forward pass, Grad-CAM and activation capture (this process)."""
    import keras

    import convlens as cl

    from .timing import median_times, setting

    print(setting(), file=sys.stderr)
    assert keras.config.backend() == backend, keras.config.backend()
    network = seed_convnet()
    model = cl.load_model(network)
    image = cl.load_image("chelsea", size=(180, 180))
    x = keras.ops.convert_to_tensor(image[None])

    def plain() -> None:
        if backend == "torch":
            import torch

            with torch.no_grad():
                network(x, training=False)
        else:
            keras.ops.convert_to_numpy(network(x, training=False))

    times = median_times({
        "plain": plain,
        "gradcam": lambda: model.cam(image, method="gradcam"),
        "capture": lambda: model.activations(image),
    }, repeats=31)
    return {name: float(t) for name, t in times.items()}


def main() -> None:
    rows = []
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_keras", backend], env=env, cwd=ROOT,
            capture_output=True, text=True,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"{backend}: failed\n{done.stderr[-2000:]}")
            continue
        t = json.loads(lines[-1])
        rows.append((
            backend, f"{t['plain'] * 1e3:.1f}", f"{t['gradcam'] * 1e3:.1f}",
            f"{t['gradcam'] / t['plain']:.2f}x", f"{t['capture'] * 1e3:.1f}",
            f"{t['capture'] / t['plain']:.2f}x",
        ))
    print_table(
        "seed convnet (cats vs dogs), batch 1, 180x180; targets: Grad-CAM <= 1.3x, capture "
        "<= 1.2x the backend's own forward",
        rows, ("backend", "forward ms", "Grad-CAM ms", "ratio", "capture ms", "ratio"),
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1])))
    else:
        main()
