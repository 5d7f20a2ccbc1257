"""The reference voice: read any rate/channel count, trim silence and length, as upstream prepares it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from f5app.audio.io import AudioFileError, read_audio
from f5app.inference.errors import InferenceInputError

log = logging.getLogger(__name__)

#: Upstream clips references to 12 s: longer prompts leave too little of the ~22 s window for new speech.
MAX_REFERENCE_SECONDS = 12.0
_SILENCE_DBFS = -42.0
_WINDOW_SECONDS = 0.01
TAIL_SILENCE_SECONDS = 0.05


@dataclass(frozen=True)
class Reference:
    wav: np.ndarray  # mono float32 at sample_rate
    sample_rate: int
    text: str
    path: Path

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


def load_reference(
    path: str | Path, text: str, sample_rate: int, max_seconds: float = MAX_REFERENCE_SECONDS
) -> Reference:
    """Mono at ``sample_rate``, edge silence removed, at most ``max_seconds`` (cut at a pause, with a warning)."""
    path = Path(path).expanduser()
    if not text or not text.strip():
        raise InferenceInputError(
            f"no transcript for reference {path}: pass ref_text=\"what the reference says\" "
            f"(automatic transcription is not bundled)"
        )
    try:
        wav, _ = read_audio(path, target_sr=sample_rate, mono=True)
    except AudioFileError as exc:
        raise InferenceInputError(f"reference audio: {exc}") from None
    wav = trim_silence_edges(wav, sample_rate)
    if len(wav) == 0:
        raise InferenceInputError(f"reference audio {path} is silent; choose a clip with speech")
    if len(wav) > max_seconds * sample_rate:
        original = len(wav) / sample_rate
        wav = cut_at_pause(wav, sample_rate, max_seconds)
        log.warning(
            "reference %s is %.1f s; trimmed to %.1f s (the model's limit is %.0f s). Make ref_text match "
            "the kept part, or pass a shorter clip.", path, original, len(wav) / sample_rate, max_seconds
        )
    wav = np.concatenate([wav, np.zeros(int(TAIL_SILENCE_SECONDS * sample_rate), dtype=np.float32)])
    return Reference(wav=wav, sample_rate=sample_rate, text=text.strip(), path=path)


def _window_levels_dbfs(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    window = max(1, int(_WINDOW_SECONDS * sample_rate))
    count = len(wav) // window
    if count == 0:
        return np.full(1, 20 * np.log10(np.sqrt(np.mean(wav**2)) + 1e-12))
    frames = wav[: count * window].reshape(count, window)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)


def trim_silence_edges(wav: np.ndarray, sample_rate: int, threshold_dbfs: float = _SILENCE_DBFS) -> np.ndarray:
    """Drop leading and trailing 10 ms windows quieter than ``threshold_dbfs`` (upstream: pydub at -42 dBFS)."""
    loud = np.flatnonzero(_window_levels_dbfs(wav, sample_rate) > threshold_dbfs)
    if len(loud) == 0:
        return wav[:0]
    window = max(1, int(_WINDOW_SECONDS * sample_rate))
    return wav[loud[0] * window : min(len(wav), (loud[-1] + 1) * window)]


def cut_at_pause(wav: np.ndarray, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Cut at the quietest 10 ms window in the second half of the allowed length (a pause, not mid-word)."""
    levels = _window_levels_dbfs(wav[: int(max_seconds * sample_rate)], sample_rate)
    window = max(1, int(_WINDOW_SECONDS * sample_rate))
    start = len(levels) // 2
    quietest = start + int(np.argmin(levels[start:]))
    return wav[: quietest * window]
