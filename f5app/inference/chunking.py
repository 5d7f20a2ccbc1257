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


class CrossFadeStream:
    """:func:`cross_fade` piece by piece: ``push`` each wave as it is made, send what it returns.

    The last ``seconds`` of audio are held back until the next wave (or ``finish``) so they can
    be mixed; everything returned, concatenated, equals ``cross_fade`` of all the waves.
    """

    def __init__(self, sample_rate: int, seconds: float):
        self._overlap = int(seconds * sample_rate)
        self._sample_rate = sample_rate
        self._seconds = seconds
        self._pending: np.ndarray | None = None

    def push(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        joined = wave if self._pending is None else cross_fade([self._pending, wave], self._sample_rate, self._seconds)
        keep = min(self._overlap, len(joined))
        self._pending = joined[len(joined) - keep :]
        return joined[: len(joined) - keep]

    def finish(self) -> np.ndarray:
        pending, self._pending = self._pending, None
        return np.zeros(0, dtype=np.float32) if pending is None else pending
