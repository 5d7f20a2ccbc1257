"""Joining generated chunks: linear cross-fade over the overlap, as upstream's infer_batch_process."""

from __future__ import annotations

import numpy as np


def cross_fade(waves: list[np.ndarray], sample_rate: int, seconds: float) -> np.ndarray:
    """Concatenate ``waves`` overlapping each pair by ``seconds`` (shortened to fit short chunks)."""
    if not waves:
        return np.zeros(0, dtype=np.float32)
    result = np.asarray(waves[0], dtype=np.float32)
    for wave in waves[1:]:
        wave = np.asarray(wave, dtype=np.float32)
        overlap = min(int(seconds * sample_rate), len(result), len(wave))
        if overlap <= 0:
            result = np.concatenate([result, wave])
            continue
        fade_in = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
        mixed = result[-overlap:] * (1.0 - fade_in) + wave[:overlap] * fade_in
        result = np.concatenate([result[:-overlap], mixed, wave[overlap:]])
    return result
