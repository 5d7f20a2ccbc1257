"""Learning rate as a pure function of the update number and the *current* config.

Upstream F5-TTS stores its scheduler in the checkpoint, so a resumed run cannot be extended
(upstream issue #1029). Here the schedule is rebuilt from config on every start: raising
``trainer.max_updates`` on resume stretches the decay from the current update onwards.
"""

from __future__ import annotations

import math

from f5app.config import OptimConfig


def learning_rate(update: int, optim: OptimConfig, total_updates: int) -> float:
    """LR for the update about to be taken (0-based): linear warmup, then the configured decay."""
    peak = optim.lr
    floor = peak * optim.min_lr_ratio
    warmup = max(0, optim.warmup_updates)
    if warmup and update < warmup:
        return peak * (update + 1) / warmup
    if optim.decay == "constant":
        return peak
    span = max(1, total_updates - warmup)
    progress = min(1.0, max(0.0, (update - warmup) / span))
    if optim.decay == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    if optim.decay == "cosine":
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"optim.decay={optim.decay!r} is not one of linear, cosine, constant")
