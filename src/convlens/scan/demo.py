"""Demo data for scans: scikit-learn's bundled handwritten digits and a small convnet trained on
them from scratch (``tools/train_digits.py``; its weights ship with convlens, 140 kB).

>>> model = digits_model()                       # a seed-style convnet, 32x32 RGB input
>>> root = write_digits("digits/")               # digits/0/..., digits/9/: 360 PNGs, ImageFolder
>>> result = cl.scan(model, root)

``python -m convlens.scan.demo OUT`` writes the images to OUT/digits and the model to
OUT/digits_convnet.pt (a pickled module: ``--trust-model-file``), and scans them into
OUT/scan; ``convlens report --scan OUT/scan --trust-model-file`` draws its filters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS = Path(__file__).with_name("data") / "digits_convnet.pt"
CLASSES = [str(d) for d in range(10)]
SIZE = 32
#: The last VALIDATION images of the data set are held out from training (the scan's data).
VALIDATION = 360


def digits_network() -> nn.Sequential:
    """Conv → pool → conv → pool → conv → dense, as the seed's cats-vs-dogs model (smaller)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, 10),
    )


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (N, 32, 32, 3) float32 pixels 0..255 (8x8 scaled x4), and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        from ..errors import ConvlensError

        raise ConvlensError(
            "the digits demo needs scikit-learn: pip install 'convlens[demo]'"
        ) from None
    digits = load_digits()
    images = digits.images.astype(np.float32) * (255.0 / 16.0)
    big = images.repeat(SIZE // 8, axis=1).repeat(SIZE // 8, axis=2)
    return np.repeat(big[..., None], 3, axis=-1), digits.target.astype(np.int64)


def digits_model() -> object:
    """The trained digits convnet as a convlens model (32x32 pixels 0..255, scaled to 0..1)."""
    from ..models import load_model

    net = digits_network()
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return load_model(net, input_size=(SIZE, SIZE), preprocess="unit", class_names=CLASSES,
                      name="digits_convnet")


def write_digits(root: str | Path, count: int = VALIDATION) -> Path:
    """The last ``count`` (held-out) digits as PNG files in an ImageFolder: root/<digit>/*.png."""
    from PIL import Image

    root = Path(root)
    pixels, labels = digits_pixels()
    start = len(labels) - count
    for i in range(start, len(labels)):
        folder = root / CLASSES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:04d}.png"
        if not path.exists():
            Image.fromarray(pixels[i].astype(np.uint8)).save(path)
    return root


def save_digits_model(path: str | Path) -> Path:
    """The trained digits convnet saved as a whole torch module (``torch.save``): loading it
    runs code from the file, so it loads only when trusted (``--trust-model-file``); it is
    this demo's own file."""
    path = Path(path)
    net = digits_network()
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.eval(), path)
    return path


def main(argv: list[str] | None = None) -> int:
    from ..models import load_model
    from . import scan

    out = Path((argv or sys.argv[1:] or ["out/digits-demo"])[0])
    root = write_digits(out / "digits")
    # scanned from a model file, which the manifest records: the atlas draws its filters
    source = {"path": str(save_digits_model(out / "digits_convnet.pt").resolve()),
              "preprocess": "unit", "input_size": [SIZE, SIZE]}
    model = load_model(source["path"], trust=True, preprocess="unit", input_size=(SIZE, SIZE),
                       class_names=CLASSES)
    result = scan(model, root, out / "scan", resume=True, progress=True, model_source=source)
    print(f"{result!r}; accuracy {result.accuracy:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
