"""Demo data for scans: scikit-learn's bundled handwritten digits and a small convnet trained on
them from scratch (``tools/train_digits.py``; its weights ship with convlens, 140 kB, as the
built-in model ``"digits_convnet"``).

>>> model = digits_model()                       # load_model("digits_convnet"), 32x32 RGB input
>>> root = write_digits("digits/")               # digits/0/..., digits/9/: 360 PNGs, ImageFolder
>>> result = cl.scan(model, root)

``python -m convlens.scan.demo OUT`` writes the images to OUT/digits and scans them into OUT/scan;
the manifest names the built-in model, so ``convlens report --scan OUT/scan`` draws its filters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..models.zoo.digits import (
    DIGITS_CLASSES,
    DIGITS_MODEL,
    DIGITS_SIZE,
)

CLASSES, SIZE = DIGITS_CLASSES, DIGITS_SIZE
#: The last VALIDATION images of the data set are held out from training (the scan's data).
VALIDATION = 360


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

    return load_model(DIGITS_MODEL)


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


def main(argv: list[str] | None = None) -> int:
    from . import scan

    out = Path((argv or sys.argv[1:] or ["out/digits-demo"])[0])
    root = write_digits(out / "digits")
    # the manifest names the built-in model: the atlas loads it again to draw its filters
    result = scan(digits_model(), root, out / "scan", resume=True, progress=True,
                  model_source={"path": DIGITS_MODEL})
    print(f"{result!r}; accuracy {result.accuracy:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
