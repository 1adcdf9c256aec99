"""Options that keep the expensive CAM methods (one forward pass per channel) affordable."""

from __future__ import annotations

from typing import Any

__all__ = ["FAST_OPTIONS"]

#: Per-method options the report and the explorer both use: Faster Score-CAM (the 32 channels of
#: highest variance), and Ablation-CAM in batches of 64 ablated copies (the part of the network
#: before the layer runs once per batch). Methods not listed need no options to be fast.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "scorecam": {"top_k": 32},
    "ablationcam": {"batch_size": 64},
}
